#include "cli_options.hpp"

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
