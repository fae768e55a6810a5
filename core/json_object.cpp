#include "json_object.h"

#include <limits>
#include <vector>

#include "error.h"

namespace flowgrad {

namespace {
// A value for a message: scalars as written (cut short), containers by type
// only (dumping an untrusted container could be large or deeply nested).
std::string brief(const nlohmann::json& value) {
  return value.is_structured() ? std::string("an ") + value.type_name() : excerpt(value.dump(), 40);
}

// Deeper nesting than any configuration needs is refused while parsing:
// nlohmann's dump() recurses once per level.
constexpr int kMaxDepth = 32;
}  // namespace

nlohmann::json parse_json(std::string_view text, std::string_view op) {
  // The keys seen so far in each object being parsed, innermost last.
  std::vector<std::set<std::string>> open_objects;
  std::string repeated_key;
  const nlohmann::json::parser_callback_t track_keys = [&](int depth, nlohmann::json::parse_event_t event,
                                                           nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (depth > kMaxDepth) fail(op, "JSON nested deeper than ", kMaxDepth, " levels");
    if (event == Event::object_start) open_objects.emplace_back();
    if (event == Event::object_end) open_objects.pop_back();
    if (event == Event::key && !open_objects.back().insert(parsed.get<std::string>()).second && repeated_key.empty())
      repeated_key = parsed.get<std::string>();
    return true;
  };
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text.begin(), text.end(), track_keys);
  } catch (const nlohmann::json::exception& e) {
    fail(op, "malformed JSON: ", excerpt(e.what(), 200));
  }
  if (!repeated_key.empty()) fail(op, "the key \"", excerpt(repeated_key), "\" appears twice in one object");
  return value;
}

JsonObjectReader::JsonObjectReader(const nlohmann::json& object, std::string op)
    : object_(object), op_(std::move(op)) {
  if (!object_.is_object()) fail(op_, "expected a JSON object, got ", object_.type_name());
}

const nlohmann::json* JsonObjectReader::find(const char* key) {
  const auto it = object_.find(key);
  if (it == object_.end()) return nullptr;
  read_.insert(key);
  return &*it;
}

bool JsonObjectReader::has(const char* key) { return find(key) != nullptr; }

void JsonObjectReader::expect_kind(const char* expected, const char* writer) {
  std::string kind;
  read("kind", kind);
  if (kind != expected)
    fail(op_, "the configuration is of kind \"", excerpt(kind, 40), "\", not \"", expected,
         "\": the checkpoint was not written by ", writer);
}

void JsonObjectReader::read(const char* key, std::int64_t& value) {
  const nlohmann::json* field = find(key);
  if (!field) return;
  if (field->is_number_integer() && !field->is_number_unsigned()) {
    value = field->get<std::int64_t>();
  } else if (field->is_number_unsigned() &&
             field->get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    value = static_cast<std::int64_t>(field->get<std::uint64_t>());
  } else {
    fail(op_, "\"", key, "\" must be an integer within 64 bits, got ", brief(*field));
  }
}

void JsonObjectReader::read(const char* key, double& value) {
  const nlohmann::json* field = find(key);
  if (!field) return;
  if (!field->is_number()) fail(op_, "\"", key, "\" must be a number, got ", brief(*field));
  value = field->get<double>();
}

void JsonObjectReader::read(const char* key, bool& value) {
  const nlohmann::json* field = find(key);
  if (!field) return;
  if (!field->is_boolean()) fail(op_, "\"", key, "\" must be true or false, got ", brief(*field));
  value = field->get<bool>();
}

void JsonObjectReader::read(const char* key, std::string& value) {
  const nlohmann::json* field = find(key);
  if (!field) return;
  if (!field->is_string()) fail(op_, "\"", key, "\" must be a string, got ", brief(*field));
  value = field->get<std::string>();
}

void JsonObjectReader::read(const char* key, std::vector<std::string>& value) {
  const nlohmann::json* field = find(key);
  if (!field) return;
  if (!field->is_array()) fail(op_, "\"", key, "\" must be an array of strings, got ", brief(*field));
  std::vector<std::string> strings;
  for (const nlohmann::json& item : *field) {
    if (!item.is_string()) fail(op_, "\"", key, "\" must be an array of strings, but holds ", brief(item));
    strings.push_back(item.get<std::string>());
  }
  value = std::move(strings);
}

void JsonObjectReader::read(const char* key, std::vector<double>& value) {
  const nlohmann::json* field = find(key);
  if (!field) return;
  if (!field->is_array()) fail(op_, "\"", key, "\" must be an array of numbers, got ", brief(*field));
  std::vector<double> numbers;
  for (const nlohmann::json& item : *field) {
    if (!item.is_number()) fail(op_, "\"", key, "\" must be an array of numbers, but holds ", brief(item));
    numbers.push_back(item.get<double>());
  }
  value = std::move(numbers);
}

const nlohmann::json& JsonObjectReader::object(const char* key) {
  const nlohmann::json* field = find(key);
  if (!field) fail(op_, "the object \"", key, "\" is missing");
  if (!field->is_object()) fail(op_, "\"", key, "\" must be an object, got ", field->type_name());
  return *field;
}

void JsonObjectReader::finish() const {
  for (const auto& [key, value] : object_.items())
    if (!read_.contains(key)) fail(op_, "unknown key \"", excerpt(key), "\"");
}

}  // namespace flowgrad
