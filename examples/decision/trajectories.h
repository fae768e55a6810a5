// What the decision program does with data and the environment: training
// batches of trajectory segments from an offline data set, and rollouts of a
// trained model in the point-mass environment.
#pragma once

#include <cstdint>
#include <vector>

#include "../../flowgrad.h"

namespace decision {

namespace fg = flowgrad;

// Segments of `context` steps (or a whole shorter episode, padded at the end)
// with their returns-to-go (the rewards still to come in the episode, from
// each step on) and timesteps. An episode longer than the context gives a
// segment that starts at a uniformly drawn step.
class TrajectorySampler {
 public:
  // context 0, or one beyond the longest episode: whole episodes.
  TrajectorySampler(const fg::OfflineDataset& data, std::int64_t context);

  // A batch of `batch` segments drawn from `rng` (episodes uniformly, with
  // replacement); only rows [first, first + rows) are built (this rank's
  // share), but `rng` advances the same on every rank.
  fg::models::TrajectoryBatch sample(std::int64_t batch, fg::Generator& rng, std::int64_t first,
                                     std::int64_t rows) const;

  std::int64_t context() const { return context_; }
  std::int64_t longest_episode() const { return longest_; }
  std::int64_t episodes() const { return static_cast<std::int64_t>(episodes_.size()); }

 private:
  const fg::OfflineDataset* data_;
  std::int64_t context_ = 0, longest_ = 0;
  std::vector<fg::OfflineEpisode> episodes_;
  std::vector<float> states_, actions_, returns_to_go_;  // row-major copies of the data
  std::vector<std::int64_t> action_ids_;                  // discrete actions
};

// Per-dimension mean and standard deviation of the observations (a
// dimension that never varies gets std 1), for the model's standardisation.
void state_statistics(const fg::OfflineDataset& data, std::vector<double>& mean, std::vector<double>& std);

struct RolloutOptions {
  std::int64_t episodes = 50;      // played in parallel, one decoder batch
  std::int64_t horizon = 50;       // steps per episode
  double target_return = 0;        // the return-to-go the model is asked for at step 0
  std::uint64_t seed = 1000;       // start states (the references use the same ones)
};

struct RolloutResult {
  double mean_return = 0;
  std::vector<double> returns;             // of each episode
  std::vector<double> seconds_per_step;    // wall time of each step (all episodes together)
};

// Plays the episodes with the model choosing every action by incremental
// decoding (model in eval mode, no autograd): act(R_t, s_t, t), apply the
// predicted action, record it, and lower the return-to-go by the reward.
RolloutResult rollout(const fg::models::DecisionFlowformer& model, const RolloutOptions& options);

}  // namespace decision
