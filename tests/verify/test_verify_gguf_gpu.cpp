// `qpack verify X.gguf --device cuda` gives the report of --device cpu (the
// kernels decode the legacy types to the CPU's floats; the sums run in the
// same fixed order); label gpu: skipped without a usable device or gguf-py.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

#include "qpack/kernels/cuda_quant.hpp"
#include "testutil.hpp"

using namespace qpack;
using json = nlohmann::json;

namespace {

json verify_json(const std::string& args) {
  const auto r = test::run_qpack("verify " + args + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return json::parse(r.output.substr(r.output.find('{')));
}

TEST(VerifyGgufGpu, CudaReportEqualsCpu) {
  if (test::run_command(std::string(QPACK_PYTHON) + " -c 'import gguf, numpy, safetensors' " +
                        "2>/dev/null")
          .exit_code != 0)
    GTEST_SKIP() << "python3 cannot import gguf, numpy, safetensors";
  if (!cuda::cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  test::TempDir dir;
  const std::string g = dir.file("m.gguf"), s = dir.file("s.safetensors");
  const auto w = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                   "/tests/converter/gguf_dequant_tool.py write " + g + " " +
                                   std::to_string(test::test_seed() % 1000000) + " " + s + " 2>&1");
  ASSERT_EQ(w.exit_code, 0) << w.output;
  // And a file of K-quant blocks (random bytes, finite f16 scales) with its
  // gguf-py dequantization as the source.
  const std::string kg = dir.file("k.gguf"), ks = dir.file("k.safetensors");
  const auto kw =
      test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                        "/tests/converter/gguf_dequant_tool.py write-kquants " + kg + " " +
                        std::to_string(test::test_seed() % 1000000) + " " + ks + " 2>&1");
  ASSERT_EQ(kw.exit_code, 0) << kw.output;
  for (const auto& [file, source, src] :
       {std::tuple<std::string, std::string, const char*>{g, s, ""},
        {g, s, " --source "},
        {kg, ks, " --source "}}) {
    const std::string args = file + (*src ? std::string(src) + source : std::string());
    json c = verify_json(args + " --device cpu");
    json d = verify_json(args + " --device cuda");
    for (json* j : {&c, &d}) {
      j->erase("timing");
      (*j)["settings"].erase("device");
      (*j)["settings"].erase("device_requested");
      (*j)["settings"].erase("created_utc");
    }
    EXPECT_EQ(c, d) << file << ", source: " << (*src ? source : "none");
  }
}

}  // namespace
