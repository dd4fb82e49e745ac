// The options every subcommand spells the same way, and the one way a failure
// is reported: one vocabulary, one range, one message, one exit code per kind
// of failure across inspect, convert, verify and dequantize (docs/cli.md,
// "Options shared by every command").
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "qpack/format/error.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack::cli {

// --threads N: 0 (the default) means every core; above this is refused. A
// fixed bound, not one from the core count, so that a command line means the
// same on every machine; far above any core count qpack runs on, far below
// what the OpenMP runtime survives.
inline constexpr int kMaxThreads = 1024;

// -j, --threads N, range-checked: outside 0..kMaxThreads is a usage error
// (exit 2) "--threads must be 0 (all cores) or 1..1024".
CLI::Option* add_threads_option(CLI::App* sub, int* threads);
// -q, --quiet.
CLI::Option* add_quiet_flag(CLI::App* sub, bool* quiet, const std::string& what);
// --json.
CLI::Option* add_json_flag(CLI::App* sub, bool* json, const std::string& what);

// A dtype flag's value (--dtype, --scale-dtype): f16, bf16 or f32 and their
// aliases, in any case (converter's parse_scale_dtype); else a usage error
// naming `flag`.
DType parse_float_dtype_flag(const std::string& flag, const std::string& text);

// A size flag's value (--max-shard-size): a whole or decimal number and an
// optional unit, any case: B, KB/MB/GB/TB (10^3 steps, Hugging Face's "5GB"
// is 5 * 10^9 bytes) or KiB/MiB/GiB/TiB (2^10 steps); no unit is bytes.
// Fractions of a byte are dropped. A usage error naming `flag` otherwise,
// and for 0 or more than 2^64 - 1.
uint64_t parse_byte_size_flag(const std::string& flag, const std::string& text);

// A qpack::Error about a .qpack file that failed its checks: exit 4
// (integrity) in every command, whatever the error's code, as verify reports
// it. Thrown by inspect and dequantize in place of a bad-input error.
class QpackIntegrityError : public Error {
 public:
  explicit QpackIntegrityError(const Error& e) : Error(e) {}
};

// Rethrows `e` as QpackIntegrityError when it is a bad-input error (exit 3)
// naming `qpack_path`; otherwise rethrows it as it is.
[[noreturn]] void rethrow_qpack_error(const Error& e, const std::string& qpack_path);

// The exit code main() gives `e`.
int exit_code_of(const Error& e);

// A failure as every command reports it: "qpack: error: ..." on stderr
// (escaped for the terminal, `hint` appended), and under --json also the
// object {"error": {"code", "exit", "file", "tensor", "reason"}} on stdout.
void report_failure(const Error& e, int exit_code, bool json, const std::string& hint = "");

// Flushes stdout; false (errno set) when anything written to it was lost
// (a full disk, a closed pipe).
bool flush_stdout();

}  // namespace qpack::cli
