#include "fashion_data.h"

#include <filesystem>

namespace fashion {

namespace {

constexpr double kMean = 0.2860, kStd = 0.3530;  // of the 60,000 training images, pixels in [0, 1]

fg::IdxArray read_part(const std::string& dir, const std::string& name) {
  const std::string path = (std::filesystem::path(dir) / name).string();
  if (!std::filesystem::exists(path))
    fg::fail("fashion", "Fashion-MNIST file ", path,
             " not found; install the data set with `sudo apt-get install dataset-fashion-mnist` "
             "(or pass --data DIR holding ", name, ")");
  return fg::read_idx(path);
}

void check_pair(const fg::IdxArray& images, const fg::IdxArray& labels, const std::string& split) {
  if (images.shape.size() != 3 || labels.shape.size() != 1 || images.shape[0] != labels.shape[0])
    fg::fail("fashion", "the ", split, " images and labels do not match: images ", fg::shape_str(images.shape),
             ", labels ", fg::shape_str(labels.shape), " (expected [N, H, W] and [N])");
  for (std::uint8_t label : labels.values)
    if (label > 9) fg::fail("fashion", "the ", split, " labels hold ", int{label}, "; Fashion-MNIST has classes 0-9");
}

}  // namespace

FashionMnist::FashionMnist(const std::string& dir, std::int64_t train_limit, std::int64_t test_limit)
    : train_images_(read_part(dir, "train-images-idx3-ubyte.gz")),
      train_labels_(read_part(dir, "train-labels-idx1-ubyte.gz")),
      test_images_(read_part(dir, "t10k-images-idx3-ubyte.gz")),
      test_labels_(read_part(dir, "t10k-labels-idx1-ubyte.gz")) {
  check_pair(train_images_, train_labels_, "training");
  check_pair(test_images_, test_labels_, "test");
  if (train_images_.shape[1] != test_images_.shape[1] || train_images_.shape[2] != test_images_.shape[2])
    fg::fail("fashion", "training images are ", fg::shape_str(train_images_.shape), " but test images ",
             fg::shape_str(test_images_.shape));
  auto limited = [](std::int64_t limit, std::int64_t items, const char* flag) {
    if (limit < 0) fg::fail("fashion", flag, " must not be negative, got ", limit);
    return limit > 0 ? std::min(limit, items) : items;
  };
  train_size_ = limited(train_limit, train_images_.items(), "--train-limit");
  test_size_ = limited(test_limit, test_images_.items(), "--test-limit");
}

examples::LabelledBatch FashionMnist::batch(bool train, const std::vector<std::int64_t>& indices) const {
  const fg::IdxArray& images = train ? train_images_ : test_images_;
  const fg::IdxArray& labels = train ? train_labels_ : test_labels_;
  fg::Tensor pixels = images.gather(indices, fg::kFloat32);
  fg::Tensor normalised = (pixels * (1.0 / (255.0 * kStd))) - kMean / kStd;
  return {normalised, fg::Tensor(), labels.gather(indices, fg::kInt64)};
}

std::vector<double> FashionMnist::test_pixels(std::int64_t index) const {
  return test_images_.gather({index}, fg::kFloat64).to_vector<double>();
}

std::int64_t FashionMnist::test_label(std::int64_t index) const {
  return test_labels_.gather({index}, fg::kInt64).item<std::int64_t>();
}

examples::ClassificationData FashionMnist::as_classification_data() const {
  return {train_size_, test_size_,
          [this](bool train, const std::vector<std::int64_t>& indices) { return batch(train, indices); }};
}

}  // namespace fashion
