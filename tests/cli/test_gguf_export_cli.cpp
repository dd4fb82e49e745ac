// qpack convert SRC OUT.gguf through the real executable: HF safetensors to
// GGUF read back by gguf-py (every key and tensor; the tensor bytes of the
// single-type exports equal to gguf-py's quantize of the permuted source),
// GGUF to GGUF keeping every key, the same bytes at any thread count, the
// dry-run plan, and bad inputs each a clear error with nothing written.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/gguf_llama.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/spec/dtype.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using nlohmann::json;
using test::run_qpack;

std::string q(const std::string& path) { return "'" + path + "'"; }

// A folder holds only what the test put there: no output, no temporary file.
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// gguf_export_check.py's report, or nullopt when gguf/numpy/safetensors are missing.
// mode "method": the block errors of Q4_1/Q5_1 tensors too (--method files).
std::optional<json> check_with_gguf_py(const std::string& hf_dir, const std::string& gguf,
                                       const std::string& mode = "") {
  const auto r = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                   "/tests/cli/gguf_export_check.py " + q(hf_dir) + " " + q(gguf) +
                                   " " + mode + " 2>&1");
  if (r.exit_code == 77) return std::nullopt;
  if (r.exit_code != 0) throw std::runtime_error("gguf_export_check.py: " + r.output);
  return json::parse(r.output);
}

class GgufExport : public ::testing::Test {
 protected:
  void SetUp() override {
    // 8 heads over 256 (head_dim 32), 2 kv heads: the permutation moves rows
    // of q (8 heads) and k (2 heads) differently. 704 = 22 blocks of 32 and
    // not a multiple of 256, so ffn_down rows need the K-quant fallbacks.
    model_ = dir_.file("m");
    test::run_testgen("llama " + q(model_) +
                      " --hidden 256 --intermediate 704 --layers 2 --vocab 1000 --heads 8"
                      " --kv-heads 2 --dtype f32 --seed " +
                      std::to_string(test::test_seed() % 100000));
  }
  test::TempDir dir_;
  std::string model_;
};

TEST_F(GgufExport, SingleTypesEqualGgufPyQuantizeOfThePermutedSource) {
  for (const char* type : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16", "F32"}) {
    SCOPED_TRACE(type);
    const std::string out = dir_.file(std::string(type) + ".gguf");
    const auto r =
        run_qpack("convert " + q(model_) + " " + q(out) + " --type " + type + " --pure -q");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto rep = check_with_gguf_py(model_, out);
    if (!rep) GTEST_SKIP() << "python3 cannot import gguf, numpy and safetensors";
    const json& t = (*rep)["tensors"];
    ASSERT_EQ(t.size(), 21u);  // embed, norm, lm_head, 9 per layer
    for (const auto& [name, v] : t.items()) {
      EXPECT_TRUE(v["equal"].get<bool>()) << name << " " << v.dump();
      const bool one_d = name.find("norm") != std::string::npos;
      EXPECT_EQ(v["type"].get<std::string>(), one_d ? "F32" : type) << name;
    }
    EXPECT_EQ(t["blk.0.attn_k.weight"]["shape"], json({256, 64}));
    EXPECT_EQ(t["blk.1.ffn_down.weight"]["shape"], json({704, 256}));
    const json& k = (*rep)["keys"];
    EXPECT_EQ(k["general.architecture"], "llama");
    EXPECT_EQ(k["llama.block_count"], 2);
    EXPECT_EQ(k["llama.context_length"], 2048);
    EXPECT_EQ(k["llama.embedding_length"], 256);
    EXPECT_EQ(k["llama.feed_forward_length"], 704);
    EXPECT_EQ(k["llama.attention.head_count"], 8);
    EXPECT_EQ(k["llama.attention.head_count_kv"], 2);
    EXPECT_EQ(k["llama.rope.dimension_count"], 32);
    EXPECT_EQ(k["llama.vocab_size"], 1000);
    EXPECT_FLOAT_EQ(k["llama.attention.layer_norm_rms_epsilon"].get<float>(), 1e-5f);
    EXPECT_FLOAT_EQ(k["llama.rope.freq_base"].get<float>(), 10000.0f);
    EXPECT_EQ(k["tokenizer.ggml.model"], "none");
    EXPECT_EQ(k["general.quantization_version"], 2);
    const std::map<std::string, int> ftype = {{"Q4_0", 2}, {"Q4_1", 3}, {"Q5_0", 8},  {"Q5_1", 9},
                                              {"Q8_0", 7}, {"F16", 1},  {"BF16", 32}, {"F32", 0}};
    EXPECT_EQ(k["general.file_type"], ftype.at(type));
  }
}

TEST_F(GgufExport, SameBytesAtAnyThreadCount) {
  const std::string a = dir_.file("a.gguf"), b = dir_.file("b.gguf");
  ASSERT_EQ(
      run_qpack("convert " + q(model_) + " " + q(a) + " --type Q4_1 --pure -q -j 1").exit_code, 0);
  ASSERT_EQ(
      run_qpack("convert " + q(model_) + " " + q(b) + " --type Q4_1 --pure -q -j 2").exit_code, 0);
  EXPECT_EQ(test::read_file(a), test::read_file(b));
  // The same model in shards (same seed, a folder of the same name, which
  // general.name takes): the same file.
  const std::string sharded = dir_.file("s/m"), c = dir_.file("c.gguf");
  test::run_testgen("llama " + q(sharded) +
                    " --hidden 256 --intermediate 704 --layers 2 --vocab 1000 --heads 8"
                    " --kv-heads 2 --dtype f32 --shard-bytes 1000000 --seed " +
                    std::to_string(test::test_seed() % 100000));
  ASSERT_TRUE(std::filesystem::exists(sharded + "/model.safetensors.index.json"));
  ASSERT_EQ(run_qpack("convert " + q(sharded) + " " + q(c) + " --type Q4_1 --pure -q").exit_code,
            0);
  EXPECT_EQ(test::read_file(a), test::read_file(c));
}

// --method search / refit (docs/quantization.md §G9): Q4_1 and Q5_1 blocks of
// their own where ggml's decode of them is closer, checked by gguf-py: no
// block worse than gguf-py's (llama.cpp's) quantize, many better, the file
// read by gguf.GGUFReader and `qpack dequantize` equal to gguf-py's
// dequantize of it; the same bytes at any thread count; --method rtn is the
// default's bytes; the plan says where the method does not apply.
TEST_F(GgufExport, MethodsChooseQ4_1AndQ5_1BlocksNeverWorseThanLlamas) {
  const std::string plain = dir_.file("plain.gguf"), rtn = dir_.file("rtn.gguf");
  ASSERT_EQ(run_qpack("convert " + q(model_) + " " + q(plain) + " --type Q4_1 --pure -q").exit_code,
            0);
  ASSERT_EQ(run_qpack("convert " + q(model_) + " " + q(rtn) + " --type Q4_1 --pure -q --method rtn")
                .exit_code,
            0);
  EXPECT_EQ(test::read_file(plain), test::read_file(rtn));
  for (const char* type : {"Q4_1", "Q5_1"}) {
    for (const char* method : {"search", "refit"}) {
      SCOPED_TRACE(std::string(type) + " " + method);
      const std::string out = dir_.file(std::string(type) + method + ".gguf");
      const std::string two = dir_.file(std::string(type) + method + "-j1.gguf");
      const std::string args = std::string(" --type ") + type + " --pure -q --method " + method;
      auto r = run_qpack("convert " + q(model_) + " " + q(out) + args + " -j 3");
      ASSERT_EQ(r.exit_code, 0) << r.output;
      ASSERT_EQ(run_qpack("convert " + q(model_) + " " + q(two) + args + " -j 1").exit_code, 0);
      EXPECT_EQ(test::read_file(out), test::read_file(two));
      const auto rep = check_with_gguf_py(model_, out, "method");
      if (!rep) GTEST_SKIP() << "python3 cannot import gguf, numpy and safetensors";
      int64_t changed = 0;
      double error = 0, error_llama = 0;
      for (const auto& [name, v] : (*rep)["tensors"].items()) {
        const bool one_d = name.find("norm") != std::string::npos;
        EXPECT_EQ(v["type"].get<std::string>(), one_d ? "F32" : type) << name;
        if (one_d) {
          EXPECT_TRUE(v["equal"].get<bool>()) << name;
          continue;
        }
        ASSERT_TRUE(v.contains("blocks_worse")) << name << " " << v.dump();
        EXPECT_EQ(v["blocks_worse"], 0) << name << " " << v.dump();
        changed += v["blocks_changed"].get<int64_t>();
        error += v["error"].get<double>();
        error_llama += v["error_llama"].get<double>();
      }
      EXPECT_GT(changed, 0);
      EXPECT_LT(error, error_llama);
      // qpack dequantize of the file is gguf-py's dequantize of it.
      const std::string st = dir_.file(std::string(type) + method + ".safetensors");
      r = run_qpack("dequantize " + q(out) + " " + q(st) + " --device cpu -q");
      ASSERT_EQ(r.exit_code, 0) << r.output;
      const auto c = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                       "/tests/converter/gguf_dequant_tool.py check " + q(out) +
                                       " " + q(st) + " 2>&1");
      ASSERT_EQ(c.exit_code, 0) << c.output;
      const json check = json::parse(c.output);
      EXPECT_EQ(check.size(), 21u);
      for (const auto& [name, v] : check.items())
        EXPECT_TRUE(v.at("equal").get<bool>()) << name << " " << v.dump();
    }
  }
  // The plan: the method per tensor, and a warning where it does not apply.
  const auto plan = test::run_command("('" + std::string(QPACK_CLI) + "' convert " + q(model_) +
                                      " --type Q5_1 --method search --dry-run --json 2>/dev/null)");
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  const auto warned = run_qpack("convert " + q(model_) + " --type Q5_1 --method search -n");
  EXPECT_NE(warned.output.find("chooses the blocks of the"), std::string::npos) << warned.output;
  const json j = json::parse(plan.output.substr(
      plan.output.find('{'), plan.output.rfind('}') - plan.output.find('{') + 1));
  EXPECT_EQ(j["method"], "search");
  for (const auto& t : j["tensors"]) {
    const bool applies = t["action"] == "quantize" && t["type"] == "Q5_1";
    EXPECT_EQ(t["method"], applies ? "search" : "rtn") << t.dump();
  }
  const auto q8 = run_qpack("convert " + q(model_) + " --type Q8_0 --method refit -n");
  ASSERT_EQ(q8.exit_code, 0) << q8.output;
  EXPECT_NE(q8.output.find("--method refit has no effect"), std::string::npos) << q8.output;
}

TEST_F(GgufExport, DryRunPlanAsJson) {
  // stdout alone: the warnings on stderr would interleave with the JSON.
  const auto r = test::run_command("('" + std::string(QPACK_CLI) + "' convert " + q(model_) +
                                   " --type Q8_0 --dry-run --json 2>/dev/null)");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t from = r.output.find('{'), to = r.output.rfind('}');
  ASSERT_NE(from, std::string::npos) << r.output;
  const json j = json::parse(r.output.substr(from, to - from + 1));
  EXPECT_EQ(j["format"], "gguf");
  EXPECT_EQ(j["file_type"], 7);
  EXPECT_EQ(j["tensors"].size(), 21u);
  // llama-quantize's order: names outside blk.N first, then by layer, by name.
  EXPECT_EQ(j["tensors"][0]["name"], "output.weight");
  EXPECT_EQ(j["tensors"][1]["name"], "output_norm.weight");
  EXPECT_EQ(j["tensors"][2]["name"], "token_embd.weight");
  EXPECT_EQ(j["tensors"][3]["name"], "blk.0.attn_k.weight");
  for (const auto& t : j["tensors"]) {
    if (t["name"] == "blk.0.attn_q.weight") {
      EXPECT_EQ(t["permute_heads"], 8);
      EXPECT_EQ(t["type"], "Q8_0");
      EXPECT_EQ(t["bytes_out"], 256 * 256 / 32 * 34);
      EXPECT_DOUBLE_EQ(t["bits_per_weight"].get<double>(), 8.5);
    }
    if (t["name"] == "blk.0.attn_k.weight") {
      EXPECT_EQ(t["permute_heads"], 2);
    }
    if (t["name"] == "blk.0.attn_norm.weight") {
      EXPECT_EQ(t["type"], "F32");
      EXPECT_EQ(t["source_type"], "F32");
    }
  }
  EXPECT_EQ(entries(dir_.path()), std::vector<std::string>{"m"});
  const auto text = run_qpack("convert " + q(model_) + " --format gguf --type Q8_0 -n");
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("Q8_0 default (Q/K rows permuted, 8 heads)"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("general.file_type 7 (Q8_0)"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("not quantized (1-D)"), std::string::npos) << text.output;
}

// A GGUF source with keys of every type, a tokenizer, and an already
// quantized tensor that is carried as it is.
std::string write_gguf_source(const test::TempDir& dir) {
  const std::string path = dir.file("src.gguf");
  std::mt19937 rng(uint32_t(test::test_seed()));
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto f16 = [&](size_t n) {
    std::vector<uint8_t> b(2 * n);
    for (size_t i = 0; i < n; ++i) {
      const uint16_t h = f32_to_f16_rne(nd(rng));
      std::memcpy(&b[2 * i], &h, 2);
    }
    return b;
  };
  auto f32 = [&](size_t n) {
    std::vector<uint8_t> b(4 * n);
    for (size_t i = 0; i < n; ++i) {
      const float v = 1.0f + nd(rng);
      std::memcpy(&b[4 * i], &v, 4);
    }
    return b;
  };
  const auto emb = f16(64 * 100), wq = f16(64 * 64), wv = f16(64 * 64), norm = f32(64);
  std::vector<uint8_t> q4(64 / 32 * 18 * 64);
  for (auto& c : q4) c = uint8_t(rng());
  std::vector<GgufKv> kv = {
      {"general.architecture", GgufValue::of_string("llama")},
      {"general.name", GgufValue::of_string("tiny")},
      {"general.file_type", GgufValue::of_u32(1)},
      {"llama.block_count", GgufValue::of_u32(1)},
      {"llama.attention.head_count", GgufValue::of_u32(4)},
      {"llama.attention.head_count_kv", GgufValue::of_u32(4)},
      {"llama.attention.layer_norm_rms_epsilon", GgufValue::of_f32(1e-6f)},
      {"x.i8", GgufValue::of_i8(-5)},
      {"x.u16", GgufValue::of_u16(65535)},
      {"x.i64", GgufValue::of_i64(-(int64_t(1) << 40))},
      {"x.f64", GgufValue::of_f64(0.1)},
      {"x.bool", GgufValue::of_bool(true)},
      {"split.count", GgufValue::of_u16(1)},
      {"tokenizer.ggml.model", GgufValue::of_string("gpt2")},
      {"tokenizer.ggml.tokens",
       GgufValue::of_array(GgufType::String,
                           {GgufValue::of_string("a"), GgufValue::of_string("b\xc3\xa9")})},
      {"tokenizer.ggml.scores",
       GgufValue::of_array(GgufType::Float32, {GgufValue::of_f32(0.5f), GgufValue::of_f32(-1)})},
      {"general.quantization_version", GgufValue::of_u32(1)},
  };
  write_gguf(path, kv,
             {{{"token_embd.weight", GgmlType::F16, {64, 100}}, emb.data()},
              {{"blk.0.attn_q.weight", GgmlType::F16, {64, 64}}, wq.data()},
              {{"blk.0.attn_v.weight", GgmlType::F16, {64, 64}}, wv.data()},
              {{"blk.0.ffn_down.weight", GgmlType::Q4_0, {64, 64}}, q4.data()},
              {{"output_norm.weight", GgmlType::F32, {64}}, norm.data()}},
             false);
  return path;
}

TEST(GgufExportFromGguf, KeepsEveryKeyAndCarriesOtherTypes) {
  test::TempDir dir;
  const std::string src = write_gguf_source(dir), out = dir.file("out.gguf");
  const auto r = run_qpack("convert " + q(src) + " " + q(out) + " --type Q8_0 -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto in = GgufFile::open(src);
  const auto o = GgufFile::open(out);
  // Every key but the file type, the quantization version and the split
  // keys, in the source's order; then those two, as llama-quantize sets them.
  std::vector<GgufKv> want;
  for (const auto& kv : in->metadata()) {
    if (kv.key == "general.file_type" || kv.key == "general.quantization_version" ||
        kv.key == "split.count")
      continue;
    want.push_back(kv);
  }
  want.push_back({"general.quantization_version", GgufValue::of_u32(2)});
  want.push_back({"general.file_type", GgufValue::of_u32(7)});
  ASSERT_EQ(o->metadata().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(o->metadata()[i].key, want[i].key) << i;
    EXPECT_TRUE(o->metadata()[i].value == want[i].value) << want[i].key;
  }
  // Tied output (no output.weight): token_embd takes the output's rule,
  // which keeps Q8_0 for a Q8_0 file. Q4_0 is carried byte for byte, norms kept.
  const auto* emb = o->find("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, GgmlType::Q8_0);
  EXPECT_EQ(o->find("blk.0.attn_q.weight")->type, GgmlType::Q8_0);
  const auto* fd = o->find("blk.0.ffn_down.weight");
  ASSERT_EQ(fd->type, GgmlType::Q4_0);
  EXPECT_EQ(0, std::memcmp(o->tensor_data(*fd), in->tensor_data(*in->find("blk.0.ffn_down.weight")),
                           fd->nbytes));
  const auto* n = o->find("output_norm.weight");
  EXPECT_EQ(n->type, GgmlType::F32);
  EXPECT_EQ(0, std::memcmp(o->tensor_data(*n), in->tensor_data(*in->find("output_norm.weight")),
                           n->nbytes));
  // llama-quantize's tensor order.
  std::vector<std::string> names;
  for (const auto& t : o->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"output_norm.weight", "token_embd.weight",
                                             "blk.0.attn_q.weight", "blk.0.attn_v.weight",
                                             "blk.0.ffn_down.weight"}));
  // --vocab-from is for safetensors sources.
  const auto v = run_qpack("convert " + q(src) + " " + q(dir.file("v.gguf")) +
                           " --type Q8_0 --vocab-from " + q(src));
  EXPECT_EQ(v.exit_code, 2) << v.output;
  EXPECT_NE(v.output.find("--vocab-from is for safetensors sources"), std::string::npos);
}

TEST_F(GgufExport, VocabFromCopiesTheTokenizerKeys) {
  const std::string vocab = dir_.file("vocab.gguf");
  std::vector<GgufValue> tokens;
  for (int i = 0; i < 1000; ++i) tokens.push_back(GgufValue::of_string("t" + std::to_string(i)));
  write_gguf(vocab,
             {{"general.architecture", GgufValue::of_string("llama")},
              {"tokenizer.ggml.model", GgufValue::of_string("llama")},
              {"tokenizer.ggml.tokens", GgufValue::of_array(GgufType::String, tokens)},
              {"tokenizer.ggml.bos_token_id", GgufValue::of_u32(1)},
              {"general.name", GgufValue::of_string("not copied")}},
             {}, false);
  const std::string out = dir_.file("o.gguf");
  const auto r = run_qpack("convert " + q(model_) + " " + q(out) +
                           " --type Q8_0 --pure -q --vocab-from " + q(vocab));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("tokenizer.ggml.model is \"none\""), std::string::npos) << r.output;
  const auto o = GgufFile::open(out);
  ASSERT_NE(o->find_key("tokenizer.ggml.tokens"), nullptr);
  EXPECT_EQ(o->find_key("tokenizer.ggml.tokens")->items.size(), 1000u);
  EXPECT_EQ(o->find_key("tokenizer.ggml.model")->str, "llama");
  EXPECT_EQ(o->find_key("tokenizer.ggml.bos_token_id")->u, 1u);
  EXPECT_EQ(o->find_key("general.name")->str, "m");
  // A vocabulary of another size is refused.
  write_gguf(dir_.file("small.gguf"),
             {{"tokenizer.ggml.model", GgufValue::of_string("llama")},
              {"tokenizer.ggml.tokens",
               GgufValue::of_array(GgufType::String, {GgufValue::of_string("a")})}},
             {}, false);
  const auto bad = run_qpack("convert " + q(model_) + " " + q(dir_.file("x.gguf")) +
                             " --type Q8_0 --vocab-from " + q(dir_.file("small.gguf")));
  EXPECT_EQ(bad.exit_code, 3) << bad.output;
  EXPECT_NE(bad.output.find("has 1 tokens, config.json's vocab_size is 1000"), std::string::npos)
      << bad.output;
  EXPECT_FALSE(test::run_command("test -e " + q(dir_.file("x.gguf"))).exit_code == 0);
}

void expect_refused(const std::string& args, int exit_code, const std::string& words,
                    const std::string& dir, const std::vector<std::string>& before) {
  const auto r = run_qpack(args);
  EXPECT_EQ(r.exit_code, exit_code) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(words), std::string::npos) << args << "\n" << r.output;
  EXPECT_EQ(entries(dir), before) << args;  // nothing written, no temporary file left
}

TEST_F(GgufExport, BadInputsAreClearErrorsAndWriteNothing) {
  const std::string out = q(dir_.file("out.gguf"));
  const auto before = entries(dir_.path());
  expect_refused("convert " + q(model_) + " " + out + " --type Q4_X", 2,
                 "unknown GGUF --type 'Q4_X'", dir_.path(), before);
  expect_refused("convert " + q(model_) + " " + out + " --type Q4_0 --tensor-type attn_v", 2,
                 "is not PATTERN=TYPE", dir_.path(), before);
  expect_refused("convert " + q(model_) + " " + out + " --type Q4_0 --tensor-type attn_v=Q9_9", 2,
                 "'Q9_9' is not a ggml type name", dir_.path(), before);
  // A type the rules allow but qpack cannot write: named with its tensor.
  expect_refused("convert " + q(model_) + " " + out +
                     " --type Q8_0 --pure --tensor-type 'blk\\.1\\.attn_v=iq4_nl'",
                 3, "tensor 'blk.1.attn_v.weight': IQ4_NL is a ggml type qpack cannot write yet",
                 dir_.path(), before);
  expect_refused("convert " + q(model_) + " " + out + " --type Q8_0 --bits 8", 2,
                 "--bits is not an option for GGUF output", dir_.path(), before);
  expect_refused("convert " + q(model_) + " " + q(dir_.file("o.qpack")) + " --type Q8_0", 2,
                 "--type is not an option for .qpack output", dir_.path(), before);

  // config.json problems: the family, a missing key, heads.
  const std::string cfg_path = model_ + "/config.json";
  const json cfg = json::parse(test::read_file(cfg_path));
  auto with = [&](const json& c) { test::write_file(cfg_path, c.dump()); };
  json c = cfg;
  c["model_type"] = "gpt_neox";
  c["architectures"] = {"GPTNeoXForCausalLM"};
  with(c);
  expect_refused("convert " + q(model_) + " " + out + " --type Q8_0", 3,
                 "model type 'gpt_neox' (GPTNeoXForCausalLM) is not one qpack writes as GGUF",
                 dir_.path(), before);
  c = cfg;
  c.erase("rms_norm_eps");
  with(c);
  expect_refused("convert " + q(model_) + " " + out + " --type Q8_0", 3,
                 "missing required key 'rms_norm_eps'", dir_.path(), before);
  c = cfg;
  c["num_attention_heads"] = 6;
  c["num_key_value_heads"] = 2;
  with(c);
  expect_refused("convert " + q(model_) + " " + out + " --type Q8_0", 3,
                 "num_attention_heads (6) does not divide hidden_size (256)", dir_.path(), before);
  c = cfg;
  c["num_key_value_heads"] = 4;  // k_proj has 2 heads' rows
  with(c);
  expect_refused("convert " + q(model_) + " " + out + " --type Q8_0", 3,
                 "tensor 'model.layers.0.self_attn.k_proj.weight': shape [64, 256], config.json "
                 "implies [128, 256]",
                 dir_.path(), before);
  with(cfg);

  // An existing output is kept unless --force.
  test::write_file(dir_.file("out.gguf"), std::string("keep me"));
  const auto kept = entries(dir_.path());
  expect_refused("convert " + q(model_) + " " + out + " --type Q8_0", 5, "exists", dir_.path(),
                 kept);
  EXPECT_EQ(test::read_file(dir_.file("out.gguf")).size(), 7u);
  const auto forced = run_qpack("convert " + q(model_) + " " + out + " --type Q8_0 -q --force");
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_GT(test::read_file(dir_.file("out.gguf")).size(), 7u);
}

// A one-layer BF16 model written here: 64 wide, 4 heads over 2, q/k/v biases,
// optionally without lm_head (tied). Row r of every tensor holds values that
// name it, so a moved row is seen.
struct SmallModel {
  std::map<std::string, std::vector<uint8_t>> data;  // HF name -> BF16 bytes
  std::map<std::string, std::vector<int64_t>> shape;
};

SmallModel write_small_model(const std::string& dir, const std::string& model_type, bool tied) {
  std::filesystem::create_directories(dir);
  SmallModel m;
  const int64_t h = 64, kv = 32, ff = 96, v = 32;
  std::vector<std::pair<std::string, std::vector<int64_t>>> specs = {
      {"model.embed_tokens.weight", {v, h}},
      {"model.layers.0.input_layernorm.weight", {h}},
      {"model.layers.0.self_attn.q_proj.weight", {h, h}},
      {"model.layers.0.self_attn.q_proj.bias", {h}},
      {"model.layers.0.self_attn.k_proj.weight", {kv, h}},
      {"model.layers.0.self_attn.k_proj.bias", {kv}},
      {"model.layers.0.self_attn.v_proj.weight", {kv, h}},
      {"model.layers.0.self_attn.v_proj.bias", {kv}},
      {"model.layers.0.self_attn.o_proj.weight", {h, h}},
      {"model.layers.0.self_attn.rotary_emb.inv_freq", {8}},
      {"model.layers.0.post_attention_layernorm.weight", {h}},
      {"model.layers.0.mlp.gate_proj.weight", {ff, h}},
      {"model.layers.0.mlp.up_proj.weight", {ff, h}},
      {"model.layers.0.mlp.down_proj.weight", {h, ff}},
      {"model.norm.weight", {h}}};
  if (!tied) specs.push_back({"lm_head.weight", {v, h}});
  std::vector<TensorToWrite> w;
  int k = 0;
  for (const auto& [name, sh] : specs) {
    uint64_t n = 1;
    for (auto d : sh) n *= uint64_t(d);
    auto& b = m.data[name];
    b.resize(2 * n);
    const uint64_t cols = sh.size() == 2 ? uint64_t(sh[1]) : 1;
    for (uint64_t i = 0; i < n; ++i) {
      const float val = float(k) + float(i / cols) / 128.0f + float(i % cols) / 65536.0f;
      const uint16_t bits = f32_to_bf16_rne(val);
      std::memcpy(&b[2 * i], &bits, 2);
    }
    m.shape[name] = sh;
    w.push_back({name, DType::BF16, sh, b.data(), b.size()});
    ++k;
  }
  write_safetensors(dir + "/model.safetensors", w, {}, false);
  json cfg = {{"model_type", model_type},
              {"hidden_size", h},
              {"intermediate_size", ff},
              {"num_hidden_layers", 1},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"vocab_size", v},
              {"rms_norm_eps", 1e-6},
              {"max_position_embeddings", 128},
              {"tie_word_embeddings", tied}};
  if (model_type == "qwen2") cfg["rope_theta"] = 1000000.0;
  test::write_file(dir + "/config.json", cfg.dump());
  return m;
}

// GGUF row g of `name` as HF rows: permuted for llama q/k, else the same.
void expect_rows(const GgufFile& f, const SmallModel& m, const std::string& hf,
                 const std::string& gguf, int64_t heads) {
  SCOPED_TRACE(gguf);
  const GgufTensorInfo* t = f.find(gguf);
  ASSERT_NE(t, nullptr);
  const auto& sh = m.shape.at(hf);
  const auto& src = m.data.at(hf);
  const int64_t rows = sh[0];
  const uint64_t row_elems = src.size() / 2 / uint64_t(rows);
  const bool one_d = sh.size() == 1;
  ASSERT_EQ(t->type, one_d ? GgmlType::F32 : GgmlType::BF16);
  const uint8_t* d = f.tensor_data(*t);
  for (int64_t g = 0; g < rows; ++g) {
    const int64_t r = heads ? llama_qk_hf_row(g, rows, heads) : g;
    for (uint64_t c = 0; c < row_elems; ++c) {
      uint16_t b;
      std::memcpy(&b, &src[2 * (uint64_t(r) * row_elems + c)], 2);
      if (one_d) {
        float got;
        std::memcpy(&got, d + 4 * (uint64_t(g) * row_elems + c), 4);
        ASSERT_EQ(got, bf16_to_f32(b)) << "row " << g;
      } else {
        uint16_t got;
        std::memcpy(&got, d + 2 * (uint64_t(g) * row_elems + c), 2);
        ASSERT_EQ(got, b) << "row " << g;
      }
    }
  }
}

TEST(GgufExportFamilies, LlamaBiasesPermutedQwen2NotTiedHasNoOutput) {
  test::TempDir dir;
  for (const char* family : {"llama", "mistral", "qwen2"}) {
    SCOPED_TRACE(family);
    const bool llama_like = std::string(family) != "qwen2";
    const std::string md = dir.file(family);
    const SmallModel m = write_small_model(md, family, !llama_like);
    const std::string out = dir.file(std::string(family) + ".gguf");
    const auto r = run_qpack("convert " + q(md) + " " + q(out) + " --type BF16 -q");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto f = GgufFile::open(out);
    const std::string arch = llama_like ? "llama" : "qwen2";
    EXPECT_EQ(f->find_key("general.architecture")->str, arch);
    EXPECT_EQ(f->find_key("general.file_type")->u, 32u);
    EXPECT_EQ(f->find_key(arch + ".attention.head_count_kv")->u, 2u);
    EXPECT_EQ(f->find_key(arch + ".rope.dimension_count") != nullptr, llama_like);
    const int64_t hq = llama_like ? 4 : 0, hk = llama_like ? 2 : 0;
    expect_rows(*f, m, "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", hq);
    expect_rows(*f, m, "model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias", hq);
    expect_rows(*f, m, "model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", hk);
    expect_rows(*f, m, "model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias", hk);
    expect_rows(*f, m, "model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight", 0);
    expect_rows(*f, m, "model.layers.0.self_attn.v_proj.bias", "blk.0.attn_v.bias", 0);
    expect_rows(*f, m, "model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", 0);
    expect_rows(*f, m, "model.norm.weight", "output_norm.weight", 0);
    EXPECT_EQ(f->find("output.weight") != nullptr, llama_like);
    EXPECT_EQ(f->find("blk.0.rotary_emb.inv_freq"), nullptr);
    EXPECT_EQ(f->tensors().size(), llama_like ? 15u : 14u);
  }
}

TEST(GgufExportSource, UnknownTensorIsNamed) {
  test::TempDir dir;
  const std::string m = dir.file("m");
  test::run_testgen("llama " + q(m) + " --hidden 64 --intermediate 128 --layers 1 --vocab 64");
  // Rename a tensor in place: same length, so the header stays valid.
  auto bytes = test::read_file(m + "/model.safetensors");
  const std::string from = "model.norm.weight", to = "model.nrom.weight";
  std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos);
  s.replace(at, from.size(), to);
  test::write_file(m + "/model.safetensors", s);
  const auto r = run_qpack("convert " + q(m) + " " + q(dir.file("o.gguf")) + " --type F16");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("tensor 'model.nrom.weight': not a tensor of a llama model"),
            std::string::npos)
      << r.output;
}

TEST(Testgen, HeadsDefaultsAndChecks) {
  test::TempDir dir;
  test::run_testgen("llama " + q(dir.file("a")) +
                    " --hidden 256 --intermediate 128 --layers 1 --vocab 64");
  const json a = json::parse(test::read_file(dir.file("a") + "/config.json"));
  EXPECT_EQ(a["num_attention_heads"], 4);  // the largest divisor of 256 <= 256/64
  EXPECT_EQ(a["num_key_value_heads"], 4);
  EXPECT_EQ(a["tie_word_embeddings"], false);
  EXPECT_EQ(a["max_position_embeddings"], 2048);
  EXPECT_EQ(a["architectures"], json({"LlamaForCausalLM"}));
  test::run_testgen("llama " + q(dir.file("b")) +
                    " --hidden 96 --intermediate 128 --layers 1 --vocab 64");
  EXPECT_EQ(json::parse(test::read_file(dir.file("b") + "/config.json"))["num_attention_heads"], 1);
  test::run_testgen("llama " + q(dir.file("c")) +
                    " --hidden 960 --intermediate 128 --layers 1 --vocab 64");
  EXPECT_EQ(json::parse(test::read_file(dir.file("c") + "/config.json"))["num_attention_heads"],
            15);
  const std::string tg = QPACK_TESTGEN;
  auto r = test::run_command(tg + " llama " + q(dir.file("d")) + " --hidden 256 --heads 6 2>&1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--heads 6 does not divide --hidden 256"), std::string::npos) << r.output;
  r = test::run_command(tg + " llama " + q(dir.file("e")) +
                        " --hidden 256 --heads 8 --kv-heads 3 2>&1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--kv-heads 3 does not divide --heads 8"), std::string::npos) << r.output;
  test::run_testgen("llama " + q(dir.file("f")) +
                    " --hidden 64 --intermediate 128 --layers 1 --vocab 64 --tied");
  const json f = json::parse(test::read_file(dir.file("f") + "/config.json"));
  EXPECT_EQ(f["tie_word_embeddings"], true);
  const auto st = test::read_file(dir.file("f") + "/model.safetensors");
  EXPECT_EQ(std::string(st.begin(), st.end()).find("lm_head"), std::string::npos);
}

}  // namespace
}  // namespace qpack
