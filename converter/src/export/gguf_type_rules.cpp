// Which GGUF tensor gets which ggml type: llama.cpp's src/llama-quant.cpp
// (tensor_allows_quantization, llama_tensor_get_type, its _impl and
// tensor_type_fallback) restated for the file types qpack writes and no
// importance matrix. docs/gguf.md "Writing GGUF" has the table.
#include <cctype>
#include <cstdio>
#include <cstring>
#include <regex>

#include "qpack/converter/export_gguf.hpp"
#include "qpack/format/error.hpp"

namespace qpack {

namespace {

// llama.h's numbers.
enum Ftype : uint32_t {
  kAllF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 7,
  kQ5_0 = 8,
  kQ5_1 = 9,
  kQ2_K = 10,
  kQ3_K_S = 11,
  kQ3_K_M = 12,
  kQ3_K_L = 13,
  kQ4_K_S = 14,
  kQ4_K_M = 15,
  kQ5_K_S = 16,
  kQ5_K_M = 17,
  kQ6_K = 18,
  kBF16 = 32,
};

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_block_type(GgmlType t) {
  return t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16 && t != GgmlType::F64 &&
         t != GgmlType::I8 && t != GgmlType::I16 && t != GgmlType::I32 && t != GgmlType::I64;
}

int64_t block_size(GgmlType t) {
  const GgmlTypeInfo* i = ggml_type_info(uint32_t(t));
  return i ? int64_t(i->block_size) : 1;
}

enum class Category {
  TokenEmbd,
  AttnQ,
  AttnV,
  AttnK,
  AttnQkv,
  AttnKvB,
  AttnOutput,
  FfnUp,
  FfnGate,
  FfnDown,
  Output,
  Other,
};

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

Category category_of(const std::string& n) {
  if (n == "output.weight") return Category::Output;
  if (n == "token_embd.weight" || n == "per_layer_token_embd.weight") return Category::TokenEmbd;
  if (has(n, "attn_qkv.weight")) return Category::AttnQkv;
  if (has(n, "attn_kv_b.weight")) return Category::AttnKvB;
  if (has(n, "attn_v.weight")) return Category::AttnV;
  if (has(n, "attn_k.weight")) return Category::AttnK;
  if (has(n, "attn_q.weight")) return Category::AttnQ;
  if (has(n, "attn_output.weight")) return Category::AttnOutput;
  if (has(n, "ffn_up")) return Category::FfnUp;
  if (has(n, "ffn_gate")) return Category::FfnGate;
  if (has(n, "ffn_down")) return Category::FfnDown;
  return Category::Other;
}

const char* category_name(Category c) {
  switch (c) {
    case Category::TokenEmbd:
      return "token_embd";
    case Category::AttnQ:
      return "attn_q";
    case Category::AttnV:
      return "attn_v";
    case Category::AttnK:
      return "attn_k";
    case Category::AttnQkv:
      return "attn_qkv";
    case Category::AttnKvB:
      return "attn_kv_b";
    case Category::AttnOutput:
      return "attn_output";
    case Category::FfnUp:
      return "ffn_up";
    case Category::FfnGate:
      return "ffn_gate";
    case Category::FfnDown:
      return "ffn_down";
    case Category::Output:
      return "output";
    case Category::Other:
      break;
  }
  return "other";
}

bool is_attn_v_like(Category c) {
  return c == Category::AttnV || c == Category::AttnQkv || c == Category::AttnKvB;
}

// ggml_n_dims: dimensions up to the last one longer than 1.
int n_dims(const std::vector<int64_t>& ne) {
  int n = 1;
  for (size_t i = 0; i < ne.size(); ++i)
    if (ne[i] > 1) n = int(i) + 1;
  return n;
}

// tensor_allows_quantization, for every architecture but glm5-next's extra list.
bool allows_quantization(const std::string& name, const std::vector<int64_t>& ne) {
  if (n_dims(ne) < 2) return false;
  bool q = name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0;
  q &= !has(name, "_norm.weight");
  for (const char* part : {"ffn_gate_inp.weight",
                           "ffn_gate_tid2eid.weight",
                           "altup",
                           "laurel",
                           "per_layer_model_proj",
                           "ssm_conv1d",
                           "shortconv.conv.weight",
                           "indexer.k_proj.weight",
                           "indexer.q_proj.weight",
                           "time_mix_first.weight",
                           "time_mix_w0.weight",
                           "time_mix_w1.weight",
                           "time_mix_w2.weight",
                           "time_mix_v0.weight",
                           "time_mix_v1.weight",
                           "time_mix_v2.weight",
                           "time_mix_a0.weight",
                           "time_mix_a1.weight",
                           "time_mix_a2.weight",
                           "time_mix_g1.weight",
                           "time_mix_g2.weight",
                           "time_mix_decay_w1.weight",
                           "time_mix_decay_w2.weight",
                           "time_mix_lerp_fused.weight",
                           "attn_rel_b.weight",
                           ".position_embd",
                           "sam.pos_embd",
                           "sam.neck.",
                           "sam.net_",
                           ".rel_pos",
                           ".patch_embd",
                           ".patch_merger",
                           "a.rvq.codebook",
                           "mm.a.code_embd"})
    q &= !has(name, part);
  q &= name != "position_embd.weight" && name != "token_types.weight";
  return q;
}

struct State {
  const GgufTypeModel& model;
  uint32_t ftype;
  bool tied = true;
  int n_attention_wv = 0, i_attention_wv = 0;
  int n_ffn_down = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
  bool falcon() const { return model.architecture == "falcon"; }
  int64_t n_gqa() const { return model.n_head_kv > 0 ? model.n_head / model.n_head_kv : 0; }
  bool is_70b() const {
    if (model.architecture == "llama")
      return model.n_expert != 8 && model.n_layer == 80 && model.n_head != model.n_head_kv;
    if (model.architecture == "qwen2") return model.n_layer == 80;
    return false;
  }
};

bool use_more_bits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// layer_info: the running count, or blk.N of the name for expert models.
std::pair<int, int> layer_info(const State& s, int counter, int n_layer, const std::string& name) {
  int i_layer = counter;
  if (std::max<int64_t>(1, s.model.n_expert) > 1) {
    if (std::sscanf(name.c_str(), "blk.%d.", &i_layer) != 1 || i_layer < 0 || i_layer >= n_layer)
      throw Error(ErrorCode::BadMetadata, "", name,
                  "cannot tell the layer of this expert tensor from its name");
  }
  return {i_layer, n_layer};
}

// llama_tensor_get_type_impl for the file types of gguf_file_types().
GgmlType mix_type(State& s, GgmlType t, const std::string& name, const std::vector<int64_t>& ne,
                  Category cat) {
  const uint32_t f = s.ftype;
  const int64_t n_expert = s.model.n_expert;
  if (cat == Category::Output || (s.tied && cat == Category::TokenEmbd)) {
    if (s.falcon() || ne[0] % block_size(t) != 0)
      t = GgmlType::Q8_0;
    else if (t != GgmlType::Q8_0)
      t = GgmlType::Q6_K;
  } else if (cat == Category::TokenEmbd) {
    // Only the IQ/TQ file types change an untied token_embd.
  } else if (is_attn_v_like(cat)) {
    if (f == kQ2_K)
      t = s.n_gqa() >= 4 ? GgmlType::Q4_K : GgmlType::Q3_K;
    else if (f == kQ3_K_M)
      t = s.i_attention_wv < 2 ? GgmlType::Q5_K : GgmlType::Q4_K;
    else if (f == kQ3_K_L)
      t = GgmlType::Q5_K;
    else if ((f == kQ4_K_M || f == kQ5_K_M) && use_more_bits(s.i_attention_wv, s.n_attention_wv))
      t = GgmlType::Q6_K;
    else if (f == kQ4_K_S && s.i_attention_wv < 4)
      t = GgmlType::Q5_K;
    if (s.is_70b() && (t == GgmlType::Q3_K || t == GgmlType::Q4_K)) t = GgmlType::Q5_K;
    if (n_expert == 8) t = GgmlType::Q8_0;
    ++s.i_attention_wv;
  } else if (cat == Category::AttnK) {
    if (n_expert == 8) t = GgmlType::Q8_0;
  } else if (cat == Category::AttnQ) {
    // Only the IQ3 file types.
  } else if (cat == Category::FfnDown) {
    const auto [i_layer, n_layer] = layer_info(s, s.i_ffn_down, s.n_ffn_down, name);
    if (f == kQ2_K) {
      t = GgmlType::Q3_K;
    } else if (f == kQ3_K_M) {
      t = i_layer < n_layer / 16                           ? GgmlType::Q5_K
          : !s.falcon() || use_more_bits(i_layer, n_layer) ? GgmlType::Q4_K
                                                           : GgmlType::Q3_K;
    } else if (f == kQ3_K_L) {
      t = s.falcon() ? GgmlType::Q4_K : GgmlType::Q5_K;
    } else if (f == kQ4_K_M) {
      if (s.falcon())
        t = i_layer < n_layer / 16            ? GgmlType::Q6_K
            : use_more_bits(i_layer, n_layer) ? GgmlType::Q5_K
                                              : GgmlType::Q4_K;
      else if (use_more_bits(i_layer, n_layer))
        t = GgmlType::Q6_K;
    } else if (f == kQ5_K_M && use_more_bits(i_layer, n_layer)) {
      t = GgmlType::Q6_K;
    } else if (f == kQ4_K_S && !s.falcon() && i_layer < n_layer / 8) {
      t = GgmlType::Q5_K;
    }
    ++s.i_ffn_down;
  } else if (cat == Category::AttnOutput) {
    if (!s.falcon()) {
      if (n_expert == 8) {
        if (f == kQ2_K || f == kQ3_K_S || f == kQ3_K_M || f == kQ4_K_S || f == kQ4_K_M)
          t = GgmlType::Q5_K;
      } else {
        if (f == kQ2_K)
          t = GgmlType::Q3_K;
        else if (f == kQ3_K_M)
          t = GgmlType::Q4_K;
        else if (f == kQ3_K_L)
          t = GgmlType::Q5_K;
      }
    } else if (f == kQ3_K_L) {
      t = GgmlType::Q4_K;
    }
  } else if (cat == Category::AttnQkv) {
    // Unreachable (attn_qkv is attn_v-like above), as in llama.cpp.
  } else if (cat == Category::FfnGate) {
    ++s.i_ffn_gate;
  } else if (cat == Category::FfnUp) {
    ++s.i_ffn_up;
  }
  return t;
}

// tensor_type_fallback: a row length the block does not divide.
GgmlType fallback_type(GgmlType t, int64_t ncols, std::string* why) {
  const int64_t qk = block_size(t);
  if (ncols % qk == 0) return t;
  GgmlType r = t;
  switch (t) {
    case GgmlType::IQ1_S:
    case GgmlType::IQ1_M:
    case GgmlType::IQ2_XXS:
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
    case GgmlType::IQ3_XXS:
    case GgmlType::IQ3_S:
    case GgmlType::IQ4_XS:
      r = GgmlType::IQ4_NL;
      break;
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::TQ1_0:
    case GgmlType::TQ2_0:
      r = GgmlType::Q4_0;
      break;
    case GgmlType::Q4_K:
      r = GgmlType::Q5_0;
      break;
    case GgmlType::Q5_K:
      r = GgmlType::Q5_1;
      break;
    case GgmlType::Q6_K:
      r = GgmlType::Q8_0;
      break;
    default:
      if (qk > 32)
        throw Error(ErrorCode::UnsupportedScheme, "", "",
                    std::string("no fallback type is defined for ") + ggml_type_name(t) +
                        " with rows of " + std::to_string(ncols));
      break;
  }
  if (ncols % block_size(r) != 0) r = GgmlType::F16;
  *why = "row of " + std::to_string(ncols) + " is not a multiple of " + std::to_string(qk) + " (" +
         ggml_type_name(t) + "): falls back to " + ggml_type_name(r);
  return r;
}

}  // namespace

const std::vector<GgufFileType>& gguf_file_types() {
  static const std::vector<GgufFileType> types = {
      {"Q4_0", kQ4_0, GgmlType::Q4_0},     {"Q4_1", kQ4_1, GgmlType::Q4_1},
      {"Q5_0", kQ5_0, GgmlType::Q5_0},     {"Q5_1", kQ5_1, GgmlType::Q5_1},
      {"Q2_K", kQ2_K, GgmlType::Q2_K},     {"Q3_K_S", kQ3_K_S, GgmlType::Q3_K},
      {"Q3_K_M", kQ3_K_M, GgmlType::Q3_K}, {"Q3_K_L", kQ3_K_L, GgmlType::Q3_K},
      {"Q4_K_S", kQ4_K_S, GgmlType::Q4_K}, {"Q4_K_M", kQ4_K_M, GgmlType::Q4_K},
      {"Q5_K_S", kQ5_K_S, GgmlType::Q5_K}, {"Q5_K_M", kQ5_K_M, GgmlType::Q5_K},
      {"Q6_K", kQ6_K, GgmlType::Q6_K},     {"Q8_0", kQ8_0, GgmlType::Q8_0},
      {"F16", kF16, GgmlType::F16},        {"BF16", kBF16, GgmlType::BF16},
      {"F32", kAllF32, GgmlType::F32},
  };
  return types;
}

const GgufFileType& find_gguf_file_type(const std::string& name) {
  std::string n = upper(name);
  if (n == "Q3_K" || n == "Q4_K" || n == "Q5_K") n += "_M";  // llama-quantize's aliases
  for (const GgufFileType& t : gguf_file_types())
    if (n == t.name) return t;
  std::string names;
  for (const GgufFileType& t : gguf_file_types())
    names += std::string(names.empty() ? "" : ", ") + t.name;
  throw Error(ErrorCode::InvalidArgument, "", "",
              "unknown GGUF --type '" + name + "' (one of: " + names +
                  "; Q3_K, Q4_K, Q5_K mean the _M mixes, as in llama-quantize)");
}

GgufTensorTypeRule parse_gguf_tensor_type_rule(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos)
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--tensor-type '" + text + "' is not PATTERN=TYPE");
  if (eq == 0)
    throw Error(ErrorCode::InvalidArgument, "", "", "--tensor-type '" + text + "' has no pattern");
  const std::string type = text.substr(eq + 1);
  if (type.empty())
    throw Error(ErrorCode::InvalidArgument, "", "", "--tensor-type '" + text + "' has no type");
  GgufTensorTypeRule r;
  r.pattern = lower(text.substr(0, eq));
  try {
    (void)std::regex(r.pattern);
  } catch (const std::regex_error& e) {
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--tensor-type pattern '" + r.pattern + "' is not a valid regular expression");
  }
  for (const GgmlTypeInfo& t : ggml_types()) {
    if (upper(type) == upper(t.name)) {
      r.type = t.type;
      return r;
    }
  }
  throw Error(ErrorCode::InvalidArgument, "", "",
              "--tensor-type '" + text + "': '" + type + "' is not a ggml type name");
}

bool gguf_tensor_order_less(const std::string& a, const std::string& b) {
  int la = -1, lb = -1;
  std::sscanf(a.c_str(), "blk.%d.", &la);
  std::sscanf(b.c_str(), "blk.%d.", &lb);
  if (la != lb) return la < lb;
  return a < b;
}

std::vector<GgufTypeChoice> choose_gguf_types(const GgufTypeModel& model,
                                              const std::vector<GgufTypeTensor>& tensors,
                                              const GgufFileType& file_type, bool pure,
                                              const std::vector<GgufTensorTypeRule>& rules) {
  State s{model, file_type.llama_ftype};
  for (const auto& t : tensors) {
    const Category c = category_of(t.name);
    if (is_attn_v_like(c)) ++s.n_attention_wv;
    if (c == Category::Output) s.tied = false;
  }
  s.n_ffn_down = int(model.n_layer);
  std::vector<std::regex> patterns;
  for (const auto& r : rules) patterns.emplace_back(r.pattern);

  const GgmlType def = file_type.default_type;
  const bool def_quantized = is_block_type(def);
  std::vector<GgufTypeChoice> out;
  for (const auto& t : tensors) {
    GgufTypeChoice ch;
    ch.quantizable = allows_quantization(t.name, t.ne);
    if (!ch.quantizable) {
      ch.type = t.type;
      ch.reason = n_dims(t.ne) < 2 ? "not quantized (1-D)" : "not quantized (llama.cpp keeps it)";
      out.push_back(ch);
      continue;
    }
    GgmlType nt = def;
    if (!def_quantized) {
      ch.type = nt;
      ch.reason = std::string(file_type.name) + ": every weight";
      out.push_back(ch);
      continue;
    }
    bool manual = false;
    for (size_t k = 0; k < rules.size(); ++k) {
      if (std::regex_search(t.name, patterns[k])) {
        nt = rules[k].type;
        manual = true;
        ch.reason = "--tensor-type " + rules[k].pattern + "=" + ggml_type_name(rules[k].type);
        break;
      }
    }
    if (!manual && pure) {
      ch.reason = std::string("--pure ") + file_type.name;
    } else if (!manual) {
      const Category c = category_of(t.name);
      nt = mix_type(s, nt, t.name, t.ne, c);
      ch.reason = std::string(file_type.name) +
                  (nt == def ? std::string(" default")
                             : std::string(" rule for ") + category_name(c) +
                                   (s.tied && c == Category::TokenEmbd ? " (tied output)" : ""));
    }
    std::string why;
    try {
      const GgmlType fb = fallback_type(nt, t.ne[0], &why);
      if (fb != nt) {
        ch.fallback = true;
        ch.reason += "; " + why;
      }
      nt = fb;
    } catch (const Error& e) {
      throw e.with_context("", t.name);
    }
    ch.type = nt;
    out.push_back(ch);
  }
  return out;
}

}  // namespace qpack
