// The output both dequantizers write through (converter/src/export/
// dequantize_output.hpp): the folder's config.json rules, the kept dtype in
// folder mode, and the order and completeness it enforces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "export/dequantize_output.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

using namespace qpack;
using nlohmann::json;

TEST(DequantizeOutput, ConfigLosesQuantizationConfigAndNamesTheDtype) {
  const json src = {{"model_type", "llama"}, {"quantization_config", {{"bits", 4}}}};
  // No dtype: only quantization_config goes.
  EXPECT_EQ(detail::dequantized_config(src, std::nullopt), json({{"model_type", "llama"}}));
  // Neither key: torch_dtype, which transformers 4 and 5 both read.
  EXPECT_EQ(detail::dequantized_config(src, DType::BF16),
            json({{"model_type", "llama"}, {"torch_dtype", "bfloat16"}}));
  // The keys present are set, no other added.
  EXPECT_EQ(detail::dequantized_config(json{{"dtype", "float32"}}, DType::F16),
            json({{"dtype", "float16"}}));
  EXPECT_EQ(detail::dequantized_config(json{{"dtype", "x"}, {"torch_dtype", "y"}}, DType::F32),
            json({{"dtype", "float32"}, {"torch_dtype", "float32"}}));
  EXPECT_TRUE(detail::dequantized_config(nullptr, DType::F16).is_null());
}

TEST(DequantizeOutput, InAFolderDtypeCoversKeptTensors) {
  DequantizeOptions opt;
  opt.dtype = DType::BF16;
  EXPECT_FALSE(detail::kept_output_dtype(opt).has_value());  // one file: as stored
  opt.folder = true;
  EXPECT_EQ(detail::kept_output_dtype(opt), DType::BF16);
  opt.kept_dtype = DType::F32;
  EXPECT_EQ(detail::kept_output_dtype(opt), DType::F32);
}

TEST(DequantizeOutput, TensorsComeInOrderAndComplete) {
  for (const bool folder : {false, true}) {
    SCOPED_TRACE(folder ? "folder" : "file");
    test::TempDir dir;
    DequantizeOptions opt;
    opt.folder = folder;
    const std::vector<TensorToWrite> declared = {{"a", DType::F16, {3}, nullptr, 6},
                                                 {"b", DType::F32, {2}, nullptr, 8}};
    const float values[3] = {1.0f, -2.5f, 65504.0f};
    {
      detail::DequantizeOutput out(dir.file(folder ? "o" : "o.safetensors"), declared, {}, nullptr,
                                   opt);
      EXPECT_THROW(out.begin_tensor(1), Error);  // not in order
      out.begin_tensor(0);
      out.append_floats(values, 2);
      EXPECT_THROW(out.begin_tensor(1), Error);           // a incomplete
      EXPECT_THROW(out.append_floats(values, 2), Error);  // past a's end
      out.append_floats(values + 2, 1);
      out.begin_tensor(1);
      EXPECT_THROW(out.commit(), Error);                   // b missing
      const uint8_t f16_in[4] = {0x00, 0x3c, 0x00, 0xc0};  // 1.0, -2.0 as F16
      out.append_kept(f16_in, DType::F16, 2);              // converted to F32
      out.commit();
    }
    const auto f =
        SafetensorsFile::open(folder ? dir.file("o/model.safetensors") : dir.file("o.safetensors"));
    const TensorInfo* a = f->find("a");
    const TensorInfo* b = f->find("b");
    ASSERT_TRUE(a && b);
    const uint8_t want_a[6] = {0x00, 0x3c, 0x00, 0xc1, 0xff, 0x7b};  // 1, -2.5, 65504 in F16
    EXPECT_TRUE(std::equal(want_a, want_a + 6, f->tensor_data(*a)));
    float got_b[2];
    std::memcpy(got_b, f->tensor_data(*b), 8);
    EXPECT_EQ(got_b[0], 1.0f);
    EXPECT_EQ(got_b[1], -2.0f);
  }
}
