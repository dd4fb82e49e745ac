// qpack: thin CLI over the qpack libraries. All logic lives in format/,
// converter/, kernels/ and verify/.
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>

#include "cli_options.hpp"
#include "commands.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"
#include "qpack/version.hpp"
#include "signals.hpp"

static const char* kExitCodes =
    "Exit codes:\n"
    "  0   success\n"
    "  1   internal error (a bug: please report)\n"
    "  2   usage error (bad flags or arguments)\n"
    "  3   bad input (malformed or unsupported checkpoint, NaN/Inf, range overflow)\n"
    "  4   integrity error (.qpack checksum, manifest or section mismatch; source mismatch)\n"
    "  5   I/O error (cannot read or write, disk full, output exists)\n"
    "  6   no usable CUDA device, or a CUDA failure\n"
    "  10  verify: a quality threshold failed\n";

namespace {

// Whether the command line asks for JSON: known before (and even when) it
// parses, so that a usage error is a JSON error object too.
bool wants_json(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) return false;
    if (std::strcmp(argv[i], "--json") == 0) return true;
  }
  return false;
}

int run(CLI::App& app, const std::map<CLI::App*, qpack::cli::Runner>& runners, int argc,
        char** argv) {
  const bool json = wants_json(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // --help, on stdout
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (!json) {
      app.exit(e);
      return qpack::kExitUsage;
    }
    qpack::cli::report_failure(qpack::Error(qpack::ErrorCode::InvalidArgument, "", "", e.what()),
                               qpack::kExitUsage, json);
    return qpack::kExitUsage;
  }
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
    return qpack::kExitUsage;
  } catch (const qpack::Error& e) {
    // The library says what is wrong; the CLI says which of its flags fixes it.
    const char* hint =
        e.code() == qpack::ErrorCode::OutputExists ? " (pass --force to replace it)" : "";
    const int rc = qpack::cli::exit_code_of(e);
    qpack::cli::report_failure(e, rc, json, hint);
    return rc;
  } catch (const std::bad_alloc&) {
    qpack::cli::report_failure(qpack::Error(qpack::ErrorCode::Internal, "", "", "out of memory"),
                               qpack::kExitInternal, json);
    return qpack::kExitInternal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qpack: internal error: %s\n",
                 qpack::escape_for_terminal(e.what()).c_str());
    return qpack::kExitInternal;
  }
}

}  // namespace

int main(int argc, char** argv) {
  qpack::cli::install_signal_handlers();
  CLI::App app{"qpack: group-quantize LLM checkpoints into one verified, checksummed .qpack file"};
  app.footer(kExitCodes);
  app.set_version_flag("--version", std::string("qpack ") + QPACK_VERSION_STRING);
  app.require_subcommand(1);

  std::map<CLI::App*, qpack::cli::Runner> runners;
  auto reg = [&](qpack::cli::Runner (*add)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    qpack::cli::Runner r = add(app);
    auto subs = app.get_subcommands({});
    if (subs.size() > before) runners[subs.back()] = std::move(r);
  };
  reg(&qpack::cli::add_inspect);
  reg(&qpack::cli::add_convert);
  reg(&qpack::cli::add_verify);
  reg(&qpack::cli::add_dequantize);
  reg(&qpack::cli::add_merge);

  const int rc = run(app, runners, argc, argv);
  // What a command printed (a report, --json, --help) must have reached
  // stdout: a full disk or a closed pipe is an I/O error, not success.
  if (!qpack::cli::flush_stdout()) {
    std::fprintf(stderr, "qpack: error: <stdout>: cannot write the output: %s\n",
                 std::strerror(errno));
    return qpack::kExitIo;
  }
  return rc;
}
