// Strict reading of the JSON objects flowgrad stores in its files (model
// configurations in checkpoints, generator states): one mechanism, on
// nlohmann-json, for every reader. Private to the library: not installed, so
// users' translation units never pull in nlohmann's headers.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>
#include <string_view>

#include <nlohmann/json.hpp>

namespace flowgrad {

// Parses `text` as JSON. Malformed text and an object with a repeated key
// (which nlohmann would resolve silently to the last one) throw an Error
// naming `op`.
nlohmann::json parse_json(std::string_view text, std::string_view op);

// Reads the fields of one JSON object into variables. A key that is absent
// leaves its variable as it was (its default); a value of the wrong type, an
// integer out of range or a key nobody asked for (finish()) throws an Error
// naming `op` and the key.
class JsonObjectReader {
 public:
  JsonObjectReader(const nlohmann::json& object, std::string op);

  void read(const char* key, std::int64_t& value);
  void read(const char* key, double& value);
  void read(const char* key, bool& value);
  void read(const char* key, std::string& value);
  void read(const char* key, std::vector<std::string>& value);  // an array of strings
  void read(const char* key, std::vector<double>& value);       // an array of numbers
  // The value itself, checked to be an object; throws when absent.
  const nlohmann::json& object(const char* key);
  // Reads "kind" and throws unless it is `expected`, naming the program
  // that writes such configurations (a checkpoint of another program).
  void expect_kind(const char* expected, const char* writer);
  // Whether the key is present (and marks it as read).
  bool has(const char* key);
  // Throws naming the first key that was never read: a misspelt or foreign field.
  void finish() const;

 private:
  const nlohmann::json* find(const char* key);

  const nlohmann::json& object_;
  std::string op_;
  std::set<std::string, std::less<>> read_;
};

}  // namespace flowgrad
