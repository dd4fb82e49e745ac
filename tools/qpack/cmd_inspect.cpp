// qpack inspect PATH [--json] [--check]: the logic is qpack::inspect_report
// (format library), so tests can call it without a process.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/inspect.hpp"

namespace qpack::cli {

Runner add_inspect(CLI::App& app) {
  struct Args {
    std::string path;
    bool json = false;
    bool check = false;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("inspect",
                                 "List the tensors of a .qpack file or a safetensors checkpoint "
                                 "(file, index .json or folder)");
  sub->add_option("path", args->path,
                  "a .qpack file (detected by its magic), a .safetensors file, "
                  "a *.safetensors.index.json or a folder")
      ->required();
  sub->add_flag("--json", args->json,
                "machine-readable output (fields: docs/cli.md, inspect --json)");
  sub->add_flag("--check", args->check,
                "read every section and verify checksums and decoding (exit 4 on corruption)");
  return [args] {
    InspectOptions options;
    options.check = args->check;
    const nlohmann::json report = inspect_report(args->path, options);
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
