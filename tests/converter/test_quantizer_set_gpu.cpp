// --device cuda:all's quantizer set on a real device (label gpu; skipped
// without one). The machines lent here have one GPU, so the set's several
// pipelines are two and three CUDA quantizers on device 0: each has its own
// streams and staging and its own host thread, as one per GPU would. The
// files equal the CPU's byte for byte, and so does `convert --device
// cuda:all` (every visible device).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "qpack/converter/backend_cuda.hpp"
#include "qpack/converter/convert.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

TEST(QuantizerSetGpu, SeveralPipelinesOnTheDeviceWriteTheCpuBytes) {
  std::string why;
  if (!cuda::cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  test::TempDir dir;
  const std::string model = dir.file("m");
  test::run_testgen("llama '" + model +
                    "' --hidden 512 --intermediate 1376 --layers 3 --vocab 2000 --heads 8"
                    " --kv-heads 4 --dtype bf16 --seed " +
                    std::to_string(test::test_seed() % 100000));
  ConvertOptions o;
  o.overwrite = true;
  const std::string cpu = dir.file("cpu.qpack"), gpu = dir.file("gpu.qpack");
  convert_checkpoint(model, cpu, o, *make_cpu_quantizer(2));
  const std::vector<uint8_t> want = test::read_file(cpu);
  for (int parts : {2, 3}) {
    SCOPED_TRACE(std::to_string(parts) + " CUDA quantizers on device 0");
    std::vector<std::unique_ptr<TensorQuantizer>> qs;
    for (int k = 0; k < parts; ++k) qs.push_back(make_cuda_quantizer(0));
    auto set = make_quantizer_set(std::move(qs));
    ASSERT_EQ(set->pipelines(), parts);
    convert_checkpoint(model, gpu, o, *set);
    EXPECT_TRUE(test::read_file(gpu) == want) << "the set's file differs from the CPU's";
  }
  const auto r =
      test::run_qpack("convert '" + model + "' '" + gpu + "' --device cuda:all -q --force");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::read_file(gpu) == want) << "cuda:all's file differs from the CPU's";
}

}  // namespace
}  // namespace qpack
