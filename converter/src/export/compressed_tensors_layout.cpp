#include "compressed_tensors_layout.hpp"

#include <cmath>
#include <cstring>

#include "qpack/format/error.hpp"

namespace qpack::compressed_tensors {

int64_t packed_words_per_row(int64_t in, int bits) { return (in * bits + 31) / 32; }

int64_t zero_point_rows(int64_t out, int bits) { return (out * bits + 31) / 32; }

void pack_weight_rows(const uint8_t* codes, const GroupLayout& L, uint8_t* out) {
  const uint64_t row_bytes = uint64_t(L.groups_per_axis) * uint64_t(L.bytes_per_group);
  const uint64_t out_bytes = uint64_t(packed_words_per_row(L.axis_len, L.bits)) * 4;
  for (int64_t r = 0; r < L.outer; ++r) {
    std::memcpy(out + r * out_bytes, codes + r * row_bytes, row_bytes);
    std::memset(out + r * out_bytes + row_bytes, 0, out_bytes - row_bytes);
  }
}

void pack_zero_points(const uint8_t* zeros, DType scale_dtype, int64_t rows, int64_t groups,
                      int bits, uint8_t* out) {
  const int per_word = 32 / bits;
  const int64_t words = zero_point_rows(rows, bits);
  const float zmax = float((1 << bits) - 1);
  for (int64_t w = 0; w < words; ++w) {
    for (int64_t g = 0; g < groups; ++g) {
      uint32_t word = 0;
      for (int i = 0; i < per_word; ++i) {
        const int64_t r = w * per_word + i;
        if (r >= rows) break;
        const float z = load_as_f32(zeros, scale_dtype, uint64_t(r * groups + g));
        if (!(z >= 0.0f && z <= zmax) || std::floor(z) != z)
          throw Error(ErrorCode::Internal, "", "",
                      "zero-point " + std::to_string(z) + " of row " + std::to_string(r) +
                          ", group " + std::to_string(g) + " is not an integer code");
        word |= uint32_t(z) << (i * bits);
      }
      const uint64_t at = (uint64_t(w) * uint64_t(groups) + uint64_t(g)) * 4;
      for (int b = 0; b < 4; ++b) out[at + b] = uint8_t(word >> (8 * b));
    }
  }
}

nlohmann::json quantization_config(int bits, int64_t group_size, bool symmetric,
                                   const std::vector<std::string>& ignore) {
  nlohmann::json weights = {
      {"dynamic", false},
      {"group_size", group_size > 0 ? nlohmann::json(group_size) : nlohmann::json(nullptr)},
      {"num_bits", bits},
      {"strategy", group_size > 0 ? "group" : "channel"},
      {"symmetric", symmetric},
      {"type", "int"}};
  return {{"config_groups",
           {{"group_0",
             {{"format", "pack-quantized"},
              {"input_activations", nullptr},
              {"output_activations", nullptr},
              {"targets", {"Linear"}},
              {"weights", std::move(weights)}}}}},
          {"format", "pack-quantized"},
          {"global_compression_ratio", nullptr},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"moe_sparsity_config", nullptr},
          {"quant_method", "compressed-tensors"},
          {"quantization_status", "compressed"},
          {"sparsity_config", nlohmann::json::object()},
          {"transform_config", nlohmann::json::object()},
          {"version", kVersion}};
}

}  // namespace qpack::compressed_tensors
