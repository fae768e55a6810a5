// timeseries: Flowformer classifying multivariate time series, the paper's
// UEA experiments on CPU.
//
//   timeseries train --data DIR --problem NAME [--epochs N] [--batch B] [--layers L] [--heads H]
//                    [--embd C] [--dropout P] [--lr LR] [--attention flow|softmax] [--threads N]
//                    [--seed S] [--out DIR] [--resume FILE] [--stop-at-epoch E]
//   timeseries generate --out DIR [--problem NAME] [--classes K] [--channels C] [--length L]
//                    [--train N] [--test N] [--unequal] [--missing P] [--seed S]
//
// train reads DIR/NAME/NAME_TRAIN.ts and NAME_TEST.ts (the archive's
// layout), standardises each channel with the training split's statistics
// (missing values become the channel's mean, see ts_data.h), embeds every
// time step linearly, adds learned positions, runs a non-causal
// FlowformerEncoder with padding masked out, and classifies the mean over
// the real steps. Test accuracy after every epoch; DIR/log.csv and
// DIR/checkpoint.safetensors (see examples/common/classifier_training.h).
// The defaults are the reference implementation's UEA settings (3 layers,
// 8 heads, width 512, dropout 0.1, batch 16, learning rate 1e-3, 100 epochs).
//
// generate writes a synthetic problem in the same layout (ts_data.h), so
// that the program runs without the archive.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <limits>
#include <set>

#include "../../flowgrad.h"
#include "../common/classifier_training.h"
#include "../common/flags.h"
#include "../common/resume_flags.h"
#include "ts_data.h"

namespace {

namespace fg = flowgrad;
namespace models = fg::models;
namespace nn = fg::nn;

struct TrainOptions {
  examples::ClassifierTrainingOptions training = [] {
    examples::ClassifierTrainingOptions defaults;
    defaults.program = "timeseries";
    defaults.epochs = 100;
    defaults.batch = 16;
    defaults.lr = 1e-3;
    defaults.weight_decay = 0.0;
    defaults.unit = "series/s";
    return defaults;
  }();
  std::int64_t layers = 3, heads = 8, embd = 512;
  double dropout = 0.1;
  std::string attention = "flow", data, problem;
  int threads = 0;
  std::set<std::string> model_flags_given;
};

models::SeriesClassifierConfig config_from_flags(const TrainOptions& o, const timeseries::UeaProblem& problem) {
  models::FlowformerConfig encoder;
  encoder.n_layer = o.layers;
  encoder.n_head = o.heads;
  encoder.n_embd = o.embd;
  encoder.dropout = o.dropout;
  encoder.attention = nn::parse_attention_kind(o.attention);
  examples::check_model_shape("timeseries", o.embd, o.heads);
  return models::series_classifier_config(problem.channels(), problem.max_length(), problem.num_classes(), encoder,
                                          problem.class_labels());
}

// "a, b, c" (the first few of a long list).
std::string label_list(const std::vector<std::string>& labels) {
  std::string text;
  for (std::size_t i = 0; i < labels.size() && i < 8; ++i) text += (i ? ", " : "") + fg::excerpt(labels[i], 40);
  return labels.size() > 8 ? text + ", ... (" + std::to_string(labels.size()) + ")" : text;
}

// The checkpoint's model; a model flag typed with another value is a mistake,
// and the data must fit the model.
models::SeriesClassifierConfig resumed_config(const TrainOptions& o, const timeseries::UeaProblem& problem) {
  const std::string& checkpoint = o.training.run.resume;
  const auto stored = models::SeriesClassifierConfig::from_json(nn::read_checkpoint_info(checkpoint).config);
  examples::check_resumed_flags(
      "timeseries", o.model_flags_given,
      {{"--layers", std::to_string(o.layers), std::to_string(stored.encoder.n_layer)},
       {"--heads", std::to_string(o.heads), std::to_string(stored.encoder.n_head)},
       {"--embd", std::to_string(o.embd), std::to_string(stored.encoder.n_embd)},
       {"--attention", o.attention, std::string(nn::attention_kind_name(stored.encoder.attention))}},
      checkpoint);
  if (stored.channels != problem.channels() || stored.class_labels != problem.class_labels() ||
      stored.max_length < problem.max_length())
    fg::fail("timeseries", "the model of ", checkpoint, " takes ", stored.channels, " channels, the classes ",
             label_list(stored.class_labels), " and series of up to ", stored.max_length, " steps; problem ", o.problem,
             " has ", problem.channels(), " channels, the classes ", label_list(problem.class_labels()),
             " and series of up to ", problem.max_length(), " steps");
  return stored;
}

int train(TrainOptions o) {
  // Evaluation batches as large as training ones: series can be thousands of steps long.
  o.training.eval_batch = o.training.batch;
  const fg::dist::Communicator& comm = examples::start_process(o.threads);
  const timeseries::UeaProblem problem(o.data, o.problem);
  const models::SeriesClassifierConfig config =
      o.training.run.resume.empty() ? config_from_flags(o, problem) : resumed_config(o, problem);
  examples::check_training_memory(
      "timeseries", "--layers, --embd, --batch", models::FlowformerSeriesClassifier::parameter_count_for(config),
      fg::checked_mul(o.training.batch, problem.max_length(), "timeseries", "--batch x series length"),
      config.encoder.n_layer, config.encoder.n_embd);

  fg::Generator init_gen(o.training.seed);
  auto dropout_gen = std::make_shared<fg::Generator>(o.training.seed + 1);
  models::FlowformerSeriesClassifier model(config, init_gen, fg::kFloat32, dropout_gen);
  const examples::ClassificationData data = problem.as_classification_data();
  if (comm.is_root())
    std::printf("timeseries: %s, %lld training and %lld test series of %lld channels, up to %lld steps, %lld classes "
                "(majority class: %.1f%% of the test split); %s attention, %lld layers, %lld heads, width %lld, "
                "%lld parameters, %d threads%s\n",
                o.problem.c_str(), static_cast<long long>(data.train_size), static_cast<long long>(data.test_size),
                static_cast<long long>(problem.channels()), static_cast<long long>(problem.max_length()),
                static_cast<long long>(problem.num_classes()), 100 * problem.majority_test_accuracy(),
                nn::attention_kind_name(config.encoder.attention).data(), static_cast<long long>(config.encoder.n_layer),
                static_cast<long long>(config.encoder.n_head), static_cast<long long>(config.encoder.n_embd),
                static_cast<long long>(model.parameter_count()), fg::get_num_threads(), examples::ranks_note(comm).c_str());
  return examples::train_classifier(
      model, [&](const examples::LabelledBatch& batch) { return model.forward(batch.inputs, batch.mask); }, data,
      o.training, config.to_json(), {.per_rank = {{"dropout", dropout_gen.get()}}});
}

int generate(const timeseries::SyntheticOptions& o) {
  timeseries::write_synthetic_problem(o);
  std::printf("wrote %s/%s/%s_TRAIN.ts (%lld series) and %s_TEST.ts (%lld series): %lld classes, %lld channels, "
              "length %s%lld\n",
              o.dir.c_str(), o.problem.c_str(), o.problem.c_str(), static_cast<long long>(o.train), o.problem.c_str(),
              static_cast<long long>(o.test), static_cast<long long>(o.classes), static_cast<long long>(o.channels),
              o.unequal ? "up to " : "", static_cast<long long>(o.length));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"timeseries: Flowformer on multivariate time series (UEA .ts files)"};
  app.require_subcommand(1);
  const CLI::Validator count = examples::integer_in(1, examples::kMaxCount);
  const CLI::Validator positive_real = examples::real_in(0, std::numeric_limits<double>::max());

  TrainOptions t;
  auto* train_cmd = app.add_subcommand("train", "train a classifier on DIR/NAME/NAME_TRAIN.ts, test on NAME_TEST.ts");
  train_cmd->add_option("--data", t.data, "directory holding one directory per problem (the archive's layout)")->required();
  train_cmd->add_option("--problem", t.problem, "problem name, e.g. JapaneseVowels")->required();
  train_cmd->add_option("--epochs", t.training.epochs, "passes over the training set")->transform(count)->capture_default_str();
  train_cmd->add_option("--batch", t.training.batch, "series per step")->transform(count)->capture_default_str();
  train_cmd->add_option("--layers", t.layers, "transformer blocks")->transform(count)->capture_default_str();
  train_cmd->add_option("--heads", t.heads, "attention heads (at most --embd, dividing it)")->transform(count)->capture_default_str();
  train_cmd->add_option("--embd", t.embd, "embedding width (a multiple of --heads)")->transform(count)->capture_default_str();
  train_cmd->add_option("--dropout", t.dropout, "dropout probability")->check(examples::real_in(0, 1, true))->capture_default_str();
  train_cmd->add_option("--lr", t.training.lr, "peak learning rate (warm-up, cosine decay)")->check(positive_real)->capture_default_str();
  train_cmd->add_option("--weight-decay", t.training.weight_decay, "AdamW decay of matrix weights")
      ->check(examples::real_in(0, std::numeric_limits<double>::max()))->capture_default_str();
  train_cmd->add_option("--attention", t.attention, "flow or softmax")->check(CLI::IsMember({"flow", "softmax"}))->capture_default_str();
  train_cmd->add_option("--threads", t.threads, "threads for oneTBB and OpenBLAS (0: FLOWGRAD_NUM_THREADS or all cores)")
      ->transform(examples::thread_count());
  train_cmd->add_option("--seed", t.training.seed, "random seed")->transform(examples::unsigned_value())->capture_default_str();
  examples::add_run_flags(train_cmd, t.training.run);
  train_cmd->add_option("--stop-at-epoch", t.training.stop_at_epoch, "stop (and save) after this epoch")->transform(count);

  timeseries::SyntheticOptions g;
  auto* generate_cmd = app.add_subcommand("generate", "write a synthetic problem as DIR/NAME/NAME_TRAIN.ts and _TEST.ts");
  generate_cmd->add_option("--out", g.dir, "directory to write the problem's directory into")->required();
  generate_cmd->add_option("--problem", g.problem, "problem name")->capture_default_str();
  generate_cmd->add_option("--classes", g.classes, "classes, 2 to 8")->transform(examples::integer_in(2, 8))->capture_default_str();
  generate_cmd->add_option("--channels", g.channels, "values per time step (2 or more: classes differ by their phase relation)")->transform(examples::integer_in(2, 4096))->capture_default_str();
  generate_cmd->add_option("--length", g.length, "time steps (the longest, with --unequal)")->transform(examples::integer_in(4, 1 << 20))->capture_default_str();
  generate_cmd->add_option("--train", g.train, "training series")->transform(examples::integer_in(1, 1 << 24))->capture_default_str();
  generate_cmd->add_option("--test", g.test, "test series")->transform(examples::integer_in(1, 1 << 24))->capture_default_str();
  generate_cmd->add_flag("--unequal", g.unequal, "lengths drawn from [length/2, length]");
  generate_cmd->add_option("--missing", g.missing, "probability of a missing value '?'")->check(examples::real_in(0, 1, true))->capture_default_str();
  generate_cmd->add_option("--noise", g.noise, "standard deviation of the added noise")->check(examples::real_in(0, 100))->capture_default_str();
  generate_cmd->add_option("--seed", g.seed, "random seed")->transform(examples::unsigned_value())->capture_default_str();
  generate_cmd->add_flag("--overwrite", g.overwrite, "replace existing files");
  CLI11_PARSE(app, argc, argv);
  try {
    if (train_cmd->parsed()) {
      for (const char* flag : {"--layers", "--heads", "--embd", "--attention"})
        if (train_cmd->count(flag) > 0) t.model_flags_given.insert(flag);
      return train(t);
    }
    return generate(g);
  } catch (const std::exception& error) {
    examples::report_and_exit("timeseries", error);
  }
}
