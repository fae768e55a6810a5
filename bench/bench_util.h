// What the benchmark programs share.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

// "128,1024,8192" -> {128, 1024, 8192}, for flags that take a list of sizes.
inline std::vector<std::int64_t> parse_int_list(const std::string& text) {
  std::vector<std::int64_t> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) values.push_back(std::stoll(item));
  return values;
}

}  // namespace bench
