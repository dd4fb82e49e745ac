// `qpack dequantize X.gguf` against gguf-py (PyPI `gguf`, whose dequantize is
// bit-identical to ggml's for every type): GGUF files written in the test by
// gguf-py's own quantizers from fresh random floats at awkward shapes, every
// output tensor compared bit for bit by tests/converter/gguf_dequant_tool.py.
// Also: the metadata, unsupported types (an error naming tensor and type, or
// left out with --skip-unsupported) and damaged files; --device cuda
// against --device cpu is test_dequantize_gguf_gpu.cpp (label gpu). Skipped
// where `import gguf, numpy` fails.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "qpack/converter/export.hpp"
#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

using namespace qpack;
using json = nlohmann::json;

namespace {

bool have_gguf_py() {
  static const bool ok =
      test::run_command(std::string(QPACK_PYTHON) + " -c 'import gguf, numpy' 2>/dev/null")
          .exit_code == 0;
  return ok;
}

std::string tool() {
  return std::string(QPACK_PYTHON) + " " + test::source_dir() +
         "/tests/converter/gguf_dequant_tool.py ";
}

void run_tool(const std::string& args) {
  const auto r = test::run_command(tool() + args + " 2>&1");
  if (r.exit_code != 0) throw std::runtime_error("gguf_dequant_tool.py " + args + ": " + r.output);
}

json tool_json(const std::string& args) {
  const auto r = test::run_command(tool() + args + " 2>/dev/null");
  if (r.exit_code != 0) throw std::runtime_error("gguf_dequant_tool.py " + args + ": " + r.output);
  return json::parse(r.output);
}

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

#define REQUIRE_GGUF_PY() \
  if (!have_gguf_py()) GTEST_SKIP() << "python3 cannot import gguf (pip install gguf numpy)"

// Every tensor of the check present, of the right shape and bit-identical.
void expect_all_equal(const json& check, size_t expected_tensors) {
  EXPECT_EQ(check.size(), expected_tensors);
  for (const auto& [name, v] : check.items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(v.at("present").get<bool>()) << "missing from the output";
    EXPECT_TRUE(v.at("shape_ok").get<bool>());
    EXPECT_TRUE(v.at("equal").get<bool>()) << v.dump();
  }
}

class DequantizeGguf : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gguf_py()) GTEST_SKIP() << "python3 cannot import gguf (pip install gguf numpy)";
    gguf_ = dir_.file("m.gguf");
    run_tool("write " + gguf_ + " " + std::to_string(test::test_seed() % 1000000));
  }
  test::TempDir dir_;
  std::string gguf_;
};

TEST_F(DequantizeGguf, LegacyTypesAndFloatsEqualGgufPyBitForBit) {
  const size_t tensors = GgufFile::open(gguf_)->tensors().size();
  ASSERT_EQ(tensors, 24u);
  for (const char* dtype : {"f32", "f16", "bf16"}) {
    SCOPED_TRACE(dtype);
    const std::string out = dir_.file(std::string("o_") + dtype + ".safetensors");
    const auto r = test::run_qpack("dequantize " + gguf_ + " " + out + " --device cpu --dtype " +
                                   dtype + " -q");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_all_equal(tool_json("check " + gguf_ + " " + out + " " + dtype), tensors);
  }
}

TEST_F(DequantizeGguf, SameBytesForAnyThreadCountAndSliceSize) {
  const std::string one = dir_.file("one.safetensors"), two = dir_.file("two.safetensors");
  const auto r =
      test::run_qpack("dequantize " + gguf_ + " " + one + " --device cpu --threads 1 -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(
      test::run_qpack("dequantize " + gguf_ + " " + two + " --device cpu --threads 2 -q").exit_code,
      0);
  EXPECT_EQ(test::read_file(one), test::read_file(two));
  // One block per slice: the slicing must not show in the bytes.
  DequantizeOptions opt;
  opt.device = parse_device("cpu");
  opt.slice_bytes = 4;
  const std::string small = dir_.file("small.safetensors");
  dequantize_gguf_file(gguf_, small, opt);
  EXPECT_EQ(test::read_file(one), test::read_file(small));
}

TEST_F(DequantizeGguf, ShapesReversedMetadataAsStringsArraysListed) {
  const std::string out = dir_.file("o.safetensors");
  ASSERT_EQ(test::run_qpack("dequantize " + gguf_ + " " + out + " -q --device cpu").exit_code, 0);
  const auto g = GgufFile::open(gguf_);
  const auto f = SafetensorsFile::open(out);
  for (const GgufTensorInfo& t : g->tensors()) {
    const TensorInfo* o = f->find(t.name);
    ASSERT_NE(o, nullptr) << t.name;
    EXPECT_EQ(o->shape, std::vector<int64_t>(t.ne.rbegin(), t.ne.rend())) << t.name;
    const auto plain = ggml_plain_dtype(t.type);
    EXPECT_EQ(o->dtype, plain ? *plain : DType::F32) << t.name;
  }
  const auto& m = f->metadata();
  EXPECT_EQ(m.at("qpack.source_format"), "gguf");
  EXPECT_EQ(m.at("general.architecture"), "llama");
  EXPECT_EQ(m.at("llama.block_count"), "2");
  EXPECT_EQ(m.at("llama.rope.freq_base"), "10000");
  EXPECT_EQ(m.at("test.f32"), "0.1");  // the shortest text that reads back as the float
  EXPECT_EQ(m.at("test.f64"), "0.3333333333333333");
  EXPECT_EQ(m.at("test.i32"), "-7");
  EXPECT_EQ(m.at("test.bool"), "true");
  EXPECT_EQ(m.at("test.str"), "h\xc3\xa9llo");
  EXPECT_EQ(m.count("tokenizer.ggml.tokens"), 0u);
  EXPECT_EQ(m.at("qpack.gguf_arrays_omitted"), "[\"tokenizer.ggml.tokens\"]");
}

TEST_F(DequantizeGguf, KeptDtypeConvertsTheFloatTensors) {
  const std::string out = dir_.file("o.safetensors");
  const auto r = test::run_qpack("dequantize " + gguf_ + " " + out +
                                 " --dtype f16 --kept-dtype f16 --device cpu --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto f = SafetensorsFile::open(out);
  for (const auto& t : f->tensors()) EXPECT_EQ(t.dtype, DType::F16) << t.name;
  EXPECT_FALSE(has(r.output, "warning")) << r.output;
}

TEST(DequantizeGgufKQuants, EqualGgufPyOnceTheBuildDecodesThem) {
  REQUIRE_GGUF_PY();
  for (GgmlType t :
       {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
    if (!ggml_blocks_supported(t)) GTEST_SKIP() << "K-quants not supported by this build";
  test::TempDir dir;
  const std::string in = dir.file("k.gguf"), out = dir.file("k.safetensors");
  run_tool("write-kquants " + in + " " + std::to_string(test::test_seed() % 1000000));
  const auto r = test::run_qpack("dequantize " + in + " " + out + " --device cpu -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_all_equal(tool_json("check " + in + " " + out), GgufFile::open(in)->tensors().size());
}

TEST(DequantizeGgufErrors, UnsupportedTypeNamesTensorAndTypeOrIsSkipped) {
  REQUIRE_GGUF_PY();
  // K-quant tensors while the build lacks them; otherwise an IQ type, which
  // no qpack build decodes, written as raw bytes by qpack's own writer.
  test::TempDir dir;
  const std::string in = dir.file("u.gguf"), out = dir.file("u.safetensors");
  std::vector<uint8_t> bytes(size_t(ggml_type_info(uint32_t(GgmlType::IQ4_NL))->type_size) * 2, 7);
  std::vector<float> f(32, 0.5f);
  write_gguf(in, {},
             {{{"a.weight", GgmlType::F32, {32}}, f.data()},
              {{"blk.0.odd.weight", GgmlType::IQ4_NL, {64}}, bytes.data()}},
             false);
  auto r = test::run_qpack("dequantize " + in + " " + out + " --device cpu");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(has(r.output, "tensor 'blk.0.odd.weight': GGML type IQ4_NL cannot be decoded"))
      << r.output;
  EXPECT_FALSE(file_exists(out));
  r = test::run_qpack("dequantize " + in + " " + out + " --device cpu --skip-unsupported --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "blk.0.odd.weight (IQ4_NL) left out")) << r.output;
  const auto o = SafetensorsFile::open(out);
  EXPECT_EQ(o->tensors().size(), 1u);
  EXPECT_NE(o->find("a.weight"), nullptr);
}

TEST(DequantizeGgufErrors, TruncatedOrTamperedFileIsAnIntegrityErrorAndWritesNothing) {
  test::TempDir dir;
  const std::string in = dir.file("t.gguf"), out = dir.file("t.safetensors");
  std::vector<uint8_t> q(size_t(ggml_type_info(uint32_t(GgmlType::Q8_0))->type_size) * 4, 1);
  write_gguf(in, {GgufKv{"general.architecture", GgufValue::of_string("llama")}},
             {{{"blk.0.w.weight", GgmlType::Q8_0, {64, 2}}, q.data()}}, false);
  std::vector<uint8_t> bytes = test::read_file(in);
  // Truncated: the tensor data runs past the end.
  const std::string cut = dir.file("cut.gguf");
  test::write_file(cut, bytes.data(), bytes.size() - 40);
  auto r = test::run_qpack("dequantize " + cut + " " + out + " --device cpu");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_TRUE(has(r.output, "cut.gguf")) << r.output;
  EXPECT_TRUE(has(r.output, "[Gguf")) << r.output;
  EXPECT_FALSE(file_exists(out));
  // Tampered: the tensor's type number (after its name, n_dims and ne) set to
  // one that does not exist.
  const std::string name = "blk.0.w.weight";
  size_t at = 0;
  for (size_t i = 0; i + name.size() <= bytes.size(); ++i)
    if (std::string(bytes.begin() + long(i), bytes.begin() + long(i + name.size())) == name) {
      at = i + name.size() + 4 + 2 * 8;
      break;
    }
  ASSERT_GT(at, 0u);
  bytes[at] = 99;
  const std::string bad = dir.file("bad.gguf");
  test::write_file(bad, bytes.data(), bytes.size());
  r = test::run_qpack("dequantize " + bad + " " + out + " --device cpu");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_TRUE(has(r.output, "GgufUnknownTensorType")) << r.output;
  EXPECT_FALSE(file_exists(out));
}

}  // namespace
