#include "trajectories.h"

#include <chrono>
#include <cmath>

#include "point_mass.h"

namespace decision {

namespace models = fg::models;

TrajectorySampler::TrajectorySampler(const fg::OfflineDataset& data, std::int64_t context)
    : data_(&data), episodes_(data.episodes()) {
  if (context < 0) fg::fail("TrajectorySampler", "context must be 0 (whole episodes) or positive, got ", context);
  states_ = data.observations.contiguous().to_vector<float>();
  if (data.discrete())
    action_ids_ = data.actions.contiguous().to_vector<std::int64_t>();
  else
    actions_ = data.actions.contiguous().to_vector<float>();
  // Returns-to-go, summed backwards through each episode in float64.
  const std::vector<float> rewards = data.rewards.contiguous().to_vector<float>();
  returns_to_go_.resize(rewards.size());
  for (const fg::OfflineEpisode& episode : episodes_) {
    double to_go = 0;
    for (std::int64_t i = episode.start + episode.length - 1; i >= episode.start; --i) {
      to_go += rewards[static_cast<std::size_t>(i)];
      returns_to_go_[static_cast<std::size_t>(i)] = static_cast<float>(to_go);
    }
    longest_ = std::max(longest_, episode.length);
  }
  // A context beyond the longest episode would only add padding.
  context_ = context == 0 ? longest_ : std::min(context, longest_);
}

models::TrajectoryBatch TrajectorySampler::sample(std::int64_t batch, fg::Generator& rng, std::int64_t first,
                                                  std::int64_t rows) const {
  const std::int64_t K = context_, S = data_->state_dim(), A = data_->action_width();
  const bool discrete = data_->discrete();
  std::vector<float> rtg(static_cast<std::size_t>(rows * K), 0.0f), states(static_cast<std::size_t>(rows * K * S), 0.0f),
      actions(discrete ? 0 : static_cast<std::size_t>(rows * K * A), 0.0f), mask(static_cast<std::size_t>(rows * K), 0.0f);
  std::vector<std::int64_t> action_ids(discrete ? static_cast<std::size_t>(rows * K) : 0, 0),
      timesteps(static_cast<std::size_t>(rows * K), 0);
  for (std::int64_t b = 0; b < batch; ++b) {
    // Every rank draws every row, so the generator stays in step.
    const fg::OfflineEpisode& episode = episodes_[rng.next_u64() % episodes_.size()];
    const std::int64_t start = episode.length > K ? static_cast<std::int64_t>(rng.next_u64() % (episode.length - K + 1)) : 0;
    if (b < first || b >= first + rows) continue;
    const std::int64_t row = b - first, steps = std::min(K, episode.length);
    for (std::int64_t t = 0; t < steps; ++t) {
      const std::size_t out = static_cast<std::size_t>(row * K + t);
      const std::size_t in = static_cast<std::size_t>(episode.start + start + t);
      rtg[out] = returns_to_go_[in];
      std::copy_n(states_.begin() + static_cast<std::ptrdiff_t>(in * S), S, states.begin() + static_cast<std::ptrdiff_t>(out * S));
      if (discrete)
        action_ids[out] = action_ids_[in];
      else
        std::copy_n(actions_.begin() + static_cast<std::ptrdiff_t>(in * A), A, actions.begin() + static_cast<std::ptrdiff_t>(out * A));
      timesteps[out] = start + t;
      mask[out] = 1.0f;
    }
  }
  models::TrajectoryBatch out;
  out.returns_to_go = fg::from_vector(rtg, {rows, K});
  out.states = fg::from_vector(states, {rows, K, S});
  out.actions = discrete ? fg::from_vector(action_ids, {rows, K}) : fg::from_vector(actions, {rows, K, A});
  out.timesteps = fg::from_vector(timesteps, {rows, K});
  out.mask = fg::from_vector(mask, {rows, K});
  return out;
}

void state_statistics(const fg::OfflineDataset& data, std::vector<double>& mean, std::vector<double>& std) {
  const std::int64_t n = data.size(), S = data.state_dim();
  const std::vector<double> x = data.observations.to(fg::kFloat64).contiguous().to_vector<double>();
  mean.assign(static_cast<std::size_t>(S), 0.0);
  std.assign(static_cast<std::size_t>(S), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t d = 0; d < S; ++d) mean[static_cast<std::size_t>(d)] += x[static_cast<std::size_t>(i * S + d)];
  for (double& m : mean) m /= static_cast<double>(n);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t d = 0; d < S; ++d) {
      const double deviation = x[static_cast<std::size_t>(i * S + d)] - mean[static_cast<std::size_t>(d)];
      std[static_cast<std::size_t>(d)] += deviation * deviation;
    }
  for (double& s : std) {
    s = std::sqrt(s / static_cast<double>(n));
    if (!(s > 1e-6)) s = 1.0;  // a constant dimension: leave its scale alone
  }
}

RolloutResult rollout(const models::DecisionFlowformer& model, const RolloutOptions& options) {
  const models::DecisionConfig& config = model.config();
  if (config.state_dim != kStateDim || config.action_dim != kActionDim || config.discrete)
    fg::fail("rollout", "the point-mass environment needs a model of ", kStateDim, " state values and ", kActionDim,
             " continuous action values; this one has ", config.state_dim, " and ", config.action_dim,
             config.discrete ? " discrete actions" : "");
  if (options.horizon > config.max_timestep)
    fg::fail("rollout", "episodes of ", options.horizon, " steps exceed the model's max_timestep ", config.max_timestep);
  if (options.episodes < 1) fg::fail("rollout", "episodes must be positive, got ", options.episodes);
  const std::int64_t N = options.episodes;
  fg::NoGradGuard no_grad;
  fg::Generator start_rng(options.seed);
  std::vector<PointMass> envs(static_cast<std::size_t>(N), PointMass(options.horizon));
  for (PointMass& env : envs) env.reset(start_rng);
  models::DecisionDecoder decoder = model.start_decoding(N);
  std::vector<double> to_go(static_cast<std::size_t>(N), options.target_return);
  RolloutResult result;
  result.returns.assign(static_cast<std::size_t>(N), 0.0);
  std::vector<float> states(static_cast<std::size_t>(N * kStateDim)), rtg(static_cast<std::size_t>(N));
  for (std::int64_t t = 0; t < options.horizon; ++t) {
    const auto started = std::chrono::steady_clock::now();
    for (std::int64_t e = 0; e < N; ++e) {
      const State& s = envs[static_cast<std::size_t>(e)].state();
      std::copy(s.begin(), s.end(), states.begin() + e * kStateDim);
      rtg[static_cast<std::size_t>(e)] = static_cast<float>(to_go[static_cast<std::size_t>(e)]);
    }
    const fg::Tensor action = decoder.act(fg::from_vector(rtg), fg::from_vector(states, {N, kStateDim}),
                                          fg::full({N}, static_cast<double>(t), fg::kInt64));
    const std::vector<float> a = action.contiguous().to_vector<float>();
    for (std::int64_t e = 0; e < N; ++e) {
      const PointMass::Step step = envs[static_cast<std::size_t>(e)].step({a[static_cast<std::size_t>(e * 2)], a[static_cast<std::size_t>(e * 2 + 1)]});
      result.returns[static_cast<std::size_t>(e)] += step.reward;
      to_go[static_cast<std::size_t>(e)] -= step.reward;
    }
    decoder.record(action);
    result.seconds_per_step.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  for (const double r : result.returns) result.mean_return += r / static_cast<double>(N);
  return result;
}

}  // namespace decision
