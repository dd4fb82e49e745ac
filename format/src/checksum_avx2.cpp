// XXH3-64 with xxhash's AVX2 kernel, in a translation unit of its own that
// alone is built with -mavx2; checksum.cpp calls it only on CPUs that have
// AVX2. xxhash's vector kernels give the same digest as its scalar and SSE2
// ones; this one hashes large sections about twice as fast as the SSE2
// default, which the writer and every integrity check feel on multi-GB
// files. Nothing but xxhash's own static functions is compiled here, so no
// AVX2 copy of a shared inline function can leak into the rest of the program.
#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

namespace qpack {
namespace detail {

uint64_t checksum64_avx2(const void* data, size_t size) { return XXH3_64bits(data, size); }

}  // namespace detail
}  // namespace qpack
