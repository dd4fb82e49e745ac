// inspect's GGUF part (inspect.cpp dispatches here): the report of a GGUF
// file and its table.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "qpack/format/inspect.hpp"

namespace qpack::detail {

// True when `path` is a regular file starting with "GGUF".
bool is_gguf_file(const std::string& path);
nlohmann::json gguf_inspect_report(const std::string& path, const InspectOptions& options);
std::string format_gguf_inspect_table(const nlohmann::json& report);

}  // namespace qpack::detail
