// Regression tests for the defects a hostile-user review found (issue 11),
// numbered as there: each runs the programs as a user would, with the
// command lines and files of the report, and checks for a clear error
// naming the flag or file, a non-zero exit, no sanitizer report, nothing
// overwritten and no temporary file left behind. They run in the release
// and the sanitizer builds alike.
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <tuple>

#include <nlohmann/json.hpp>

#include "../examples/plot/plot.h"
#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;
namespace fs = std::filesystem;

namespace {

const std::string kCharlmTiny =
    " --batch 4 --block 16 --layers 1 --heads 2 --embd 16 --eval-every 2 --eval-batches 2 --sample-chars 0 --threads 2";
const std::string kFashionTiny = " --batch 16 --lr 1e-2 --patch 7 --layers 1 --heads 2 --embd 16 --threads 2";
const std::string kListopsTiny =
    " --train-size 32 --test-size 8 --min-length 10 --max-length 30 --batch 16 --layers 1 --heads 2 --embd 16 "
    "--threads 2";

ProgramRun charlm(const std::string& arguments, const TempDir& dir) { return run_program(CHARLM_PATH, arguments, dir); }
ProgramRun fashion(const std::string& arguments, const TempDir& dir) { return run_program(FASHION_PATH, arguments, dir); }
ProgramRun listops(const std::string& arguments, const TempDir& dir) { return run_program(LISTOPS_PATH, arguments, dir); }
ProgramRun plot_program(const std::string& arguments, const TempDir& dir) {
  return run_program(PLOT_PATH, arguments, dir);
}

// Runs `program` with writes beyond `bytes` of any file failing with EFBIG,
// as on a full disk (prlimit; SIGXFSZ ignored so that the write fails
// instead of killing the process). The output reaches the capture through
// a pipe, so the limit does not cut it short; the exit status comes last.
ProgramRun run_with_file_size_limit(const std::string& program, const std::string& arguments, const TempDir& dir,
                                    std::size_t bytes) {
  const std::string log = dir.file("output.txt");
  const std::string limited = "trap '' XFSZ; exec prlimit --fsize=" + std::to_string(bytes) + " " + program + " " + arguments;
  std::system(("{ (" + limited + ") 2>&1; echo \"exit status $?\"; } | cat >" + log).c_str());
  std::string output = read_text_file(log);
  const std::size_t last = output.rfind("exit status ");
  REQUIRE(last != std::string::npos);
  const int code = std::stoi(output.substr(last + 12));
  output.erase(last);
  return {code == 0 ? 0 : (code & 0xff) << 8, output};  // as std::system reports an exit
}

// A run that must be refused: non-zero exit, the expected words, and the
// refusal is the program's own error, not a sanitizer's report or a crash.
void require_refused(const ProgramRun& run, const std::vector<std::string>& words) {
  INFO(run.output);
  REQUIRE(run.status != 0);
  REQUIRE(WIFEXITED(run.status));
  REQUIRE(WEXITSTATUS(run.status) < 128);  // an exit of the program, not a signal's
  for (const std::string& word : words) REQUIRE_THAT(run.output, Catch::Contains(word));
  REQUIRE_THAT(run.output, !Catch::Contains("Sanitizer") && !Catch::Contains("runtime error:"));
}

void require_succeeded(const ProgramRun& run) {
  INFO(run.output);
  REQUIRE(run.status == 0);
}

// The entries of a directory other than output.txt (the captured output).
std::vector<std::string> files_in(const std::string& path) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(path)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A Fashion-MNIST-layout data set whose `file` is replaced by `bytes`.
std::string data_set_with(const TempDir& dir, const std::string& name, const std::string& file,
                          const std::string& bytes, bool gzip = true) {
  const std::string root = write_fashion_data_set(dir, name, 28, 32, 8);
  gzip ? write_gzip_file(root + "/" + file, bytes) : write_bytes(root + "/" + file, bytes);
  return root;
}

// Rewrites a checkpoint with `edit` applied to its tensors and metadata.
void edit_checkpoint(const std::string& path, const std::function<void(SafetensorsFile&)>& edit) {
  SafetensorsFile file = load_safetensors_file(path);
  edit(file);
  save_safetensors(path, file.tensors, file.metadata);
}


}  // namespace

// ---- 1. Memory safety of the IDX reader ----

TEST_CASE("issue 11.1: malformed IDX data sets are refused naming the file, never read out of bounds") {
  TempDir dir;
  // Dimensions whose product wraps past 2^64 (it loaded as 0 values and gather read through null).
  require_refused(fashion("train --epochs 1" + kFashionTiny + " --data " +
                              data_set_with(dir, "wraps", "train-images-idx3-ubyte.gz",
                                            idx_file_bytes({1u << 20, 1u << 20, 1u << 24}, {})),
                          dir),
                  {"[read_idx]", "train-images-idx3-ubyte.gz", "[1048576, 1048576, 16777216]", "more than 2^40"});
  // 12 bytes declaring [1023410192, 0] (to_tensor allocated 8 GB): a valid empty array, refused
  // as labels because the counts differ.
  require_refused(fashion("train --epochs 1" + kFashionTiny + " --data " +
                              data_set_with(dir, "empty-items", "train-labels-idx1-ubyte.gz",
                                            idx_file_bytes({1023410192u, 0}, {}), false),
                          dir),
                  {"[fashion]", "training images and labels do not match", "[1023410192, 0]"});
  // Zero items with huge height and width (ended in std::bad_alloc).
  require_refused(fashion("train --epochs 1" + kFashionTiny + " --data " +
                              data_set_with(dir, "no-items", "train-images-idx3-ubyte.gz",
                                            idx_file_bytes({0, 0xFFFFFFFFu, 0xFFFFFFFFu}, {})),
                          dir),
                  {"[read_idx]", "[0, 4294967295, 4294967295]", "more than 2^40"});
}

// ---- 2. Overflow in size arithmetic ----

TEST_CASE("issue 11.2: sizes whose products overflow are refused naming the flag or the file") {
  TempDir dir;
  const std::string max = "9223372036854775807";
  require_refused(charlm("train --block " + max + " --steps 2 --threads 2", dir),
                  {"--block: 9223372036854775807 is not an integer from 1 to 2^40"});
  require_refused(charlm("train --embd " + max + " --steps 2 --threads 2", dir), {"--embd: 9223372036854775807"});
  require_refused(charlm("train --batch " + max + " --steps 2 --threads 2", dir), {"--batch: 9223372036854775807"});
  require_refused(listops("train --max-length " + max + kListopsTiny, dir), {"--max-length: 9223372036854775807"});
  require_refused(listops("train --positions " + max + kListopsTiny, dir), {"--positions: 9223372036854775807"});
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  require_refused(fashion("train --epochs " + max + kFashionTiny + data, dir), {"--epochs: 9223372036854775807"});
  require_refused(fashion("train --epochs 1 --batch " + max + " --patch 7 --threads 2" + data, dir),
                  {"--batch: 9223372036854775807"});
  // In range one by one, but the weights they give are beyond the maximum tensor size.
  require_refused(charlm("train --block 1099511627776 --steps 2 --threads 2", dir),
                  {"[FlowformerConfig]", "block_size=1099511627776", "2^40"});
  // A checkpoint whose configuration holds a huge block_size or vocab_size.
  REQUIRE(charlm("train --steps 2" + kCharlmTiny + " --out " + dir.file("run"), dir).status == 0);
  const std::string checkpoint = dir.file("run/checkpoint.safetensors");
  for (const std::string field : {"block_size", "vocab_size"}) {
    const std::string crafted = dir.file(field + ".safetensors");
    fs::copy_file(checkpoint, crafted);
    edit_checkpoint(crafted, [&](SafetensorsFile& file) {
      nlohmann::json config = nlohmann::json::parse(file.metadata.at("config"));
      config["model"][field] = std::numeric_limits<std::int64_t>::max();
      file.metadata.at("config") = config.dump();
    });
    require_refused(charlm("sample --checkpoint " + crafted + " --chars 5", dir),
                    {"[FlowformerConfig]", field + "=9223372036854775807"});
  }
  // An IDX data set [0, 2^32-1, 2^32-1] with --patch 1: refused by the reader (see 11.1), and the
  // patch count itself is checked arithmetic (test_vision).
  // plot on a CSV of 9.8 M columns (the panel height overflowed int).
  std::string wide = "step";
  for (int i = 1; i < 9'800'000; ++i) wide += ",c";
  write_bytes(dir.file("wide.csv"), wide + "\n");
  require_refused(plot_program(dir.file("wide.csv") + " --out " + dir.file("wide.png"), dir),
                  {"[plot]", "wide.csv has 9799999 columns to plot; one picture holds at most 100 panels"});
  REQUIRE_FALSE(fs::exists(dir.file("wide.png")));
}

// ---- 3. Unbounded model building ----

TEST_CASE("issue 11.3: models that cannot fit in memory are refused with the estimate, before building") {
  TempDir dir;
  require_refused(charlm("train --layers 9223372036854775807 --steps 2 --threads 2", dir),
                  {"--layers: 9223372036854775807 is not an integer from 1 to 2^40"});
  // Within the flag's range, far beyond memory: the estimate, naming the flags.
  require_refused(charlm("train --layers 1099511627776 --steps 2 --threads 2", dir),
                  {"[charlm] these sizes (--layers, --embd, --block, --batch) need at least", "parameters",
                   "of memory are available"});
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  require_refused(fashion("train --epochs 1 --layers 1000000000 --patch 7 --threads 2" + data, dir),
                  {"[fashion] these sizes (--layers, --embd, --patch, --batch) need at least"});
  require_refused(listops("train --epochs 1 --layers 1000000000 --train-size 8 --test-size 8 --threads 2", dir),
                  {"[listops] these sizes", "need at least"});
  // A checkpoint whose config holds n_layer=1000000: the library refuses to build it.
  REQUIRE(charlm("train --steps 2" + kCharlmTiny + " --out " + dir.file("run"), dir).status == 0);
  const std::string deep = dir.file("deep.safetensors");
  fs::copy_file(dir.file("run/checkpoint.safetensors"), deep);
  edit_checkpoint(deep, [](SafetensorsFile& file) {
    nlohmann::json config = nlohmann::json::parse(file.metadata.at("config"));
    config["model"]["n_embd"] = 4096;
    config["model"]["n_layer"] = 1000000;
    file.metadata.at("config") = config.dump();
  });
  require_refused(charlm("sample --checkpoint " + deep + " --chars 5", dir),
                  {"[FlowformerLM] the model would have", "of memory available"});
}

// ---- 4. Data lost or overwritten ----

TEST_CASE("issue 11.4: a failed log write stops the run with an error; nothing is lost silently") {
  TempDir dir;
  const std::string out = dir.file("run");
  // Writes past 1 KiB fail (EFBIG), as a full disk would: log.csv outgrows it after ~30 rows,
  // before the first checkpoint (--save-every 1000). ENOSPC exited 0 with rows missing.
  const ProgramRun run = run_with_file_size_limit(
      CHARLM_PATH,
      "train --steps 80 --save-every 1000 --batch 4 --block 16 --layers 1 --heads 2 --embd 16 --sample-chars 0 "
      "--threads 2 --out " + out,
      dir, 1024);
  require_refused(run, {"[charlm]", out + "/log.csv", "File too large", "training stopped",
                        "no checkpoint of this run was saved"});
  REQUIRE(files_in(out) == std::vector<std::string>{"log.csv"});

  // Fashion wrote none of its epoch rows once; now the first failed row stops it.
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  const ProgramRun epoch_rows = run_with_file_size_limit(
      FASHION_PATH, "train --epochs 2" + kFashionTiny + data + " --out " + dir.file("fashion"), dir, 40);
  require_refused(epoch_rows, {"[fashion]", "log.csv", "File too large", "training stopped"});
  REQUIRE_FALSE(fs::exists(dir.file("fashion/checkpoint.safetensors")));
}

TEST_CASE("issue 11.4: a failed checkpoint save leaves the previous checkpoint intact and no temporary") {
  TempDir dir;
  const std::string out = dir.file("run"), checkpoint = out + "/checkpoint.safetensors";
  require_succeeded(charlm("train --steps 4 --stop-at 2" + kCharlmTiny + " --out " + out, dir));
  const std::string before = read_text_file(checkpoint);
  // The log rows fit under the limit, a whole checkpoint does not.
  const ProgramRun resumed = run_with_file_size_limit(
      CHARLM_PATH, "train --steps 4 --save-every 1" + kCharlmTiny + " --out " + out + " --resume " + checkpoint, dir,
      before.size() / 2);
  require_refused(resumed, {"[charlm]", "writing the temporary file", "File too large",
                            "the checkpoint of step 2 in " + checkpoint + " is intact"});
  REQUIRE(read_text_file(checkpoint) == before);
  REQUIRE(files_in(out) == std::vector<std::string>{"checkpoint.safetensors", "log.csv"});
  // What the failed run logged (step 3) is beyond the checkpoint: resuming trims it, and the
  // run then ends as a straight one.
  require_succeeded(charlm("train --steps 4" + kCharlmTiny + " --out " + out + " --resume " + checkpoint, dir));
  require_succeeded(charlm("train --steps 4" + kCharlmTiny + " --out " + dir.file("straight"), dir));
  REQUIRE(without_timing_columns(read_text_file(out + "/log.csv")) ==
          without_timing_columns(read_text_file(dir.file("straight/log.csv"))));
}

TEST_CASE("issue 11.4: a new run refuses an --out that holds another run, unless --resume or --overwrite") {
  TempDir dir;
  const std::string out = dir.file("run"), checkpoint = out + "/checkpoint.safetensors";
  require_succeeded(charlm("train --steps 6" + kCharlmTiny + " --out " + out, dir));
  const std::string checkpoint_before = read_text_file(checkpoint), log_before = read_text_file(out + "/log.csv");
  // A 200-step checkpoint once became step 5 this way, with rows 1-5 appended after row 200.
  require_refused(charlm("train --steps 2" + kCharlmTiny + " --out " + out, dir),
                  {"[charlm] --out " + out + " holds the checkpoint and the log of another run", "--resume",
                   "--overwrite"});
  REQUIRE(read_text_file(checkpoint) == checkpoint_before);
  REQUIRE(read_text_file(out + "/log.csv") == log_before);
  // A log without a checkpoint (a run killed before its first save) is another run's data too.
  fs::remove(checkpoint);
  require_refused(charlm("train --steps 2" + kCharlmTiny + " --out " + out, dir), {"holds the log of another run"});
  // --overwrite of a run that fails before its first step (here: its first update overflows)
  // leaves the old run whole; the replacement happens at the new run's first write.
  require_refused(charlm("train --steps 2 --overwrite --lr 1e308" + kCharlmTiny + " --out " + out, dir),
                  {"[charlm] step 1", "non-finite"});
  REQUIRE(read_text_file(out + "/log.csv") == log_before);
  // --overwrite replaces both: the log holds the new run's rows only.
  require_succeeded(charlm("train --steps 2 --overwrite" + kCharlmTiny + " --out " + out, dir));
  const std::string log = read_text_file(out + "/log.csv");
  REQUIRE(std::count(log.begin(), log.end(), '\n') == 3);
  REQUIRE(nn::read_checkpoint_info(checkpoint).step == 2);
  // --overwrite of the run one resumes is a contradiction.
  require_refused(charlm("train --steps 4 --overwrite" + kCharlmTiny + " --out " + out + " --resume " + checkpoint, dir),
                  {"--overwrite starts a new run", "give one"});

  // The classifiers share the rule.
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  require_succeeded(fashion("train --epochs 1" + kFashionTiny + data + " --out " + dir.file("fashion"), dir));
  require_refused(fashion("train --epochs 1" + kFashionTiny + data + " --out " + dir.file("fashion"), dir),
                  {"[fashion] --out", "holds the checkpoint and the log of another run"});
  require_succeeded(listops("train --epochs 1" + kListopsTiny + " --out " + dir.file("listops"), dir));
  require_refused(listops("train --epochs 1" + kListopsTiny + " --out " + dir.file("listops"), dir),
                  {"[listops] --out", "holds the checkpoint and the log of another run"});
  require_succeeded(listops("train --epochs 1 --overwrite" + kListopsTiny + " --out " + dir.file("listops"), dir));
}

TEST_CASE("issue 11.4: after a kill, the next save removes its temporaries and resuming trims the log") {
  TempDir dir;
  const std::string out = dir.file("run"), checkpoint = out + "/checkpoint.safetensors";
  require_succeeded(charlm("train --steps 6 --stop-at 3" + kCharlmTiny + " --out " + out, dir));
  // What a kill -9 during a save and after logging leaves: a temporary of a process that is gone,
  // rows the checkpoint has not seen, and a row cut short.
  const std::string stale = save_temporary(checkpoint, unused_pid());
  write_bytes(stale, "half a checkpoint");
  append_to_file("test", out + "/log.csv", "4,4.1,,100\n5,4.0,,100\n6,3.9");
  require_succeeded(charlm("train --steps 6" + kCharlmTiny + " --out " + out + " --resume " + checkpoint, dir));
  REQUIRE(files_in(out) == std::vector<std::string>{"checkpoint.safetensors", "log.csv"});
  require_succeeded(charlm("train --steps 6" + kCharlmTiny + " --out " + dir.file("straight"), dir));
  REQUIRE(without_timing_columns(read_text_file(out + "/log.csv")) ==
          without_timing_columns(read_text_file(dir.file("straight/log.csv"))));
}

// ---- 5. Non-finite numbers ----

TEST_CASE("issue 11.5: a non-finite loss or update stops training naming the step; nothing non-finite is saved") {
  TempDir dir;
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  const std::string out = dir.file("run");
  // --lr 1e308 logged nan losses, exited 0 and saved a NaN checkpoint.
  require_refused(fashion("train --epochs 2 --lr 1e308 --batch 16 --patch 7 --layers 1 --heads 2 --embd 16 --threads 2" +
                              data + " --out " + out,
                          dir),
                  {"[fashion] step ", "non-finite", "--allow-nonfinite", "training stopped"});
  if (fs::exists(out + "/checkpoint.safetensors")) {
    const SafetensorsFile file = load_safetensors_file(out + "/checkpoint.safetensors");
    REQUIRE_FALSE(nn::find_nonfinite(file.tensors));
  }
  if (fs::exists(out + "/log.csv")) REQUIRE_THAT(read_text_file(out + "/log.csv"), !Catch::Contains("nan"));
  // The opt-out trains on.
  require_succeeded(fashion("train --epochs 1 --lr 1e308 --batch 16 --patch 7 --layers 1 --heads 2 --embd 16 "
                            "--threads 2 --allow-nonfinite" +
                                data,
                            dir));
}

TEST_CASE("issue 11.5: a checkpoint with a corrupted optimizer value is not resumed") {
  TempDir dir;
  const std::string out = dir.file("run"), checkpoint = out + "/checkpoint.safetensors";
  require_succeeded(charlm("train --steps 4 --stop-at 2" + kCharlmTiny + " --out " + out, dir));
  edit_checkpoint(checkpoint, [](SafetensorsFile& file) {
    file.tensors.at("optim.state.0.exp_avg").data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  });
  const std::string before = read_text_file(checkpoint);
  require_refused(charlm("train --steps 4" + kCharlmTiny + " --out " + out + " --resume " + checkpoint, dir),
                  {"[charlm] the checkpoint", "holds a non-finite value in 'optim.state.0.exp_avg' (element 0 is nan)",
                   "--allow-nonfinite"});
  REQUIRE(read_text_file(checkpoint) == before);
}

// ---- 6. Unclear or silent handling ----

TEST_CASE("issue 11.6: data files too small, empty or not files get messages that name them and the flag") {
  TempDir dir;
  {
    std::ofstream small(dir.file("small.txt"));
    for (int i = 0; i < 30; ++i) small << "to be or not ";  // 390 characters, 39 for validation
  }
  // "too few for a block of 256" when the block was 16: the baseline no longer samples 256.
  require_succeeded(charlm("train --steps 2 --data " + dir.file("small.txt") + kCharlmTiny, dir));
  require_refused(charlm("train --steps 2 --block 64 --batch 2 --layers 1 --heads 2 --embd 16 --threads 2 --data " +
                             dir.file("small.txt"),
                         dir),
                  {"[charlm] --data", "small.txt", "10 % validation split of 39", "too short for --block 64"});
  std::ofstream(dir.file("empty.txt")).flush();
  require_refused(charlm("train --steps 2 --data " + dir.file("empty.txt") + kCharlmTiny, dir),
                  {"[charlm --data]", "empty.txt", "is empty"});
  require_refused(charlm("train --steps 2 --data " + dir.path().string() + kCharlmTiny, dir),
                  {"[charlm --data]", "is a directory"});
}

TEST_CASE("issue 11.6: numeric flags are never clamped or ignored; the bounds are the same everywhere") {
  TempDir dir;
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 32, 8);
  // --steps beyond 2^63 silently became 2^63-1.
  require_refused(charlm("train --steps 18446744073709551616" + kCharlmTiny, dir),
                  {"--steps: 18446744073709551616 is not an integer from 1 to 2^40"});
  // --seed -1 equalled a huge seed.
  require_refused(charlm("train --steps 2 --seed -1" + kCharlmTiny, dir), {"--seed: -1 is not an integer from 0 to 2^64-1"});
  // --threads -1, --stop-at -1 and --stop-at-epoch -1 were ignored; 1025 threads were accepted.
  require_refused(charlm("train --steps 2 --threads -1 --batch 4 --block 16", dir), {"--threads: -1"});
  require_refused(charlm("train --steps 2 --stop-at -1" + kCharlmTiny, dir), {"--stop-at: -1"});
  require_refused(fashion("train --epochs 2 --stop-at-epoch -1" + kFashionTiny + data, dir), {"--stop-at-epoch: -1"});
  for (const auto& run : {charlm("train --steps 2 --threads 1025 --batch 4", dir),
                          fashion("train --threads 1025" + data, dir), listops("train --threads 1025", dir),
                          listops("bench --threads 1025", dir), charlm("sample --checkpoint x --threads 1025", dir)})
    require_refused(run, {"--threads: 1025 is not an integer from 0 to 1024"});
  require_refused(run_program(FLOWATTN_PATH, "--threads 1025 a b", dir),
                  {"[flowattn] --threads: 1025 is not an integer from 1 to 1024"});
  require_refused(run_program(FLOW_INSPECT_PATH, "--seed -1", dir), {"--seed: -1 is not an integer from 0 to 2^64-1"});
  require_refused(run_program(FLOW_INSPECT_PATH, "--L 99999999999999999999", dir), {"--L: 99999999999999999999"});
  // Octal, hexadecimal, fractions, nan and infinity are not numbers of flags.
  for (const std::string bad : {"0x10", "1.5", "abc", "+3", "1e3"})
    require_refused(charlm("train --steps '" + bad + "'" + kCharlmTiny, dir), {"--steps: "});
  const ProgramRun leading_zero = charlm("train --steps 010" + kCharlmTiny, dir);  // strtoll read it as octal 8
  require_succeeded(leading_zero);
  REQUIRE_THAT(leading_zero.output, Catch::Contains("step 10/10"));
  for (const std::string bad : {"nan", "inf", "-0.5", "1"})
    require_refused(charlm("train --steps 2 --dropout " + bad + kCharlmTiny, dir), {"--dropout: " + bad + " is not a number"});
  // Environment variables: FLOWGRAD_CACHE_MB wrapped to 0, FLOWGRAD_NUM_THREADS had an unstated bound.
  require_refused(run_program("FLOWGRAD_CACHE_MB=18446744073709551616 " + std::string(CHARLM_PATH),
                              "train --steps 2" + kCharlmTiny, dir),
                  {"[FLOWGRAD_CACHE_MB] expected an integer from 0 to 1073741824"});
  require_refused(run_program("FLOWGRAD_NUM_THREADS=1025 " + std::string(CHARLM_PATH),
                              "train --steps 2 --batch 4 --block 16 --layers 1 --heads 2 --embd 16", dir),
                  {"[FLOWGRAD_NUM_THREADS] expected an integer from 1 to 1024"});
}

TEST_CASE("issue 11.6: malformed files a program reads are refused naming the file and the defect") {
  TempDir dir;
  // A duplicate tensor name in a checkpoint's header was reported as "a gap".
  const std::string duplicate = dir.file("duplicate.safetensors");
  const std::string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  std::string bytes(8, '\0');
  for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_bytes(duplicate, bytes + header + std::string(8, '\0'));
  require_refused(charlm("sample --checkpoint " + duplicate, dir),
                  {"[load_safetensors]", "duplicate.safetensors", "names tensor 'a' twice"});
  // A gzip file without its CRC/size trailer, or with trailing garbage, loaded.
  const std::string labels = idx_file_bytes({32}, std::vector<std::uint8_t>(32, 3));
  const std::string gz_path = dir.file("labels.gz");
  write_gzip_file(gz_path, labels);
  const std::string gz = read_text_file(gz_path);
  for (const auto& [name, broken, defect] :
       {std::tuple<std::string, std::string, std::string>{"cut", gz.substr(0, gz.size() - 8), "truncated gzip data"},
        {"garbage", gz + "trailing garbage", "not gzip data"}}) {
    const std::string root = write_fashion_data_set(dir, name, 28, 32, 8);
    write_bytes(root + "/train-labels-idx1-ubyte.gz", broken);
    require_refused(fashion("train --epochs 1" + kFashionTiny + " --data " + root, dir),
                    {"[read_idx]", name + "/train-labels-idx1-ubyte.gz", defect});
  }
  // plot's messages were garbled by CRLF line ends.
  write_bytes(dir.file("crlf.csv"), "step,loss\r\n1,2.5\r\n2,x\r\n");
  const ProgramRun crlf = plot_program(dir.file("crlf.csv") + " --out " + dir.file("crlf.png"), dir);
  require_refused(crlf, {"crlf.csv line 3: \"x\" is not a number"});
  REQUIRE(crlf.output.find('\r') == std::string::npos);
  write_bytes(dir.file("good.csv"), "step,loss\r\n1,2.5\r\n2,2.25\r\n");
  require_succeeded(plot_program(dir.file("good.csv") + " --out " + dir.file("good.png"), dir));
  REQUIRE(plot::png_size(dir.file("good.png")).first > 0);
}
