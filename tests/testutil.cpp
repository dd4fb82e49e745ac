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

#include "qpack/safetensors.hpp"

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
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) r.exit_code = 128 + WTERMSIG(status);
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
    tensors.push_back({"layers." + std::to_string(i) + ".w.weight", DType::F32, {256, cols}, w[i].data(),
                       w[i].size() * 4});
  write_safetensors(path, tensors, {}, false);
}

}  // namespace qpack::test
