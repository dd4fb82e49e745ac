// `qpack dequantize X.gguf --device cuda` gives the bytes of --device cpu
// (the legacy types and the K-quants on the kernels); label gpu:
// skipped without a usable device or without gguf-py.
#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "qpack/kernels/cuda_quant.hpp"
#include "testutil.hpp"

using namespace qpack;

namespace {

bool have_gguf_py() {
  return test::run_command(std::string(QPACK_PYTHON) + " -c 'import gguf, numpy' 2>/dev/null")
             .exit_code == 0;
}

void run_tool(const std::string& args) {
  const auto r = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                   "/tests/converter/gguf_dequant_tool.py " + args + " 2>&1");
  if (r.exit_code != 0) throw std::runtime_error("gguf_dequant_tool.py " + args + ": " + r.output);
}

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

// label gpu: --device cuda gives the CPU's bytes, every block type decoded
// on the device: a file of the legacy types (gguf-py's quantizers) and one
// of K-quant blocks (random bytes with finite f16 scales).
TEST(DequantizeGgufGpu, CudaEqualsCpu) {
  if (!have_gguf_py()) GTEST_SKIP() << "python3 cannot import gguf";
  if (!cuda::cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  test::TempDir dir;
  const std::string legacy = dir.file("m.gguf"), kquants = dir.file("k.gguf");
  run_tool("write " + legacy + " " + std::to_string(test::test_seed() % 1000000));
  run_tool("write-kquants " + kquants + " " + std::to_string(test::test_seed() % 1000000));
  for (const auto& [in, dtype] : {std::pair<std::string, const char*>{legacy, "f32"},
                                  {legacy, "f16"},
                                  {legacy, "bf16"},
                                  {kquants, "f32"},
                                  {kquants, "bf16"}}) {
    SCOPED_TRACE(in + " as " + dtype);
    const std::string stem = (in == kquants ? std::string("k_") : std::string("m_")) + dtype;
    const std::string c = dir.file("cpu_" + stem + ".safetensors");
    const std::string g = dir.file("gpu_" + stem + ".safetensors");
    ASSERT_EQ(test::run_qpack("dequantize " + in + " " + c + " -q --device cpu --dtype " + dtype)
                  .exit_code,
              0);
    const auto r =
        test::run_qpack("dequantize " + in + " " + g + " --device cuda --json --dtype " + dtype);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(test::read_file(c), test::read_file(g));
    EXPECT_TRUE(has(r.output, "\"decoded_on_cpu\": []")) << r.output;
  }
}

}  // namespace
