#include "qpack/dtype.hpp"

namespace qpack {

namespace {
struct DTypeRow {
  DType type;
  const char* name;
  int bits;
};
constexpr DTypeRow kRows[] = {
    {DType::BOOL, "BOOL", 8},       {DType::U8, "U8", 8},           {DType::I8, "I8", 8},
    {DType::F8_E5M2, "F8_E5M2", 8}, {DType::F8_E4M3, "F8_E4M3", 8}, {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::I16, "I16", 16},        {DType::U16, "U16", 16},        {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},      {DType::I32, "I32", 32},        {DType::U32, "U32", 32},
    {DType::F32, "F32", 32},        {DType::F64, "F64", 64},        {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},        {DType::C64, "C64", 64},        {DType::F4, "F4", 4},
    {DType::F6_E2M3, "F6_E2M3", 6}, {DType::F6_E3M2, "F6_E3M2", 6},
};
}  // namespace

std::optional<DType> dtype_from_string(std::string_view s) {
  for (const auto& r : kRows)
    if (s == r.name) return r.type;
  return std::nullopt;
}

const char* dtype_name(DType t) {
  for (const auto& r : kRows)
    if (r.type == t) return r.name;
  return "?";
}

int dtype_bits(DType t) {
  for (const auto& r : kRows)
    if (r.type == t) return r.bits;
  return 0;
}

}  // namespace qpack
