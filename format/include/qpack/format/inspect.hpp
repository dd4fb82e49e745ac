// What `qpack inspect` shows, as a library so that tests and other tools can
// call it: a JSON report of a .qpack file or a safetensors checkpoint
// (docs/cli.md, "inspect --json", documents its fields) and its table rendering.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "qpack/format/layout.hpp"

namespace qpack {

struct InspectOptions {
  // Read every section (every tensor, for safetensors) and verify checksums
  // and decoding; failures throw qpack::Error.
  bool check = false;
};

// True when `path` is a regular file starting with the .qpack magic (the
// extension does not matter).
bool is_qpack_file(const std::string& path);

// Throws qpack::Error for unreadable or malformed input.
nlohmann::json inspect_report(const std::string& path, const InspectOptions& options = {});

// The human-readable table (ends with a newline).
std::string format_inspect_table(const nlohmann::json& report);

}  // namespace qpack
