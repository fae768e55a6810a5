// The derivation document against the code: the worked example of
// docs/flow-attention-gradients.md (section 4) is read from the page itself
// and every value and gradient it lists is compared with the fused kernel's
// own intermediates (flow_attention_inspect) and with the composed trace
// (gradients by autograd). If the page or the code
// changes alone, this fails. (docs/figures/worked_example.py --check checks
// the page's formulas against PyTorch autograd, offline.)
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../ops/flow_attention_trace.h"
#include "test_util.h"

using namespace flowgrad;

namespace {

struct DocRow {
  std::vector<double> values, gradients;  // one or two entries each
};

std::string read_page() {
  const std::string path = std::string(FLOWGRAD_SOURCE_DIR) + "/docs/flow-attention-gradients.md";
  std::ifstream in(path);
  REQUIRE(in.good());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(' '), last = s.find_last_not_of(' ');
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}

// The table "| quantity | value [0] | value [1] | gradient [0] | gradient [1] |" of section 4.
std::map<std::string, DocRow> worked_example_table(const std::string& page) {
  const auto section = page.find("## 4. A worked example");
  REQUIRE(section != std::string::npos);
  const auto header = page.find("| quantity | value [0] | value [1] | gradient [0] | gradient [1] |", section);
  REQUIRE(header != std::string::npos);
  std::map<std::string, DocRow> rows;
  std::istringstream lines(page.substr(header));
  std::string line;
  std::getline(lines, line);  // header
  std::getline(lines, line);  // |---|
  while (std::getline(lines, line) && line.rfind('|', 0) == 0) {
    std::vector<std::string> cells;
    std::istringstream parts(line.substr(1));
    std::string cell;
    while (std::getline(parts, cell, '|')) cells.push_back(trim(cell));
    REQUIRE(cells.size() >= 5);
    DocRow row;
    for (int c : {1, 2})
      if (!cells[static_cast<std::size_t>(c)].empty()) row.values.push_back(std::stod(cells[static_cast<std::size_t>(c)]));
    for (int c : {3, 4})
      if (!cells[static_cast<std::size_t>(c)].empty())
        row.gradients.push_back(std::stod(cells[static_cast<std::size_t>(c)]));
    rows[cells[0]] = row;
  }
  return rows;
}

// The page prints six significant digits: a relative error up to 5e-6.
void require_printed(const std::string& what, const std::vector<double>& printed, const Tensor& actual) {
  const std::vector<double> values = actual.contiguous().to(kFloat64).to_vector<double>();
  INFO(what);
  REQUIRE(values.size() == printed.size());
  for (std::size_t i = 0; i < values.size(); ++i) REQUIRE(values[i] == Approx(printed[i]).epsilon(1e-5).margin(1e-6));
}

}  // namespace

TEST_CASE("The worked example of the derivation document is what the kernel and the trace compute") {
  const std::map<std::string, DocRow> doc = worked_example_table(read_page());
  for (const char* name : {"Q", "K", "V", "q", "k", "I", "O", "Ĩ", "Õ", "A", "C", "out"}) {
    INFO(name);
    REQUIRE(doc.count(name) == 1);
  }
  // N = S = 2, D = M = 1: inputs [1, 1, 2, 1], the incoming gradient is out's gradient.
  const auto input = [&](const std::string& name) {
    return from_vector(doc.at(name).values, {1, 1, 2, 1}).to(kFloat64);
  };
  const Tensor Q = input("Q").requires_grad_(), K = input("K").requires_grad_(), V = input("V").requires_grad_();
  const Tensor G = from_vector(doc.at("out").gradients, {1, 1, 2, 1}).to(kFloat64);

  // The fused kernel with its hand-derived backward.
  const Tensor out = flow_attention(Q, K, V);
  out.backward(G);
  require_printed("out (kernel)", doc.at("out").values, out);
  require_printed("dQ (kernel)", doc.at("Q").gradients, Q.grad());
  require_printed("dK (kernel)", doc.at("K").gradients, K.grad());
  require_printed("dV (kernel)", doc.at("V").gradients, V.grad());

  // The intermediates, by the trace (composed ops; gradients by autograd).
  const Tensor Qt = Q.detach().requires_grad_(), Kt = K.detach().requires_grad_(), Vt = V.detach().requires_grad_();
  const FlowAttentionTrace trace = flow_attention_trace(Qt, Kt, Vt);
  trace.out.backward(G);
  const std::vector<std::pair<std::string, Tensor>> intermediates{
      {"q", trace.q_features},          {"k", trace.k_features},      {"I", trace.sink_incoming},
      {"O", trace.source_outgoing},     {"Ĩ", trace.conserved_sink},  {"Õ", trace.conserved_source},
      {"A", trace.sink_allocation},     {"C", trace.source_competition}};
  for (const auto& [name, tensor] : intermediates) {
    require_printed(name + " (trace)", doc.at(name).values, tensor);
    require_printed("d" + name + " (trace)", doc.at(name).gradients, tensor.grad());
  }
  // Every row the kernel holds, from the kernel itself (flow_attention_inspect).
  const FlowAttentionInspection inspection = flow_attention_inspect(Q.detach(), K.detach(), V.detach(), G);
  int compared = 0;
  for (const auto& [name, row] : doc) {
    for (const FlowAttentionQuantity& quantity : inspection.quantities) {
      if (quantity.symbol == name) {
        require_printed(name + " (kernel)", row.values, quantity.value);
        ++compared;
      }
      if (quantity.symbol == "d" + name) {
        require_printed("d" + name + " (kernel)", row.gradients, quantity.value);
        ++compared;
      }
    }
  }
  // All but eight: the inputs Q, K, V and the incoming gradient dout (checked
  // above), the values of u, y and Õ and the gradient dÕ (never stored).
  REQUIRE(compared == 2 * static_cast<int>(doc.size()) - 8);
  // One source is clamped in the example, so the clamp's path is exercised.
  REQUIRE(doc.at("Ô").values[0] > 1.0);
  REQUIRE(doc.at("Ô").gradients[0] == 0.0);
}
