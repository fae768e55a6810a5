#include "point_mass.h"

#include <algorithm>
#include <cmath>

namespace decision {

namespace {

double uniform_in(fg::Generator& rng, double low, double high) { return low + (high - low) * rng.uniform(); }

double clip_unit(double value) { return std::clamp(value, -1.0, 1.0); }

}  // namespace

PointMass::PointMass(std::int64_t horizon) : horizon_(horizon) {
  if (horizon < 1) fg::fail("PointMass", "horizon must be positive, got ", horizon);
}

const State& PointMass::reset(fg::Generator& rng) {
  const double x = uniform_in(rng, -1, 1), y = uniform_in(rng, -1, 1);
  const double gx = uniform_in(rng, -1, 1), gy = uniform_in(rng, -1, 1);
  return reset_to({x, y, 0.0, 0.0, gx, gy});
}

const State& PointMass::reset_to(const State& state) {
  state_ = state;
  t_ = 0;
  return state_;
}

PointMass::Step PointMass::step(const Action& action) {
  if (t_ >= horizon_) fg::fail("PointMass", "step after the episode's last step (", horizon_, "): reset first");
  auto& [x, y, vx, vy, gx, gy] = state_;
  vx += kDt * (kForce * clip_unit(action[0]) - kFriction * vx);
  vy += kDt * (kForce * clip_unit(action[1]) - kFriction * vy);
  x += kDt * vx;
  y += kDt * vy;
  ++t_;
  return {1.0 - std::min(1.0, std::hypot(x - gx, y - gy)), t_ == horizon_};
}

Action ScriptedPolicy::act(const State& s, fg::Generator& rng) const {
  if (random_share > 0 && rng.uniform() < random_share) return {uniform_in(rng, -1, 1), uniform_in(rng, -1, 1)};
  Action a;
  for (int d = 0; d < 2; ++d) {
    const double controller = 3.0 * (s[4 + d] - s[d]) - 1.5 * s[2 + d];  // PD on the goal offset
    a[d] = clip_unit(gain * controller + (noise > 0 ? noise * rng.normal() : 0.0));
  }
  return a;
}

namespace {

// The policy of episode `episode` (of `episodes`) of a split.
ScriptedPolicy split_policy(const std::string& split, std::int64_t episode, std::int64_t episodes,
                            fg::Generator& rng) {
  if (split == "expert") return {.gain = 1.0, .noise = 0.1};
  if (split == "random") return {.random_share = 1.0};
  if (split == "medium") return {.gain = uniform_in(rng, 0.02, 0.2), .noise = 0.4};
  if (split == "medium-replay") {
    const double progress = episodes > 1 ? static_cast<double>(episode) / static_cast<double>(episodes - 1) : 1.0;
    return {.gain = uniform_in(rng, 0.02, 0.2), .noise = 0.4, .random_share = 1.0 - progress};
  }
  fg::fail("generate_split", "unknown split '", split, "' (random, medium, medium-replay, expert)");
}

}  // namespace

fg::OfflineDataset generate_split(const std::string& split, std::int64_t episodes, std::int64_t horizon,
                                  std::uint64_t seed) {
  if (episodes < 1) fg::fail("generate_split", "episodes must be positive, got ", episodes);
  const std::int64_t n = fg::checked_mul(episodes, horizon, "generate_split", "episodes x horizon");
  constexpr std::int64_t kMaxTransitions = std::int64_t{1} << 27;  // 3.2 GB of observations and actions
  if (n > kMaxTransitions)
    fg::fail("generate_split", episodes, " episodes of ", horizon, " steps are ", n, " transitions, more than 2^27");
  std::vector<float> observations, actions, rewards;
  std::vector<std::int64_t> terminals(static_cast<std::size_t>(n), 0), timeouts(static_cast<std::size_t>(n), 0);
  fg::Generator start_rng(seed), policy_rng(seed + 1);
  PointMass env(horizon);
  std::int64_t row = 0;
  for (std::int64_t e = 0; e < episodes; ++e) {
    const ScriptedPolicy policy = split_policy(split, e, episodes, policy_rng);
    env.reset(start_rng);
    for (bool done = false; !done; ++row) {
      const State s = env.state();
      const Action a = policy.act(s, policy_rng);
      const PointMass::Step step = env.step(a);
      observations.insert(observations.end(), s.begin(), s.end());
      for (const double value : a) actions.push_back(static_cast<float>(value));
      rewards.push_back(static_cast<float>(step.reward));
      timeouts[static_cast<std::size_t>(row)] = step.timeout;
      done = step.timeout;
    }
  }
  fg::OfflineDataset data;
  data.observations = fg::from_vector(observations, {n, kStateDim});
  data.actions = fg::from_vector(actions, {n, kActionDim});
  data.rewards = fg::from_vector(rewards, {n});
  data.terminals = fg::from_vector(terminals, {n});
  data.timeouts = fg::from_vector(timeouts, {n});
  return data;
}

ReferenceReturns reference_returns(std::int64_t horizon, std::int64_t episodes, std::uint64_t seed) {
  auto mean_return = [&](const ScriptedPolicy& policy) {
    fg::Generator start_rng(seed), policy_rng(seed + 1);
    PointMass env(horizon);
    double total = 0;
    for (std::int64_t e = 0; e < episodes; ++e) {
      env.reset(start_rng);
      for (bool done = false; !done;) {
        const PointMass::Step step = env.step(policy.act(env.state(), policy_rng));
        total += step.reward;
        done = step.timeout;
      }
    }
    return total / static_cast<double>(episodes);
  };
  return {mean_return({.random_share = 1.0}), mean_return({.gain = 1.0})};
}

}  // namespace decision
