// flowattn: run Flow-Attention on tensors from a safetensors file, so that
// the kernels can be checked against one's own PyTorch code.
//
//   flowattn [--causal] [--threads N] INPUT OUTPUT
//
// INPUT holds q [B,H,L,D], k [B,H,S,D], v [B,H,S,M] (F32 or F64, all the
// same), optionally mask [B,S] (nonzero = real key; I64, F32 or F64) and
// grad_out [B,H,L,M]. OUTPUT receives out and, when grad_out was given,
// grad_q, grad_k, grad_v, in the inputs' dtype.
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "../flowgrad.h"

namespace {

const char* const kUsage =
    "usage: flowattn [--causal] [--threads N] INPUT OUTPUT\n"
    "  INPUT   safetensors file with q [B,H,L,D], k [B,H,S,D], v [B,H,S,M],\n"
    "          optional mask [B,S] (nonzero = real key) and grad_out [B,H,L,M]\n"
    "  OUTPUT  safetensors file to write: out, and grad_q, grad_k, grad_v when\n"
    "          grad_out is given\n";

const fg::Tensor& required(const std::map<std::string, fg::Tensor>& tensors, const std::string& name,
                           const std::string& path) {
  auto found = tensors.find(name);
  if (found == tensors.end()) fg::fail("flowattn", "tensor \"", name, "\" is missing from ", path);
  return found->second;
}

int run(int argc, char** argv) {
  bool causal = false;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--causal") {
      causal = true;
    } else if (arg == "--threads" && i + 1 < argc) {
      const std::string_view value = argv[++i];
      int threads = 0;
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), threads);
      if (error != std::errc() || end != value.data() + value.size() || threads < 1 || threads > fg::kMaxThreads)
        fg::fail("flowattn", "--threads: ", value, " is not an integer from 1 to ", fg::kMaxThreads);
      fg::set_num_threads(threads);
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (!arg.empty() && arg[0] == '-') {
      std::cerr << "flowattn: unknown option " << arg << "\n" << kUsage;
      return 2;
    } else {
      paths.push_back(arg);
    }
  }
  if (paths.size() != 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string& input = paths[0];
  const std::string& output = paths[1];
  std::map<std::string, fg::Tensor> tensors = fg::load_safetensors(input);
  fg::Tensor q = required(tensors, "q", input);
  fg::Tensor k = required(tensors, "k", input);
  fg::Tensor v = required(tensors, "v", input);
  fg::Tensor mask = tensors.count("mask") ? tensors.at("mask") : fg::Tensor();
  fg::Tensor grad_out = tensors.count("grad_out") ? tensors.at("grad_out") : fg::Tensor();
  const bool with_grad = grad_out.defined();
  if (with_grad) {
    q.requires_grad_();
    k.requires_grad_();
    v.requires_grad_();
  }
  fg::Tensor out = fg::flow_attention(q, k, v, fg::FlowAttentionOptions{}.set_causal(causal), mask);
  std::map<std::string, fg::Tensor> results{{"out", out.detach()}};
  if (with_grad) {
    if (grad_out.shape() != out.shape() || grad_out.dtype() != out.dtype())
      fg::fail("flowattn", "grad_out has shape ", fg::shape_str(grad_out.shape()), " and dtype ",
               fg::dtype_name(grad_out.dtype()), "; expected ", fg::shape_str(out.shape()), " and ",
               fg::dtype_name(out.dtype()));
    out.backward(grad_out);
    results["grad_q"] = q.grad();
    results["grad_k"] = k.grad();
    results["grad_v"] = v.grad();
  }
  fg::save_safetensors(output, results, {{"causal", causal ? "1" : "0"}, {"producer", "flowattn"}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "flowattn: " << error.what() << '\n';
    return 1;
  }
}
