// The examples' plotting library: PNG files decode with the expected size,
// CSV logs parse (empty cells included), bad input is reported.
#include "../examples/plot/plot.h"

#include <fstream>

#include "test_util.h"

using namespace flowgrad::testing;

TEST_CASE("figures with every kind of panel are written as PNG files that decode with their size") {
  TempDir dir;
  plot::Figure figure(640, 480);
  std::vector<double> matrix(12 * 12);
  for (std::size_t i = 0; i < matrix.size(); ++i) matrix[i] = static_cast<double>(i % 13);
  figure.heatmap({10, 10, 300, 220}, matrix, 12, 12, "heat map");
  figure.grayscale({330, 10, 300, 220}, std::vector<double>(28 * 28, 128.0), 28, 28, "image");
  figure.bars({10, 240, 300, 230}, {0.5, -0.2, 1.0, 0.1}, "bars", "index");
  figure.lines({330, 240, 300, 230}, {{"a", {1, 2, 3}, {3, 2, 1}}, {"b", {1, 2, 3}, {1, NAN, 2}}}, "lines", "step");
  figure.save_png(dir.file("figure.png"));
  REQUIRE(plot::png_size(dir.file("figure.png")) == std::pair<int, int>{640, 480});

  REQUIRE_THROWS_WITH(figure.heatmap({0, 0, 10, 10}, {1, 2, 3}, 2, 2, "x"), Catch::Contains("[plot] heatmap"));
  REQUIRE_THROWS_WITH(figure.save_png(dir.file("missing/dir/figure.png")), Catch::Contains("cannot write"));
  std::ofstream(dir.file("not.png")) << "not a png";
  REQUIRE_THROWS_WITH(plot::png_size(dir.file("not.png")), Catch::Contains("cannot read"));
}

TEST_CASE("read_csv reads logs with empty cells as NaN and reports malformed lines") {
  TempDir dir;
  std::ofstream(dir.file("log.csv")) << "step,train_loss,val_loss\n1,2.5,\n2,2.25,2.4\n";
  const plot::Table table = plot::read_csv(dir.file("log.csv"));
  REQUIRE(table.columns == std::vector<std::string>{"step", "train_loss", "val_loss"});
  REQUIRE(table.rows.size() == 2);
  REQUIRE(std::isnan(table.rows[0][2]));
  REQUIRE(table.rows[1] == std::vector<double>{2, 2.25, 2.4});
  REQUIRE(table.column("val_loss") == 2);
  REQUIRE_THROWS_WITH(table.column("acc"), Catch::Contains("step, train_loss, val_loss"));

  std::ofstream(dir.file("bad.csv")) << "a,b\n1,x\n";
  REQUIRE_THROWS_WITH(plot::read_csv(dir.file("bad.csv")), Catch::Contains("line 2") && Catch::Contains("\"x\""));
  std::ofstream(dir.file("short.csv")) << "a,b\n1\n";
  REQUIRE_THROWS_WITH(plot::read_csv(dir.file("short.csv")), Catch::Contains("1 cells for 2 columns"));

  // Issue 11: CRLF line ends garbled the messages; they read as plain lines now.
  const plot::Table crlf = plot::parse_csv("step,loss\r\n1,2.5\r\n2,\r\n", "crlf.csv");
  REQUIRE(crlf.columns == std::vector<std::string>{"step", "loss"});
  REQUIRE(crlf.rows.size() == 2);
  REQUIRE(crlf.rows[0] == std::vector<double>{1, 2.5});
  REQUIRE(std::isnan(crlf.rows[1][1]));
  REQUIRE_THROWS_WITH(plot::parse_csv("a,b\r\n1,x\ry\r\n", "cr.csv"),
                      Catch::Contains("cr.csv line 2: \"x\\x0dy\" is not a number"));
  REQUIRE_THROWS_WITH(plot::parse_csv("", "empty.csv"), Catch::Contains("empty.csv has no header row"));
  REQUIRE_THROWS_WITH(plot::read_csv(dir.file("missing.csv")), Catch::Contains("cannot open"));
}
