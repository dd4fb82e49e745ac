#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace qpack {

// XXH3-64 (seed 0) of a byte range: the checksum of every .qpack section.
uint64_t checksum64(const void* data, size_t size);

class Checksum64 {
 public:
  Checksum64();
  ~Checksum64();
  Checksum64(const Checksum64&) = delete;
  Checksum64& operator=(const Checksum64&) = delete;
  void update(const void* data, size_t size);
  uint64_t digest() const;

 private:
  void* state_;
};

namespace detail {
// The build's default XXH3 kernel (SSE2 on x86-64), and whether checksum64
// takes the AVX2 one instead; for the test that holds them equal.
uint64_t checksum64_baseline(const void* data, size_t size);
bool checksum64_uses_avx2();
}  // namespace detail

std::string checksum_to_hex(uint64_t v);  // 16 lower-case hex digits
bool checksum_from_hex(const std::string& s, uint64_t* out);

}  // namespace qpack
