// Images as patch sequences: patchify, the image classifier's config and
// model, and its attention inspection.
#include "../models/vision.h"

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::models;
using namespace flowgrad::testing;

namespace {

FlowformerConfig small_encoder() {
  FlowformerConfig encoder;
  encoder.n_layer = 2;
  encoder.n_head = 2;
  encoder.n_embd = 8;
  encoder.dropout = 0.0;
  return encoder;
}

}  // namespace

TEST_CASE("patchify cuts images into patches row by row, each patch row-major") {
  // One 4x6 image holding 0..23; 2x2 patches -> 2 rows x 3 columns of patches.
  std::vector<double> pixels(24);
  for (int i = 0; i < 24; ++i) pixels[static_cast<std::size_t>(i)] = i;
  const Tensor image = from_vector(pixels, {1, 4, 6});
  const Tensor patches = patchify(image, 2);
  REQUIRE(patches.shape() == Shape{1, 6, 4});
  // Patch (r, c) holds pixels (2r + dy) * 6 + 2c + dx for dy, dx in {0, 1}.
  std::vector<double> expected;
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c)
      for (int dy = 0; dy < 2; ++dy)
        for (int dx = 0; dx < 2; ++dx) expected.push_back((2 * r + dy) * 6 + 2 * c + dx);
  REQUIRE(patches.to_vector<double>() == expected);
  REQUIRE(patchify(image, 1).reshape({24}).to_vector<double>() == pixels);  // pixel level: raster order

  // Channels come first within a patch.
  const Tensor two_channels = concat({image.unsqueeze(1), (image + 100.0).unsqueeze(1)}, 1);  // [1, 2, 4, 6]
  const Tensor p2 = patchify(two_channels, 2);
  REQUIRE(p2.shape() == Shape{1, 6, 8});
  REQUIRE(p2.select(1, 1).to_vector<double>() == std::vector<double>{2, 3, 8, 9, 102, 103, 108, 109});

  Generator gen(1);
  require_gradients_match([](const TensorList& in) { return patchify(in[0], 2); },
                          {randn({2, 3, 4, 2}, gen, kFloat64)});
  REQUIRE_THROWS_WITH(patchify(image, 4), Catch::Contains("[patchify]") && Catch::Contains("4x6"));
  REQUIRE_THROWS_WITH(patchify(image, 0), Catch::Contains("[patchify]"));
  REQUIRE_THROWS_WITH(patchify(ones({4, 6}), 2), Catch::Contains("[patchify]") && Catch::Contains("[4, 6]"));
}

TEST_CASE("ImageClassifierConfig: sizes derived from the image, validated, round-trips as text") {
  const ImageClassifierConfig config = image_classifier_config(28, 28, 7, 10, small_encoder());
  REQUIRE(config.num_patches() == 16);
  REQUIRE(config.encoder.block_size == 16);
  REQUIRE(config.encoder.vocab_size == 0);
  REQUIRE_FALSE(config.encoder.causal);
  ImageClassifierConfig with_cls = config;
  with_cls.pooling = Pooling::ClassToken;
  REQUIRE(ImageClassifierConfig::from_json(with_cls.to_json()) == with_cls);
  REQUIRE(ImageClassifierConfig::from_json(config.to_json()) == config);

  REQUIRE_THROWS_WITH(image_classifier_config(28, 28, 5, 10, small_encoder()),
                      Catch::Contains("[ImageClassifierConfig]") && Catch::Contains("patch 5"));
  REQUIRE_THROWS_WITH(image_classifier_config(28, 28, 4, 0, small_encoder()), Catch::Contains("num_classes"));
  ImageClassifierConfig wrong_block = config;
  wrong_block.encoder.block_size = 49;
  REQUIRE_THROWS_WITH(wrong_block.validate(), Catch::Contains("block_size 49") && Catch::Contains("16"));
  const auto with = [&](const std::string& fields) {
    return R"({"kind": "image_classifier", "encoder": )" + config.encoder.to_json() + fields + "}";
  };
  REQUIRE_THROWS_WITH(ImageClassifierConfig::from_json(with(R"(, "pooling": "max")")),
                      Catch::Contains("[ImageClassifierConfig] pooling must be mean or class_token, got \"max\""));
  REQUIRE_THROWS_WITH(ImageClassifierConfig::from_json(with(R"(, "patch": "x")")),
                      Catch::Contains("[ImageClassifierConfig] \"patch\" must be an integer"));
  REQUIRE_THROWS_WITH(ImageClassifierConfig::from_json(with(R"(, "colour": true)")),
                      Catch::Contains("[ImageClassifierConfig] unknown key \"colour\""));
  REQUIRE_THROWS_WITH(ImageClassifierConfig::from_json(R"({"kind": "char_lm"})"),
                      Catch::Contains("not written by fashion"));
}

TEST_CASE("ImageClassifierConfig: image sizes whose patch count overflows are refused") {
  // Issue 11: an IDX data set [0, 2^32-1, 2^32-1] with --patch 1 overflowed the patch count.
  const std::int64_t side = 0xFFFFFFFF;
  REQUIRE_THROWS_WITH(image_classifier_config(side, side, 1, 10, small_encoder()),
                      Catch::Contains("[ImageClassifierConfig]") && Catch::Contains("4294967295 x 4294967295") &&
                          Catch::Contains("overflows"));
  ImageClassifierConfig config = image_classifier_config(28, 28, 7, 10, small_encoder());
  config.image_height = config.image_width = side;
  config.patch = 1;
  REQUIRE_THROWS_WITH(config.validate(), Catch::Contains("[ImageClassifierConfig]") && Catch::Contains("2^40"));
  Generator gen(1);
  const ImageClassifierConfig fine = image_classifier_config(28, 28, 7, 10, small_encoder());
  REQUIRE(FlowformerImageClassifier::parameter_count_for(fine) ==
          static_cast<double>(FlowformerImageClassifier(fine, gen).parameter_count()));
}

TEST_CASE("FlowformerImageClassifier: names, shapes, gradients, wrong image sizes") {
  const Pooling pooling = GENERATE(Pooling::Mean, Pooling::ClassToken);
  Generator gen(3);
  ImageClassifierConfig config = image_classifier_config(8, 12, 4, 5, small_encoder());
  config.pooling = pooling;
  FlowformerImageClassifier model(config, gen, kFloat64);
  model.eval();
  const auto params = model.named_parameters();
  auto has = [&](const std::string& name) {
    for (const auto& [n, p] : params)
      if (n == name) return true;
    return false;
  };
  REQUIRE(has("patch_embedding.weight"));
  REQUIRE(has("encoder.transformer.wpe.weight"));
  REQUIRE(has("encoder.transformer.h.1.attn.query_projection.weight"));
  REQUIRE(has("encoder.head.bias"));
  REQUIRE(has("encoder.cls_token") == (pooling == Pooling::ClassToken));

  const Tensor images = randn({3, 8, 12}, gen, kFloat64);
  const Tensor logits = model.forward(images);
  REQUIRE(logits.shape() == Shape{3, 5});
  // Each image is classified on its own.
  require_close(model.forward(images.narrow(0, 1, 1)), logits.narrow(0, 1, 1), 1e-12, 1e-14);
  // forward is the encoder on the embedded patches.
  require_close(model.encoder->forward_embedded(model.patch_embedding->forward(patchify(images, 4))), logits, 0, 0);
  require_gradients_match([&](const TensorList& in) { return model.forward(in[0]); }, {images});

  const auto traces = model.attention_traces(images);
  REQUIRE(traces.size() == 2);
  const std::int64_t tokens = 6 + (pooling == Pooling::ClassToken ? 1 : 0);
  REQUIRE(traces[0].attention_matrix().shape() == Shape{3, 2, tokens, tokens});

  REQUIRE_THROWS_WITH(model.forward(randn({3, 12, 8}, gen, kFloat64)),
                      Catch::Contains("[FlowformerImageClassifier]") && Catch::Contains("[B, 8, 12]") &&
                          Catch::Contains("[3, 12, 8]"));
  REQUIRE_THROWS_WITH(model.forward(randn({8, 12}, gen, kFloat64)), Catch::Contains("[B, 8, 12]"));
}
