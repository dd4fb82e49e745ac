// HF Llama family <-> GGUF: config keys, tensor names, the Q/K permutation
// (qpack/format/gguf_llama.hpp; docs/gguf.md "Writing GGUF").
#include "qpack/format/gguf_llama.hpp"

#include <cmath>
#include <cstring>

#include "qpack/format/error.hpp"
#include "qpack/format/json.hpp"

namespace qpack {

namespace {

using nlohmann::json;

constexpr int64_t kMaxU32 = 0xffffffffll;

[[noreturn]] void bad(const std::string& path, const std::string& reason) {
  throw Error(ErrorCode::BadMetadata, path, "", "config.json: " + reason);
}

// A positive integer that fits a GGUF u32 (what the keys hold).
std::optional<int64_t> get_count(const json& c, const char* key, const std::string& path,
                                 bool required) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) {
    if (required) bad(path, std::string("missing required key '") + key + "'");
    return std::nullopt;
  }
  if (!it->is_number_integer())
    bad(path, std::string("'") + key + "' must be an integer, not " + it->dump());
  // Unsigned values over int64 read as negative here and fail the range check.
  const int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX)
                        ? -1
                        : it->get<int64_t>();
  if (v <= 0 || v > kMaxU32)
    bad(path, std::string("'") + key + "' must be in 1.." + std::to_string(kMaxU32) + ", not " +
                  it->dump());
  return v;
}

std::optional<double> get_number(const json& c, const char* key, const std::string& path,
                                 bool required) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) {
    if (required) bad(path, std::string("missing required key '") + key + "'");
    return std::nullopt;
  }
  if (!it->is_number()) bad(path, std::string("'") + key + "' must be a number, not " + it->dump());
  const double v = it->get<double>();
  if (!std::isfinite(v)) bad(path, std::string("'") + key + "' must be finite");
  return v;
}

// The first of several names convert_hf_to_gguf.py's find_hparam tries.
const json* find_any(const json& c, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    const auto it = c.find(k);
    if (it != c.end() && !it->is_null()) return &*it;
  }
  return nullptr;
}

struct Family {
  const char* model_type;
  const char* hf_architecture;
  const char* gguf_arch;
  bool permute_qk;
};
constexpr Family kFamilies[] = {
    {"llama", "LlamaForCausalLM", "llama", true},
    {"mistral", "MistralForCausalLM", "llama", true},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", false},
};

GgufKv kv_u32(const std::string& key, int64_t v) { return {key, GgufValue::of_u32(uint32_t(v))}; }
GgufKv kv_f32(const std::string& key, double v) { return {key, GgufValue::of_f32(float(v))}; }

// "7" -> 7; refuses empty, leading zeros (other than "0"), non-digits, overflow.
bool parse_layer(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 9 || (s.size() > 1 && s[0] == '0')) return false;
  int64_t v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  *out = v;
  return true;
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// Per-layer names: HF suffix after "model.layers.N." <-> GGUF after "blk.N.".
struct LayerName {
  const char* hf;
  const char* gguf;
};
constexpr LayerName kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
struct GlobalName {
  const char* hf;
  const char* gguf;
};
constexpr GlobalName kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

void check_permute_shape(int64_t rows, int64_t n_head) {
  if (n_head <= 0 || rows <= 0 || rows % (2 * n_head) != 0)
    throw Error(ErrorCode::InvalidArgument, "", "",
                "Q/K permutation: " + std::to_string(rows) + " rows are not a multiple of 2 x " +
                    std::to_string(n_head) + " heads");
}

}  // namespace

LlamaConfig parse_llama_config(const json& c, const std::string& path) {
  if (!c.is_object()) bad(path, "not a JSON object");
  LlamaConfig cfg;
  // The family: model_type, else architectures[0]. Anything else is refused
  // by the name the file gives it.
  std::string model_type, hf_arch;
  if (const auto it = c.find("model_type"); it != c.end()) {
    if (!it->is_string()) bad(path, "'model_type' must be a string");
    model_type = it->get<std::string>();
  }
  if (const auto it = c.find("architectures"); it != c.end()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string())
      bad(path, "'architectures' must be a list of strings");
    hf_arch = (*it)[0].get<std::string>();
  }
  const Family* fam = nullptr;
  for (const Family& f : kFamilies) {
    if (model_type.empty() ? hf_arch == f.hf_architecture : model_type == f.model_type) fam = &f;
  }
  if (!fam) {
    if (model_type.empty() && hf_arch.empty())
      bad(path, "neither 'model_type' nor 'architectures' says which model this is");
    bad(path, "model " +
                  (model_type.empty() ? "architecture '" + hf_arch + "'"
                                      : "type '" + model_type + "'" +
                                            (hf_arch.empty() ? "" : " (" + hf_arch + ")")) +
                  " is not one qpack writes as GGUF (Llama family: llama, mistral, qwen2)");
  }
  cfg.model_type = fam->model_type;
  cfg.architecture = fam->gguf_arch;
  cfg.hf_architecture = hf_arch;
  cfg.permute_qk = fam->permute_qk;

  cfg.hidden_size = *get_count(c, "hidden_size", path, true);
  cfg.intermediate_size = *get_count(c, "intermediate_size", path, true);
  cfg.num_layers = *get_count(c, "num_hidden_layers", path, true);
  cfg.num_heads = *get_count(c, "num_attention_heads", path, true);
  cfg.num_kv_heads = get_count(c, "num_key_value_heads", path, false).value_or(cfg.num_heads);
  cfg.vocab_size = *get_count(c, "vocab_size", path, true);
  cfg.context_length = *get_count(c, "max_position_embeddings", path, true);
  cfg.rms_norm_eps = *get_number(c, "rms_norm_eps", path, true);
  if (!(cfg.rms_norm_eps > 0)) bad(path, "'rms_norm_eps' must be positive");
  if (const auto hd = get_count(c, "head_dim", path, false)) {
    cfg.head_dim = *hd;
    cfg.head_dim_in_config = true;
  } else {
    if (cfg.hidden_size % cfg.num_heads != 0)
      bad(path, "num_attention_heads (" + std::to_string(cfg.num_heads) +
                    ") does not divide hidden_size (" + std::to_string(cfg.hidden_size) + ")");
    cfg.head_dim = cfg.hidden_size / cfg.num_heads;
  }
  if (cfg.num_heads % cfg.num_kv_heads != 0)
    bad(path, "num_key_value_heads (" + std::to_string(cfg.num_kv_heads) +
                  ") does not divide num_attention_heads (" + std::to_string(cfg.num_heads) + ")");
  if (cfg.permute_qk && cfg.head_dim % 2 != 0)
    bad(path, "head dimension " + std::to_string(cfg.head_dim) +
                  " is odd: the Q/K rows cannot be paired for RoPE");
  if (cfg.q_rows() > kMaxU32) bad(path, "num_attention_heads x head_dim is too large");
  if (const auto it = c.find("tie_word_embeddings"); it != c.end() && !it->is_null()) {
    if (!it->is_boolean()) bad(path, "'tie_word_embeddings' must be true or false");
    cfg.tie_word_embeddings = it->get<bool>();
  }

  // RoPE: rope_parameters (newer transformers) or rope_scaling, and the
  // base under either the top level or that object, as TextModel reads them.
  json rope = json::object();
  if (const json* r = find_any(c, {"rope_parameters", "rope_scaling"})) {
    if (!r->is_object()) bad(path, "'rope_scaling' must be an object or null");
    rope = *r;
    if (const auto fa = rope.find("full_attention"); fa != rope.end() && fa->is_object()) {
      rope = *fa;
    }
  }
  if (const json* t = find_any(c, {"rope_theta", "rotary_emb_base"})) {
    if (!t->is_number() || !std::isfinite(t->get<double>()) || !(t->get<double>() > 0))
      bad(path, "'rope_theta' must be a positive number");
    cfg.rope_theta = t->get<double>();
  } else if (rope.contains("rope_theta")) {
    cfg.rope_theta = get_number(rope, "rope_theta", path, true);
  }
  std::string rope_type;
  if (const json* t = find_any(rope, {"rope_type", "type"})) {
    if (!t->is_string()) bad(path, "rope_scaling 'rope_type' must be a string");
    rope_type = t->get<std::string>();
  }
  const std::optional<double> factor = get_number(rope, "factor", path, false);
  if (rope_type == "linear" && factor) {
    cfg.rope_scaling_type = "linear";
    cfg.rope_scaling_factor = factor;
  } else if (rope_type == "yarn" && factor) {
    cfg.rope_scaling_type = "yarn";
    cfg.rope_scaling_factor = factor;
    cfg.rope_original_context = get_count(rope, "original_max_position_embeddings", path, true);
    cfg.yarn_ext_factor = get_number(rope, "extrapolation_factor", path, false);
    cfg.yarn_attn_factor = get_number(rope, "attention_factor", path, false);
    if (!cfg.yarn_attn_factor) cfg.yarn_attn_factor = get_number(rope, "attn_factor", path, false);
    cfg.yarn_beta_fast = get_number(rope, "beta_fast", path, false);
    cfg.yarn_beta_slow = get_number(rope, "beta_slow", path, false);
  } else if (rope_type == "su" || rope_type == "longrope") {
    cfg.rope_scaling_type = "longrope";
  } else if (rope_type == "llama3") {
    cfg.rope_scaling_type = "llama3";
    cfg.rope_scaling_factor = get_number(rope, "factor", path, false).value_or(8.0);
    cfg.llama3_low_freq_factor = get_number(rope, "low_freq_factor", path, false).value_or(1.0);
    cfg.llama3_high_freq_factor = get_number(rope, "high_freq_factor", path, false).value_or(4.0);
    cfg.rope_original_context =
        get_count(rope, "original_max_position_embeddings", path, false).value_or(8192);
    if (cfg.llama3_low_freq_factor == cfg.llama3_high_freq_factor)
      bad(path, "rope_scaling llama3: low_freq_factor equals high_freq_factor");
  } else if (rope_type.empty() || rope_type == "default" || rope_type == "dynamic" ||
             ((rope_type == "linear" || rope_type == "yarn") && !factor)) {
    // Nothing to write: convert_hf_to_gguf.py writes no scaling keys either.
  } else {
    bad(path, "rope_scaling type '" + rope_type +
                  "' is not one qpack writes (linear, yarn, longrope, llama3)");
  }
  return cfg;
}

LlamaConfig read_llama_config(const std::string& config_json_path) {
  return parse_llama_config(read_json_file(config_json_path, "config.json", ErrorCode::BadJson),
                            config_json_path);
}

std::vector<GgufKv> llama_gguf_metadata(const LlamaConfig& c, const std::string& name) {
  const std::string a = c.architecture + ".";
  std::vector<GgufKv> kv;
  kv.push_back({"general.architecture", GgufValue::of_string(c.architecture)});
  if (!name.empty()) kv.push_back({"general.name", GgufValue::of_string(name)});
  kv.push_back(kv_u32(a + "block_count", c.num_layers));
  kv.push_back(kv_u32(a + "context_length", c.context_length));
  kv.push_back(kv_u32(a + "embedding_length", c.hidden_size));
  kv.push_back(kv_u32(a + "feed_forward_length", c.intermediate_size));
  kv.push_back(kv_u32(a + "attention.head_count", c.num_heads));
  kv.push_back(kv_u32(a + "attention.head_count_kv", c.num_kv_heads));
  if (c.rope_scaling_type == "linear" || c.rope_scaling_type == "yarn") {
    kv.push_back({a + "rope.scaling.type", GgufValue::of_string(c.rope_scaling_type)});
    kv.push_back(kv_f32(a + "rope.scaling.factor", *c.rope_scaling_factor));
    if (c.rope_scaling_type == "yarn") {
      kv.push_back(kv_u32(a + "rope.scaling.original_context_length", *c.rope_original_context));
      if (c.yarn_ext_factor)
        kv.push_back(kv_f32(a + "rope.scaling.yarn_ext_factor", *c.yarn_ext_factor));
      if (c.yarn_attn_factor)
        kv.push_back(kv_f32(a + "rope.scaling.yarn_attn_factor", *c.yarn_attn_factor));
      if (c.yarn_beta_fast)
        kv.push_back(kv_f32(a + "rope.scaling.yarn_beta_fast", *c.yarn_beta_fast));
      if (c.yarn_beta_slow)
        kv.push_back(kv_f32(a + "rope.scaling.yarn_beta_slow", *c.yarn_beta_slow));
    }
  } else if (c.rope_scaling_type == "longrope") {
    kv.push_back({a + "rope.scaling.type", GgufValue::of_string("longrope")});
  }
  if (c.rope_theta) kv.push_back(kv_f32(a + "rope.freq_base", *c.rope_theta));
  kv.push_back(kv_f32(a + "attention.layer_norm_rms_epsilon", c.rms_norm_eps));
  if (c.head_dim_in_config) {
    kv.push_back(kv_u32(a + "attention.key_length", c.head_dim));
    kv.push_back(kv_u32(a + "attention.value_length", c.head_dim));
  }
  // LlamaModel adds these two; for qwen2 the vocabulary size is written too,
  // since a file without a token list (tokenizer "none") needs it to load.
  kv.push_back(kv_u32(a + "vocab_size", c.vocab_size));
  if (c.architecture == "llama") kv.push_back(kv_u32(a + "rope.dimension_count", c.head_dim));
  return kv;
}

LlamaTensorName llama_gguf_tensor_name(const std::string& hf) {
  LlamaTensorName r;
  for (const GlobalName& g : kGlobalNames) {
    if (hf == g.hf) {
      r.mapping = LlamaTensorMapping::Mapped;
      r.gguf_name = g.gguf;
      return r;
    }
  }
  static const char kPrefix[] = "model.layers.";
  if (!starts_with(hf, kPrefix)) return r;
  const size_t start = sizeof kPrefix - 1;
  const size_t dot = hf.find('.', start);
  if (dot == std::string::npos) return r;
  int64_t layer = 0;
  if (!parse_layer(hf.substr(start, dot - start), &layer)) return r;
  const std::string rest = hf.substr(dot + 1);
  if (rest == "self_attn.rotary_emb.inv_freq") {
    r.mapping = LlamaTensorMapping::Dropped;
    r.layer = layer;
    return r;
  }
  for (const LayerName& n : kLayerNames) {
    if (rest == n.hf) {
      r.mapping = LlamaTensorMapping::Mapped;
      r.gguf_name = "blk." + std::to_string(layer) + "." + n.gguf;
      r.layer = layer;
      return r;
    }
  }
  return r;
}

std::optional<std::string> llama_hf_tensor_name(const std::string& gguf) {
  for (const GlobalName& g : kGlobalNames) {
    if (gguf == g.gguf) return std::string(g.hf);
  }
  static const char kPrefix[] = "blk.";
  if (!starts_with(gguf, kPrefix)) return std::nullopt;
  const size_t start = sizeof kPrefix - 1;
  const size_t dot = gguf.find('.', start);
  if (dot == std::string::npos) return std::nullopt;
  int64_t layer = 0;
  if (!parse_layer(gguf.substr(start, dot - start), &layer)) return std::nullopt;
  const std::string rest = gguf.substr(dot + 1);
  for (const LayerName& n : kLayerNames) {
    if (rest == n.gguf) return "model.layers." + std::to_string(layer) + "." + n.hf;
  }
  return std::nullopt;
}

int64_t llama_permute_heads(const LlamaConfig& c, const std::string& gguf_name) {
  if (!c.permute_qk || !starts_with(gguf_name, "blk.")) return 0;
  const size_t dot = gguf_name.find('.', 4);
  if (dot == std::string::npos) return 0;
  const std::string rest = gguf_name.substr(dot + 1);
  if (rest == "attn_q.weight" || rest == "attn_q.bias") return c.num_heads;
  if (rest == "attn_k.weight" || rest == "attn_k.bias") return c.num_kv_heads;
  return 0;
}

int64_t llama_qk_hf_row(int64_t g, int64_t rows, int64_t n_head) {
  check_permute_shape(rows, n_head);
  const int64_t half = rows / n_head / 2;
  const int64_t head = g / (2 * half), in_head = g % (2 * half);
  const int64_t i = in_head / 2, j = in_head % 2;
  return head * 2 * half + j * half + i;
}

int64_t llama_qk_gguf_row(int64_t h, int64_t rows, int64_t n_head) {
  check_permute_shape(rows, n_head);
  const int64_t half = rows / n_head / 2;
  const int64_t head = h / (2 * half), in_head = h % (2 * half);
  const int64_t j = in_head / half, i = in_head % half;
  return head * 2 * half + 2 * i + j;
}

std::vector<int64_t> llama_qk_hf_rows(int64_t rows, int64_t n_head) {
  check_permute_shape(rows, n_head);
  std::vector<int64_t> m(static_cast<size_t>(rows));
  for (int64_t g = 0; g < rows; ++g) m[size_t(g)] = llama_qk_hf_row(g, rows, n_head);
  return m;
}

std::vector<int64_t> llama_qk_gguf_rows(int64_t rows, int64_t n_head) {
  check_permute_shape(rows, n_head);
  std::vector<int64_t> m(static_cast<size_t>(rows));
  for (int64_t h = 0; h < rows; ++h) m[size_t(h)] = llama_qk_gguf_row(h, rows, n_head);
  return m;
}

std::vector<float> llama3_rope_factors(const LlamaConfig& c) {
  std::vector<float> out;
  if (c.rope_scaling_type != "llama3") return out;
  const double base = c.rope_theta.value_or(10000.0);
  const int64_t dim = c.head_dim;
  const double factor = c.rope_scaling_factor.value_or(8.0);
  const double low = c.llama3_low_freq_factor.value_or(1.0);
  const double high = c.llama3_high_freq_factor.value_or(4.0);
  const double old_ctx = double(c.rope_original_context.value_or(8192));
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  const double pi = 3.14159265358979323846;
  for (int64_t i = 0; i < dim; i += 2) {
    const double freq = 1.0 / std::pow(base, double(i) / double(dim));
    const double wavelen = 2 * pi / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1;
    } else if (wavelen > low_wavelen) {
      f = factor;
    } else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      f = 1 / ((1 - smooth) / factor + smooth);
    }
    out.push_back(float(f));
  }
  return out;
}

}  // namespace qpack
