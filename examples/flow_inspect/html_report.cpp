#include "html_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace flow_inspect {

namespace {

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string number(double x, const char* format = "%.4g") {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, format, x);
  return buffer;
}

std::vector<double> values_of(const fg::Tensor& t) { return t.contiguous().to(fg::kFloat64).to_vector<double>(); }

double norm(const fg::Tensor& t) {
  double total = 0;
  for (double x : values_of(t)) total += x * x;
  return std::sqrt(total);
}

std::string list(const fg::Tensor& t, std::size_t most = 12) {
  const std::vector<double> v = values_of(t);
  std::string text;
  for (std::size_t i = 0; i < std::min(most, v.size()); ++i) {
    if (i > 0) text += ' ';
    text += number(v[i]);
  }
  if (v.size() > most) text += " …";
  return text;
}

// Diverging colour for x in [−scale, scale]: blue, white, red.
std::string colour(double x, double scale) {
  const double t = scale > 0 ? std::clamp(x / scale, -1.0, 1.0) : 0.0;
  const auto channel = [](double v) { return static_cast<int>(std::lround(255 * v)); };
  const double fade = 1 - std::abs(t);
  const int r = t >= 0 ? 255 : channel(fade), b = t <= 0 ? 255 : channel(fade), g = channel(fade);
  return "rgb(" + std::to_string(r) + "," + std::to_string(g) + "," + std::to_string(b) + ")";
}

// A heat map of a matrix (or a vector, as one row) as a table; rows carry data-row.
std::string heat_table(const std::string& id, const std::string& caption, const fg::Tensor& t,
                       const std::string& row_name, const std::string& column_name) {
  const fg::Tensor m = t.dim() == 1 ? t.unsqueeze(0) : t;
  const std::int64_t rows = m.size(0), columns = m.size(1);
  const std::vector<double> v = values_of(m);
  double scale = 0;
  for (double x : v) scale = std::max(scale, std::abs(x));
  std::ostringstream out;
  out << "<table class=\"heat\" id=\"" << id << "\"><caption>" << caption << " (max |x| " << number(scale)
      << ")</caption>\n<tr><th></th>";
  for (std::int64_t c = 0; c < columns; ++c) out << "<th>" << column_name << c << "</th>";
  out << "</tr>\n";
  for (std::int64_t r = 0; r < rows; ++r) {
    out << "<tr data-row=\"" << r << "\"><th>" << (rows > 1 ? row_name + std::to_string(r) : row_name) << "</th>";
    for (std::int64_t c = 0; c < columns; ++c) {
      const double x = v[static_cast<std::size_t>(r * columns + c)];
      out << "<td style=\"background:" << colour(x, scale) << "\" title=\"" << number(x, "%.6g") << "\"></td>";
    }
    out << "</tr>\n";
  }
  out << "</table>\n";
  return out.str();
}

struct Node {
  const char* symbol;
  int x, y;
  const char* section;  // for the colour: N0 … N4 (C0 … C4 alike)
};

// The layout of docs/figures/computation-graph.svg, in a smaller frame.
const std::vector<Node> kNodes{
    {"Q", 50, 60, "in"},       {"q", 170, 60, "0"},          {"Ĩ", 700, 60, "2"},       {"A", 820, 60, "3"},
    {"s", 940, 60, "4"},       {"out", 1060, 60, "4"},       {"k_sum", 290, 170, "1"},  {"I", 420, 170, "1"},
    {"q_incoming", 560, 170, "2"}, {"R", 1060, 170, "4"},    {"q_sum", 290, 280, "1"},  {"O", 420, 280, "1"},
    {"k_outgoing", 560, 280, "2"}, {"KV", 1060, 280, "4"},   {"K", 50, 390, "in"},      {"k", 170, 390, "0"},
    {"Ô", 700, 390, "2"},      {"Õ", 800, 390, "2"},         {"C", 920, 390, "3"},      {"W", 1060, 390, "4"},
    {"V", 1060, 480, "in"},    {"e", 800, 480, "3"},         {"E", 920, 480, "3"}};

const std::vector<std::pair<const char*, const char*>> kEdges{
    {"Q", "q"}, {"K", "k"}, {"q", "q_sum"}, {"k", "k_sum"}, {"k_sum", "I"}, {"q", "I"}, {"q_sum", "O"},
    {"k", "O"}, {"I", "q_incoming"}, {"q", "q_incoming"}, {"O", "k_outgoing"}, {"k", "k_outgoing"},
    {"k_outgoing", "Ĩ"}, {"q", "Ĩ"}, {"q_incoming", "Ô"}, {"k", "Ô"}, {"Ô", "Õ"}, {"Ĩ", "A"}, {"A", "s"},
    {"I", "s"}, {"V", "W"}, {"C", "W"}, {"W", "KV"}, {"k", "KV"}, {"KV", "R"}, {"q", "R"}, {"R", "out"},
    {"s", "out"}};

std::string graph(const ReportInput& in) {
  const fg::FlowAttentionInspection& kernel = *in.kernel;
  std::map<std::string, fg::Tensor> value, gradient;
  for (const fg::FlowAttentionQuantity& quantity : kernel.quantities) {
    if (quantity.symbol.size() > 1 && quantity.symbol[0] == 'd')  // dx is x's gradient
      gradient[quantity.symbol.substr(1)] = quantity.value;
    else
      value[quantity.symbol] = quantity.value;
  }
  value["Q"] = in.queries, value["K"] = in.keys, value["V"] = in.values;
  // The causal kernel keeps no D×M state for all rows (H is per position), and
  // its softmax goes through e and E; the normal one has KV and no e, E.
  std::vector<std::pair<const char*, const char*>> edges = kEdges;
  if (in.causal) {
    edges.insert(edges.end(), {{"Õ", "e"}, {"e", "E"}, {"e", "C"}, {"E", "C"}, {"W", "R"}, {"k", "R"}});
  } else {
    edges.push_back({"Õ", "C"});
  }
  std::map<std::string, const Node*> at;
  for (const Node& node : kNodes)
    if (!in.causal || std::string(node.symbol) != "KV") at[node.symbol] = &node;
  if (!in.causal) at.erase("e"), at.erase("E");

  std::ostringstream out;
  out << "<svg id=\"graph\" viewBox=\"0 0 1130 530\" width=\"1130\" height=\"530\" role=\"img\">\n"
      << "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" "
         "markerHeight=\"6\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n";
  for (const auto& [from, to] : edges) {
    if (!at.count(from) || !at.count(to)) continue;
    const Node &a = *at[from], &b = *at[to];
    // From the edge of one box towards the centre of the other.
    const double dx = b.x - a.x, dy = b.y - a.y;
    const double shrink = std::min(50.0 / std::max(std::abs(dx), 1e-9), 30.0 / std::max(std::abs(dy), 1e-9));
    const double s = std::min(shrink, 0.45);
    out << "<line class=\"edge\" x1=\"" << a.x + dx * s << "\" y1=\"" << a.y + dy * s << "\" x2=\"" << b.x - dx * s
        << "\" y2=\"" << b.y - dy * s << "\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>\n";
  }
  const std::map<std::string, std::string> fill{{"in", "#e8e8e8"}, {"0", "#dce9fb"}, {"1", "#dcf2dc"},
                                                {"2", "#fdf0c4"}, {"3", "#fbdcc4"}, {"4", "#eadcf7"}};
  for (const auto& [symbol, node] : at) {
    const auto v = value.find(symbol);
    const auto g = gradient.find(symbol);
    std::string title = symbol;
    title += v != value.end() ? "\nvalue: " + list(v->second) : "\nvalue: not stored by the kernel";
    title += g != gradient.end() ? "\ngradient: " + list(g->second) : "\ngradient: not stored by the kernel";
    out << "<g class=\"node\" data-symbol=\"" << escape(symbol) << "\"><title>" << escape(title) << "</title>"
        << "<rect x=\"" << node->x - 50 << "\" y=\"" << node->y - 30 << "\" width=\"100\" height=\"60\" rx=\"8\" fill=\""
        << fill.at(node->section) << "\" stroke=\"#333\"/>"
        << "<text x=\"" << node->x << "\" y=\"" << node->y - 12 << "\" class=\"symbol\">" << escape(symbol) << "</text>"
        << "<text x=\"" << node->x << "\" y=\"" << node->y + 6 << "\">‖x‖ "
        << (v != value.end() ? number(norm(v->second)) : std::string("—")) << "</text>"
        << "<text x=\"" << node->x << "\" y=\"" << node->y + 22 << "\">‖dx‖ "
        << (g != gradient.end() ? number(norm(g->second)) : std::string("—")) << "</text></g>\n";
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace

std::string html_report(const ReportInput& in) {
  const fg::FlowAttentionInspection& kernel = *in.kernel;
  const std::int64_t N = in.queries.size(0), S = in.keys.size(0);
  std::ostringstream page;
  page << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
       << "<title>flow_inspect: " << (in.causal ? "causal" : "normal") << " Flow-Attention</title>\n"
       << "<style>\n"
          "body{font-family:sans-serif;margin:1.5em;color:#222}"
          "h2{margin-top:1.5em}"
          "svg text{text-anchor:middle;font-size:12px}svg text.symbol{font-weight:bold;font-size:14px}"
          "table.heat{border-collapse:collapse;margin:0.5em 1.5em 0.5em 0;display:inline-table}"
          "table.heat td{width:22px;height:22px;border:1px solid #fff}"
          "table.heat th{font-weight:normal;font-size:11px;padding:0 3px;color:#555}"
          "table.heat caption{font-size:13px;text-align:left;padding-bottom:3px}"
          "tr.selected td{outline:2px solid #000}"
          "#status{color:#888;font-size:11px}"
          "</style></head>\n<body>\n";
  page << "<h1>" << (in.causal ? "Causal" : "Normal") << " Flow-Attention, one head: N=" << N << " S=" << S
       << " D=" << in.queries.size(1) << " M=" << in.values.size(1) << "</h1>\n"
       << "<p>Symbols and sections as in <code>docs/flow-attention-gradients.md</code>; the loss is ℓ = Σ G ⊙ out "
          "for a random G. Values and gradients are the fused kernel's own (<code>flow_attention_inspect</code>).";
  if (!in.mask.empty()) {
    page << " Key padding mask:";
    for (int flag : in.mask) page << ' ' << flag;
    page << " (key-indexed quantities cover the real keys).";
  }
  page << "</p>\n";

  page << "<h2>The computation graph</h2>\n<p>Each node shows the norm of its value and of its gradient; hover "
          "for the values.</p>\n"
       << graph(in);

  page << "<h2>Attention</h2>\n<p>The N×S matrix the kernel applies without forming it (entry (i, j) = "
       << (in.causal ? "A_i (I_i / n_i) (q_i·k_j) C_j for j ≤ i" : "A_i I_i (q_i·k_j) C_j") << ").</p>\n"
       << "<p><label for=\"query\">query position i = <span id=\"query-label\">0</span></label> "
       << "<input type=\"range\" id=\"query\" min=\"0\" max=\"" << N - 1 << "\" value=\"0\"></p>\n"
       << "<p id=\"row-values\"></p>\n"
       << heat_table("attention-matrix", "attention matrix", in.attention_matrix, "i=", "j=")
       << heat_table("heat-A", "sink allocation A", kernel.at("A"), "A", "i=")
       << heat_table("heat-C", "source competition C", kernel.at("C"), "C", "j=");

  page << "<h2>dℓ/dQ by path</h2>\n<p>Blocking the gradient at A, or at C, removes exactly the paths through "
          "it (no path passes through both).</p>\n"
       << heat_table("dq-allocation", "through the sink allocation A", in.dq_via_allocation, "i=", "d=")
       << heat_table("dq-competition", "through the source competition C", in.dq_via_competition, "i=", "d=")
       << heat_table("dq-other", "all other paths", in.dq_other, "i=", "d=")
       << heat_table("dq-total", "dQ (the kernel's)", kernel.at("dQ"), "i=", "d=");

  // Interactivity only: the page is complete without it.
  page << "<p id=\"status\">script not run</p>\n<script>\n"
          "window.onerror = function (message) { document.getElementById('status').textContent = 'error: ' + message; };\n"
          "(function () {\n"
          "  const slider = document.getElementById('query');\n"
          "  const rows = document.querySelectorAll('#attention-matrix tr[data-row]');\n"
          "  function show(i) {\n"
          "    rows.forEach(function (row) { row.classList.toggle('selected', Number(row.dataset.row) === i); });\n"
          "    document.getElementById('query-label').textContent = String(i);\n"
          "    const cells = rows[i].querySelectorAll('td');\n"
          "    document.getElementById('row-values').textContent = 'row ' + i + ': ' +\n"
          "        Array.prototype.map.call(cells, function (td) { return td.title; }).join('  ');\n"
          "  }\n"
          "  slider.addEventListener('input', function () { show(Number(slider.value)); });\n"
          "  show(0);\n"
          "  document.getElementById('status').textContent = 'ready';\n"
          "})();\n"
          "</script>\n</body></html>\n";
  return page.str();
}

}  // namespace flow_inspect
