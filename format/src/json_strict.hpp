// Private helpers shared by the readers: a JSON parse that reports duplicate
// object keys (nlohmann silently keeps the last one, which would let a file
// carry two different descriptions of one tensor) and caps nesting depth,
// plus little-endian loads and stores. The public face of the parse is
// qpack/format/json.hpp.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

inline uint16_t load_le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t load_le64(const uint8_t* p) {
  return uint64_t(load_le32(p)) | uint64_t(load_le32(p + 4)) << 32;
}
inline void store_le16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
inline void store_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void store_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace qpack::detail
