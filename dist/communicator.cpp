#include "communicator.h"

#if FLOWGRAD_WITH_MPI
// The C API only: the C++ bindings are deprecated and need their own library.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "../core/parallel.h"
#include "../ops/elementwise.h"

namespace flowgrad::dist {

namespace {

constexpr const char* kOp = "Communicator";

// The number of ranks a launcher (Open MPI's mpirun, or a PMI launcher
// such as MPICH's or Slurm's) started; 0 when none did.
int launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* value = std::getenv(name);
    int size = 0;
    if (value != nullptr && std::from_chars(value, value + std::strlen(value), size).ec == std::errc()) return size;
  }
  return 0;
}

void require_contiguous(const Tensor& tensor, const char* call) {
  if (!tensor.defined() || !tensor.is_contiguous())
    fail(kOp, call, " needs a defined contiguous tensor, got ",
         tensor.defined() ? shape_str(tensor.shape()) + " with strides " + shape_str(tensor.strides()) : "none");
}

#if FLOWGRAD_WITH_MPI

void* raw_data(const Tensor& tensor) {
  return static_cast<char*>(tensor.storage()->data()) +
         static_cast<std::size_t>(tensor.offset()) * dtype_size(tensor.dtype());
}

void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail(kOp, call, " failed: ", std::string(text, static_cast<std::size_t>(length)));
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return MPI_FLOAT;
    case DType::Float64: return MPI_DOUBLE;
    case DType::Int64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

// MPI counts are ints: a larger tensor is an error (buckets are far smaller).
int mpi_count(std::int64_t count, const char* call) {
  if (count > INT_MAX) fail(kOp, call, " of ", count, " elements: at most 2^31-1 in one call");
  return static_cast<int>(count);
}

bool mpi_active() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

#endif

}  // namespace

bool mpi_built() { return FLOWGRAD_WITH_MPI != 0; }

// ---- Request ----

struct Request::State {
#if FLOWGRAD_WITH_MPI
  MPI_Request request = MPI_REQUEST_NULL;
#endif
};

Request::Request() = default;
Request::Request(Request&&) noexcept = default;
Request& Request::operator=(Request&& other) {
  if (this != &other) {
    if (state_) wait();
    state_ = std::move(other.state_);
  }
  return *this;
}

Request::~Request() {
  if (!state_) return;
  try {
    wait();
  } catch (const Error&) {  // a destructor cannot report it; wait() already gave MPI the chance to abort
  }
}

bool Request::done() {
#if FLOWGRAD_WITH_MPI
  if (state_ && state_->request != MPI_REQUEST_NULL) {
    int flag = 0;
    check(MPI_Test(&state_->request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    return flag != 0;
  }
#endif
  return true;
}

void Request::wait() {
#if FLOWGRAD_WITH_MPI
  if (state_ && state_->request != MPI_REQUEST_NULL)
    check(MPI_Wait(&state_->request, MPI_STATUS_IGNORE), "MPI_Wait");
#endif
  state_.reset();
}

// ---- Communicator ----

namespace {
const Communicator* g_world = nullptr;  // set once world() succeeded
}  // namespace

Communicator& Communicator::world() {
  static Communicator instance;
  g_world = &instance;
  return instance;
}

void abort_job(const std::string& program, const std::string& message, int code) {
  if (g_world != nullptr) g_world->abort(program, message, code);
  std::fprintf(stderr, "%s: %s\n", program.c_str(), message.c_str());
  std::exit(code);
}

Communicator::Communicator() {
  const int launched = launcher_world_size();
#if FLOWGRAD_WITH_MPI
  if (launched > 0) {
    if (!mpi_active()) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      mpi_initialized_here_ = true;
      if (provided < MPI_THREAD_FUNNELED)
        fail(kOp, "this MPI library does not allow MPI calls from the main thread of a threaded process "
                  "(MPI_THREAD_FUNNELED)");
    }
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
    MPI_Comm host = MPI_COMM_NULL;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &host),
          "MPI_Comm_split_type");
    check(MPI_Comm_rank(host, &local_rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(host, &local_size_), "MPI_Comm_size");
    MPI_Comm_free(&host);
  }
#else
  if (launched > 1)
    fail(kOp, "this process is one of ", launched,
         " ranks started by mpirun, but flowgrad was built without MPI (-Dmpi=disabled, or libopenmpi-dev was "
         "missing when it was built): each rank would train alone. Rebuild with -Dmpi=enabled, or run without "
         "mpirun");
#endif
  // Ranks that share a host share its cores; a rank that mpirun bound to
  // fewer cores (its default for 2 ranks: one each) uses those.
  if (local_size_ > 1 && std::getenv("FLOWGRAD_NUM_THREADS") == nullptr) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    cpu_set_t allowed;
    const int bound = ::sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : cores;
    set_num_threads(std::clamp(std::min(bound, cores / local_size_), 1, kMaxThreads));
  }
}

Communicator::~Communicator() {
#if FLOWGRAD_WITH_MPI
  if (mpi_initialized_here_ && mpi_active()) MPI_Finalize();
#endif
}

void Communicator::barrier() const {
#if FLOWGRAD_WITH_MPI
  if (distributed()) check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void Communicator::broadcast(const Tensor& tensor, int root) const {
  require_contiguous(tensor, "MPI_Bcast");
  if (root < 0 || root >= size_) fail(kOp, "broadcast from rank ", root, " of ", size_);
#if FLOWGRAD_WITH_MPI
  if (!distributed()) return;
  check(MPI_Bcast(raw_data(tensor), mpi_count(tensor.numel(), "MPI_Bcast"), mpi_type(tensor.dtype()), root,
                  MPI_COMM_WORLD),
        "MPI_Bcast");
  tensor.bump_version();
#endif
}

void Communicator::all_reduce(const Tensor& tensor, ReduceOp op) const {
  require_contiguous(tensor, "MPI_Allreduce");
#if FLOWGRAD_WITH_MPI
  if (!distributed()) return;
  check(MPI_Allreduce(MPI_IN_PLACE, raw_data(tensor), mpi_count(tensor.numel(), "MPI_Allreduce"),
                      mpi_type(tensor.dtype()), MPI_SUM, MPI_COMM_WORLD),
        "MPI_Allreduce");
  tensor.bump_version();
  if (op == ReduceOp::Average) mul_(tensor, 1.0 / size_);
#else
  static_cast<void>(op);
#endif
}

Request Communicator::all_reduce_async(const Tensor& tensor) const {
  require_contiguous(tensor, "MPI_Iallreduce");
  Request request;
#if FLOWGRAD_WITH_MPI
  if (!distributed()) return request;
  request.state_ = std::make_unique<Request::State>();
  check(MPI_Iallreduce(MPI_IN_PLACE, raw_data(tensor), mpi_count(tensor.numel(), "MPI_Iallreduce"),
                       mpi_type(tensor.dtype()), MPI_SUM, MPI_COMM_WORLD, &request.state_->request),
        "MPI_Iallreduce");
  tensor.bump_version();
#endif
  return request;
}

Tensor Communicator::all_gather(const Tensor& tensor) const {
  require_contiguous(tensor, "MPI_Allgather");
  Shape shape = tensor.shape();
  shape.insert(shape.begin(), size_);
  if (!distributed()) return tensor.clone().reshape(shape);
  Tensor out = empty(shape, tensor.dtype());
#if FLOWGRAD_WITH_MPI
  const int count = mpi_count(tensor.numel(), "MPI_Allgather");
  check(MPI_Allgather(raw_data(tensor), count, mpi_type(tensor.dtype()), raw_data(out), count,
                      mpi_type(tensor.dtype()), MPI_COMM_WORLD),
        "MPI_Allgather");
#endif
  return out;
}

std::vector<std::string> Communicator::all_gather(const std::string& text) const {
  if (!distributed()) return {text};
  std::vector<std::string> texts;
#if FLOWGRAD_WITH_MPI
  const int length = mpi_count(static_cast<std::int64_t>(text.size()), "MPI_Allgather");
  std::vector<int> lengths(static_cast<std::size_t>(size_)), offsets(lengths.size());
  check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
  std::int64_t total = 0;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    offsets[r] = mpi_count(total, "MPI_Allgatherv");
    total += lengths[r];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  check(MPI_Allgatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                       MPI_COMM_WORLD),
        "MPI_Allgatherv");
  for (std::size_t r = 0; r < lengths.size(); ++r)
    texts.push_back(all.substr(static_cast<std::size_t>(offsets[r]), static_cast<std::size_t>(lengths[r])));
#endif
  return texts;
}

double Communicator::all_reduce(double value, ReduceOp op) const {
  if (!distributed()) return value;
  const Tensor scalar = full({1}, value, kFloat64);
  all_reduce(scalar, op);
  return scalar.item<double>();
}

void Communicator::abort(const std::string& program, const std::string& message, int code) const {
  if (distributed())
    std::fprintf(stderr, "%s: rank %d of %d: %s\n", program.c_str(), rank_, size_, message.c_str());
  else
    std::fprintf(stderr, "%s: %s\n", program.c_str(), message.c_str());
  std::fflush(stderr);
#if FLOWGRAD_WITH_MPI
  if (distributed() && mpi_active()) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace flowgrad::dist
