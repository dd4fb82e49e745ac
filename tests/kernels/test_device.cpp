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

constexpr int kInvalid = int(ErrorCode::InvalidArgument);
constexpr int kNoDevice = int(ErrorCode::NoDevice);

// Device lists (convert --device cuda:all / cuda:N,M): spelt apart from
// parse_device's spellings, malformed or repeated entries InvalidArgument
// wherever they are, and on this machine the ordinals or NoDevice.
TEST(DeviceList, SpellingsAndErrors) {
  for (const char* list : {"cuda:all", "cuda:0,1", "cuda:3,1,2", "cuda:0,"})
    EXPECT_TRUE(is_device_list(list)) << list;
  for (const char* one : {"cpu", "auto", "cuda", "cuda:0", "cuda:12", "all", "0,1"}) {
    EXPECT_FALSE(is_device_list(one)) << one;
  }
  for (const char* list : {"cuda:all", "cuda:0,1"}) {
    EXPECT_THROW(parse_device(list), Error) << list;  // never one device
  }
  const auto code_of = [](const std::string& text) {
    try {
      resolve_device_list(text);
    } catch (const Error& e) {
      return int(e.code());
    }
    return -1;  // no error
  };
  for (const char* bad : {"cuda:0,", "cuda:,1", "cuda:0,0", "cuda:1,x", "cuda:0,-1", "cuda:0 ,1"})
    EXPECT_TRUE(code_of(bad) == kInvalid) << bad;
  EXPECT_TRUE(code_of("cuda:0") == kInvalid);  // one device is no list
  const int n = cuda::device_count();
  if (!cuda::cuda_available()) {
    EXPECT_TRUE(code_of("cuda:all") == kNoDevice);
    EXPECT_TRUE(code_of("cuda:0,1") == kNoDevice);
    return;
  }
  std::vector<int> all;
  for (int i = 0; i < n; ++i) all.push_back(i);
  EXPECT_EQ(resolve_device_list("cuda:all"), all);
  EXPECT_TRUE(code_of("cuda:0," + std::to_string(n)) == kNoDevice);
  if (n >= 2) {
    EXPECT_EQ(resolve_device_list("cuda:1,0"), (std::vector<int>{1, 0}));
  }
}

}  // namespace
}  // namespace qpack
