// The files of a training run and the rules that keep them whole, shared by
// every training program (charlm, fashion, listops):
//
//   DIR/checkpoint.safetensors  model, optimizer, step, generators, config
//                               (written atomically: a failed save leaves the
//                               previous checkpoint in place)
//   DIR/log.csv                 one row per step or epoch; the first column
//                               is that step's or epoch's number
//
// - A new run refuses a DIR that already holds a checkpoint or a log (they
//   belong to another run) unless --overwrite, which deletes both at the new
//   run's first write (so a run that fails before its first step leaves the
//   old one whole). A resumed run may write into the DIR of its own checkpoint.
// - Resuming trims log.csv back to the rows the checkpoint has seen (rows
//   logged after it, and a line cut short by a kill), so that after any stop
//   the log and the checkpoint agree.
// - Every write is checked through close (a full disk is an error, never a
//   missing row); a failed write stops the run, and the message names the
//   last checkpoint, which is intact.
// - The loss and the gradient norm are checked before each update, the
//   parameters after it, and the whole state before every save and after a
//   resume: a NaN or an infinity stops the run with an error naming the step,
//   before anything non-finite is logged or saved. --allow-nonfinite turns
//   these checks off.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "../../flowgrad.h"

namespace examples {

namespace fg = flowgrad;

struct RunOptions {
  std::string out;     // directory for log.csv and checkpoint.safetensors ("" = write nothing)
  std::string resume;  // checkpoint to continue from ("" = a new run)
  bool overwrite = false;        // a new run may replace the run in `out`
  bool allow_nonfinite = false;  // train on through NaN/infinite values
};

class TrainingRun {
 public:
  // `program` prefixes messages; `log_header` is log.csv's first line
  // (without the newline). Checks `out` as described above. Of the ranks of
  // a data-parallel job only one is the `writer`; the others check the same
  // values and name the same files in their messages, but write nothing.
  TrainingRun(std::string program, RunOptions options, std::string log_header, bool writer = true);

  const RunOptions& options() const { return options_; }
  bool writes_files() const { return writer_ && !options_.out.empty(); }
  std::string checkpoint_path() const;
  std::string log_path() const;

  // Loads `checkpoint` (the file --resume names, already read) into the
  // objects, checks that the state is finite and trims the log to the rows
  // up to the checkpoint's step (a log row covers `steps_per_row` steps: 1
  // for a row per step, the epoch's steps for a row per epoch). Returns the
  // checkpoint's step.
  std::int64_t resume(const fg::SafetensorsFile& checkpoint, fg::nn::Module& model, fg::nn::Optimizer& optimizer,
                      const std::map<std::string, fg::Generator*>& rngs, std::int64_t steps_per_row = 1);

  // Before the update of `step` (counted from 1): loss and gradient norm must be finite.
  void check_step(std::int64_t step, double loss, double grad_norm) const;
  // After the update of `step`: every parameter must be finite.
  void check_parameters(std::int64_t step, const fg::nn::Module& model) const;

  // Appends one row (no newline) to log.csv, writing the header first when
  // the file is new. Does nothing without --out.
  void log_row(const std::string& row);
  // Checks the state and writes the checkpoint of `step`. Does nothing without --out.
  void save(std::int64_t step, const fg::nn::Module& model, const fg::nn::Optimizer& optimizer,
            const std::map<std::string, fg::Generator*>& rngs, const std::string& config);

 private:
  // Runs a write; a failure becomes an error that says which checkpoint is intact.
  template <class Write>
  void checked_write(const Write& write);
  [[noreturn]] void stop(const std::string& reason) const;
  std::string intact_checkpoint_note() const;
  void trim_log(std::int64_t last_row);
  void remove_overwritten_run();  // --overwrite's deletion, at the first write

  std::string program_;
  RunOptions options_;
  std::string log_header_;
  bool writer_ = true;
  bool overwrite_pending_ = false;
  std::int64_t saved_step_ = -1;  // the step of the checkpoint on disk; -1: none of this run
};

// The model-shape rule every program checks on its flags: --heads divides
// --embd (so it is at most --embd).
void check_model_shape(const std::string& program, std::int64_t embd, std::int64_t heads);

// Refuses, before anything is built, a training run that cannot fit in
// memory: float32 weights, gradients and AdamW's two moments (16 bytes per
// parameter) plus a lower bound on what a Flowformer step keeps for
// backward (16 floats per token, layer and width; measured: about 21), for
// every rank of the job on this host (each with its share of the tokens).
// `flags` names the flags that set these sizes, for the message.
void check_training_memory(const std::string& program, const std::string& flags, double parameters,
                           std::int64_t tokens_per_step, std::int64_t layers, std::int64_t width);

}  // namespace examples
