// Data-parallel training (the idea of PyTorch's DistributedDataParallel):
// every rank holds the whole model, computes the gradient of its share of
// the global batch, and the ranks average their gradients before the
// optimizer step, so every rank takes the same step.
//
//   dist::DataParallel ddp(model, dist::Communicator::world());  // broadcasts rank 0's parameters
//   optimizer.zero_grad();
//   loss.backward();      // buckets of gradients start their all-reduce as they become final
//   ddp.finish();         // waits, and leaves the average in every .grad()
//   optimizer.step();
//
// Gradients are grouped into buckets of about `bucket_bytes` (25 MB, as DDP)
// in reverse registration order, roughly the order backward produces them.
// A post-accumulate hook on every parameter counts the gradients a bucket
// still waits for; when none is left, the bucket's gradients are copied into
// one flat buffer and its non-blocking all-reduce (MPI_Iallreduce) starts,
// while backward goes on with earlier layers. Buckets start in index order
// on every rank (a ready bucket waits for the ones before it), so the
// reductions are the same calls in the same order every step: results are
// deterministic for a given number of ranks.
//
// Every parameter must receive a gradient in every backward pass (as one
// rank's unused parameter would leave the others waiting): finish() throws
// naming the first that did not, unless allow_unused_parameters. Then a rank
// without a gradient for a parameter counts as zero in the average, and a
// parameter that no rank used keeps no gradient, so the optimizer skips it
// as it would in one process.
//
// An error from DataParallel leaves reductions in flight: it must end the
// whole job (examples::report_and_exit does, through MPI_Abort).
//
// With one rank, DataParallel does nothing: no hooks, no copies.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../nn/module.h"
#include "communicator.h"

namespace flowgrad::dist {

struct DataParallelOptions {
  std::size_t bucket_bytes = std::size_t{25} << 20;
  bool allow_unused_parameters = false;
};

class DataParallel {
 public:
  DataParallel(nn::Module& module, const Communicator& comm, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // After backward: starts what has not started, waits for every bucket and
  // replaces each .grad() by the average over the ranks.
  void finish();
  // For a rank with no data in this step: contributes zero gradients (no
  // backward has run) to the same reductions.
  void finish_without_backward();

  std::size_t bucket_count() const;
  // Parameter indices (registration order) of each bucket.
  std::vector<std::vector<std::size_t>> buckets() const;

  // What happened during the last pass, in order, for tests and benchmarks:
  // a parameter's gradient became final, a bucket's all-reduce started, it
  // was seen complete, finish() was called, finish() returned (the time in
  // between is communication that backward did not hide).
  struct Event {
    enum class Kind { GradientReady, BucketStarted, BucketCompleted, FinishCalled, Averaged } kind;
    std::size_t index;  // parameter or bucket; 0 for FinishCalled
    std::chrono::steady_clock::time_point time;
  };
  const std::vector<Event>& last_events() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the hooks, which may outlive this object
};

}  // namespace flowgrad::dist
