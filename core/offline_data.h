// Offline reinforcement-learning data in D4RL's layout: one directory holding
// one .npy file per field, the arrays D4RL's get_dataset() returns (and what
// np.save of them writes), transitions in order, episode after episode:
//
//   observations.npy  float [N, state_dim]
//   actions.npy       float [N, action_dim], or int64 [N] for discrete actions
//   rewards.npy       float [N]
//   terminals.npy     bool [N]: the episode ended in a terminal state
//   timeouts.npy      bool [N]: the episode was cut at its time limit
//
// An episode ends after a transition whose terminal or timeout flag is set;
// transitions after the last flag form a final, cut-off episode (D4RL's data
// sets often end that way). float64 arrays are read into float32; bool
// arrays may also be int64 0/1.
//
// The files are untrusted: a missing field, a wrong dtype or rank, row
// counts that disagree, a non-finite value or a flag that is not 0 or 1 is
// an error "[read_offline_data] 'DIR': reason" naming the field (and the row).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor.h"

namespace flowgrad {

struct OfflineEpisode {
  std::int64_t start = 0, length = 0;  // transitions [start, start + length)
  bool terminal = false;               // ended in a terminal state (not a timeout or the data's end)
};

struct OfflineDataset {
  Tensor observations;  // float32 [N, state_dim]
  Tensor actions;       // float32 [N, action_dim] or int64 [N]
  Tensor rewards;       // float32 [N]
  Tensor terminals;     // int64 [N], 0 or 1
  Tensor timeouts;      // int64 [N], 0 or 1

  std::int64_t size() const { return rewards.defined() ? rewards.size(0) : 0; }
  std::int64_t state_dim() const { return observations.size(1); }
  bool discrete() const { return actions.dim() == 1; }
  // Values per action row: action_dim for continuous actions, 1 (the id) for discrete ones.
  std::int64_t action_width() const { return discrete() ? 1 : actions.size(1); }
  // The episodes, in order (see the file comment).
  std::vector<OfflineEpisode> episodes() const;
  // Each episode's undiscounted return (sum of its rewards), in float64.
  std::vector<double> episode_returns() const;
  // Checks everything the file comment lists; `where` names the data in messages.
  void validate(const std::string& op, const std::string& where) const;
};

OfflineDataset read_offline_data(const std::string& dir);
// Writes the five fields into `dir` (created if missing; existing files are
// replaced atomically), terminals and timeouts as NumPy bools ('|b1'), the
// rest as they are. Validates first.
void write_offline_data(const std::string& dir, const OfflineDataset& data);

}  // namespace flowgrad
