// Small helpers shared by the test executables.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "qpack/spec/scheme.hpp"

namespace qpack::test {

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const void* data, size_t size);
void write_file(const std::string& path, const std::string& text);
std::vector<uint8_t> read_file(const std::string& path);

struct CommandResult {
  int exit_code = -1;  // the process's exit status, or 128+signal
  std::string output;  // stdout and stderr together
};
// Runs a shell command line (via /bin/sh) and captures its output.
CommandResult run_command(const std::string& command_line);
// Runs the qpack CLI built with the tests: run_qpack("inspect " + path).
CommandResult run_qpack(const std::string& args);

// Runs qpack-testgen (tools/testgen) with `args`; throws on failure.
void run_testgen(const std::string& args);

// Seed for random tests: $QPACK_TEST_SEED when set, otherwise fresh per run
// (printed, so a failure can be replayed).
uint64_t test_seed();

// Writes a safetensors file of six random F32 [256, cols] tensors named
// layers.N.w.weight, the third (layers.2) with a NaN at flat index 1000:
// a conversion that fails with later tensors already in flight.
void write_model_with_nan(const std::string& path, int64_t cols, uint64_t seed);

std::string shared_data_dir();  // ../shared/data beside the source tree
std::string source_dir();

// docs/quantization.md §7's bound written independently of the spec's
// libm-free evaluation (qpack/spec/error_bound.hpp): the ulp through
// frexp/ldexp, the sums as the doc reads them. The spec's bound must give
// these bits for every finite input.
double reference_ulp(double v, DType dtype);
double reference_error_bound(double x, double s, double m, const QuantScheme& scheme);

}  // namespace qpack::test
