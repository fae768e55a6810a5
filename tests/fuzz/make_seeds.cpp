// Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<name>/:
// small valid files of every kind each reader takes, written by flowgrad
// itself (checkpoints of the training programs' models after one step).
//
//   build/tests/fuzz/make_seeds tests/fuzz/corpus
//
// The seeds are committed; run this again only when a format changes.
#include <zlib.h>

#include <filesystem>
#include <iostream>

#include "../../examples/charlm/char_data.h"
#include "../../examples/listops/listops_data.h"
#include "../../flowgrad.h"

namespace fg = flowgrad;
namespace models = fg::models;
namespace nn = fg::nn;
namespace fs = std::filesystem;

namespace {

// One AdamW step on the model, so that the checkpoint holds optimizer state.
template <class Model, class Loss>
void save_after_one_step(const std::string& path, Model& model, const Loss& loss,
                         const std::map<std::string, const fg::Generator*>& rngs, const std::string& config) {
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), 0.1), nn::AdamWOptions{});
  loss().backward();
  optimizer.step();
  nn::save_checkpoint(path, model, optimizer, 1, rngs, config);
}

void write_text(const fs::path& path, const std::string& text) { fg::replace_file_contents("make_seeds", path, text); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds CORPUS_DIR\n";
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* name : {"safetensors", "npy", "idx", "checkpoint", "csv", "ts"}) fs::create_directories(root / name);
  fg::Generator gen(1);

  fg::save_safetensors((root / "safetensors/mixed.safetensors").string(),
                       {{"weight", fg::randn({2, 3}, gen)}, {"index", fg::arange(4)}, {"empty", fg::zeros({0, 2})}},
                       {{"format", "pt"}});
  fg::save_safetensors((root / "safetensors/f64.safetensors").string(), {{"x", fg::randn({3}, gen, fg::kFloat64)}});
  fg::save_safetensors((root / "safetensors/none.safetensors").string(), {});

  fg::save_npy((root / "npy/f4.npy").string(), fg::randn({2, 3}, gen));
  fg::save_npy((root / "npy/f8_scalar.npy").string(), fg::scalar_tensor(1.5, fg::kFloat64));
  fg::save_npy((root / "npy/i8.npy").string(), fg::arange(5));
  fg::save_npy_bools((root / "npy/b1.npy").string(), fg::tensor({0, 1, 1}, fg::kInt64));

  // IDX: the header (magic, dims as big-endian uint32), then bytes; plain and gzip.
  std::string labels{'\0', '\0', '\x08', '\x01', '\0', '\0', '\0', '\x04', '\x01', '\x07', '\x00', '\x09'};
  write_text(root / "idx/labels.idx", labels);
  std::string images{'\0', '\0', '\x08', '\x03', '\0', '\0', '\0', '\x02', '\0', '\0', '\0', '\x03', '\0', '\0', '\0', '\x03'};
  for (int i = 0; i < 18; ++i) images += static_cast<char>(i * 13);
  write_text(root / "idx/images.idx", images);
  {
    const std::string path = (root / "idx/images.idx.gz").string();
    gzFile file = gzopen(path.c_str(), "wb");
    gzwrite(file, images.data(), static_cast<unsigned>(images.size()));
    gzclose(file);
  }

  {  // charlm: a character-level LM
    const charlm::Vocabulary vocab("abcde");
    models::FlowformerConfig config;
    config.vocab_size = vocab.size();
    config.block_size = 4;
    config.n_layer = 1;
    config.n_head = 2;
    config.n_embd = 4;
    config.dropout = 0.0;
    models::FlowformerLM model(config, gen);
    const fg::Tensor tokens = fg::randint(0, vocab.size(), {2, 4}, gen);
    fg::Generator data(2), dropout(3), eval(4);
    save_after_one_step((root / "checkpoint/charlm.safetensors").string(), model,
                        [&] { return model.loss(tokens, tokens); },
                        {{"data", &data}, {"dropout", &dropout}, {"eval", &eval}}, models::CharLMConfig{config, vocab}.to_json());
  }
  {  // fashion: an image classifier on 8x8 images in 4x4 patches
    models::FlowformerConfig encoder;
    encoder.n_layer = 1;
    encoder.n_head = 2;
    encoder.n_embd = 4;
    encoder.dropout = 0.0;
    const auto config = models::image_classifier_config(8, 8, 4, 10, encoder);
    models::FlowformerImageClassifier model(config, gen);
    const fg::Tensor images_batch = fg::randn({2, 8, 8}, gen), classes = fg::randint(0, 10, {2}, gen);
    fg::Generator dropout(3);
    save_after_one_step((root / "checkpoint/fashion.safetensors").string(), model,
                        [&] { return fg::cross_entropy(model.forward(images_batch), classes); },
                        {{"dropout", &dropout}}, config.to_json());
  }
  {  // listops: a token encoder with class-token pooling
    models::FlowformerConfig encoder;
    encoder.vocab_size = listops::kVocabSize;
    encoder.block_size = 6;
    encoder.n_layer = 1;
    encoder.n_head = 1;
    encoder.n_embd = 4;
    encoder.dropout = 0.0;
    encoder.causal = false;
    models::FlowformerEncoder model(encoder, 10, models::Pooling::ClassToken, gen);
    const fg::Tensor tokens = fg::randint(1, listops::kVocabSize, {2, 6}, gen), classes = fg::randint(0, 10, {2}, gen);
    fg::Generator dropout(3);
    save_after_one_step((root / "checkpoint/listops.safetensors").string(), model,
                        [&] { return fg::cross_entropy(model.forward(tokens), classes); }, {{"dropout", &dropout}},
                        listops::checkpoint_config("train_size 4, test_size 2, lengths 4..6, seed 1", "cls", encoder));
  }

  {  // timeseries: a series classifier on 2 channels
    models::FlowformerConfig encoder;
    encoder.n_layer = 1;
    encoder.n_head = 2;
    encoder.n_embd = 4;
    encoder.dropout = 0.0;
    const auto config = models::series_classifier_config(2, 5, 3, encoder);
    models::FlowformerSeriesClassifier model(config, gen);
    const fg::Tensor series = fg::randn({2, 5, 2}, gen), classes = fg::randint(0, 3, {2}, gen);
    fg::Generator dropout(3);
    save_after_one_step((root / "checkpoint/timeseries.safetensors").string(), model,
                        [&] { return fg::cross_entropy(model.forward(series), classes); }, {{"dropout", &dropout}},
                        config.to_json());
  }

  {  // decision: a decision model over 3 state values and 2 action values
    models::FlowformerConfig trunk;
    trunk.n_layer = 1;
    trunk.n_head = 2;
    trunk.n_embd = 4;
    trunk.dropout = 0.0;
    models::DecisionConfig config = models::decision_config(3, 2, false, 4, 10.0, trunk);
    config.state_mean = {0.0, 1.0, -1.0};
    config.state_std = {1.0, 2.0, 0.5};
    models::DecisionFlowformer model(config, gen);
    models::TrajectoryBatch batch{fg::randn({2, 4}, gen), fg::randn({2, 4, 3}, gen), fg::randn({2, 4, 2}, gen),
                                  fg::zeros({2, 4}, fg::kInt64), fg::ones({2, 4})};
    fg::Generator data(2), dropout(3);
    save_after_one_step((root / "checkpoint/decision.safetensors").string(), model, [&] { return model.loss(batch); },
                        {{"data", &data}, {"dropout", &dropout}}, config.to_json());
  }

  write_text(root / "csv/charlm_log.csv", "step,train_loss,val_loss,tokens_per_s\n1,4.17438126,,61234.5\n2,4.1,4.05,70000\n");
  write_text(root / "csv/classifier_log.csv", "epoch,train_loss,test_acc,seconds\n1,2.30361748,0.125,0.0124\n");
  write_text(root / "csv/crlf.csv", "step,loss\r\n1,2.5\r\n2,\r\n");
  // .ts: every header keyword, unequal lengths, missing values, comments, CRLF.
  write_text(root / "ts/multivariate.ts",
             "# comment\n@problemName Toy\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n"
             "@equalLength false\n@classLabel true up down\n@data\n0.5,1,?,2:1,2,3,4:up\n3,2.5e-1:-1,+7:down\n");
  write_text(root / "ts/univariate.ts",
             "@problemName Beeps\r\n@univariate true\r\n@equalLength true\r\n@seriesLength 3\r\n"
             "@classLabel true 1 2\r\n@data\r\n1,2,3:2\r\n4,5,6:1\r\n");
  write_text(root / "ts/unlabelled.ts", "@classLabel false\n@data\n1,2:3,4:5,6\n7:8:9\n");
  std::cout << "wrote the seeds under " << root << "\n";
  return 0;
}
