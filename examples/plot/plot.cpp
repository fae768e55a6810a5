#include "plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace plot {

namespace {

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error("[plot] " + message); }

// A perceptually ordered dark-to-bright map (control points of viridis).
std::array<double, 3> colour(double t) {
  static constexpr std::array<std::array<double, 3>, 5> stops{{{0.267, 0.005, 0.329},
                                                               {0.229, 0.322, 0.546},
                                                               {0.128, 0.567, 0.551},
                                                               {0.369, 0.789, 0.383},
                                                               {0.993, 0.906, 0.144}}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * (stops.size() - 1);
  const std::size_t i = std::min(static_cast<std::size_t>(t), stops.size() - 2);
  const double f = t - static_cast<double>(i);
  return {stops[i][0] + f * (stops[i + 1][0] - stops[i][0]), stops[i][1] + f * (stops[i + 1][1] - stops[i][1]),
          stops[i][2] + f * (stops[i + 1][2] - stops[i][2])};
}

const std::array<std::array<double, 3>, 6> kSeriesColours{
    {{0.12, 0.47, 0.71}, {1.0, 0.5, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16}, {0.58, 0.4, 0.74}, {0.55, 0.34, 0.29}}};

std::string format_tick(double value) {
  std::ostringstream out;
  out.precision(3);
  out << value;
  return out.str();
}

std::pair<double, double> finite_range(const std::vector<double>& values) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo)) return {0.0, 1.0};
  if (hi == lo) hi = lo + 1.0;
  return {lo, hi};
}

}  // namespace

Figure::Figure(int width, int height)
    : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height)), cr_(cairo_create(surface_.get())) {
  if (width < 1 || height < 1 || cairo_surface_status(surface_.get()) != CAIRO_STATUS_SUCCESS)
    fail("cannot create a " + std::to_string(width) + "x" + std::to_string(height) + " figure");
  cairo_set_source_rgb(cr_.get(), 1, 1, 1);
  cairo_paint(cr_.get());
  cairo_select_font_face(cr_.get(), "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
}

void Figure::text(double x, double y, const std::string& text, double size) {
  cairo_set_source_rgb(cr_.get(), 0, 0, 0);
  cairo_set_font_size(cr_.get(), size);
  cairo_move_to(cr_.get(), x, y);
  cairo_show_text(cr_.get(), text.c_str());
}

Rect Figure::plot_area(const Rect& panel, const std::string& title) {
  text(panel.x, panel.y + 14, title, 13);
  return {panel.x, panel.y + 22, panel.width, panel.height - 22};
}

void Figure::heatmap(const Rect& panel, const std::vector<double>& values, int rows, int cols,
                     const std::string& title) {
  if (rows < 1 || cols < 1 || values.size() != static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols))
    fail("heatmap: " + std::to_string(values.size()) + " values for " + std::to_string(rows) + "x" +
         std::to_string(cols));
  const Rect area = plot_area(panel, title);
  const double bar_width = 14, label_width = 48;
  const double cell = std::min((area.width - bar_width - label_width - 8) / cols, area.height / rows);
  const auto [lo, hi] = finite_range(values);
  cairo_t* cr = cr_.get();
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const auto [red, green, blue] = colour((values[static_cast<std::size_t>(r * cols + c)] - lo) / (hi - lo));
      cairo_set_source_rgb(cr, red, green, blue);
      cairo_rectangle(cr, area.x + c * cell, area.y + r * cell, cell + 0.5, cell + 0.5);  // no hairline gaps
      cairo_fill(cr);
    }
  // Colour bar with its range.
  const double bar_x = area.x + cols * cell + 8, bar_height = rows * cell;
  for (int i = 0; i < 64; ++i) {
    const auto [red, green, blue] = colour(1.0 - i / 63.0);
    cairo_set_source_rgb(cr, red, green, blue);
    cairo_rectangle(cr, bar_x, area.y + i * bar_height / 64, bar_width, bar_height / 64 + 0.5);
    cairo_fill(cr);
  }
  text(bar_x + bar_width + 3, area.y + 10, format_tick(hi), 10);
  text(bar_x + bar_width + 3, area.y + bar_height, format_tick(lo), 10);
}

void Figure::grayscale(const Rect& panel, const std::vector<double>& values, int rows, int cols,
                       const std::string& title) {
  if (rows < 1 || cols < 1 || values.size() != static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols))
    fail("grayscale: " + std::to_string(values.size()) + " values for " + std::to_string(rows) + "x" +
         std::to_string(cols));
  const Rect area = plot_area(panel, title);
  const double cell = std::min(area.width / cols, area.height / rows);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const double g = std::clamp(values[static_cast<std::size_t>(r * cols + c)] / 255.0, 0.0, 1.0);
      cairo_set_source_rgb(cr_.get(), g, g, g);
      cairo_rectangle(cr_.get(), area.x + c * cell, area.y + r * cell, cell + 0.5, cell + 0.5);
      cairo_fill(cr_.get());
    }
}

void Figure::axes(const Rect& area, double x_min, double x_max, double y_min, double y_max,
                  const std::string& x_label) {
  cairo_t* cr = cr_.get();
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_set_line_width(cr, 1);
  cairo_move_to(cr, area.x, area.y);
  cairo_line_to(cr, area.x, area.y + area.height);
  cairo_line_to(cr, area.x + area.width, area.y + area.height);
  cairo_stroke(cr);
  for (int i = 0; i <= 4; ++i) {
    const double y = area.y + area.height * (1.0 - i / 4.0);
    text(area.x - 44, y + 4, format_tick(y_min + (y_max - y_min) * i / 4.0), 10);
    const double x = area.x + area.width * i / 4.0;
    text(x - 10, area.y + area.height + 14, format_tick(x_min + (x_max - x_min) * i / 4.0), 10);
  }
  text(area.x + area.width / 2 - 20, area.y + area.height + 28, x_label, 11);
}

void Figure::bars(const Rect& panel, const std::vector<double>& values, const std::string& title,
                  const std::string& x_label) {
  if (values.empty()) fail("bars: no values");
  Rect area = plot_area(panel, title);
  area = {area.x + 48, area.y + 4, area.width - 56, area.height - 38};
  auto [lo, hi] = finite_range(values);
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  axes(area, 0, static_cast<double>(values.size()), lo, hi, x_label);
  const double width = area.width / static_cast<double>(values.size());
  const double zero = area.y + area.height * (hi / (hi - lo));
  cairo_set_source_rgb(cr_.get(), kSeriesColours[0][0], kSeriesColours[0][1], kSeriesColours[0][2]);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double top = area.y + area.height * ((hi - values[i]) / (hi - lo));
    cairo_rectangle(cr_.get(), area.x + i * width + 0.1 * width, std::min(top, zero), 0.8 * width,
                    std::abs(zero - top));
  }
  cairo_fill(cr_.get());
}

void Figure::lines(const Rect& panel, const std::vector<Series>& series, const std::string& title,
                   const std::string& x_label) {
  std::vector<double> xs, ys;
  for (const Series& s : series) {
    if (s.x.size() != s.y.size()) fail("lines: series " + s.name + " has different numbers of x and y values");
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
  }
  Rect area = plot_area(panel, title);
  area = {area.x + 48, area.y + 4, area.width - 56, area.height - 38};
  const auto [x_min, x_max] = finite_range(xs);
  const auto [y_min, y_max] = finite_range(ys);
  axes(area, x_min, x_max, y_min, y_max, x_label);
  cairo_t* cr = cr_.get();
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& c = kSeriesColours[k % kSeriesColours.size()];
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_set_line_width(cr, 1.5);
    bool drawing = false;
    for (std::size_t i = 0; i < series[k].x.size(); ++i) {
      const double x = series[k].x[i], y = series[k].y[i];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;  // rows without this value
      const double px = area.x + area.width * (x - x_min) / (x_max - x_min);
      const double py = area.y + area.height * (1.0 - (y - y_min) / (y_max - y_min));
      drawing ? cairo_line_to(cr, px, py) : cairo_move_to(cr, px, py);
      drawing = true;
    }
    cairo_stroke(cr);
    // Legend entry at the top right.
    const double ly = area.y + 12 + 16 * static_cast<double>(k);
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_rectangle(cr, area.x + area.width - 140, ly - 8, 12, 8);
    cairo_fill(cr);
    text(area.x + area.width - 124, ly, series[k].name, 11);
  }
}

void Figure::save_png(const std::string& path) const {
  cairo_surface_flush(surface_.get());
  const cairo_status_t status = cairo_surface_write_to_png(surface_.get(), path.c_str());
  if (status != CAIRO_STATUS_SUCCESS)
    fail("cannot write " + path + ": " + cairo_status_to_string(status));
}

std::pair<int, int> png_size(const std::string& path) {
  std::unique_ptr<cairo_surface_t, void (*)(cairo_surface_t*)> image(
      cairo_image_surface_create_from_png(path.c_str()), cairo_surface_destroy);
  const cairo_status_t status = cairo_surface_status(image.get());
  if (status != CAIRO_STATUS_SUCCESS) fail("cannot read " + path + " as PNG: " + cairo_status_to_string(status));
  return {cairo_image_surface_get_width(image.get()), cairo_image_surface_get_height(image.get())};
}

namespace {

// Text of a file in a message: shortened, control characters (a CR of a
// CRLF line end, say) escaped so that they cannot garble the terminal.
std::string printable(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  return text.size() > 40 ? out + "..." : out;
}

std::string quoted(std::string_view text) { return "\"" + printable(text) + "\""; }

// The cells of one line (its '\r' of a CRLF ending removed).
std::vector<std::string_view> split_cells(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<std::string_view> cells;
  cells.reserve(static_cast<std::size_t>(std::count(line.begin(), line.end(), ',')) + 1);
  for (std::size_t start = 0;;) {
    const std::size_t comma = line.find(',', start);
    cells.push_back(line.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return cells;
    start = comma + 1;
  }
}

}  // namespace

int Table::column(const std::string& name) const {
  for (std::size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return static_cast<int>(i);
  std::string known;
  for (std::size_t i = 0; i < columns.size() && i < 20; ++i) known += (i ? ", " : "") + printable(columns[i]);
  if (columns.size() > 20) known += ", ... (" + std::to_string(columns.size()) + " in all)";
  fail("no column " + quoted(name) + "; the columns are " + known);
}

Table parse_csv(std::string_view text, const std::string& name) {
  Table table;
  std::size_t start = 0;
  auto next_line = [&](std::string_view& line) {
    if (start >= text.size()) return false;
    const std::size_t newline = text.find('\n', start);
    line = text.substr(start, newline == std::string_view::npos ? std::string_view::npos : newline - start);
    start = newline == std::string_view::npos ? text.size() : newline + 1;
    return true;
  };
  std::string_view line;
  const std::vector<std::string_view> header = next_line(line) ? split_cells(line) : std::vector<std::string_view>{""};
  if (header == std::vector<std::string_view>{""}) fail(name + " has no header row");
  table.columns.assign(header.begin(), header.end());
  for (int number = 2; next_line(line); ++number) {
    const std::vector<std::string_view> cells = split_cells(line);
    if (cells == std::vector<std::string_view>{""}) continue;  // a blank line
    if (cells.size() != table.columns.size())
      fail(name + " line " + std::to_string(number) + " has " + std::to_string(cells.size()) + " cells for " +
           std::to_string(table.columns.size()) + " columns");
    std::vector<double> row;
    for (std::string_view cell : cells) {
      const std::string text_cell(cell);
      char* end = nullptr;
      const double value = std::strtod(text_cell.c_str(), &end);
      if (!cell.empty() && end != text_cell.c_str() + text_cell.size())
        fail(name + " line " + std::to_string(number) + ": " + quoted(cell) + " is not a number");
      row.push_back(cell.empty() ? std::nan("") : value);
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

Table read_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("cannot read " + path);
  return parse_csv(text.str(), path);
}

}  // namespace plot
