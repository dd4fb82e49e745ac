// qpack dequantize's output dtypes and metadata (issue #12 item 15): --dtype
// sets the dequantized tensors' dtype, --kept-dtype the kept floating-point
// tensors', and the output's __metadata__ holds nothing false (no index
// total_size).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

using namespace qpack;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

class DequantizeDtype : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("model");
    fs::create_directories(model_);
    // F16, sharded with an index (whose metadata has total_size).
    test::run_testgen("llama " + model_ +
                      " --hidden 64 --intermediate 96 --layers 1 --vocab 64 --dtype f16 "
                      "--shard-bytes 20000 --seed 3");
    qp_ = dir_.file("m.qpack");
    const auto r = test::run_qpack("convert " + model_ + " " + qp_ + " -q");
    if (r.exit_code != 0) throw std::runtime_error(r.output);
  }
  test::TempDir dir_;
  std::string model_, qp_;
};

TEST_F(DequantizeDtype, DtypeAloneLeavesKeptTensorsAndSaysSo) {
  const std::string out = dir_.file("o.safetensors");
  const auto r = test::run_qpack("dequantize " + qp_ + " " + out + " --dtype f32 --device cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto f = SafetensorsFile::open(out);
  size_t kept = 0;
  for (const auto& t : f->tensors()) {
    if (t.shape.size() == 1) {
      EXPECT_EQ(t.dtype, DType::F16) << t.name;  // kept: as stored
      ++kept;
    } else {
      EXPECT_EQ(t.dtype, DType::F32) << t.name;
    }
  }
  ASSERT_GT(kept, 0u);
  EXPECT_TRUE(has(r.output, "qpack: warning: " + std::to_string(kept) +
                                " kept tensors kept as stored, in a dtype other than --dtype f32"))
      << r.output;
}

TEST_F(DequantizeDtype, KeptDtypeConvertsKeptTensorsExactly) {
  const std::string out = dir_.file("o.safetensors");
  const auto r = test::run_qpack("dequantize " + qp_ + " " + out +
                                 " --dtype f32 --kept-dtype f32 --device cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(has(r.output, "warning")) << r.output;
  const auto f = SafetensorsFile::open(out);
  const auto src = Checkpoint::open(model_);
  for (const auto& t : f->tensors()) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.dtype, DType::F32);
    if (t.shape.size() != 1) continue;
    const CheckpointTensor* s = src->find(t.name);
    ASSERT_NE(s, nullptr);
    for (uint64_t i = 0; i < t.num_elements(); ++i) {
      float v;
      std::memcpy(&v, f->tensor_data(t) + 4 * i, 4);
      ASSERT_EQ(v, load_as_f32(s->data(), DType::F16, i)) << i;
    }
  }
  // --kept-dtype alone: dequantized tensors in their source dtype (F16).
  const std::string bf = dir_.file("bf.safetensors");
  ASSERT_EQ(test::run_qpack("dequantize " + qp_ + " " + bf + " --kept-dtype bf16 -q").exit_code, 0);
  const auto bf_file = SafetensorsFile::open(bf);  // kept alive while its tensors are read
  for (const auto& t : bf_file->tensors())
    EXPECT_EQ(t.dtype, t.shape.size() == 1 ? DType::BF16 : DType::F16) << t.name;
}

TEST_F(DequantizeDtype, MetadataHoldsNoStaleTotalSize) {
  ASSERT_TRUE(Checkpoint::open(model_)->metadata().contains("total_size"));
  const std::string out = dir_.file("o.safetensors");
  ASSERT_EQ(test::run_qpack("dequantize " + qp_ + " " + out + " --dtype f32 -q").exit_code, 0);
  const auto f = SafetensorsFile::open(out);
  EXPECT_EQ(f->metadata().count("total_size"), 0u);
  // What is carried is the source's own safetensors metadata.
  for (const auto& [k, v] : f->metadata()) {
    const auto src = Checkpoint::open(model_);
    EXPECT_EQ(src->metadata().at(k), v) << k;
  }
}

}  // namespace
