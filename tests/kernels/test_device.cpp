// qpack::parse_device / resolve_device (qpack/kernels/device.hpp): the one
// --device vocabulary of every subcommand, and the one default rule.
#include <gtest/gtest.h>

#include <string>

#include "qpack/format/error.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/device.hpp"

namespace qpack {
namespace {

TEST(DeviceSelection, ParsesExactlyTheFourSpellings) {
  EXPECT_EQ(parse_device("cpu"), (DeviceSelection{DeviceKind::Cpu, 0}));
  EXPECT_EQ(parse_device("auto"), (DeviceSelection{DeviceKind::Auto, 0}));
  EXPECT_EQ(parse_device("cuda"), (DeviceSelection{DeviceKind::Cuda, 0}));
  EXPECT_EQ(parse_device("cuda:0"), (DeviceSelection{DeviceKind::Cuda, 0}));
  EXPECT_EQ(parse_device("cuda:7"), (DeviceSelection{DeviceKind::Cuda, 7}));
  EXPECT_EQ(parse_device("cuda:2147483647"), (DeviceSelection{DeviceKind::Cuda, 2147483647}));
  for (const char* bad :
       {"", "gpu", "GPU", "CUDA", "Cpu", "cuda:", "cuda:-1", "cuda:+1", "cuda:1x", "cuda: 1",
        " cpu", "cpu ", "cuda0", "cuda:2147483648", "cuda:99999999999999999999", "tpu"}) {
    try {
      parse_device(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << bad;
      EXPECT_EQ(e.reason(),
                "unknown device '" + std::string(bad) + "' (expected cpu, cuda, cuda:N or auto)");
      EXPECT_EQ(exit_code_for(e.code()), kExitUsage);
    }
  }
}

TEST(DeviceSelection, NamesReadBack) {
  for (const DeviceSelection d :
       {DeviceSelection{DeviceKind::Cpu, 0}, DeviceSelection{DeviceKind::Auto, 0},
        DeviceSelection{DeviceKind::Cuda, 0}, DeviceSelection{DeviceKind::Cuda, 3}})
    EXPECT_EQ(parse_device(device_name(d)), d) << device_name(d);
  EXPECT_EQ(device_name(parse_device("cuda")), "cuda:0");
  EXPECT_STREQ(device_kind_name(DeviceKind::Cuda), "cuda");
  // The one default: auto.
  EXPECT_EQ(DeviceSelection{}, parse_device("auto"));
}

TEST(DeviceSelection, ResolvesAgainstThisMachine) {
  EXPECT_EQ(resolve_device(parse_device("cpu")), (DeviceSelection{DeviceKind::Cpu, 0}));
  const DeviceSelection a = resolve_device(parse_device("auto"));
  if (cuda::cuda_available()) {
    EXPECT_EQ(a, (DeviceSelection{DeviceKind::Cuda, 0}));
    EXPECT_EQ(resolve_device(parse_device("cuda")), (DeviceSelection{DeviceKind::Cuda, 0}));
  } else {
    EXPECT_EQ(a, (DeviceSelection{DeviceKind::Cpu, 0}));
  }
  // An index at or past the device count is NoDevice (exit 6), never a
  // silent fall-back to the CPU.
  const int n = cuda::device_count();
  for (const int index : {n, n + 5}) {
    try {
      resolve_device({DeviceKind::Cuda, index});
      ADD_FAILURE() << "cuda:" << index << " of " << n;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NoDevice);
      EXPECT_NE(e.reason().find("cuda:" + std::to_string(index)), std::string::npos) << e.reason();
      EXPECT_EQ(exit_code_for(e.code()), kExitNoDevice);
    }
  }
}

}  // namespace
}  // namespace qpack
