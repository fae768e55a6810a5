// A small continuous-control task with known dynamics, for offline RL on CPU:
// a point mass in the plane that must reach a goal and stay there.
//
//   state  s = (x, y, vx, vy, gx, gy): position, velocity, goal
//   action a = (ax, ay), each clipped to [-1, 1]: a force
//   step   v' = v + dt (force a − friction v),  p' = p + dt v'
//          with dt = 0.1, force = 2, friction = 1, i.e. v' = 0.9 v + 0.2 a
//   reward r = 1 − min(1, |p' − g|): 1 on the goal, 0 at distance 1 or more
//
// An episode starts at rest at a position and a goal drawn uniformly from
// [-1, 1]² and lasts `horizon` steps (no terminal state: it ends by timeout).
// Everything is a function of the generator's seed.
//
// Scripted policies give data sets of mixed quality, named as D4RL's:
//   expert         a PD controller, a = clip(3 (g − p) − 1.5 v), with a little noise
//   medium         the same controller with its gains scaled by a factor drawn
//                  per episode from [0.02, 0.2], and more noise: sluggish
//   random         uniform actions
//   medium-replay  what an agent's replay buffer holds while it learns: random
//                  at first, medium-like at the end, the random share falling
//                  linearly over the episodes
// The normalised score is D4RL's: 100 (R − R_random) / (R_expert − R_random),
// the reference returns measured on the same start states.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../../flowgrad.h"

namespace decision {

namespace fg = flowgrad;

inline constexpr std::int64_t kStateDim = 6, kActionDim = 2;
using State = std::array<double, kStateDim>;
using Action = std::array<double, kActionDim>;

class PointMass {
 public:
  static constexpr double kDt = 0.1, kForce = 2.0, kFriction = 1.0;

  explicit PointMass(std::int64_t horizon);
  // A new episode: position and goal uniform in [-1, 1]², velocity 0.
  const State& reset(fg::Generator& rng);
  // A new episode from a given state (e.g. to replay one).
  const State& reset_to(const State& state);
  struct Step {
    double reward = 0;
    bool timeout = false;  // the last step of the episode
  };
  // Applies the action (clipped to [-1, 1]); throws after the episode's last step.
  Step step(const Action& action);

  const State& state() const { return state_; }
  std::int64_t t() const { return t_; }  // steps taken in this episode
  std::int64_t horizon() const { return horizon_; }

 private:
  std::int64_t horizon_;
  std::int64_t t_ = 0;
  State state_{};
};

// A scripted policy: with probability random_share a uniform action, else the
// PD controller with its gains times `gain` plus Gaussian noise of std `noise`.
struct ScriptedPolicy {
  double gain = 1.0, noise = 0.0, random_share = 0.0;
  Action act(const State& state, fg::Generator& rng) const;
};

inline const std::vector<std::string> kSplits = {"random", "medium", "medium-replay", "expert"};

// `episodes` episodes of `horizon` steps of the named split, as D4RL stores them.
fg::OfflineDataset generate_split(const std::string& split, std::int64_t episodes, std::int64_t horizon,
                                  std::uint64_t seed);

// Mean returns of the random and expert policies on the episodes that
// start from `episodes` states drawn from a generator seeded with `seed`.
struct ReferenceReturns {
  double random = 0, expert = 0;
  double normalise(double mean_return) const { return 100 * (mean_return - random) / (expert - random); }
};
ReferenceReturns reference_returns(std::int64_t horizon, std::int64_t episodes, std::uint64_t seed);

}  // namespace decision
