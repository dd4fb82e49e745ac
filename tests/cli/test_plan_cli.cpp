// convert's plan (issue #12 items 2, 13, 14, 19, 22): which tensors a group
// axis applies to, what is kept and why, warnings and --require-quantized,
// the planned file size against the written one, and one compression ratio
// across convert, inspect and verify.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qpack/format/container.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "testutil.hpp"

using namespace qpack;
namespace fs = std::filesystem;

namespace {

struct SplitResult {
  int exit_code = -1;
  std::string out, err;  // stdout, stderr
};

// Runs qpack with stdout and stderr kept apart (JSON on stdout, warnings on
// stderr).
SplitResult run_split(const test::TempDir& dir, const std::string& args) {
  const std::string out = dir.file(".stdout"), err = dir.file(".stderr");
  const auto r = test::run_command("('" + std::string(QPACK_CLI) + "' " + args + " >'" + out +
                                   "' 2>'" + err + "')");
  SplitResult s;
  s.exit_code = r.exit_code;
  const auto o = test::read_file(out), e = test::read_file(err);
  s.out.assign(o.begin(), o.end());
  s.err.assign(e.begin(), e.end());
  return s;
}

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
};

// A safetensors file of the given tensors filled with a ramp of values.
void write_model(const std::string& path, const std::vector<Tensor>& tensors) {
  std::vector<std::vector<uint8_t>> data;
  std::vector<TensorToWrite> w;
  for (const Tensor& t : tensors) {
    uint64_t n = 1;
    for (int64_t d : t.shape) n *= uint64_t(d);
    std::vector<uint8_t> bytes(n * uint64_t(dtype_bits(t.dtype) / 8));
    for (uint64_t i = 0; i < n; ++i) {
      const float v = float(int64_t(i % 97) - 48) / 64.0f;
      if (t.dtype == DType::F32) {
        std::memcpy(bytes.data() + 4 * i, &v, 4);
      } else {
        const uint16_t h = f32_to_f16_rne(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    data.push_back(std::move(bytes));
  }
  for (size_t i = 0; i < tensors.size(); ++i)
    w.push_back(
        {tensors[i].name, tensors[i].dtype, tensors[i].shape, data[i].data(), data[i].size()});
  write_safetensors(path, w, {}, false);
}

const nlohmann::json* find_tensor(const nlohmann::json& plan, const std::string& name) {
  for (const auto& t : plan.at("tensors"))
    if (t.at("name") == name) return &t;
  return nullptr;
}

// Five 2-D weights and a norm: "and 2 more" after three names.
std::vector<Tensor> five_matrices() {
  std::vector<Tensor> t;
  for (int i = 0; i < 5; ++i) t.push_back({"layers." + std::to_string(i) + ".w", {64, 32}});
  t.push_back({"norm", {32}});
  return t;
}

// ------------------------------------------------------------ item 2: axis

TEST(PlanAxis, GlobalAxisNoSelectedTensorHasIsUsageErrorNamingThem) {
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors"), out = dir.file("m.qpack");
  write_model(src, five_matrices());
  for (const char* axis : {"2", "7", "-3"}) {
    SCOPED_TRACE(axis);
    for (const std::string mode : {" -q", " --dry-run", " --dry-run --json"}) {
      const auto r = test::run_qpack("convert " + src + " " + out + " --axis " + axis + mode);
      EXPECT_EQ(r.exit_code, 2) << r.output;
      EXPECT_TRUE(has(r.output, "default group axis " + std::string(axis))) << r.output;
      EXPECT_TRUE(has(r.output, "'layers.0.w' [64, 32]")) << r.output;
      EXPECT_TRUE(has(r.output, "and 2 more")) << r.output;
      EXPECT_FALSE(fs::exists(out));
    }
  }
  // The same axis from a recipe's defaults.
  const std::string recipe = dir.file("r.json");
  test::write_file(recipe, R"({"defaults": {"axis": 9}})");
  const auto r = test::run_qpack("convert " + src + " " + out + " -q --recipe " + recipe);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "default group axis 9")) << r.output;
  EXPECT_FALSE(fs::exists(out));
  // A rule's axis is as much a usage error (it was exit 3 before).
  const auto rule = test::run_qpack("convert " + src + " " + out + " -q --rule '*:axis=5'");
  EXPECT_EQ(rule.exit_code, 2) << rule.output;
  EXPECT_TRUE(has(rule.output, "--rule '*:axis=5' sets group axis 5")) << rule.output;
}

TEST(PlanAxis, TensorsOfLowerRankAreKeptWithAReasonAndAWarning) {
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors"), out = dir.file("m.qpack");
  write_model(src, {{"conv.w", {16, 8, 64}}, {"proj.w", {64, 64}}, {"norm", {64}}});
  const auto plan = run_split(dir, "convert " + src + " --axis 2 --dry-run --json");
  ASSERT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  const auto j = nlohmann::json::parse(plan.out);
  EXPECT_EQ(j["tensors_quantized"], 1);
  const auto* proj = find_tensor(j, "proj.w");
  ASSERT_NE(proj, nullptr);
  EXPECT_EQ((*proj)["action"], "keep");
  EXPECT_TRUE(has((*proj)["reason"], "default group axis 2 does not exist in a 2-d tensor"));
  ASSERT_EQ(j["warnings"].size(), 1u) << j["warnings"];
  EXPECT_TRUE(has(j["warnings"][0], "1 tensor selected for quantization ('proj.w' [64, 64])"));
  EXPECT_TRUE(has(plan.err, "qpack: warning: the default group axis 2")) << plan.err;
  const auto run = run_split(dir, "convert " + src + " " + out + " --axis 2");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_TRUE(has(run.err, "qpack: warning: the default group axis 2")) << run.err;
  const auto q = QpackFile::open(out);
  EXPECT_TRUE(q->find("conv.w")->quantized);
  EXPECT_EQ(q->find("conv.w")->scheme.axis, 2);
  EXPECT_FALSE(q->find("proj.w")->quantized);
}

// ---------------------------------------------------- item 13: the totals

// The plan's totals are the run's, and its bytes_out is the file's size.
void expect_plan_matches_run(const std::string& model, const std::string& options,
                             bool upper_bound) {
  test::TempDir dir;
  const std::string out = dir.file("m.qpack");
  const auto plan = run_split(dir, "convert " + model + options + " --dry-run --json");
  ASSERT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  const auto p = nlohmann::json::parse(plan.out);
  const auto run = run_split(dir, "convert " + model + " " + out + options + " --json");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const auto s = nlohmann::json::parse(run.out);
  const uint64_t file = fs::file_size(out);
  EXPECT_EQ(s["bytes_out"].get<uint64_t>(), file);
  EXPECT_EQ(p["bytes_out_is_upper_bound"].get<bool>(), upper_bound);
  if (upper_bound) {
    EXPECT_GE(p["bytes_out"].get<uint64_t>(), file);
  } else {
    EXPECT_EQ(p["bytes_out"].get<uint64_t>(), file);
    EXPECT_DOUBLE_EQ(p["ratio"].get<double>(), s["ratio"].get<double>());
  }
  for (const char* k : {"bytes_in", "bytes_quantized_in", "bytes_quantized_out",
                        "tensors_quantized", "tensors_kept"})
    EXPECT_EQ(p[k], s[k]) << k;
  EXPECT_GT(p["bytes_quantized_in"].get<uint64_t>(), 0u);
  EXPECT_GT(p["bytes_quantized_out"].get<uint64_t>(), 0u);
  EXPECT_LT(p["bytes_quantized_out"].get<uint64_t>(), p["bytes_quantized_in"].get<uint64_t>());
  // The text plan's totals line says the same.
  const auto text = run_split(dir, "convert " + model + options + " --dry-run");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  const std::string total =
      format_bytes(p["bytes_in"].get<uint64_t>()) + " -> " + (upper_bound ? "at most " : "") +
      format_bytes(p["bytes_out"].get<uint64_t>()) + " (" +
      format_ratio(
          compression_ratio(p["bytes_in"].get<uint64_t>(), p["bytes_out"].get<uint64_t>())) +
      "; quantized tensors: " + format_bytes(p["bytes_quantized_in"].get<uint64_t>()) + " -> " +
      format_bytes(p["bytes_quantized_out"].get<uint64_t>()) + ")";
  EXPECT_TRUE(has(text.out, total)) << total << "\n" << text.out;
}

class PlanTotals : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("model");
    fs::create_directories(model_);
    test::run_testgen("llama " + model_ +
                      " --hidden 200 --intermediate 72 --layers 2 --vocab 130 "
                      "--shard-bytes 150000 --seed 11");
  }
  test::TempDir dir_;
  std::string model_;
};

TEST_F(PlanTotals, DryRunBytesOutIsTheWrittenFilesSize) {
  expect_plan_matches_run(model_, "", false);
  expect_plan_matches_run(
      model_, " --bits 3 --axis -1 --symmetric --scale-dtype f32 --skip 'lm_head*'", false);
}

TEST_F(PlanTotals, WithZstdBytesOutIsAnUpperBound) {
  expect_plan_matches_run(model_, " --zstd 5", true);
}

// ----------------------------------------------- item 22: one ratio

TEST_F(PlanTotals, ConvertInspectAndVerifyGiveOneRatio) {
  const std::string out = dir_.file("m.qpack");
  const auto conv = run_split(dir_, "convert " + model_ + " " + out + " --json");
  ASSERT_EQ(conv.exit_code, 0) << conv.err;
  const double ratio = nlohmann::json::parse(conv.out)["ratio"].get<double>();
  const auto insp = run_split(dir_, "inspect " + out + " --json");
  ASSERT_EQ(insp.exit_code, 0) << insp.err;
  const auto ij = nlohmann::json::parse(insp.out);
  EXPECT_DOUBLE_EQ(ij["totals"]["ratio"].get<double>(), ratio);
  const auto ver = run_split(dir_, "verify " + out + " " + model_ + " --json --device cpu");
  ASSERT_EQ(ver.exit_code, 0) << ver.err;
  const auto vj = nlohmann::json::parse(ver.out);
  EXPECT_DOUBLE_EQ(vj["model"]["compression_ratio"].get<double>(), ratio);
  // The text forms print the same two decimals.
  const std::string shown = format_ratio(ratio);
  const auto conv_text = run_split(dir_, "convert " + model_ + " " + out + " -f");
  EXPECT_TRUE(has(conv_text.out, "ratio " + shown)) << conv_text.out;
  EXPECT_TRUE(has(run_split(dir_, "inspect " + out).out, "(ratio " + shown + ")"));
  EXPECT_TRUE(has(run_split(dir_, "verify " + out + " " + model_ + " --device cpu").out,
                  "(" + shown + ")"));
}

// ----------------------------------------- item 14: nothing to quantize

TEST(PlanWarnings, NoTensorQuantizedWarnsAndFailsUnderRequireQuantized) {
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors"), out = dir.file("m.qpack");
  write_model(src, {{"a.bias", {64}}, {"b.bias", {32}}});
  auto r = run_split(dir, "convert " + src + " " + out + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.err, "qpack: warning: no tensor is quantized (all 2 tensors kept)")) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["warnings"].size(), 1u);
  EXPECT_TRUE(has(j["warnings"][0], "no tensor is quantized"));
  r = run_split(dir, "convert " + src + " --dry-run --json");
  EXPECT_TRUE(has(nlohmann::json::parse(r.out)["warnings"][0], "no tensor is quantized"));
  EXPECT_TRUE(has(r.err, "qpack: warning: no tensor is quantized")) << r.err;
  fs::remove(out);
  for (const std::string mode : {"", " --dry-run"}) {
    r = run_split(dir, "convert " + src + " " + out + " --require-quantized" + mode);
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_TRUE(has(r.err, "no tensor is quantized")) << r.err;
    EXPECT_TRUE(has(r.err, "[NothingToQuantize]")) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
}

TEST(PlanWarnings, EmptyHeaderAndEmptyWeightMapWarnOrFail) {
  test::TempDir dir;
  const std::string empty = dir.file("empty.safetensors");
  write_safetensors(empty, {}, {}, false);
  const std::string shards = dir.file("sharded");
  fs::create_directories(shards);
  test::write_file(shards + "/model.safetensors.index.json", R"({"weight_map": {}})");
  for (const std::string& src : {empty, shards}) {
    SCOPED_TRACE(src);
    const std::string out = dir.file("out.qpack");
    auto r = run_split(dir, "convert " + src + " " + out);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(has(r.err, "qpack: warning: the checkpoint holds no tensors")) << r.err;
    fs::remove(out);
    r = run_split(dir, "convert " + src + " " + out + " --require-quantized");
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_TRUE(has(r.err, "the checkpoint holds no tensors")) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
}

TEST(PlanWarnings, RulesThatMatchNothingAreNamed) {
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors"), recipe = dir.file("r.json");
  write_model(src, five_matrices());
  test::write_file(recipe, R"({"rules": [{"match": "lm_head*", "skip": true},
                                         {"match": "layers.*", "bits": 8}]})");
  const auto r =
      run_split(dir, "convert " + src + " --dry-run --json --recipe " + recipe +
                         " --skip '*embed*' --rule 'mlp.*:bits=2' --rule 'layers.1.*:bits=3'"
                         " --rule 'layers.1.w:bits=2'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto w = nlohmann::json::parse(r.out)["warnings"];
  const std::vector<std::string> expected = {
      "--skip '*embed*' matches no tensor", "--rule 'mlp.*:bits=2' matches no tensor",
      "--rule 'layers.1.w:bits=2' matches 1 tensor, each decided by an earlier rule",
      "recipe " + recipe + " rules[0] matches no tensor"};
  ASSERT_EQ(w.size(), expected.size()) << w;
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(w[i], expected[i]);
    EXPECT_TRUE(has(r.err, "qpack: warning: " + expected[i])) << r.err;
  }
}

// ------------------------------------------------ item 19: tiny tensors

TEST(PlanKeeps, TensorsThatQuantizationWouldNotShrinkAreKeptAndSaySo) {
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors"), out = dir.file("m.qpack");
  write_model(src, {{"one", {1, 1}},
                    {"pair", {2, 384}},
                    {"cube", {4, 64, 64}},
                    {"ok", {64, 64}},
                    {"f16", {8, 4}, DType::F16}});
  const std::string opts = " --rule 'f16:bits=8,scale=f32,group=8'";
  const auto r = run_split(dir, "convert " + src + opts + " --dry-run --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const std::vector<std::pair<std::string, std::string>> kept = {
      {"one", "axis 0 has 1 elements: groups below the minimum of 8"},
      {"pair", "axis 0 has 2 elements: groups below the minimum of 8"},
      {"cube", "axis 0 has 4 elements: groups below the minimum of 8"},
      {"f16", "quantized it would not be smaller (64 bytes for 64)"}};
  for (const auto& [name, why] : kept) {
    SCOPED_TRACE(name);
    const auto* t = find_tensor(j, name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ((*t)["action"], "keep");
    EXPECT_TRUE(has((*t)["reason"], why)) << (*t)["reason"];
    EXPECT_EQ((*t)["bytes_out"], (*t)["bytes_in"]);
  }
  EXPECT_EQ((*find_tensor(j, "ok"))["action"], "quantize");
  EXPECT_EQ(j["tensors_quantized"], 1);
  // The text plan gives the same reasons, and the file keeps them raw.
  const auto text = run_split(dir, "convert " + src + opts + " --dry-run");
  EXPECT_TRUE(has(text.out, "axis 0 has 2 elements: groups below the minimum of 8")) << text.out;
  ASSERT_EQ(run_split(dir, "convert " + src + " " + out + opts + " -q").exit_code, 0);
  const auto q = QpackFile::open(out);
  for (const auto& [name, why] : kept) EXPECT_FALSE(q->find(name)->quantized) << name;
  EXPECT_TRUE(q->find("ok")->quantized);
  // Along the long axis the pair is quantized (groups of 64).
  ASSERT_EQ(run_split(dir, "convert " + src + " " + out + " -q -f --axis -1").exit_code, 0);
  EXPECT_TRUE(QpackFile::open(out)->find("pair")->quantized);
}

}  // namespace
