// charlm: a character-level Flowformer language model on Tiny Shakespeare.
//
//   charlm train  [--steps N] [--batch B] [--block T] [--layers L] [--heads H] [--embd C]
//                 [--lr LR] [--warmup N] [--lr-schedule cosine|constant] [--threads N]
//                 [--seed S] [--out DIR] [--resume FILE]
//                 [--attention flow|softmax] [--eval-every N] ...
//   charlm sample --checkpoint FILE [--prompt TEXT] [--chars N] [--temperature T] [--top-k K]
//   charlm logits --checkpoint FILE --prompt TEXT --out FILE.safetensors [--dtype float32|float64]
//
// Training prints a progress line (step, loss, tokens/s, model FLOPs
// utilisation against this machine's measured sgemm rate, ETA), the
// validation loss every --eval-every steps, and under --out DIR writes
// DIR/log.csv and checkpoints (DIR/checkpoint.safetensors, every
// --save-every steps, at the end, and on Ctrl-C after finishing the step).
// A checkpoint holds the model, the AdamW state, the step, both random
// generators and the configuration, so --resume continues exactly as if the
// run had never stopped (at the same thread count).
//
// `logits` writes the model's logits for every position of the prompt
// ("logits" [T, vocab], "tokens" int64 [T]; eval mode, one full forward),
// for comparisons with other implementations (interop_check.py).
#include <CLI/CLI.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <tuple>

#include "../../flowgrad.h"
#include "../common/flags.h"
#include "../common/progress.h"
#include "../common/resume_flags.h"
#include "../common/trainer.h"
#include "char_data.h"

namespace {

namespace models = fg::models;
namespace nn = fg::nn;

struct TrainOptions {
  std::string data = CHARLM_DEFAULT_DATA;  // the copy in examples/data/ of the source tree
  std::int64_t steps = 2000;
  std::int64_t batch = 64;
  std::int64_t block = 128;
  std::int64_t layers = 6, heads = 6, embd = 192;
  double dropout = 0.1;
  double lr = 5e-4, min_lr_ratio = 0.1, weight_decay = 0.1, grad_clip = 1.0;
  std::int64_t warmup = 100;
  std::string lr_schedule = "cosine";  // or "constant": --lr after the warm-up (the chargpt recipe)
  int threads = 0;  // 0: FLOWGRAD_NUM_THREADS or all cores
  std::uint64_t seed = 1337;
  examples::RunOptions run;  // --out, --resume, --overwrite, --allow-nonfinite
  std::string attention = "flow";
  std::int64_t eval_every = 100, eval_batches = 8, save_every = 500, sample_chars = 300;
  std::int64_t stop_at = 0;  // stop (and save) after this step; 0: run to --steps
  std::set<std::string> model_flags_given;  // which model-shape flags the user typed
};

struct SampleOptions {
  std::string checkpoint, prompt = "\n";
  std::int64_t chars = 500, top_k = 0;
  double temperature = 0.8;
  bool greedy = false;
  std::uint64_t seed = 0;
  int threads = 0;
};

struct LogitsOptions {
  std::string checkpoint, prompt, out, dtype = "float32";
  int threads = 0;
};

// The `count` characters that follow `context` (see models::TokenStream).
std::vector<std::int64_t> generate_text(const models::FlowformerLM& model, const std::vector<std::int64_t>& context,
                                        std::int64_t count, const models::SamplingOptions& sampling,
                                        const fg::Generator& gen) {
  std::vector<std::int64_t> generated;
  if (count <= 0) return generated;
  models::TokenStream stream(model, context, sampling, gen);
  while (static_cast<std::int64_t>(generated.size()) < count) generated.push_back(stream.next());
  return generated;
}

// ---- training ----

// Entropy (nats) of the character frequencies of the training split: the
// loss of the best model that ignores context.
double unigram_entropy(const charlm::Dataset& data, const charlm::Vocabulary& vocab) {
  std::vector<double> counts(static_cast<std::size_t>(vocab.size()), 0.0);
  for (std::int64_t id : data.ids(true)) counts[static_cast<std::size_t>(id)] += 1;
  const auto total = static_cast<double>(data.size(true));
  double entropy = 0;
  for (double c : counts)
    if (c > 0) entropy -= c / total * std::log(c / total);
  return entropy;
}

// The mean loss over `batches` batches of the split; with several ranks each
// takes its rows of every batch, and the means are averaged over the ranks.
double estimate_loss(const models::FlowformerLM& model, const charlm::Dataset& data, bool train,
                     std::int64_t batches, std::int64_t batch, std::int64_t block, fg::Generator& gen,
                     const examples::Trainer& trainer) {
  fg::NoGradGuard no_grad;
  const auto [first, rows] = trainer.shard(batch);
  double total = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    charlm::Batch b = data.sample(train, batch, block, gen, first, rows);
    total += model.loss(b.tokens, b.targets).item<double>();
  }
  return trainer.comm().all_reduce(total) / static_cast<double>(batches * trainer.comm().size());
}

std::string log_row(std::int64_t step, double train_loss, double val_loss, double tokens_per_second, double mfu) {
  std::ostringstream row;
  row << std::setprecision(9) << step << ',' << train_loss << ',';  // 9 digits: float32 exactly
  if (!std::isnan(val_loss)) row << val_loss;
  row << ',' << tokens_per_second << ',' << std::setprecision(3) << mfu;
  return row.str();
}

int train(const TrainOptions& o) {
  examples::start_process(o.threads);
  const std::string text = charlm::read_text_file(o.data);
  const charlm::Vocabulary vocab(text);
  const charlm::Dataset data(text, vocab);

  models::FlowformerConfig config;
  config.vocab_size = vocab.size();
  config.block_size = o.block;
  config.n_layer = o.layers;
  config.n_head = o.heads;
  config.n_embd = o.embd;
  config.dropout = o.dropout;
  config.causal = true;
  config.attention = nn::parse_attention_kind(o.attention);
  if (!o.run.resume.empty()) {
    // The model is the checkpoint's; a model flag typed with another value is a mistake.
    auto [stored, stored_vocab] = models::CharLMConfig::from_json(nn::read_checkpoint_info(o.run.resume).config);
    if (stored_vocab.chars() != vocab.chars())
      fg::fail("charlm", "the checkpoint ", o.run.resume, " was trained on a different character set than ", o.data);
    examples::check_resumed_flags(
        "charlm", o.model_flags_given,
        {{"--block", std::to_string(config.block_size), std::to_string(stored.block_size)},
         {"--layers", std::to_string(config.n_layer), std::to_string(stored.n_layer)},
         {"--heads", std::to_string(config.n_head), std::to_string(stored.n_head)},
         {"--embd", std::to_string(config.n_embd), std::to_string(stored.n_embd)},
         {"--attention", o.attention, std::string(nn::attention_kind_name(stored.attention))}},
        o.run.resume);
    config = stored;
  } else {
    examples::check_model_shape("charlm", config.n_embd, config.n_head);
  }
  config.validate();
  for (const bool train_split : {true, false})
    if (data.size(train_split) <= config.block_size)
      fg::fail("charlm", "--data ", o.data, " has ", text.size(), " characters; its ",
               train_split ? "90 % training" : "10 % validation", " split of ", data.size(train_split),
               " is too short for --block ", config.block_size, " (it needs more than that many characters)");
  const std::int64_t tokens_per_step = fg::checked_mul(o.batch, config.block_size, "charlm", "--batch x --block");
  examples::check_training_memory("charlm", "--layers, --embd, --block, --batch", models::FlowformerLM::parameter_count_for(config),
                                  tokens_per_step, config.n_layer, config.n_embd);

  fg::Generator init_gen(o.seed), data_gen(o.seed + 1);
  auto dropout_gen = std::make_shared<fg::Generator>(o.seed + 2);
  models::FlowformerLM model(config, init_gen, fg::kFloat32, dropout_gen);
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), o.weight_decay),
                      nn::AdamWOptions{.lr = o.lr, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                                       .weight_decay = o.weight_decay});
  // A constant schedule is the same warm-up with no decay (min_lr = lr).
  const double min_lr = o.lr_schedule == "constant" ? o.lr : o.lr * o.min_lr_ratio;
  nn::WarmupCosineLR schedule(o.lr, min_lr, std::min(o.warmup, o.steps), o.steps);
  fg::Generator eval_gen(o.seed + 3);  // validation batches
  examples::Trainer trainer({.program = "charlm",
                             .run = o.run,
                             .log_header = "step,train_loss,val_loss,tokens_per_s,mfu",
                             .total_steps = o.steps,
                             .stop_at = o.stop_at,
                             .global_batch = o.batch,
                             .grad_clip = o.grad_clip,
                             .unit = "tok/s",
                             .items_per_example = config.block_size,
                             .flops_per_item = config.training_flops_per_token(config.block_size)},
                            model, optimizer, [&](std::int64_t step) { return schedule.lr_at(step); },
                            {.shared = {{"data", &data_gen}, {"eval", &eval_gen}}, .per_rank = {{"dropout", dropout_gen.get()}}},
                            models::CharLMConfig{config, vocab}.to_json());
  const std::int64_t first_step = o.run.resume.empty() ? 0 : trainer.resume();
  const bool root = trainer.comm().is_root();

  const double baseline = unigram_entropy(data, vocab);
  if (root) {
    std::printf("charlm: %lld characters (vocabulary %lld), %s attention, %lld layers, %lld heads, %lld embd, "
                "block %lld, batch %lld, %lld parameters, %d threads%s\n",
                static_cast<long long>(data.size(true) + data.size(false)), static_cast<long long>(vocab.size()),
                o.attention.c_str(), static_cast<long long>(config.n_layer), static_cast<long long>(config.n_head),
                static_cast<long long>(config.n_embd), static_cast<long long>(config.block_size),
                static_cast<long long>(o.batch), static_cast<long long>(model.parameter_count()),
                fg::get_num_threads(), examples::ranks_note(trainer.comm()).c_str());
    std::printf("unigram baseline (loss of a model that ignores context): %.3f nats\n", baseline);
    if (first_step > 0) std::printf("resumed from %s at step %lld\n", o.run.resume.c_str(), static_cast<long long>(first_step));
  }

  double val_loss = NAN;
  // Not a structured binding: clang 14 (the fuzz and sanitizer builds) cannot capture one in a lambda.
  const std::pair<std::int64_t, std::int64_t> shard = trainer.shard(o.batch);
  const std::int64_t first_row = shard.first, rows = shard.second;
  const int status = trainer.run(
      [&](std::int64_t) {
        const charlm::Batch batch = data.sample(true, o.batch, config.block_size, data_gen, first_row, rows);
        return examples::ShardLoss{model.loss(batch.tokens, batch.targets), rows};
      },
      [&](const examples::StepResult& done) {
        examples::StepReport report;
        val_loss = NAN;
        if (done.step % o.eval_every == 0 || done.step == o.steps) {
          model.eval();
          val_loss = estimate_loss(model, data, false, o.eval_batches, o.batch, config.block_size, eval_gen, trainer);
          report.progress_extra = "val " + std::to_string(val_loss).substr(0, 6);
        }
        report.log_row = log_row(done.step, done.loss, val_loss,
                                 static_cast<double>(done.examples * config.block_size) / done.seconds, done.mfu);
        report.save = done.step % o.save_every == 0;
        return report;
      });
  if (status != 0 || trainer.step() < o.steps) return status;

  model.eval();
  const double final_val = std::isnan(val_loss) ? estimate_loss(model, data, false, o.eval_batches, o.batch,
                                                                config.block_size, eval_gen, trainer)
                                                : val_loss;
  if (!root) return 0;
  std::printf("\nvalidation loss %.3f vs unigram baseline %.3f: %s\n", final_val, baseline,
              final_val < baseline - 0.5 ? "the model learned to use context" : "not (yet) well below the baseline");
  if (o.sample_chars > 0) {
    fg::Generator sample_gen(o.seed + 4);
    std::vector<std::int64_t> generated = generate_text(model, vocab.encode("\n"), o.sample_chars,
                                                        {.temperature = 0.8, .top_k = 0, .greedy = false}, sample_gen);
    std::printf("--- sample ---%s\n--------------\n", vocab.decode(generated).c_str());
  }
  return 0;
}

// ---- sampling ----

int sample(const SampleOptions& o) {
  examples::start_process(o.threads);
  const models::CharLM loaded = models::load_char_lm(o.checkpoint);
  const models::FlowformerLM& model = *loaded.model;
  const charlm::Vocabulary& vocab = loaded.vocabulary;
  const std::vector<std::int64_t> prompt = vocab.encode(o.prompt);
  if (prompt.empty()) fg::fail("charlm", "the prompt is empty");
  if (o.chars < 0) fg::fail("charlm", "--chars must not be negative, got ", o.chars);
  fg::Generator gen(o.seed);
  std::vector<std::int64_t> generated =
      generate_text(model, prompt, o.chars, {.temperature = o.temperature, .top_k = o.top_k, .greedy = o.greedy}, gen);
  std::cout << o.prompt << vocab.decode(generated) << std::endl;
  return 0;
}

// ---- logits ----

int logits(const LogitsOptions& o) {
  examples::start_process(o.threads);
  const models::CharLM loaded = models::load_char_lm(o.checkpoint, o.dtype == "float64" ? fg::kFloat64 : fg::kFloat32);
  const std::vector<std::int64_t> ids = loaded.vocabulary.encode(o.prompt);
  const std::int64_t length = static_cast<std::int64_t>(ids.size());
  const std::int64_t block = loaded.model->config().block_size, vocab_size = loaded.model->config().vocab_size;
  if (ids.empty()) fg::fail("charlm", "the prompt is empty");
  if (length > block)
    fg::fail("charlm", "the prompt has ", length, " characters, more than the model's block_size=", block,
             " positions (logits needs one full forward)");
  fg::NoGradGuard no_grad;
  const fg::Tensor tokens = fg::from_vector(ids);
  const fg::Tensor out = loaded.model->forward(tokens.reshape({1, length})).reshape({length, vocab_size});
  fg::save_safetensors(o.out, {{"logits", out}, {"tokens", tokens}}, {{"checkpoint", o.checkpoint}});
  std::printf("wrote %s: logits [%lld, %lld] %s for %lld tokens\n", o.out.c_str(), static_cast<long long>(length),
              static_cast<long long>(vocab_size), o.dtype.c_str(), static_cast<long long>(length));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Character-level Flowformer language model (Tiny Shakespeare)"};
  app.require_subcommand(1);
  TrainOptions t;
  CLI::App* train_cmd = app.add_subcommand("train", "train a model (defaults: the spec's \"mini\" configuration)");
  const CLI::Validator count = examples::integer_in(1, examples::kMaxCount);
  const CLI::Validator zero_or_count = examples::integer_in(0, examples::kMaxCount);
  train_cmd->add_option("--data", t.data, "text file to train on")->capture_default_str();
  train_cmd->add_option("--steps", t.steps, "optimizer steps")->transform(count)->capture_default_str();
  train_cmd->add_option("--batch", t.batch, "sequences per step")->transform(count)->capture_default_str();
  train_cmd->add_option("--block", t.block, "sequence length (positions of the model)")->transform(count)->capture_default_str();
  train_cmd->add_option("--layers", t.layers, "transformer blocks")->transform(count)->capture_default_str();
  train_cmd->add_option("--heads", t.heads, "attention heads (at most --embd, dividing it)")->transform(count)->capture_default_str();
  train_cmd->add_option("--embd", t.embd, "embedding width (a multiple of --heads)")->transform(count)->capture_default_str();
  train_cmd->add_option("--dropout", t.dropout, "dropout probability")->check(examples::real_in(0, 1, true))->capture_default_str();
  train_cmd->add_option("--lr", t.lr, "peak learning rate (after the linear warm-up)")
      ->check(examples::real_in(0, std::numeric_limits<double>::max()))->capture_default_str();
  train_cmd->add_option("--warmup", t.warmup, "warm-up steps")->transform(zero_or_count)->capture_default_str();
  train_cmd->add_option("--lr-schedule", t.lr_schedule,
                        "after the warm-up: cosine (decay to lr/10 at --steps) or constant (--lr throughout)")
      ->check(CLI::IsMember({"cosine", "constant"}))->capture_default_str();
  train_cmd->add_option("--threads", t.threads, "threads for oneTBB and OpenBLAS (0: FLOWGRAD_NUM_THREADS or all cores)")
      ->transform(examples::thread_count());
  train_cmd->add_option("--seed", t.seed, "random seed")->transform(examples::unsigned_value())->capture_default_str();
  examples::add_run_flags(train_cmd, t.run);
  train_cmd->add_option("--attention", t.attention, "flow or softmax")->check(CLI::IsMember({"flow", "softmax"}))->capture_default_str();
  train_cmd->add_option("--eval-every", t.eval_every, "steps between validation estimates")->transform(count)->capture_default_str();
  train_cmd->add_option("--eval-batches", t.eval_batches, "batches per validation estimate")->transform(count)->capture_default_str();
  train_cmd->add_option("--save-every", t.save_every, "steps between checkpoints")->transform(count)->capture_default_str();
  train_cmd->add_option("--stop-at", t.stop_at,
                        "stop after this step and save; the schedule still spans --steps (resume later)")
      ->transform(count);
  train_cmd->add_option("--sample-chars", t.sample_chars, "characters to sample at the end")->transform(zero_or_count)->capture_default_str();
  SampleOptions s;
  CLI::App* sample_cmd = app.add_subcommand("sample", "continue a prompt with a trained model");
  sample_cmd->add_option("--checkpoint", s.checkpoint, "checkpoint written by charlm train")->required();
  sample_cmd->add_option("--prompt", s.prompt, "text to continue");
  sample_cmd->add_option("--chars", s.chars, "characters to generate")->transform(zero_or_count)->capture_default_str();
  sample_cmd->add_option("--temperature", s.temperature, "softmax temperature")
      ->check(examples::real_in(std::numeric_limits<double>::min(), std::numeric_limits<double>::max()))->capture_default_str();
  sample_cmd->add_option("--top-k", s.top_k, "sample among the k most likely (0: all)")->transform(zero_or_count)->capture_default_str();
  sample_cmd->add_flag("--greedy", s.greedy, "always take the most likely character");
  sample_cmd->add_option("--seed", s.seed, "random seed")->transform(examples::unsigned_value())->capture_default_str();
  sample_cmd->add_option("--threads", s.threads, "threads (0: default)")->transform(examples::thread_count());
  LogitsOptions l;
  CLI::App* logits_cmd = app.add_subcommand("logits", "write the logits of every prompt position to a safetensors file");
  logits_cmd->add_option("--checkpoint", l.checkpoint, "checkpoint written by charlm train")->required();
  logits_cmd->add_option("--prompt", l.prompt, "text whose characters are fed (at most block_size)")->required();
  logits_cmd->add_option("--out", l.out, "output file: \"logits\" [T, vocab], \"tokens\" int64 [T]")->required();
  logits_cmd->add_option("--dtype", l.dtype, "precision of the forward (weights are converted)")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  logits_cmd->add_option("--threads", l.threads, "threads (0: default)")->transform(examples::thread_count());
  CLI11_PARSE(app, argc, argv);
  try {
    if (train_cmd->parsed()) {
      for (const char* flag : {"--block", "--layers", "--heads", "--embd", "--attention"})
        if (train_cmd->count(flag) > 0) t.model_flags_given.insert(flag);
      return train(t);
    }
    return sample_cmd->parsed() ? sample(s) : logits(l);
  } catch (const std::exception& error) {
    examples::report_and_exit("charlm", error);
  }
}
