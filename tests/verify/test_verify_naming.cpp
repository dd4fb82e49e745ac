// Layer and kind parsing, the policy file, and the gate's logic.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "qpack/format/error.hpp"
#include "qpack/verify/verify.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

TEST(VerifyNaming, LayerTable) {
  struct Case {
    const char* name;
    const char* stack;
    int64_t index;
  };
  const Case cases[] = {
      {"model.layers.0.self_attn.q_proj.weight", "model.layers", 0},
      {"model.layers.31.mlp.down_proj.weight", "model.layers", 31},
      {"transformer.h.11.attn.c_attn.weight", "transformer.h", 11},
      {"h.3.mlp.c_fc.weight", "h", 3},
      {"blk.7.attn_q.weight", "blk", 7},
      {"encoder.layer.5.attention.self.query.weight", "encoder.layer", 5},
      {"bert.encoder.layer.2.output.dense.weight", "bert.encoder.layer", 2},
      {"model.decoder.layers.4.fc1.weight", "model.decoder.layers", 4},
      {"decoder.layers.12.self_attn.k_proj.weight", "decoder.layers", 12},
      {"layers.9.attention.wq.weight", "layers", 9},
      {"gpt_neox.layers.1.attention.query_key_value.weight", "gpt_neox.layers", 1},
      {"transformer.blocks.6.ffn.up_proj.weight", "transformer.blocks", 6},
      {"encoder.block.2.layer.0.SelfAttention.q.weight", "encoder.block", 2},
      {"model.layers.3.mlp.experts.17.w1.weight", "model.layers", 3},  // the block, not the expert
      {"language_model.model.layers.10.self_attn.o_proj.weight", "language_model.model.layers", 10},
      {"model.embed_tokens.weight", "", -1},
      {"model.norm.weight", "", -1},
      {"lm_head.weight", "", -1},
      {"token_embd.weight", "", -1},
      {"output_norm.weight", "", -1},
      {"model.experts.3.weight", "", -1},  // a number, but not a block container
      {"layers", "", -1},
      {"12.weight", "", -1},
      {"model.layers.x.weight", "", -1},
  };
  for (const auto& c : cases) {
    const LayerId id = parse_layer(c.name);
    EXPECT_EQ(id.stack, c.stack) << c.name;
    EXPECT_EQ(id.index, c.index) << c.name;
    EXPECT_EQ(id.global(), c.index < 0) << c.name;
    EXPECT_EQ(id.label(), c.index < 0 ? std::string("global")
                                      : std::string(c.stack) + "." + std::to_string(c.index));
  }
}

TEST(VerifyNaming, KindTable) {
  EXPECT_EQ(tensor_kind("model.layers.0.self_attn.q_proj.weight"), "self_attn.q_proj");
  EXPECT_EQ(tensor_kind("model.layers.31.mlp.down_proj.weight"), "mlp.down_proj");
  EXPECT_EQ(tensor_kind("model.embed_tokens.weight"), "model.embed_tokens");
  EXPECT_EQ(tensor_kind("lm_head.weight"), "lm_head");
  EXPECT_EQ(tensor_kind("blk.0.attn_q.weight"), "attn_q");
  EXPECT_EQ(tensor_kind("model.layers.0.self_attn.q_proj.bias"), "self_attn.q_proj.bias");
  EXPECT_EQ(tensor_kind("transformer.wte"), "transformer.wte");
  EXPECT_EQ(tensor_kind("scale"), "scale");
  EXPECT_EQ(tensor_kind("weight"), "weight");
}

// Issue #12 item 18: BERT's three "dense" matrices of a block are three kinds,
// and the same matrix of two blocks is one kind.
TEST(VerifyNaming, BertDenseMatricesAreDistinctKinds) {
  const std::string b = "bert.encoder.layer.";
  const std::string attn_out = tensor_kind(b + "0.attention.output.dense.weight");
  const std::string inter = tensor_kind(b + "0.intermediate.dense.weight");
  const std::string out = tensor_kind(b + "0.output.dense.weight");
  EXPECT_EQ(attn_out, "attention.output.dense");
  EXPECT_EQ(inter, "intermediate.dense");
  EXPECT_EQ(out, "output.dense");
  EXPECT_EQ(tensor_kind(b + "11.intermediate.dense.weight"), inter);
  EXPECT_EQ(tensor_kind(b + "3.attention.self.query.weight"), "attention.self.query");
  EXPECT_EQ(tensor_kind(b + "3.attention.output.LayerNorm.bias"),
            "attention.output.LayerNorm.bias");
  EXPECT_EQ(tensor_kind("encoder.layer.2.output.dense.bias"), "output.dense.bias");
  EXPECT_EQ(tensor_kind("bert.pooler.dense.weight"), "bert.pooler.dense");
  // Llama: q/k/v/o of attention and the MLP's projections, one kind each.
  EXPECT_EQ(tensor_kind("model.layers.5.self_attn.o_proj.weight"), "self_attn.o_proj");
  EXPECT_EQ(tensor_kind("model.layers.5.mlp.up_proj.weight"), "mlp.up_proj");
  EXPECT_NE(tensor_kind("model.layers.5.mlp.up_proj.weight"),
            tensor_kind("model.layers.5.mlp.down_proj.weight"));
}

TEST(VerifyPolicy, ParsesAndResolvesFirstMatch) {
  const auto j = nlohmann::json::parse(R"({
    "version": 1,
    "description": "CI gate for 4-bit Llama",
    "thresholds": {"max_rel_error": 0.12, "min_snr_db": 18, "min_cosine": 0.99},
    "overrides": [
      {"pattern": "*.mlp.down_proj.weight", "max_rel_error": 0.25, "min_snr_db": null},
      {"pattern": "*.mlp.*", "max_abs_error": 0.5},
      {"pattern": "lm_head.weight", "ignore": true, "comment": "tied"}
    ],
    "model": {"max_rel_error": 0.1}
  })");
  const VerifyPolicy p = VerifyPolicy::from_json(j, "p.json");
  ASSERT_EQ(p.rules.size(), 3u);
  EXPECT_TRUE(p.any());
  int rule = -2;
  bool ignored = true;
  Thresholds t = p.for_tensor("model.layers.3.mlp.down_proj.weight", &rule, &ignored);
  EXPECT_EQ(rule, 0);
  EXPECT_FALSE(ignored);
  EXPECT_EQ(t.max_rel_error, 0.25);
  EXPECT_FALSE(t.min_snr_db.has_value());     // cleared by null
  EXPECT_EQ(t.min_cosine, 0.99);              // inherited
  EXPECT_FALSE(t.max_abs_error.has_value());  // the second rule does not apply: first match wins
  t = p.for_tensor("model.layers.3.mlp.up_proj.weight", &rule, &ignored);
  EXPECT_EQ(rule, 1);
  EXPECT_EQ(t.max_abs_error, 0.5);
  EXPECT_EQ(t.max_rel_error, 0.12);
  t = p.for_tensor("lm_head.weight", &rule, &ignored);
  EXPECT_EQ(rule, 2);
  EXPECT_TRUE(ignored);
  t = p.for_tensor("model.layers.0.self_attn.q_proj.weight", &rule, &ignored);
  EXPECT_EQ(rule, -1);
  EXPECT_EQ(t.min_snr_db, 18);
  EXPECT_EQ(p.model.max_rel_error, 0.1);
  // Round trip through to_json.
  const VerifyPolicy back = VerifyPolicy::from_json(p.to_json(), "again");
  EXPECT_EQ(back.to_json(), p.to_json());
}

TEST(VerifyPolicy, RejectsMalformedFiles) {
  const char* bad[] = {
      R"([1,2])",
      R"({"version": 2})",
      R"({"thresholds": {"max_rel_eror": 0.1}})",
      R"({"thresholds": {"max_rel_error": "0.1"}})",
      R"({"thresholds": {"max_rel_error": null}})",
      R"({"thresholds": {"max_rel_error": -1}})",
      R"({"thresholds": {"min_cosine": 1.5}})",
      R"({"overrides": {"pattern": "*"}})",
      R"({"overrides": [{"max_rel_error": 0.1}]})",
      R"({"overrides": [{"pattern": "", "max_rel_error": 0.1}]})",
      R"({"overrides": [{"pattern": "*", "ignore": "yes"}]})",
      R"({"overrides": [{"pattern": "*", "bits": 4}]})",
      R"({"thresholds": {}, "extra": 1})",
  };
  for (const char* text : bad) {
    try {
      VerifyPolicy::from_json(nlohmann::json::parse(text), "bad.json");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << text;
      EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    }
  }
  test::TempDir dir;
  test::write_file(dir.file("p.json"), std::string("{not json"));
  EXPECT_THROW(VerifyPolicy::load(dir.file("p.json")), Error);
  try {
    VerifyPolicy::load(dir.file("missing.json"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
  }
}

TensorResult quantized_result(const std::string& name, double sq_err, double sq_ref,
                              double max_abs) {
  TensorResult t;
  t.name = name;
  t.layer = parse_layer(name);
  t.quantized = true;
  t.compared = true;
  t.sums.count = 100;
  t.sums.sum_sq_err = sq_err;
  t.sums.sum_sq_ref = sq_ref;
  t.sums.sum_sq_hat = sq_ref;
  t.sums.sum_dot = sq_ref - sq_err / 2;
  t.sums.max_abs_err = max_abs;
  t.sums.max_abs_index = 0;
  return t;
}

TEST(VerifyGate, AppliesThresholdsAndVerdicts) {
  VerifyReport rep;
  rep.integrity_ok = true;
  rep.tensors.push_back(quantized_result("a.weight", 1, 100, 0.5));  // rel 0.1, SNR 20 dB
  rep.tensors.push_back(quantized_result("b.weight", 4, 100, 0.9));  // rel 0.2, SNR ~14 dB
  rep.tensors.push_back(quantized_result("c.weight", 0, 100, 0.0));  // exact
  for (const auto& t : rep.tensors) rep.model.sums.add(t.sums);
  apply_gate(rep);
  EXPECT_EQ(rep.verdict, Verdict::Pass);  // no thresholds
  EXPECT_EQ(verdict_exit_code(rep.verdict), 0);

  rep.policy.global.max_rel_error = 0.15;
  apply_gate(rep);
  EXPECT_EQ(rep.verdict, Verdict::GateFailed);
  EXPECT_EQ(verdict_exit_code(rep.verdict), kExitGateFailed);
  ASSERT_EQ(rep.gate_failures.size(), 1u);
  EXPECT_EQ(rep.gate_failures[0].tensor, "b.weight");
  EXPECT_EQ(rep.gate_failures[0].metric, "rel_error");
  EXPECT_NEAR(rep.gate_failures[0].value, 0.2, 1e-12);
  EXPECT_EQ(rep.tensors[1].status, TensorStatus::GateFailed);
  EXPECT_EQ(rep.tensors[0].status, TensorStatus::Ok);

  // An override relaxes b; SNR and cosine checks; +inf SNR passes.
  rep.policy.rules.push_back({"b.*", {}, {}, false});
  rep.policy.rules.back().thresholds.max_rel_error = 0.3;
  rep.policy.global.min_snr_db = 19.0;
  rep.policy.global.min_cosine = 0.5;
  apply_gate(rep);
  ASSERT_EQ(rep.gate_failures.size(), 1u);
  EXPECT_EQ(rep.gate_failures[0].metric, "snr_db");
  EXPECT_EQ(rep.gate_failures[0].op, ">=");
  // Ignored tensors are not gated.
  rep.policy.rules.back().ignore = true;
  apply_gate(rep);
  EXPECT_EQ(rep.verdict, Verdict::Pass);
  EXPECT_TRUE(rep.tensors[1].gate_ignored);
  // Model totals.
  rep.policy.model.max_abs_error = 0.6;
  apply_gate(rep);
  ASSERT_EQ(rep.gate_failures.size(), 1u);
  EXPECT_EQ(rep.gate_failures[0].tensor, "");
  EXPECT_EQ(rep.gate_failures[0].metric, "max_abs_error");
  rep.policy.model = {};
  // Severity order: bound violations over the gate, source mismatch over both.
  rep.policy.global.max_rel_error = 0.01;
  rep.tensors[2].sums.bound_violations = 1;
  apply_gate(rep);
  EXPECT_EQ(rep.verdict, Verdict::BoundViolated);
  EXPECT_EQ(rep.tensors[2].status, TensorStatus::BoundViolated);
  EXPECT_EQ(verdict_exit_code(rep.verdict), kExitIntegrity);
  rep.missing_from_qpack.push_back("d.weight");
  apply_gate(rep);
  EXPECT_EQ(rep.verdict, Verdict::SourceMismatch);
  rep.integrity_ok = false;
  apply_gate(rep);
  EXPECT_EQ(rep.verdict, Verdict::IntegrityFailed);
  EXPECT_EQ(verdict_exit_code(rep.verdict), kExitIntegrity);
}

TEST(VerifyGate, DerivedMetricEdgeCases) {
  ErrorSums s;
  EXPECT_EQ(s.rel_error(), 0.0);
  EXPECT_EQ(s.snr_db(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(s.cosine(), 1.0);
  EXPECT_EQ(s.rmse(), 0.0);
  s.count = 4;
  s.sum_sq_err = 1;  // reference all zero, reconstruction not
  s.sum_sq_hat = 1;
  EXPECT_EQ(s.rel_error(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(s.snr_db(), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(s.cosine(), 0.0);
  EXPECT_EQ(s.rmse(), 0.5);
  // A NaN metric fails every threshold.
  VerifyReport rep;
  rep.integrity_ok = true;
  TensorResult t = quantized_result("n.weight", std::nan(""), 1, 0);
  rep.tensors.push_back(t);
  rep.policy.global.max_rel_error = 1e9;
  apply_gate(rep);
  EXPECT_EQ(rep.verdict, Verdict::GateFailed);
}

}  // namespace
}  // namespace qpack
