// `qpack dequantize X.qpack OUTDIR/` (issue #14 item 4, docs/hf-folders.md):
// the output kind from the path or --format, the folder's tensors equal to
// the single-file dequantize bit for bit (qpack's reader and the Python
// safetensors package), the index HF expects, config.json without
// quantization_config and with the dtype, --max-shard-size, the copied
// files, the overwrite rules.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

using namespace qpack;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

json read_json(const std::string& path) { return json::parse(test::read_file(path)); }

class DequantizeFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("model");
    // BF16 source, sharded, with a config.json that carries a
    // quantization_config (as a re-exported checkpoint would) and a dtype.
    test::run_testgen("llama " + model_ +
                      " --hidden 64 --intermediate 96 --layers 2 --vocab 64 --dtype bf16 "
                      "--shard-bytes 30000 --seed " +
                      std::to_string(test::test_seed() % 100000));
    json config = read_json(model_ + "/config.json");
    config["quantization_config"] = {{"quant_method", "fp8"}};
    config["dtype"] = "bfloat16";
    test::write_file(model_ + "/config.json", config.dump(2));
    test::write_file(model_ + "/tokenizer.json", "{\"tok\": 1}");
    test::write_file(model_ + "/generation_config.json", "{\"g\": 1}");
    fs::create_directories(model_ + "/original");
    qp_ = dir_.file("m.qpack");
    const auto r = test::run_qpack("convert " + q(model_) + " " + q(qp_) + " -q");
    if (r.exit_code != 0) throw std::runtime_error(r.output);
  }
  // The Python check's report, or nullopt when safetensors is missing.
  std::optional<json> python_check(const std::string& folder, const std::string& single,
                                   const std::string& torch_dtype) {
    const auto r = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                     "/tests/cli/dequantize_folder_check.py " + q(folder) + " " +
                                     q(single) + " " + torch_dtype + " 2>&1");
    if (r.exit_code == 77) return std::nullopt;
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.output;
    return json::parse(r.output);
  }
  test::TempDir dir_;
  std::string model_, qp_;
};

}  // namespace

TEST_F(DequantizeFolder, TensorsEqualTheSingleFileBitForBitAndTheIndexIsHfs) {
  bool python_ran = false;
  for (const std::string dtype : {"", "bf16", "f16", "f32"}) {
    SCOPED_TRACE("--dtype " + dtype);
    const std::string tag = dtype.empty() ? "src" : dtype;
    const std::string single = dir_.file("single-" + tag + ".safetensors");
    const std::string folder = dir_.file("folder-" + tag);
    // In a folder --dtype also covers the kept tensors: the single file
    // says so with --kept-dtype.
    const std::string flags = dtype.empty() ? "" : " --dtype " + dtype + " --kept-dtype " + dtype;
    auto r = test::run_qpack("dequantize " + q(qp_) + " " + q(single) + " -q --device cpu" + flags);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = test::run_qpack("dequantize " + q(qp_) + " " + q(folder + "/") +
                        " --device cpu --max-shard-size 9000" +
                        (dtype.empty() ? "" : " --dtype " + dtype));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "shards, config.json")) << r.output;
    EXPECT_FALSE(has(r.output, "kept as stored")) << r.output;
    // qpack's own reader: same names, dtypes, shapes and bytes.
    const auto one = Checkpoint::open(single);
    const auto many = Checkpoint::open(folder);
    ASSERT_GT(many->files().size(), 3u);
    ASSERT_EQ(many->tensors().size(), one->tensors().size());
    for (const CheckpointTensor& t : one->tensors()) {
      const CheckpointTensor* u = many->find(t.name());
      ASSERT_NE(u, nullptr) << t.name();
      EXPECT_EQ(u->info->dtype, t.info->dtype) << t.name();
      EXPECT_EQ(u->info->shape, t.info->shape) << t.name();
      ASSERT_EQ(u->info->nbytes(), t.info->nbytes()) << t.name();
      EXPECT_TRUE(std::equal(t.data(), t.data() + t.info->nbytes(), u->data())) << t.name();
      if (!dtype.empty()) {
        EXPECT_EQ(dtype_name(u->info->dtype), std::string(dtype == "bf16"  ? "BF16"
                                                          : dtype == "f16" ? "F16"
                                                                           : "F32"));
      }
    }
    for (const auto& f : many->files()) {
      uint64_t bytes = 0;
      for (const auto& t : f->tensors()) bytes += t.nbytes();
      // One tensor over the limit sits alone; otherwise a shard fits.
      EXPECT_TRUE(bytes <= 9000 || f->tensors().size() == 1) << f->path();
    }
    const json config = read_json(folder + "/config.json");
    EXPECT_FALSE(config.contains("quantization_config"));
    const std::string torch = dtype.empty()     ? "bfloat16"
                              : dtype == "bf16" ? "bfloat16"
                              : dtype == "f16"  ? "float16"
                                                : "float32";
    EXPECT_EQ(config.value("dtype", json()), torch);
    const json source_torch = read_json(model_ + "/config.json").value("torch_dtype", json());
    EXPECT_EQ(config.value("torch_dtype", json()), dtype.empty() ? source_torch : json(torch));
    const auto rep = python_check(folder, single, torch);
    if (!rep) continue;
    python_ran = true;
    EXPECT_TRUE((*rep)["problems"].empty()) << rep->dump();
    EXPECT_EQ((*rep)["tensors"], one->tensors().size());
  }
  if (!python_ran) GTEST_SKIP() << "python3 cannot import safetensors (qpack's reader checked)";
}

TEST_F(DequantizeFolder, TheOutputKindFollowsThePathOrFormat) {
  struct Case {
    std::string out, flags;
    bool folder;
  };
  fs::create_directories(dir_.file("existing"));
  const Case cases[] = {
      {"a/", "", true},
      {"b", "", true},
      {"existing", "", true},
      {"Llama-3.1-8B", "", true},
      {"Qwen2.5", "", true},
      {"c.safetensors", "", false},
      {"d.bin", "", false},
      {"e.safetensors", "--format folder", true},
      {"f", "--format safetensors", false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.out + " " + c.flags);
    const std::string out = dir_.file(c.out);
    const auto r =
        test::run_qpack("dequantize " + q(qp_) + " " + q(out) + " -q --device cpu " + c.flags);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    if (c.folder) {
      ASSERT_TRUE(fs::is_directory(out));
      EXPECT_TRUE(fs::exists(out + "/model.safetensors"));  // 5GB default: one shard
      EXPECT_TRUE(fs::exists(out + "/config.json"));
    } else {
      ASSERT_TRUE(fs::is_regular_file(out));
      EXPECT_NO_THROW(SafetensorsFile::open(out));
    }
  }
  // Bad --format, folder options on a file, bad sizes: usage errors, nothing written.
  for (const std::string& flags : std::vector<std::string>{"--format gguf", "--max-shard-size 1GB",
                                                           "--copy-files-from " + model_}) {
    SCOPED_TRACE(flags);
    const auto r = test::run_qpack("dequantize " + q(qp_) + " " + q(dir_.file("g.safetensors")) +
                                   " -q --device cpu " + flags);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_FALSE(fs::exists(dir_.file("g.safetensors")));
  }
  for (const std::string size : {"0", "5XB", "GB", "1.5.2GB", "-3", "99999999999999999999"}) {
    SCOPED_TRACE(size);
    const auto r = test::run_qpack("dequantize " + q(qp_) + " " + q(dir_.file("h/")) +
                                   " -q --device cpu --max-shard-size=" + size);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(has(r.output, "--max-shard-size")) << r.output;
    EXPECT_FALSE(fs::exists(dir_.file("h")));
  }
}

TEST_F(DequantizeFolder, ShardSizesAcceptHfUnits) {
  // The model's tensor bytes (F32 dequantized... source BF16): from --json.
  struct Case {
    std::string size;
    uint64_t bytes;
  };
  const Case cases[] = {{"20000", 20000},  {"20KB", 20000},        {"20kb", 20000},
                        {"0.02MB", 20000}, {"19.53125KiB", 20000}, {"5GB", 5000000000ull}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.size);
    const std::string out = dir_.file("s-" + c.size);
    const auto r = test::run_qpack("dequantize " + q(qp_) + " " + q(out + "/") +
                                   " --device cpu --json --max-shard-size " + c.size);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const json j = json::parse(r.output);
    EXPECT_EQ(j["output_kind"], "folder");
    const auto ck = Checkpoint::open(out);
    size_t n_shards = ck->files().size();
    EXPECT_EQ(j["shards"].size(), n_shards);
    // Each shard is as HF plans: the next tensor would not have fitted.
    std::vector<uint64_t> shard_bytes, first;
    for (const auto& f : ck->files()) {
      uint64_t b = 0;
      for (const auto& t : f->tensors()) b += t.nbytes();
      shard_bytes.push_back(b);
      first.push_back(f->tensors().empty() ? 0 : f->tensors()[0].nbytes());
    }
    for (size_t s = 0; s + 1 < n_shards; ++s)
      EXPECT_GT(shard_bytes[s] + first[s + 1], c.bytes) << s;
    for (size_t s = 0; s < n_shards; ++s)
      if (ck->files()[s]->tensors().size() > 1) {
        EXPECT_LE(shard_bytes[s], c.bytes) << s;
      }
    if (c.bytes == 5000000000ull) {
      EXPECT_EQ(n_shards, 1u);
    }
  }
}

TEST_F(DequantizeFolder, CopiesTheSourcesOtherFilesOnlyWhenAsked) {
  auto r = test::run_qpack("dequantize " + q(qp_) + " " + q(dir_.file("plain/")) + " --device cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "no other files (--copy-files-from SRC")) << r.output;
  EXPECT_EQ(entries(dir_.file("plain")),
            (std::vector<std::string>{"config.json", "model.safetensors"}));
  r = test::run_qpack("dequantize " + q(qp_) + " " + q(dir_.file("full/")) +
                      " --device cpu --json --copy-files-from " + q(model_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(entries(dir_.file("full")),
            (std::vector<std::string>{"config.json", "generation_config.json", "model.safetensors",
                                      "tokenizer.json"}));
  EXPECT_EQ(test::read_file(dir_.file("full/tokenizer.json")),
            test::read_file(model_ + "/tokenizer.json"));
  const json j = json::parse(r.output);
  EXPECT_EQ(j["files_copied"], json({"generation_config.json", "tokenizer.json"}));
  EXPECT_EQ(j["files_not_copied"], json({"original"}));
  EXPECT_EQ(j["config_written"], true);
}

TEST_F(DequantizeFolder, NoStoredConfigMeansNoConfigJsonAndAWarning) {
  // A single .safetensors file given alone: convert stores no config.
  const std::string lone = dir_.file("lone");
  fs::create_directories(lone);
  test::run_testgen("llama " + q(lone) + " --hidden 64 --intermediate 96 --layers 1 --vocab 64");
  fs::remove(lone + "/config.json");
  const std::string qp = dir_.file("lone.qpack");
  ASSERT_EQ(
      test::run_qpack("convert " + q(lone + "/model.safetensors") + " " + q(qp) + " -q").exit_code,
      0);
  const auto r =
      test::run_qpack("dequantize " + q(qp) + " " + q(dir_.file("nc/")) + " -q --device cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "stores no config.json")) << r.output;
  EXPECT_EQ(entries(dir_.file("nc")), std::vector<std::string>{"model.safetensors"});
}

TEST_F(DequantizeFolder, ForceReplacesOnlyAModelFolder) {
  const std::string out = dir_.file("out");
  ASSERT_EQ(
      test::run_qpack("dequantize " + q(qp_) + " " + q(out + "/") + " -q --device cpu").exit_code,
      0);
  test::write_file(out + "/extra.txt", "left from before");
  auto r = test::run_qpack("dequantize " + q(qp_) + " " + q(out + "/") + " -q --device cpu");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_TRUE(has(r.output, "already exists")) << r.output;
  r = test::run_qpack("dequantize " + q(qp_) + " " + q(out + "/") + " -q --device cpu --force");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(out + "/extra.txt")) << "replaced as a whole";
  // A directory that is not a model folder is never replaced.
  const std::string mine = dir_.file("mine");
  fs::create_directories(mine);
  test::write_file(mine + "/notes.txt", "mine");
  r = test::run_qpack("dequantize " + q(qp_) + " " + q(mine) + " -q --device cpu --force");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_TRUE(has(r.output, "not a model folder")) << r.output;
  EXPECT_EQ(entries(mine), std::vector<std::string>{"notes.txt"});
  for (const auto& e : entries(dir_.path())) EXPECT_FALSE(has(e, ".qpack-partial.")) << e;
}

TEST_F(DequantizeFolder, AGgufDequantizesIntoAFolderWithoutConfig) {
  const std::string gguf = dir_.file("m.gguf");
  auto r = test::run_qpack("convert " + q(model_) + " " + q(gguf) + " --type Q8_0 -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string single = dir_.file("g.safetensors"), folder = dir_.file("g");
  ASSERT_EQ(test::run_qpack("dequantize " + q(gguf) + " " + q(single) +
                            " -q --device cpu --dtype bf16 --kept-dtype bf16")
                .exit_code,
            0);
  r = test::run_qpack("dequantize " + q(gguf) + " " + q(folder) +
                      " -q --device cpu --dtype bf16 --max-shard-size 10KB");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "stores no config.json")) << r.output;
  const auto one = Checkpoint::open(single);
  const auto many = Checkpoint::open(folder);
  EXPECT_GT(many->files().size(), 1u);
  ASSERT_EQ(many->tensors().size(), one->tensors().size());
  for (const CheckpointTensor& t : one->tensors()) {
    const CheckpointTensor* u = many->find(t.name());
    ASSERT_NE(u, nullptr) << t.name();
    EXPECT_EQ(u->info->dtype, DType::BF16) << t.name();
    ASSERT_EQ(u->info->nbytes(), t.info->nbytes()) << t.name();
    EXPECT_TRUE(std::equal(t.data(), t.data() + t.info->nbytes(), u->data())) << t.name();
  }
  EXPECT_FALSE(fs::exists(folder + "/config.json"));
}
