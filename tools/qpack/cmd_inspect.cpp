// qpack inspect PATH [--json] [--check] [-q]: the logic is qpack::inspect_report
// (format library), so tests can call it without a process.
#include <cstdio>
#include <memory>
#include <string>

#include "cli_options.hpp"
#include "commands.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/inspect.hpp"

namespace qpack::cli {

Runner add_inspect(CLI::App& app) {
  struct Args {
    std::string path;
    bool json = false;
    bool check = false;
    bool quiet = false;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("inspect",
                                 "List the tensors of a .qpack file, a GGUF file or a safetensors "
                                 "checkpoint (file, index .json or folder)");
  sub->add_option("path", args->path,
                  "a .qpack or GGUF file (detected by its magic), a .safetensors file, "
                  "a *.safetensors.index.json or a folder")
      ->required();
  add_json_flag(sub, &args->json, "machine-readable output (fields: docs/cli.md, inspect --json)");
  sub->add_flag("--check", args->check,
                "read every section and verify checksums and decoding (exit 4 on corruption)");
  add_quiet_flag(sub, &args->quiet,
                 "print nothing on success: only the exit code (and errors) tell, e.g. with "
                 "--check");
  return [args] {
    InspectOptions options;
    options.check = args->check;
    nlohmann::json report;
    try {
      report = inspect_report(args->path, options);
    } catch (const Error& e) {
      // A .qpack that fails its checks is an integrity error (4), as in verify.
      const std::string& p = args->path;
      const bool named_qpack = p.size() >= 6 && p.compare(p.size() - 6, 6, ".qpack") == 0;
      if (is_qpack_file(p) || named_qpack) rethrow_qpack_error(e, p);
      throw;
    }
    if (args->quiet && !args->json) return int(kExitOk);
    const std::string out =
        args->json ? report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
                   : format_inspect_table(report);
    std::fwrite(out.data(), 1, out.size(), stdout);
    if (std::fflush(stdout) != 0)
      throw Error(ErrorCode::Io, "<stdout>", "", "cannot write the report");
    return int(kExitOk);
  };
}

}  // namespace qpack::cli
