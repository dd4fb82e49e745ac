// qpack convert SRC OUTDIR --format compressed-tensors|gptq through the real
// executable: the numpy cross-check (hf_export_check.py: an independent
// reader of each layout == qpack dequantize bit for bit) is a ctest of its
// own; here the same bytes at any thread count, the dry-run plan, and bad
// input: each a clear error naming file, tensor and reason, exit 3 (2 for
// usage), and no folder written.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "testutil.hpp"

namespace qpack {
namespace {

using nlohmann::json;
using test::run_qpack;

std::string q(const std::string& path) { return "'" + path + "'"; }

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class HfExport : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("m");
    test::run_testgen("llama " + q(model_) +
                      " --hidden 256 --intermediate 384 --layers 2 --vocab 96 --heads 4"
                      " --kv-heads 2 --dtype bf16 --seed " +
                      std::to_string(test::test_seed() % 100000));
  }
  // Runs convert expecting failure: exit code, output contains every piece,
  // and nothing appeared in the work folder but the source.
  void expect_refused(const std::string& source, const std::string& args, int code,
                      const std::vector<std::string>& pieces) {
    const auto before = entries(dir_.path());
    const auto r = run_qpack("convert " + q(source) + " " + q(dir_.file("out")) + " " + args);
    EXPECT_EQ(r.exit_code, code) << r.output;
    for (const auto& p : pieces)
      EXPECT_NE(r.output.find(p), std::string::npos) << p << "\n" << r.output;
    EXPECT_EQ(entries(dir_.path()), before) << r.output;
  }
  test::TempDir dir_;
  std::string model_;
};

TEST_F(HfExport, SameBytesAtAnyThreadCount) {
  for (const std::string fmt : {"compressed-tensors", "gptq"}) {
    const std::string a = dir_.file(fmt + "-1"), b = dir_.file(fmt + "-2");
    ASSERT_EQ(run_qpack("convert " + q(model_) + " " + q(a) + " --format " + fmt +
                        " -g 64 --max-shard-size 200KB -j 1 -q")
                  .exit_code,
              0);
    ASSERT_EQ(run_qpack("convert " + q(model_) + " " + q(b) + " --format " + fmt +
                        " -g 64 --max-shard-size 200KB -j 2 -q")
                  .exit_code,
              0);
    const auto names = entries(a);
    EXPECT_EQ(names, entries(b));
    EXPECT_GT(names.size(), 3u);  // shards, index, config
    for (const auto& n : names)
      EXPECT_EQ(test::read_file(a + "/" + n), test::read_file(b + "/" + n)) << fmt << " " << n;
  }
}

TEST_F(HfExport, DryRunPlanAndDefaults) {
  const auto r =
      run_qpack("convert " + q(model_) + " --format compressed-tensors --dry-run --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["format"], "compressed-tensors");
  EXPECT_EQ(j["scheme"]["bits"], 4);  // W4A16: 4 bits, symmetric, group 128
  EXPECT_EQ(j["scheme"]["group_size"], 128);
  EXPECT_EQ(j["scheme"]["symmetric"], true);
  EXPECT_EQ(j["scheme"]["scale_dtype"], "BF16");  // the model's dtype
  EXPECT_EQ(j["ignore"], json::array({"lm_head"}));
  EXPECT_EQ(j["tensors_quantized"], 14);
  for (const auto& t : j["tensors"]) {
    const std::string name = t["name"];
    const bool linear = name.find("_proj.weight") != std::string::npos;
    EXPECT_EQ(t["action"], linear ? "quantize" : "keep") << name;
    EXPECT_FALSE(t["reason"].get<std::string>().empty());
  }
  EXPECT_EQ(entries(dir_.path()), std::vector<std::string>{"m"});
  // --skip keeps a Linear weight and lists its module in ignore.
  const auto s = run_qpack("convert " + q(model_) +
                           " --format compressed-tensors --dry-run --json --skip '*.down_proj.*'");
  ASSERT_EQ(s.exit_code, 0) << s.output;
  const auto z = run_qpack("convert " + q(model_) +
                           " --format compressed-tensors --dry-run --json --zero-point integer");
  ASSERT_EQ(z.exit_code, 0) << z.output;
  EXPECT_EQ(json::parse(z.output)["scheme"]["zero_point"], "integer");
  EXPECT_EQ(
      json::parse(
          z.output)["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"],
      false);
  EXPECT_EQ(json::parse(s.output)["ignore"], json::array({"lm_head", "model.layers.0.mlp.down_proj",
                                                          "model.layers.1.mlp.down_proj"}));
}

TEST_F(HfExport, RefusesWhatTheFormatsCannotHold) {
  expect_refused(model_, "--format gptq --asymmetric", 3, {"symmetric only"});
  expect_refused(model_, "--format compressed-tensors -b 3", 3, {"3 bits"});
  expect_refused(model_, "--format gptq -b 2", 3, {"4 or 8 bits"});
  expect_refused(model_, "--format compressed-tensors -g 256", 3, {"group size must be"});
  expect_refused(model_, "--format gptq --scale-dtype bf16", 3, {"F16"});
  expect_refused(model_, "--format compressed-tensors --zero-point float", 2, {"integer codes"});
  expect_refused(model_, "--format compressed-tensors --symmetric --zero-point integer", 2,
                 {"--symmetric has no zero-point"});
  expect_refused(model_, "--format gptq --zero-point integer", 3, {"symmetric only"});
  expect_refused(model_, "--format compressed-tensors --axis 0", 2, {"--axis must be -1"});
  expect_refused(model_, "--format compressed-tensors --zstd", 2, {"--zstd is not an option"});
  expect_refused(model_, "--format gptq --type Q4_0", 2, {"--type is not an option"});
  // Non-Linear tensors selected: an embedding, a norm; lm_head stays kept.
  expect_refused(model_, "--format compressed-tensors --include '*embed_tokens*'", 2,
                 {"model.embed_tokens.weight", "embedding"});
  expect_refused(model_, "--format compressed-tensors --include '*.norm.weight'", 2,
                 {"model.norm.weight", "1-D"});
  expect_refused(model_, "--format gptq --include lm_head.weight", 2, {"lm_head"});
  // GPTQ has no ignore list for decoder Linears.
  expect_refused(model_, "--format gptq --skip '*.o_proj.*'", 2, {"o_proj", "GPTQ"});
}

// --method search with asymmetric compressed-tensors (quantization.md §M5):
// ordinary integer (S, z), the same bytes at any thread count, verified
// against the source with a lower error than RTN's; refused where it does
// not apply.
TEST_F(HfExport, IntegerZeroPointSearch) {
  const std::string rtn = dir_.file("rtn"), s1 = dir_.file("s1"), s2 = dir_.file("s2");
  const std::string common = " --format compressed-tensors --asymmetric -g 64 -q";
  ASSERT_EQ(run_qpack("convert " + q(model_) + " " + q(rtn) + common).exit_code, 0);
  ASSERT_EQ(
      run_qpack("convert " + q(model_) + " " + q(s1) + common + " --method search -j 1").exit_code,
      0);
  ASSERT_EQ(
      run_qpack("convert " + q(model_) + " " + q(s2) + common + " --method search -j 3").exit_code,
      0);
  EXPECT_EQ(entries(s1), entries(s2));
  for (const auto& n : entries(s1))
    EXPECT_EQ(test::read_file(s1 + "/" + n), test::read_file(s2 + "/" + n)) << n;
  const auto plan =
      run_qpack("convert " + q(model_) + common + " --method search --dry-run --json");
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  EXPECT_EQ(json::parse(plan.output)["scheme"]["method"], "search");
  double err[2] = {0, 0};
  const std::string dirs[2] = {rtn, s1};
  for (int k = 0; k < 2; ++k) {
    const auto v =
        run_qpack("verify " + q(dirs[k]) + " --source " + q(model_) + " --device cpu --json");
    ASSERT_EQ(v.exit_code, 0) << v.output;
    err[k] = json::parse(v.output)["model"]["metrics"]["rel_error"].get<double>();
  }
  EXPECT_GT(err[0], 0.0);
  EXPECT_LT(err[1], 0.99 * err[0]) << "rtn " << err[0] << ", search " << err[1];
  expect_refused(model_, "--format compressed-tensors --method search", 3, {"asymmetric"});
  expect_refused(model_, "--format compressed-tensors --asymmetric --method refit", 3,
                 {"integer zero-points take"});
  expect_refused(model_, "--format gptq --method search", 3, {"GPTQ export takes --method rtn"});
  expect_refused(model_, "--format compressed-tensors --preset best", 2, {"--preset"});
}

TEST_F(HfExport, RefusesBadSources) {
  // Not a model folder: no config.json.
  const std::string bare = dir_.file("bare");
  std::filesystem::create_directory(bare);
  std::filesystem::copy_file(model_ + "/model.safetensors", bare + "/model.safetensors");
  expect_refused(bare, "--format compressed-tensors", 3, {"config.json", "not a model folder"});
  // A config and no weights.
  const std::string empty = dir_.file("empty");
  std::filesystem::create_directory(empty);
  std::filesystem::copy_file(model_ + "/config.json", empty + "/config.json");
  expect_refused(empty, "--format gptq", 3, {"no .safetensors"});
  // in-features not a multiple of the group: hidden 160 with groups of 128.
  const std::string odd = dir_.file("odd");
  test::run_testgen("llama " + q(odd) + " --hidden 160 --intermediate 256 --layers 1 --vocab 32");
  expect_refused(
      odd, "--format compressed-tensors", 3,
      {"model.layers.0.self_attn.q_proj.weight", "not a multiple of the group size 128"});
  // GPTQ needs out and in multiples of 8 (4 bits) for qweight and qzeros:
  // intermediate 300 (channel-wise, so the group is no obstacle).
  const std::string narrow = dir_.file("narrow");
  test::run_testgen("llama " + q(narrow) + " --hidden 64 --intermediate 300 --layers 1 --vocab 32");
  expect_refused(narrow, "--format gptq -g all", 3, {"mlp.gate_proj.weight", "multiple of 8"});
  // An F32 model needs an explicit compressed-tensors scale dtype.
  const std::string f32 = dir_.file("f32");
  test::run_testgen("llama " + q(f32) +
                    " --hidden 64 --intermediate 128 --layers 1 --vocab 32 --dtype f32");
  expect_refused(f32, "--format compressed-tensors -g 32", 3, {"F32 model", "--scale-dtype"});
  const std::string ok = dir_.file("f32-out");
  const auto r = run_qpack("convert " + q(f32) + " " + q(ok) +
                           " --format compressed-tensors -g 32 --scale-dtype f16 -q");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::filesystem::remove_all(ok);
  // A NaN in a weight: the tensor named, nothing written.
  const std::string nan = dir_.file("nan");
  std::filesystem::create_directory(nan);
  test::write_model_with_nan(nan + "/model.safetensors", 256, test::test_seed());
  test::write_file(nan + "/config.json", std::string("{\"model_type\": \"llama\"}"));
  expect_refused(nan, "--format gptq -g 64", 3, {"layers.2.w.weight", "NaN"});
  // An already quantized source.
  const std::string exported = dir_.file("exported");
  ASSERT_EQ(run_qpack("convert " + q(model_) + " " + q(exported) + " --format gptq -q").exit_code,
            0);
  expect_refused(exported, "--format compressed-tensors", 3, {"already quantized"});
  // The output exists.
  const auto again = run_qpack("convert " + q(model_) + " " + q(exported) + " --format gptq -q");
  EXPECT_EQ(again.exit_code, 5) << again.output;
}

// A full disk (RLIMIT_FSIZE: the kernel refuses the write as it would with
// ENOSPC) while the writer thread writes a block queued earlier: exit 5, the
// error names the folder and the output tensor being written (never the
// source Linear being quantized at that moment), and no folder is left.
TEST_F(HfExport, FullDiskNamesTheOutputTensorAndLeavesNothing) {
  for (const char* fmt : {"gptq", "compressed-tensors"}) {
    SCOPED_TRACE(fmt);
    const auto before = entries(dir_.path());
    const std::string out = dir_.file("full");
    const auto r = test::run_command("ulimit -f 200; '" + std::string(QPACK_CLI) + "' convert " +
                                     q(model_) + " " + q(out) + " --format " + fmt + " -q");
    EXPECT_EQ(r.exit_code, 5) << r.output;
    EXPECT_NE(r.output.find(out), std::string::npos) << r.output;
    const size_t at = r.output.find("tensor '");
    ASSERT_NE(at, std::string::npos) << r.output;
    const std::string named = r.output.substr(at + 8, r.output.find('\'', at + 8) - at - 8);
    const bool source_linear =
        named.size() > 12 && named.compare(named.size() - 12, 12, "_proj.weight") == 0;
    EXPECT_FALSE(source_linear) << "names the source Linear " << named << ": " << r.output;
    EXPECT_EQ(entries(dir_.path()), before) << r.output;
  }
}

}  // namespace
}  // namespace qpack
