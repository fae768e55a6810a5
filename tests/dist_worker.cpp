// A small data-parallel training run for tests/test_dist.cpp, started alone
// or under mpirun: a tiny FlowformerLM (no dropout) trains 5 AdamW steps on
// a fixed sequence of global batches, each rank on its share of the rows,
// with dist::DataParallel averaging the gradients. Rank 0 writes the final
// parameters (--out) and the event order of the last step (--events).
//
//   dist_worker --out FILE [--dtype float32|float64] [--bucket-bytes N] [--events FILE]
//               [--unused [--allow-unused]] [--throw-at RANK:STEP]
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "../flowgrad.h"

namespace fg = flowgrad;
namespace models = fg::models;
namespace nn = fg::nn;
namespace dist = fg::dist;

namespace {

// The LM and, with --unused, a matrix `extra` that the loss uses on even
// steps only (a decayed parameter left without gradient on odd steps).
class Model : public nn::Module {
 public:
  Model(const models::FlowformerConfig& config, fg::DType dtype, bool with_extra) {
    fg::Generator init(3);
    lm = register_module("lm", std::make_shared<models::FlowformerLM>(config, init, dtype));
    if (with_extra) extra = register_parameter("extra", fg::randn({2, 3}, init, dtype));
  }
  std::shared_ptr<models::FlowformerLM> lm;
  fg::Tensor extra;
};

const char* kEventNames[] = {"GradientReady", "BucketStarted", "BucketCompleted", "FinishCalled", "Averaged"};

int run(int argc, char** argv) {
  std::string out, events_path, dtype_name = "float64";
  std::size_t bucket_bytes = std::size_t{25} << 20;
  bool unused = false, allow_unused = false;
  int throw_rank = -1, throw_step = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (arg == "--out") out = value();
    else if (arg == "--events") events_path = value();
    else if (arg == "--dtype") dtype_name = value();
    else if (arg == "--bucket-bytes") bucket_bytes = std::stoul(value());
    else if (arg == "--unused") unused = true;
    else if (arg == "--allow-unused") allow_unused = true;
    else if (arg == "--throw-at") {
      const std::string at = value();
      throw_rank = std::stoi(at.substr(0, at.find(':')));
      throw_step = std::stoi(at.substr(at.find(':') + 1));
    } else fg::fail("dist_worker", "unknown argument ", arg);
  }
  const dist::Communicator& comm = dist::Communicator::world();
  const fg::DType dtype = dtype_name == "float32" ? fg::kFloat32 : fg::kFloat64;

  models::FlowformerConfig config;
  config.vocab_size = 11;
  config.block_size = 8;
  config.n_layer = 2;
  config.n_head = 2;
  config.n_embd = 16;
  config.dropout = 0.0;
  Model model(config, dtype, unused);
  dist::DataParallel ddp(model, comm, {.bucket_bytes = bucket_bytes, .allow_unused_parameters = allow_unused});
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), 0.1),
                      nn::AdamWOptions{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95});

  const std::int64_t global_batch = 4, rows = global_batch / comm.size(), first = comm.rank() * rows;
  fg::Generator data(7);
  for (int step = 0; step < 5; ++step) {
    if (comm.rank() == throw_rank && step == throw_step) fg::fail("dist_worker", "injected failure at step ", step);
    // Every rank draws the whole global batch and keeps its rows.
    const fg::Tensor tokens = fg::randint(0, config.vocab_size, {global_batch, config.block_size + 1}, data);
    const fg::Tensor mine = tokens.narrow(0, first, rows);
    const fg::Tensor inputs = mine.narrow(1, 0, config.block_size).contiguous();
    const fg::Tensor targets = mine.narrow(1, 1, config.block_size).contiguous();
    optimizer.zero_grad();
    fg::Tensor loss = model.lm->loss(inputs, targets);
    if (model.extra.defined() && step % 2 == 0) loss = loss + fg::sum(model.extra * model.extra) * 1e-2;
    loss.backward();
    ddp.finish();
    nn::clip_grad_norm_(model.parameters(), 1.0);
    optimizer.step();
  }

  if (comm.is_root()) {
    fg::save_safetensors(out, model.state_dict(), {{"ranks", std::to_string(comm.size())},
                                                   {"buckets", std::to_string(ddp.bucket_count())}});
    if (!events_path.empty()) {
      std::ofstream events(events_path);
      for (const auto& event : ddp.last_events())
        events << kEventNames[static_cast<int>(event.kind)] << ' ' << event.index << '\n';
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    dist::abort_job("dist_worker", error.what());
  }
}
