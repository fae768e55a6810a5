// Data-parallel training costs, in the job it runs in (alone, or under
// mpirun; bench/data_parallel.sh runs both and compares):
//   1. all-reduce bandwidth for 1 KB .. 64 MB float32 tensors, reported as
//      OSU / nccl-tests do: algbw = bytes / time, busbw = algbw * 2(P-1)/P
//      (what each rank's link carries in a ring all-reduce);
//   2. one training step of the charlm "mini" model (6 layers, width 192,
//      block 128, global batch 64, AdamW), median of --steps after a
//      warm-up, for 25 MB buckets (DDP's default) and 1 MB buckets: how long
//      the step takes, how long finish() waited after backward (the
//      exposed communication, and the other rank's lag), the time of the
//      same all-reduces alone, and the share of the buckets' all-reduce
//      time (start to completion, from DataParallel's events) that ran
//      while backward was still computing.
//
//   bench_data_parallel [--threads N] [--steps N]
//   mpirun -np 2 bench_data_parallel --threads 1
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "../flowgrad.h"

namespace {

namespace dist = fg::dist;
using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

void bandwidth(const dist::Communicator& comm) {
  if (!comm.distributed()) {
    std::printf("all-reduce: one rank, nothing to reduce\n");
    return;
  }
  if (comm.is_root())
    std::printf("all-reduce of float32 tensors over %d rank(s)\n%12s %12s %14s %14s\n", comm.size(), "bytes", "time us",
                "algbw GB/s", "busbw GB/s");
  for (std::int64_t bytes = 1 << 10; bytes <= std::int64_t{64} << 20; bytes *= 4) {
    const fg::Tensor tensor = fg::ones({bytes / 4});
    const int repeats = bytes <= (1 << 20) ? 200 : 10;
    comm.all_reduce(tensor);  // warm-up
    comm.barrier();
    std::vector<double> times;
    for (int r = 0; r < repeats; ++r) {
      const auto start = Clock::now();
      comm.all_reduce(tensor);
      times.push_back(seconds_between(start, Clock::now()));
    }
    const double seconds = median(times);  // rank 0's; the collective keeps the ranks in step
    const double algbw = static_cast<double>(bytes) / seconds / 1e9;
    const double busbw = algbw * 2.0 * (comm.size() - 1) / comm.size();
    if (comm.is_root())
      std::printf("%12lld %12.1f %14.3f %14.3f\n", static_cast<long long>(bytes), seconds * 1e6, algbw, busbw);
  }
}

struct StepTimes {
  double step = 0, waited = 0, reduce_alone = 0, hidden = 0;
  std::size_t buckets = 0;
};

// The share of the buckets' all-reduce time (start to completion) that fell
// before finish() was called, i.e. behind backward.
double hidden_share(const std::vector<fg::dist::DataParallel::Event>& events) {
  using Kind = fg::dist::DataParallel::Event::Kind;
  Clock::time_point finish_called{};
  std::vector<Clock::time_point> started(events.size()), completed(events.size());
  for (const auto& event : events) {
    if (event.kind == Kind::FinishCalled) finish_called = event.time;
    if (event.kind == Kind::BucketStarted) started[event.index] = event.time;
    if (event.kind == Kind::BucketCompleted) completed[event.index] = event.time;
  }
  double hidden = 0, total = 0;
  for (std::size_t b = 0; b < events.size(); ++b) {
    if (completed[b] == Clock::time_point{}) continue;
    total += seconds_between(started[b], completed[b]);
    hidden += std::max(0.0, seconds_between(started[b], std::min(completed[b], finish_called)));
  }
  return total > 0 ? hidden / total : 0.0;
}

StepTimes training_step(const dist::Communicator& comm, std::size_t bucket_bytes, int steps) {
  fg::models::FlowformerConfig config = fg::models::FlowformerConfig::mini(65);
  fg::Generator init(1), data(2);
  fg::models::FlowformerLM model(config, init);
  dist::DataParallel ddp(model, comm, {.bucket_bytes = bucket_bytes});
  fg::nn::AdamW optimizer(fg::nn::param_groups_for_decay(model.named_parameters(), 0.1), fg::nn::AdamWOptions{});
  const std::int64_t batch = 64 / comm.size();
  std::vector<double> step_times, waits, hidden;
  for (int step = 0; step <= steps; ++step) {
    const fg::Tensor tokens = fg::randint(0, config.vocab_size, {batch, config.block_size + 1}, data);
    const fg::Tensor inputs = tokens.narrow(1, 0, config.block_size).contiguous();
    const fg::Tensor targets = tokens.narrow(1, 1, config.block_size).contiguous();
    comm.barrier();
    const auto start = Clock::now();
    optimizer.zero_grad();
    model.loss(inputs, targets).backward();
    ddp.finish();
    optimizer.step();
    const double seconds = seconds_between(start, Clock::now());
    Clock::time_point called{}, averaged{};
    for (const auto& event : ddp.last_events()) {
      if (event.kind == dist::DataParallel::Event::Kind::FinishCalled) called = event.time;
      if (event.kind == dist::DataParallel::Event::Kind::Averaged) averaged = event.time;
    }
    if (step == 0) continue;  // warm-up
    step_times.push_back(seconds);
    waits.push_back(comm.distributed() ? seconds_between(called, averaged) : 0.0);
    hidden.push_back(hidden_share(ddp.last_events()));
  }
  StepTimes times{median(step_times), median(waits), 0.0, median(hidden), ddp.bucket_count()};
  // The same reductions with nothing to hide them behind.
  if (comm.distributed()) {
    std::vector<fg::Tensor> flats;
    for (const auto& bucket : ddp.buckets()) {
      std::int64_t elements = 0;
      for (std::size_t p : bucket) elements += model.named_parameters()[p].second.numel();
      flats.push_back(fg::zeros({elements}));
    }
    std::vector<double> alone;
    for (int r = 0; r < 5; ++r) {
      comm.barrier();
      const auto start = Clock::now();
      std::vector<dist::Request> requests;
      for (const fg::Tensor& flat : flats) requests.push_back(comm.all_reduce_async(flat));
      for (dist::Request& request : requests) request.wait();
      alone.push_back(seconds_between(start, Clock::now()));
    }
    times.reduce_alone = median(alone);
  }
  return times;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, steps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") threads = std::stoi(argv[i + 1]);
    if (flag == "--steps") steps = std::max(1, std::stoi(argv[i + 1]));
  }
  try {
    const dist::Communicator& comm = dist::Communicator::world();
    if (threads > 0) fg::set_num_threads(threads);
    bandwidth(comm);
    if (comm.is_root())
      std::printf("\ncharlm mini training step (global batch 64, block 128), %d rank(s) x %d thread(s), median of %d\n"
                  "%10s %8s %10s %14s %16s %8s\n",
                  comm.size(), fg::get_num_threads(), steps, "bucket MB", "buckets", "step s", "finish waited s",
                  "all-reduce alone s", "hidden");
    for (const std::size_t bucket_mb : {25, 1}) {
      const StepTimes t = training_step(comm, bucket_mb << 20, steps);
      if (comm.is_root())
        std::printf("%10zu %8zu %10.3f %14.4f %16.4f %7.0f%%\n", bucket_mb, t.buckets, t.step, t.waited, t.reduce_alone,
                    100.0 * t.hidden);
    }
  } catch (const std::exception& error) {
    dist::abort_job("bench_data_parallel", error.what());
  }
  return 0;
}
