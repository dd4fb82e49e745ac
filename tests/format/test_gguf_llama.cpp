// HF Llama family -> GGUF mapping (qpack/format/gguf_llama.hpp): the Q/K
// permutation against numpy's reshape/swapaxes (skipped without numpy) and
// hand-checked maps, tensor names both ways, config.json to keys, and each
// bad config its own clear error.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "qpack/format/error.hpp"
#include "qpack/format/gguf_llama.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using nlohmann::json;

bool have_numpy() {
  static const bool ok =
      test::run_command(std::string(QPACK_PYTHON) + " -c 'import numpy' 2>/dev/null").exit_code ==
      0;
  return ok;
}

json run_python(const std::string& script) {
  test::TempDir dir;
  test::write_file(dir.file("ref.py"), script);
  const auto r =
      test::run_command(std::string(QPACK_PYTHON) + " " + dir.file("ref.py") + " 2>/dev/null");
  if (r.exit_code != 0) throw std::runtime_error("python: " + r.output);
  return json::parse(r.output);
}

// --- the permutation ---

TEST(LlamaPermute, HandCheckedMaps) {
  // Two heads of 4 rows: each head's halves (0 1 | 2 3) interleave to 0 2 1 3.
  EXPECT_EQ(llama_qk_hf_rows(8, 2), (std::vector<int64_t>{0, 2, 1, 3, 4, 6, 5, 7}));
  // One head of 12 rows: 0 6 1 7 2 8 ...
  EXPECT_EQ(llama_qk_hf_rows(12, 1), (std::vector<int64_t>{0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11}));
  // Pairs of rows per head: nothing moves.
  EXPECT_EQ(llama_qk_hf_rows(6, 3), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(llama_qk_gguf_rows(8, 2), (std::vector<int64_t>{0, 2, 1, 3, 4, 6, 5, 7}));
  EXPECT_EQ(llama_qk_gguf_rows(12, 1),
            (std::vector<int64_t>{0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11}));
}

TEST(LlamaPermute, InverseUndoesIt) {
  for (auto [rows, heads] : std::vector<std::pair<int64_t, int64_t>>{
           {8, 2}, {64, 4}, {96, 3}, {4096, 32}, {1024, 8}, {2, 1}, {640, 5}}) {
    const auto fwd = llama_qk_hf_rows(rows, heads);
    const auto inv = llama_qk_gguf_rows(rows, heads);
    std::set<int64_t> seen(fwd.begin(), fwd.end());
    EXPECT_EQ(seen.size(), size_t(rows)) << rows << " " << heads;
    for (int64_t g = 0; g < rows; ++g) {
      ASSERT_EQ(inv[size_t(fwd[size_t(g)])], g) << rows << " " << heads;
      ASSERT_EQ(llama_qk_hf_row(g, rows, heads), fwd[size_t(g)]);
      ASSERT_EQ(llama_qk_gguf_row(fwd[size_t(g)], rows, heads), g);
    }
  }
}

TEST(LlamaPermute, MatchesNumpyReshapeSwapaxes) {
  if (!have_numpy()) GTEST_SKIP() << "python3 cannot import numpy";
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {8, 2}, {64, 4}, {96, 3}, {256, 8}, {4096, 32}, {1024, 8}, {2, 1}, {640, 5}, {120, 6}};
  std::string script = "import json, numpy as np\nout = []\n";
  for (auto [rows, heads] : shapes) {
    // llama.cpp's LlamaModel.permute on a [rows, 3] matrix whose row r holds r.
    script += "w = np.repeat(np.arange(" + std::to_string(rows) + ")[:, None], 3, axis=1)\n";
    script += "n = " + std::to_string(heads) + "\n";
    script +=
        "p = w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2)"
        ".reshape(w.shape)\n";
    script += "out.append([int(x) for x in p[:, 0]])\n";
  }
  script += "print(json.dumps(out))\n";
  const json ref = run_python(script);
  ASSERT_EQ(ref.size(), shapes.size());
  for (size_t k = 0; k < shapes.size(); ++k) {
    EXPECT_EQ(llama_qk_hf_rows(shapes[k].first, shapes[k].second),
              ref[k].get<std::vector<int64_t>>())
        << shapes[k].first << " rows, " << shapes[k].second << " heads";
  }
}

TEST(LlamaPermute, RowsNotPairedPerHeadAreRefused) {
  for (auto [rows, heads] :
       std::vector<std::pair<int64_t, int64_t>>{{6, 2}, {7, 1}, {0, 1}, {8, 0}, {12, 8}}) {
    EXPECT_THROW(llama_qk_hf_rows(rows, heads), Error) << rows << " " << heads;
    EXPECT_THROW(llama_qk_gguf_rows(rows, heads), Error) << rows << " " << heads;
  }
}

// --- tensor names ---

TEST(LlamaNames, EveryHfNameMapsAndBack) {
  const std::map<std::string, std::string> expected = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
      {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
      {"model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"},
      {"model.layers.7.self_attn.q_proj.weight", "blk.7.attn_q.weight"},
      {"model.layers.7.self_attn.k_proj.weight", "blk.7.attn_k.weight"},
      {"model.layers.7.self_attn.v_proj.weight", "blk.7.attn_v.weight"},
      {"model.layers.7.self_attn.o_proj.weight", "blk.7.attn_output.weight"},
      {"model.layers.12.self_attn.q_proj.bias", "blk.12.attn_q.bias"},
      {"model.layers.12.self_attn.k_proj.bias", "blk.12.attn_k.bias"},
      {"model.layers.12.self_attn.v_proj.bias", "blk.12.attn_v.bias"},
      {"model.layers.31.mlp.gate_proj.weight", "blk.31.ffn_gate.weight"},
      {"model.layers.31.mlp.up_proj.weight", "blk.31.ffn_up.weight"},
      {"model.layers.31.mlp.down_proj.weight", "blk.31.ffn_down.weight"},
  };
  for (const auto& [hf, gguf] : expected) {
    const LlamaTensorName n = llama_gguf_tensor_name(hf);
    EXPECT_EQ(n.mapping, LlamaTensorMapping::Mapped) << hf;
    EXPECT_EQ(n.gguf_name, gguf) << hf;
    EXPECT_EQ(llama_hf_tensor_name(gguf).value_or("<none>"), hf) << gguf;
    EXPECT_LT(n.gguf_name.size(), 64u);
  }
  EXPECT_EQ(llama_gguf_tensor_name("model.layers.31.mlp.down_proj.weight").layer, 31);
  EXPECT_EQ(llama_gguf_tensor_name("lm_head.weight").layer, -1);
}

TEST(LlamaNames, DroppedAndUnknown) {
  EXPECT_EQ(llama_gguf_tensor_name("model.layers.3.self_attn.rotary_emb.inv_freq").mapping,
            LlamaTensorMapping::Dropped);
  for (const char* n :
       {"model.layers.03.mlp.up_proj.weight", "model.layers.x.mlp.up_proj.weight",
        "model.layers..mlp.up_proj.weight", "model.layers.1.mlp.up_proj", "transformer.wte.weight",
        "model.embed_tokens.bias", "model.layers.1.mlp.experts.0.w1.weight", ""}) {
    EXPECT_EQ(llama_gguf_tensor_name(n).mapping, LlamaTensorMapping::Unknown) << n;
  }
  for (const char* n : {"rope_freqs.weight", "blk.01.attn_q.weight", "blk.1.attn_qkv.weight",
                        "blk.attn_q.weight", "token_embd.bias"}) {
    EXPECT_FALSE(llama_hf_tensor_name(n).has_value()) << n;
  }
}

// --- config.json ---

json llama_config() {
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_size", 256},
              {"intermediate_size", 688},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 8},
              {"num_key_value_heads", 2},
              {"vocab_size", 1000},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 500000.0},
              {"max_position_embeddings", 2048},
              {"tie_word_embeddings", false}};
}

std::map<std::string, GgufValue> as_map(const std::vector<GgufKv>& kv) {
  std::map<std::string, GgufValue> m;
  for (const auto& e : kv) EXPECT_TRUE(m.emplace(e.key, e.value).second) << e.key;
  return m;
}

TEST(LlamaConfig, KeysAsConvertWritesThem) {
  const LlamaConfig c = parse_llama_config(llama_config(), "config.json");
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_TRUE(c.permute_qk);
  EXPECT_EQ(c.q_rows(), 256);
  EXPECT_EQ(c.kv_rows(), 64);
  const std::vector<GgufKv> kv = llama_gguf_metadata(c, "tiny");
  std::vector<std::string> keys;
  for (const auto& e : kv) keys.push_back(e.key);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "general.architecture", "general.name", "llama.block_count",
                      "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
                      "llama.attention.head_count", "llama.attention.head_count_kv",
                      "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                      "llama.vocab_size", "llama.rope.dimension_count"}));
  const auto m = as_map(kv);
  EXPECT_EQ(m.at("general.architecture"), GgufValue::of_string("llama"));
  EXPECT_EQ(m.at("general.name"), GgufValue::of_string("tiny"));
  EXPECT_EQ(m.at("llama.block_count"), GgufValue::of_u32(2));
  EXPECT_EQ(m.at("llama.context_length"), GgufValue::of_u32(2048));
  EXPECT_EQ(m.at("llama.embedding_length"), GgufValue::of_u32(256));
  EXPECT_EQ(m.at("llama.feed_forward_length"), GgufValue::of_u32(688));
  EXPECT_EQ(m.at("llama.attention.head_count"), GgufValue::of_u32(8));
  EXPECT_EQ(m.at("llama.attention.head_count_kv"), GgufValue::of_u32(2));
  EXPECT_EQ(m.at("llama.rope.freq_base"), GgufValue::of_f32(500000.0f));
  EXPECT_EQ(m.at("llama.attention.layer_norm_rms_epsilon"), GgufValue::of_f32(1e-5f));
  EXPECT_EQ(m.at("llama.vocab_size"), GgufValue::of_u32(1000));
  EXPECT_EQ(m.at("llama.rope.dimension_count"), GgufValue::of_u32(32));
  EXPECT_EQ(llama_permute_heads(c, "blk.0.attn_q.weight"), 8);
  EXPECT_EQ(llama_permute_heads(c, "blk.1.attn_k.weight"), 2);
  EXPECT_EQ(llama_permute_heads(c, "blk.1.attn_k.bias"), 2);
  EXPECT_EQ(llama_permute_heads(c, "blk.1.attn_v.weight"), 0);
  EXPECT_EQ(llama_permute_heads(c, "token_embd.weight"), 0);
}

TEST(LlamaConfig, KeyNamesAreGgufPys) {
  if (test::run_command(std::string(QPACK_PYTHON) + " -c 'import gguf' 2>/dev/null").exit_code != 0)
    GTEST_SKIP() << "python3 cannot import gguf";
  json cfg = llama_config();
  cfg["head_dim"] = 32;
  cfg["rope_scaling"] = {
      {"rope_type", "yarn"},    {"factor", 4.0},    {"original_max_position_embeddings", 512},
      {"beta_fast", 32.0},      {"beta_slow", 1.0}, {"extrapolation_factor", 1.0},
      {"attention_factor", 1.0}};
  const auto kv = llama_gguf_metadata(parse_llama_config(cfg, "config.json"), "x");
  const json ref = run_python(
      "import json, gguf\nK = gguf.Keys\na = 'llama'\n"
      "print(json.dumps([K.General.ARCHITECTURE, K.General.NAME, K.LLM.BLOCK_COUNT.format(arch=a),"
      "K.LLM.CONTEXT_LENGTH.format(arch=a), K.LLM.EMBEDDING_LENGTH.format(arch=a),"
      "K.LLM.FEED_FORWARD_LENGTH.format(arch=a), K.Attention.HEAD_COUNT.format(arch=a),"
      "K.Attention.HEAD_COUNT_KV.format(arch=a), K.Rope.SCALING_TYPE.format(arch=a),"
      "K.Rope.SCALING_FACTOR.format(arch=a), K.Rope.SCALING_ORIG_CTX_LEN.format(arch=a),"
      "K.Rope.SCALING_YARN_EXT_FACTOR.format(arch=a), "
      "K.Rope.SCALING_YARN_ATTN_FACTOR.format(arch=a),"
      "K.Rope.SCALING_YARN_BETA_FAST.format(arch=a), K.Rope.SCALING_YARN_BETA_SLOW.format(arch=a),"
      "K.Rope.FREQ_BASE.format(arch=a), K.Attention.LAYERNORM_RMS_EPS.format(arch=a),"
      "K.Attention.KEY_LENGTH.format(arch=a), K.Attention.VALUE_LENGTH.format(arch=a),"
      "K.LLM.VOCAB_SIZE.format(arch=a), K.Rope.DIMENSION_COUNT.format(arch=a)]))\n");
  std::vector<std::string> keys;
  for (const auto& e : kv) keys.push_back(e.key);
  EXPECT_EQ(keys, ref.get<std::vector<std::string>>());
  const auto m = as_map(kv);
  EXPECT_EQ(m.at("llama.rope.scaling.type"), GgufValue::of_string("yarn"));
  EXPECT_EQ(m.at("llama.rope.scaling.factor"), GgufValue::of_f32(4.0f));
  EXPECT_EQ(m.at("llama.rope.scaling.original_context_length"), GgufValue::of_u32(512));
}

TEST(LlamaConfig, MistralIsLlamaQwen2IsItsOwn) {
  json m = llama_config();
  m["model_type"] = "mistral";
  m["architectures"] = {"MistralForCausalLM"};
  const LlamaConfig mc = parse_llama_config(m, "c");
  EXPECT_EQ(mc.architecture, "llama");
  EXPECT_TRUE(mc.permute_qk);
  json q = llama_config();
  q["model_type"] = "qwen2";
  q["architectures"] = {"Qwen2ForCausalLM"};
  q["tie_word_embeddings"] = true;
  const LlamaConfig qc = parse_llama_config(q, "c");
  EXPECT_EQ(qc.architecture, "qwen2");
  EXPECT_FALSE(qc.permute_qk);
  EXPECT_TRUE(qc.tie_word_embeddings);
  EXPECT_EQ(llama_permute_heads(qc, "blk.0.attn_q.weight"), 0);
  const auto keys = as_map(llama_gguf_metadata(qc, ""));
  EXPECT_EQ(keys.count("general.name"), 0u);
  EXPECT_EQ(keys.count("qwen2.rope.dimension_count"), 0u);
  EXPECT_EQ(keys.at("qwen2.attention.head_count"), GgufValue::of_u32(8));
  // Without model_type, architectures[0] decides.
  json a = llama_config();
  a.erase("model_type");
  EXPECT_EQ(parse_llama_config(a, "c").model_type, "llama");
}

TEST(LlamaConfig, RopeScalingTypes) {
  json c = llama_config();
  c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto m = as_map(llama_gguf_metadata(parse_llama_config(c, "c"), ""));
  EXPECT_EQ(m.at("llama.rope.scaling.type"), GgufValue::of_string("linear"));
  EXPECT_EQ(m.at("llama.rope.scaling.factor"), GgufValue::of_f32(2.0f));
  c["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  c["hidden_size"] = 4096;
  c["num_attention_heads"] = 32;
  c["num_key_value_heads"] = 8;
  const LlamaConfig l3 = parse_llama_config(c, "c");
  m = as_map(llama_gguf_metadata(l3, ""));
  EXPECT_EQ(m.count("llama.rope.scaling.type"), 0u);
  const std::vector<float> f = llama3_rope_factors(l3);
  ASSERT_EQ(f.size(), 64u);
  // High frequencies untouched, the lowest scaled by the factor, smooth between.
  EXPECT_EQ(f.front(), 1.0f);
  EXPECT_EQ(f.back(), 8.0f);
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);
  c["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_EQ(
      as_map(llama_gguf_metadata(parse_llama_config(c, "c"), "")).count("llama.rope.scaling.type"),
      0u);
  c["rope_scaling"] = {{"rope_type", "mrope"}};
  EXPECT_THROW(parse_llama_config(c, "c"), Error);
}

void expect_bad(const json& cfg, const std::string& words) {
  try {
    parse_llama_config(cfg, "m/config.json");
    ADD_FAILURE() << "accepted: " << cfg.dump();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::BadMetadata) << e.what();
    EXPECT_EQ(e.file(), "m/config.json");
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(LlamaConfig, BadConfigsEachSayWhy) {
  json c = llama_config();
  c["model_type"] = "gpt2";
  c["architectures"] = {"GPT2LMHeadModel"};
  expect_bad(c, "'gpt2' (GPT2LMHeadModel) is not one qpack writes as GGUF");
  c = llama_config();
  c["model_type"] = "mixtral";
  expect_bad(c, "'mixtral'");
  c = llama_config();
  c.erase("model_type");
  c.erase("architectures");
  expect_bad(c, "neither 'model_type' nor 'architectures'");
  for (const char* key :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "vocab_size", "rms_norm_eps", "max_position_embeddings"}) {
    c = llama_config();
    c.erase(key);
    expect_bad(c, std::string("missing required key '") + key + "'");
  }
  c = llama_config();
  c["num_attention_heads"] = 7;
  c["num_key_value_heads"] = 7;
  expect_bad(c, "num_attention_heads (7) does not divide hidden_size (256)");
  c = llama_config();
  c["num_key_value_heads"] = 3;
  expect_bad(c, "num_key_value_heads (3) does not divide num_attention_heads (8)");
  c = llama_config();
  c["hidden_size"] = "256";
  expect_bad(c, "'hidden_size' must be an integer");
  c = llama_config();
  c["num_hidden_layers"] = 0;
  expect_bad(c, "'num_hidden_layers' must be in 1..");
  c = llama_config();
  c["vocab_size"] = 1ll << 33;
  expect_bad(c, "'vocab_size' must be in 1..");
  c = llama_config();
  c["rms_norm_eps"] = -1.0;
  expect_bad(c, "'rms_norm_eps' must be positive");
  c = llama_config();
  c["head_dim"] = 31;
  expect_bad(c, "head dimension 31 is odd");
  c = llama_config();
  c["tie_word_embeddings"] = 1;
  expect_bad(c, "'tie_word_embeddings' must be true or false");
  c = llama_config();
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_bad(c, "missing required key 'original_max_position_embeddings'");
  expect_bad(json::array(), "not a JSON object");
}

TEST(LlamaConfig, ReadsTheFileStrictly) {
  test::TempDir dir;
  test::write_file(dir.file("config.json"), llama_config().dump());
  EXPECT_EQ(read_llama_config(dir.file("config.json")).num_kv_heads, 2);
  test::write_file(dir.file("dup.json"), "{\"hidden_size\": 1, \"hidden_size\": 2}");
  EXPECT_THROW(read_llama_config(dir.file("dup.json")), Error);
  EXPECT_THROW(read_llama_config(dir.file("missing.json")), Error);
}

}  // namespace
}  // namespace qpack
