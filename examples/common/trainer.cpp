#include "trainer.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace examples {

namespace {

namespace nn = fg::nn;
namespace dist = fg::dist;

std::atomic<bool> g_interrupted{false};

// The checkpoint's name of rank r's stream of a per-rank generator.
std::string rank_name(const std::string& name, int rank) {
  return rank == 0 ? name : name + "@" + std::to_string(rank);
}

// FLOWGRAD_FAULT_AT=RANK:STEP[:kill] (a testing hook).
InjectedFault injected_fault() {
  const char* value = std::getenv("FLOWGRAD_FAULT_AT");
  InjectedFault fault;
  if (value == nullptr) return fault;
  long long rank = -1, step = -1;
  char kill[5] = {};
  const int fields = std::sscanf(value, "%lld:%lld:%4s", &rank, &step, kill);
  if (fields < 2 || (fields == 3 && std::string(kill) != "kill"))
    fg::fail("FLOWGRAD_FAULT_AT", "expected RANK:STEP or RANK:STEP:kill, got \"", value, "\"");
  return {rank, step, fields == 3};
}

}  // namespace

Trainer::Trainer(TrainerOptions options, nn::Module& model, nn::Optimizer& optimizer,
                 std::function<double(std::int64_t)> lr_at, TrainerRngs rngs, std::string config)
    : options_(std::move(options)),
      comm_(dist::Communicator::world()),
      model_(model),
      optimizer_(optimizer),
      lr_at_(std::move(lr_at)),
      rngs_(std::move(rngs)),
      config_(std::move(config)),
      files_(options_.program, options_.run, options_.log_header, /*writer=*/comm_.is_root()),
      data_parallel_(model, comm_) {
  if (options_.global_batch % comm_.size() != 0)
    fg::fail(options_.program, "--batch ", options_.global_batch, " is the global batch of all ", comm_.size(),
             " ranks and must divide by them");
  // Rank 0 keeps the stream it was given, so one process and rank 0 of many draw the same masks.
  for (auto& [name, gen] : rngs_.per_rank)
    if (comm_.rank() > 0) gen->manual_seed(fg::Generator(*gen).next_u64() + static_cast<std::uint64_t>(comm_.rank()));
  fault_ = injected_fault();
  // Every rank measures its own cores; ranks sharing a machine start together.
  if (options_.flops_per_item > 0) {
    comm_.barrier();
    sgemm_flops_ = comm_.all_reduce(fg::blas::measure_sgemm_gflops() * 1e9);
  }
}

std::pair<std::int64_t, std::int64_t> Trainer::shard(std::int64_t n) const {
  const std::int64_t first = n * comm_.rank() / comm_.size(), end = n * (comm_.rank() + 1) / comm_.size();
  return {first, end - first};
}

std::int64_t Trainer::resume() {
  const fg::SafetensorsFile file = fg::load_safetensors_file(options_.run.resume);
  const std::vector<std::string> saved = nn::read_checkpoint_info(file, options_.run.resume).generators;
  auto has = [&](const std::string& name) { return std::find(saved.begin(), saved.end(), name) != saved.end(); };
  // Shared streams, and this rank's stream of each per-rank generator: rank
  // 0's must be there (loading fails naming it otherwise); a rank the
  // checkpoint had no stream for keeps the one it was seeded with.
  std::map<std::string, fg::Generator*> rngs = rngs_.shared;
  int saved_ranks = 1;
  for (const auto& [name, gen] : rngs_.per_rank) {
    if (comm_.rank() == 0 || has(rank_name(name, comm_.rank()))) rngs[rank_name(name, comm_.rank())] = gen;
    while (has(rank_name(name, saved_ranks))) ++saved_ranks;
  }
  step_ = saved_step_ = files_.resume(file, model_, optimizer_, rngs, options_.steps_per_row);
  if (!rngs_.per_rank.empty() && saved_ranks != comm_.size() && comm_.is_root())
    std::printf("resuming with %d rank(s) a checkpoint saved by %d: %s, so the run matches an uninterrupted one only "
                "up to float rounding\n",
                comm_.size(), saved_ranks,
                saved_ranks < comm_.size() ? "the new ranks' random streams start afresh"
                                           : "the streams of the ranks no longer here are dropped");
  return step_;
}

void Trainer::save() {
  // Every rank's streams of the per-rank generators (a collective: all ranks save together).
  std::map<std::string, fg::Generator> gathered;
  std::map<std::string, fg::Generator*> rngs = rngs_.shared;
  for (const auto& [name, gen] : rngs_.per_rank) {
    const std::vector<std::string> states = comm_.all_gather(gen->state());
    for (int r = 0; r < comm_.size(); ++r) gathered[rank_name(name, r)].set_state(states[static_cast<std::size_t>(r)]);
  }
  for (auto& [name, gen] : gathered) rngs[name] = &gen;
  files_.save(step_, model_, optimizer_, rngs, config_);
  saved_step_ = step_;
}

namespace {

// While alive, SIGINT (Ctrl-C), SIGTERM (what mpirun and batch schedulers
// send to stop a job) and SIGUSR1 (which mpirun forwards to every rank) ask
// the loop to finish its step, save and stop; the handlers before are
// restored afterwards.
class StopSignals {
 public:
  StopSignals() {
    for (std::size_t i = 0; i < kSignals.size(); ++i)
      previous_[i] = std::signal(kSignals[i], [](int) { g_interrupted = true; });
  }
  ~StopSignals() {
    for (std::size_t i = 0; i < kSignals.size(); ++i) std::signal(kSignals[i], previous_[i]);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  static constexpr std::array<int, 3> kSignals{SIGINT, SIGTERM, SIGUSR1};
  std::array<void (*)(int), 3> previous_{};
};

}  // namespace

int Trainer::run(const std::function<ShardLoss(std::int64_t)>& loss,
                 const std::function<StepReport(const StepResult&)>& after_step) {
  const StopSignals stop_signals;
  const bool root = comm_.is_root();
  Progress progress(options_.total_steps, step_, options_.plain_every, options_.unit);
  const std::int64_t last_step =
      options_.stop_at > 0 ? std::min(options_.stop_at, options_.total_steps) : options_.total_steps;
  // Every rank must stop at the same step, so a stop signal is agreed on.
  auto interrupted = [&] { return comm_.all_reduce(g_interrupted ? 1.0 : 0.0) > 0.0; };
  while (step_ < last_step && !interrupted()) {
    if (comm_.rank() == fault_.rank && step_ + 1 == fault_.step) {
      if (fault_.kill) std::raise(SIGKILL);
      fg::fail(options_.program, "injected fault before step ", step_ + 1, " (FLOWGRAD_FAULT_AT)");
    }
    const auto start = std::chrono::steady_clock::now();
    model_.train();
    optimizer_.set_lr(lr_at_(step_));
    const ShardLoss shard_loss = loss(step_);
    // The whole batch's loss and size, from every rank's share.
    double global_loss = shard_loss.examples > 0 ? shard_loss.loss.item<double>() : 0.0;
    auto global_examples = static_cast<double>(shard_loss.examples);
    if (comm_.distributed()) {
      const fg::Tensor totals = fg::tensor({global_loss * global_examples, global_examples}, fg::kFloat64);
      comm_.all_reduce(totals);
      global_examples = totals.at<double>({1});
      global_loss = totals.at<double>({0}) / global_examples;
    }
    optimizer_.zero_grad();
    if (shard_loss.examples > 0) {
      // DataParallel averages the ranks' gradients: weighting each rank's mean by its share of the
      // batch makes that average the gradient of the whole batch's mean (the weight is 1 for equal shares).
      const double weight = static_cast<double>(shard_loss.examples) * comm_.size() / global_examples;
      (weight == 1.0 ? shard_loss.loss : shard_loss.loss * weight).backward();
      data_parallel_.finish();
    } else {
      data_parallel_.finish_without_backward();
    }
    files_.check_step(step_ + 1, global_loss, nn::clip_grad_norm_(model_.parameters(), options_.grad_clip));
    optimizer_.step();
    ++step_;
    files_.check_parameters(step_, model_);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const double items_per_second = global_examples * static_cast<double>(options_.items_per_example) / seconds;
    const double mfu = options_.flops_per_item > 0 ? options_.flops_per_item * items_per_second / sgemm_flops_ : NAN;
    const StepReport report =
        after_step({step_, global_loss, seconds, static_cast<std::int64_t>(global_examples), mfu});
    if (root) {
      progress.update(step_, global_loss, items_per_second, report.progress_extra, mfu);
      if (!report.message.empty()) progress.message(report.message);
    }
    if (!report.log_row.empty()) files_.log_row(report.log_row);
    if (report.save) save();
    if (!report.stop.empty()) {
      if (root) progress.message(report.stop);
      return 0;
    }
  }
  const bool was_interrupted = interrupted();
  if (saved_step_ != step_) save();
  if (was_interrupted) {
    if (root)
      progress.message("interrupted: saved step " + std::to_string(step_) +
                       (files_.writes_files() ? " to " + files_.checkpoint_path() : " (no --out: nothing written)"));
    return 130;
  }
  if (step_ < options_.total_steps && root)
    progress.message("stopped at step " + std::to_string(step_) + " of " + std::to_string(options_.total_steps) +
                     "; continue with --resume");
  return 0;
}

const fg::dist::Communicator& start_process(int threads) {
  const fg::dist::Communicator& comm = fg::dist::Communicator::world();
  if (threads > 0) fg::set_num_threads(threads);
  return comm;
}

std::string ranks_note(const fg::dist::Communicator& comm) {
  return comm.distributed() ? " per rank, " + std::to_string(comm.size()) + " ranks" : "";
}

void report_and_exit(const std::string& program, const std::exception& error) {
  fg::dist::abort_job(program, error.what());
}

}  // namespace examples
