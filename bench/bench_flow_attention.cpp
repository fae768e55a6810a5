// Flow-Attention benchmark: forward and forward+backward time and peak
// memory of the fused normal and causal kernels, next to softmax attention
// built from the primitive ops (the quadratic baseline), for B=1, H=8,
// D=M=64 and L in {1024, 4096, 16384} unless told otherwise.
//
//   bench_flow_attention [--threads N] [--lengths 1024,4096,16384] [--repeats 3]
//                        [--shape B,H,D]   (batch, heads, head width D = M)
//
// Each configuration runs in its own process (this program re-executes
// itself with --single), so the peak RSS it reports belongs to that
// configuration alone. Times are medians over the repeats after one warm-up.
// "GEMMs s" is the time the run's own GEMM calls take (measured inside one
// more run, thread-seconds / threads) and "ratio" the run's time over it: how
// far the kernel is from its GEMM floor.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "../flowgrad.h"
#include "bench_util.h"

namespace {

struct HeadShape {
  std::int64_t batch = 1, heads = 8, dim = 64;  // dim is D = M
};

struct Result {
  double seconds = NAN;
  double peak_rss_mb = NAN;
  double gflop = NAN;  // GEMM work of the run
  double gemm_seconds = NAN;  // the run's own GEMMs alone: their thread-seconds / threads
  std::string note;
};

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB
}

template <class F>
double median_seconds(int repeats, F&& run) {
  run();  // warm-up
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    run();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// GEMM floating-point operations of all heads, per the kernels' structure.
double kernel_gflop(const std::string& kernel, bool backward, double L, const HeadShape& shape) {
  const double D = static_cast<double>(shape.dim), M = D;
  // The causal chunk (causal_chunk in ops/flow_attention.cpp): max(D, M)
  // rows within [16, 128], or the whole sequence up to twice that.
  const double balance = std::clamp(std::max(D, M), 16.0, 128.0), c = L <= 2 * balance ? L : balance;
  double flops;
  if (kernel == "normal") {
    // The forward's two products (out ∝ q kᵀ W) take 2·L·D·M multiply-adds
    // with KV first, L·L·(D + M) with the scores first, whichever is fewer
    // (the default FlowAttentionOptions::Cheaper); the backward's four, twice that.
    const double forward_multiply_adds = std::min(2 * L * D * M, L * L * (D + M));
    flops = 2 * forward_multiply_adds * (backward ? 3 : 1);
  } else if (kernel == "causal") {
    // forward, per chunk: q kᵀ, (·) W, q H, H += kᵀW
    const double forward = 2 * L * (2 * D * M + c * (D + M));
    // backward: dR Hᵀ, dR Wᵀ, (·) k, H += kᵀW; then W Uᵀ, (·)ᵀ q, k qᵀ, (·) dR, k U, U += qᵀ dR
    const double backward_sweeps = 2 * L * (5 * D * M + c * (3 * D + 2 * M));
    flops = backward ? forward + backward_sweeps : forward;
  } else {  // softmax: Q Kᵀ and P V, and 4 GEMMs in backward
    flops = backward ? 2 * L * L * D * 6 : 2 * L * L * D * 2;
  }
  return flops * static_cast<double>(shape.batch * shape.heads) / 1e9;
}

fg::Tensor softmax_attention(const fg::Tensor& q, const fg::Tensor& k, const fg::Tensor& v, bool causal) {
  fg::Tensor scores = fg::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(3))));
  if (causal) {
    const std::int64_t L = q.size(2);
    std::vector<float> mask(static_cast<std::size_t>(L * L), 0.0f);
    for (std::int64_t i = 0; i < L; ++i)
      for (std::int64_t j = i + 1; j < L; ++j) mask[i * L + j] = -std::numeric_limits<float>::infinity();
    scores = scores + fg::from_vector(mask, {L, L});
  }
  return fg::matmul(fg::softmax(scores, -1), v);
}

Result run_single(const std::string& kernel, bool backward, std::int64_t L, int repeats, const HeadShape& shape) {
  fg::Generator gen(0);
  const fg::Shape heads{shape.batch, shape.heads, L, shape.dim};
  fg::Tensor q = fg::randn(heads, gen), k = fg::randn(heads, gen), v = fg::randn(heads, gen),
             grad = fg::randn(heads, gen);
  if (backward) {
    q.requires_grad_();
    k.requires_grad_();
    v.requires_grad_();
  }
  auto attention = [&] {
    if (kernel == "softmax") return softmax_attention(q, k, v, /*causal=*/true);
    return fg::flow_attention(q, k, v, fg::FlowAttentionOptions{}.set_causal(kernel == "causal"));
  };
  Result result;
  result.seconds = median_seconds(repeats, [&] {
    fg::Tensor out = attention();
    if (backward) {
      out.backward(grad);
      q.set_grad(fg::Tensor());
      k.set_grad(fg::Tensor());
      v.set_grad(fg::Tensor());
    }
  });
  result.peak_rss_mb = peak_rss_mb();
  result.gflop = kernel_gflop(kernel, backward, static_cast<double>(L), shape);
  // One more run with profiling: the time spent inside its GEMM calls, summed
  // over threads, divided by the threads: what the run would take if all
  // but its GEMMs were free (the floor the kernel is measured against).
  fg::profile::reset();
  fg::profile::set_enabled(true);
  {
    fg::Tensor out = attention();
    if (backward) out.backward(grad);
  }
  fg::profile::set_enabled(false);
  result.gemm_seconds = 0.0;
  for (const fg::profile::Entry& entry : fg::profile::entries())
    if (entry.name == fg::blas::kGemmRegion) result.gemm_seconds = entry.seconds / fg::get_num_threads();
  return result;
}

// Runs one configuration in a child process and parses its one-line answer.
Result run_in_child(const std::string& self, const std::string& kernel, bool backward, std::int64_t L,
                    int repeats, int threads, const HeadShape& shape) {
  std::ostringstream command;
  command << self << " --single " << kernel << ' ' << (backward ? "fwdbwd" : "fwd") << ' ' << L << ' '
          << repeats << " --threads " << threads << " --shape " << shape.batch << ',' << shape.heads << ','
          << shape.dim;
  FILE* pipe = popen(command.str().c_str(), "r");
  Result result;
  if (pipe == nullptr) {
    result.note = "could not start";
    return result;
  }
  char line[512] = {0};
  std::string output;
  while (std::fgets(line, sizeof line, pipe) != nullptr) output += line;
  const int status = pclose(pipe);
  if (status != 0 || std::sscanf(output.c_str(), "%lf %lf %lf %lf", &result.seconds, &result.peak_rss_mb,
                                 &result.gflop, &result.gemm_seconds) != 4)
    result.note = "failed: " + output;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, repeats = 3;
  std::vector<std::int64_t> lengths = {1024, 4096, 16384};
  HeadShape shape;
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--threads" && i + 1 < args.size()) threads = std::stoi(args[++i]);
      if (args[i] == "--repeats" && i + 1 < args.size()) repeats = std::stoi(args[++i]);
      if (args[i] == "--lengths" && i + 1 < args.size()) lengths = bench::parse_int_list(args[++i]);
      if (args[i] == "--shape" && i + 1 < args.size()) {
        const std::vector<std::int64_t> sizes = bench::parse_int_list(args[++i]);
        if (sizes.size() != 3 || *std::min_element(sizes.begin(), sizes.end()) < 1)
          throw std::invalid_argument("--shape expects three positive sizes B,H,D, got " + args[i]);
        shape = {sizes[0], sizes[1], sizes[2]};
      }
    }
    fg::set_num_threads(threads);
    if (!args.empty() && args[0] == "--single" && args.size() >= 5) {
      Result r = run_single(args[1], args[2] == "fwdbwd", std::stoll(args[3]), std::stoi(args[4]), shape);
      std::printf("%.6f %.1f %.4f %.6f\n", r.seconds, r.peak_rss_mb, r.gflop, r.gemm_seconds);
      return 0;
    }
  } catch (const std::exception& error) {
    std::cerr << "bench_flow_attention: " << error.what() << '\n';
    return 1;
  }

  // popen runs a shell, for which /proc/self/exe is the shell: resolve it here.
  char self_path[4096] = {0};
  if (readlink("/proc/self/exe", self_path, sizeof self_path - 1) <= 0) {
    std::cerr << "bench_flow_attention: cannot resolve /proc/self/exe\n";
    return 1;
  }
  const std::string self = self_path;
  std::cout << "Flow-Attention, B=" << shape.batch << " H=" << shape.heads << " D=M=" << shape.dim << ", float32, "
            << threads << " thread(s); median of " << repeats << "; one process per row\n\n";
  std::cout << std::left << std::setw(9) << "kernel" << std::setw(8) << "pass" << std::right << std::setw(8)
            << "L" << std::setw(12) << "seconds" << std::setw(14) << "peak RSS MB" << std::setw(10)
            << "GFLOP/s" << std::setw(12) << "GEMMs s" << std::setw(8) << "ratio" << "\n";
  for (const std::string kernel : {"causal", "normal", "softmax"}) {
    for (std::int64_t L : lengths) {
      for (bool backward : {false, true}) {
        std::cout << std::left << std::setw(9) << kernel << std::setw(8) << (backward ? "fwd+bwd" : "fwd")
                  << std::right << std::setw(8) << L;
        // Causal softmax attention needs ~4 L×L float tensors per head in backward.
        const double softmax_gb = 4.0 * static_cast<double>(shape.batch * shape.heads * L) * L * 4 / 1e9;
        if (kernel == "softmax" && softmax_gb > 12.0) {
          std::cout << "   skipped: needs about " << std::fixed << std::setprecision(0) << softmax_gb
                    << " GB\n";
          continue;
        }
        Result r = run_in_child(self, kernel, backward, L, repeats, threads, shape);
        if (!r.note.empty()) {
          std::cout << "   " << r.note << "\n";
          continue;
        }
        std::cout << std::fixed << std::setprecision(4) << std::setw(12) << r.seconds << std::setprecision(0)
                  << std::setw(14) << r.peak_rss_mb << std::setprecision(1) << std::setw(10)
                  << r.gflop / r.seconds << std::setprecision(4) << std::setw(12) << r.gemm_seconds
                  << std::setprecision(2) << std::setw(8) << r.seconds / r.gemm_seconds << "\n";
      }
    }
  }
  return 0;
}
