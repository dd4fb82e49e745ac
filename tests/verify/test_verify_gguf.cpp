// `qpack verify X.gguf`: GGUF files written in the test by gguf-py's own
// quantizers (tests/converter/gguf_dequant_tool.py) from fresh random floats,
// their metrics against a float64 numpy computation over gguf-py's
// dequantization, the same report from a safetensors or a GGUF source and
// for any thread count or slice size, the report's GGUF fields, the gate's
// exit codes, damaged and unsupported files, and the self-check. Skipped
// where `import gguf, numpy` fails.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/io.hpp"
#include "qpack/verify/report.hpp"
#include "qpack/verify/verify.hpp"
#include "testutil.hpp"

using namespace qpack;
using json = nlohmann::json;

namespace {

bool have_gguf_py() {
  static const bool ok = test::run_command(std::string(QPACK_PYTHON) +
                                           " -c 'import gguf, numpy, safetensors' " + "2>/dev/null")
                             .exit_code == 0;
  return ok;
}

std::string tool() {
  return std::string(QPACK_PYTHON) + " " + test::source_dir() +
         "/tests/converter/gguf_dequant_tool.py ";
}

json tool_json(const std::string& args) {
  const auto r = test::run_command(tool() + args + " 2>/dev/null");
  if (r.exit_code != 0) throw std::runtime_error("gguf_dequant_tool.py " + args + ": " + r.output);
  return json::parse(r.output);
}

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

json verify_json(const std::string& args, int expect_exit) {
  const auto r = test::run_qpack("verify " + args + " --json");
  EXPECT_EQ(r.exit_code, expect_exit) << r.output;
  const size_t brace = r.output.find('{');
  if (brace == std::string::npos) throw std::runtime_error("no JSON: " + r.output);
  return json::parse(r.output.substr(brace));
}

const json& tensor_of(const json& rep, const std::string& name) {
  for (const auto& t : rep.at("tensors"))
    if (t.at("name") == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// The report less what may differ between runs (timing, device, date).
json comparable(json j) {
  j.erase("timing");
  j["settings"].erase("device");
  j["settings"].erase("device_requested");
  j["settings"].erase("threads");
  j["settings"].erase("created_utc");
  j["settings"].erase("source");
  j["settings"].erase("file");
  j["file"].erase("path");
  return j;
}

class VerifyGguf : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gguf_py()) GTEST_SKIP() << "python3 cannot import gguf, numpy, safetensors";
    gguf_ = dir_.file("m.gguf");
    src_ = dir_.file("src.safetensors");
    src_gguf_ = dir_.file("src.gguf");
    const auto r = test::run_command(tool() + "write " + gguf_ + " " +
                                     std::to_string(test::test_seed() % 1000000) + " " + src_ +
                                     " " + src_gguf_ + " 2>&1");
    if (r.exit_code != 0) throw std::runtime_error(r.output);
  }
  test::TempDir dir_;
  std::string gguf_, src_, src_gguf_;
};

TEST_F(VerifyGguf, MetricsEqualAFloat64ComputationOverGgufPysDequantization) {
  const json rep = verify_json(gguf_ + " --source " + src_ + " --device cpu", 0);
  const json ref = tool_json("metrics " + gguf_ + " " + src_);
  ASSERT_EQ(rep.at("tensors").size(), ref.size());
  EXPECT_EQ(rep.at("file").at("format"), "gguf");
  EXPECT_EQ(rep.at("file").at("format_version"), "3");
  size_t measured = 0;
  for (const auto& [name, want] : ref.items()) {
    SCOPED_TRACE(name);
    const json& t = tensor_of(rep, name);
    EXPECT_EQ(t.at("ggml_type"), want.at("type"));
    if (want.at("type") == "F32") {  // stored as its source: compared byte for byte
      EXPECT_FALSE(t.at("quantized").get<bool>());
      EXPECT_TRUE(t.at("raw_equal").get<bool>());
      continue;
    }
    ++measured;
    ASSERT_TRUE(t.at("quantized").get<bool>());
    const json& m = t.at("metrics");
    EXPECT_EQ(m.at("elements").get<int64_t>(), want.at("elements").get<int64_t>());
    EXPECT_NEAR(m.at("rel_error").get<double>(), want.at("rel_error").get<double>(),
                1e-12 * want.at("rel_error").get<double>());
    EXPECT_NEAR(m.at("sums").at("sq_err").get<double>(), want.at("sq_err").get<double>(),
                1e-12 * want.at("sq_err").get<double>());
    // |x - x^| of two floats is exact in double: the same maximum, same place.
    EXPECT_EQ(m.at("max_abs_error").get<double>(), want.at("max_abs_error").get<double>());
    EXPECT_EQ(m.at("max_abs_index").get<int64_t>(), want.at("max_abs_index").get<int64_t>());
    if (!want.at("cosine").is_null()) {
      EXPECT_NEAR(m.at("cosine").get<double>(), want.at("cosine").get<double>(), 1e-12);
    }
    EXPECT_EQ(t.at("scheme"), nullptr);
    EXPECT_EQ(t.at("status"), "ok");
  }
  EXPECT_EQ(measured, ref.size() - 1);
}

TEST_F(VerifyGguf, SameReportFromAGgufSourceAnyThreadCountAndSliceSize) {
  const json a = verify_json(gguf_ + " --source " + src_ + " --device cpu --threads 1", 0);
  const json b = verify_json(gguf_ + " --source " + src_gguf_ + " --device cpu --threads 2", 0);
  EXPECT_EQ(comparable(a), comparable(b));
  // One summation block per slice (the big tensor spans three).
  VerifyOptions opt;
  opt.device = parse_device("cpu");
  opt.gguf_slice_bytes = 1;
  opt.ggml_supported = [](GgmlType t) { return ggml_blocks_supported(t); };
  opt.ggml_dequantize = [](GgmlType t, const uint8_t* b, int64_t n, float* o, int th,
                           const std::string& name) {
    dequantize_ggml_blocks_cpu(t, b, n, o, th, name);
  };
  const VerifyReport rep = verify(gguf_, src_, opt);
  json c = verify_report_json(rep);
  EXPECT_EQ(comparable(a)["tensors"], comparable(c)["tensors"]);
  // Without the converter's decoders: the spec's reference, the same numbers.
  VerifyOptions plain;
  plain.device = parse_device("cpu");
  EXPECT_EQ(comparable(a)["model"],
            comparable(verify_report_json(verify(gguf_, src_, plain)))["model"]);
}

TEST_F(VerifyGguf, GateExitCodesAndTextReport) {
  auto r = test::run_qpack("verify " + gguf_ + " " + src_ + " --device cpu --max-rel-error 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "(GGUF v3)")) << r.output;
  EXPECT_TRUE(has(r.output, "GGUF has no checksums")) << r.output;
  EXPECT_TRUE(has(r.output, "Q4_0")) << r.output;
  r = test::run_qpack("verify " + gguf_ + " " + src_ + " --device cpu --max-rel-error 0.05");
  EXPECT_EQ(r.exit_code, 10) << r.output;  // the 4-bit tensors are above 5 %
  EXPECT_TRUE(has(r.output, "q4_0")) << r.output;
  r = test::run_qpack("verify " + gguf_ + " " + src_ + " --device cpu --min-snr 200");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  const std::string html = dir_.file("r.html");
  r = test::run_qpack("verify " + gguf_ + " " + src_ + " --device cpu -q --html " + html);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto bytes = test::read_file(html);
  const std::string page(bytes.begin(), bytes.end());
  EXPECT_TRUE(has(page, "GGUF v3")) << "the HTML names the format";
  EXPECT_TRUE(has(page, "Q5_1"));
}

TEST_F(VerifyGguf, WrongSourceIsASourceMismatch) {
  // A source without one of the tensors, and one whose tensor has another shape.
  const std::string other = dir_.file("other.gguf");
  std::vector<float> f(35, 1.0f);
  write_gguf(other, {}, {{{"output_norm.weight", GgmlType::F32, {35}}, f.data()}}, false);
  const json rep = verify_json(gguf_ + " --source " + other + " --device cpu", 4);
  EXPECT_EQ(rep.at("verdict"), "source_mismatch");
  const json& t = tensor_of(rep, "output_norm.weight");
  EXPECT_TRUE(has(t.at("problems").dump(), "shape differs: source [35], file [5, 7]"))
      << t.at("problems");
  EXPECT_TRUE(
      has(tensor_of(rep, "blk.0.q4_0_0.weight").at("problems").dump(), "not in the source"));
}

// An HF Llama folder as the source: names mapped HF -> GGUF and the Q/K rows
// un-permuted. The GGUF is written by numpy's restatement of llama.cpp's
// converter (gguf_dequant_tool.py hf-to-gguf), not by qpack.
class VerifyGgufHf : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gguf_py()) GTEST_SKIP() << "python3 cannot import gguf, numpy, safetensors";
    hf_ = dir_.file("hf");
    test::run_testgen("llama " + hf_ +
                      " --hidden 64 --intermediate 96 --layers 2 --vocab 64 --dtype f16 --heads 4 "
                      "--kv-heads 2 --seed " +
                      std::to_string(test::test_seed() % 1000000));
  }
  std::string to_gguf(const std::string& name, const std::string& extra = "") {
    const std::string out = dir_.file(name);
    const auto r = test::run_command(tool() + "hf-to-gguf " + hf_ + " " + out + extra + " 2>&1");
    if (r.exit_code != 0) throw std::runtime_error(r.output);
    return out;
  }
  test::TempDir dir_;
  std::string hf_;
};

TEST_F(VerifyGgufHf, PermutedRowsEqualTheHfRowsByteForByte) {
  const json rep = verify_json(to_gguf("m.gguf") + " --source " + hf_ + " --device cpu", 0);
  EXPECT_TRUE(rep.at("source_check").at("missing_from_qpack").empty());
  size_t raw = 0, qk = 0;
  for (const auto& t : rep.at("tensors")) {
    SCOPED_TRACE(t.at("name").get<std::string>());
    if (t.at("shape").size() == 2) {
      ++raw;
      EXPECT_TRUE(t.at("raw_equal").get<bool>());
      const std::string n = t.at("name");
      qk += has(n, "attn_q") || has(n, "attn_k");
    } else {  // norms: F32 in the GGUF from an F16 source, exact
      EXPECT_TRUE(t.at("quantized").get<bool>());
      EXPECT_EQ(t.at("metrics").at("sums").at("sq_err").get<double>(), 0.0);
    }
  }
  EXPECT_EQ(raw, 2u + 2u * 7u);
  EXPECT_EQ(qk, 4u);
}

TEST_F(VerifyGgufHf, UnpermutedQkRowsAreASourceMismatchOfExactlyThoseTensors) {
  const json rep =
      verify_json(to_gguf("bad.gguf", " nopermute") + " --source " + hf_ + " --device cpu", 4);
  std::vector<std::string> bad;
  for (const auto& m : rep.at("source_check").at("mismatched")) bad.push_back(m.at("tensor"));
  EXPECT_EQ(bad, (std::vector<std::string>{"blk.0.attn_k.weight", "blk.0.attn_q.weight",
                                           "blk.1.attn_k.weight", "blk.1.attn_q.weight"}));
}

TEST_F(VerifyGgufHf, QpacksOwnGgufExportVerifiesAgainstItsHfSource) {
  const std::string out = dir_.file("q8.gguf");
  const auto c = test::run_qpack("convert " + hf_ + " " + out + " --type Q8_0 -q --device cpu");
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const json rep = verify_json(out + " --source " + hf_ + " --device cpu --max-rel-error 0.01", 0);
  EXPECT_EQ(tensor_of(rep, "blk.1.attn_q.weight").at("ggml_type"), "Q8_0");
  // Without the row map every Q/K row would be compared with another one.
  EXPECT_LT(tensor_of(rep, "blk.1.attn_q.weight").at("metrics").at("rel_error").get<double>(),
            0.01);
}

TEST(VerifyGgufKQuants, DecodeAsGgufPyOnceTheBuildDecodesThem) {
  if (!have_gguf_py()) GTEST_SKIP() << "python3 cannot import gguf, numpy, safetensors";
  for (GgmlType t :
       {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
    if (!ggml_blocks_supported(t)) GTEST_SKIP() << "K-quants not supported by this build";
  test::TempDir dir;
  const std::string g = dir.file("k.gguf"), s = dir.file("k.safetensors");
  const auto w = test::run_command(tool() + "write-kquants " + g + " " +
                                   std::to_string(test::test_seed() % 1000000) + " " + s + " 2>&1");
  ASSERT_EQ(w.exit_code, 0) << w.output;
  // The source is gguf-py's decoding of the same blocks: every error is 0.
  const json rep = verify_json(g + " --source " + s + " --device cpu --max-abs-error 0", 0);
  for (const auto& t : rep.at("tensors")) {
    SCOPED_TRACE(t.at("name").get<std::string>());
    EXPECT_EQ(t.at("metrics").at("sums").at("sq_err").get<double>(), 0.0);
    EXPECT_GT(t.at("metrics").at("sums").at("sq_ref").get<double>(), 0.0);
  }
}

TEST(VerifyGgufFiles, DamagedFileIsAnIntegrityFailure) {
  test::TempDir dir;
  const std::string in = dir.file("t.gguf");
  std::vector<uint8_t> q(34 * 4, 1);
  write_gguf(in, {}, {{{"blk.0.w.weight", GgmlType::Q8_0, {64, 2}}, q.data()}}, false);
  const std::vector<uint8_t> bytes = test::read_file(in);
  const std::string cut = dir.file("cut.gguf");
  test::write_file(cut, bytes.data(), bytes.size() - 40);
  const json rep = verify_json(cut + " --device cpu", 4);
  EXPECT_EQ(rep.at("verdict"), "integrity_failed");
  EXPECT_EQ(rep.at("file").at("format"), "gguf");
  ASSERT_EQ(rep.at("integrity").at("issues").size(), 1u);
  EXPECT_TRUE(has(rep.at("integrity").at("issues")[0].at("code").get<std::string>(), "Gguf"));
}

TEST(VerifyGgufFiles, UnsupportedTypeIsABadInputNamingTensorAndType) {
  test::TempDir dir;
  const std::string in = dir.file("u.gguf");
  std::vector<uint8_t> b(size_t(ggml_type_info(uint32_t(GgmlType::IQ4_NL))->type_size), 0);
  write_gguf(in, {}, {{{"blk.0.odd.weight", GgmlType::IQ4_NL, {32}}, b.data()}}, false);
  const auto r = test::run_qpack("verify " + in + " --device cpu");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(has(r.output, "tensor 'blk.0.odd.weight': GGML type IQ4_NL cannot be decoded"))
      << r.output;
}

TEST(VerifyGgufFiles, SelfCheckFlagsNonFiniteScalesAndAllZeroTensors) {
  test::TempDir dir;
  const std::string in = dir.file("s.gguf");
  // Q8_0 blocks: f16 d then 32 int8 codes. Block 1 of `nan` has d = NaN;
  // `zero` has d = 0 everywhere.
  std::vector<uint8_t> ok(34 * 2, 3), nan(34 * 2, 3), zero(34 * 2, 3);
  for (auto* v : {&ok, &nan}) (*v)[0] = 0x00, (*v)[1] = 0x3c, (*v)[34] = 0x00, (*v)[35] = 0x3c;
  nan[34] = 0x00, nan[35] = 0x7e;
  zero[0] = zero[1] = zero[34] = zero[35] = 0;
  write_gguf(in, {},
             {{{"blk.0.ok.weight", GgmlType::Q8_0, {64}}, ok.data()},
              {{"blk.0.nan.weight", GgmlType::Q8_0, {64}}, nan.data()},
              {{"blk.0.zero.weight", GgmlType::Q8_0, {32, 2}}, zero.data()}},
             false);
  json rep = verify_json(in + " --device cpu", 10);
  EXPECT_EQ(tensor_of(rep, "blk.0.ok.weight").at("status"), "ok");
  EXPECT_EQ(tensor_of(rep, "blk.0.nan.weight").at("params").at("nonfinite_params"), 1);
  EXPECT_EQ(tensor_of(rep, "blk.0.nan.weight").at("params").at("groups"), 2);
  EXPECT_TRUE(tensor_of(rep, "blk.0.zero.weight").at("all_zero").get<bool>());
  EXPECT_TRUE(has(rep.at("warnings").dump(), "blk.0.nan.weight: 1 block of Q8_0 decode to NaN"));
  rep = verify_json(in + " --device cpu --allow-zero-tensors", 10);  // the NaN still fails
  EXPECT_EQ(tensor_of(rep, "blk.0.zero.weight").at("status"), "ok");
  EXPECT_EQ(tensor_of(rep, "blk.0.nan.weight").at("status"), "gate_failed");
}

}  // namespace
