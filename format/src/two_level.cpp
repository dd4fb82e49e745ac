#include "qpack/format/two_level.hpp"

#include <cstring>

#include "qpack/spec/two_level.hpp"

namespace qpack {

ExpandedParams expand_two_level(const GroupLayout& L, const QuantScheme& s, const uint8_t* scales,
                                const uint8_t* zeros) {
  ExpandedParams e;
  e.layout = L;
  e.layout.super_block = 0;
  e.scheme = s;
  e.scheme.super_block = 0;
  e.scheme.scale_dtype = DType::F32;
  if (e.scheme.method == QuantMethod::Rtn) e.scheme.method = QuantMethod::Search;
  const int64_t n = L.num_groups();
  e.scales.resize(size_t(n) * 4);
  e.zeros.resize(size_t(n) * 4);
  for (int64_t p = 0; p < n; ++p) {
    const spec::GroupParams g = spec::load_two_level(scales, zeros, L, s.scale_dtype, p);
    std::memcpy(e.scales.data() + 4 * p, &g.scale, 4);
    std::memcpy(e.zeros.data() + 4 * p, &g.zero, 4);
  }
  return e;
}

}  // namespace qpack
