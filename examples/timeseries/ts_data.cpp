#include "ts_data.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numbers>

namespace timeseries {

namespace fs = std::filesystem;

namespace {

fg::TsDataset read_split(const std::string& path) {
  if (!fs::exists(path))
    fg::fail("timeseries", "'", path, "' does not exist; --data DIR --problem NAME reads DIR/NAME/NAME_TRAIN.ts and "
             "NAME_TEST.ts (the UEA archive's layout; `timeseries generate` writes a synthetic problem)");
  fg::TsDataset data = fg::read_ts(path);
  if (data.class_labels.empty()) fg::fail("timeseries", "'", path, "' has no class labels (@classLabel false)");
  return data;
}

}  // namespace

UeaProblem::UeaProblem(const std::string& dir, const std::string& name)
    : train_path_((fs::path(dir) / name / (name + "_TRAIN.ts")).string()),
      test_path_((fs::path(dir) / name / (name + "_TEST.ts")).string()),
      train_(read_split(train_path_)),
      test_(read_split(test_path_)) {
  if (train_.dimensions != test_.dimensions)
    fg::fail("timeseries", "'", train_path_, "' has ", train_.dimensions, " channels but '", test_path_, "' has ",
             test_.dimensions);
  // The test split's labels as indices into the training split's list (the
  // same names, perhaps listed in another order).
  for (std::int64_t& label : test_.labels) {
    const std::string& name = test_.class_labels[static_cast<std::size_t>(label)];
    const auto found = std::find(train_.class_labels.begin(), train_.class_labels.end(), name);
    if (found == train_.class_labels.end())
      fg::fail("timeseries", "'", test_path_, "' has the class label '", fg::excerpt(name, 40), "', which '",
               train_path_, "' does not list");
    label = found - train_.class_labels.begin();
  }
  test_.class_labels = train_.class_labels;

  // Per-channel mean and deviation of the training split (two passes, so
  // a large mean does not cancel the variance), missing values left out.
  const auto C = static_cast<std::size_t>(channels());
  std::vector<double> sum(C, 0.0), count(C, 0.0), squares(C, 0.0);
  for (std::size_t i = 0; i < train_.values.size(); ++i) {
    if (std::isnan(train_.values[i])) continue;
    sum[i % C] += train_.values[i];
    count[i % C] += 1;
  }
  mean_.assign(C, 0.0f);
  for (std::size_t c = 0; c < C; ++c)  // a channel never observed has mean 0: all its values are missing
    if (count[c] > 0) mean_[c] = static_cast<float>(sum[c] / count[c]);
  for (std::size_t i = 0; i < train_.values.size(); ++i)
    if (!std::isnan(train_.values[i])) squares[i % C] += std::pow(train_.values[i] - double{mean_[i % C]}, 2);
  inverse_std_.assign(C, 1.0f);
  for (std::size_t c = 0; c < C; ++c) {
    const double deviation = count[c] > 0 ? std::sqrt(squares[c] / count[c]) : 0.0;
    // A constant channel (up to float rounding) is only centred.
    if (deviation > 1e-6 * std::max(1.0, std::abs(double{mean_[c]}))) inverse_std_[c] = static_cast<float>(1.0 / deviation);
  }
}

std::int64_t UeaProblem::max_length() const { return std::max(train_.max_length(), test_.max_length()); }

double UeaProblem::majority_test_accuracy() const {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(num_classes()), 0);
  for (std::int64_t label : test_.labels) ++counts[static_cast<std::size_t>(label)];
  return static_cast<double>(*std::max_element(counts.begin(), counts.end())) / static_cast<double>(test_.cases());
}

examples::LabelledBatch UeaProblem::batch(bool train, const std::vector<std::int64_t>& indices) const {
  const fg::TsDataset& data = split(train);
  const auto B = static_cast<std::int64_t>(indices.size());
  const std::int64_t C = channels();
  std::int64_t T = 1;
  for (std::int64_t i : indices) {
    if (i < 0 || i >= data.cases())
      fg::fail("timeseries", "case ", i, " is not in the ", train ? "training" : "test", " split (", data.cases(),
               " cases)");
    T = std::max(T, data.lengths[static_cast<std::size_t>(i)]);
  }
  // Written in place: padding stays zero, with mask 0.
  examples::LabelledBatch batch{fg::zeros({B, T, C}), fg::zeros({B, T}), fg::empty({B}, fg::kInt64)};
  for (std::int64_t b = 0; b < B; ++b) {
    const auto i = static_cast<std::size_t>(indices[static_cast<std::size_t>(b)]);
    const std::int64_t length = data.lengths[i];
    const float* source = data.values.data() + data.offsets[i];
    float* row = batch.inputs.data<float>() + b * T * C;
    for (std::int64_t k = 0; k < length * C; ++k) {
      const auto c = static_cast<std::size_t>(k % C);
      row[k] = std::isnan(source[k]) ? 0.0f : (source[k] - mean_[c]) * inverse_std_[c];
    }
    std::fill_n(batch.mask.data<float>() + b * T, length, 1.0f);
    batch.labels.data<std::int64_t>()[b] = data.labels[i];
  }
  return batch;
}

examples::ClassificationData UeaProblem::as_classification_data() const {
  return {train_.cases(), test_.cases(),
          [this](bool train, const std::vector<std::int64_t>& indices) { return batch(train, indices); }};
}

namespace {

// One case of class `label` (see write_synthetic_problem), as a .ts line.
std::string synthetic_case(const SyntheticOptions& o, std::int64_t label, fg::Generator& rng) {
  constexpr double kPi = std::numbers::pi;
  const std::int64_t length =
      o.unequal ? o.length / 2 + static_cast<std::int64_t>(rng.uniform() * static_cast<double>(o.length - o.length / 2 + 1))
                : o.length;
  // The class's bits: phase relation, position of the bump, frequency.
  const double lag = label % 2 == 0 ? 0.0 : kPi;  // channels in phase, or alternating in sign
  const bool late = (label / 2) % 2 == 1;
  const double cycles = o.classes > 4 ? ((label / 4) % 2 == 0 ? 1.0 : 4.0) : 1.0 + 3.0 * rng.uniform();  // per `o.length` steps
  const double bump_at = (late ? 0.75 : 0.25) * static_cast<double>(length);
  const double bump_width = std::max(1.0, static_cast<double>(length) / 10);
  const double phase = 2 * kPi * rng.uniform();
  const double amplitude = 0.8 + 0.4 * rng.uniform();

  std::string line;
  char number[32];
  for (std::int64_t c = 0; c < o.channels; ++c) {
    const double offset = 0.5 * rng.normal(), scale = 0.5 + rng.uniform();
    for (std::int64_t t = 0; t < length; ++t) {
      const double angle = 2 * kPi * cycles * static_cast<double>(t) / static_cast<double>(o.length);
      double value = amplitude * std::sin(angle + phase + lag * static_cast<double>(c)) + o.noise * rng.normal();
      value += 3.0 * std::exp(-0.5 * std::pow((static_cast<double>(t) - bump_at) / bump_width, 2));
      const bool missing = o.missing > 0 && rng.uniform() < o.missing;
      if (missing) {
        line += '?';
      } else {
        std::snprintf(number, sizeof number, "%.5g", offset + scale * value);
        line += number;
      }
      line += t + 1 < length ? ',' : ':';
    }
  }
  return line;
}

std::string class_label(std::int64_t label, std::int64_t classes) {
  std::string name = label % 2 == 0 ? "sync" : "anti";
  name += (label / 2) % 2 == 0 ? "-early" : "-late";
  if (classes > 4) name += (label / 4) % 2 == 0 ? "-slow" : "-fast";
  return name;
}

}  // namespace

void write_synthetic_problem(const SyntheticOptions& o) {
  if (o.classes < 2 || o.classes > 8) fg::fail("timeseries", "--classes ", o.classes, " must be from 2 to 8");
  if (o.length < 4) fg::fail("timeseries", "--length ", o.length, " must be at least 4");
  if (!(o.missing >= 0 && o.missing < 1)) fg::fail("timeseries", "--missing ", o.missing, " must be in [0, 1)");
  if (o.channels < 2 || o.train < 1 || o.test < 1 || !(o.noise >= 0))
    fg::fail("timeseries", "--channels must be at least 2 (classes differ by the channels' phase relation), "
             "--train and --test positive and --noise not negative");
  const fs::path dir = fs::path(o.dir) / o.problem;
  auto path_of = [&](bool train) { return dir / (o.problem + (train ? "_TRAIN.ts" : "_TEST.ts")); };
  for (const bool train : {true, false})  // both checked before either is written
    if (fs::exists(path_of(train)) && !o.overwrite)
      fg::fail("timeseries", "'", path_of(train).string(), "' exists; pass --overwrite to replace it");
  fs::create_directories(dir);
  fg::Generator rng(o.seed);
  for (const bool train : {true, false}) {
    const fs::path path = path_of(train);
    std::string text = "# Synthetic problem written by `timeseries generate` (seed " + std::to_string(o.seed) + ")\n";
    text += "@problemName " + o.problem + "\n@timeStamps false\n@missing " + (o.missing > 0 ? "true" : "false") +
            "\n@univariate " + (o.channels == 1 ? "true" : "false") + "\n@dimensions " + std::to_string(o.channels) +
            "\n@equalLength " + (o.unequal ? "false" : "true") + "\n";
    if (!o.unequal) text += "@seriesLength " + std::to_string(o.length) + "\n";
    text += "@classLabel true";
  for (std::int64_t k = 0; k < o.classes; ++k) (text += ' ') += class_label(k, o.classes);
    text += "\n@data\n";
    const std::int64_t cases = train ? o.train : o.test;
    for (std::int64_t i = 0; i < cases; ++i) {
      const std::int64_t label = i % o.classes;  // balanced (training shuffles)
      text += synthetic_case(o, label, rng) + class_label(label, o.classes) + "\n";
    }
    fg::replace_file_contents("timeseries", path.string(), text);
  }
}

}  // namespace timeseries
