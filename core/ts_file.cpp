#include "ts_file.h"

#include <algorithm>
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

// Splits on `separator`, keeping empty fields (they are errors the caller names).
std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = text.find(separator, start);
    fields.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return fields;
    start = end + 1;
  }
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

 private:
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

  // One value: a finite number that fits a float, or '?' for a missing one.
  float parse_value(std::string_view field, std::int64_t dimension) {
    const std::string_view text = trim(field);
    if (text.empty()) fail("dimension ", dimension, " has an empty value (two commas in a row, or a trailing comma)");
    if (text == "?") {
      if (!data_.missing) fail("a missing value '?' in dimension ", dimension, " but the header says @missing false");
      return std::numeric_limits<float>::quiet_NaN();
    }
    // from_chars takes no leading '+'; one is allowed before a digit or '.'.
    const bool plus = text.front() == '+' && text.size() > 1 && text[1] != '+' && text[1] != '-';
    const char* first = text.data() + (plus ? 1 : 0);
    double value = 0;
    const auto [end, error] = std::from_chars(first, text.data() + text.size(), value);
    const bool parsed = end == text.data() + text.size();
    if (parsed && (error == std::errc::result_out_of_range ||
                   (error == std::errc() && std::isfinite(value) && std::abs(value) > std::numeric_limits<float>::max())))
      fail("the value '", excerpt(text, 40), "' in dimension ", dimension, " is out of the range of a float");
    if (error != std::errc() || !parsed || !std::isfinite(value))
      fail("'", excerpt(text, 40), "' in dimension ", dimension,
           " is not a number (values are finite decimal numbers, '?' when missing)");
    return static_cast<float>(value);
  }

  void read_case(std::string_view line) {
    std::vector<std::string_view> fields = split(line, ':');
    std::int64_t label = -1;
    if (labelled_) {
      if (fields.size() < 2)
        fail("a case needs its dimensions and a class label after the last ':', found ", fields.size(),
             " field (a truncated line?)");
      const std::string_view name = trim(fields.back());
      const auto found = label_index_.find(name);
      if (found == label_index_.end())
        fail("the class label '", excerpt(name, 40), "' is not one of the ", data_.class_labels.size(),
             " listed by @classLabel", fields.size() - 1 < static_cast<std::size_t>(data_.dimensions)
                                                ? " (the line has too few dimensions: truncated?)"
                                                : "");
      label = found->second;
      fields.pop_back();
    }
    const auto dimensions = static_cast<std::int64_t>(fields.size());
    if (data_.dimensions == 0) data_.dimensions = dimensions;  // the first case sets it
    if (dimensions != data_.dimensions)
      fail("the case has ", dimensions, " dimension", dimensions == 1 ? "" : "s", " but ",
           declared_dimensions_ ? "the header declares " : "the first case has ", data_.dimensions);

    // Each dimension's values, then interleaved time-major.
    std::int64_t length = -1;
    case_values_.resize(static_cast<std::size_t>(dimensions));
    for (std::int64_t d = 0; d < dimensions; ++d) {
      std::vector<float>& series = case_values_[static_cast<std::size_t>(d)];
      series.clear();
      for (std::string_view field : split(fields[static_cast<std::size_t>(d)], ',')) series.push_back(parse_value(field, d));
      const auto n = static_cast<std::int64_t>(series.size());
      if (length >= 0 && n != length)
        fail("dimension ", d, " has ", n, " values but dimension 0 has ", length,
             " (the dimensions of a case have one length)");
      length = n;
    }
    check_length(length);
    data_.offsets.push_back(static_cast<std::int64_t>(data_.values.size()));
    data_.lengths.push_back(length);
    if (labelled_) data_.labels.push_back(label);
    for (std::int64_t t = 0; t < length; ++t)
      for (std::int64_t d = 0; d < dimensions; ++d)
        data_.values.push_back(case_values_[static_cast<std::size_t>(d)][static_cast<std::size_t>(t)]);
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
  std::vector<std::vector<float>> case_values_;  // scratch: one case, per dimension
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
