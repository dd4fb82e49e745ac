// verify() on whole files: a clean pass, tampered and truncated files,
// missing/extra tensors and raw mismatches, determinism of the report, the
// JSON and HTML renderings, and dequantize_file().
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "qpack/converter/export.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/verify/report.hpp"
#include "qpack/verify/verify.hpp"
#include "testutil.hpp"
#include "verify/verify_fixtures.hpp"

namespace fs = std::filesystem;

namespace qpack {
namespace {

using vtest::HostTensor;

VerifyOptions cpu_options(int threads = 2) {
  VerifyOptions o;
  o.device = {DeviceKind::Cpu};
  o.threads = threads;
  return o;
}

// The JSON report without what legitimately differs between runs.
nlohmann::json deterministic_part(const VerifyReport& r) {
  nlohmann::json j = verify_report_json(r);
  j.erase("timing");
  j["settings"].erase("created_utc");
  j["settings"].erase("device");
  j["settings"].erase("threads");
  j["settings"].erase("device_requested");
  return j;
}

class VerifyFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(test::test_seed());
    tensors_ = vtest::tiny_llama(rng, 3);
    src_ = dir_.file("model.safetensors");
    qp_ = dir_.file("model.qpack");
    vtest::write_source(src_, tensors_);
    vtest::write_qpack(qp_, tensors_, vtest::quantize_matrices());
  }
  test::TempDir dir_;
  std::vector<HostTensor> tensors_;
  std::string src_, qp_;
};

TEST_F(VerifyFile, CleanFilePassesWithConsistentReport) {
  const VerifyReport r = verify(qp_, src_, cpu_options());
  EXPECT_TRUE(r.integrity_ok);
  EXPECT_EQ(r.verdict, Verdict::Pass);
  EXPECT_EQ(r.bound_violations, 0u);
  EXPECT_TRUE(r.missing_from_qpack.empty());
  EXPECT_TRUE(r.extra_in_qpack.empty());
  ASSERT_EQ(r.tensors.size(), tensors_.size());
  size_t quantized = 0, raw = 0;
  ErrorSums total;
  for (const auto& t : r.tensors) {
    EXPECT_TRUE(t.compared) << t.name;
    EXPECT_EQ(t.status, TensorStatus::Ok) << t.name;
    if (t.quantized) {
      ++quantized;
      EXPECT_GT(t.sums.count, 0u);
      EXPECT_GT(t.sums.rel_error(), 0.0);
      EXPECT_LT(t.sums.rel_error(), 0.2);
      total.add(t.sums);
    } else {
      ++raw;
      EXPECT_TRUE(t.raw_equal) << t.name;
    }
  }
  EXPECT_EQ(quantized, 2u + 3u * 7u);
  EXPECT_EQ(raw, 1u + 3u * 2u);
  EXPECT_EQ(r.sections_checked, 3 * quantized + raw);  // codes, scales, zeros / data
  // Layers: global + 3 blocks, in order; kinds by name; totals element-weighted.
  ASSERT_EQ(r.layers.size(), 4u);
  EXPECT_EQ(r.layers[0].key, "global");
  EXPECT_EQ(r.layers[1].key, "model.layers.0");
  EXPECT_EQ(r.layers[3].key, "model.layers.2");
  EXPECT_EQ(r.layers[1].tensors, 9u);
  EXPECT_EQ(r.layers[1].quantized, 7u);
  EXPECT_EQ(r.model.tensors, tensors_.size());
  EXPECT_EQ(r.model.sums.count, total.count);
  EXPECT_DOUBLE_EQ(r.model.sums.sum_sq_err, total.sum_sq_err);
  EXPECT_NEAR(r.model.sums.rel_error(), std::sqrt(total.sum_sq_err / total.sum_sq_ref), 1e-12);
  uint64_t src_bytes = 0;
  for (const auto& t : tensors_) src_bytes += t.bytes.size();
  EXPECT_EQ(r.model.source_bytes, src_bytes);
  EXPECT_LT(r.model.stored_bytes, src_bytes / 3);
  bool saw_q = false;
  for (const auto& k : r.kinds)
    if (k.key == "self_attn.q_proj") {
      saw_q = true;
      EXPECT_EQ(k.tensors, 3u);
    }
  EXPECT_TRUE(saw_q);
}

TEST_F(VerifyFile, ReportIsIdenticalAcrossThreadCounts) {
  const VerifyReport a = verify(qp_, src_, cpu_options(1));
  const VerifyReport b = verify(qp_, src_, cpu_options(2));
  EXPECT_EQ(deterministic_part(a).dump(), deterministic_part(b).dump());
}

TEST_F(VerifyFile, JsonReportHasTheDocumentedFields) {
  VerifyOptions o = cpu_options();
  o.policy.global.max_rel_error = 0.5;
  const nlohmann::json j = verify_report_json(verify(qp_, src_, o));
  EXPECT_EQ(j["schema"], "qpack-verify-report");
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["verdict"], "pass");
  EXPECT_EQ(j["exit_code"], 0);
  for (const char* k : {"file", "source", "device", "threads", "qpack_version", "created_utc",
                        "thresholds", "policy"})
    EXPECT_TRUE(j["settings"].contains(k)) << k;
  EXPECT_EQ(j["settings"]["thresholds"]["max_rel_error"], 0.5);
  EXPECT_TRUE(j["settings"]["thresholds"]["min_snr_db"].is_null());
  EXPECT_TRUE(j["integrity"]["ok"].get<bool>());
  EXPECT_TRUE(j["source_check"]["ok"].get<bool>());
  const auto& t = j["tensors"][1];  // model.layers.0.input_layernorm.weight: raw
  EXPECT_FALSE(t["quantized"].get<bool>());
  EXPECT_TRUE(t["raw_equal"].get<bool>());
  EXPECT_TRUE(t["metrics"].is_null());
  const auto& q = j["tensors"][2];
  EXPECT_EQ(q["layer"], "model.layers.0");
  EXPECT_EQ(q["layer_index"], 0);
  EXPECT_EQ(q["kind"], "self_attn.q_proj");
  EXPECT_EQ(q["scheme"]["bits"], 4);
  for (const char* k : {"elements", "nonfinite_skipped", "rel_error", "snr_db", "cosine", "rmse",
                        "mean_abs_error", "max_abs_error", "max_abs_index", "bound_violations",
                        "first_bound_violation_index", "sums"})
    EXPECT_TRUE(q["metrics"].contains(k)) << k;
  EXPECT_TRUE(q["metrics"]["rel_error"].is_number());
  EXPECT_EQ(j["layers"].size(), 4u);
  EXPECT_TRUE(j["model"]["metrics"]["rel_error"].is_number());
  EXPECT_TRUE(j["gate"]["passed"].get<bool>());
  EXPECT_EQ(j["bound_violations"], 0);
}

TEST_F(VerifyFile, HtmlReportIsSelfContained) {
  VerifyOptions o = cpu_options();
  o.policy.global.max_rel_error = 0.05;  // some fail: exercise the failure rendering
  const std::string html = verify_report_html(verify(qp_, src_, o));
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("class=\"sortable\""), std::string::npos);
  EXPECT_NE(html.find("model.layers.2.mlp.down_proj.weight"), std::string::npos);
  EXPECT_NE(html.find("max_rel_error"), std::string::npos);
  // Nothing fetched from anywhere.
  for (const char* bad : {"http://", "https://", "<link", "src=", "@import", "url(http"})
    EXPECT_EQ(html.find(bad), std::string::npos) << bad;
  EXPECT_NE(html.find("</html>"), std::string::npos);
}

// Issue #12 item 18: the tensor table scrolls in its own box with a sticky
// name column; the heat map's scale is absolute (0 to max_rel_error, or a
// fixed 25 %), not the cells' min and max, and has a legend.
TEST_F(VerifyFile, HtmlTableScrollsAndHeatScaleIsAbsolute) {
  VerifyOptions o = cpu_options();
  std::string html = verify_report_html(verify(qp_, src_, o));
  const size_t box =
      html.find("<div class=\"scroll tall\" id=\"tensors-box\"><table id=\"tensors\"");
  EXPECT_NE(box, std::string::npos);
  EXPECT_NE(html.find(".scroll{overflow:auto"), std::string::npos);
  EXPECT_NE(html.find("<th class=\"name\">tensor</th>"), std::string::npos);
  EXPECT_NE(html.find("td.name,th.name{position:sticky;left:0"), std::string::npos);
  // Long names wrap between their parts, never inside a word.
  EXPECT_NE(html.find("overflow-wrap:break-word"), std::string::npos);
  EXPECT_NE(html.find(">model.<wbr>layers.<wbr>0.<wbr>self_attn.<wbr>q_proj.<wbr>weight</td>"),
            std::string::npos);
  EXPECT_NE(html.find("data-scale-min=\"0\" data-scale-max=\"0.25\""), std::string::npos);
  EXPECT_NE(html.find("Absolute colour scale"), std::string::npos);
  o.policy.global.max_rel_error = 0.6;
  html = verify_report_html(verify(qp_, src_, o));
  EXPECT_NE(html.find("data-scale-max=\"0.59999999999999998\""), std::string::npos);
  EXPECT_NE(html.find("the max_rel_error threshold"), std::string::npos);
}

TEST_F(VerifyFile, FlippedCodeByteIsAnIntegrityError) {
  uint64_t off;
  {
    const auto qf = QpackFile::open(qp_);
    off = qf->find("model.layers.1.mlp.up_proj.weight")->codes.offset + 17;
  }
  vtest::flip_byte(qp_, off);
  const VerifyReport r = verify(qp_, src_, cpu_options());
  EXPECT_FALSE(r.integrity_ok);
  EXPECT_EQ(r.verdict, Verdict::IntegrityFailed);
  EXPECT_EQ(verdict_exit_code(r.verdict), kExitIntegrity);
  ASSERT_EQ(r.integrity_issues.size(), 1u);
  EXPECT_EQ(r.integrity_issues[0].tensor, "model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(r.integrity_issues[0].section, "codes");
  EXPECT_EQ(r.integrity_issues[0].code, "ChecksumMismatch");
  // Nothing was compared.
  for (const auto& t : r.tensors) EXPECT_FALSE(t.compared);
}

TEST_F(VerifyFile, FlippedScaleByteIsAnIntegrityError) {
  uint64_t off;
  {
    const auto qf = QpackFile::open(qp_);
    off = qf->find("model.embed_tokens.weight")->scales.offset + 3;
  }
  vtest::flip_byte(qp_, off, 0x01);
  const VerifyReport r = verify(qp_, src_, cpu_options());
  ASSERT_EQ(r.integrity_issues.size(), 1u);
  EXPECT_EQ(r.integrity_issues[0].section, "scales");
  EXPECT_EQ(r.integrity_issues[0].code, "ChecksumMismatch");
  EXPECT_EQ(r.verdict, Verdict::IntegrityFailed);
}

TEST_F(VerifyFile, FlippedManifestByteIsAnIntegrityError) {
  const auto bytes = test::read_file(qp_);
  const uint64_t manifest_offset = QpackHeader::load(bytes.data()).manifest_offset;
  vtest::flip_byte(qp_, manifest_offset + 40, 0x04);
  const VerifyReport r = verify(qp_, src_, cpu_options());
  ASSERT_EQ(r.integrity_issues.size(), 1u);
  EXPECT_EQ(r.integrity_issues[0].tensor, "");  // file level
  EXPECT_EQ(r.verdict, Verdict::IntegrityFailed);
  EXPECT_NE(r.integrity_issues[0].message.find("manifest"), std::string::npos)
      << r.integrity_issues[0].message;
}

TEST_F(VerifyFile, TruncatedFileIsAnIntegrityError) {
  fs::resize_file(qp_, fs::file_size(qp_) / 2);
  const VerifyReport r = verify(qp_, src_, cpu_options());
  EXPECT_EQ(r.verdict, Verdict::IntegrityFailed);
  ASSERT_FALSE(r.integrity_issues.empty());
  EXPECT_FALSE(r.integrity_issues[0].message.empty());
}

TEST_F(VerifyFile, MissingQpackIsAnIoError) {
  try {
    verify(dir_.file("nope.qpack"), src_, cpu_options());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
  }
}

TEST_F(VerifyFile, MissingExtraAndMismatchedTensorsAreReported) {
  // The source lacks one tensor and has another; one raw tensor differs; one
  // quantized tensor has another shape.
  std::vector<HostTensor> src = tensors_;
  src.erase(src.begin() + 3);  // model.layers.0.self_attn.k_proj.weight
  std::mt19937_64 rng(1);
  src.push_back(vtest::random_tensor("model.extra.weight", DType::F32, {4, 4}, rng));
  for (auto& t : src) {
    if (t.name == "model.norm.weight") t.bytes[5] ^= 1;
    if (t.name == "lm_head.weight") t.shape = {t.shape[1], t.shape[0]};
  }
  vtest::write_source(src_, src);
  const VerifyReport r = verify(qp_, src_, cpu_options());
  EXPECT_TRUE(r.integrity_ok);
  EXPECT_EQ(r.verdict, Verdict::SourceMismatch);
  EXPECT_EQ(verdict_exit_code(r.verdict), kExitIntegrity);
  EXPECT_EQ(r.missing_from_qpack, std::vector<std::string>{"model.extra.weight"});
  EXPECT_EQ(r.extra_in_qpack, std::vector<std::string>{"model.layers.0.self_attn.k_proj.weight"});
  for (const auto& t : r.tensors) {
    if (t.name == "model.norm.weight") {
      EXPECT_FALSE(t.raw_equal);
      ASSERT_EQ(t.problems.size(), 1u);
      EXPECT_NE(t.problems[0].find("byte 5"), std::string::npos) << t.problems[0];
      EXPECT_EQ(t.status, TensorStatus::SourceMismatch);
    } else if (t.name == "lm_head.weight") {
      ASSERT_EQ(t.problems.size(), 1u);
      EXPECT_NE(t.problems[0].find("shape"), std::string::npos);
      EXPECT_FALSE(t.compared);
    } else if (t.name == "model.layers.0.self_attn.k_proj.weight") {
      EXPECT_EQ(t.status, TensorStatus::SourceMismatch);
    } else {
      EXPECT_EQ(t.status, TensorStatus::Ok) << t.name;
    }
  }
  const std::string table = verify_report_table(r);
  EXPECT_NE(table.find("SOURCE MISMATCH"), std::string::npos);
  EXPECT_NE(table.find("model.extra.weight"), std::string::npos);
}

TEST_F(VerifyFile, WrongSourceValuesViolateTheBound) {
  // Same names and shapes, other values: a source this file was not made from.
  std::mt19937_64 rng(test::test_seed() + 99);
  std::vector<HostTensor> other = vtest::tiny_llama(rng, 3);
  for (size_t i = 0; i < other.size(); ++i)
    if (other[i].shape.size() < 2) other[i] = tensors_[i];  // keep raw tensors equal
  vtest::write_source(src_, other);
  const VerifyReport r = verify(qp_, src_, cpu_options());
  EXPECT_EQ(r.verdict, Verdict::BoundViolated);
  EXPECT_GT(r.bound_violations, 0u);
  const std::string table = verify_report_table(r);
  EXPECT_NE(table.find("ERROR BOUND VIOLATED"), std::string::npos);
  EXPECT_NE(verify_report_html(r).find("ERROR BOUND VIOLATED"), std::string::npos);
  EXPECT_GT(verify_report_json(r)["bound_violations"].get<uint64_t>(), 0u);
}

TEST_F(VerifyFile, ProgressIsReportedForBothPhases) {
  VerifyOptions o = cpu_options();
  size_t integrity = 0, compare = 0;
  uint64_t last_done = 0, total = 0;
  o.progress = [&](const VerifyProgress& p) {
    (p.phase == VerifyProgress::Integrity ? integrity : compare)++;
    if (p.phase == VerifyProgress::Compare) {
      last_done = p.done_bytes;
      total = p.total_bytes;
    }
  };
  verify(qp_, src_, o);
  EXPECT_EQ(integrity, tensors_.size() + 1);
  EXPECT_EQ(compare, tensors_.size() + 1);
  EXPECT_EQ(last_done, total);
}

// ------------------------------------------------------------ dequantize

void expect_dequantized(const std::string& out, const std::vector<HostTensor>& tensors,
                        std::optional<DType> as) {
  const auto f = SafetensorsFile::open(out);
  ASSERT_EQ(f->tensors().size(), tensors.size());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  for (const auto& t : tensors) {
    const TensorInfo* info = f->find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->shape, t.shape);
    const uint8_t* got = f->tensor_data(*info);
    if (!is_quantizable(t.dtype) || t.shape.size() < 2) {
      EXPECT_EQ(info->dtype, t.dtype);
      ASSERT_EQ(info->nbytes(), t.bytes.size());
      EXPECT_EQ(std::memcmp(got, t.bytes.data(), t.bytes.size()), 0)
          << t.name << ": raw bytes differ";
      continue;
    }
    const DType want_dt = as ? *as : t.dtype;
    EXPECT_EQ(info->dtype, want_dt) << t.name;
    const vtest::Quantized q = vtest::quantize(t, QuantScheme{});
    std::vector<float> ref(t.numel());
    dequantize_reference(q.codes.data(), q.scales.data(), q.zeros.data(), q.layout, q.scheme,
                         ref.data());
    for (uint64_t i = 0; i < t.numel(); ++i) {
      uint32_t want;
      if (want_dt == DType::F32)
        std::memcpy(&want, &ref[i], 4);
      else
        want = want_dt == DType::F16 ? f32_to_f16_rne(ref[i]) : f32_to_bf16_rne(ref[i]);
      uint32_t have = 0;
      std::memcpy(&have, got + i * (want_dt == DType::F32 ? 4 : 2), want_dt == DType::F32 ? 4 : 2);
      ASSERT_EQ(have, want) << t.name << " element " << i;
    }
  }
}

TEST(VerifyDequantize, RoundTripInEveryDtype) {
  std::mt19937_64 rng(test::test_seed() + 5);
  test::TempDir dir;
  std::vector<HostTensor> tensors;
  tensors.push_back(vtest::random_tensor("a.weight", DType::F32, {70, 33}, rng));
  tensors.push_back(vtest::random_tensor("b.weight", DType::F16, {130, 5}, rng));
  tensors.push_back(vtest::random_tensor("c.weight", DType::BF16, {64, 64}, rng));
  tensors.push_back(vtest::random_tensor("norm.weight", DType::F32, {33}, rng));
  tensors.push_back(vtest::random_tensor("ids", DType::I64, {3, 4}, rng));
  tensors.push_back(vtest::random_tensor("mask", DType::U8, {7}, rng));
  const std::string qp = dir.file("m.qpack");
  vtest::write_qpack(qp, tensors, vtest::quantize_matrices());
  for (std::optional<DType> as :
       {std::optional<DType>(), std::optional<DType>(DType::F32), std::optional<DType>(DType::F16),
        std::optional<DType>(DType::BF16)}) {
    DequantizeOptions o;
    o.dtype = as;
    o.overwrite = true;
    o.threads = 2;
    o.slice_bytes = 256;  // many slices per tensor
    const std::string out = dir.file("out.safetensors");
    const DequantizeSummary s = dequantize_file(qp, out, o);
    EXPECT_EQ(s.tensors, tensors.size());
    EXPECT_EQ(s.quantized, 3u);
    expect_dequantized(out, tensors, as);
  }
}

TEST(VerifyDequantize, RefusesExistingOutputAndDamagedInput) {
  std::mt19937_64 rng(3);
  test::TempDir dir;
  std::vector<HostTensor> tensors = {vtest::random_tensor("w", DType::F32, {64, 64}, rng)};
  const std::string qp = dir.file("m.qpack"), out = dir.file("o.safetensors");
  vtest::write_qpack(qp, tensors, vtest::quantize_matrices());
  test::write_file(out, std::string("keep me"));
  try {
    dequantize_file(qp, out, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(exit_code_for(e.code()), kExitIo);
  }
  EXPECT_EQ(test::read_file(out).size(), 7u);
  uint64_t off;
  {
    const auto qf = QpackFile::open(qp);
    off = qf->find("w")->codes.offset;
  }
  vtest::flip_byte(qp, off);
  fs::remove(out);
  try {
    dequantize_file(qp, out, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::ChecksumMismatch);
  }
  EXPECT_FALSE(fs::exists(out)) << "a failed dequantize must not leave an output";
}

}  // namespace
}  // namespace qpack
