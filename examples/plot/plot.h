// Small raster figures for the examples, drawn with cairo and written as
// PNG: heat maps, grayscale images, bar plots and line plots, each in a
// rectangular panel of a Figure. For looking at results, not publication.
#pragma once

#include <cairo.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace plot {

struct Rect {
  double x, y, width, height;
};

struct Series {
  std::string name;
  std::vector<double> x, y;
};

class Figure {
 public:
  Figure(int width, int height);  // white background
  Figure(const Figure&) = delete;
  Figure& operator=(const Figure&) = delete;

  // values row-major [rows × cols], coloured from dark (min) to bright (max)
  // with a colour bar at the right of the panel.
  void heatmap(const Rect& panel, const std::vector<double>& values, int rows, int cols, const std::string& title);
  // values row-major [rows × cols] in [0, 255], gray scale, square pixels.
  void grayscale(const Rect& panel, const std::vector<double>& values, int rows, int cols, const std::string& title);
  void bars(const Rect& panel, const std::vector<double>& values, const std::string& title,
            const std::string& x_label);
  // Every series in one panel with axes, ticks and a legend.
  void lines(const Rect& panel, const std::vector<Series>& series, const std::string& title,
             const std::string& x_label);
  void text(double x, double y, const std::string& text, double size = 12.0);
  // Writes the PNG; throws std::runtime_error "[plot] ..." on failure.
  void save_png(const std::string& path) const;

 private:
  struct SurfaceDeleter {
    void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
  };
  struct ContextDeleter {
    void operator()(cairo_t* c) const { cairo_destroy(c); }
  };
  Rect plot_area(const Rect& panel, const std::string& title);  // draws the title, returns the inner area
  void axes(const Rect& area, double x_min, double x_max, double y_min, double y_max, const std::string& x_label);
  std::unique_ptr<cairo_surface_t, SurfaceDeleter> surface_;
  std::unique_ptr<cairo_t, ContextDeleter> cr_;
};

// Width and height of a PNG file (read back through cairo); throws when it
// is not a readable PNG.
std::pair<int, int> png_size(const std::string& path);

// A CSV file with a header row; empty cells are NaN; CRLF line ends are
// accepted; a row with another number of cells than the header, or a cell
// that is not a number, throws "[plot] FILE line N: ...".
struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;
  int column(const std::string& name) const;  // index, or throws naming the columns there are
};
Table read_csv(const std::string& path);
// The same for the text of a file; `name` stands for the path in messages.
Table parse_csv(std::string_view text, const std::string& name);

}  // namespace plot
