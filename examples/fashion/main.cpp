// fashion: a Flowformer image classifier on Fashion-MNIST, and pictures of
// what its Flow-Attention does.
//
//   fashion train [--epochs N] [--batch B] [--patch P] [--layers L] [--heads H] [--embd C]
//                 [--lr LR] [--threads N] [--seed S] [--train-limit N] [--test-limit N] [--out DIR] [--resume FILE]
//                 [--attention flow|softmax] [--data DIR]
//   fashion attention --checkpoint FILE [--index I] [--layer L] [--head H] --out PICTURE.png
//
// train: 28×28 images cut into P×P patches -> linear patch embedding +
// learned positions -> FlowformerEncoder (normal attention) -> mean pooling
// -> 10 classes. Test accuracy after every epoch; DIR/log.csv and
// DIR/checkpoint.safetensors (see examples/classifier_training.h).
//
// attention: for test image I, materialises the implicit patch×patch matrix
// of layer L, head H (FlowAttentionTrace::attention_matrix) and draws it
// beside the image, with the sink allocation and source competition of
// every patch as bars and the competition laid over the image grid.
#include <CLI/CLI.hpp>

#include <iostream>
#include <limits>
#include <set>

#include "../../flowgrad.h"
#include "../common/classifier_training.h"
#include "../common/flags.h"
#include "../plot/plot.h"
#include "../common/resume_flags.h"
#include "fashion_data.h"

namespace {

namespace fg = flowgrad;
namespace models = fg::models;
namespace nn = fg::nn;

struct TrainOptions {
  examples::ClassifierTrainingOptions training = [] {
    examples::ClassifierTrainingOptions defaults;
    defaults.program = "fashion";
    defaults.epochs = 9;
    defaults.lr = 3e-3;
    return defaults;
  }();
  std::int64_t patch = 7, layers = 4, heads = 4, embd = 128, train_limit = 0, test_limit = 0;
  double dropout = 0.0;
  std::string attention = "flow", data = fashion::kDefaultDir;
  int threads = 0;
  std::set<std::string> model_flags_given;
};

struct AttentionOptions {
  std::string checkpoint, out, data = fashion::kDefaultDir;
  std::int64_t index = 0, layer = -1, head = 0;
};

models::ImageClassifierConfig config_from_flags(const TrainOptions& o, std::int64_t height, std::int64_t width) {
  models::FlowformerConfig encoder;
  encoder.n_layer = o.layers;
  encoder.n_head = o.heads;
  encoder.n_embd = o.embd;
  encoder.dropout = o.dropout;
  encoder.attention = nn::parse_attention_kind(o.attention);
  examples::check_model_shape("fashion", o.embd, o.heads);
  return models::image_classifier_config(height, width, o.patch, 10, encoder);
}

// The checkpoint's model; a model flag typed with another value is a mistake.
models::ImageClassifierConfig resumed_config(const TrainOptions& o) {
  const auto stored = models::ImageClassifierConfig::from_json(nn::read_checkpoint_info(o.training.run.resume).config);
  examples::check_resumed_flags(
      "fashion", o.model_flags_given,
      {{"--patch", std::to_string(o.patch), std::to_string(stored.patch)},
       {"--layers", std::to_string(o.layers), std::to_string(stored.encoder.n_layer)},
       {"--heads", std::to_string(o.heads), std::to_string(stored.encoder.n_head)},
       {"--embd", std::to_string(o.embd), std::to_string(stored.encoder.n_embd)},
       {"--attention", o.attention, std::string(nn::attention_kind_name(stored.encoder.attention))}},
      o.training.run.resume);
  return stored;
}

void check_image_size(const models::ImageClassifierConfig& config, const fashion::FashionMnist& data,
                      const std::string& source) {
  if (data.height() != config.image_height || data.width() != config.image_width)
    fg::fail("fashion", "the images are ", data.height(), "x", data.width(), " but the model of ", source,
             " takes ", config.image_height, "x", config.image_width);
}

int train(const TrainOptions& o) {
  const fg::dist::Communicator& comm = examples::start_process(o.threads);
  const fashion::FashionMnist data(o.data, o.train_limit, o.test_limit);
  const models::ImageClassifierConfig config =
      o.training.run.resume.empty() ? config_from_flags(o, data.height(), data.width()) : resumed_config(o);
  check_image_size(config, data, o.training.run.resume.empty() ? "these flags" : o.training.run.resume);
  examples::check_training_memory(
      "fashion", "--layers, --embd, --patch, --batch", models::FlowformerImageClassifier::parameter_count_for(config),
      fg::checked_mul(o.training.batch, config.num_patches(), "fashion", "--batch x patches per image"),
      config.encoder.n_layer, config.encoder.n_embd);

  fg::Generator init_gen(o.training.seed);
  auto dropout_gen = std::make_shared<fg::Generator>(o.training.seed + 1);
  models::FlowformerImageClassifier model(config, init_gen, fg::kFloat32, dropout_gen);
  if (comm.is_root())
    std::printf("fashion: %lld training and %lld test images, %lldx%lld patches (%lld tokens), %s attention, "
                "%lld layers, %lld heads, width %lld, %lld parameters, %d threads%s\n",
              static_cast<long long>(data.as_classification_data().train_size),
              static_cast<long long>(data.as_classification_data().test_size), static_cast<long long>(config.patch),
              static_cast<long long>(config.patch), static_cast<long long>(config.num_patches()),
              nn::attention_kind_name(config.encoder.attention).data(),
              static_cast<long long>(config.encoder.n_layer), static_cast<long long>(config.encoder.n_head),
              static_cast<long long>(config.encoder.n_embd), static_cast<long long>(model.parameter_count()),
              fg::get_num_threads(), examples::ranks_note(comm).c_str());
  return examples::train_classifier(
      model, [&](const examples::LabelledBatch& batch) { return model.forward(batch.inputs); },
      data.as_classification_data(), o.training, config.to_json(), {.per_rank = {{"dropout", dropout_gen.get()}}});
}

int attention(const AttentionOptions& o) {
  const auto config = models::ImageClassifierConfig::from_json(nn::read_checkpoint_info(o.checkpoint).config);
  if (config.encoder.attention != nn::AttentionKind::Flow)
    fg::fail("fashion", o.checkpoint, " holds a softmax-attention model; the pictures show Flow-Attention");
  const fashion::FashionMnist data(o.data);
  check_image_size(config, data, o.checkpoint);
  fg::Generator init_gen(0);
  models::FlowformerImageClassifier model(config, init_gen);
  nn::load_model_weights(o.checkpoint, model);
  model.eval();
  const std::int64_t tests = data.as_classification_data().test_size;
  if (o.index < 0 || o.index >= tests) fg::fail("fashion", "--index ", o.index, " is not a test image (0..", tests - 1, ")");
  const std::int64_t layer = o.layer < 0 ? config.encoder.n_layer - 1 : o.layer;
  if (layer >= config.encoder.n_layer)
    fg::fail("fashion", "--layer ", o.layer, " but the model has ", config.encoder.n_layer, " layers");
  if (o.head < 0 || o.head >= config.encoder.n_head)
    fg::fail("fashion", "--head ", o.head, " but the model has ", config.encoder.n_head, " heads");
  const std::int64_t tokens = config.num_patches();
  if (tokens > 1024)
    fg::fail("fashion", "the attention matrix of ", tokens, " patches is too large to draw; use a model with --patch >= 2");

  fg::NoGradGuard no_grad;
  const examples::LabelledBatch batch = data.batch(false, {o.index});
  const fg::Tensor logits = model.forward(batch.inputs);
  const std::vector<double> scores = logits.to_vector<double>();
  const auto predicted = std::max_element(scores.begin(), scores.end()) - scores.begin();
  const fg::FlowAttentionTrace trace = model.attention_traces(batch.inputs)[static_cast<std::size_t>(layer)];
  auto head_of = [&](const fg::Tensor& t) { return t.select(0, 0).select(0, o.head).to_vector<double>(); };
  const std::vector<double> matrix = head_of(trace.attention_matrix());
  const std::vector<double> allocation = head_of(trace.sink_allocation);
  const std::vector<double> competition = head_of(trace.source_competition);

  const int grid = static_cast<int>(config.image_height / config.patch);
  const int grid_cols = static_cast<int>(config.image_width / config.patch);
  plot::Figure figure(1180, 760);
  const std::string label = fashion::kClassNames[data.test_label(o.index)];
  figure.text(10, 20,
              "test image " + std::to_string(o.index) + " (" + label + "), predicted " +
                  fashion::kClassNames[predicted] + "; layer " + std::to_string(layer) + ", head " +
                  std::to_string(o.head) + " of " + o.checkpoint,
              13);
  figure.grayscale({10, 40, 300, 322}, data.test_pixels(o.index), static_cast<int>(config.image_height),
                   static_cast<int>(config.image_width), "image");
  figure.heatmap({10, 390, 360, 322}, competition, grid, grid_cols, "source competition per patch");
  figure.heatmap({400, 40, 770, 650}, matrix, static_cast<int>(tokens), static_cast<int>(tokens),
                 "attention matrix W (row: query patch, column: key patch), out = W V");
  figure.save_png(o.out);

  plot::Figure bars(900, 520);
  bars.bars({10, 10, 880, 245}, allocation, "sink allocation A_i (per query patch)", "patch");
  bars.bars({10, 265, 880, 245}, competition, "source competition C_j (per key patch)", "patch");
  const std::string bars_path = o.out.substr(0, o.out.rfind('.')) + "_flows.png";
  bars.save_png(bars_path);
  std::printf("wrote %s and %s (label %s, predicted %s)\n", o.out.c_str(), bars_path.c_str(), label.c_str(),
              fashion::kClassNames[predicted]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fashion: Flowformer on Fashion-MNIST"};
  app.require_subcommand(1);
  TrainOptions t;
  auto* train_cmd = app.add_subcommand("train", "train an image classifier");
  const CLI::Validator count = examples::integer_in(1, examples::kMaxCount);
  const CLI::Validator zero_or_count = examples::integer_in(0, examples::kMaxCount);
  train_cmd->add_option("--epochs", t.training.epochs, "passes over the training set")->transform(count)->capture_default_str();
  train_cmd->add_option("--batch", t.training.batch, "images per step")->transform(count)->capture_default_str();
  train_cmd->add_option("--patch", t.patch, "patch size (1: pixel level, 784 tokens)")->transform(count)->capture_default_str();
  train_cmd->add_option("--layers", t.layers, "transformer blocks")->transform(count)->capture_default_str();
  train_cmd->add_option("--heads", t.heads, "attention heads (at most --embd, dividing it)")->transform(count)->capture_default_str();
  train_cmd->add_option("--embd", t.embd, "embedding width (a multiple of --heads)")->transform(count)->capture_default_str();
  train_cmd->add_option("--dropout", t.dropout, "dropout probability")->check(examples::real_in(0, 1, true))->capture_default_str();
  train_cmd->add_option("--lr", t.training.lr, "peak learning rate (warm-up, cosine decay)")
      ->check(examples::real_in(0, std::numeric_limits<double>::max()))->capture_default_str();
  train_cmd->add_option("--weight-decay", t.training.weight_decay, "AdamW decay of matrix weights")
      ->check(examples::real_in(0, std::numeric_limits<double>::max()))->capture_default_str();
  train_cmd->add_option("--threads", t.threads, "threads for oneTBB and OpenBLAS (0: FLOWGRAD_NUM_THREADS or all cores)")
      ->transform(examples::thread_count());
  train_cmd->add_option("--seed", t.training.seed, "random seed")->transform(examples::unsigned_value())->capture_default_str();
  train_cmd->add_option("--train-limit", t.train_limit, "use only the first N training images (0: all)")->transform(zero_or_count);
  train_cmd->add_option("--test-limit", t.test_limit, "score only the first N test images (0: all)")->transform(zero_or_count);
  examples::add_run_flags(train_cmd, t.training.run);
  train_cmd->add_option("--stop-at-epoch", t.training.stop_at_epoch, "stop (and save) after this epoch")->transform(count);
  train_cmd->add_option("--attention", t.attention, "flow or softmax")->check(CLI::IsMember({"flow", "softmax"}))->capture_default_str();
  train_cmd->add_option("--data", t.data, "directory with the four IDX files")->capture_default_str();

  AttentionOptions a;
  auto* attention_cmd = app.add_subcommand("attention", "draw a trained model's Flow-Attention for a test image");
  attention_cmd->add_option("--checkpoint", a.checkpoint, "checkpoint written by fashion train")->required();
  attention_cmd->add_option("--index", a.index, "test image")->transform(zero_or_count)->capture_default_str();
  attention_cmd->add_option("--layer", a.layer, "block (default: the last)")->transform(zero_or_count);
  attention_cmd->add_option("--head", a.head, "attention head")->transform(zero_or_count)->capture_default_str();
  attention_cmd->add_option("--out", a.out, "PNG to write (bars go to NAME_flows.png)")->required();
  attention_cmd->add_option("--data", a.data, "directory with the four IDX files")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (train_cmd->parsed()) {
      for (const char* flag : {"--patch", "--layers", "--heads", "--embd", "--attention"})
        if (train_cmd->count(flag) > 0) t.model_flags_given.insert(flag);
      return train(t);
    }
    return attention(a);
  } catch (const std::exception& error) {
    examples::report_and_exit("fashion", error);
  }
}
