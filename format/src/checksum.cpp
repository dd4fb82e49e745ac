#include "qpack/format/checksum.hpp"

#include <cstdio>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace qpack {

namespace detail {

#if QPACK_XXH3_AVX2
uint64_t checksum64_avx2(const void* data, size_t size);  // checksum_avx2.cpp
#endif

uint64_t checksum64_baseline(const void* data, size_t size) { return XXH3_64bits(data, size); }

bool checksum64_uses_avx2() {
#if QPACK_XXH3_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

}  // namespace detail

uint64_t checksum64(const void* data, size_t size) {
#if QPACK_XXH3_AVX2
  // Below 241 bytes XXH3 has no vector loop; the branch is not worth it.
  if (size > 240 && detail::checksum64_uses_avx2()) return detail::checksum64_avx2(data, size);
#endif
  return detail::checksum64_baseline(data, size);
}

Checksum64::Checksum64() : state_(XXH3_createState()) {
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_));
}
Checksum64::~Checksum64() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void Checksum64::update(const void* data, size_t size) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, size);
}
uint64_t Checksum64::digest() const {
  return XXH3_64bits_digest(static_cast<XXH3_state_t*>(state_));
}

std::string checksum_to_hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool checksum_from_hex(const std::string& s, uint64_t* out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return false;
    v = (v << 4) | uint64_t(d);
  }
  *out = v;
  return true;
}

}  // namespace qpack
