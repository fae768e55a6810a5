// Helpers shared by the test executables.
#pragma once

#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../core/sanitizer.h"
#include "../flowgrad.h"

namespace flowgrad::testing {

// Runs gradcheck and fails the test case with its report when it fails.
inline void require_gradients_match(const DifferentiableFunction& f, const TensorList& inputs,
                                    GradcheckOptions options = {}) {
  GradcheckResult result = gradcheck(f, inputs, options);
  INFO(result.report());
  REQUIRE(result.passed);
}

// Every element of `actual` within atol + rtol*|expected| of `expected`.
inline void require_close(const Tensor& actual, const Tensor& expected, double rtol = 1e-6,
                          double atol = 1e-9) {
  REQUIRE(actual.shape() == expected.shape());
  std::vector<double> a = actual.to_vector<double>();
  std::vector<double> e = expected.to_vector<double>();
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i << ": " << a[i] << " vs expected " << e[i]);
    REQUIRE(std::abs(a[i] - e[i]) <= atol + rtol * std::abs(e[i]));
  }
}

inline void require_values(const Tensor& actual, const std::vector<double>& expected,
                           double tolerance = 1e-6) {
  std::vector<double> a = actual.to_vector<double>();
  REQUIRE(a.size() == expected.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i);
    REQUIRE(a[i] == Approx(expected[i]).margin(tolerance));
  }
}

// A float64 tensor whose layout is the transpose of a contiguous one: the
// way tests exercise non-contiguous inputs.
inline Tensor transposed_randn(const Shape& shape, Generator& gen) {
  REQUIRE(shape.size() >= 2);
  Shape swapped = shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  Tensor t = randn(swapped, gen, kFloat64).transpose(-1, -2);
  REQUIRE_FALSE(t.is_contiguous());
  return t;
}

// A fresh directory under /tmp, removed with everything in it at scope end.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("flowgrad_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }
  // Names of all entries: shows whether a temporary file was left behind.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}

// Makes writes past `bytes` fail with EFBIG instead of killing the process
// with SIGXFSZ: a genuine I/O failure halfway through a save, even as root.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved_) == 0);
    rlimit limited = saved_;
    limited.rlim_cur = bytes;
    saved_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, saved_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit saved_{};
  void (*saved_handler_)(int) = nullptr;
};

// A log.csv's text without its timing columns (tokens_per_s, mfu,
// seconds: the last columns of a row), for comparing runs digit for digit.
inline std::string without_timing_columns(const std::string& log) {
  std::istringstream lines(log);
  std::string header;
  std::getline(lines, header);
  std::size_t kept_columns = 0;  // the columns before the first timing column
  for (std::size_t start = 0; start <= header.size(); ++kept_columns) {
    const std::size_t comma = std::min(header.find(',', start), header.size());
    const std::string name = header.substr(start, comma - start);
    if (name == "tokens_per_s" || name == "mfu" || name == "seconds") break;
    start = comma + 1;
  }
  std::string kept;
  lines.clear();
  lines.seekg(0);
  for (std::string line; std::getline(lines, line);) {
    std::size_t end = std::string::npos, commas = 0;  // cut at the comma that ends the last kept column
    for (std::size_t i = 0; i < line.size() && end == std::string::npos; ++i)
      if (line[i] == ',' && ++commas == kept_columns) end = i;
    kept += line.substr(0, end) + "\n";
  }
  return kept;
}

// The name AtomicFileWriter gives a temporary of `path` made on this host
// by process `pid`: what a process killed during a save leaves behind.
inline std::string save_temporary(const std::string& path, long pid, const std::string& host = "") {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return path + ".tmp." + (host.empty() ? std::string(name) : host) + "." + std::to_string(pid) + ".0";
}

// A pid that no process has: pid_max + 1.
inline long unused_pid() {
  long pid_max = 0;
  std::ifstream("/proc/sys/kernel/pid_max") >> pid_max;
  REQUIRE(pid_max > 0);
  return pid_max + 1;
}

// A program run as a user would, with stdout and stderr captured.
struct ProgramRun {
  int status;          // as std::system returns it (0 = success)
  std::string output;  // stdout and stderr
};

inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A classifier's log.csv without its last column (seconds), which is the
// only one that depends on timing: what a resumed run must reproduce.
inline std::string losses_and_accuracies(const std::string& log) {
  std::string kept, line;
  std::istringstream lines(read_text_file(log));
  while (std::getline(lines, line)) kept += line.substr(0, line.rfind(',')) + "\n";
  return kept;
}

inline ProgramRun run_program(const std::string& program, const std::string& arguments, const TempDir& dir) {
  const std::string log = dir.file("output.txt");
  const int status = std::system((program + " " + arguments + " >" + log + " 2>&1").c_str());
  return {status, read_text_file(log)};
}

// The bytes of an IDX file of unsigned bytes (type 0x08 unless given).
inline std::string idx_file_bytes(const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& values,
                                  std::uint8_t type = 0x08) {
  std::string bytes{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (std::uint32_t d : dims)
    for (int shift : {24, 16, 8, 0}) bytes += static_cast<char>((d >> shift) & 0xFF);
  bytes.append(values.begin(), values.end());
  return bytes;
}

inline void write_gzip_file(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  REQUIRE(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(file) == Z_OK);
}

// A data set in the Fashion-MNIST layout (four gzip IDX files in DIR/name)
// whose class is readable from the image: class c lights up row band c.
// `size` x `size` images, `train` + `test` of them.
inline std::string write_fashion_data_set(const TempDir& dir, const std::string& name, std::uint32_t size,
                                          std::uint32_t train, std::uint32_t test) {
  const std::string root = dir.file(name);
  std::filesystem::create_directories(root);
  Generator gen(5);
  auto write_split = [&](const std::string& prefix, std::uint32_t n) {
    std::vector<std::uint8_t> images(static_cast<std::size_t>(n) * size * size), labels(n);
    for (std::uint32_t i = 0; i < n; ++i) {
      labels[i] = static_cast<std::uint8_t>(gen.next_u64() % 10);
      for (std::uint32_t p = 0; p < size * size; ++p) {
        const bool lit = (p / size) * 10 / size == labels[i];
        images[static_cast<std::size_t>(i) * size * size + p] =
            static_cast<std::uint8_t>((lit ? 160 : 0) + gen.next_u64() % 60);
      }
    }
    write_gzip_file(root + "/" + prefix + "-images-idx3-ubyte.gz", idx_file_bytes({n, size, size}, images));
    write_gzip_file(root + "/" + prefix + "-labels-idx1-ubyte.gz", idx_file_bytes({n}, labels));
  };
  write_split("train", train);
  write_split("t10k", test);
  return root;
}

}  // namespace flowgrad::testing
