// Strict JSON, as every qpack reader parses its files (safetensors headers,
// indexes, config.json, the .qpack manifest) and as the converter's recipes
// and the verifier's policies are parsed: a duplicate object key (which a
// lenient parser resolves silently to the last one), nesting deeper than 512
// levels, a NUL byte and any syntax error are refused.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "qpack/format/error.hpp"

namespace qpack {

// Parses `text` as one JSON value (surrounding whitespace allowed). Throws
// Error(code, file, "", what + ": " + reason), for example
// "recipe: duplicate key 'bits' in 'defaults'" or "policy: invalid JSON: ...".
nlohmann::json parse_json(const std::string& text, const std::string& file, const std::string& what,
                          ErrorCode code = ErrorCode::InvalidArgument);

// Reads `path` (Error(Io) when it cannot be read) and parses it as above.
nlohmann::json read_json_file(const std::string& path, const std::string& what,
                              ErrorCode code = ErrorCode::InvalidArgument);

}  // namespace qpack
