// decision: offline reinforcement learning with a Flowformer decision model
// (the paper's fifth domain, a Decision Transformer with Flow-Attention).
//
//   decision generate --out DIR [--episodes N] [--horizon H] [--seed S]
//   decision train --data DIR [--steps N] [--batch B] [--context K] [--layers L] [--heads H] [--embd C]
//                  [--dropout P] [--lr LR] [--attention flow|softmax] [--threads N] [--seed S]
//                  [--out DIR] [--resume FILE] [--stop-at N] [--eval-episodes N]
//   decision evaluate --checkpoint FILE [--episodes N] [--target R] [--seed S]
//
// generate writes the point-mass data sets (point_mass.h) in D4RL's layout,
// DIR/point-mass-<split>/{observations,actions,rewards,terminals,timeouts}.npy,
// for the splits random, medium, medium-replay and expert.
//
// train reads any such directory (a user's D4RL data too, see
// core/offline_data.h) and trains on segments that start at an episode's
// first step (or, for episodes longer than --context, at a drawn step),
// MSE on the actions; progress, DIR/log.csv (step,train_loss,seconds) and
// checkpoints as every program (examples/common/trainer.h). When the data has
// the point-mass shapes it then plays --eval-episodes episodes and prints
// the normalised score beside the data's own.
//
// evaluate plays episodes with a checkpoint's model, asking for --target
// (default: the best episode return of its training data), with incremental
// decoding: each step costs the same, whatever the episode's length.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>

#include "../../flowgrad.h"
#include "../common/flags.h"
#include "../common/resume_flags.h"
#include "../common/trainer.h"
#include "point_mass.h"
#include "trajectories.h"

namespace {

namespace fg = flowgrad;
namespace models = fg::models;
namespace nn = fg::nn;

// Start states of the evaluation episodes (generate's data sets use seeds
// --seed + 10 i and + 1: another stream unless --seed is near 1000).
constexpr std::uint64_t kEvaluationSeed = 1000;

struct TrainOptions {
  std::string data, attention = "flow";
  std::int64_t steps = 1000, batch = 32, context = 0, layers = 3, heads = 4, embd = 64, warmup = 100;
  std::int64_t stop_at = 0, eval_episodes = 100;
  double dropout = 0.1, lr = 1e-3, weight_decay = 1e-4, grad_clip = 0.25;
  int threads = 0;
  std::uint64_t seed = 1;
  examples::RunOptions run;
  std::set<std::string> model_flags_given;
};

double mean(const std::vector<double>& values) {
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

std::int64_t largest_action_id(const fg::OfflineDataset& data) {
  const std::vector<std::int64_t> ids = data.actions.contiguous().to_vector<std::int64_t>();
  return *std::max_element(ids.begin(), ids.end());
}

bool is_point_mass(const models::DecisionConfig& config) {
  return config.state_dim == decision::kStateDim && config.action_dim == decision::kActionDim && !config.discrete;
}

models::DecisionConfig config_from_flags(const TrainOptions& o, const fg::OfflineDataset& data,
                                         const decision::TrajectorySampler& sampler) {
  examples::check_model_shape("decision", o.embd, o.heads);
  models::FlowformerConfig trunk;
  trunk.n_layer = o.layers;
  trunk.n_head = o.heads;
  trunk.n_embd = o.embd;
  trunk.dropout = o.dropout;
  trunk.attention = nn::parse_attention_kind(o.attention);
  const std::vector<double> returns = data.episode_returns();
  double largest = 0;
  for (const double r : returns) largest = std::max(largest, std::abs(r));
  std::int64_t action_dim = data.action_width();
  if (data.discrete()) {  // the number of actions: the largest id + 1
    const std::int64_t largest_id = largest_action_id(data);
    if (largest_id >= examples::kMaxCount)
      fg::fail("decision", o.data, " holds the action id ", largest_id, "; ids must be below 2^40");
    action_dim = largest_id + 1;
  } else {
    // The head ends in tanh: actions beyond [-1, 1] cannot be predicted.
    const std::vector<float> values = data.actions.contiguous().to_vector<float>();
    for (std::size_t i = 0; i < values.size(); ++i)
      if (std::abs(values[i]) > 1)
        fg::fail("decision", o.data, ": actions row ", static_cast<std::int64_t>(i) / action_dim, " holds ", values[i],
                 "; the model predicts actions in [-1, 1] (scale them first)");
  }
  // Episodes may be longer than the context: timesteps go up to the longest one.
  models::DecisionConfig config = models::decision_config(data.state_dim(), action_dim, data.discrete(),
                                                          sampler.longest_episode(), largest > 0 ? largest : 1.0, trunk);
  decision::state_statistics(data, config.state_mean, config.state_std);
  config.target_return = *std::max_element(returns.begin(), returns.end());
  config.validate();
  return config;
}

models::DecisionConfig resumed_config(const TrainOptions& o, const fg::OfflineDataset& data) {
  const auto stored = models::DecisionConfig::from_json(nn::read_checkpoint_info(o.run.resume).config);
  examples::check_resumed_flags(
      "decision", o.model_flags_given,
      {{"--layers", std::to_string(o.layers), std::to_string(stored.trunk.n_layer)},
       {"--heads", std::to_string(o.heads), std::to_string(stored.trunk.n_head)},
       {"--embd", std::to_string(o.embd), std::to_string(stored.trunk.n_embd)},
       {"--attention", o.attention, std::string(nn::attention_kind_name(stored.trunk.attention))}},
      o.run.resume);
  if (stored.state_dim != data.state_dim() || stored.discrete != data.discrete() ||
      (!stored.discrete && stored.action_dim != data.action_width()))
    fg::fail("decision", "the model of ", o.run.resume, " takes states of ", stored.state_dim, " values and ",
             stored.discrete ? "discrete" : std::to_string(stored.action_dim) + "-value", " actions; ", o.data,
             " holds states of ", data.state_dim(), " values and ",
             data.discrete() ? "discrete" : std::to_string(data.action_width()) + "-value", " actions");
  if (stored.discrete && largest_action_id(data) >= stored.action_dim)
    fg::fail("decision", o.data, " holds the action id ", largest_action_id(data), "; the model of ", o.run.resume,
             " knows ", stored.action_dim, " actions");
  return stored;
}

void print_score(const char* what, double mean_return, const decision::ReferenceReturns& references) {
  std::printf("%s: mean return %.2f, normalised score %.1f\n", what, mean_return, references.normalise(mean_return));
}

int train(TrainOptions o) {
  examples::start_process(o.threads);
  const fg::OfflineDataset data = fg::read_offline_data(o.data);
  const decision::TrajectorySampler sampler(data, o.context);
  const models::DecisionConfig config = o.run.resume.empty() ? config_from_flags(o, data, sampler) : resumed_config(o, data);
  if (sampler.longest_episode() > config.max_timestep)
    fg::fail("decision", o.data, " holds an episode of ", sampler.longest_episode(),
             " steps; the model's timesteps end at ", config.max_timestep);
  examples::check_training_memory("decision", "--layers, --embd, --context, --batch",
                                  models::DecisionFlowformer::parameter_count_for(config),
                                  fg::checked_mul(o.batch, 3 * sampler.context(), "decision", "--batch x 3 x --context"),
                                  config.trunk.n_layer, config.trunk.n_embd);

  fg::Generator init_gen(o.seed), data_gen(o.seed + 1);
  auto dropout_gen = std::make_shared<fg::Generator>(o.seed + 2);
  models::DecisionFlowformer model(config, init_gen, fg::kFloat32, dropout_gen);
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), o.weight_decay),
                      nn::AdamWOptions{.lr = o.lr, .weight_decay = o.weight_decay});
  nn::WarmupCosineLR schedule(o.lr, o.lr / 10, std::min(o.warmup, o.steps), o.steps);
  examples::Trainer trainer({.program = "decision",
                             .run = o.run,
                             .log_header = "step,train_loss,seconds",
                             .total_steps = o.steps,
                             .stop_at = o.stop_at,
                             .global_batch = o.batch,
                             .grad_clip = o.grad_clip,
                             .unit = "seq/s"},
                            model, optimizer, [&](std::int64_t step) { return schedule.lr_at(step); },
                            {.shared = {{"data", &data_gen}}, .per_rank = {{"dropout", dropout_gen.get()}}},
                            config.to_json());
  const std::int64_t first_step = o.run.resume.empty() ? 0 : trainer.resume();
  const bool root = trainer.comm().is_root();
  const std::vector<double> returns = data.episode_returns();
  if (root) {
    std::printf("decision: %s, %lld transitions in %lld episodes (up to %lld steps), states of %lld values, %s "
                "actions; %s attention, %lld layers, %lld heads, width %lld, context %lld steps, %lld parameters, "
                "%d threads%s\n",
                o.data.c_str(), static_cast<long long>(data.size()), static_cast<long long>(sampler.episodes()),
                static_cast<long long>(sampler.longest_episode()), static_cast<long long>(config.state_dim),
                config.discrete ? "discrete" : (std::to_string(config.action_dim) + "-value").c_str(),
                nn::attention_kind_name(config.trunk.attention).data(), static_cast<long long>(config.trunk.n_layer),
                static_cast<long long>(config.trunk.n_head), static_cast<long long>(config.trunk.n_embd),
                static_cast<long long>(sampler.context()), static_cast<long long>(model.parameter_count()),
                fg::get_num_threads(), examples::ranks_note(trainer.comm()).c_str());
    std::printf("episode returns in the data: mean %.2f, best %.2f\n", mean(returns),
                *std::max_element(returns.begin(), returns.end()));
    if (sampler.context() < sampler.longest_episode())
      std::printf("note: a context of %lld steps is shorter than the longest episode (%lld): training sees segments "
                  "of at most that many steps, evaluation plays whole episodes\n",
                  static_cast<long long>(sampler.context()), static_cast<long long>(sampler.longest_episode()));
    if (first_step > 0) std::printf("resumed from %s at step %lld\n", o.run.resume.c_str(), static_cast<long long>(first_step));
  }
  // Not a structured binding: clang 14 (the sanitizer build) cannot capture one in a lambda.
  const std::pair<std::int64_t, std::int64_t> shard = trainer.shard(o.batch);
  const int status = trainer.run(
      [&](std::int64_t) {
        const models::TrajectoryBatch batch = sampler.sample(o.batch, data_gen, shard.first, shard.second);
        return examples::ShardLoss{model.loss(batch), shard.second};
      },
      [&](const examples::StepResult& done) {
        std::ostringstream row;
        row.precision(9);
        row << done.step << ',' << done.loss << ',' << done.seconds;
        examples::StepReport report;
        report.log_row = row.str();
        report.save = done.step % 200 == 0;
        return report;
      });
  if (status != 0 || trainer.step() < o.steps || !root || !is_point_mass(config) || o.eval_episodes == 0) return status;

  model.eval();
  const decision::ReferenceReturns references =
      decision::reference_returns(config.max_timestep, o.eval_episodes, kEvaluationSeed);
  std::printf("\n");
  print_score("the data's episodes", mean(returns), references);
  const decision::RolloutResult result = decision::rollout(
      model, {.episodes = o.eval_episodes, .horizon = config.max_timestep, .target_return = config.target_return,
              .seed = kEvaluationSeed});
  char what[64];
  std::snprintf(what, sizeof what, "the model, asked for %.2f", config.target_return);
  print_score(what, result.mean_return, references);
  return 0;
}

struct EvaluateOptions {
  std::string checkpoint;
  std::int64_t episodes = 100;
  double target = std::numeric_limits<double>::quiet_NaN();
  std::uint64_t seed = kEvaluationSeed;
  int threads = 0;
};

int evaluate(const EvaluateOptions& o) {
  examples::start_process(o.threads);
  const std::unique_ptr<models::DecisionFlowformer> model = models::load_decision_model(o.checkpoint);
  const models::DecisionConfig& config = model->config();
  if (!is_point_mass(config))
    fg::fail("decision", "the model of ", o.checkpoint, " was not trained on point-mass data (states of ",
             config.state_dim, " values, actions of ", config.action_dim, "): it cannot play that environment");
  const double target = std::isnan(o.target) ? config.target_return : o.target;
  const decision::ReferenceReturns references = decision::reference_returns(config.max_timestep, o.episodes, o.seed);
  const decision::RolloutResult result =
      decision::rollout(*model, {.episodes = o.episodes, .horizon = config.max_timestep, .target_return = target, .seed = o.seed});
  std::printf("%lld episodes of %lld steps, %s attention, asked for a return of %.2f\n", static_cast<long long>(o.episodes),
              static_cast<long long>(config.max_timestep), nn::attention_kind_name(config.trunk.attention).data(), target);
  std::printf("references on the same start states: random policy %.2f, expert %.2f\n", references.random,
              references.expert);
  print_score("the model", result.mean_return, references);
  std::printf("%.3f ms per step for all %lld episodes together\n", 1e3 * mean(result.seconds_per_step),
              static_cast<long long>(o.episodes));
  return 0;
}

struct GenerateOptions {
  std::string out;
  std::int64_t episodes = 1000, horizon = 50;
  std::uint64_t seed = 1;
};

int generate(const GenerateOptions& o) {
  const decision::ReferenceReturns references = decision::reference_returns(o.horizon, 100, kEvaluationSeed);
  std::printf("references (100 episodes of %lld steps): random policy %.2f, expert %.2f\n",
              static_cast<long long>(o.horizon), references.random, references.expert);
  for (std::size_t i = 0; i < decision::kSplits.size(); ++i) {
    const std::string& split = decision::kSplits[i];
    const fg::OfflineDataset data = decision::generate_split(split, o.episodes, o.horizon, o.seed + 10 * i);
    const std::string dir = (std::filesystem::path(o.out) / ("point-mass-" + split)).string();
    fg::write_offline_data(dir, data);
    const double mean_return = mean(data.episode_returns());
    std::printf("wrote %s: %lld transitions, mean return %.2f (normalised %.1f)\n", dir.c_str(),
                static_cast<long long>(data.size()), mean_return, references.normalise(mean_return));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"decision: offline RL with a Flowformer decision model (point-mass data, D4RL's layout)"};
  app.require_subcommand(1);
  const CLI::Validator count = examples::integer_in(1, examples::kMaxCount);
  const CLI::Validator positive_real = examples::real_in(0, std::numeric_limits<double>::max());

  GenerateOptions g;
  auto* generate_cmd = app.add_subcommand("generate", "write the point-mass data sets as DIR/point-mass-<split>/*.npy");
  generate_cmd->add_option("--out", g.out, "directory to write the data sets into")->required();
  generate_cmd->add_option("--episodes", g.episodes, "episodes per data set")->transform(examples::integer_in(1, 1 << 24))->capture_default_str();
  generate_cmd->add_option("--horizon", g.horizon, "steps per episode")->transform(examples::integer_in(1, 1 << 20))->capture_default_str();
  generate_cmd->add_option("--seed", g.seed, "random seed")->transform(examples::unsigned_value())->capture_default_str();

  TrainOptions t;
  auto* train_cmd = app.add_subcommand("train", "train a decision model on a D4RL-layout directory");
  train_cmd->add_option("--data", t.data, "directory of observations.npy, actions.npy, rewards.npy, terminals.npy, timeouts.npy")->required();
  train_cmd->add_option("--steps", t.steps, "optimizer steps")->transform(count)->capture_default_str();
  train_cmd->add_option("--batch", t.batch, "segments per step")->transform(count)->capture_default_str();
  train_cmd->add_option("--context", t.context, "steps per segment (0: the longest episode)")->transform(examples::integer_in(0, examples::kMaxCount))->capture_default_str();
  train_cmd->add_option("--layers", t.layers, "transformer blocks")->transform(count)->capture_default_str();
  train_cmd->add_option("--heads", t.heads, "attention heads (dividing --embd)")->transform(count)->capture_default_str();
  train_cmd->add_option("--embd", t.embd, "embedding width (a multiple of --heads)")->transform(count)->capture_default_str();
  train_cmd->add_option("--dropout", t.dropout, "dropout probability")->check(examples::real_in(0, 1, true))->capture_default_str();
  train_cmd->add_option("--lr", t.lr, "peak learning rate (warm-up, cosine decay to a tenth)")->check(positive_real)->capture_default_str();
  train_cmd->add_option("--warmup", t.warmup, "warm-up steps")->transform(examples::integer_in(0, examples::kMaxCount))->capture_default_str();
  train_cmd->add_option("--weight-decay", t.weight_decay, "AdamW decay of matrix weights")->check(examples::real_in(0, 1e6))->capture_default_str();
  train_cmd->add_option("--attention", t.attention, "flow or softmax")->check(CLI::IsMember({"flow", "softmax"}))->capture_default_str();
  train_cmd->add_option("--threads", t.threads, "threads for oneTBB and OpenBLAS (0: FLOWGRAD_NUM_THREADS or all cores)")->transform(examples::thread_count());
  train_cmd->add_option("--seed", t.seed, "random seed")->transform(examples::unsigned_value())->capture_default_str();
  train_cmd->add_option("--stop-at", t.stop_at, "stop (and save) after this step")->transform(count);
  train_cmd->add_option("--eval-episodes", t.eval_episodes, "point-mass episodes played after training (0: none)")->transform(examples::integer_in(0, 1 << 20))->capture_default_str();
  examples::add_run_flags(train_cmd, t.run);

  EvaluateOptions e;
  auto* evaluate_cmd = app.add_subcommand("evaluate", "play point-mass episodes with a trained model");
  evaluate_cmd->add_option("--checkpoint", e.checkpoint, "checkpoint.safetensors written by train")->required();
  evaluate_cmd->add_option("--episodes", e.episodes, "episodes, played in parallel")->transform(examples::integer_in(1, 1 << 20))->capture_default_str();
  evaluate_cmd->add_option("--target", e.target, "return asked for at step 0 (default: the training data's best)")->check(examples::real_in(-1e30, 1e30));
  evaluate_cmd->add_option("--seed", e.seed, "seed of the start states")->transform(examples::unsigned_value())->capture_default_str();
  evaluate_cmd->add_option("--threads", e.threads, "threads (0: FLOWGRAD_NUM_THREADS or all cores)")->transform(examples::thread_count());
  CLI11_PARSE(app, argc, argv);
  try {
    if (train_cmd->parsed()) {
      for (const char* flag : {"--layers", "--heads", "--embd", "--attention"})
        if (train_cmd->count(flag) > 0) t.model_flags_given.insert(flag);
      return train(t);
    }
    if (evaluate_cmd->parsed()) return evaluate(e);
    return generate(g);
  } catch (const std::exception& error) {
    examples::report_and_exit("decision", error);
  }
}
