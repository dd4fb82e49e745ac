// Subcommands of the qpack CLI. Each add_* function declares its options on
// `app` and returns the function that runs it once parsed. Runners return an
// exit code (qpack::ExitCode) and may throw qpack::Error, which main() turns
// into a message and the error's exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace qpack::cli {

using Runner = std::function<int()>;

Runner add_inspect(CLI::App& app);
Runner add_convert(CLI::App& app);
Runner add_verify(CLI::App& app);
Runner add_dequantize(CLI::App& app);
Runner add_merge(CLI::App& app);

}  // namespace qpack::cli
