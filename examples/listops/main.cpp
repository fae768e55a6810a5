// listops: Flowformer on ListOps, the long-sequence task of the Long Range
// Arena, against softmax attention at the same budget.
//
//   listops train [--epochs N] [--batch B] [--layers L] [--heads H] [--embd C] [--lr LR]
//                 [--train-size N] [--test-size N] [--min-length N] [--max-length N]
//                 [--threads N] [--seed S] [--out DIR] [--resume FILE] [--attention flow|softmax]
//                 [--pooling mean|cls] [--positions N] [--init FILE]
//   listops curriculum [--stages 20-100:4:3e-3,100-500:3:1e-3] [--out runs/listops] [the flags of train
//                      other than the lengths, --epochs, --lr, --init, --resume]
//   listops bench [--lengths 500,1000,2000] [--batch B] [--attention flow,softmax] [--steps N]
//   listops show  [--count N] [--max-length N] [--seed S]
//
// train: a data set fixed by --seed (see listops_data.h), batches padded to
// their longest sequence with key/query masks, a FlowformerEncoder with mean
// pooling over the real tokens or a class token (--pooling), test accuracy
// after every epoch, log.csv and checkpoints as in
// examples/classifier_training.h. Long sequences are learnt in stages: a
// run on short sequences with a position table for the long ones
// (--positions), then a run on the long ones started from its weights
// (--init); from scratch, 100..500 tokens stay at the majority class for
// at least 3 epochs.
// curriculum: those stages in one command (stage K in DIR/stage-K); run it
// again to resume where it stopped.
// bench: seconds per training step (forward, backward, AdamW) and peak
// tensor memory at each length, full-length sequences, after a warm-up step.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>

#include "../../flowgrad.h"
#include "../common/classifier_training.h"
#include "../common/flags.h"
#include "../plot/plot.h"
#include "../common/resume_flags.h"
#include "listops_data.h"

namespace {

namespace fg = flowgrad;
namespace models = fg::models;
namespace nn = fg::nn;

struct ModelFlags {
  std::int64_t layers = 4, heads = 4, embd = 64;
  double dropout = 0.0;  // both stages of the README recipe learn best without it
  std::string attention = "flow";
  std::string pooling = "mean";  // or "cls": a class token at position 0
};

models::Pooling parse_pooling(const std::string& name) {
  if (name == "mean") return models::Pooling::Mean;
  if (name == "cls") return models::Pooling::ClassToken;
  fg::fail("listops", "--pooling must be mean or cls, got '", name, "'");
}

struct TrainOptions {
  examples::ClassifierTrainingOptions training = [] {
    examples::ClassifierTrainingOptions defaults;
    defaults.program = "listops";
    defaults.epochs = 3;
    defaults.batch = 32;
    defaults.lr = 1e-3;
    defaults.unit = "seq/s";
    defaults.eval_batch = 100;
    return defaults;
  }();
  ModelFlags model;
  std::int64_t train_size = 10000, test_size = 1000;
  std::int64_t positions = 0;  // position table; 0: --max-length
  std::string init;            // checkpoint whose model weights start a new run
  listops::GeneratorOptions data;
  int threads = 0;
  std::set<std::string> model_flags_given;
};

models::FlowformerConfig encoder_config(const ModelFlags& m, std::int64_t block_size) {
  examples::check_model_shape("listops", m.embd, m.heads);
  models::FlowformerConfig config;
  config.vocab_size = listops::kVocabSize;
  config.block_size = block_size;
  config.n_layer = m.layers;
  config.n_head = m.heads;
  config.n_embd = m.embd;
  config.dropout = m.dropout;
  config.causal = false;
  config.attention = nn::parse_attention_kind(m.attention);
  config.validate();
  return config;
}

// The data set's definition, stored in checkpoints: a resumed run must regenerate the same data.
std::string data_description(const TrainOptions& o) {
  std::ostringstream out;
  out << "train_size " << o.train_size << ", test_size " << o.test_size << ", lengths " << o.data.min_length << ".."
      << o.data.max_length << ", seed " << o.training.seed;
  return out.str();
}

int train(const TrainOptions& o) {
  const fg::dist::Communicator& comm = examples::start_process(o.threads);
  const bool resuming = !o.training.run.resume.empty();
  if (resuming && !o.init.empty())
    fg::fail("listops", "--init starts a new run from another run's weights and --resume continues a run; give one");
  const std::int64_t positions = o.positions > 0 ? o.positions : o.data.max_length;
  if (positions < o.data.max_length)
    fg::fail("listops", "--positions ", positions, " is shorter than --max-length ", o.data.max_length);
  models::FlowformerConfig config = encoder_config(o.model, positions);
  std::string pooling = o.model.pooling;
  // The model of a resumed run, or of the run --init starts from (a curriculum's earlier stage).
  const std::string& source = resuming ? o.training.run.resume : o.init;
  if (!source.empty()) {
    auto [data, stored_pooling, stored] = listops::parse_checkpoint_config(nn::read_checkpoint_info(source).config);
    if (resuming && data != data_description(o))
      fg::fail("listops", source, " was trained on another data set (", data, "); these flags give ",
               data_description(o));
    if (stored.block_size < o.data.max_length)
      fg::fail("listops", source, " has ", stored.block_size, " positions but --max-length is ", o.data.max_length,
               "; train the earlier stage with --positions ", o.data.max_length);
    examples::check_resumed_flags(
        "listops", o.model_flags_given,
        {{"--layers", std::to_string(config.n_layer), std::to_string(stored.n_layer)},
         {"--heads", std::to_string(config.n_head), std::to_string(stored.n_head)},
         {"--embd", std::to_string(config.n_embd), std::to_string(stored.n_embd)},
         {"--attention", o.model.attention, std::string(nn::attention_kind_name(stored.attention))},
         {"--pooling", o.model.pooling, stored_pooling},
         {"--positions", std::to_string(positions), std::to_string(stored.block_size)}},
        source);
    if (!resuming) stored.dropout = o.model.dropout;  // a new run's regularisation
    config = stored;
    pooling = stored_pooling;
  }
  examples::check_training_memory(
      "listops", "--layers, --embd, --positions or --max-length, --batch",
      models::FlowformerEncoder::parameter_count_for(config, 10, parse_pooling(pooling)),
      fg::checked_mul(o.training.batch, o.data.max_length, "listops", "--batch x --max-length"), config.n_layer,
      config.n_embd);
  // The data set holds at least min_length tokens per sequence, as int64.
  const double data_bytes = 8.0 * static_cast<double>(o.data.min_length) *
                            (static_cast<double>(o.train_size) + static_cast<double>(o.test_size));
  if (data_bytes > static_cast<double>(fg::available_memory_bytes()))
    fg::fail("listops", "--train-size ", o.train_size, " and --test-size ", o.test_size, " sequences of at least ",
             o.data.min_length, " tokens need more than ", fg::format_bytes(data_bytes), "; ",
             fg::format_bytes(static_cast<double>(fg::available_memory_bytes())), " of memory are available");
  const auto start = std::chrono::steady_clock::now();
  const listops::ListOpsData data(o.train_size, o.test_size, o.data, o.training.seed);
  std::int64_t tokens = 0;
  for (const auto& example : data.split(true)) tokens += static_cast<std::int64_t>(example.tokens.size());
  std::vector<std::int64_t> answers(10, 0);
  for (const auto& example : data.split(false)) ++answers[static_cast<std::size_t>(example.answer)];
  const double majority = static_cast<double>(*std::max_element(answers.begin(), answers.end())) /
                          static_cast<double>(o.test_size);
  fg::Generator init_gen(o.training.seed + 1);
  auto dropout_gen = std::make_shared<fg::Generator>(o.training.seed + 2);
  models::FlowformerEncoder model(config, 10, parse_pooling(pooling), init_gen, fg::kFloat32, dropout_gen);
  if (!o.init.empty()) nn::load_model_weights(o.init, model);
  if (comm.is_root()) {
    std::printf("listops: %lld training sequences (mean length %.0f, %lld..%lld), %lld test, generated in %.1f s; "
                "%s attention, %s pooling, %lld layers, %lld heads, width %lld, %lld parameters, %d threads%s\n",
              static_cast<long long>(o.train_size), static_cast<double>(tokens) / static_cast<double>(o.train_size),
              static_cast<long long>(o.data.min_length), static_cast<long long>(o.data.max_length),
              static_cast<long long>(o.test_size),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
              nn::attention_kind_name(config.attention).data(), pooling.c_str(), static_cast<long long>(config.n_layer),
              static_cast<long long>(config.n_head), static_cast<long long>(config.n_embd),
              static_cast<long long>(model.parameter_count()), fg::get_num_threads(), examples::ranks_note(comm).c_str());
    if (!o.init.empty()) std::printf("model weights from %s\n", o.init.c_str());
    std::printf("majority-class baseline (always the most frequent answer): %.1f %% of the test set\n",
                100.0 * majority);
  }
  return examples::train_classifier(
      model, [&](const examples::LabelledBatch& batch) { return model.forward(batch.inputs, batch.mask); },
      data.as_classification_data(), o.training, listops::checkpoint_config(data_description(o), pooling, config),
      {.per_rank = {{"dropout", dropout_gen.get()}}});
}

// One stage of a curriculum: lengths, epochs and peak learning rate.
struct Stage {
  std::int64_t min_length = 0, max_length = 0, epochs = 0;
  double lr = 0.0;
};

// "20-100:4:3e-3,100-500:3:1e-3" -> stages; anything else is an error naming the stage.
std::vector<Stage> parse_stages(const std::string& text) {
  std::vector<Stage> stages;
  if (!text.empty() && text.back() == ',') fg::fail("listops", "--stages '", text, "' ends with a comma");
  std::istringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    Stage stage;
    char dash = 0, colon1 = 0, colon2 = 0;
    std::istringstream fields(item);
    fields >> stage.min_length >> dash >> stage.max_length >> colon1 >> stage.epochs >> colon2 >> stage.lr;
    if (!fields || fields.peek() != std::char_traits<char>::eof() || dash != '-' || colon1 != ':' || colon2 != ':')
      fg::fail("listops", "--stages: '", item, "' is not MIN-MAX:EPOCHS:LR (e.g. 20-100:4:3e-3)");
    if (stage.min_length < 1 || stage.max_length < stage.min_length || stage.epochs < 1 || stage.lr < 0)
      fg::fail("listops", "--stages: '", item, "' needs 1 <= MIN <= MAX, EPOCHS >= 1 and LR >= 0");
    stages.push_back(stage);
  }
  if (stages.empty()) fg::fail("listops", "--stages is empty");
  return stages;
}

// The test accuracy of a run's last epoch, from its log.csv.
double last_test_accuracy(const std::string& log_csv) {
  const plot::Table log = plot::read_csv(log_csv);
  if (log.rows.empty()) fg::fail("listops", log_csv, " has no epoch line");
  return log.rows.back()[static_cast<std::size_t>(log.column("test_acc"))];
}

// Runs `train` once per stage in DIR/stage-K, each starting from the
// previous stage's weights, with one position table for the longest stage.
// Running the same command again resumes the unfinished stage and skips
// the finished ones.
int curriculum(const TrainOptions& base, const std::string& stages_text) {
  const bool root = examples::start_process(base.threads).is_root();  // rank 0 prints and reads the logs
  const std::vector<Stage> stages = parse_stages(stages_text);
  if (base.training.run.out.empty()) fg::fail("listops", "curriculum needs --out DIR for the stages' checkpoints");
  std::int64_t longest = 0;
  for (const Stage& stage : stages) longest = std::max(longest, stage.max_length);
  if (base.positions > 0 && base.positions < longest)
    fg::fail("listops", "--positions ", base.positions, " is shorter than the longest stage's ", longest, " tokens");
  const std::int64_t positions = std::max(base.positions, longest);
  auto stage_dir = [&](std::size_t k) { return base.training.run.out + "/stage-" + std::to_string(k + 1); };
  std::string previous;  // the last stage's checkpoint
  for (std::size_t k = 0; k < stages.size(); ++k) {
    TrainOptions o = base;
    o.data.min_length = stages[k].min_length;
    o.data.max_length = stages[k].max_length;
    o.training.epochs = stages[k].epochs;
    o.training.lr = stages[k].lr;
    o.positions = positions;
    o.training.run.out = stage_dir(k);
    const std::string checkpoint = o.training.run.out + "/checkpoint.safetensors";
    if (root) {
      std::printf("== stage %zu of %zu: lengths %lld..%lld, %lld epochs, lr %g, %s\n", k + 1, stages.size(),
                  static_cast<long long>(o.data.min_length), static_cast<long long>(o.data.max_length),
                  static_cast<long long>(o.training.epochs), o.training.lr, o.training.run.out.c_str());
      std::fflush(stdout);
    }
    // Rank 0 looks at the stage's folder and every rank follows its decision.
    enum StageState { kFresh = 0, kUnfinished = 1, kFinished = 2 };
    int state = kFresh;
    if (root && std::filesystem::exists(checkpoint) && !base.training.run.overwrite) {
      const nn::CheckpointInfo info = nn::read_checkpoint_info(checkpoint);
      if (const std::string data = listops::parse_checkpoint_config(info.config).data; data != data_description(o))
        fg::fail("listops", checkpoint, " was trained on another data set (", data, "); stage ", k + 1, " gives ",
                 data_description(o), ": use another --out");
      state = info.step >= examples::training_steps(o.train_size, o.training) ? kFinished : kUnfinished;
      if (state == kFinished)
        std::printf("finished earlier: test accuracy %.1f %%\n", 100.0 * last_test_accuracy(o.training.run.out + "/log.csv"));
    }
    state = static_cast<int>(fg::dist::Communicator::world().all_reduce(state));  // only rank 0's is non-zero
    if (state == kFinished) {
      previous = checkpoint;
      continue;
    }
    if (state == kUnfinished) {
      o.training.run.resume = checkpoint;
    } else {
      o.init = previous;
      // The stage starts afresh: what its folder holds is a log of an attempt
      // that never saved (killed early), or, with --overwrite, an older run.
      o.training.run.overwrite = true;
    }
    if (const int status = train(o); status != 0) return status;
    previous = checkpoint;
  }
  if (!root) return 0;
  std::printf("curriculum done:");
  for (std::size_t k = 0; k < stages.size(); ++k)
    std::printf(" stage %zu %.1f %%%s", k + 1,
                100.0 * last_test_accuracy(stage_dir(k) + "/log.csv"),
                k + 1 < stages.size() ? "," : "\n");
  return 0;
}

struct BenchOptions {
  std::vector<std::int64_t> lengths{500, 1000, 2000};
  std::vector<std::string> kinds{"flow", "softmax"};
  std::int64_t batch = 4, steps = 3;
  ModelFlags model;
  int threads = 0;
};

int bench(const BenchOptions& o) {
  examples::start_process(o.threads);
  if (o.batch < 1 || o.steps < 1) fg::fail("listops", "--batch and --steps must be positive");
  std::printf("training step on full-length sequences: batch %lld, %lld layers, %lld heads, width %lld, %d threads; "
              "median of %lld steps after a warm-up\n",
              static_cast<long long>(o.batch), static_cast<long long>(o.model.layers),
              static_cast<long long>(o.model.heads), static_cast<long long>(o.model.embd), fg::get_num_threads(),
              static_cast<long long>(o.steps));
  std::printf("%-8s %8s %12s %16s\n", "kind", "length", "s/step", "peak tensor MB");
  for (const std::string& kind : o.kinds) {
    for (std::int64_t length : o.lengths) {
      ModelFlags flags = o.model;
      flags.attention = kind;
      fg::Generator gen(1);
      models::FlowformerEncoder model(encoder_config(flags, length), 10, parse_pooling(flags.pooling), gen);
      nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), 0.05), nn::AdamWOptions{});
      const fg::Tensor tokens = fg::randint(1, listops::kVocabSize, {o.batch, length}, gen);
      const fg::Tensor labels = fg::randint(0, 10, {o.batch}, gen);
      std::vector<double> seconds;
      fg::reset_peak_memory();
      const std::size_t before = fg::memory_stats().current_bytes;
      for (std::int64_t step = 0; step <= o.steps; ++step) {
        const auto start = std::chrono::steady_clock::now();
        fg::Tensor loss = fg::cross_entropy(model.forward(tokens), labels);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        if (step > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::sort(seconds.begin(), seconds.end());
      const double peak_mb = static_cast<double>(fg::memory_stats().peak_bytes - before) / 1e6;
      std::printf("%-8s %8lld %12.3f %16.0f\n", kind.c_str(), static_cast<long long>(length), seconds[seconds.size() / 2],
                  peak_mb);
      std::fflush(stdout);
    }
  }
  return 0;
}

int show(std::int64_t count, const listops::GeneratorOptions& options, std::uint64_t seed) {
  fg::Generator gen(seed);
  for (std::int64_t i = 0; i < count; ++i) {
    const listops::Example example = listops::generate_example(options, gen);
    std::printf("%lld tokens, answer %lld: %s\n", static_cast<long long>(example.tokens.size()),
                static_cast<long long>(example.answer), listops::to_text(example.tokens).c_str());
  }
  return 0;
}

const CLI::Validator kCount = examples::integer_in(1, examples::kMaxCount);
const CLI::Validator kLength = examples::integer_in(3, examples::kMaxCount);  // the shortest expression, "[SM 1 2 ]", has 4

void add_model_flags(CLI::App* cmd, ModelFlags& m) {
  cmd->add_option("--layers", m.layers, "transformer blocks")->transform(kCount)->capture_default_str();
  cmd->add_option("--heads", m.heads, "attention heads (at most --embd, dividing it)")->transform(kCount)->capture_default_str();
  cmd->add_option("--embd", m.embd, "embedding width (a multiple of --heads)")->transform(kCount)->capture_default_str();
  cmd->add_option("--dropout", m.dropout, "dropout probability")->check(examples::real_in(0, 1, true))->capture_default_str();
  cmd->add_option("--pooling", m.pooling, "mean (over the real tokens) or cls (a class token)")
      ->check(CLI::IsMember({"mean", "cls"}))->capture_default_str();
}

// The flags of train and curriculum alike: model, data set size, batch, threads, seed, output.
void add_run_flags(CLI::App* cmd, TrainOptions& t) {
  add_model_flags(cmd, t.model);
  cmd->add_option("--attention", t.model.attention, "flow or softmax")
      ->check(CLI::IsMember({"flow", "softmax"}))->capture_default_str();
  cmd->add_option("--batch", t.training.batch, "sequences per step")->transform(kCount)->capture_default_str();
  cmd->add_option("--train-size", t.train_size, "training sequences")->transform(kCount)->capture_default_str();
  cmd->add_option("--test-size", t.test_size, "test sequences")->transform(kCount)->capture_default_str();
  cmd->add_option("--positions", t.positions, "position table size (default: the longest length)")->transform(kCount);
  cmd->add_option("--threads", t.threads, "threads for oneTBB and OpenBLAS (0: FLOWGRAD_NUM_THREADS or all cores)")
      ->transform(examples::thread_count());
  cmd->add_option("--seed", t.training.seed, "seed of the data set and the model")
      ->transform(examples::unsigned_value())->capture_default_str();
  cmd->add_option("--out", t.training.run.out, "directory for log.csv and checkpoint.safetensors")
      ->capture_default_str();
  cmd->add_flag("--overwrite", t.training.run.overwrite,
                "a new run may replace the checkpoint and log already in --out (otherwise refused)");
  cmd->add_flag("--allow-nonfinite", t.training.run.allow_nonfinite,
                "train on when the loss, a gradient or a parameter is NaN or infinite (otherwise an error)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"listops: Flowformer on the ListOps long-sequence task"};
  app.require_subcommand(1);
  TrainOptions t;
  auto* train_cmd = app.add_subcommand("train", "generate the data set and train a classifier");
  add_run_flags(train_cmd, t);
  train_cmd->add_option("--epochs", t.training.epochs, "passes over the training set")->transform(kCount)->capture_default_str();
  train_cmd->add_option("--lr", t.training.lr, "peak learning rate (warm-up, cosine decay)")
      ->check(examples::real_in(0, std::numeric_limits<double>::max()))->capture_default_str();
  train_cmd->add_option("--min-length", t.data.min_length, "shortest sequence")->transform(kLength)->capture_default_str();
  train_cmd->add_option("--max-length", t.data.max_length, "longest sequence")->transform(kLength)->capture_default_str();
  train_cmd->add_option("--init", t.init, "start from the model weights of this checkpoint (new optimiser and schedule)");
  train_cmd->add_option("--resume", t.training.run.resume, "checkpoint to continue from");
  train_cmd->add_option("--stop-at-epoch", t.training.stop_at_epoch, "stop (and save) after this epoch")->transform(kCount);

  TrainOptions c;
  c.training.run.out = "runs/listops";
  std::string stages = "20-100:4:3e-3,100-500:3:1e-3";
  auto* curriculum_cmd = app.add_subcommand(
      "curriculum", "train in stages of growing length, each from the last one's weights (run again to resume)");
  add_run_flags(curriculum_cmd, c);
  curriculum_cmd->add_option("--stages", stages, "MIN-MAX:EPOCHS:LR,... in order")->capture_default_str();

  BenchOptions b;
  auto* bench_cmd = app.add_subcommand("bench", "time and memory of a training step per sequence length");
  add_model_flags(bench_cmd, b.model);
  bench_cmd->add_option("--lengths", b.lengths, "sequence lengths")->delimiter(',')->transform(kCount)->capture_default_str();
  bench_cmd->add_option("--attention", b.kinds, "kinds to time")->delimiter(',')
      ->check(CLI::IsMember({"flow", "softmax"}))->capture_default_str();
  bench_cmd->add_option("--batch", b.batch, "sequences per step")->transform(kCount)->capture_default_str();
  bench_cmd->add_option("--steps", b.steps, "timed steps")->transform(kCount)->capture_default_str();
  bench_cmd->add_option("--threads", b.threads, "threads (0: default)")->transform(examples::thread_count());

  std::int64_t count = 3;
  listops::GeneratorOptions show_options;
  show_options.min_length = 10;
  show_options.max_length = 60;
  std::uint64_t show_seed = 1;
  auto* show_cmd = app.add_subcommand("show", "print a few generated expressions and their answers");
  show_cmd->add_option("--count", count)->transform(examples::integer_in(0, examples::kMaxCount))->capture_default_str();
  show_cmd->add_option("--min-length", show_options.min_length)->transform(kLength)->capture_default_str();
  show_cmd->add_option("--max-length", show_options.max_length)->transform(kLength)->capture_default_str();
  show_cmd->add_option("--seed", show_seed)->transform(examples::unsigned_value())->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    for (auto [cmd, options] : {std::pair{train_cmd, &t}, std::pair{curriculum_cmd, &c}})
      for (const char* flag : {"--layers", "--heads", "--embd", "--attention", "--pooling", "--positions"})
        if (cmd->count(flag) > 0) options->model_flags_given.insert(flag);
    if (train_cmd->parsed()) return train(t);
    if (curriculum_cmd->parsed()) return curriculum(c, stages);
    if (bench_cmd->parsed()) return bench(b);
    return show(count, show_options, show_seed);
  } catch (const std::exception& error) {
    examples::report_and_exit("listops", error);
  }
}
