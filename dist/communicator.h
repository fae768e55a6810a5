// Processes that train together: the ranks of an MPI job (Open MPI's
// MPI_COMM_WORLD under `mpirun`), or this process alone.
//
// flowgrad is built with MPI when libopenmpi-dev is installed
// (-Dmpi=auto|enabled|disabled). Without mpirun, or without MPI, world() is
// a single rank and every collective is a copy or nothing, so programs run
// unchanged. Under mpirun without MPI built in, world() throws: each rank
// would otherwise train alone.
//
// Collectives act in place on contiguous tensors and must be called by
// every rank in the same order. Only the thread that first calls world()
// may call MPI (MPI_THREAD_FUNNELED); oneTBB's workers never do. Errors are
// flowgrad::Error "[Communicator] <MPI call> failed: <MPI's message>".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace flowgrad::dist {

// Whether this flowgrad was built with MPI.
bool mpi_built();

enum class ReduceOp { Sum, Average };

// A non-blocking collective in flight. Its tensor must stay alive and
// untouched until wait() (the destructor waits too).
class Request {
 public:
  Request();
  ~Request();
  Request(Request&&) noexcept;
  Request& operator=(Request&&);  // waits for the request it replaces
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  bool done();  // tests without blocking (and lets MPI make progress)
  void wait();

 private:
  friend class Communicator;
  struct State;
  std::unique_ptr<State> state_;
};

class Communicator {
 public:
  // The job this process belongs to. The first call initialises MPI when
  // the process was started by mpirun, and, unless FLOWGRAD_NUM_THREADS is
  // set, gives each rank the host's cores / its ranks on that host (or the
  // cores it is bound to, when fewer) as its thread count.
  static Communicator& world();

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // among the ranks on this host
  int local_size() const { return local_size_; }
  bool is_root() const { return rank_ == 0; }
  bool distributed() const { return size_ > 1; }

  void barrier() const;
  // Replaces `tensor` on every rank by root's.
  void broadcast(const Tensor& tensor, int root = 0) const;
  void all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::Sum) const;
  // Sum, started now; completes in Request::wait().
  Request all_reduce_async(const Tensor& tensor) const;
  // [size, tensor's shape...]: every rank's tensor, in rank order.
  Tensor all_gather(const Tensor& tensor) const;
  // Every rank's text, in rank order.
  std::vector<std::string> all_gather(const std::string& text) const;
  double all_reduce(double value, ReduceOp op = ReduceOp::Sum) const;

  // Ends the whole job: prints "<program>: rank R of N: <message>" and
  // calls MPI_Abort, so no rank waits forever for one that failed.
  // Without MPI, only prints and exits.
  [[noreturn]] void abort(const std::string& program, const std::string& message, int code = 1) const;

  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

 private:
  Communicator();
  ~Communicator();
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool mpi_initialized_here_ = false;
};

// Ends the job after an error, from any rank: Communicator::abort when the
// world was set up and spans several ranks, else prints "<program>:
// <message>" and exits. Safe when world() itself failed.
[[noreturn]] void abort_job(const std::string& program, const std::string& message, int code = 1);

}  // namespace flowgrad::dist
