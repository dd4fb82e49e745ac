// Replays the fuzz entry points under the ordinary test build (g++, label
// `fuzz`): every seed, then a fixed number of random mutations of them (bit
// flips, byte overwrites, truncations, insertions, splices, length-field
// rewrites). Only qpack::Error may escape the library, which the entry
// points catch; any other exception fails the test, a trap or a sanitizer
// report kills it. The seed is printed; QPACK_TEST_SEED replays a run.
#include <gtest/gtest.h>

#include <random>

#include "fuzz/fuzz_entry.hpp"
#include "fuzz/seeds.hpp"
#include "testutil.hpp"

namespace qpack::fuzz {
namespace {

constexpr int kMutations = 2500;

corpus::Bytes mutate(const corpus::Bytes& in, const std::vector<Seed>& pool, std::mt19937_64& rng,
                     size_t keep) {
  corpus::Bytes b = in;
  const int steps = 1 + int(rng() % 4);
  for (int s = 0; s < steps; ++s) {
    const size_t n = b.size();
    switch (rng() % 8) {
      case 0:  // bit flip
        if (n > keep) b[keep + rng() % (n - keep)] ^= uint8_t(1u << (rng() % 8));
        break;
      case 1: {  // interesting byte
        static const uint8_t v[] = {0,   0xff, 0x7f, 0x80, '{', '}', '[', ']',
                                    '"', ':',  ',',  '-',  '0', '9', ' ', 'e'};
        if (n > keep) b[keep + rng() % (n - keep)] = v[rng() % sizeof v];
        break;
      }
      case 2:  // truncate
        if (n > keep) b.resize(keep + rng() % (n - keep + 1));
        break;
      case 3: {  // insert random bytes
        const size_t at = n > keep ? keep + rng() % (n - keep + 1) : n;
        const size_t len = 1 + rng() % 16;
        for (size_t i = 0; i < len; ++i) b.insert(b.begin() + long(at), uint8_t(rng()));
        break;
      }
      case 4: {  // splice a piece of another seed
        const corpus::Bytes& o = pool[rng() % pool.size()].bytes;
        if (o.empty() || n <= keep) break;
        const size_t from = rng() % o.size(),
                     len = 1 + rng() % std::min<size_t>(64, o.size() - from);
        const size_t at = keep + rng() % (n - keep);
        for (size_t i = 0; i < len && at + i < b.size(); ++i) b[at + i] = o[from + i];
        break;
      }
      case 5: {  // rewrite a little-endian u64 somewhere (lengths, offsets)
        if (n < keep + 8) break;
        const size_t at = keep + (rng() % 2 ? 0 : 8 * (rng() % ((n - keep) / 8)));
        static const uint64_t v[] = {
            0, 1, 7, 8, 63, 64, 65, 100000000, 100000001, ~uint64_t(0), uint64_t(1) << 63};
        const uint64_t x = rng() % 2 ? v[rng() % (sizeof v / sizeof v[0])] : rng() % (n + 16);
        for (int i = 0; i < 8 && at + size_t(i) < b.size(); ++i)
          b[at + size_t(i)] = uint8_t(x >> (8 * i));
        break;
      }
      case 6:  // duplicate a chunk (repeats keys, sections)
        if (n > keep + 2) {
          const size_t from = keep + rng() % (n - keep - 1),
                       len = 1 + rng() % std::min<size_t>(32, n - from);
          corpus::Bytes chunk(b.begin() + long(from), b.begin() + long(from + len));
          b.insert(b.begin() + long(from), chunk.begin(), chunk.end());
        }
        break;
      default:  // random bytes over a range
        if (n > keep) {
          const size_t at = keep + rng() % (n - keep);
          const size_t len = 1 + rng() % 8;
          for (size_t i = 0; i < len && at + i < b.size(); ++i) b[at + i] = uint8_t(rng());
        }
    }
  }
  return b;
}

template <typename Entry>
void replay(const std::vector<Seed>& seeds, Entry entry, size_t keep, uint64_t salt) {
  ASSERT_FALSE(seeds.empty());
  for (const Seed& s : seeds) {
    SCOPED_TRACE(s.name);
    EXPECT_NO_THROW(entry(s.bytes.data(), s.bytes.size()));
  }
  std::mt19937_64 rng(test::test_seed() ^ salt);
  for (int i = 0; i < kMutations; ++i) {
    const Seed& s = seeds[rng() % seeds.size()];
    corpus::Bytes b = mutate(s.bytes, seeds, rng, keep);
    if (keep == 1 && !b.empty()) b[0] = uint8_t(rng() % 4);  // the qpack target's mode byte
    ASSERT_NO_THROW(entry(b.data(), b.size())) << "mutation " << i << " of " << s.name;
  }
  // Pure noise and every prefix length of a valid input.
  for (int i = 0; i < 200; ++i) {
    corpus::Bytes b(rng() % 300);
    for (auto& v : b) v = uint8_t(rng());
    ASSERT_NO_THROW(entry(b.data(), b.size()));
  }
  const corpus::Bytes& last = seeds.back().bytes;
  for (size_t n = 0; n <= last.size(); n += 1 + n / 16) ASSERT_NO_THROW(entry(last.data(), n));
}

TEST(FuzzReplay, SafetensorsHeader) { replay(safetensors_seeds(), safetensors_header, 0, 0x5afe); }
TEST(FuzzReplay, QpackReader) { replay(qpack_seeds(), qpack_reader, 1, 0x9ac4); }
TEST(FuzzReplay, GgufReader) { replay(gguf_seeds(), gguf_reader, 0, 0x6609); }

}  // namespace
}  // namespace qpack::fuzz
