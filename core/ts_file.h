// Reading .ts files, the text format of the UEA/UCR time series archives
// (as sktime and aeon write them): a header of @keyword lines, then @data
// and one case per line. A case is its dimensions (channels) separated by
// ':', each a comma-separated series of values, and, when the header says
// @classLabel true, the class label as the last ':' field:
//
//   # comments start with '#'
//   @problemName Toy
//   @timeStamps false
//   @missing true
//   @univariate false
//   @dimensions 2
//   @equalLength false
//   @classLabel true up down
//   @data
//   0.5,1.0,?,2.0:1,2,3,4:up
//   3,2,1:1,1,1:down
//
// Keywords are case-insensitive; a leading UTF-8 byte order mark is
// skipped. '?' (or NaN) is a missing value, allowed only with @missing
// true; a case's dimensions all have the same length; with
// @equalLength true every case has the @seriesLength given (when given);
// @univariate true means one dimension, @dimensions states how many. Values
// given as (timestamp,value) pairs (@timeStamps true) and regression files
// (@targetLabel) are not supported: no classification problem of the
// archives uses them, and the error says so. Values are read as floats: a
// magnitude beyond float's range is an error, one below it becomes 0.
//
// The file is untrusted: every defect (unknown or repeated keyword, a label
// outside the list, a dimension count or length that differs from the
// header or from the first case, a value that is not a finite number, a
// truncated line, no @data) throws a flowgrad::Error
// "[read_ts] 'path': line N: reason" (dimensions are counted from 0), or
// "out of memory". Memory grows only with the values present.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace flowgrad {

struct TsDataset {
  std::string problem_name;              // empty when the header has no @problemName
  std::int64_t dimensions = 0;           // channels per time step
  bool equal_length = false;             // what the header says
  bool missing = false;                  // the header allows '?'
  std::vector<std::string> class_labels;  // @classLabel's list, in its order; empty: unlabelled
  // Case i: lengths[i] time steps starting at offsets[i] in `values`,
  // time-major ([length][dimensions]); a missing value is NaN. labels[i] is
  // an index into class_labels (empty vector when unlabelled).
  std::vector<std::int64_t> lengths, offsets, labels;
  std::vector<float> values;

  std::int64_t cases() const { return static_cast<std::int64_t>(lengths.size()); }
  std::int64_t max_length() const;
  // Value of case i at time step t, dimension d (NaN when missing).
  float value(std::int64_t i, std::int64_t t, std::int64_t d) const;
};

TsDataset read_ts(const std::string& path);
// The same from a file's text in memory; `name` stands for the path in messages.
TsDataset parse_ts(std::string_view text, const std::string& name = "<memory>");

}  // namespace flowgrad
