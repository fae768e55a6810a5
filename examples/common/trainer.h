// The training loop every program shares (charlm, fashion, listops, and
// any program to come): a program supplies its model, optimizer, schedule,
// the loss of a step and what to do after it; the Trainer does the rest,
// the same way everywhere:
//
//   - each step: this rank's loss on its share of the global batch, backward,
//     gradients averaged over the ranks (dist::DataParallel), clipping,
//     non-finite checks, the optimizer step;
//   - a progress line (rank 0), log.csv rows and checkpoints (rank 0, by the
//     rules of examples/training_run.h), Ctrl-C (finish the step, save, exit
//     130), --stop-at, and exact resumption;
//   - under mpirun every rank runs the same loop; a rank's error ends the
//     whole job (examples::report_and_exit).
//
// Random generators come in two kinds: shared ones (the data order, the
// evaluation batches) hold the same state on every rank and are saved once;
// per-rank ones (dropout masks) differ between ranks, are seeded from rank
// 0's and saved for every rank ("dropout", "dropout@1", ...). A run resumed
// with as many ranks continues bit for bit; with another number of ranks,
// shared generators continue and ranks without a saved stream start one.
//
// Testing hook: FLOWGRAD_FAULT_AT=RANK:STEP makes that rank throw before
// that step (1-based), RANK:STEP:kill makes it die of SIGKILL there, to
// check that the job ends cleanly.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../../flowgrad.h"
#include "progress.h"
#include "training_run.h"

namespace examples {

struct TrainerOptions {
  std::string program;            // names the program in messages
  RunOptions run;                 // --out, --resume, --overwrite, --allow-nonfinite
  std::string log_header;         // log.csv's first line
  std::int64_t total_steps = 0;   // the schedule's length
  std::int64_t stop_at = 0;       // stop (and save) after this step; 0: run to total_steps
  std::int64_t global_batch = 0;  // examples per step over all ranks; must divide by the ranks
  std::int64_t steps_per_row = 1; // steps a log row covers (for trimming the log on resume)
  double grad_clip = 1.0;
  std::string unit = "tok/s";     // what the progress line counts
  std::int64_t items_per_example = 1;  // e.g. tokens per sequence, for the throughput
  // Model FLOPs of a training step per item (e.g. FlowformerConfig::
  // training_flops_per_token); when set, the trainer measures this machine's
  // sgemm rate once and reports model FLOPs utilisation (MFU) with each step.
  double flops_per_item = 0.0;
  std::int64_t plain_every = 10;  // progress lines when stdout is no terminal
};

struct TrainerRngs {
  std::map<std::string, fg::Generator*> shared = {};    // same state on every rank
  std::map<std::string, fg::Generator*> per_rank = {};  // one stream per rank
};

// This rank's part of a step: the mean loss over its `examples` examples
// (an undefined loss when it has none).
struct ShardLoss {
  fg::Tensor loss;
  std::int64_t examples = 0;
};

// FLOWGRAD_FAULT_AT, read once.
struct InjectedFault {
  std::int64_t rank = -1, step = -1;
  bool kill = false;
};

// A finished step as every rank sees it: the loss over the whole global
// batch, the step's seconds, the examples of the whole job.
struct StepResult {
  std::int64_t step = 0;  // steps done so far
  double loss = 0.0;
  double seconds = 0.0;
  std::int64_t examples = 0;
  double mfu = 0.0;  // model FLOPs / (sgemm rate x ranks); NaN without flops_per_item
};

// What a program wants after a step (every rank computes it; rank 0 shows
// and writes it).
struct StepReport {
  std::string progress_extra;  // appended to the progress line, e.g. "val 1.53"
  std::string message;         // a line after the progress line, e.g. an epoch's accuracy
  std::string log_row;         // a row for log.csv without the newline; "" for none
  bool save = false;           // write a checkpoint of this step
  std::string stop;            // non-empty: end the run after this step, printing this
};

class Trainer {
 public:
  Trainer(TrainerOptions options, fg::nn::Module& model, fg::nn::Optimizer& optimizer,
          std::function<double(std::int64_t step)> lr_at, TrainerRngs rngs, std::string config);

  const fg::dist::Communicator& comm() const { return comm_; }
  // Rows [first, first + count) of a global batch of n examples that this rank takes.
  std::pair<std::int64_t, std::int64_t> shard(std::int64_t n) const;
  std::int64_t step() const { return step_; }

  // Continues from --resume: loads the checkpoint on every rank and returns its step.
  std::int64_t resume();

  // Trains until total_steps, --stop-at, Ctrl-C or a report's stop, and
  // returns the exit status: 0, or 130 when interrupted (after saving).
  int run(const std::function<ShardLoss(std::int64_t step)>& loss,
          const std::function<StepReport(const StepResult&)>& after_step);

 private:
  void save();

  TrainerOptions options_;
  const fg::dist::Communicator& comm_;
  fg::nn::Module& model_;
  fg::nn::Optimizer& optimizer_;
  std::function<double(std::int64_t)> lr_at_;
  TrainerRngs rngs_;
  std::string config_;
  TrainingRun files_;
  fg::dist::DataParallel data_parallel_;
  std::int64_t step_ = 0, saved_step_ = -1;
  double sgemm_flops_ = 0.0;  // FLOP/s of all ranks' sgemm probes (with flops_per_item)
  InjectedFault fault_;
};

// Sets a training process up: joins the job (dist::Communicator::world(),
// which gives each rank its share of the cores) and then applies --threads
// when given (> 0). Returns the job.
const fg::dist::Communicator& start_process(int threads);

// For a program's header line: "" for one process, else " per rank, N ranks".
std::string ranks_note(const fg::dist::Communicator& comm);

// What every program's main does with an error: ends the whole job, naming
// the rank when there are several ("charlm: rank 1 of 2: ..."), and exits 1.
[[noreturn]] void report_and_exit(const std::string& program, const std::exception& error);

}  // namespace examples
