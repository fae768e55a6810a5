// Throughput of the core ops, to catch overhead on their hot paths:
//   - matmul GFLOP/s on square float32 matrices next to a direct cblas_sgemm
//     on the same buffers, measured in the same run (ratio = ours / direct);
//   - elementwise add and exp, and sum, in GB/s of memory touched.
// Each figure is the median of several timed samples, at 1 and 2 threads.
// faults/call counts minor page faults: first touches of freshly mapped
// output buffers, which are expensive on some VMs.
// Usage: bench_ops [samples]   (default 5). Not a test: prints a table.
#include <cblas.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "flowgrad.h"


namespace {

using Clock = std::chrono::steady_clock;

double seconds_of(const std::function<void()>& run) {
  const Clock::time_point start = Clock::now();
  run();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Repeats `run` until a sample lasts at least `min_seconds`; returns the
// number of repetitions per sample (so small sizes are not timer noise).
int calibrate(const std::function<void()>& run, double min_seconds) {
  int reps = 1;
  while (reps < (1 << 20)) {
    double t = seconds_of([&] {
      for (int i = 0; i < reps; ++i) run();
    });
    if (t >= min_seconds) break;
    reps *= 2;
  }
  return reps;
}

long minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

struct Timing {
  double seconds;      // median per call
  double page_faults;  // mean per call: first touches of freshly mapped memory
};

// Times each of `runs`, sampled interleaved so that machine noise hits all
// of them alike.
std::vector<Timing> time_interleaved(const std::vector<std::function<void()>>& runs, int samples) {
  std::vector<int> reps;
  for (const auto& run : runs) {
    run();  // warm-up: page faults, thread pools, caches
    reps.push_back(calibrate(run, 0.05));
  }
  std::vector<std::vector<double>> times(runs.size());
  std::vector<long> faults(runs.size(), 0);
  for (int s = 0; s < samples; ++s)
    for (std::size_t r = 0; r < runs.size(); ++r) {
      const long faults_before = minor_page_faults();
      double t = seconds_of([&] {
        for (int i = 0; i < reps[r]; ++i) runs[r]();
      });
      faults[r] += minor_page_faults() - faults_before;
      times[r].push_back(t / reps[r]);
    }
  std::vector<Timing> result;
  for (std::size_t r = 0; r < runs.size(); ++r)
    result.push_back({median(times[r]), static_cast<double>(faults[r]) / (samples * reps[r])});
  return result;
}

void bench_matmul(int samples) {
  std::printf("matmul, square float32 (GFLOP/s, median of %d)\n", samples);
  std::printf("%8s %8s %12s %12s %8s %12s\n", "threads", "n", "flowgrad", "cblas_sgemm", "ratio",
              "faults/call");
  fg::Generator gen(0);
  for (int threads : {1, 2}) {
    fg::set_num_threads(threads);
    for (std::int64_t n : {256, 512, 1024, 2048}) {
      fg::Tensor a = fg::randn({n, n}, gen, fg::kFloat32);
      fg::Tensor b = fg::randn({n, n}, gen, fg::kFloat32);
      fg::Tensor c = fg::empty({n, n}, fg::kFloat32);
      const int size = static_cast<int>(n);
      std::vector<Timing> t = time_interleaved(
          {[&] { fg::matmul(a, b); },
           [&] {
             cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f,
                         a.data<float>(), size, b.data<float>(), size, 0.0f, c.data<float>(), size);
           }},
          samples);
      const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
      std::printf("%8d %8lld %12.1f %12.1f %8.3f %12.1f\n", threads, static_cast<long long>(n),
                  flops / t[0].seconds * 1e-9, flops / t[1].seconds * 1e-9,
                  t[1].seconds / t[0].seconds, t[0].page_faults);
    }
  }
}

void bench_memory_bound(int samples) {
  const std::int64_t n = 16 * 1024 * 1024;
  const double bytes = static_cast<double>(n) * sizeof(float);
  std::printf("\nmemory-bound ops, %lld float32 elements (GB/s of data read + written, median of %d)\n",
              static_cast<long long>(n), samples);
  std::printf("%8s %14s %14s %14s %14s\n", "threads", "add (3 x)", "exp (2 x)", "sum (1 x)",
              "faults/add");
  fg::Generator gen(1);
  fg::Tensor x = fg::randn({n}, gen, fg::kFloat32);
  fg::Tensor y = fg::randn({n}, gen, fg::kFloat32);
  for (int threads : {1, 2}) {
    fg::set_num_threads(threads);
    std::vector<Timing> t = time_interleaved(
        {[&] { fg::add(x, y); }, [&] { fg::exp(x); }, [&] { fg::sum(x); }}, samples);
    std::printf("%8d %14.2f %14.2f %14.2f %14.1f\n", threads, 3 * bytes / t[0].seconds * 1e-9,
                2 * bytes / t[1].seconds * 1e-9, bytes / t[2].seconds * 1e-9, t[0].page_faults);
  }
  // The same work as plain loops into a reused buffer: what the memory
  // system gives one thread. The ops above also allocate their output, and
  // a fresh buffer costs a page fault per page on first touch.
  fg::Tensor out = fg::empty({n}, fg::kFloat32);
  const float* px = x.data<float>();
  const float* py = y.data<float>();
  float* po = out.data<float>();
  volatile double sink = 0.0;
  std::vector<Timing> t = time_interleaved(
      {[&] { for (std::int64_t i = 0; i < n; ++i) po[i] = px[i] + py[i]; },
       [&] { for (std::int64_t i = 0; i < n; ++i) po[i] = std::exp(px[i]); },
       [&] {
         double acc = 0.0;
         for (std::int64_t i = 0; i < n; ++i) acc += px[i];
         sink = acc;
       }},
      samples);
  std::printf("%8s %14.2f %14.2f %14.2f %14.1f   (plain loops, 1 thread, output reused)\n",
              "loop", 3 * bytes / t[0].seconds * 1e-9, 2 * bytes / t[1].seconds * 1e-9,
              bytes / t[2].seconds * 1e-9, t[0].page_faults);
  (void)sink;
}

}  // namespace

int main(int argc, char** argv) {
  const int samples = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  bench_matmul(samples);
  bench_memory_bound(samples);
  return 0;
}
