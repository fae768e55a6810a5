// plot: curves from the CSV logs of the examples as one PNG.
//
//   plot LOG.csv [LOG.csv ...] --out curves.png [--x COLUMN]
//
// One panel per column other than the x column (default: the first, e.g.
// step or epoch), one line per file, named after the file's directory
// (e.g. runs/flow/log.csv -> "flow"). Empty cells (e.g. val_loss on steps
// without evaluation) are skipped.
#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "plot.h"

int main(int argc, char** argv) {
  CLI::App app{"plot: loss/accuracy curves from CSV logs as a PNG"};
  std::vector<std::string> logs;
  std::string out, x_column;
  app.add_option("logs", logs, "CSV logs with a header row")->required()->check(CLI::ExistingFile);
  app.add_option("--out", out, "PNG file to write")->required();
  app.add_option("--x", x_column, "column for the x axis (default: the first)");
  CLI11_PARSE(app, argc, argv);
  try {
    std::vector<plot::Table> tables;
    for (const std::string& log : logs) tables.push_back(plot::read_csv(log));
    const std::string x_name = x_column.empty() ? tables[0].columns.at(0) : x_column;
    tables[0].column(x_name);  // throws when missing
    // One panel per column but x, in one PNG whose height cairo bounds (32767 pixels).
    constexpr std::size_t kMaxPanels = 100;
    if (tables[0].columns.size() - 1 > kMaxPanels)
      throw std::runtime_error("[plot] " + logs[0] + " has " + std::to_string(tables[0].columns.size() - 1) +
                               " columns to plot; one picture holds at most " + std::to_string(kMaxPanels) +
                               " panels");
    std::vector<std::string> y_names;
    for (const std::string& c : tables[0].columns)
      if (c != x_name) y_names.push_back(c);
    if (y_names.empty()) throw std::runtime_error("[plot] " + logs[0] + " has no column to plot against " + x_name);

    const int panel_height = 220, width = 720;
    plot::Figure figure(width, panel_height * static_cast<int>(y_names.size()) + 10);
    for (std::size_t p = 0; p < y_names.size(); ++p) {
      std::vector<plot::Series> series;
      for (std::size_t f = 0; f < tables.size(); ++f) {
        const int x = tables[f].column(x_name), y = tables[f].column(y_names[p]);
        plot::Series s{std::filesystem::path(logs[f]).parent_path().filename().string(), {}, {}};
        if (s.name.empty()) s.name = logs[f];
        for (const auto& row : tables[f].rows) {
          s.x.push_back(row[static_cast<std::size_t>(x)]);
          s.y.push_back(row[static_cast<std::size_t>(y)]);
        }
        series.push_back(std::move(s));
      }
      figure.lines({10, 10.0 + panel_height * static_cast<double>(p), width - 20.0, panel_height - 10.0}, series,
                   y_names[p], x_name);
    }
    figure.save_png(out);
    std::cout << "wrote " << out << " (" << y_names.size() << " panels, " << logs.size() << " runs)\n";
  } catch (const std::exception& error) {
    std::cerr << "plot: " << error.what() << '\n';
    return 1;
  }
  return 0;
}
