// inspect's part for compressed-tensors / GPTQ model folders (inspect.cpp
// dispatches here): the report of such a folder and its table.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "qpack/format/inspect.hpp"

namespace qpack::detail {

nlohmann::json hf_inspect_report(const std::string& path, const InspectOptions& options);
std::string format_hf_inspect_table(const nlohmann::json& report);

}  // namespace qpack::detail
