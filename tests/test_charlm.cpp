// End-to-end tests of examples/charlm: each runs the program in its own
// process, as a user would.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

ProgramRun charlm(const std::string& arguments, const TempDir& dir) {
  return run_program(CHARLM_PATH, arguments, dir);
}

std::string read_file(const std::string& path) { return read_text_file(path); }

const std::string kTiny =
    " --batch 4 --block 16 --layers 1 --heads 2 --embd 16 --eval-every 2 --eval-batches 2 --sample-chars 0 --threads 2";

}  // namespace

TEST_CASE("charlm: a run stopped and resumed in a new process logs exactly the losses of a straight run") {
  TempDir dir;
  const std::string straight = dir.file("straight"), resumed = dir.file("resumed");
  REQUIRE(charlm("train --steps 6" + kTiny + " --out " + straight, dir).status == 0);
  ProgramRun first_half = charlm("train --steps 6 --stop-at 3" + kTiny + " --out " + resumed, dir);
  REQUIRE(first_half.status == 0);
  REQUIRE_THAT(first_half.output, Catch::Contains("stopped at step 3"));
  ProgramRun second_half = charlm("train --steps 6" + kTiny + " --out " + resumed + " --resume " + resumed +
                               "/checkpoint.safetensors",
                           dir);
  REQUIRE(second_half.status == 0);
  REQUIRE_THAT(second_half.output, Catch::Contains("resumed from"));
  // Same step, train loss and validation loss columns, digit for digit (9 significant digits: float32 exactly).
  const std::string expected = without_timing_columns(read_file(straight + "/log.csv"));
  REQUIRE(expected.rfind("step,train_loss,val_loss\n", 0) == 0);
  REQUIRE(std::count(expected.begin(), expected.end(), '\n') == 7);
  REQUIRE(without_timing_columns(read_file(resumed + "/log.csv")) == expected);

  // Sampling from the checkpoint works and is reproducible from the seed.
  const std::string sample = "sample --checkpoint " + resumed + "/checkpoint.safetensors --prompt ROMEO --chars 40 --seed 3";
  ProgramRun a = charlm(sample, dir), b = charlm(sample, dir);
  REQUIRE(a.status == 0);
  REQUIRE(a.output == b.output);
  REQUIRE(a.output.rfind("ROMEO", 0) == 0);
  REQUIRE(a.output.size() >= 45);
}

TEST_CASE("charlm: bad input gets a clear error and a non-zero exit") {
  TempDir dir;
  ProgramRun missing = charlm("train --steps 2 --data " + dir.file("nope.txt") + kTiny, dir);
  REQUIRE(missing.status != 0);
  REQUIRE_THAT(missing.output, Catch::Contains("[charlm --data]") && Catch::Contains("nope.txt") &&
                                   Catch::Contains("cannot open"));

  ProgramRun heads = charlm("train --steps 2 --batch 4 --block 16 --layers 1 --heads 3 --embd 16 --threads 2", dir);
  REQUIRE(heads.status != 0);
  REQUIRE_THAT(heads.output, Catch::Contains("--heads 3 must divide --embd 16"));
  REQUIRE(charlm("train --steps 0" + kTiny, dir).status != 0);

  REQUIRE(charlm("train --steps 2" + kTiny + " --out " + dir.file("run"), dir).status == 0);
  const std::string checkpoint = dir.file("run") + "/checkpoint.safetensors";
  ProgramRun prompt = charlm("sample --checkpoint " + checkpoint + " --prompt 'caf\xc3\xa9' --chars 5", dir);
  REQUIRE(prompt.status != 0);
  REQUIRE_THAT(prompt.output, Catch::Contains("not in the model's vocabulary"));

  // A checkpoint trained on another character set cannot be resumed on this data.
  {
    std::ofstream other(dir.file("other.txt"));
    other << std::string(200, 'a') << std::string(200, 'b');
  }
  ProgramRun other = charlm("train --steps 4 --data " + dir.file("other.txt") + kTiny + " --resume " + checkpoint, dir);
  REQUIRE(other.status != 0);
  REQUIRE_THAT(other.output, Catch::Contains("different character set"));

  ProgramRun not_a_checkpoint = charlm("sample --checkpoint " + dir.file("other.txt"), dir);
  REQUIRE(not_a_checkpoint.status != 0);
  REQUIRE_THAT(not_a_checkpoint.output, Catch::Contains("[load_safetensors]"));
}

TEST_CASE("charlm: resuming with model flags that contradict the checkpoint is an error") {
  TempDir dir;
  REQUIRE(charlm("train --steps 2" + kTiny + " --out " + dir.file("run"), dir).status == 0);
  const std::string resume = " --resume " + dir.file("run") + "/checkpoint.safetensors --sample-chars 0 --threads 2";
  ProgramRun block = charlm("train --steps 4 --block 32" + resume, dir);
  REQUIRE(block.status != 0);
  REQUIRE_THAT(block.output, Catch::Contains("--block 32 does not match the checkpoint's 16"));
  ProgramRun layers = charlm("train --steps 4 --layers 3" + resume, dir);
  REQUIRE(layers.status != 0);
  REQUIRE_THAT(layers.output, Catch::Contains("--layers 3"));
  // The same values, or no model flags at all, resume.
  REQUIRE(charlm("train --steps 3 --block 16 --layers 1 --batch 4" + resume, dir).status == 0);
  REQUIRE(charlm("train --steps 4 --batch 4" + resume, dir).status == 0);
}

TEST_CASE("charlm: the log and the progress line report model FLOPs utilisation against the sgemm probe") {
  TempDir dir;
  ProgramRun run = charlm("train --steps 3" + kTiny + " --out " + dir.file("run"), dir);
  REQUIRE(run.status == 0);
  REQUIRE_THAT(run.output, Catch::Contains("% ") && Catch::Contains("MFU "));
  std::istringstream lines(read_file(dir.file("run/log.csv")));
  std::string line;
  std::getline(lines, line);
  REQUIRE(line == "step,train_loss,val_loss,tokens_per_s,mfu");
  int rows = 0;
  while (std::getline(lines, line)) {
    ++rows;
    const double mfu = std::stod(line.substr(line.rfind(',') + 1));
    const std::string before = line.substr(0, line.rfind(','));
    const double tokens_per_s = std::stod(before.substr(before.rfind(',') + 1));
    // A tiny model is far from the GEMM rate, but it does some useful work;
    // MFU and tokens/s are proportional (one FLOP count, one probe).
    REQUIRE(mfu > 0.0);
    REQUIRE(mfu < 1.0);
    REQUIRE(tokens_per_s > 0.0);
  }
  REQUIRE(rows == 3);
}

TEST_CASE("charlm: --lr-schedule constant keeps --lr after the warm-up, cosine decays it") {
  TempDir dir;
  const std::string flags = "train --steps 4 --warmup 0 --lr 1e-2 --dropout 0" + kTiny;
  REQUIRE(charlm(flags + " --lr-schedule constant --out " + dir.file("constant"), dir).status == 0);
  REQUIRE(charlm(flags + " --lr-schedule cosine --out " + dir.file("cosine"), dir).status == 0);
  REQUIRE(charlm(flags + " --out " + dir.file("default"), dir).status == 0);
  auto losses = [&](const std::string& run) {  // "step,train_loss" of each row
    std::istringstream lines(read_file(dir.file(run + "/log.csv")));
    std::vector<std::string> rows;
    for (std::string line; std::getline(lines, line);) rows.push_back(line.substr(0, line.find(',', line.find(',') + 1)));
    return rows;
  };
  const std::vector<std::string> constant = losses("constant"), cosine = losses("cosine");
  REQUIRE(constant.size() == 5);
  // A row's train loss is measured before its step's update: row 2 follows
  // the first update, at the peak in both; the cosine schedule lowers the
  // second update's rate, so row 3 differs.
  REQUIRE(constant[2] == cosine[2]);
  REQUIRE(constant[3] != cosine[3]);
  REQUIRE(losses("default") == cosine);
  ProgramRun bad = charlm("train --lr-schedule linear" + kTiny, dir);
  REQUIRE(bad.status != 0);
  REQUIRE_THAT(bad.output, Catch::Contains("--lr-schedule") && Catch::Contains("linear"));
}
