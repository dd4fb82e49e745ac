// The GGUF type rules (choose_gguf_types) against tables written by hand
// from llama.cpp's src/llama-quant.cpp for a small Llama shape: 8 layers
// (use_more_bits picks layers 0, 3, 6, 7), 8 heads over 2 kv heads (n_gqa
// 4), ffn rows of 704 (a multiple of 32, not of 256: the K-quant fallbacks).
#include <gtest/gtest.h>

#include <map>

#include "qpack/converter/export_gguf.hpp"
#include "qpack/format/error.hpp"

namespace qpack {
namespace {

using T = GgmlType;

std::vector<GgufTypeTensor> llama_tensors(bool tied, int64_t ff = 704, int64_t vocab = 1000) {
  std::vector<GgufTypeTensor> t;
  if (!tied) t.push_back({"output.weight", {256, vocab}, T::F16});
  t.push_back({"output_norm.weight", {256}, T::F32});
  t.push_back({"token_embd.weight", {256, vocab}, T::F16});
  for (int l = 0; l < 8; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_k.weight", {256, 64}, T::F16});
    t.push_back({p + "attn_norm.weight", {256}, T::F32});
    t.push_back({p + "attn_output.weight", {256, 256}, T::F16});
    t.push_back({p + "attn_q.weight", {256, 256}, T::F16});
    t.push_back({p + "attn_v.weight", {256, 64}, T::F16});
    t.push_back({p + "ffn_down.weight", {ff, 256}, T::F16});
    t.push_back({p + "ffn_gate.weight", {256, ff}, T::F16});
    t.push_back({p + "ffn_norm.weight", {256}, T::F32});
    t.push_back({p + "ffn_up.weight", {256, ff}, T::F16});
  }
  return t;
}

GgufTypeModel llama_model() {
  GgufTypeModel m;
  m.architecture = "llama";
  m.n_layer = 8;
  m.n_head = 8;
  m.n_head_kv = 2;
  return m;
}

// The expected type of each tensor: `other` for every quantized weight not
// listed, attn_v and ffn_down by layer.
struct Table {
  T output, token_embd, other;
  T attn_output;
  std::vector<T> attn_v, ffn_down;  // per layer
};

void check(const std::string& ftype, const Table& want, bool tied = false, bool pure = false,
           const std::vector<GgufTensorTypeRule>& rules = {}) {
  SCOPED_TRACE(ftype);
  const auto tensors = llama_tensors(tied);
  const auto got =
      choose_gguf_types(llama_model(), tensors, find_gguf_file_type(ftype), pure, rules);
  ASSERT_EQ(got.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string& n = tensors[i].name;
    T w = want.other;
    int layer = -1;
    std::sscanf(n.c_str(), "blk.%d.", &layer);
    if (n.find("norm") != std::string::npos)
      w = T::F32;
    else if (n == "output.weight")
      w = want.output;
    else if (n == "token_embd.weight")
      w = want.token_embd;
    else if (n.find("attn_v") != std::string::npos)
      w = want.attn_v[size_t(layer)];
    else if (n.find("ffn_down") != std::string::npos)
      w = want.ffn_down[size_t(layer)];
    else if (n.find("attn_output") != std::string::npos)
      w = want.attn_output;
    EXPECT_EQ(ggml_type_name(got[i].type), std::string(ggml_type_name(w)))
        << n << " (" << got[i].reason << ")";
    EXPECT_EQ(got[i].quantizable, n.find("norm") == std::string::npos) << n;
  }
}

// use_more_bits(i, 8): layers 0, 3, 6, 7.
std::vector<T> by_more_bits(T more, T rest) {
  return {more, rest, rest, more, rest, rest, more, more};
}
std::vector<T> all(T t) { return std::vector<T>(8, t); }

TEST(GgufTypeRules, Q4_K_M) {
  // attn_v and ffn_down get Q6_K in the use_more_bits layers; ffn_down's rows
  // of 704 fall back: Q6_K -> Q8_0, Q4_K -> Q5_0.
  check("Q4_K_M", {T::Q6_K, T::Q4_K, T::Q4_K, T::Q4_K, by_more_bits(T::Q6_K, T::Q4_K),
                   by_more_bits(T::Q8_0, T::Q5_0)});
  check("q4_k", {T::Q6_K, T::Q4_K, T::Q4_K, T::Q4_K, by_more_bits(T::Q6_K, T::Q4_K),
                 by_more_bits(T::Q8_0, T::Q5_0)});  // the alias
}

TEST(GgufTypeRules, Q4_K_S) {
  check("Q4_K_S", {T::Q6_K,
                   T::Q4_K,
                   T::Q4_K,
                   T::Q4_K,
                   {T::Q5_K, T::Q5_K, T::Q5_K, T::Q5_K, T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K},
                   // ffn_down layer < 8/8 = 1: Q5_K -> Q5_1; the rest Q4_K -> Q5_0
                   {T::Q5_1, T::Q5_0, T::Q5_0, T::Q5_0, T::Q5_0, T::Q5_0, T::Q5_0, T::Q5_0}});
}

TEST(GgufTypeRules, Q5_K_M_and_Q5_K_S) {
  check("Q5_K_M", {T::Q6_K, T::Q5_K, T::Q5_K, T::Q5_K, by_more_bits(T::Q6_K, T::Q5_K),
                   by_more_bits(T::Q8_0, T::Q5_1)});
  check("Q5_K_S", {T::Q6_K, T::Q5_K, T::Q5_K, T::Q5_K, all(T::Q5_K), all(T::Q5_1)});
}

TEST(GgufTypeRules, Q3_K_mixes) {
  // Q3_K_M: the first two attn_v Q5_K, then Q4_K; ffn_down Q4_K (layer <
  // 8/16 = 0: none Q5_K) -> Q5_0; attn_output Q4_K.
  check("Q3_K_M", {T::Q6_K,
                   T::Q3_K,
                   T::Q3_K,
                   T::Q4_K,
                   {T::Q5_K, T::Q5_K, T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K},
                   all(T::Q5_0)});
  check("Q3_K", {T::Q6_K,
                 T::Q3_K,
                 T::Q3_K,
                 T::Q4_K,
                 {T::Q5_K, T::Q5_K, T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K},
                 all(T::Q5_0)});
  check("Q3_K_L", {T::Q6_K, T::Q3_K, T::Q3_K, T::Q5_K, all(T::Q5_K), all(T::Q5_1)});
  check("Q3_K_S", {T::Q6_K, T::Q3_K, T::Q3_K, T::Q3_K, all(T::Q3_K), all(T::Q4_0)});
}

TEST(GgufTypeRules, Q2_K) {
  // n_gqa 4: attn_v Q4_K; ffn_down Q3_K -> Q4_0 (704); attn_output Q3_K.
  check("Q2_K", {T::Q6_K, T::Q2_K, T::Q2_K, T::Q3_K, all(T::Q4_K), all(T::Q4_0)});
}

TEST(GgufTypeRules, SingleTypeFileTypes) {
  // llama-quantize's legacy file types give output.weight Q6_K.
  check("Q4_0", {T::Q6_K, T::Q4_0, T::Q4_0, T::Q4_0, all(T::Q4_0), all(T::Q4_0)});
  check("Q4_1", {T::Q6_K, T::Q4_1, T::Q4_1, T::Q4_1, all(T::Q4_1), all(T::Q4_1)});
  check("Q5_1", {T::Q6_K, T::Q5_1, T::Q5_1, T::Q5_1, all(T::Q5_1), all(T::Q5_1)});
  check("Q6_K", {T::Q6_K, T::Q6_K, T::Q6_K, T::Q6_K, all(T::Q6_K), all(T::Q8_0)});
  check("Q8_0", {T::Q8_0, T::Q8_0, T::Q8_0, T::Q8_0, all(T::Q8_0), all(T::Q8_0)});
  check("F16", {T::F16, T::F16, T::F16, T::F16, all(T::F16), all(T::F16)});
  check("BF16", {T::BF16, T::BF16, T::BF16, T::BF16, all(T::BF16), all(T::BF16)});
}

TEST(GgufTypeRules, TiedEmbeddingsTakeTheOutputRule) {
  check("Q4_1", {T::Q6_K, T::Q6_K, T::Q4_1, T::Q4_1, all(T::Q4_1), all(T::Q4_1)}, true);
  check("Q8_0", {T::Q8_0, T::Q8_0, T::Q8_0, T::Q8_0, all(T::Q8_0), all(T::Q8_0)}, true);
}

TEST(GgufTypeRules, Pure) {
  check("Q4_K_M", {T::Q4_K, T::Q4_K, T::Q4_K, T::Q4_K, all(T::Q4_K), all(T::Q5_0)}, false, true);
  check("Q4_1", {T::Q4_1, T::Q4_1, T::Q4_1, T::Q4_1, all(T::Q4_1), all(T::Q4_1)}, true, true);
}

TEST(GgufTypeRules, TensorTypeOverridesFirstMatchAndTheCounters) {
  // attn_v everywhere Q8_0; everything quantizable of layer 0 Q5_0. A manual
  // override skips the mix rule and its counter, as in llama.cpp: layer 0's
  // ffn_down is not counted, so layer L's ffn_down is counted as L - 1.
  std::vector<GgufTensorTypeRule> rules = {parse_gguf_tensor_type_rule("attn_v=q8_0"),
                                           parse_gguf_tensor_type_rule("BLK\\.0\\.=Q5_0")};
  EXPECT_EQ(rules[1].pattern, "blk\\.0\\.");  // lower-cased, as llama-quantize does
  const auto tensors = llama_tensors(false);
  const auto got =
      choose_gguf_types(llama_model(), tensors, find_gguf_file_type("Q4_K_M"), false, rules);
  std::map<std::string, T> m;
  for (size_t i = 0; i < tensors.size(); ++i) m[tensors[i].name] = got[i].type;
  for (int l = 0; l < 8; ++l) EXPECT_EQ(m["blk." + std::to_string(l) + ".attn_v.weight"], T::Q8_0);
  EXPECT_EQ(m["blk.0.attn_q.weight"], T::Q5_0);
  EXPECT_EQ(m["blk.0.attn_norm.weight"], T::F32);
  EXPECT_EQ(m["blk.1.attn_q.weight"], T::Q4_K);
  const std::vector<T> down = {T::Q5_0, T::Q8_0, T::Q5_0, T::Q5_0,
                               T::Q8_0, T::Q5_0, T::Q5_0, T::Q8_0};
  for (int l = 0; l < 8; ++l)
    EXPECT_EQ(ggml_type_name(m["blk." + std::to_string(l) + ".ffn_down.weight"]),
              std::string(ggml_type_name(down[size_t(l)])))
        << l;
  // Overrides are ignored for the float file types, as llama-quantize ignores them.
  const auto f16 =
      choose_gguf_types(llama_model(), tensors, find_gguf_file_type("F16"), false, rules);
  for (size_t i = 0; i < tensors.size(); ++i)
    if (f16[i].quantizable) {
      EXPECT_EQ(f16[i].type, T::F16) << tensors[i].name;
    }
}

TEST(GgufTypeRules, RowsNotAMultipleOf32FallBackToF16) {
  // ffn rows of 688: Q4_K -> Q5_0 does not fit either -> F16. output.weight
  // with rows of 100 (vocab as ne[0] is not Llama's layout, but the rule is
  // by ne[0]): Q4_1's output rule gives Q8_0, which falls back to F16.
  auto tensors = llama_tensors(false, 688);
  const auto got =
      choose_gguf_types(llama_model(), tensors, find_gguf_file_type("Q4_K_M"), false, {});
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].name.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(got[i].type, T::F16) << tensors[i].name;
      EXPECT_TRUE(got[i].fallback);
    }
    if (tensors[i].name.find("ffn_up") != std::string::npos) {
      EXPECT_EQ(got[i].type, T::Q4_K);
    }
  }
  std::vector<GgufTypeTensor> out = {{"output.weight", {100, 256}, T::F16}};
  EXPECT_EQ(choose_gguf_types(llama_model(), out, find_gguf_file_type("Q4_1"), false, {})[0].type,
            T::F16);
}

TEST(GgufTypeRules, SeventyBLlamaBumpsAttnV) {
  // 80 layers, 64 heads over 8 (llama.cpp's LLM_TYPE_70B): Q4_K attn_v -> Q5_K.
  GgufTypeModel m;
  m.n_layer = 80;
  m.n_head = 64;
  m.n_head_kv = 8;
  std::vector<GgufTypeTensor> t;
  for (int l = 0; l < 80; ++l)
    t.push_back({"blk." + std::to_string(l) + ".attn_v.weight", {8192, 1024}, T::F16});
  const auto got = choose_gguf_types(m, t, find_gguf_file_type("Q4_K_M"), false, {});
  EXPECT_EQ(got[0].type, T::Q6_K);   // layer < 80/8
  EXPECT_EQ(got[10].type, T::Q5_K);  // (10 - 10) % 3 = 0: Q4_K, bumped
  EXPECT_EQ(got[12].type, T::Q6_K);  // (12 - 10) % 3 = 2
  EXPECT_EQ(got[70].type, T::Q6_K);  // >= 7 * 80 / 8
  m.n_head_kv = 64;                  // 65B: not bumped
  EXPECT_EQ(choose_gguf_types(m, t, find_gguf_file_type("Q4_K_M"), false, {})[10].type, T::Q4_K);
}

TEST(GgufTypeRules, FileTypesAndRuleParsing) {
  EXPECT_EQ(find_gguf_file_type("Q4_K_M").llama_ftype, 15u);
  EXPECT_EQ(find_gguf_file_type("q4_1").llama_ftype, 3u);
  EXPECT_EQ(find_gguf_file_type("Q8_0").llama_ftype, 7u);
  EXPECT_EQ(find_gguf_file_type("BF16").llama_ftype, 32u);
  EXPECT_EQ(find_gguf_file_type("Q5_K").llama_ftype, 17u);
  EXPECT_EQ(find_gguf_file_type("F32").llama_ftype, 0u);
  EXPECT_THROW(find_gguf_file_type("Q2_K_S"), Error);  // needs an importance matrix
  EXPECT_THROW(find_gguf_file_type("IQ4_NL"), Error);
  EXPECT_EQ(parse_gguf_tensor_type_rule("ffn_down=Q6_k").type, T::Q6_K);
  EXPECT_EQ(parse_gguf_tensor_type_rule("attn_v=iq4_nl").type, T::IQ4_NL);
  for (const char* bad : {"ffn_down", "=Q8_0", "ffn_down=", "ffn_down=Q9", "(=Q8_0", "a=b=Q8_0"})
    EXPECT_THROW(parse_gguf_tensor_type_rule(bad), Error) << bad;
  EXPECT_TRUE(gguf_tensor_order_less("output.weight", "blk.0.attn_q.weight"));
  EXPECT_TRUE(gguf_tensor_order_less("blk.2.ffn_up.weight", "blk.10.attn_k.weight"));
  EXPECT_TRUE(gguf_tensor_order_less("blk.1.attn_k.weight", "blk.1.attn_norm.weight"));
}

}  // namespace
}  // namespace qpack
