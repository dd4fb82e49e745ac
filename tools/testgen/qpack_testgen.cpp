// qpack-testgen: deterministic test checkpoints, generated rather than
// committed.
//
//   qpack-testgen llama OUT_DIR [--hidden H] [--intermediate I] [--layers L]
//                 [--vocab V] [--heads N] [--kv-heads N] [--tied]
//                 [--dtype f16|bf16|f32] [--shard-bytes N] [--seed S]
//       A Llama-shaped model with Hugging Face tensor names and a config.json
//       llama.cpp's converter accepts, weights ~ N(0, 0.02) from a fixed PRNG
//       (same bytes on every machine). Heads default to the largest divisor
//       of H that is <= H/64 (at least 1), kv heads to the heads; k_proj and
//       v_proj are [kv_heads * H/heads, H]. --tied: no lm_head.weight
//       (tie_word_embeddings). With --shard-bytes, sharded with
//       model.safetensors.index.json.
//
//   qpack-testgen stories SRC.bin OUT.safetensors [--dtype f16|bf16|f32]
//       The llama2.c "legacy v0" checkpoint (../shared/data/stories260K) as an
//       HF Llama checkpoint; config.json is written beside OUT. llama2.c
//       rotates adjacent pairs (Meta's order) while HF rotates halves, so
//       q_proj/k_proj rows get the permutation Meta's weights get on the way
//       to HF (transformers' convert_llama_weights_to_hf): per head, row
//       2i+j moves to j*(d/2)+i. The HF->GGUF permutation undoes exactly that.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/spec/dtype.hpp"

using namespace qpack;

namespace {

// xoshiro256** with splitmix64 seeding: fixed, portable, fast.
struct Rng {
  uint64_t s[4];
  explicit Rng(uint64_t seed) {
    for (auto& x : s) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      x = z ^ (z >> 31);
    }
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
  }
  // Approximately normal: the sum of four uniforms, centred and scaled
  // (cheap, and exactly reproducible in integer arithmetic up to the scaling).
  float normal(float stddev) {
    const uint64_t a = next(), b = next();
    const int64_t sum = int64_t(a & 0xffffffff) + int64_t(a >> 32) + int64_t(b & 0xffffffff) +
                        int64_t(b >> 32) - 2 * int64_t(0xffffffff);
    return float(double(sum) * (stddev * 1.7320508075688772 / 4294967295.0));
  }
};

DType parse_dtype(const std::string& s) {
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  if (s == "f32") return DType::F32;
  throw Error(ErrorCode::InvalidArgument, "", "", "--dtype must be f16, bf16 or f32");
}

void store(uint8_t* dst, DType d, float v) {
  if (d == DType::F32) {
    std::memcpy(dst, &v, 4);
  } else {
    const uint16_t h = d == DType::F16 ? f32_to_f16_rne(v) : f32_to_bf16_rne(v);
    std::memcpy(dst, &h, 2);
  }
}

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  bool norm = false;
  uint64_t numel() const {
    uint64_t n = 1;
    for (auto d : shape) n *= uint64_t(d);
    return n;
  }
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) throw Error(ErrorCode::Io, path, "", "cannot write");
}

int llama(int argc, char** argv) {
  if (argc < 1) throw Error(ErrorCode::InvalidArgument, "", "", "llama needs OUT_DIR");
  const std::string dir = argv[0];
  // OUT_DIR is made when missing, as `mkdir -p` would; an existing path that
  // is not a folder is an error.
  {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec || !std::filesystem::is_directory(dir))
      throw Error(ErrorCode::Io, dir, "",
                  "cannot make the output folder" + (ec ? ": " + ec.message() : std::string()));
  }
  int64_t hidden = 256, inter = 688, layers = 2, vocab = 1000;
  int64_t heads = 0, kv_heads = 0;  // 0: the defaults above
  bool tied = false;
  uint64_t shard_bytes = 0, seed = 1;
  DType dtype = DType::F16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(ErrorCode::InvalidArgument, "", "", a + " needs a value");
      return argv[++i];
    };
    if (a == "--hidden")
      hidden = std::stoll(val());
    else if (a == "--intermediate")
      inter = std::stoll(val());
    else if (a == "--layers")
      layers = std::stoll(val());
    else if (a == "--vocab")
      vocab = std::stoll(val());
    else if (a == "--heads")
      heads = std::stoll(val());
    else if (a == "--kv-heads")
      kv_heads = std::stoll(val());
    else if (a == "--tied")
      tied = true;
    else if (a == "--dtype")
      dtype = parse_dtype(val());
    else if (a == "--shard-bytes")
      shard_bytes = std::stoull(val());
    else if (a == "--seed")
      seed = std::stoull(val());
    else
      throw Error(ErrorCode::InvalidArgument, "", "", "unknown option " + a);
  }
  if (hidden <= 0 || inter <= 0 || layers <= 0 || vocab <= 0)
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--hidden, --intermediate, --layers and --vocab must be positive");
  if (heads == 0) {
    heads = 1;
    for (int64_t d = std::max<int64_t>(1, hidden / 64); d >= 1; --d) {
      if (hidden % d == 0) {
        heads = d;
        break;
      }
    }
  }
  if (heads <= 0 || hidden % heads != 0)
    throw Error(
        ErrorCode::InvalidArgument, "", "",
        "--heads " + std::to_string(heads) + " does not divide --hidden " + std::to_string(hidden));
  if (kv_heads == 0) kv_heads = heads;
  if (kv_heads <= 0 || heads % kv_heads != 0)
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--kv-heads " + std::to_string(kv_heads) + " does not divide --heads " +
                    std::to_string(heads));
  const int64_t kv_dim = kv_heads * (hidden / heads);
  std::vector<Spec> specs;
  specs.push_back({"model.embed_tokens.weight", {vocab, hidden}});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", {hidden}, true});
    specs.push_back({p + "self_attn.q_proj.weight", {hidden, hidden}});
    specs.push_back({p + "self_attn.k_proj.weight", {kv_dim, hidden}});
    specs.push_back({p + "self_attn.v_proj.weight", {kv_dim, hidden}});
    specs.push_back({p + "self_attn.o_proj.weight", {hidden, hidden}});
    specs.push_back({p + "post_attention_layernorm.weight", {hidden}, true});
    specs.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
    specs.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
    specs.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
  }
  specs.push_back({"model.norm.weight", {hidden}, true});
  if (!tied) specs.push_back({"lm_head.weight", {vocab, hidden}});

  const uint64_t esize = dtype == DType::F32 ? 4 : 2;
  // Split into shards of at most shard_bytes (at least one tensor each).
  std::vector<std::vector<size_t>> shards(1);
  uint64_t in_shard = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t b = specs[i].numel() * esize;
    if (shard_bytes && in_shard > 0 && in_shard + b > shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += b;
  }
  Rng rng(seed);
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total = 0;
  std::vector<uint8_t> buf;
  for (size_t s = 0; s < shards.size(); ++s) {
    char fname[64];
    if (shards.size() == 1)
      std::snprintf(fname, sizeof fname, "model.safetensors");
    else
      std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    std::vector<TensorToWrite> decl;
    for (size_t i : shards[s]) {
      TensorToWrite t;
      t.name = specs[i].name;
      t.dtype = dtype;
      t.shape = specs[i].shape;
      t.nbytes = specs[i].numel() * esize;
      decl.push_back(t);
      weight_map[specs[i].name] = fname;
    }
    SafetensorsStreamWriter w(dir + "/" + fname, decl, {{"format", "pt"}}, true);
    for (size_t i : shards[s]) {
      const uint64_t n = specs[i].numel();
      const uint64_t chunk = 1 << 20;
      buf.resize(chunk * esize);
      for (uint64_t done = 0; done < n; done += chunk) {
        const uint64_t m = std::min(chunk, n - done);
        for (uint64_t k = 0; k < m; ++k)
          store(&buf[k * esize], dtype,
                specs[i].norm ? 1.0f + rng.normal(0.05f) : rng.normal(0.02f));
        w.append(buf.data(), m * esize);
      }
      total += n * esize;
    }
    w.commit();
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_text(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  }
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"hidden_size", hidden},
                           {"intermediate_size", inter},
                           {"num_hidden_layers", layers},
                           {"num_attention_heads", heads},
                           {"num_key_value_heads", kv_heads},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", 10000.0},
                           {"max_position_embeddings", 2048},
                           {"vocab_size", vocab},
                           {"tie_word_embeddings", tied},
                           {"torch_dtype", dtype == DType::F16    ? "float16"
                                           : dtype == DType::BF16 ? "bfloat16"
                                                                  : "float32"}};
  write_text(dir + "/config.json", config.dump(2) + "\n");
  std::printf("wrote %zu tensors, %.3f GB in %zu shard(s) to %s\n", specs.size(),
              double(total) / 1e9, shards.size(), dir.c_str());
  return 0;
}

int stories(int argc, char** argv) {
  if (argc < 2)
    throw Error(ErrorCode::InvalidArgument, "", "", "stories needs SRC.bin OUT.safetensors");
  const std::string src = argv[0], out = argv[1];
  DType dtype = DType::F32;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dtype" && i + 1 < argc)
      dtype = parse_dtype(argv[++i]);
    else
      throw Error(ErrorCode::InvalidArgument, "", "", "unknown option " + a);
  }
  MappedFile f(src);
  if (f.size() < 28) throw Error(ErrorCode::Truncated, src, "", "shorter than the 28-byte header");
  int32_t h[7];
  std::memcpy(h, f.data(), 28);
  const int64_t dim = h[0], hidden = h[1], L = h[2], heads = h[3], kv_heads = h[4],
                vocab = h[5] < 0 ? -int64_t(h[5]) : h[5], seq = h[6];
  const bool shared = h[5] > 0;
  if (dim <= 0 || hidden <= 0 || L <= 0 || heads <= 0 || kv_heads <= 0 || vocab <= 0 || dim % heads)
    throw Error(ErrorCode::BadHeader, src, "", "implausible llama2.c header");
  const int64_t kv_dim = kv_heads * dim / heads;
  const float* p = reinterpret_cast<const float*>(f.data() + 28);
  const uint64_t avail = (f.size() - 28) / 4;
  uint64_t off = 0;
  auto take = [&](uint64_t n) {
    if (off + n > avail) throw Error(ErrorCode::Truncated, src, "", "weights end early");
    const float* r = p + off;
    off += n;
    return r;
  };
  const float* emb = take(uint64_t(vocab * dim));
  const float* rms_att = take(uint64_t(L * dim));
  const float* wq = take(uint64_t(L * dim * dim));
  const float* wk = take(uint64_t(L * kv_dim * dim));
  const float* wv = take(uint64_t(L * kv_dim * dim));
  const float* wo = take(uint64_t(L * dim * dim));
  const float* rms_ffn = take(uint64_t(L * dim));
  const float* w1 = take(uint64_t(L * hidden * dim));
  const float* w2 = take(uint64_t(L * dim * hidden));
  const float* w3 = take(uint64_t(L * hidden * dim));
  const float* rms_final = take(uint64_t(dim));
  take(uint64_t(seq * (dim / heads / 2)) * 2);  // the unused RoPE tables
  const float* cls = shared ? emb : take(uint64_t(vocab * dim));

  std::vector<std::vector<uint8_t>> bufs;
  std::vector<TensorToWrite> tensors;
  const uint64_t esize = dtype == DType::F32 ? 4 : 2;
  // n_head > 0: rows reordered from llama2.c's adjacent RoPE pairs to HF's
  // halves (destination row h*d + j*(d/2) + i takes source row h*d + 2i + j).
  auto add = [&](const std::string& name, std::vector<int64_t> shape, const float* data,
                 int64_t n_head = 0) {
    uint64_t n = 1;
    for (auto d : shape) n *= uint64_t(d);
    const int64_t cols = shape.size() == 2 ? shape[1] : int64_t(n);
    const int64_t rows = int64_t(n) / cols, d = n_head ? rows / n_head : rows;
    bufs.emplace_back(n * esize);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t src_row = r;
      if (n_head) {
        const int64_t h = r / d, jj = (r % d) / (d / 2), i = (r % d) % (d / 2);
        src_row = h * d + 2 * i + jj;
      }
      for (int64_t c = 0; c < cols; ++c) {
        float v;
        std::memcpy(&v, data + src_row * cols + c, 4);
        store(&bufs.back()[uint64_t(r * cols + c) * esize], dtype, v);
      }
    }
    TensorToWrite t;
    t.name = name;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.nbytes = n * esize;
    tensors.push_back(t);
  };
  add("model.embed_tokens.weight", {vocab, dim}, emb);
  for (int64_t l = 0; l < L; ++l) {
    const std::string q = "model.layers." + std::to_string(l) + ".";
    add(q + "input_layernorm.weight", {dim}, rms_att + l * dim);
    add(q + "self_attn.q_proj.weight", {dim, dim}, wq + l * dim * dim, heads);
    add(q + "self_attn.k_proj.weight", {kv_dim, dim}, wk + l * kv_dim * dim, kv_heads);
    add(q + "self_attn.v_proj.weight", {kv_dim, dim}, wv + l * kv_dim * dim);
    add(q + "self_attn.o_proj.weight", {dim, dim}, wo + l * dim * dim);
    add(q + "post_attention_layernorm.weight", {dim}, rms_ffn + l * dim);
    add(q + "mlp.gate_proj.weight", {hidden, dim}, w1 + l * hidden * dim);
    add(q + "mlp.down_proj.weight", {dim, hidden}, w2 + l * dim * hidden);
    add(q + "mlp.up_proj.weight", {hidden, dim}, w3 + l * hidden * dim);
  }
  add("model.norm.weight", {dim}, rms_final);
  add("lm_head.weight", {vocab, dim}, cls);
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].data = bufs[i].data();
  write_safetensors(out, tensors, {{"format", "pt"}, {"source", "llama2.c stories260K"}}, true);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"hidden_size", dim},
                           {"intermediate_size", hidden},
                           {"num_hidden_layers", L},
                           {"num_attention_heads", heads},
                           {"num_key_value_heads", kv_heads},
                           {"vocab_size", vocab},
                           {"rms_norm_eps", 1e-5},  // llama2.c's run.c
                           {"rope_theta", 10000.0},
                           {"max_position_embeddings", seq},
                           {"tie_word_embeddings", shared}};
  const size_t slash = out.find_last_of('/');
  write_text(
      (slash == std::string::npos ? std::string(".") : out.substr(0, slash)) + "/config.json",
      config.dump(2) + "\n");
  std::printf("wrote %zu tensors (%s) to %s\n", tensors.size(), dtype_name(dtype), out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: qpack-testgen llama OUT_DIR [--hidden H] [--intermediate I] [--layers L] [--vocab "
      "V]\n"
      "                     [--heads N] [--kv-heads N] [--tied]\n"
      "                     [--dtype f16|bf16|f32] [--shard-bytes N] [--seed S]\n"
      "       qpack-testgen stories SRC.bin OUT.safetensors [--dtype f16|bf16|f32]\n";
  if (argc < 2 || std::string(argv[1]) == "--help") {
    std::fputs(usage.c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  try {
    const std::string cmd = argv[1];
    if (cmd == "llama") return llama(argc - 2, argv + 2);
    if (cmd == "stories") return stories(argc - 2, argv + 2);
    std::fputs(usage.c_str(), stderr);
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "qpack-testgen: error: %s\n", e.what());
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qpack-testgen: error: %s\n", e.what());
    return 1;
  }
}
