// What verify.cpp (.qpack files) and verify_gguf.cpp (GGUF files) share:
// the clock, the roll-ups, warnings. Internal to the verify library.
#pragma once

#include <chrono>
#include <string>

#include "qpack/format/error.hpp"
#include "qpack/verify/verify.hpp"

namespace qpack::verify_detail {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0);
std::string utc_now_iso8601();
bool is_io_error(ErrorCode c);
// The per-layer, per-kind and model roll-ups of rep.tensors.
void build_rollups(VerifyReport& rep);
// Passes `line` to opt.warn and keeps it in the report.
void warn(VerifyReport& rep, const VerifyOptions& opt, std::string line);

}  // namespace qpack::verify_detail

namespace qpack {
// verify() for a GGUF file (verify_gguf.cpp).
VerifyReport verify_gguf(const std::string& gguf_path, const std::string& source_path,
                         const VerifyOptions& options);
}  // namespace qpack
