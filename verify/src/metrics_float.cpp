// FloatErrorAccumulator (qpack/verify/metrics.hpp): the fixed-order sums of
// qpack/spec/float_error_sums.hpp over float32 reconstructions (GGUF).
#include <omp.h>

#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/spec/float_error_sums.hpp"
#include "qpack/verify/metrics.hpp"

namespace qpack {

FloatErrorAccumulator::FloatErrorAccumulator() { spec::partial_init(acc_); }

void FloatErrorAccumulator::merge_blocks(const spec::PartialSums* blocks, int64_t n) {
  if (n <= 0) return;
  // Only the last slice may end inside a block: a block split across slices
  // would be summed as two.
  if (short_block_seen_)
    throw Error(ErrorCode::Internal, "", "",
                "float error sums: a slice after one that ended inside a block");
  if (n % spec::kFloatBlockElements != 0) short_block_seen_ = true;
  const int64_t nb = (n + spec::kFloatBlockElements - 1) / spec::kFloatBlockElements;
  for (int64_t b = 0; b < nb; ++b) spec::partial_merge(acc_, blocks[b]);
  flat_ += n;
}

void FloatErrorAccumulator::add(const float* ref, const float* hat, int64_t n, int threads) {
  if (n <= 0) return;
  const int64_t bn = spec::kFloatBlockElements;
  const int64_t blocks = (n + bn - 1) / bn;
  std::vector<spec::PartialSums> out(static_cast<size_t>(blocks));
  const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    std::vector<spec::PartialSums> slots(spec::kBlockUnits);
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b * bn;
      const int64_t m = n - k0 < bn ? n - k0 : bn;
      spec::float_block_sums(ref + k0, hat + k0, m, flat_ + k0, slots.data());
      out[size_t(b)] = slots[0];
    }
  }
  merge_blocks(out.data(), n);
}

ErrorSums FloatErrorAccumulator::sums() const {
  ErrorSums s;
  s.count = acc_.count;
  s.nonfinite = acc_.nonfinite;
  s.sum_sq_err = acc_.sq_err;
  s.sum_abs_err = acc_.abs_err;
  s.sum_sq_ref = acc_.sq_ref;
  s.sum_sq_hat = acc_.sq_hat;
  s.sum_dot = acc_.dot;
  if (acc_.count > 0) {
    s.max_abs_err = acc_.max_abs;
    s.max_abs_index = acc_.max_index;
  }
  return s;
}

}  // namespace qpack
