// The fuzz targets on their seed corpora and on every input that ever made
// one fail (tests/fuzz/regressions/<target>/): seeds must be read, regression
// inputs refused with the reader's own error (or read, those in read/).
// Runs in the release and the sanitizer builds, so a regression input that
// once read out of bounds fails here again if the defect returns.
#include <filesystem>
#include <set>

#include "../test_util.h"
#include "targets.h"

namespace fs = std::filesystem;

namespace {

const fs::path kFuzzDir = fs::path(FLOWGRAD_SOURCE_DIR) / "tests" / "fuzz";

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::exists(dir))
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("the fuzz targets that meson builds (and scripts/fuzz runs) are exactly those of targets.h") {
  // tests/fuzz/meson.build: fuzz_target_names = ['safetensors', ...]
  const std::string build = flowgrad::testing::read_text_file((kFuzzDir / "meson.build").string());
  const std::size_t start = build.find("fuzz_target_names = [");
  REQUIRE(start != std::string::npos);
  const std::string list = build.substr(start, build.find(']', start) - start);
  std::set<std::string> listed;
  for (std::size_t open = list.find('\''); open != std::string::npos; open = list.find('\'', open + 1)) {
    const std::size_t close = list.find('\'', open + 1);
    listed.insert(list.substr(open + 1, close - open - 1));
    open = close;
  }
  std::set<std::string> defined;
  for (const auto& [name, target] : fuzz::targets()) defined.insert(name);
  REQUIRE(listed == defined);
}

TEST_CASE("every fuzz target reads its seeds, and reads or refuses every regression input cleanly") {
  for (const auto& [name, target] : fuzz::targets()) {
    INFO("target " << name);
    const std::vector<fs::path> seeds = files_under(kFuzzDir / "corpus" / name);
    REQUIRE(seeds.size() >= 3);
    REQUIRE(fs::exists(kFuzzDir / "dict" / (name + ".dict")));
    for (const fs::path& seed : seeds) {
      INFO(seed.string());
      REQUIRE(target(flowgrad::testing::read_text_file(seed.string())));  // read, so the fuzzer starts from valid input
      // With bytes after its end, every kind of file is refused (and for a CSV, "x" is no number).
      REQUIRE_FALSE(target(flowgrad::testing::read_text_file(seed.string()) + "\n1,x"));
    }
    // Each input that once crashed a reader or was silently accepted: refused now, unless it
    // is a valid file that a reader mishandled (regressions/<target>/read/).
    for (const fs::path& file : files_under(kFuzzDir / "regressions" / name)) {
      INFO(file.string());
      REQUIRE_FALSE(target(flowgrad::testing::read_text_file(file.string())));
    }
    for (const fs::path& file : files_under(kFuzzDir / "regressions" / name / "read")) {
      INFO(file.string());
      REQUIRE(target(flowgrad::testing::read_text_file(file.string())));
    }
  }
}
