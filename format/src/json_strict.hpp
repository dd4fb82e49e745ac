// Private helpers shared by the readers: a JSON parse that reports duplicate
// object keys (nlohmann silently keeps the last one, which would let a file
// carry two different descriptions of one tensor) and caps nesting depth.
// The public face of the parse is qpack/format/json.hpp.
#pragma once

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qpack::detail {

struct JsonParseResult {
  enum Kind { Ok, Syntax, DuplicateKey, TooDeep };
  Kind kind = Ok;
  std::string message;            // nlohmann's message for Syntax
  std::string key;                // the duplicated key
  std::vector<std::string> path;  // keys of the objects enclosing it, outermost first
  bool ok() const { return kind == Ok; }
  // A one-line description for error messages.
  std::string describe() const;
};

constexpr int kMaxJsonDepth = 512;

// Parses [begin, end) as one JSON value (surrounding whitespace allowed).
JsonParseResult parse_json_strict(const char* begin, const char* end, nlohmann::json* out,
                                  int max_depth = kMaxJsonDepth);

const char* json_type_name(const nlohmann::json& j);

// Compact dump that never throws on invalid UTF-8 (replaces it): for
// messages and for carrying foreign values as text.
std::string dump_lenient(const nlohmann::json& j);

}  // namespace qpack::detail
