#include "testutil.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "qpack/format/safetensors.hpp"

namespace qpack::test {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/qpack-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) throw std::runtime_error("cannot write " + path);
}

void write_file(const std::string& path, const std::string& text) {
  write_file(path, text.data(), text.size());
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

CommandResult run_command(const std::string& command_line) {
  CommandResult r;
  FILE* p = popen((command_line + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  if (WIFEXITED(status))
    r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    r.exit_code = 128 + WTERMSIG(status);
  return r;
}

CommandResult run_qpack(const std::string& args) {
  return run_command(std::string("'") + QPACK_CLI + "' " + args);
}

void run_testgen(const std::string& args) {
  const CommandResult r = run_command(std::string("'") + QPACK_TESTGEN + "' " + args);
  if (r.exit_code != 0) throw std::runtime_error("qpack-testgen " + args + " failed: " + r.output);
}

uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* s = std::getenv("QPACK_TEST_SEED");
    uint64_t v = s && *s ? std::strtoull(s, nullptr, 0)
                         : uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                               (uint64_t(getpid()) << 32);
    std::fprintf(stderr, "[qpack test] seed %llu (set QPACK_TEST_SEED to replay)\n",
                 static_cast<unsigned long long>(v));
    return v;
  }();
  return seed;
}

std::string shared_data_dir() { return QPACK_SHARED_DATA; }
std::string source_dir() { return QPACK_SOURCE_DIR; }

void write_model_with_nan(const std::string& path, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> w(6, std::vector<float>(size_t(256 * cols)));
  for (auto& t : w)
    for (auto& x : t) x = normal(rng);
  w[2][1000] = std::nanf("");
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < w.size(); ++i)
    tensors.push_back({"layers." + std::to_string(i) + ".w.weight",
                       DType::F32,
                       {256, cols},
                       w[i].data(),
                       w[i].size() * 4});
  write_safetensors(path, tensors, {}, false);
}

double reference_ulp(double v, DType dtype) {
  int mant_bits, emin;
  switch (dtype) {
    case DType::F16:
      mant_bits = 10;
      emin = -14;
      break;
    case DType::BF16:
      mant_bits = 7;
      emin = -126;
      break;
    default:
      mant_bits = 23;
      emin = -126;
      break;
  }
  v = std::fabs(v);
  int e = emin;
  if (v > 0) {
    int ex;
    std::frexp(v, &ex);  // v = f * 2^ex, f in [0.5, 1)
    e = ex - 1;
    if (e < emin) e = emin;
  }
  return std::ldexp(1.0, e - mant_bits);
}

double reference_error_bound(double x, double s, double m, const QuantScheme& scheme) {
  const double q = scheme.symmetric ? (1 << (scheme.bits - 1)) - 1 : (1 << scheme.bits) - 1;
  double b = 0.5 * s + q * (reference_ulp(s, scheme.scale_dtype) + std::ldexp(s, -22) +
                            std::ldexp(1.0, -126));
  // An integer zero-point is no float offset: no ulp(M), and M counts as 0.
  const bool integer_zero = !scheme.symmetric && scheme.zero_point == ZeroPoint::Integer;
  if (integer_zero) m = 0.0;
  if (!scheme.symmetric && !integer_zero) b += reference_ulp(m, scheme.scale_dtype);
  b += std::ldexp(1.0, -21) * (std::fabs(x) + std::fabs(m) + q * s);
  return b;
}

}  // namespace qpack::test
