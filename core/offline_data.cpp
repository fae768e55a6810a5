#include "offline_data.h"

#include <cmath>
#include <filesystem>
#include <system_error>

#include "error.h"
#include "serialize.h"

namespace flowgrad {

namespace {

constexpr const char* kFields[] = {"observations", "actions", "rewards", "terminals", "timeouts"};

// Fails unless every value of a floating tensor is finite, naming the row.
void check_finite(const std::string& op, const std::string& where, const char* field, const Tensor& t) {
  const std::vector<double> values = t.to(kFloat64).contiguous().to_vector<double>();
  const std::int64_t per_row = t.dim() > 1 ? t.size(1) : 1;
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      fail(op, "'", where, "': ", field, " row ", static_cast<std::int64_t>(i) / per_row, " holds ", values[i]);
}

}  // namespace

void OfflineDataset::validate(const std::string& op, const std::string& where) const {
  const Tensor* fields[] = {&observations, &actions, &rewards, &terminals, &timeouts};
  for (int f = 0; f < 5; ++f)
    if (!fields[f]->defined()) fail(op, "'", where, "': ", kFields[f], " is missing");
  auto expect = [&](const char* field, const Tensor& t, bool ok, const char* what) {
    if (!ok) fail(op, "'", where, "': ", field, " must be ", what, ", got ", dtype_name(t.dtype()), " ", shape_str(t.shape()));
  };
  expect("observations", observations, observations.dtype() == kFloat32 && observations.dim() == 2 && observations.size(1) > 0,
         "float [N, state_dim] with state_dim >= 1");
  expect("actions", actions,
         (actions.dtype() == kFloat32 && actions.dim() == 2 && actions.size(1) > 0) ||
             (actions.dtype() == kInt64 && actions.dim() == 1),
         "float [N, action_dim] (continuous) or int64 [N] (discrete)");
  expect("rewards", rewards, rewards.dtype() == kFloat32 && rewards.dim() == 1, "float [N]");
  expect("terminals", terminals, terminals.dtype() == kInt64 && terminals.dim() == 1, "bool or int64 [N]");
  expect("timeouts", timeouts, timeouts.dtype() == kInt64 && timeouts.dim() == 1, "bool or int64 [N]");
  const std::int64_t n = observations.size(0);
  for (int f = 1; f < 5; ++f)
    if (fields[f]->size(0) != n)
      fail(op, "'", where, "': observations has ", n, " rows but ", kFields[f], " has ", fields[f]->size(0));
  if (n == 0) fail(op, "'", where, "': the data holds no transition");
  check_finite(op, where, "observations", observations);
  check_finite(op, where, "rewards", rewards);
  if (discrete()) {
    const std::vector<std::int64_t> ids = actions.contiguous().to_vector<std::int64_t>();
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0) fail(op, "'", where, "': actions row ", i, " is the action id ", ids[i], " (ids start at 0)");
  } else {
    check_finite(op, where, "actions", actions);
  }
  for (const auto& [field, flags] : {std::pair{"terminals", &terminals}, std::pair{"timeouts", &timeouts}}) {
    const std::vector<std::int64_t> values = flags->contiguous().to_vector<std::int64_t>();
    for (std::size_t i = 0; i < values.size(); ++i)
      if (values[i] != 0 && values[i] != 1)
        fail(op, "'", where, "': ", field, " row ", i, " is ", values[i], ", not 0 or 1");
  }
}

std::vector<OfflineEpisode> OfflineDataset::episodes() const {
  const std::vector<std::int64_t> ends = terminals.contiguous().to_vector<std::int64_t>();
  const std::vector<std::int64_t> cuts = timeouts.contiguous().to_vector<std::int64_t>();
  std::vector<OfflineEpisode> out;
  std::int64_t start = 0;
  for (std::int64_t i = 0; i < size(); ++i)
    if (ends[i] || cuts[i] || i + 1 == size()) {
      out.push_back({start, i + 1 - start, ends[i] != 0});
      start = i + 1;
    }
  return out;
}

std::vector<double> OfflineDataset::episode_returns() const {
  const std::vector<double> r = rewards.to(kFloat64).contiguous().to_vector<double>();
  std::vector<double> returns;
  for (const OfflineEpisode& episode : episodes()) {
    double total = 0;
    for (std::int64_t i = episode.start; i < episode.start + episode.length; ++i) total += r[i];
    returns.push_back(total);
  }
  return returns;
}

OfflineDataset read_offline_data(const std::string& dir) {
  constexpr const char* op = "read_offline_data";
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error))
    fail(op, "'", dir, "': not a directory (expected one holding observations.npy, actions.npy, rewards.npy, "
         "terminals.npy and timeouts.npy)");
  Tensor fields[5];
  for (int f = 0; f < 5; ++f) {
    const std::string path = (std::filesystem::path(dir) / (std::string(kFields[f]) + ".npy")).string();
    if (!std::filesystem::exists(path, error))
      fail(op, "'", dir, "': ", kFields[f], ".npy is missing (D4RL's fields: observations, actions, rewards, "
           "terminals, timeouts)");
    fields[f] = load_npy(path);  // its errors name the file
  }
  OfflineDataset data;
  // float64 values become float32 (the model's type); discrete actions stay int64.
  auto as_float = [&](int f) {
    const Tensor& t = fields[f];
    if (t.dtype() != kFloat64) return t;
    check_finite(op, dir, kFields[f], t);
    const Tensor converted = t.to(kFloat32);
    const std::vector<float> values = converted.contiguous().to_vector<float>();
    const std::int64_t per_row = t.dim() > 1 ? t.size(1) : 1;
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i]))
        fail(op, "'", dir, "': ", kFields[f], " row ", static_cast<std::int64_t>(i) / per_row,
             " holds a value beyond float32's range");
    return converted;
  };
  data.observations = as_float(0);
  data.actions = as_float(1);
  data.rewards = as_float(2);
  data.terminals = fields[3];
  data.timeouts = fields[4];
  data.validate(op, dir);
  return data;
}

void write_offline_data(const std::string& dir, const OfflineDataset& data) {
  data.validate("write_offline_data", dir);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) fail("write_offline_data", "'", dir, "': cannot create the directory: ", error.message());
  auto path = [&](const char* field) { return (std::filesystem::path(dir) / (std::string(field) + ".npy")).string(); };
  save_npy(path("observations"), data.observations);
  save_npy(path("actions"), data.actions);
  save_npy(path("rewards"), data.rewards);
  save_npy_bools(path("terminals"), data.terminals);
  save_npy_bools(path("timeouts"), data.timeouts);
}

}  // namespace flowgrad
