#include "qpack/converter/partition.hpp"

namespace qpack {

std::vector<size_t> balanced_partition(const std::vector<uint64_t>& weights, size_t parts) {
  __extension__ typedef unsigned __int128 u128;  // 2 * W * parts needs more than 64 bits
  std::vector<size_t> b(parts + 1, weights.size());
  b[0] = 0;
  u128 total = 0;
  for (uint64_t w : weights) total += w;
  u128 before = 0;
  size_t next = 1;  // the first boundary not yet placed
  for (size_t i = 0; i < weights.size(); ++i) {
    size_t p = total == 0 ? i * parts / weights.size()
                          : size_t((u128(parts) * (2 * before + weights[i])) / (2 * total));
    if (p >= parts) p = parts - 1;
    while (next <= p) b[next++] = i;  // parts next-1 ... p-1 end before tensor i
    before += weights[i];
  }
  return b;
}

std::vector<size_t> capped_partition(const std::vector<uint64_t>& weights, uint64_t max_weight) {
  std::vector<size_t> b = {0};
  uint64_t run = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (i > b.back() && (run + weights[i] > max_weight || run + weights[i] < run)) {
      b.push_back(i);
      run = 0;
    }
    run += weights[i];
  }
  b.push_back(weights.size());
  return b;
}

}  // namespace qpack
