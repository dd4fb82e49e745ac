// `qpack verify` and `qpack dequantize` through the CLI: exit codes, the
// offender list, --json, --html, --policy, and the stories260K checkpoint.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/verify/verify.hpp"
#include "testutil.hpp"
#include "verify/verify_fixtures.hpp"

namespace fs = std::filesystem;

namespace qpack {
namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

class VerifyCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(test::test_seed());
    tensors_ = vtest::tiny_llama(rng, 2);
    src_ = dir_.file("model.safetensors");
    qp_ = dir_.file("model.qpack");
    vtest::write_source(src_, tensors_);
    // down_proj at 2 bits: clearly the worst tensors.
    vtest::write_qpack(qp_, tensors_, [](const vtest::HostTensor& t) -> std::optional<QuantScheme> {
      if (t.shape.size() < 2) return std::nullopt;
      QuantScheme s;
      if (t.name.find("down_proj") != std::string::npos) s.bits = 2;
      return s;
    });
  }
  test::CommandResult verify(const std::string& args) {
    return test::run_qpack("verify " + q(qp_) + " " + q(src_) + " --device cpu " + args);
  }
  test::TempDir dir_;
  std::vector<vtest::HostTensor> tensors_;
  std::string src_, qp_;
};

TEST_F(VerifyCli, PassesAndPrintsTheTable) {
  const auto r = verify("--max-rel-error 0.6 --min-cosine 0.5");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("integrity: OK"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Per layer:"), std::string::npos);
  EXPECT_NE(r.output.find("model.layers.1"), std::string::npos);
  EXPECT_NE(r.output.find("Verdict: PASS"), std::string::npos);
  // The one scheme label of every command (qpack/format/text.hpp).
  EXPECT_NE(r.output.find("q2 g64 ax0 asym F16"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("q4 g64 ax0 asym F16"), std::string::npos) << r.output;
  // Worst first: a 2-bit down_proj heads the table.
  const size_t first_row = r.output.find("----\n");
  ASSERT_NE(first_row, std::string::npos);
  EXPECT_NE(r.output.substr(first_row, 200).find("down_proj"), std::string::npos) << r.output;
}

// Counts agree with their nouns: "1 thread", never "1 threads".
TEST_F(VerifyCli, OneThreadIsSingular) {
  const auto r = verify("--threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cpu (1 thread)"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("1 threads"), std::string::npos) << r.output;
}

TEST_F(VerifyCli, FailedThresholdExits10AndNamesTheOffenders) {
  const auto r = verify("--max-rel-error 0.2");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("model.layers.0.mlp.down_proj.weight: rel_error"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.down_proj.weight: rel_error"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("q_proj.weight: rel_error"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("FAIL"), std::string::npos);
  // --quiet keeps the offenders and the verdict only.
  const auto qr = verify("--max-rel-error 0.2 --quiet");
  EXPECT_EQ(qr.exit_code, 10);
  EXPECT_NE(qr.output.find("threshold failed: model.layers.0.mlp.down_proj.weight"),
            std::string::npos)
      << qr.output;
  EXPECT_EQ(qr.output.find("Per layer"), std::string::npos);
  EXPECT_NE(qr.output.find("verdict: gate_failed"), std::string::npos);
  // SNR and cosine limits, and a model-level limit through a policy.
  EXPECT_EQ(verify("--min-snr 60").exit_code, 10);
  EXPECT_EQ(verify("--min-cosine 0.99999").exit_code, 10);
  EXPECT_EQ(verify("--max-abs-error 1e-9").exit_code, 10);
}

TEST_F(VerifyCli, PolicyFile) {
  const std::string p = dir_.file("policy.json");
  test::write_file(p, std::string(R"({"version": 1,
    "thresholds": {"max_rel_error": 0.2, "min_cosine": 0.9},
    "overrides": [{"pattern": "*.mlp.down_proj.weight", "max_rel_error": 0.6}]})"));
  auto r = verify("--policy " + q(p));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // A flag overrides the policy's global value (not its per-name override).
  r = verify("--policy " + q(p) + " --max-rel-error 0.01 --quiet");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("q_proj.weight"), std::string::npos);
  EXPECT_EQ(r.output.find("down_proj.weight"), std::string::npos) << r.output;
  // Model totals.
  test::write_file(p, std::string(R"({"model": {"max_rel_error": 0.0001}})"));
  r = verify("--policy " + q(p) + " --quiet");
  EXPECT_EQ(r.exit_code, 10);
  EXPECT_NE(r.output.find("model totals"), std::string::npos) << r.output;
  // Malformed: a usage error naming the key.
  test::write_file(p, std::string(R"({"thresholds": {"max_rel": 0.1}})"));
  r = verify("--policy " + q(p));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("max_rel"), std::string::npos) << r.output;
}

// The policy is parsed with the format library's strict JSON reader: a
// duplicate key is refused, naming the file and the key, rather than the
// last value silently winning.
TEST_F(VerifyCli, PolicyWithADuplicateKeyIsRefused) {
  const std::string p = dir_.file("dup.json");
  test::write_file(p, std::string(R"({"version": 1,
    "thresholds": {"max_rel_error": 0.01, "max_rel_error": 0.9}})"));
  const auto r = verify("--policy " + q(p));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("qpack: error: " + p +
                          ": policy: duplicate key 'max_rel_error' in 'thresholds'"),
            std::string::npos)
      << r.output;
  test::write_file(p, std::string(R"({"version": 1} trailing)"));
  const auto t = verify("--policy " + q(p));
  EXPECT_EQ(t.exit_code, 2) << t.output;
  EXPECT_NE(t.output.find(p + ": policy: invalid JSON"), std::string::npos) << t.output;
}

TEST_F(VerifyCli, UsageAndIoErrors) {
  EXPECT_EQ(test::run_qpack("verify " + q(qp_) + " --device cpu").exit_code, 0);  // self-check
  EXPECT_EQ(test::run_qpack("verify " + q(qp_) + " " + q(src_) + " --source " + q(qp_)).exit_code,
            2);
  EXPECT_EQ(
      test::run_qpack("verify " + q(qp_) + " --source " + q(src_) + " --device cpu -q").exit_code,
      0);
  EXPECT_EQ(verify("--min-cosine 2").exit_code, 2);
  EXPECT_EQ(verify("--device tpu").exit_code, 2);
  // One vocabulary for every subcommand (qpack::parse_device): the old
  // spelling "gpu" is gone, cuda:N is accepted.
  const auto gpu = verify("--device gpu");
  EXPECT_EQ(gpu.exit_code, 2) << gpu.output;
  EXPECT_NE(gpu.output.find("unknown device 'gpu' (expected cpu, cuda, cuda:N or auto)"),
            std::string::npos)
      << gpu.output;
  EXPECT_EQ(verify("--device cuda:").exit_code, 2);
  EXPECT_EQ(verify("--device cuda:-1").exit_code, 2);
  EXPECT_EQ(verify("--bogus").exit_code, 2);
  EXPECT_EQ(test::run_qpack("verify " + q(dir_.file("none.qpack")) + " " + q(src_)).exit_code, 5);
  EXPECT_EQ(test::run_qpack("verify " + q(qp_) + " " + q(dir_.file("none.safetensors"))).exit_code,
            5);
  if (!verify_cuda_available()) {
    for (const char* d : {"cuda", "cuda:0", "cuda:3"}) {
      const auto r = test::run_qpack("verify " + q(qp_) + " " + q(src_) + " --device " + d);
      EXPECT_EQ(r.exit_code, 6) << d << ": " << r.output;
    }
  }
  const auto h = test::run_qpack("verify --help");
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.output.find("Exit codes:"), std::string::npos);
  EXPECT_NE(h.output.find("10  a quality threshold failed"), std::string::npos) << h.output;
}

TEST_F(VerifyCli, TamperedFilesExit4) {
  const auto qf = QpackFile::open(qp_);
  const uint64_t codes = qf->find("model.layers.1.self_attn.v_proj.weight")->codes.offset + 5;
  const uint64_t scales = qf->find("lm_head.weight")->scales.offset + 1;
  const uint64_t size = qf->file_size();
  const auto pristine = test::read_file(qp_);
  auto restore = [&] { test::write_file(qp_, pristine.data(), pristine.size()); };

  vtest::flip_byte(qp_, codes);
  auto r = verify("");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("INTEGRITY FAILURE"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.self_attn.v_proj.weight"), std::string::npos);
  EXPECT_NE(r.output.find("section codes"), std::string::npos) << r.output;
  restore();

  vtest::flip_byte(qp_, scales, 0x80);
  r = verify("--quiet");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("integrity: lm_head.weight scales"), std::string::npos) << r.output;
  restore();

  const uint64_t manifest_offset = QpackHeader::load(pristine.data()).manifest_offset;
  vtest::flip_byte(qp_, manifest_offset + 10);
  r = verify("");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  restore();

  fs::resize_file(qp_, size - 100);
  r = verify("");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("INTEGRITY FAILURE"), std::string::npos) << r.output;
  restore();
  EXPECT_EQ(verify("").exit_code, 0);
}

TEST_F(VerifyCli, SourceMismatchExits4) {
  std::vector<vtest::HostTensor> src = tensors_;
  src.pop_back();  // lm_head missing from the source: extra in the .qpack
  vtest::write_source(src_, src);
  const auto r = verify("");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("lm_head.weight: not in the source checkpoint"), std::string::npos)
      << r.output;
}

TEST_F(VerifyCli, JsonAndHtmlReports) {
  const std::string html = dir_.file("r.html"), jf = dir_.file("r.json");
  auto r = verify("--json --max-rel-error 0.2 --html " + q(html) + " --json-out " + q(jf));
  EXPECT_EQ(r.exit_code, 10);
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["verdict"], "gate_failed");
  EXPECT_EQ(j["exit_code"], 10);
  EXPECT_EQ(j["gate"]["failures"].size(), 2u);
  EXPECT_EQ(j["gate"]["failures"][0]["metric"], "rel_error");
  EXPECT_EQ(j["settings"]["device"].get<std::string>().rfind("cpu", 0), 0u);
  EXPECT_EQ(nlohmann::json::parse(test::read_file(jf).data(),
                                  test::read_file(jf).data() + fs::file_size(jf))["verdict"],
            "gate_failed");
  const auto bytes = test::read_file(html);
  const std::string h(bytes.begin(), bytes.end());
  EXPECT_NE(h.find("<svg"), std::string::npos);
  EXPECT_NE(h.find("FAIL"), std::string::npos);
  EXPECT_EQ(h.find("https://"), std::string::npos);
}

// Issue #12 item 11: an unwritable report path fails at once (exit 5, the
// path named), before the comparison: no report of any tensor is printed.
TEST_F(VerifyCli, UnwritableReportPathFailsBeforeComparing) {
  const std::string bad_html = dir_.file("no-such-folder") + "/r.html";
  auto r = verify("--html " + q(bad_html));
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find(bad_html), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--html"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("down_proj"), std::string::npos) << r.output;  // nothing compared
  EXPECT_EQ(r.output.find("Verdict"), std::string::npos) << r.output;
  // A directory as --json-out, under --json: still before any comparison.
  fs::create_directory(dir_.file("adir"));
  r = verify("--json --json-out " + q(dir_.file("adir")));
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("is a directory"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("\"tensors\""), std::string::npos) << r.output;
}

// `qpack verify FILE` without a source: integrity and stored parameters.
TEST_F(VerifyCli, SelfCheckWithoutSource) {
  auto r = test::run_qpack("verify " + q(qp_) + " --device cpu");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("self-check"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Stored parameters of"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << r.output;
  r = test::run_qpack("verify " + q(qp_) + " --device cpu --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_TRUE(j["settings"]["source"].is_null());
  EXPECT_EQ(j["verdict"], "pass");
  size_t checked = 0;
  for (const auto& t : j["tensors"])
    if (t["quantized"].get<bool>()) {
      ASSERT_TRUE(t["params"].is_object()) << t.dump();
      EXPECT_GT(t["params"]["groups"].get<uint64_t>(), 0u);
      EXPECT_EQ(t["params"]["nonfinite_params"], 0);
      ++checked;
    }
  EXPECT_GT(checked, 0u);
  // A flipped byte is still an integrity failure (exit 4) without a source.
  vtest::flip_byte(qp_, 100);
  EXPECT_EQ(test::run_qpack("verify " + q(qp_) + " --device cpu").exit_code, 4);
}

// A planted non-finite scale (checksums intact) fails the self-check's gate.
TEST_F(VerifyCli, SelfCheckFlagsANonFiniteScale) {
  const vtest::HostTensor& t = tensors_[2];
  ASSERT_EQ(t.shape.size(), 2u);
  vtest::Quantized qz = vtest::quantize(t, QuantScheme{});
  ASSERT_EQ(qz.scheme.scale_dtype, DType::F16);
  qz.scales[2] = 0x00;
  qz.scales[3] = 0x7e;  // group 1's scale: an F16 NaN
  const std::string bad = dir_.file("nan-scale.qpack");
  {
    QpackWriter w(bad, {});
    w.add_quantized(t.name, t.dtype, t.shape, qz.scheme, qz.codes.data(), qz.scales.data(),
                    qz.zeros.data());
    w.commit();
  }
  auto r = test::run_qpack("verify " + q(bad) + " --device cpu");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("not finite"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("non-finite params 1"), std::string::npos) << r.output;
  r = test::run_qpack("verify " + q(bad) + " --device cpu --json");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["tensors"][0]["params"]["nonfinite_params"], 1);
  EXPECT_EQ(j["gate"]["failures"][0]["metric"], "nonfinite_params");
}

// An integer zero-point that is not a whole code (3.5; 16 at 4 bits; -1),
// checksums intact: counted, flagged and failing the gate; the untouched
// groups' whole codes are not.
TEST_F(VerifyCli, SelfCheckFlagsIntegerZeroPointsThatAreNotCodes) {
  const vtest::HostTensor& t = tensors_[2];
  QuantScheme s;
  s.zero_point = ZeroPoint::Integer;
  vtest::Quantized qz = vtest::quantize(t, s);
  ASSERT_EQ(qz.scheme.scale_dtype, DType::F16);
  ASSERT_GE(qz.zeros.size(), 8u);
  const std::string good = dir_.file("int-zero.qpack"), bad = dir_.file("int-zero-bad.qpack");
  for (const std::string& path : {good, bad}) {
    if (path == bad) {
      const uint16_t planted[3] = {0x4300, 0x4C00, 0xBC00};  // F16 3.5, 16, -1
      for (int g = 0; g < 3; ++g) std::memcpy(&qz.zeros[size_t(2 * g)], &planted[g], 2);
    }
    QpackWriter w(path, {});
    w.add_quantized(t.name, t.dtype, t.shape, qz.scheme, qz.codes.data(), qz.scales.data(),
                    qz.zeros.data());
    w.commit();
  }
  auto r = test::run_qpack("verify " + q(good) + " --device cpu --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["tensors"][0]["params"]["invalid_zero_points"], 0);
  r = test::run_qpack("verify " + q(bad) + " --device cpu");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("3 integer zero-points not a whole code"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("invalid zero-points 3"), std::string::npos) << r.output;
  r = test::run_qpack("verify " + q(bad) + " --device cpu --json");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["tensors"][0]["params"]["invalid_zero_points"], 3);
  EXPECT_EQ(j["gate"]["failures"][0]["metric"], "invalid_zero_points");
}

// Issue #12 item 21: a denormal F32 tensor quantizes into degenerate groups
// only and reconstructs as all zeros: flagged and failing, thresholds or not.
TEST_F(VerifyCli, AllZeroReconstructionOfADenormalTensorFails) {
  vtest::HostTensor d;
  d.name = "model.layers.0.mlp.tiny.weight";
  d.dtype = DType::F32;
  d.shape = {8, 64};
  d.bytes.resize(8 * 64 * 4);
  for (uint64_t i = 0; i < d.numel(); ++i) vtest::set_value(d, i, (i % 2 ? 1.0f : -1.0f) * 1e-40f);
  const std::string src = dir_.file("denormal.safetensors"), qp = dir_.file("denormal.qpack");
  vtest::write_source(src, {d});
  vtest::write_qpack(qp, {d}, vtest::quantize_matrices());
  auto r = test::run_qpack("verify " + q(qp) + " " + q(src) + " --device cpu");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("WARNING: " + d.name + ": reconstructed as all zeros"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("every group is degenerate"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("all-zero"), std::string::npos) << r.output;
  r = test::run_qpack("verify " + q(qp) + " " + q(src) + " --device cpu --json");
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_TRUE(j["tensors"][0]["all_zero"].get<bool>());
  EXPECT_EQ(j["tensors"][0]["params"]["degenerate_groups"], j["tensors"][0]["params"]["groups"]);
  EXPECT_EQ(j["gate"]["failures"][0]["metric"], "all_zero");
  EXPECT_FALSE(j["warnings"].empty());
  // The named opt-out passes the gate and still warns.
  r = test::run_qpack("verify " + q(qp) + " " + q(src) + " --device cpu --allow-zero-tensors");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("reconstructed as all zeros"), std::string::npos) << r.output;
  // Without a source, too.
  r = test::run_qpack("verify " + q(qp) + " --device cpu");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("reconstructed as all zeros"), std::string::npos) << r.output;
}

// Provenance: recorded by convert, deterministic, checked by verify up front.
TEST_F(VerifyCli, ProvenanceIsRecordedAndChecked) {
  const std::string a = dir_.file("a.qpack"), b = dir_.file("b.qpack");
  ASSERT_EQ(test::run_qpack("convert " + q(src_) + " " + q(a) + " --device cpu -q").exit_code, 0);
  ASSERT_EQ(test::run_qpack("convert " + q(src_) + " " + q(b) + " --device cpu -q").exit_code, 0);
  EXPECT_EQ(test::read_file(a), test::read_file(b));  // no timestamp, no machine detail
  {
    const auto f = QpackFile::open(a);
    ASSERT_TRUE(f->manifest().contains("provenance"));
    const auto& p = f->manifest()["provenance"];
    EXPECT_EQ(p["command"], "convert");
    EXPECT_TRUE(p["recipe"].is_object());
    EXPECT_EQ(p["options"]["codec"], "none");
    ASSERT_EQ(p["source_files"].size(), 1u);
    EXPECT_EQ(p["source_files"][0]["path"], "model.safetensors");
    const auto bytes = test::read_file(src_);
    EXPECT_EQ(p["source_files"][0]["xxh3"],
              checksum_to_hex(checksum64(bytes.data(), bytes.size())));
  }
  const auto ins = test::run_qpack("inspect " + q(a));
  EXPECT_NE(ins.output.find("provenance"), std::string::npos) << ins.output;
  auto r = verify("");
  EXPECT_EQ(r.exit_code, 0);  // the fixture's file has no provenance: fine
  EXPECT_EQ(r.output.find("differs"), std::string::npos) << r.output;
  r = test::run_qpack("verify " + q(a) + " " + q(src_) + " --device cpu");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("differs"), std::string::npos) << r.output;
  // A changed source: warned before comparing (stderr, ahead of the table).
  std::mt19937_64 rng(test::test_seed() + 1);
  vtest::write_source(src_, vtest::tiny_llama(rng, 2));
  r = test::run_qpack("verify " + q(a) + " " + q(src_) + " --device cpu");
  const size_t w = r.output.find("qpack: warning: " + src_ + ": differs from the file");
  EXPECT_NE(w, std::string::npos) << r.output;
  EXPECT_LT(w, r.output.find("integrity: OK")) << r.output;
  r = test::run_qpack("verify " + q(a) + " " + q(src_) + " --device cpu --require-recorded-source");
  EXPECT_EQ(r.exit_code, 4) << r.output;
}

TEST_F(VerifyCli, DequantizeRoundTrip) {
  const std::string out = dir_.file("deq.safetensors");
  auto r = test::run_qpack("dequantize " + q(qp_) + " " + q(out));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto f = SafetensorsFile::open(out);
  EXPECT_EQ(f->tensors().size(), tensors_.size());
  for (const auto& t : tensors_) {
    const TensorInfo* info = f->find(t.name);
    ASSERT_NE(info, nullptr);
    if (t.shape.size() < 2) {
      EXPECT_EQ(std::memcmp(f->tensor_data(*info), t.bytes.data(), t.bytes.size()), 0) << t.name;
      continue;
    }
    QuantScheme s;
    if (t.name.find("down_proj") != std::string::npos) s.bits = 2;
    const vtest::Quantized qt = vtest::quantize(t, s);
    std::vector<float> ref(t.numel());
    dequantize_reference(qt.codes.data(), qt.scales.data(), qt.zeros.data(), qt.layout, qt.scheme,
                         ref.data());
    EXPECT_EQ(std::memcmp(f->tensor_data(*info), ref.data(), ref.size() * 4), 0)
        << t.name;  // F32 source
  }
  // Exists: exit 5 without --force; --dtype bf16 with --force.
  EXPECT_EQ(test::run_qpack("dequantize " + q(qp_) + " " + q(out)).exit_code, 5);
  r = test::run_qpack("dequantize " + q(qp_) + " " + q(out) + " --force --dtype bf16 --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // --quiet: no summary; only the warning that kept F32 tensors stay F32.
  EXPECT_EQ(r.output.rfind("qpack: warning: ", 0), 0u) << r.output;
  EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << r.output;
  EXPECT_EQ(SafetensorsFile::open(out)->find("lm_head.weight")->dtype, DType::BF16);
  EXPECT_EQ(SafetensorsFile::open(out)->find("model.norm.weight")->dtype,
            DType::F32);  // raw: as it was
  EXPECT_EQ(test::run_qpack("dequantize " + q(qp_) + " " + q(out) + " --dtype f8").exit_code, 2);
  // --device: the same vocabulary as every subcommand.
  EXPECT_EQ(
      test::run_qpack("dequantize " + q(qp_) + " " + q(out) + " --force --device gpu").exit_code,
      2);
  EXPECT_EQ(
      test::run_qpack("dequantize " + q(qp_) + " " + q(out) + " --force -q --device cpu").exit_code,
      0);
  if (!verify_cuda_available()) {
    EXPECT_EQ(test::run_qpack("dequantize " + q(qp_) + " " + q(out) + " --force --device cuda:1")
                  .exit_code,
              6);
  }
}

// The real model: llama2.c stories260K as HF-named safetensors (qpack-testgen),
// converted by `qpack convert`, verified, dequantized and verified again.
class VerifyStories : public ::testing::TestWithParam<const char*> {};

TEST_P(VerifyStories, ConvertVerifyDequantize) {
  const std::string bin = test::shared_data_dir() + "/stories260K/stories260K.bin";
  if (!fs::exists(bin)) GTEST_SKIP() << "no " << bin << " (../shared/data is absent in this clone)";
  test::TempDir dir;
  const std::string st = dir.file("model.safetensors"), qp = dir.file("stories.qpack");
  test::run_testgen("stories " + q(bin) + " " + q(st) + " --dtype " + GetParam());
  auto r = test::run_qpack("convert " + q(st) + " " + q(qp) + " -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  r = test::run_qpack("verify " + q(qp) + " " + q(st) +
                      " --device cpu --json --max-rel-error 0.2 --min-cosine 0.98");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["verdict"], "pass");
  EXPECT_EQ(j["bound_violations"], 0);
  EXPECT_EQ(j["layers"].size(), 6u);  // global + 5 blocks
  EXPECT_EQ(j["layers"][5]["key"], "model.layers.4");
  EXPECT_EQ(j["layers"][5]["tensors"], 9);
  size_t quantized = 0;
  for (const auto& t : j["tensors"]) quantized += t["quantized"].get<bool>();
  EXPECT_GE(quantized, 5u * 7u);
  const double rel = j["model"]["metrics"]["rel_error"].get<double>();
  EXPECT_GT(rel, 0.01);
  EXPECT_LT(rel, 0.2);

  // Thread counts give the same metrics.
  const auto j1 = nlohmann::json::parse(
      test::run_qpack("verify " + q(qp) + " " + q(st) + " --device cpu --json --threads 1").output);
  EXPECT_EQ(j1["tensors"], j["tensors"]);
  EXPECT_EQ(j1["layers"], j["layers"]);
  EXPECT_EQ(j1["model"], j["model"]);

  // The dequantized checkpoint has the same names, shapes and dtypes.
  const std::string deq = dir.file("deq.safetensors");
  r = test::run_qpack("dequantize " + q(qp) + " " + q(deq) + " -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto a = SafetensorsFile::open(st), b = SafetensorsFile::open(deq);
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const auto& t : a->tensors()) {
    const TensorInfo* u = b->find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->shape, t.shape);
    EXPECT_EQ(u->dtype, t.dtype);
  }
  // A bad threshold on the real model names its worst tensor.
  r = test::run_qpack("verify " + q(qp) + " " + q(st) +
                      " --device cpu --quiet --max-rel-error 0.001");
  EXPECT_EQ(r.exit_code, 10);
  EXPECT_NE(r.output.find("threshold failed: model.layers."), std::string::npos) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Dtypes, VerifyStories, ::testing::Values("f32", "bf16"));

}  // namespace
}  // namespace qpack
