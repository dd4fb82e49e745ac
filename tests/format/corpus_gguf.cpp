// The GGUF corpus: a little-endian byte builder that can write anything,
// including what the writer refuses, and the cases built with it.
#include "format/corpus_gguf.hpp"

#include <functional>
#include <map>
#include <stdexcept>

namespace qpack::corpus {

namespace {

using B = std::vector<uint8_t>;

void u32(B& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
}
void u64(B& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(uint8_t(v >> (8 * i)));
}
void str(B& b, const std::string& s) {
  u64(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}
void pad_to(B& b, size_t a) {
  while (b.size() % a) b.push_back(0);
}

struct Tensor {
  std::string name;
  std::vector<int64_t> ne;
  uint32_t type = 0;  // F32
  uint64_t offset = 0;
};

// A GGUF file assembled from raw parts: `kvs` is the encoded metadata,
// `n_kv` how many entries it holds (the header says so, right or wrong).
struct Gguf {
  uint32_t magic_version = 3;
  std::string magic = "GGUF";
  uint64_t n_kv = 0;
  B kvs;
  std::vector<Tensor> tensors;
  uint64_t n_tensors_override = UINT64_MAX;
  size_t alignment = 32;
  uint64_t data_bytes = 0;  // after the aligned data start

  void kv_u32(const std::string& key, uint32_t v) {
    str(kvs, key);
    u32(kvs, 4);
    u32(kvs, v);
    ++n_kv;
  }
  void kv_string(const std::string& key, const std::string& v) {
    str(kvs, key);
    u32(kvs, 8);
    str(kvs, v);
    ++n_kv;
  }
  B bytes() const {
    B b(magic.begin(), magic.end());
    u32(b, magic_version);
    u64(b, n_tensors_override != UINT64_MAX ? n_tensors_override : tensors.size());
    u64(b, n_kv);
    b.insert(b.end(), kvs.begin(), kvs.end());
    for (const Tensor& t : tensors) {
      str(b, t.name);
      u32(b, uint32_t(t.ne.size()));
      for (int64_t e : t.ne) u64(b, uint64_t(e));
      u32(b, t.type);
      u64(b, t.offset);
    }
    pad_to(b, alignment);
    for (uint64_t i = 0; i < data_bytes; ++i) b.push_back(uint8_t(i * 7));
    return b;
  }
};

// A valid base: two metadata entries and two F32 tensors, packed.
Gguf base() {
  Gguf g;
  g.kv_string("general.architecture", "llama");
  g.kv_u32("general.quantization_version", 2);
  g.tensors = {{"a", {8, 2}, 0, 0}, {"b", {4}, 0, 64}};
  g.data_bytes = 64 + 16;
  return g;
}

GgufCase c(const std::string& name, B bytes, ErrorCode code, std::string tensor = "",
           std::string key = "") {
  return {name, std::move(bytes), code, std::move(tensor), std::move(key)};
}

using Maker = std::function<GgufCase(const std::string&)>;

const std::vector<std::pair<std::string, Maker>>& makers() {
  static const std::vector<std::pair<std::string, Maker>> m = {
      {"gg_bad_magic",
       [](const std::string& n) {
         Gguf g = base();
         g.magic = "GGUG";
         return c(n, g.bytes(), ErrorCode::GgufBadMagic);
       }},
      {"gg_shorter_than_magic",
       [](const std::string& n) {
         return c(n, {'G', 'G'}, ErrorCode::GgufBadMagic);
       }},
      {"gg_header_truncated",
       [](const std::string& n) {
         B b = base().bytes();
         b.resize(14);  // inside the tensor count
         return c(n, b, ErrorCode::GgufTruncated);
       }},
      {"gg_version_0",
       [](const std::string& n) {
         Gguf g = base();
         g.magic_version = 0;
         return c(n, g.bytes(), ErrorCode::GgufUnsupportedVersion);
       }},
      {"gg_version_1",
       [](const std::string& n) {
         Gguf g = base();
         g.magic_version = 1;
         return c(n, g.bytes(), ErrorCode::GgufUnsupportedVersion);
       }},
      {"gg_version_4",
       [](const std::string& n) {
         Gguf g = base();
         g.magic_version = 4;
         return c(n, g.bytes(), ErrorCode::GgufUnsupportedVersion);
       }},
      {"gg_big_endian",
       [](const std::string& n) {
         Gguf g = base();
         g.magic_version = 0x03000000;
         return c(n, g.bytes(), ErrorCode::GgufBigEndian);
       }},
      {"gg_kv_count_too_large",
       [](const std::string& n) {
         Gguf g = base();
         g.n_kv = uint64_t(1) << 60;
         return c(n, g.bytes(), ErrorCode::GgufBadCount);
       }},
      {"gg_tensor_count_too_large",
       [](const std::string& n) {
         Gguf g = base();
         g.n_tensors_override = 1000000;
         return c(n, g.bytes(), ErrorCode::GgufBadCount);
       }},
      {"gg_key_length_past_end",
       [](const std::string& n) {
         Gguf g;
         u64(g.kvs, 1000000);
         g.kvs.insert(g.kvs.end(), 40, 'k');
         g.n_kv = 1;
         return c(n, g.bytes(), ErrorCode::GgufBadStringLength);
       }},
      {"gg_empty_key",
       [](const std::string& n) {
         Gguf g = base();
         g.kv_u32("", 1);
         return c(n, g.bytes(), ErrorCode::GgufBadKey);
       }},
      {"gg_duplicate_key",
       [](const std::string& n) {
         Gguf g = base();
         g.kv_u32("general.quantization_version", 3);
         return c(n, g.bytes(), ErrorCode::GgufDuplicateKey, "", "general.quantization_version");
       }},
      {"gg_unknown_value_type",
       [](const std::string& n) {
         Gguf g = base();
         str(g.kvs, "x.odd");
         u32(g.kvs, 13);
         u32(g.kvs, 0);
         ++g.n_kv;
         return c(n, g.bytes(), ErrorCode::GgufBadValueType, "", "x.odd");
       }},
      {"gg_unknown_array_item_type",
       [](const std::string& n) {
         Gguf g = base();
         str(g.kvs, "x.arr");
         u32(g.kvs, 9);
         u32(g.kvs, 99);
         u64(g.kvs, 1);
         u32(g.kvs, 0);
         ++g.n_kv;
         return c(n, g.bytes(), ErrorCode::GgufBadValueType, "", "x.arr");
       }},
      {"gg_array_length_past_end",
       [](const std::string& n) {
         Gguf g = base();
         str(g.kvs, "tokenizer.ggml.scores");
         u32(g.kvs, 9);
         u32(g.kvs, 6);
         u64(g.kvs, uint64_t(1) << 62);  // 2^62 f32: 2^64 bytes
         ++g.n_kv;
         return c(n, g.bytes(), ErrorCode::GgufBadArray, "", "tokenizer.ggml.scores");
       }},
      {"gg_array_nesting_too_deep",
       [](const std::string& n) {
         Gguf g = base();
         str(g.kvs, "x.deep");
         u32(g.kvs, 9);
         for (uint32_t d = 0; d < kGgufMaxArrayNesting; ++d) {
           u32(g.kvs, 9);  // items are arrays
           u64(g.kvs, 1);
         }
         u32(g.kvs, 0);
         u64(g.kvs, 1);
         g.kvs.push_back(7);
         ++g.n_kv;
         return c(n, g.bytes(), ErrorCode::GgufArrayTooDeep, "", "x.deep");
       }},
      {"gg_bool_not_0_or_1",
       [](const std::string& n) {
         Gguf g = base();
         str(g.kvs, "x.flag");
         u32(g.kvs, 7);
         g.kvs.push_back(2);
         ++g.n_kv;
         return c(n, g.bytes(), ErrorCode::GgufBadBool, "", "x.flag");
       }},
      {"gg_string_value_past_end",
       [](const std::string& n) {
         Gguf g;
         str(g.kvs, "general.name");
         u32(g.kvs, 8);
         u64(g.kvs, 4096);
         g.kvs.insert(g.kvs.end(), 10, 'n');
         g.n_kv = 1;
         return c(n, g.bytes(), ErrorCode::GgufBadStringLength, "", "general.name");
       }},
      {"gg_value_truncated",
       [](const std::string& n) {
         Gguf g;
         str(g.kvs, "x.big");
         u32(g.kvs, 10);  // u64 value, only 3 bytes of it
         g.n_kv = 1;
         B b = g.bytes();
         b.resize(24 + 8 + 5 + 4 + 3);
         return c(n, b, ErrorCode::GgufTruncated, "", "x.big");
       }},
      {"gg_alignment_not_power_of_two",
       [](const std::string& n) {
         Gguf g = base();
         g.kv_u32("general.alignment", 48);
         return c(n, g.bytes(), ErrorCode::GgufBadAlignment);
       }},
      {"gg_alignment_zero",
       [](const std::string& n) {
         Gguf g = base();
         g.kv_u32("general.alignment", 0);
         return c(n, g.bytes(), ErrorCode::GgufBadAlignment);
       }},
      {"gg_alignment_not_u32",
       [](const std::string& n) {
         Gguf g = base();
         g.kv_string("general.alignment", "32");
         return c(n, g.bytes(), ErrorCode::GgufBadAlignment);
       }},
      {"gg_tensor_name_empty",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].name = "";
         return c(n, g.bytes(), ErrorCode::GgufBadTensorName);
       }},
      {"gg_tensor_name_too_long",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].name = std::string(64, 'w');
         return c(n, g.bytes(), ErrorCode::GgufBadTensorName, std::string(64, 'w'));
       }},
      {"gg_duplicate_tensor",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].name = "a";
         return c(n, g.bytes(), ErrorCode::GgufDuplicateTensor, "a");
       }},
      {"gg_too_many_dims",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].ne = {1, 1, 1, 1, 4};
         return c(n, g.bytes(), ErrorCode::GgufBadDims, "b");
       }},
      {"gg_negative_dim",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[0].ne = {8, -2};
         return c(n, g.bytes(), ErrorCode::GgufBadDims, "a");
       }},
      {"gg_unknown_tensor_type",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].type = 4;  // Q4_2, removed from ggml
         return c(n, g.bytes(), ErrorCode::GgufUnknownTensorType, "b");
       }},
      {"gg_row_not_multiple_of_block",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[0].type = 12;  // Q4_K, blocks of 256
         g.tensors[0].ne = {128, 2};
         return c(n, g.bytes(), ErrorCode::GgufBadRowSize, "a");
       }},
      {"gg_element_count_overflow",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[0].ne = {int64_t(1) << 32, int64_t(1) << 32};
         return c(n, g.bytes(), ErrorCode::GgufSizeOverflow, "a");
       }},
      {"gg_misaligned_offset",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].offset = 68;
         return c(n, g.bytes(), ErrorCode::GgufMisalignedOffset, "b");
       }},
      {"gg_tensor_past_end",
       [](const std::string& n) {
         Gguf g = base();
         g.data_bytes = 64 + 8;  // "b" needs 16
         return c(n, g.bytes(), ErrorCode::GgufTensorOutOfRange, "b");
       }},
      {"gg_offset_past_end",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].offset = uint64_t(1) << 40;
         return c(n, g.bytes(), ErrorCode::GgufTensorOutOfRange, "b");
       }},
      {"gg_tensors_overlap",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors[1].offset = 32;  // inside "a" [0, 64)
         return c(n, g.bytes(), ErrorCode::GgufTensorOverlap, "b");
       }},
      {"gg_overlap_behind_empty_tensor",
       [](const std::string& n) {
         Gguf g = base();
         g.tensors = {{"a", {8, 2}, 0, 0}, {"e", {0}, 0, 32}, {"b", {4}, 0, 32}};
         return c(n, g.bytes(), ErrorCode::GgufTensorOverlap, "b");
       }},
      {"gg_tensor_info_truncated",
       [](const std::string& n) {
         Gguf g = base();
         g.data_bytes = 0;
         g.alignment = 1;
         B b = g.bytes();
         b.resize(b.size() - 6);  // inside the last offset
         return c(n, b, ErrorCode::GgufTruncated, "b");
       }},
      {"gg_data_section_missing",
       [](const std::string& n) {
         Gguf g = base();
         g.data_bytes = 0;
         g.alignment = 1;
         B b = g.bytes();
         if (b.size() % 32 == 0) b.resize(b.size() - 1);
         return c(n, b, ErrorCode::GgufTruncated);
       }},
  };
  return m;
}

}  // namespace

const std::vector<std::string>& gguf_must_fail_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& [n, _] : makers()) v.push_back(n);
    return v;
  }();
  return names;
}

GgufCase make_gguf_must_fail(const std::string& name) {
  for (const auto& [n, make] : makers())
    if (n == name) return make(n);
  throw std::runtime_error("no GGUF must-fail case " + name);
}

std::vector<GgufCase> gguf_valid_samples() {
  std::vector<GgufCase> out;
  out.push_back(c("gg_valid_base", base().bytes(), ErrorCode::Internal));
  {
    Gguf g;
    g.kv_string("general.architecture", "llama");
    out.push_back(c("gg_valid_no_tensors", g.bytes(), ErrorCode::Internal));
  }
  {
    // Every value type, a nested array, an empty array, a quantized tensor,
    // a 0-d and an empty tensor, alignment 64.
    Gguf g;
    g.alignment = 64;
    g.kv_u32("general.alignment", 64);
    for (uint32_t t : {0u, 1u, 2u, 3u, 5u, 6u, 10u, 11u, 12u}) {
      str(g.kvs, "v.t" + std::to_string(t));
      u32(g.kvs, t);
      const int width = t <= 1 ? 1 : t <= 3 ? 2 : t <= 6 ? 4 : 8;
      for (int i = 0; i < width; ++i) g.kvs.push_back(uint8_t(0x41 + i));
      ++g.n_kv;
    }
    str(g.kvs, "v.bool");
    u32(g.kvs, 7);
    g.kvs.push_back(1);
    str(g.kvs, "v.nested");
    u32(g.kvs, 9);
    u32(g.kvs, 9);
    u64(g.kvs, 2);
    for (int k = 0; k < 2; ++k) {
      u32(g.kvs, 8);
      u64(g.kvs, 1);
      str(g.kvs, k ? "b" : "a");
    }
    str(g.kvs, "v.empty");
    u32(g.kvs, 9);
    u32(g.kvs, 4);
    u64(g.kvs, 0);
    g.n_kv += 3;
    g.kv_string("v.str", "tab\there");
    g.tensors = {{"q", {256, 2}, 12, 0}, {"s", {}, 0, 320}, {"e", {0, 3}, 1, 384}};
    g.data_bytes = 384;
    out.push_back(c("gg_valid_every_type", g.bytes(), ErrorCode::Internal));
  }
  return out;
}

}  // namespace qpack::corpus
