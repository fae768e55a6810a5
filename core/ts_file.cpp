#include "ts_file.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "error.h"
#include "file_io.h"

namespace flowgrad {

namespace {

constexpr const char* kOp = "read_ts";
constexpr const char* kKnownKeywords =
    "@problemName, @timeStamps, @missing, @univariate, @dimensions, @equalLength, @seriesLength, @classLabel, @data";

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "NaN" in any case, without building a string (this runs for every value).
bool is_nan_word(std::string_view text) {
  return text.size() == 3 && std::tolower(static_cast<unsigned char>(text[0])) == 'n' &&
         std::tolower(static_cast<unsigned char>(text[1])) == 'a' &&
         std::tolower(static_cast<unsigned char>(text[2])) == 'n';
}

// Splits on runs of blanks (the header's words).
std::vector<std::string_view> words(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  while ((pos = text.find_first_not_of(" \t", pos)) != std::string_view::npos) {
    const std::size_t end = std::min(text.find_first_of(" \t", pos), text.size());
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

class TsParser {
 public:
  TsParser(std::string_view text, const std::string& name) : text_(text), ctx_{kOp, name} {}

  TsDataset parse() {
    try {
      return parse_lines();
    } catch (const std::bad_alloc&) {
      fail_at_end("out of memory after ", data_.values.size(), " values of ", data_.cases(), " cases");
    }
  }

 private:
  TsDataset parse_lines() {
    constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";  // some editors start a file with it
    if (text_.starts_with(kUtf8Bom)) position_ = kUtf8Bom.size();
    bool in_data = false;
    std::string_view line;
    while (next_line(line)) {
      line = trim(line);
      if (line.empty() || line.front() == '#') continue;
      if (in_data) {
        read_case(line);
      } else if (line.front() != '@') {
        fail("expected a header line starting with '@' or a comment starting with '#', found '", excerpt(line, 40),
             "'");
      } else {
        in_data = read_header_line(line);
      }
    }
    if (!in_data) fail_at_end("the file ends before its @data line");
    if (data_.cases() == 0) fail_at_end("no cases after @data");
    return std::move(data_);
  }

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    ctx_.fail("line ", line_number_, ": ", parts...);
  }
  template <class... Parts>
  [[noreturn]] void fail_at_end(const Parts&... parts) const {
    ctx_.fail(parts...);
  }

  // The next line without its '\n' (or "\r\n"); false at the end.
  bool next_line(std::string_view& line) {
    if (position_ >= text_.size()) return false;
    const std::size_t end = std::min(text_.find('\n', position_), text_.size());
    line = text_.substr(position_, end - position_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    position_ = end + 1;
    ++line_number_;
    return true;
  }

  bool parse_bool(std::string_view keyword, std::string_view word) const {
    const std::string value = lowercase(word);
    if (value == "true") return true;
    if (value == "false") return false;
    fail(keyword, " must be followed by true or false, not '", excerpt(word, 40), "'");
  }

  std::int64_t parse_count(std::string_view keyword, std::string_view word) const {
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(word.data(), word.data() + word.size(), value);
    if (error != std::errc() || end != word.data() + word.size() || value < 1)
      fail(keyword, " must be followed by a positive integer, not '", excerpt(word, 40), "'");
    return value;
  }

  // One "@keyword arguments" line; true for @data.
  bool read_header_line(std::string_view line) {
    const std::vector<std::string_view> parts = words(line);
    const std::string_view keyword = parts[0];
    const std::string key = lowercase(keyword);
    static const std::set<std::string> kKeys{"@problemname", "@timestamps", "@missing",     "@univariate", "@dimensions",
                                             "@equallength", "@serieslength", "@classlabel", "@data"};
    if (key == "@targetlabel")
      fail("@targetLabel: regression problems (a number to predict per case) are not supported; "
           "classification files have @classLabel");
    if (!kKeys.contains(key)) fail("unknown keyword '", excerpt(keyword, 40), "' (known: ", kKnownKeywords, ")");
    if (!seen_.insert(key).second) fail(keyword, " appears twice in the header");
    const std::size_t arguments = parts.size() - 1;
    auto expect_one = [&] {
      if (arguments != 1) fail(keyword, " takes one value, found ", arguments);
    };
    if (key == "@problemname") {
      if (arguments == 0) fail("@problemName has no name");
      data_.problem_name = std::string(trim(line.substr(keyword.size())));
    } else if (key == "@timestamps") {
      expect_one();
      if (parse_bool(keyword, parts[1]))
        fail("@timeStamps true (values written as (timestamp,value) pairs) is not supported; "
             "the UEA and UCR archives write plain values (@timeStamps false)");
    } else if (key == "@missing") {
      expect_one();
      data_.missing = parse_bool(keyword, parts[1]);
    } else if (key == "@univariate") {
      expect_one();
      univariate_ = parse_bool(keyword, parts[1]);
    } else if (key == "@dimensions") {
      expect_one();
      declared_dimensions_ = parse_count(keyword, parts[1]);
    } else if (key == "@equallength") {
      expect_one();
      data_.equal_length = parse_bool(keyword, parts[1]);
    } else if (key == "@serieslength") {
      expect_one();
      declared_length_ = parse_count(keyword, parts[1]);
    } else if (key == "@classlabel") {
      if (arguments == 0) fail("@classLabel must be followed by true and the labels, or by false");
      labelled_ = parse_bool(keyword, parts[1]);
      if (labelled_ && arguments == 1) fail("@classLabel true must be followed by the class labels");
      if (!labelled_ && arguments > 1) fail("@classLabel false must not be followed by labels");
      for (std::size_t i = 2; i < parts.size(); ++i) {
        if (label_index_.contains(parts[i])) fail("the class label '", excerpt(parts[i], 40), "' is listed twice");
        label_index_.emplace(parts[i], static_cast<std::int64_t>(data_.class_labels.size()));
        data_.class_labels.emplace_back(parts[i]);
      }
    } else {  // @data
      if (arguments != 0) fail("@data takes no value; the cases start on the next line");
      check_header();
      return true;
    }
    return false;
  }

  // Contradictions between header lines, found once the header is complete.
  void check_header() {
    if (!seen_.contains("@classlabel"))
      fail("the header has no @classLabel line (@classLabel true LABEL... or @classLabel false)");
    if (univariate_ && declared_dimensions_ && *declared_dimensions_ != 1)
      fail("@univariate true but @dimensions ", *declared_dimensions_);
    if (univariate_ && !declared_dimensions_) declared_dimensions_ = 1;
    if (declared_length_ && seen_.contains("@equallength") && !data_.equal_length)
      fail("@seriesLength ", *declared_length_, " but @equalLength false");
    if (declared_dimensions_) data_.dimensions = *declared_dimensions_;
  }

  // One value: a finite number within float's range (tiny magnitudes round
  // to 0, as a float cannot hold them), or '?' (also NaN, as aeon writes
  // it) for a missing one. `dimension` counts from 0.
  float parse_value(std::string_view field, std::int64_t dimension) const {
    const std::string_view text = trim(field);
    if (text.empty()) fail("dimension ", dimension, " has an empty value (two commas in a row, or a trailing comma)");
    if (text == "?" || is_nan_word(text)) {
      if (!data_.missing)
        fail("a missing value '", text, "' in dimension ", dimension, " but the header does not allow them (",
             seen_.contains("@missing") ? "@missing false" : "no @missing true", ")");
      return std::numeric_limits<float>::quiet_NaN();
    }
    // from_chars takes no leading '+'; one is allowed before a digit or '.'.
    const bool plus = text.front() == '+' && text.size() > 1 && text[1] != '+' && text[1] != '-';
    const char* first = text.data() + (plus ? 1 : 0);
    const char* last = text.data() + text.size();
    double value = 0;
    const auto [end, error] = std::from_chars(first, last, value);
    if (end != last || (error != std::errc() && error != std::errc::result_out_of_range) || !std::isfinite(value))
      fail("'", excerpt(text, 40), "' in dimension ", dimension,
           " is not a number (values are finite decimal numbers, '?' when missing)");
    if (error == std::errc::result_out_of_range &&
        (text.find("e-") != std::string_view::npos || text.find("E-") != std::string_view::npos))
      return text.front() == '-' ? -0.0f : 0.0f;  // below float's (and double's) range
    constexpr double kFloatMax = std::numeric_limits<float>::max();
    constexpr double kRoundsToFloatMax = kFloatMax * (1.0 + 0x1p-25);  // below this, the nearest float is the largest
    if (error == std::errc::result_out_of_range || std::abs(value) >= kRoundsToFloatMax)
      fail("the value '", excerpt(text, 40), "' in dimension ", dimension, " is out of the range of a float");
    if (std::abs(value) > kFloatMax) return value < 0 ? -std::numeric_limits<float>::max() : std::numeric_limits<float>::max();
    return static_cast<float>(value);
  }

  // One case: its dimensions parsed into `case_values_` one after another
  // (each as long as the first), then stored time-major.
  void read_case(std::string_view line) {
    std::int64_t label = -1;
    std::string_view series = line;
    if (labelled_) {
      const std::size_t colon = line.rfind(':');
      if (colon == std::string_view::npos)
        fail("a case needs its dimensions and a class label after the last ':', found no ':' (a truncated line?)");
      const std::string_view name = trim(line.substr(colon + 1));
      const auto found = label_index_.find(name);
      if (found == label_index_.end()) {
        const auto fields = static_cast<std::int64_t>(std::count(line.begin(), line.end(), ':'));
        fail("the class label '", excerpt(name, 40), "' is not one of the ", data_.class_labels.size(),
             " listed by @classLabel", fields < data_.dimensions ? " (the line has too few dimensions: truncated?)" : "");
      }
      label = found->second;
      series = line.substr(0, colon);
    }

    case_values_.clear();
    std::int64_t dimensions = 0, length = -1;
    std::size_t start = 0;
    while (true) {  // each ':'-separated dimension
      const std::size_t colon = std::min(series.find(':', start), series.size());
      const std::string_view dimension = series.substr(start, colon - start);
      if (trim(dimension).empty()) fail("dimension ", dimensions, " is empty (no values between two ':')");
      const std::size_t before = case_values_.size();
      std::size_t value_start = 0;
      while (true) {  // each ','-separated value
        const std::size_t comma = std::min(dimension.find(',', value_start), dimension.size());
        case_values_.push_back(parse_value(dimension.substr(value_start, comma - value_start), dimensions));
        if (comma == dimension.size()) break;
        value_start = comma + 1;
      }
      const auto n = static_cast<std::int64_t>(case_values_.size() - before);
      if (length >= 0 && n != length)
        fail("dimension ", dimensions, " has ", n, " values but dimension 0 has ", length,
             " (the dimensions of a case have one length)");
      length = n;
      ++dimensions;
      if (data_.dimensions > 0 && dimensions > data_.dimensions) break;  // reported below
      if (colon == series.size()) break;
      start = colon + 1;
    }
    if (data_.dimensions == 0) data_.dimensions = dimensions;  // the first case sets it
    if (dimensions != data_.dimensions)
      fail("the case has ", dimensions > data_.dimensions ? "at least " : "", dimensions, " dimension",
           dimensions == 1 ? "" : "s", " but ", declared_dimensions_ ? "the header declares " : "the first case has ",
           data_.dimensions);
    check_length(length);
    data_.offsets.push_back(static_cast<std::int64_t>(data_.values.size()));
    data_.lengths.push_back(length);
    if (labelled_) data_.labels.push_back(label);
    for (std::int64_t t = 0; t < length; ++t)
      for (std::int64_t d = 0; d < dimensions; ++d) data_.values.push_back(case_values_[static_cast<std::size_t>(d * length + t)]);
  }

  void check_length(std::int64_t length) const {
    if (declared_length_ && length != *declared_length_)
      fail("the case has ", length, " time steps but @seriesLength is ", *declared_length_);
    if (data_.equal_length && !data_.lengths.empty() && length != data_.lengths.front())
      fail("the case has ", length, " time steps but the first case has ", data_.lengths.front(),
           " and the header says @equalLength true");
  }

  std::string_view text_;
  FileContext ctx_;
  std::size_t position_ = 0;
  std::int64_t line_number_ = 0;
  std::set<std::string> seen_;  // lowercase keywords read so far
  bool univariate_ = false, labelled_ = false;
  std::optional<std::int64_t> declared_dimensions_, declared_length_;
  std::map<std::string, std::int64_t, std::less<>> label_index_;
  std::vector<float> case_values_;  // scratch: one case, dimension after dimension
  TsDataset data_;
};

}  // namespace

std::int64_t TsDataset::max_length() const {
  return lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
}

float TsDataset::value(std::int64_t i, std::int64_t t, std::int64_t d) const {
  if (i < 0 || i >= cases() || t < 0 || t >= lengths[static_cast<std::size_t>(i)] || d < 0 || d >= dimensions)
    fail("TsDataset::value", "case ", i, ", time step ", t, ", dimension ", d, " is outside the data (", cases(),
         " cases of ", dimensions, " dimensions, each as long as lengths says)");
  return values[static_cast<std::size_t>(offsets[static_cast<std::size_t>(i)] + t * dimensions + d)];
}

TsDataset read_ts(const std::string& path) { return parse_ts(read_file_contents(kOp, path), path); }

TsDataset parse_ts(std::string_view text, const std::string& name) { return TsParser(text, name).parse(); }

}  // namespace flowgrad
