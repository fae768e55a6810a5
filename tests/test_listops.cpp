// examples/listops: the expression generator and evaluator, padded batches,
// and the program end to end (training, resumption checks, the benchmark).
#include "../examples/listops/listops_data.h"

#include <map>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;
using namespace listops;

namespace {

std::int64_t d(int digit) { return kDigit0 + digit; }

ProgramRun listops_run(const std::string& arguments, const TempDir& dir) {
  return run_program(LISTOPS_PATH, arguments, dir);
}

}  // namespace

TEST_CASE("ListOps expressions evaluate as the task defines them") {
  // [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ] = max(4, 3, 2, 1, 0, 5) = 5
  REQUIRE(evaluate({kMax, d(4), d(3), kMin, d(2), d(3), kClose, d(1), d(0), kMed, d(1), d(5), d(8), d(9), d(2), kClose,
                    kClose}) == 5);
  REQUIRE(evaluate({kSumMod, d(7), d(8), kClose}) == 5);                 // 15 mod 10
  REQUIRE(evaluate({kMed, d(3), d(8), d(1), d(4), kClose}) == 3);        // even count: floor((3 + 4) / 2)
  REQUIRE(evaluate({kMin, kSumMod, d(9), d(9), kClose, d(9), kClose}) == 8);
  REQUIRE(to_text({kMax, d(4), kClose}) == "[MAX 4 ]");
  REQUIRE_THROWS_WITH(evaluate({kMax, d(1)}), Catch::Contains("[listops]") && Catch::Contains("not closed"));
  REQUIRE_THROWS_WITH(evaluate({d(1)}), Catch::Contains("outside any list"));
  REQUIRE_THROWS_WITH(evaluate({kMax, kClose}), Catch::Contains("closes no non-empty list"));
  REQUIRE_THROWS_WITH(evaluate({kMax, d(1), kClose, d(2)}), Catch::Contains("after the end"));
  REQUIRE_THROWS_WITH(evaluate({kMax, 99, kClose}), Catch::Contains("unknown token 99"));
}

TEST_CASE("the ListOps generator keeps its bounds, covers every answer, and a seed fixes the data set") {
  GeneratorOptions options;
  options.min_length = 40;
  options.max_length = 120;
  const ListOpsData a(300, 50, options, 7), b(300, 50, options, 7), c(300, 50, options, 8);
  std::vector<int> answers(10, 0);
  std::int64_t shortest = 1 << 30, longest = 0;
  for (const Example& example : a.split(true)) {
    const auto length = static_cast<std::int64_t>(example.tokens.size());
    shortest = std::min(shortest, length);
    longest = std::max(longest, length);
    REQUIRE(evaluate(example.tokens) == example.answer);
    ++answers[static_cast<std::size_t>(example.answer)];
  }
  REQUIRE(shortest >= 40);
  REQUIRE(longest <= 120);
  REQUIRE(longest - shortest > 40);  // lengths spread over the range
  for (int count : answers) REQUIRE(count > 0);
  auto same = [](const ListOpsData& x, const ListOpsData& y) {
    for (bool train : {true, false})
      for (std::size_t i = 0; i < x.split(train).size(); ++i)
        if (x.split(train)[i].tokens != y.split(train)[i].tokens) return false;
    return true;
  };
  REQUIRE(same(a, b));
  REQUIRE_FALSE(same(a, c));

  GeneratorOptions impossible;
  impossible.min_length = 1;
  REQUIRE_THROWS_WITH(ListOpsData(1, 1, impossible, 1), Catch::Contains("bad generator options"));
}

TEST_CASE("ListOps batches pad to the longest sequence and mask the padding") {
  GeneratorOptions options;
  options.min_length = 10;
  options.max_length = 60;
  const ListOpsData data(20, 5, options, 3);
  const examples::LabelledBatch batch = data.batch(true, {4, 0, 9});
  std::size_t longest = 0;
  for (std::int64_t i : {4, 0, 9}) longest = std::max(longest, data.split(true)[static_cast<std::size_t>(i)].tokens.size());
  REQUIRE(batch.inputs.shape() == Shape{3, static_cast<std::int64_t>(longest)});
  const std::vector<std::int64_t> tokens = batch.inputs.to_vector<std::int64_t>();
  const std::vector<double> mask = batch.mask.to_vector<double>();
  for (std::size_t i = 0; i < tokens.size(); ++i) REQUIRE((mask[i] != 0) == (tokens[i] != kPad));
  REQUIRE(batch.labels.to_vector<std::int64_t>() ==
          std::vector<std::int64_t>{data.split(true)[4].answer, data.split(true)[0].answer, data.split(true)[9].answer});
}

TEST_CASE("listops: training runs, resumption checks the data set and model, the benchmark reports every length") {
  TempDir dir;
  const std::string data = " --train-size 64 --test-size 16 --min-length 10 --max-length 40 --batch 16 --threads 2";
  const std::string small = data + " --layers 1 --heads 2 --embd 16";
  ProgramRun run = listops_run("train --epochs 2" + small + " --out " + dir.file("run"), dir);
  INFO(run.output);
  REQUIRE(run.status == 0);
  // An accuracy per epoch.
  REQUIRE_THAT(run.output, Catch::Contains("epoch 1: train loss") && Catch::Contains("epoch 2: train loss"));
  REQUIRE(run.output.find("epoch 3:") == std::string::npos);
  const std::string log = read_text_file(dir.file("run/log.csv"));
  REQUIRE(log.rfind("epoch,train_loss,test_acc,seconds\n1,", 0) == 0);

  const std::string resume = " --resume " + dir.file("run/checkpoint.safetensors");
  ProgramRun other_data = listops_run("train --epochs 3" + small + " --seed 2" + resume, dir);
  REQUIRE(other_data.status != 0);
  REQUIRE_THAT(other_data.output, Catch::Contains("another data set"));
  ProgramRun other_model = listops_run("train --epochs 3" + data + " --layers 1 --heads 2 --embd 32" + resume, dir);
  REQUIRE_THAT(other_model.output, Catch::Contains("--embd 32 does not match the checkpoint's 16"));
  // Class-token pooling is stored in the checkpoint and kept on resume.
  ProgramRun cls = listops_run("train --epochs 1 --pooling cls" + small + " --out " + dir.file("cls"), dir);
  REQUIRE(cls.status == 0);
  REQUIRE_THAT(cls.output, Catch::Contains("cls pooling"));
  const std::string cls_resume = " --resume " + dir.file("cls/checkpoint.safetensors");
  ProgramRun mean = listops_run("train --epochs 2 --pooling mean" + small + cls_resume, dir);
  REQUIRE(mean.status != 0);
  REQUIRE_THAT(mean.output, Catch::Contains("--pooling mean does not match the checkpoint's cls"));
  ProgramRun resumed = listops_run("train --epochs 2" + small + cls_resume + " --out " + dir.file("cls"), dir);
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  REQUIRE_THAT(resumed.output, Catch::Contains("cls pooling") && Catch::Contains("epoch 2: train loss"));
  // Sequences longer than the position table are refused by the model.
  ProgramRun bench = listops_run("bench --lengths 32,64 --batch 2 --steps 1 --layers 1 --heads 2 --embd 16", dir);
  INFO(bench.output);
  REQUIRE(bench.status == 0);
  for (const char* row : {"flow           32", "flow           64", "softmax        32", "softmax        64"})
    REQUIRE_THAT(bench.output, Catch::Contains(row));
}

TEST_CASE("listops: --init starts a longer-sequence stage from a shorter stage's weights") {
  TempDir dir;
  const std::string small = " --train-size 64 --test-size 16 --batch 16 --layers 1 --heads 2 --embd 16 --threads 2";
  ProgramRun short_stage =
      listops_run("train --epochs 1 --min-length 10 --max-length 40 --positions 80" + small + " --out " + dir.file("a"), dir);
  INFO(short_stage.output);
  REQUIRE(short_stage.status == 0);
  const std::string init = " --init " + dir.file("a/checkpoint.safetensors");
  // At learning rate 0 the new stage keeps the weights it started from.
  ProgramRun long_stage =
      listops_run("train --epochs 1 --lr 0 --min-length 40 --max-length 80" + small + init + " --out " + dir.file("b"), dir);
  INFO(long_stage.output);
  REQUIRE(long_stage.status == 0);
  REQUIRE_THAT(long_stage.output, Catch::Contains("model weights from") && Catch::Contains("40..80"));
  const auto before = load_safetensors(dir.file("a/checkpoint.safetensors"));
  const auto after = load_safetensors(dir.file("b/checkpoint.safetensors"));
  int compared = 0;
  for (const auto& [name, tensor] : before) {
    if (name.rfind("model.", 0) != 0) continue;
    REQUIRE(after.count(name) == 1);
    REQUIRE(after.at(name).to_vector<double>() == tensor.to_vector<double>());
    ++compared;
  }
  REQUIRE(compared > 5);

  ProgramRun too_long = listops_run("train --epochs 1 --min-length 40 --max-length 100" + small + init, dir);
  REQUIRE(too_long.status != 0);
  REQUIRE_THAT(too_long.output, Catch::Contains("has 80 positions but --max-length is 100"));
  ProgramRun both = listops_run("train --epochs 1 --max-length 80" + small + init + " --resume " +
                                dir.file("a/checkpoint.safetensors"), dir);
  REQUIRE_THAT(both.output, Catch::Contains("--init") && Catch::Contains("--resume"));
  REQUIRE(both.status != 0);
  ProgramRun short_table = listops_run("train --epochs 1 --max-length 80 --positions 30" + small, dir);
  REQUIRE_THAT(short_table.output, Catch::Contains("--positions 30 is shorter than --max-length 80"));
}

TEST_CASE("listops: curriculum runs the stages as train --init would, resumes a stopped stage, skips finished ones") {
  TempDir dir;
  const std::string small = " --train-size 64 --test-size 16 --batch 16 --layers 1 --heads 2 --embd 16 --threads 2";
  const std::string stages = " --stages 10-30:2:3e-3,30-60:1:1e-3";
  auto model_tensors = [](const std::string& checkpoint) {
    std::map<std::string, std::vector<double>> tensors;
    for (const auto& [name, tensor] : load_safetensors(checkpoint))
      if (name.rfind("model.", 0) == 0) tensors[name] = tensor.to_vector<double>();
    REQUIRE(tensors.size() > 5);
    return tensors;
  };

  ProgramRun straight = listops_run("curriculum" + stages + small + " --out " + dir.file("a"), dir);
  INFO(straight.output);
  REQUIRE(straight.status == 0);
  REQUIRE_THAT(straight.output, Catch::Contains("stage 1 of 2: lengths 10..30, 2 epochs") &&
                                    Catch::Contains("stage 2 of 2: lengths 30..60, 1 epochs") &&
                                    Catch::Contains("model weights from " + dir.file("a/stage-1/checkpoint.safetensors")) &&
                                    Catch::Contains("curriculum done: stage 1 "));
  // One log line per epoch of each stage.
  REQUIRE(read_text_file(dir.file("a/stage-1/log.csv")).find("\n2,") != std::string::npos);
  REQUIRE(read_text_file(dir.file("a/stage-2/log.csv")).find("\n2,") == std::string::npos);

  // The same stages as two train commands (the position table sized for the longest stage).
  ProgramRun first = listops_run("train --min-length 10 --max-length 30 --positions 60 --epochs 2 --lr 3e-3" + small +
                                 " --out " + dir.file("b/stage-1"), dir);
  REQUIRE(first.status == 0);
  ProgramRun second = listops_run("train --min-length 30 --max-length 60 --epochs 1 --lr 1e-3 --init " +
                                  dir.file("b/stage-1/checkpoint.safetensors") + small + " --out " + dir.file("b/stage-2"), dir);
  REQUIRE(second.status == 0);
  REQUIRE(model_tensors(dir.file("b/stage-2/checkpoint.safetensors")) ==
          model_tensors(dir.file("a/stage-2/checkpoint.safetensors")));

  // Stage 1 stopped after its first epoch: the curriculum continues it, then runs stage 2.
  ProgramRun stopped = listops_run("train --min-length 10 --max-length 30 --positions 60 --epochs 2 --lr 3e-3 "
                                   "--stop-at-epoch 1" + small + " --out " + dir.file("c/stage-1"), dir);
  REQUIRE(stopped.status == 0);
  ProgramRun continued = listops_run("curriculum" + stages + small + " --out " + dir.file("c"), dir);
  INFO(continued.output);
  REQUIRE(continued.status == 0);
  REQUIRE_THAT(continued.output, Catch::Contains("resumed from " + dir.file("c/stage-1/checkpoint.safetensors")));
  REQUIRE(model_tensors(dir.file("c/stage-2/checkpoint.safetensors")) ==
          model_tensors(dir.file("a/stage-2/checkpoint.safetensors")));

  // Run again: nothing left to train, nothing rewritten.
  const std::string log_before = read_text_file(dir.file("a/stage-2/log.csv"));
  ProgramRun again = listops_run("curriculum" + stages + small + " --out " + dir.file("a"), dir);
  INFO(again.output);
  REQUIRE(again.status == 0);
  REQUIRE(again.output.find("finished earlier") != again.output.rfind("finished earlier"));  // both stages
  REQUIRE(again.output.find("epoch 1: train loss") == std::string::npos);
  REQUIRE(read_text_file(dir.file("a/stage-2/log.csv")) == log_before);

  ProgramRun other_lengths = listops_run("curriculum --stages 12-30:2:3e-3,30-60:1:1e-3" + small + " --out " +
                                         dir.file("a"), dir);
  REQUIRE(other_lengths.status != 0);
  REQUIRE_THAT(other_lengths.output, Catch::Contains("another data set") && Catch::Contains("use another --out"));
  ProgramRun short_table = listops_run("curriculum" + stages + " --positions 50" + small + " --out " + dir.file("d"), dir);
  REQUIRE(short_table.status != 0);
  REQUIRE_THAT(short_table.output, Catch::Contains("--positions 50 is shorter than the longest stage's 60 tokens"));
  for (const char* bad : {"10-30:2", "10-30:2:3e-3,", "30-10:1:1e-3", "10-30:0:1e-3", "10-30:1:1e-3x"}) {
    ProgramRun refused = listops_run(std::string("curriculum --stages ") + bad + small + " --out " + dir.file("d"), dir);
    INFO(bad << ": " << refused.output);
    REQUIRE(refused.status != 0);
    REQUIRE_THAT(refused.output, Catch::Contains("--stages"));
  }
}
