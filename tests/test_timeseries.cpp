// examples/timeseries end to end, each run in its own process, on synthetic
// problems written by `timeseries generate` in the UEA archive's layout; and
// the series classifier model (masks, configuration) in process.
#include <filesystem>

#include "../examples/plot/plot.h"
#include "../examples/timeseries/ts_data.h"
#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

ProgramRun run_timeseries(const std::string& arguments, const TempDir& dir) {
  return run_program(TIMESERIES_PATH, arguments, dir);
}

const std::string kTiny = " --batch 16 --lr 3e-3 --layers 1 --heads 4 --embd 64 --dropout 0 --threads 2";

// Writes a problem (unequal lengths, missing values) and
// returns " --data DIR --problem NAME".
std::string generated_problem(const TempDir& dir, const std::string& name, int channels = 3, int train = 192,
                              int test = 96, int classes = 4) {
  ProgramRun made = run_timeseries("generate --out " + dir.file("data") + " --problem " + name + " --channels " +
                                   std::to_string(channels) + " --train " + std::to_string(train) + " --test " +
                                   std::to_string(test) + " --classes " + std::to_string(classes) +
                                   " --length 32 --unequal --missing 0.05",
                               dir);
  INFO(made.output);
  REQUIRE(made.status == 0);
  return " --data " + dir.file("data") + " --problem " + name;
}

}  // namespace

TEST_CASE("timeseries generate writes .ts files the reader takes, with balanced classes, unequal lengths and gaps") {
  TempDir dir;
  generated_problem(dir, "Waves");
  const TsDataset train = read_ts(dir.file("data/Waves/Waves_TRAIN.ts"));
  const TsDataset test = read_ts(dir.file("data/Waves/Waves_TEST.ts"));
  CHECK(train.problem_name == "Waves");
  CHECK(train.cases() == 192);
  CHECK(test.cases() == 96);
  CHECK(train.dimensions == 3);
  CHECK(train.class_labels == std::vector<std::string>{"sync-early", "anti-early", "sync-late", "anti-late"});
  CHECK(std::count(train.labels.begin(), train.labels.end(), 2) == 48);
  CHECK(*std::min_element(train.lengths.begin(), train.lengths.end()) >= 16);
  CHECK(train.max_length() <= 32);
  CHECK(std::adjacent_find(train.lengths.begin(), train.lengths.end(), std::not_equal_to<>()) != train.lengths.end());
  const auto missing = std::count_if(train.values.begin(), train.values.end(), [](float v) { return std::isnan(v); });
  CHECK(missing > 0);
  CHECK(missing < static_cast<std::int64_t>(train.values.size()) / 10);

  // The same seed writes the same files; existing files are kept unless --overwrite.
  const std::string first = read_text_file(dir.file("data/Waves/Waves_TRAIN.ts"));
  ProgramRun again = run_timeseries("generate --out " + dir.file("data") + " --problem Waves", dir);
  REQUIRE(again.status != 0);
  REQUIRE_THAT(again.output, Catch::Contains("Waves_TRAIN.ts' exists; pass --overwrite"));
  REQUIRE(run_timeseries("generate --out " + dir.file("data") + " --problem Waves --classes 4 --channels 3 --length 32 "
                     "--train 192 --test 96 --unequal --missing 0.05 --overwrite",
                     dir)
              .status == 0);
  CHECK(read_text_file(dir.file("data/Waves/Waves_TRAIN.ts")) == first);
}

TEST_CASE("timeseries: a short run beats the majority class clearly, and a stopped run resumes digit for digit") {
  TempDir dir;
  const std::string data = generated_problem(dir, "Waves");
  const std::string straight = dir.file("straight"), resumed = dir.file("resumed");
  ProgramRun full = run_timeseries("train --epochs 10" + kTiny + data + " --out " + straight, dir);
  INFO(full.output);
  REQUIRE(full.status == 0);
  REQUIRE_THAT(full.output, Catch::Contains("192 training and 96 test series of 3 channels, up to 32 steps, 4 classes "
                                            "(majority class: 25.0% of the test split)"));
  REQUIRE(run_timeseries("train --epochs 10 --stop-at-epoch 3" + kTiny + data + " --out " + resumed, dir).status == 0);
  // The model flags come from the checkpoint; the training flags are given again.
  ProgramRun rest = run_timeseries("train --epochs 10 --batch 16 --lr 3e-3 --threads 2" + data + " --out " + resumed +
                                   " --resume " + resumed + "/checkpoint.safetensors",
                               dir);
  INFO(rest.output);
  REQUIRE(rest.status == 0);
  const std::string expected = losses_and_accuracies(straight + "/log.csv");
  REQUIRE(std::count(expected.begin(), expected.end(), '\n') == 11);
  REQUIRE(losses_and_accuracies(resumed + "/log.csv") == expected);
  const plot::Table log = plot::read_csv(straight + "/log.csv");
  // The phase relation is learnt within a few epochs, the bump's position
  // more slowly (73 % after 10 epochs here, 93 % with --seed 2); the majority class is 25 %.
  REQUIRE(log.rows.back()[static_cast<std::size_t>(log.column("test_acc"))] >= 0.6);
}

TEST_CASE("timeseries: bad input gets a clear error") {
  TempDir dir;
  ProgramRun missing = run_timeseries("train --data " + dir.file("nowhere") + " --problem JapaneseVowels" + kTiny, dir);
  REQUIRE(missing.status != 0);
  REQUIRE_THAT(missing.output, Catch::Contains("JapaneseVowels/JapaneseVowels_TRAIN.ts' does not exist") &&
                                   Catch::Contains("timeseries generate"));

  const std::string data = generated_problem(dir, "Small", 3, 16, 8);
  REQUIRE(run_timeseries("train --epochs 1" + kTiny + data + " --out " + dir.file("run"), dir).status == 0);
  // The model of one problem meets another with more channels.
  const std::string other = generated_problem(dir, "Wide", 5, 16, 8);
  ProgramRun resumed = run_timeseries("train --epochs 2 --threads 2" + other + " --resume " + dir.file("run/checkpoint.safetensors"), dir);
  REQUIRE(resumed.status != 0);
  REQUIRE_THAT(resumed.output, Catch::Contains("takes 3 channels") && Catch::Contains("Wide has 5 channels"));
  // Same shapes, other classes.
  const std::string two = generated_problem(dir, "Two", 3, 16, 8, 2);
  ProgramRun classes_differ = run_timeseries("train --epochs 2 --threads 2" + two + " --resume " + dir.file("run/checkpoint.safetensors"), dir);
  REQUIRE(classes_differ.status != 0);
  REQUIRE_THAT(classes_differ.output, Catch::Contains("the classes sync-early, anti-early, sync-late, anti-late and") &&
                                          Catch::Contains("Two has 3 channels, the classes sync-early, anti-early and"));

  // A malformed file: its path, line and reason.
  std::filesystem::create_directories(dir.file("data/Bad"));
  write_bytes(dir.file("data/Bad/Bad_TRAIN.ts"), "@classLabel true a b\n@data\n1,2:c\n");
  write_bytes(dir.file("data/Bad/Bad_TEST.ts"), "@classLabel true a b\n@data\n1,2:a\n");
  ProgramRun bad = run_timeseries("train --data " + dir.file("data") + " --problem Bad" + kTiny, dir);
  REQUIRE(bad.status != 0);
  REQUIRE_THAT(bad.output, Catch::Contains("Bad_TRAIN.ts': line 3: the class label 'c' is not one of the 2"));
  ProgramRun classes = run_timeseries("generate --out " + dir.file("data") + " --classes 9", dir);
  REQUIRE(classes.status != 0);
  REQUIRE_THAT(classes.output, Catch::Contains("--classes"));
}

TEST_CASE("UeaProblem standardises channels from the training split, fills gaps, pads, masks and maps labels by name") {
  TempDir dir;
  std::filesystem::create_directories(dir.file("P"));
  // Channel 0: 1, 3, 5, ? -> mean 3, deviation sqrt(8/3); channel 1: constant 1e6 (only centred).
  write_bytes(dir.file("P/P_TRAIN.ts"),
              "@missing true\n@classLabel true a b\n@data\n1,3:1e6,1e6:b\n5,?:1e6,1e6:a\n");
  // The test split lists the labels in another order.
  write_bytes(dir.file("P/P_TEST.ts"), "@classLabel true b a\n@data\n7:1e6:a\n3,3,3:1e6,1e6,1e6:b\n");
  const timeseries::UeaProblem problem(dir.path().string(), "P");
  CHECK(problem.channels() == 2);
  CHECK(problem.max_length() == 3);
  CHECK(problem.class_labels() == std::vector<std::string>{"a", "b"});
  CHECK(problem.majority_test_accuracy() == 0.5);

  const double scale = 1 / std::sqrt(8.0 / 3);
  const examples::LabelledBatch train = problem.batch(true, {1, 0});
  CHECK(train.inputs.shape() == Shape{2, 2, 2});
  require_values(train.inputs, {2 * scale, 0, 0, 0, -2 * scale, 0, 0, 0}, 1e-5);  // '?' -> 0, the mean
  CHECK(train.labels.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1});
  const examples::LabelledBatch test = problem.batch(false, {0, 1});
  CHECK(test.inputs.shape() == Shape{2, 3, 2});
  require_values(test.inputs, {4 * scale, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1e-5);  // padded with zeros
  CHECK(test.mask.to_vector<float>() == std::vector<float>{1, 0, 0, 1, 1, 1});
  CHECK(test.labels.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1});  // a, b in the training order
  CHECK_THROWS_WITH(problem.batch(false, {2}), Catch::Contains("case 2 is not in the test split (2 cases)"));

  write_bytes(dir.file("P/P_TEST.ts"), "@classLabel true a c\n@data\n7:1:c\n");
  CHECK_THROWS_WITH(timeseries::UeaProblem(dir.path().string(), "P"),
                    Catch::Contains("P_TEST.ts' has the class label 'c', which") && Catch::Contains("does not list"));
}

TEST_CASE("FlowformerSeriesClassifier: padding under the mask does not change a series' logits") {
  models::FlowformerConfig encoder;
  encoder.n_layer = 2;
  encoder.n_head = 2;
  encoder.n_embd = 16;
  encoder.dropout = 0;
  for (const auto kind : {nn::AttentionKind::Flow, nn::AttentionKind::Softmax}) {
    encoder.attention = kind;
    const auto config = models::series_classifier_config(3, 12, 4, encoder);
    Generator init(5);
    models::FlowformerSeriesClassifier model(config, init);
    Generator data_rng(9);
    const Tensor series = randn({1, 7, 3}, data_rng);
    const Tensor alone = model.forward(series);
    // The same series padded to 12 steps with garbage, masked out.
    const Tensor padded = concat({series, randn({1, 5, 3}, data_rng) * 10.0}, 1);
    std::vector<float> flags(12, 0.0f);
    std::fill_n(flags.begin(), 7, 1.0f);
    const Tensor masked = model.forward(padded, from_vector(flags, {1, 12}));
    require_close(masked, alone, 1e-4, 1e-5);
    CHECK(model.forward(padded).to_vector<double>() != alone.to_vector<double>());  // the mask matters
  }
  const auto config = models::series_classifier_config(3, 12, 4, encoder);
  CHECK(models::SeriesClassifierConfig::from_json(config.to_json()) == config);
  Generator init(1);
  models::FlowformerSeriesClassifier model(config, init);
  CHECK(model.parameter_count() == static_cast<std::int64_t>(models::FlowformerSeriesClassifier::parameter_count_for(config)));
  CHECK_THROWS_WITH(model.forward(zeros({2, 13, 3})), Catch::Contains("FlowformerSeriesClassifier") &&
                                                          Catch::Contains("1 <= T <= 12") && Catch::Contains("[2, 13, 3]"));
  CHECK_THROWS_WITH(model.forward(zeros({2, 5, 4})), Catch::Contains("expected series [B, T, 3]"));
  CHECK_THROWS_WITH(model.forward(zeros({2, 5, 3}), zeros({2, 5})), Catch::Contains("row 0 of the mask") &&
                                                                       Catch::Contains("has no real token"));
  auto bad = config;
  bad.encoder.block_size = 11;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("[SeriesClassifierConfig] encoder.block_size 11 must equal max_length 12"));
  CHECK_THROWS_WITH(models::SeriesClassifierConfig::from_json(R"({"kind": "image_classifier"})"),
                    Catch::Contains("\"image_classifier\""));
}
