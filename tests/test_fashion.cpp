// End-to-end tests of examples/fashion on a small synthetic data set in the
// Fashion-MNIST file layout (gzip IDX), each run in its own process.
#include <filesystem>

#include "../examples/plot/plot.h"
#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

ProgramRun fashion(const std::string& arguments, const TempDir& dir) {
  return run_program(FASHION_PATH, arguments, dir);
}

const std::string kTiny = " --batch 16 --lr 1e-2 --patch 7 --layers 1 --heads 2 --embd 16 --threads 2";

}  // namespace

TEST_CASE("fashion: a run stopped after epoch 1 and resumed logs exactly what a straight run logs") {
  TempDir dir;
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 320, 40);
  const std::string straight = dir.file("straight"), resumed = dir.file("resumed");
  ProgramRun full = fashion("train --epochs 4" + kTiny + data + " --out " + straight, dir);
  INFO(full.output);
  REQUIRE(full.status == 0);
  REQUIRE(fashion("train --epochs 4 --stop-at-epoch 1" + kTiny + data + " --out " + resumed, dir).status == 0);
  REQUIRE(losses_and_accuracies(resumed + "/log.csv").find("\n2,") == std::string::npos);
  // The model flags come from the checkpoint; the training flags are given again.
  ProgramRun rest = fashion("train --epochs 4 --batch 16 --lr 1e-2" + data + " --out " + resumed + " --resume " +
                                resumed + "/checkpoint.safetensors --threads 2",
                            dir);
  INFO(rest.output);
  REQUIRE(rest.status == 0);
  const std::string expected = losses_and_accuracies(straight + "/log.csv");
  REQUIRE(expected.rfind("epoch,train_loss,test_acc\n1,", 0) == 0);
  REQUIRE(std::count(expected.begin(), expected.end(), '\n') == 5);
  REQUIRE(losses_and_accuracies(resumed + "/log.csv") == expected);
  // Four epochs learn the task well above chance (0.1).
  const plot::Table log = plot::read_csv(straight + "/log.csv");
  REQUIRE(log.rows.back()[static_cast<std::size_t>(log.column("test_acc"))] > 0.3);
}

TEST_CASE("fashion attention draws the attention matrix and the flows as PNG files of the expected size") {
  TempDir dir;
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  REQUIRE(fashion("train --epochs 1 --patch 4 --layers 2 --heads 2 --embd 16 --batch 16 --threads 2" + data +
                      " --out " + dir.file("run"),
                  dir)
              .status == 0);
  const std::string checkpoint = dir.file("run/checkpoint.safetensors");
  ProgramRun drawn = fashion("attention --checkpoint " + checkpoint + " --index 3 --layer 0 --head 1 --out " +
                                 dir.file("attention.png") + data,
                             dir);
  INFO(drawn.output);
  REQUIRE(drawn.status == 0);
  REQUIRE(plot::png_size(dir.file("attention.png")) == std::pair<int, int>{1180, 760});
  REQUIRE(plot::png_size(dir.file("attention_flows.png")) == std::pair<int, int>{900, 520});

  ProgramRun layer = fashion("attention --checkpoint " + checkpoint + " --layer 2 --out x.png" + data, dir);
  REQUIRE(layer.status != 0);
  REQUIRE_THAT(layer.output, Catch::Contains("--layer 2") && Catch::Contains("2 layers"));
  ProgramRun index = fashion("attention --checkpoint " + checkpoint + " --index 8 --out x.png" + data, dir);
  REQUIRE_THAT(index.output, Catch::Contains("--index 8") && Catch::Contains("0..7"));
}

TEST_CASE("fashion: --train-limit and --test-limit keep the first images of each split") {
  TempDir dir;
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 64, 40);
  ProgramRun run = fashion("train --epochs 1 --train-limit 48 --test-limit 7" + kTiny + data + " --out " + dir.file("run"), dir);
  INFO(run.output);
  REQUIRE(run.status == 0);
  REQUIRE_THAT(run.output, Catch::Contains("48 training and 7 test images") && Catch::Contains("step 3/3"));
  const double accuracy = plot::read_csv(dir.file("run/log.csv")).rows.at(0).at(2);
  REQUIRE(accuracy * 7 == Approx(std::round(accuracy * 7)).margin(1e-6));  // a count out of 7 images

  ProgramRun negative = fashion("train --epochs 1 --test-limit -1" + kTiny + data, dir);
  REQUIRE(negative.status != 0);
  REQUIRE_THAT(negative.output, Catch::Contains("--test-limit: -1 is not an integer from 0 to 2^40"));
}

TEST_CASE("fashion: bad input gets a clear error") {
  TempDir dir;
  ProgramRun missing = fashion("train --data " + dir.file("nowhere") + kTiny, dir);
  REQUIRE(missing.status != 0);
  REQUIRE_THAT(missing.output, Catch::Contains("apt-get install dataset-fashion-mnist") &&
                                   Catch::Contains("train-images-idx3-ubyte.gz"));

  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  ProgramRun patch = fashion("train --epochs 1 --patch 5" + data, dir);
  REQUIRE(patch.status != 0);
  REQUIRE_THAT(patch.output, Catch::Contains("patch 5") && Catch::Contains("28x28"));

  // A model trained on 28x28 images meets 32x32 ones.
  REQUIRE(fashion("train --epochs 1" + kTiny + data + " --out " + dir.file("run"), dir).status == 0);
  const std::string checkpoint = dir.file("run/checkpoint.safetensors");
  const std::string big = " --data " + write_fashion_data_set(dir, "big", 32, 32, 8);
  ProgramRun resumed = fashion("train --epochs 2 --threads 2" + big + " --resume " + checkpoint, dir);
  REQUIRE(resumed.status != 0);
  REQUIRE_THAT(resumed.output, Catch::Contains("32x32") && Catch::Contains("takes 28x28"));
  ProgramRun drawn = fashion("attention --checkpoint " + checkpoint + " --out x.png" + big, dir);
  REQUIRE_THAT(drawn.output, Catch::Contains("32x32") && Catch::Contains("takes 28x28"));
  // Model flags that contradict the checkpoint.
  ProgramRun embd = fashion("train --epochs 2 --embd 32" + data + " --resume " + checkpoint, dir);
  REQUIRE_THAT(embd.output, Catch::Contains("--embd 32 does not match the checkpoint's 16"));

  // A truncated image file.
  const std::string broken = write_fashion_data_set(dir, "broken", 28, 32, 8);
  const std::string images = broken + "/t10k-images-idx3-ubyte.gz";
  write_gzip_file(images, idx_file_bytes({8, 28, 28}, std::vector<std::uint8_t>(100)));
  ProgramRun truncated = fashion("train --epochs 1" + kTiny + " --data " + broken, dir);
  REQUIRE_THAT(truncated.output, Catch::Contains("[read_idx]") && Catch::Contains("truncated"));
}
