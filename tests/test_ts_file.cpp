// The .ts reader (UEA/UCR time series archive format): hand-written files in
// tests/data/ts, and every defect of an untrusted file as a clear error
// naming the file, the line and the reason.
#include <cmath>
#include <limits>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

const std::string kDataDir = std::string(FLOWGRAD_SOURCE_DIR) + "/tests/data/ts/";

// A valid two-dimension header; `extra` lines go before @data.
std::string header(const std::string& extra = "", const std::string& labels = "@classLabel true a b\n") {
  return "@problemName T\n@missing true\n@dimensions 2\n" + extra + labels + "@data\n";
}

void expect_error(const std::string& text, const std::string& reason, int line) {
  INFO(text);
  CHECK_THROWS_WITH(parse_ts(text, "bad.ts"), Catch::StartsWith("[read_ts] 'bad.ts'") &&
                                                  Catch::Contains(line > 0 ? "line " + std::to_string(line) + ": " : "") &&
                                                  Catch::Contains(reason));
}

}  // namespace

TEST_CASE("read_ts reads every header keyword, unequal lengths, missing values and labels") {
  const TsDataset toy = read_ts(kDataDir + "Toy_TRAIN.ts");
  CHECK(toy.problem_name == "Toy Problem");
  CHECK(toy.dimensions == 2);
  CHECK_FALSE(toy.equal_length);
  CHECK(toy.missing);
  CHECK(toy.class_labels == std::vector<std::string>{"up", "down", "flat"});
  CHECK(toy.lengths == std::vector<std::int64_t>{4, 3, 2, 1});
  CHECK(toy.labels == std::vector<std::int64_t>{0, 1, 2, 0});
  CHECK(toy.max_length() == 4);
  // Time-major within a case: step t holds every dimension.
  CHECK(toy.value(0, 0, 0) == 0.5f);
  CHECK(toy.value(0, 0, 1) == 1.0f);
  CHECK(toy.value(0, 3, 0) == 2.0f);
  CHECK(toy.value(0, 3, 1) == 4.0f);
  CHECK(std::isnan(toy.value(0, 2, 0)));
  CHECK(toy.value(0, 2, 1) == 3.0f);
  CHECK(toy.value(1, 1, 0) == 0.25f);  // 2.5e-1
  CHECK(toy.value(1, 1, 1) == 1.0f);   // blanks around values
  CHECK(toy.value(2, 1, 0) == 7.0f);   // +7
  CHECK((std::isnan(toy.value(2, 0, 1)) && std::isnan(toy.value(2, 1, 1))));
  CHECK(toy.value(3, 0, 0) == 100.0f);  // 1E2
  CHECK(toy.value(3, 0, 1) == -3.25f);
  CHECK(toy.values.size() == 2 * (4 + 3 + 2 + 1));
  CHECK_THROWS_WITH(toy.value(3, 1, 0), Catch::Contains("TsDataset::value") && Catch::Contains("time step 1"));

  // Univariate, equal length with @seriesLength, lower-case keywords, CRLF line ends.
  const TsDataset beeps = read_ts(kDataDir + "Beeps_TEST.ts");
  CHECK(beeps.problem_name == "Beeps");
  CHECK(beeps.dimensions == 1);
  CHECK(beeps.equal_length);
  CHECK_FALSE(beeps.missing);
  CHECK(beeps.lengths == std::vector<std::int64_t>{3, 3});
  CHECK(beeps.labels == std::vector<std::int64_t>{1, 0});  // labels "2", "1" in the list's order "1 2"
  CHECK(beeps.values == std::vector<float>{1, 2, 3, 4, 5, 6});
}

TEST_CASE("parse_ts: a byte order mark, NaN as missing, the float range's edges") {
  const TsDataset data = parse_ts("\xEF\xBB\xBF@missing true\n@classLabel true x\n@data\n"
                                  "NaN,nan,3.4028235e+38,-3.4028235e+38,1e-400,-1e-50,1e-40,.5,1.:x\n");
  CHECK(std::isnan(data.values[0]));
  CHECK(std::isnan(data.values[1]));
  CHECK(data.values[2] == std::numeric_limits<float>::max());  // numpy's shortest text for it
  CHECK(data.values[3] == -std::numeric_limits<float>::max());
  CHECK(data.values[4] == 0.0f);
  CHECK((data.values[5] == 0.0f && std::signbit(data.values[5])));
  CHECK(data.values[6] == 1e-40f);  // a subnormal float
  CHECK(data.values[7] == 0.5f);
  CHECK(data.values[8] == 1.0f);
}

TEST_CASE("parse_ts: unlabelled files, and the dimension count taken from the first case") {
  const TsDataset data = parse_ts("@classLabel false\n@data\n1,2:3,4:5,6\n7:8:9\n");
  CHECK(data.dimensions == 3);
  CHECK(data.class_labels.empty());
  CHECK(data.labels.empty());
  CHECK(data.lengths == std::vector<std::int64_t>{2, 1});
  CHECK(data.value(0, 1, 2) == 6.0f);
  CHECK(data.value(1, 0, 1) == 8.0f);
}

TEST_CASE("read_ts rejects every malformed file with its file, line and reason") {
  // Header lines.
  expect_error("@problemName T\n@colour blue\n", "unknown keyword '@colour' (known: @problemName", 2);
  expect_error("@missing true\n@MISSING false\n", "@MISSING appears twice in the header", 2);
  expect_error("@missing maybe\n", "@missing must be followed by true or false, not 'maybe'", 1);
  expect_error("@missing\n", "@missing takes one value, found 0", 1);
  expect_error("@dimensions 0\n", "@dimensions must be followed by a positive integer, not '0'", 1);
  expect_error("@seriesLength 1.5\n", "@seriesLength must be followed by a positive integer, not '1.5'", 1);
  expect_error("@timeStamps true\n", "@timeStamps true (values written as (timestamp,value) pairs) is not supported", 1);
  expect_error("@classLabel true\n", "@classLabel true must be followed by the class labels", 1);
  expect_error("@classLabel false a\n", "@classLabel false must not be followed by labels", 1);
  expect_error("@classLabel true a b a\n", "the class label 'a' is listed twice", 1);
  expect_error("@problemName\n", "@problemName has no name", 1);
  expect_error("@data now\n", "@data takes no value", 1);
  expect_error("problemName T\n", "expected a header line starting with '@'", 1);
  expect_error("@dimensions 2\n@data\n", "the header has no @classLabel line", 2);
  expect_error("@univariate true\n@dimensions 3\n@classLabel false\n@data\n", "@univariate true but @dimensions 3", 4);
  expect_error("@equalLength false\n@seriesLength 4\n@classLabel false\n@data\n", "@seriesLength 4 but @equalLength false", 4);
  expect_error("@problemName T\n# no data\n", "the file ends before its @data line", 0);
  expect_error(header(), "no cases after @data", 0);

  // Cases.
  expect_error(header() + "1,2:3,4:c\n", "the class label 'c' is not one of the 2 listed by @classLabel", 6);
  expect_error(header() + "1,2:3,4:a\n1,2:b\n", "the case has 1 dimension but the header declares 2", 7);
  expect_error(header("", "@classLabel false\n") + "1:2\n1:2:3\n", "the case has at least 3 dimensions but the header declares 2", 7);
  expect_error("@classLabel false\n@data\n1:2\n1\n", "the case has 1 dimension but the first case has 2", 4);
  expect_error(header() + "1,2:3,x:a\n", "'x' in dimension 1 is not a number", 6);
  expect_error(header() + "1,2:3,nanx:a\n", "'nanx' in dimension 1 is not a number", 6);
  expect_error(header() + "1,2:3,inf:a\n", "'inf' in dimension 1 is not a number", 6);
  expect_error(header() + "1,2:3,+-4:a\n", "'+-4' in dimension 1 is not a number", 6);
  expect_error(header() + "1,2:3,4e39:a\n", "the value '4e39' in dimension 1 is out of the range of a float", 6);
  expect_error(header() + "1,,2:3,4,5:a\n", "dimension 0 has an empty value", 6);
  expect_error(header() + "1,2,:3,4,5:a\n", "dimension 0 has an empty value", 6);
  expect_error(header() + "1,2,3:3,4:a\n", "dimension 1 has 2 values but dimension 0 has 3", 6);
  expect_error("@missing false\n@classLabel false\n@data\n1,?\n", "a missing value '?' in dimension 0 but the header does not allow them (@missing false)", 4);
  expect_error(header("@equalLength true\n@seriesLength 3\n") + "1,2,3:4,5,6:a\n1,2:4,5:b\n",
               "the case has 2 time steps but @seriesLength is 3", 9);
  expect_error(header("@equalLength true\n") + "1,2,3:4,5,6:a\n1,2:4,5:b\n",
               "the case has 2 time steps but the first case has 3 and the header says @equalLength true", 8);
  // A truncated last line: its label is missing.
  expect_error(header() + "1,2:3,4:a\n1,2:3", "the class label '3' is not one of the 2 listed by @classLabel (the line has too few dimensions: truncated?)", 7);
  expect_error(header() + "1,2,3", "a case needs its dimensions and a class label after the last ':', found no ':' (a truncated line?)", 6);
  expect_error(header() + "1,2::3,4:a\n", "dimension 1 is empty (no values between two ':')", 6);
  expect_error("@classLabel false\n@data\n1,NaN\n", "a missing value 'NaN' in dimension 0 but the header does not allow them (no @missing true)", 3);
  expect_error("@targetLabel true\n", "@targetLabel: regression problems", 1);
  expect_error(header() + "1,2:3,3.4028236e+38:a\n", "the value '3.4028236e+38' in dimension 1 is out of the range of a float", 6);
  // Binary garbage is quoted with escapes, cut short.
  expect_error(header() + std::string("1,\x01\xff", 4) + ":3:a\n", "'\\x01\\xff' in dimension 0 is not a number", 6);

  // Through a file: the message names its path.
  TempDir dir;
  write_bytes(dir.file("X_TRAIN.ts"), header() + "1:2:z\n");
  CHECK_THROWS_WITH(read_ts(dir.file("X_TRAIN.ts")),
                    Catch::Contains("'" + dir.file("X_TRAIN.ts") + "': line 6: the class label 'z'"));
  CHECK_THROWS_WITH(read_ts(dir.file("missing.ts")), Catch::Contains("[read_ts]") && Catch::Contains("missing.ts"));
}
