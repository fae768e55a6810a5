#include "targets.h"

#include <cmath>
#include <stdexcept>

#include "../../examples/charlm/char_data.h"
#include "../../examples/listops/listops_data.h"
#include "../../examples/plot/plot.h"
#include "../../flowgrad.h"

namespace fuzz {

namespace {

namespace fg = flowgrad;
namespace models = fg::models;
namespace nn = fg::nn;

// Models above this size that would still fit in memory are skipped: they
// would only slow the fuzzer. Larger ones go to the constructors, which
// refuse them before allocating anything.
constexpr double kMaxParameters = 1e5;

bool worth_building(double parameters) {
  return parameters <= kMaxParameters ||
         parameters * 4.0 > static_cast<double>(fg::available_memory_bytes());
}

bool safetensors(std::string_view bytes) {
  try {
    fg::parse_safetensors(bytes, "fuzz.safetensors");
    return true;
  } catch (const fg::Error&) {
    return false;
  }
}

bool npy(std::string_view bytes) {
  try {
    fg::parse_npy(bytes, "fuzz.npy");
    return true;
  } catch (const fg::Error&) {
    return false;
  }
}

// Read, then used as fashion uses its data: every item gathered.
bool idx(std::string_view bytes) {
  try {
    const fg::IdxArray array = fg::parse_idx(bytes, "fuzz.idx");
    std::vector<std::int64_t> last(static_cast<std::size_t>(std::min<std::int64_t>(array.items(), 64)));
    for (std::size_t i = 0; i < last.size(); ++i) last[i] = array.items() - 1 - static_cast<std::int64_t>(i);
    array.gather(last, fg::kFloat32);
    array.to_tensor(fg::kInt64);
    return true;
  } catch (const fg::Error&) {
    return false;
  }
}

// Loads a checkpoint into the model its configuration describes, as each
// program would: everything the file says is checked before it is used.
template <class Model>
bool load_into(const fg::SafetensorsFile& file, Model& model, const std::vector<std::string>& generator_names) {
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), 0.1), nn::AdamWOptions{});
  std::map<std::string, fg::Generator> generators;
  std::map<std::string, fg::Generator*> rngs;
  for (const std::string& name : generator_names) rngs[name] = &generators[name];
  nn::load_checkpoint(file, "fuzz.safetensors", model, optimizer, rngs);
  // The programs refuse to resume a state holding NaN or infinity.
  return !nn::find_nonfinite(nn::training_state(model, optimizer));
}

bool checkpoint(std::string_view bytes) {
  fg::SafetensorsFile file;
  nn::CheckpointInfo info;
  try {
    file = fg::parse_safetensors(bytes, "fuzz.safetensors");
    info = nn::read_checkpoint_info(file, "fuzz.safetensors");
  } catch (const fg::Error&) {
    return false;
  }
  fg::Generator init(1);
  bool loaded = false;
  try {  // charlm
    const models::CharLMConfig config = models::CharLMConfig::from_json(info.config);
    if (worth_building(models::FlowformerLM::parameter_count_for(config.model))) {
      models::FlowformerLM model(config.model, init);
      loaded = load_into(file, model, {"data", "dropout", "eval"});
    }
  } catch (const fg::Error&) {
  }
  try {  // fashion
    const auto config = models::ImageClassifierConfig::from_json(info.config);
    if (worth_building(models::FlowformerImageClassifier::parameter_count_for(config))) {
      models::FlowformerImageClassifier model(config, init);
      loaded = load_into(file, model, {"dropout"}) || loaded;
    }
  } catch (const fg::Error&) {
  }
  try {  // timeseries
    const auto config = models::SeriesClassifierConfig::from_json(info.config);
    if (worth_building(models::FlowformerSeriesClassifier::parameter_count_for(config))) {
      models::FlowformerSeriesClassifier model(config, init);
      loaded = load_into(file, model, {"dropout"}) || loaded;
    }
  } catch (const fg::Error&) {
  }
  try {  // decision
    const auto config = models::DecisionConfig::from_json(info.config);
    if (worth_building(models::DecisionFlowformer::parameter_count_for(config))) {
      models::DecisionFlowformer model(config, init);
      loaded = load_into(file, model, {"data", "dropout"}) || loaded;
    }
  } catch (const fg::Error&) {
  }
  try {  // listops
    const listops::CheckpointConfig config = listops::parse_checkpoint_config(info.config);
    const auto pooling = config.pooling == "cls" ? models::Pooling::ClassToken : models::Pooling::Mean;
    if (worth_building(models::FlowformerEncoder::parameter_count_for(config.encoder, 10, pooling))) {
      models::FlowformerEncoder model(config.encoder, 10, pooling, init);
      loaded = load_into(file, model, {"dropout"}) || loaded;
    }
  } catch (const fg::Error&) {
  }
  return loaded;
}

// Read, then every value visited as the timeseries program batches them;
// what the reader promises is checked (a broken promise aborts the fuzzer).
bool ts(std::string_view bytes) {
  fg::TsDataset data;
  try {
    data = fg::parse_ts(bytes, "fuzz.ts");
  } catch (const fg::Error&) {
    return false;
  }
  for (std::int64_t i = 0; i < data.cases(); ++i)
    for (std::int64_t t = 0; t < data.lengths[static_cast<std::size_t>(i)]; ++t)
      for (std::int64_t d = 0; d < data.dimensions; ++d)
        if (std::isnan(data.value(i, t, d)) && !data.missing)
          throw std::logic_error("parse_ts returned a missing value from a file with @missing false");
  for (std::int64_t label : data.labels)
    if (label < 0 || label >= static_cast<std::int64_t>(data.class_labels.size()))
      throw std::logic_error("parse_ts returned a label outside its list");
  return true;
}

bool csv(std::string_view bytes) {
  try {
    const plot::Table table = plot::parse_csv(bytes, "fuzz.csv");
    table.column(table.columns.back());
    return true;
  } catch (const std::runtime_error& error) {
    if (std::string_view(error.what()).rfind("[plot]", 0) != 0) throw;
    return false;
  }
}

}  // namespace

const std::map<std::string, Target>& targets() {
  static const std::map<std::string, Target> all{
      {"safetensors", safetensors}, {"npy", npy}, {"idx", idx}, {"checkpoint", checkpoint}, {"csv", csv}, {"ts", ts}};
  return all;
}

}  // namespace fuzz
