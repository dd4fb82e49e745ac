// qpack: thin CLI over the qpack libraries. All logic lives in format/,
// converter/, kernels/ and verify/.
#include <csignal>
#include <cstdio>
#include <exception>
#include <map>

#include "commands.hpp"
#include "qpack/format/error.hpp"
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : qpack::kExitUsage;
  }
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
    return qpack::kExitUsage;
  } catch (const qpack::Error& e) {
    // The library says what is wrong; the CLI says which of its flags fixes it.
    const char* hint =
        e.code() == qpack::ErrorCode::OutputExists ? " (pass --force to replace it)" : "";
    std::fprintf(stderr, "qpack: error: %s%s\n", e.what(), hint);
    return qpack::exit_code_for(e.code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "qpack: error: out of memory\n");
    return qpack::kExitInternal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qpack: internal error: %s\n", e.what());
    return qpack::kExitInternal;
  }
}
