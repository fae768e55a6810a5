#include "data_parallel.h"

#include "../autograd/grad_mode.h"
#include "../ops/elementwise.h"

namespace flowgrad::dist {

namespace {

constexpr const char* kOp = "DataParallel";
using Clock = std::chrono::steady_clock;
using Kind = DataParallel::Event::Kind;

// A bucket's flat buffer holds its parameters' gradients one after another,
// then one "used" flag per parameter (1 where this rank had a gradient): after
// the sum, a parameter that no rank used keeps no gradient, as in one process.
struct Bucket {
  std::vector<std::size_t> params;     // indices into State::params
  std::vector<std::int64_t> offsets;   // where each gradient starts in `flat`
  std::int64_t flags = 0;              // where the used flags start in `flat`
  Tensor flat;
  std::size_t waiting = 0;             // gradients not yet final in this pass
  bool started = false, completed = false;
  Request request;
};

}  // namespace

struct DataParallel::State {
  const Communicator* comm = nullptr;
  DataParallelOptions options;
  nn::NamedTensors params;
  std::vector<Bucket> buckets;
  std::vector<std::size_t> bucket_of;  // parameter -> bucket
  std::vector<bool> ready;             // parameter's gradient final in this pass
  std::size_t next_to_start = 0;       // buckets start in index order
  bool zeros_only = false;             // finish_without_backward: no gradient to send
  std::vector<Event> events, last_events;

  void record(Kind kind, std::size_t index) { events.push_back({kind, index, Clock::now()}); }

  void reset_pass() {
    for (Bucket& bucket : buckets) {
      bucket.waiting = bucket.params.size();
      bucket.started = bucket.completed = false;
    }
    ready.assign(params.size(), false);
    next_to_start = 0;
    zeros_only = false;
    last_events = std::move(events);
    events.clear();
  }

  void gradient_ready(std::size_t param) {
    if (ready[param])
      fail(kOp, "parameter '", params[param].first,
           "' received a second gradient before finish(): call finish() after every backward (gradients "
           "accumulated over several backward passes are not supported)");
    ready[param] = true;
    record(Kind::GradientReady, param);
    --buckets[bucket_of[param]].waiting;
    start_ready_buckets();
    poll();
  }

  // Starts, in index order, every bucket whose gradients are all final.
  void start_ready_buckets() {
    while (next_to_start < buckets.size() && buckets[next_to_start].waiting == 0) start(next_to_start++);
  }

  void start(std::size_t index) {
    Bucket& bucket = buckets[index];
    for (std::size_t k = 0; k < bucket.params.size(); ++k) {
      const Tensor& param = params[bucket.params[k]].second;
      const Tensor slice = bucket.flat.narrow(0, bucket.offsets[k], param.numel()).view(param.shape());
      const Tensor grad = param.grad();
      const bool used = !zeros_only && grad.defined();
      if (used) {
        copy_elements(grad, slice);
      } else {
        fill_(slice, 0.0);
      }
      fill_(bucket.flat.narrow(0, bucket.flags + static_cast<std::int64_t>(k), 1), used ? 1.0 : 0.0);
    }
    bucket.request = comm->all_reduce_async(bucket.flat);
    bucket.started = true;
    record(Kind::BucketStarted, index);
  }

  // Lets MPI progress the reductions in flight, noting those that finished.
  void poll() {
    for (std::size_t b = 0; b < next_to_start; ++b) {
      Bucket& bucket = buckets[b];
      if (!bucket.completed && bucket.request.done()) {
        bucket.completed = true;
        record(Kind::BucketCompleted, b);
      }
    }
  }

  void finish() {
    record(Kind::FinishCalled, 0);
    if (!options.allow_unused_parameters && !zeros_only)
      for (std::size_t p = 0; p < params.size(); ++p)
        if (!ready[p])
          fail(kOp, "parameter '", params[p].first,
               "' received no gradient in this backward pass; every rank must give every parameter a gradient "
               "(DataParallelOptions::allow_unused_parameters counts a missing one as zero)");
    for (std::size_t p = 0; p < params.size(); ++p) {
      if (ready[p]) continue;
      ready[p] = true;
      --buckets[bucket_of[p]].waiting;
    }
    start_ready_buckets();
    const double scale = 1.0 / comm->size();
    for (std::size_t b = 0; b < buckets.size(); ++b) {
      Bucket& bucket = buckets[b];
      bucket.request.wait();
      if (!bucket.completed) record(Kind::BucketCompleted, b);
      mul_(bucket.flat, scale);
      const std::vector<double> used = bucket.flat.narrow(0, bucket.flags, static_cast<std::int64_t>(bucket.params.size()))
                                           .to_vector<double>();
      for (std::size_t k = 0; k < bucket.params.size(); ++k) {
        const Tensor& param = params[bucket.params[k]].second;
        if (used[k] == 0.0) continue;  // no rank had a gradient: none, as in one process
        const Tensor average = bucket.flat.narrow(0, bucket.offsets[k], param.numel()).view(param.shape());
        if (param.grad().defined()) {
          copy_elements(average, param.grad());
        } else {
          param.set_grad(average.clone());
        }
      }
    }
    record(Kind::Averaged, 0);
    reset_pass();
  }
};

DataParallel::DataParallel(nn::Module& module, const Communicator& comm, DataParallelOptions options)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.comm = &comm;
  s.options = options;
  s.params = module.named_parameters();
  if (!comm.distributed()) return;
  if (options.bucket_bytes == 0) fail(kOp, "bucket_bytes must be positive");

  NoGradGuard no_grad;
  for (const auto& [name, param] : s.params) {
    if (!param.is_contiguous()) fail(kOp, "parameter '", name, "' of shape ", shape_str(param.shape()), " is not contiguous");
    comm.broadcast(param);  // every rank starts from rank 0's weights
  }
  // Buckets in reverse registration order, one dtype each.
  s.bucket_of.resize(s.params.size());
  std::size_t bytes = 0;
  for (std::size_t p = s.params.size(); p-- > 0;) {
    const Tensor& param = s.params[p].second;
    const std::size_t param_bytes = static_cast<std::size_t>(param.numel()) * dtype_size(param.dtype());
    const bool fits = !s.buckets.empty() && bytes + param_bytes <= options.bucket_bytes &&
                      s.params[s.buckets.back().params.front()].second.dtype() == param.dtype();
    if (!fits) {
      s.buckets.emplace_back();
      bytes = 0;
    }
    Bucket& bucket = s.buckets.back();
    bucket.offsets.push_back(bucket.params.empty() ? 0 : bucket.offsets.back() + s.params[bucket.params.back()].second.numel());
    bucket.params.push_back(p);
    s.bucket_of[p] = s.buckets.size() - 1;
    bytes += param_bytes;
  }
  for (Bucket& bucket : s.buckets) {
    const Tensor& last = s.params[bucket.params.back()].second;
    bucket.flags = bucket.offsets.back() + last.numel();
    bucket.flat = empty({bucket.flags + static_cast<std::int64_t>(bucket.params.size())}, last.dtype());
  }
  s.reset_pass();

  const std::weak_ptr<State> weak = state_;
  for (std::size_t p = 0; p < s.params.size(); ++p)
    s.params[p].second.register_post_accumulate_grad_hook([weak, p](const Tensor&) {
      if (const std::shared_ptr<State> state = weak.lock()) state->gradient_ready(p);
    });
}

DataParallel::~DataParallel() = default;

void DataParallel::finish() {
  if (!state_->comm->distributed()) return;
  NoGradGuard no_grad;
  state_->finish();
}

void DataParallel::finish_without_backward() {
  if (!state_->comm->distributed()) return;
  NoGradGuard no_grad;
  state_->zeros_only = true;
  state_->finish();
}

std::size_t DataParallel::bucket_count() const { return state_->buckets.size(); }

std::vector<std::vector<std::size_t>> DataParallel::buckets() const {
  std::vector<std::vector<std::size_t>> out;
  for (const Bucket& bucket : state_->buckets) out.push_back(bucket.params);
  return out;
}

const std::vector<DataParallel::Event>& DataParallel::last_events() const { return state_->last_events; }

}  // namespace flowgrad::dist
