// The ggml tensor types' block geometry and the GGUF value types: the
// numbers docs/gguf.md tabulates (ggml's type traits, gguf-py's
// GGML_QUANT_SIZES).
#include <cstring>

#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"

namespace qpack {

namespace {
constexpr uint32_t kQK = 256;  // QK_K: super-block of the K-quants and the 256-element IQ types
}  // namespace

const std::vector<GgmlTypeInfo>& ggml_types() {
  static const std::vector<GgmlTypeInfo> types = {
      {GgmlType::F32, "F32", 1, 4},
      {GgmlType::F16, "F16", 1, 2},
      {GgmlType::Q4_0, "Q4_0", 32, 2 + 16},
      {GgmlType::Q4_1, "Q4_1", 32, 2 + 2 + 16},
      {GgmlType::Q5_0, "Q5_0", 32, 2 + 4 + 16},
      {GgmlType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16},
      {GgmlType::Q8_0, "Q8_0", 32, 2 + 32},
      {GgmlType::Q8_1, "Q8_1", 32, 4 + 4 + 32},
      {GgmlType::Q2_K, "Q2_K", kQK, 2 + 2 + kQK / 16 + kQK / 4},
      {GgmlType::Q3_K, "Q3_K", kQK, 2 + kQK / 4 + kQK / 8 + 12},
      {GgmlType::Q4_K, "Q4_K", kQK, 2 + 2 + kQK / 2 + 12},
      {GgmlType::Q5_K, "Q5_K", kQK, 2 + 2 + kQK / 2 + kQK / 8 + 12},
      {GgmlType::Q6_K, "Q6_K", kQK, 2 + kQK / 2 + kQK / 4 + kQK / 16},
      {GgmlType::Q8_K, "Q8_K", kQK, 4 + kQK + kQK / 8},
      {GgmlType::IQ2_XXS, "IQ2_XXS", kQK, 2 + kQK / 4},
      {GgmlType::IQ2_XS, "IQ2_XS", kQK, 2 + kQK / 4 + kQK / 32},
      {GgmlType::IQ3_XXS, "IQ3_XXS", kQK, 2 + kQK / 4 + kQK / 8},
      {GgmlType::IQ1_S, "IQ1_S", kQK, 2 + kQK / 8 + kQK / 16},
      {GgmlType::IQ4_NL, "IQ4_NL", 32, 2 + 16},
      {GgmlType::IQ3_S, "IQ3_S", kQK, 2 + kQK / 4 + kQK / 8 + kQK / 32 + 4},
      {GgmlType::IQ2_S, "IQ2_S", kQK, 2 + kQK / 4 + kQK / 16},
      {GgmlType::IQ4_XS, "IQ4_XS", kQK, 2 + 2 + kQK / 2 + kQK / 64},
      {GgmlType::I8, "I8", 1, 1},
      {GgmlType::I16, "I16", 1, 2},
      {GgmlType::I32, "I32", 1, 4},
      {GgmlType::I64, "I64", 1, 8},
      {GgmlType::F64, "F64", 1, 8},
      {GgmlType::IQ1_M, "IQ1_M", kQK, kQK / 8 + kQK / 16 + kQK / 32},
      {GgmlType::BF16, "BF16", 1, 2},
      {GgmlType::TQ1_0, "TQ1_0", kQK, 2 + 4 * 13},
      {GgmlType::TQ2_0, "TQ2_0", kQK, 2 + 64},
      {GgmlType::MXFP4, "MXFP4", 32, 1 + 16},
      {GgmlType::NVFP4, "NVFP4", 64, 4 + 32},
      {GgmlType::Q1_0, "Q1_0", 128, 2 + 16},
  };
  return types;
}

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const GgmlTypeInfo& t : ggml_types())
    if (uint32_t(t.type) == type) return &t;
  return nullptr;
}

const char* ggml_type_name(GgmlType type) {
  const GgmlTypeInfo* t = ggml_type_info(uint32_t(type));
  return t ? t->name : "unknown";
}

std::optional<DType> ggml_plain_dtype(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
      return DType::F32;
    case GgmlType::F16:
      return DType::F16;
    case GgmlType::BF16:
      return DType::BF16;
    case GgmlType::F64:
      return DType::F64;
    case GgmlType::I8:
      return DType::I8;
    case GgmlType::I16:
      return DType::I16;
    case GgmlType::I32:
      return DType::I32;
    case GgmlType::I64:
      return DType::I64;
    default:
      return std::nullopt;
  }
}

bool gguf_type_known(uint32_t type) { return type <= uint32_t(GgufType::Float64); }

uint64_t gguf_type_min_bytes(GgufType type) {
  switch (type) {
    case GgufType::Uint8:
    case GgufType::Int8:
    case GgufType::Bool:
      return 1;
    case GgufType::Uint16:
    case GgufType::Int16:
      return 2;
    case GgufType::Uint32:
    case GgufType::Int32:
    case GgufType::Float32:
      return 4;
    case GgufType::Uint64:
    case GgufType::Int64:
    case GgufType::Float64:
      return 8;
    case GgufType::String:
      return 8;
    case GgufType::Array:
      return 4 + 8;
  }
  return 1;
}

uint64_t gguf_value_bytes(const GgufValue& v) {
  if (v.type == GgufType::String) return 8 + v.str.size();
  if (v.type != GgufType::Array) return gguf_type_min_bytes(v.type);
  uint64_t n = gguf_type_min_bytes(GgufType::Array);
  for (const GgufValue& item : v.items) n += gguf_value_bytes(item);
  return n;
}

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::Uint8:
      return "u8";
    case GgufType::Int8:
      return "i8";
    case GgufType::Uint16:
      return "u16";
    case GgufType::Int16:
      return "i16";
    case GgufType::Uint32:
      return "u32";
    case GgufType::Int32:
      return "i32";
    case GgufType::Float32:
      return "f32";
    case GgufType::Bool:
      return "bool";
    case GgufType::String:
      return "string";
    case GgufType::Array:
      return "array";
    case GgufType::Uint64:
      return "u64";
    case GgufType::Int64:
      return "i64";
    case GgufType::Float64:
      return "f64";
  }
  return "unknown";
}

namespace {
GgufValue scalar(GgufType t) {
  GgufValue v;
  v.type = t;
  return v;
}
}  // namespace

GgufValue GgufValue::of_u8(uint8_t x) {
  auto v = scalar(GgufType::Uint8);
  v.u = x;
  return v;
}
GgufValue GgufValue::of_i8(int8_t x) {
  auto v = scalar(GgufType::Int8);
  v.i = x;
  return v;
}
GgufValue GgufValue::of_u16(uint16_t x) {
  auto v = scalar(GgufType::Uint16);
  v.u = x;
  return v;
}
GgufValue GgufValue::of_i16(int16_t x) {
  auto v = scalar(GgufType::Int16);
  v.i = x;
  return v;
}
GgufValue GgufValue::of_u32(uint32_t x) {
  auto v = scalar(GgufType::Uint32);
  v.u = x;
  return v;
}
GgufValue GgufValue::of_i32(int32_t x) {
  auto v = scalar(GgufType::Int32);
  v.i = x;
  return v;
}
GgufValue GgufValue::of_u64(uint64_t x) {
  auto v = scalar(GgufType::Uint64);
  v.u = x;
  return v;
}
GgufValue GgufValue::of_i64(int64_t x) {
  auto v = scalar(GgufType::Int64);
  v.i = x;
  return v;
}
GgufValue GgufValue::of_f32(float x) {
  auto v = scalar(GgufType::Float32);
  v.f = x;
  return v;
}
GgufValue GgufValue::of_f64(double x) {
  auto v = scalar(GgufType::Float64);
  v.f = x;
  return v;
}
GgufValue GgufValue::of_bool(bool x) {
  auto v = scalar(GgufType::Bool);
  v.b = x;
  return v;
}
GgufValue GgufValue::of_string(std::string x) {
  auto v = scalar(GgufType::String);
  v.str = std::move(x);
  return v;
}
GgufValue GgufValue::of_array(GgufType item_type, std::vector<GgufValue> items) {
  auto v = scalar(GgufType::Array);
  v.array_type = item_type;
  v.items = std::move(items);
  return v;
}

bool GgufValue::operator==(const GgufValue& o) const {
  if (type != o.type) return false;
  switch (type) {
    case GgufType::Uint8:
    case GgufType::Uint16:
    case GgufType::Uint32:
    case GgufType::Uint64:
      return u == o.u;
    case GgufType::Int8:
    case GgufType::Int16:
    case GgufType::Int32:
    case GgufType::Int64:
      return i == o.i;
    case GgufType::Float32:
    case GgufType::Float64:
      // Bit patterns: a NaN read back equals the NaN written.
      return std::memcmp(&f, &o.f, sizeof f) == 0;
    case GgufType::Bool:
      return b == o.b;
    case GgufType::String:
      return str == o.str;
    case GgufType::Array:
      return array_type == o.array_type && items == o.items;
  }
  return false;
}

uint64_t GgufTensorInfo::num_elements() const {
  unsigned long long n = 1;
  for (int64_t d : ne)
    if (d < 0 || mul_overflows_u64(n, (unsigned long long)d, &n)) return UINT64_MAX;
  return n;
}

uint64_t gguf_tensor_nbytes(GgmlType type, const std::vector<int64_t>& ne, const std::string& file,
                            const std::string& tensor) {
  const GgmlTypeInfo* info = ggml_type_info(uint32_t(type));
  if (!info)
    throw Error(ErrorCode::GgufUnknownTensorType, file, tensor,
                "unknown ggml type " + std::to_string(uint32_t(type)));
  const int64_t row = ne.empty() ? 1 : ne[0];
  if (row % int64_t(info->block_size) != 0)
    throw Error(ErrorCode::GgufBadRowSize, file, tensor,
                "ne[0] = " + std::to_string(row) + " is not a multiple of " + info->name +
                    "'s block size " + std::to_string(info->block_size));
  // ggml requires the element count to stay below INT64_MAX.
  unsigned long long n = 1;
  for (int64_t d : ne)
    if (d < 0 || mul_overflows_u64(n, (unsigned long long)d, &n) || n >= uint64_t(INT64_MAX))
      throw Error(ErrorCode::GgufSizeOverflow, file, tensor, "the element count overflows 63 bits");
  unsigned long long bytes;
  if (mul_overflows_u64(n / info->block_size, info->type_size, &bytes))
    throw Error(ErrorCode::GgufSizeOverflow, file, tensor, "the byte size overflows 64 bits");
  return bytes;
}

}  // namespace qpack
