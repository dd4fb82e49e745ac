#include "cli_options.hpp"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "qpack/converter/recipe.hpp"
#include "qpack/format/text.hpp"

namespace qpack::cli {

CLI::Option* add_threads_option(CLI::App* sub, int* threads) {
  const CLI::Validator range(
      [](std::string& text) {
        const std::string why =
            "--threads must be 0 (all cores) or 1.." + std::to_string(kMaxThreads);
        try {
          size_t used = 0;
          const long long v = std::stoll(text, &used);
          if (used != text.size() || v < 0 || v > kMaxThreads) return why + ", not " + text;
        } catch (const std::exception&) {
          return why + ", not " + text;
        }
        return std::string();
      },
      "0.." + std::to_string(kMaxThreads));
  return sub
      ->add_option("-j,--threads", *threads,
                   "CPU threads, 1.." + std::to_string(kMaxThreads) + " (default 0: all cores)")
      ->check(range);
}

CLI::Option* add_quiet_flag(CLI::App* sub, bool* quiet, const std::string& what) {
  return sub->add_flag("-q,--quiet", *quiet, what);
}

CLI::Option* add_json_flag(CLI::App* sub, bool* json, const std::string& what) {
  return sub->add_flag("--json", *json, what);
}

DType parse_float_dtype_flag(const std::string& flag, const std::string& text) {
  const auto d = parse_scale_dtype(text);
  if (!d)
    throw Error(ErrorCode::InvalidArgument, "", "",
                flag + " must be f16, bf16 or f32 (any case), not '" + text + "'");
  return *d;
}

namespace {
// Sizes up to 2^64 - 1 times a unit up to 2^40 fit without overflow checks
// on every step (GCC and Clang; __extension__ keeps -Wpedantic quiet).
__extension__ typedef unsigned __int128 u128;
}  // namespace

uint64_t parse_byte_size_flag(const std::string& flag, const std::string& text) {
  const auto bad = [&](const char* why) {
    return Error(ErrorCode::InvalidArgument, "", "",
                 flag + " must be a size such as 5GB, 500MB, 2GiB or a byte count, not '" + text +
                     "'" + why);
  };
  size_t i = 0;
  u128 whole = 0, frac = 0, frac_scale = 1;
  const u128 kMax = ~uint64_t(0);
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    whole = whole * 10 + unsigned(text[i++] - '0');
    if (whole > kMax) throw bad(" (too large)");
  }
  const size_t int_digits = i;
  size_t frac_digits = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      if (frac_digits < 18) {
        frac = frac * 10 + unsigned(text[i] - '0');
        frac_scale *= 10;
      }
      ++frac_digits;
      ++i;
    }
  }
  if (int_digits + frac_digits == 0) throw bad("");
  std::string unit;
  for (; i < text.size(); ++i) unit += char(std::tolower(static_cast<unsigned char>(text[i])));
  static const std::pair<const char*, uint64_t> kUnits[] = {{"", 1},
                                                            {"b", 1},
                                                            {"kb", 1000ull},
                                                            {"mb", 1000000ull},
                                                            {"gb", 1000000000ull},
                                                            {"tb", 1000000000000ull},
                                                            {"kib", 1ull << 10},
                                                            {"mib", 1ull << 20},
                                                            {"gib", 1ull << 30},
                                                            {"tib", 1ull << 40}};
  for (const auto& [name, mult] : kUnits) {
    if (unit != name) continue;
    const u128 v = whole * mult + frac * mult / frac_scale;
    if (v > kMax) throw bad(" (too large)");
    if (v == 0) throw bad(" (must be at least one byte)");
    return uint64_t(v);
  }
  throw bad(" (unknown unit)");
}

void rethrow_qpack_error(const Error& e, const std::string& qpack_path) {
  if (exit_code_for(e.code()) == kExitBadInput && e.file() == qpack_path)
    throw QpackIntegrityError(e);
  throw e;
}

int exit_code_of(const Error& e) {
  if (dynamic_cast<const QpackIntegrityError*>(&e)) return kExitIntegrity;
  return exit_code_for(e.code());
}

void report_failure(const Error& e, int exit_code, bool json, const std::string& hint) {
  std::fprintf(stderr, "qpack: error: %s%s\n", escape_for_terminal(e.what()).c_str(), hint.c_str());
  if (!json) return;
  const auto or_null = [](const std::string& s) {
    return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
  };
  const nlohmann::json j = {{"error",
                             {{"code", error_code_name(e.code())},
                              {"exit", exit_code},
                              {"file", or_null(e.file())},
                              {"tensor", or_null(e.tensor())},
                              {"reason", e.reason() + hint}}}};
  const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
}

bool flush_stdout() {
  const bool flushed = std::fflush(stdout) == 0;
  if (std::ferror(stdout)) {
    if (errno == 0) errno = EIO;
    return false;
  }
  return flushed;
}

}  // namespace qpack::cli
