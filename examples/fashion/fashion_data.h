// Fashion-MNIST as Debian's dataset-fashion-mnist package installs it:
// four gzip IDX files (train/t10k images and labels) in one directory.
#pragma once

#include <string>

#include "../../flowgrad.h"
#include "../common/classifier_training.h"

namespace fashion {

namespace fg = flowgrad;

inline constexpr const char* kDefaultDir = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kClassNames[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

class FashionMnist {
 public:
  // Reads the four files; a missing directory or file names the command
  // that installs the data set. A limit > 0 keeps that many first images of
  // its split (test_limit: a quicker, noisier test accuracy).
  explicit FashionMnist(const std::string& dir, std::int64_t train_limit = 0, std::int64_t test_limit = 0);

  std::int64_t height() const { return train_images_.shape[1]; }
  std::int64_t width() const { return train_images_.shape[2]; }
  // Images [B, H, W] float32, normalised with the training set's mean and
  // standard deviation; labels int64 [B].
  examples::LabelledBatch batch(bool train, const std::vector<std::int64_t>& indices) const;
  // Raw pixels 0..255 of one test image, row-major.
  std::vector<double> test_pixels(std::int64_t index) const;
  std::int64_t test_label(std::int64_t index) const;
  examples::ClassificationData as_classification_data() const;

 private:
  fg::IdxArray train_images_, train_labels_, test_images_, test_labels_;
  std::int64_t train_size_ = 0, test_size_ = 0;
};

}  // namespace fashion
