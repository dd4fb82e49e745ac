// Two-level scales (docs/quantization.md §T): the scalar text of §T2-§T5,
// one super-block at a time. The reference runs it on one thread, the CPU
// path on the quantizer's pool (cpu/thread_pool.hpp) over super-blocks; each
// super-block's bytes depend on its own elements only, so both give the same
// bytes for any thread count.

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "cpu/thread_pool.hpp"
#include "qpack/format/error.hpp"
#include "qpack/spec/two_level.hpp"
#include "quant_detail.hpp"

namespace qpack::detail {

void quantize_two_level(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                        NonFinitePolicy policy, const QuantBuffers& out, int threads) {
  threads = threads > 1 ? threads : 1;
  const std::string why = validate_scheme(s);
  if (!why.empty()) throw Error(ErrorCode::InvalidArgument, "", in.name, why);
  if (policy == NonFinitePolicy::Error) {
    const int64_t bad = find_first_nonfinite(in.data, in.dtype, L.num_elements(), threads);
    if (bad >= 0) throw_nonfinite(in, L, bad);
  }
  const uint64_t pbytes = L.params_bytes(s.scale_dtype);
  if (L.codes_bytes() > 0) std::memset(out.codes, 0, L.codes_bytes());
  if (pbytes > 0) {
    std::memset(out.scales, 0, pbytes);
    std::memset(out.zeros, 0, pbytes);
  }
  const int64_t groups = L.num_groups();
  if (groups == 0 || L.num_elements() == 0) return;
  const DType sd = s.scale_dtype;
  const int64_t K = L.super_block, PS = L.supers_per_axis(), units = L.num_supers();
  const uint64_t off = L.sub_codes_bytes();
  std::vector<uint8_t> sc(static_cast<size_t>(groups)), mc(static_cast<size_t>(groups));
  // The first overflowing element per chunk; the minimum over chunks is the
  // one a single thread would report first.
  std::vector<int64_t> chunk_overflow(static_cast<size_t>(std::max(threads, 1)), INT64_MAX);
  cpu::parallel_chunks(threads, units, [&](int64_t u0, int64_t u1, int t) {
    int64_t& overflow = chunk_overflow[size_t(t)];
    std::vector<float> x(static_cast<size_t>(L.group_size));
    std::vector<spec::FirstLevel> f(static_cast<size_t>(K));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t i = u % L.inner, sb = (u / L.inner) % PS, o = u / L.inner / PS;
      const int64_t g0 = sb * K, g1 = std::min(g0 + K, L.groups_per_axis);
      const auto gather = [&](int64_t g) {
        const int64_t len = L.group_len(g);
        for (int64_t k = 0; k < len; ++k) {
          const float v = load_as_f32(
              in.data, in.dtype, uint64_t((o * L.axis_len + g * L.group_size + k) * L.inner + i));
          x[size_t(k)] = spec::is_finite_f32(v) ? v : 0.0f;  // Error policy: checked above
        }
        return len;
      };
      // §T2: each group's first level; §T3: the super values and codes.
      float smax = 0.0f, mmax = 0.0f;
      bool bad = false;
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t len = gather(g);
        spec::FirstLevel& fl = f[size_t(g - g0)];
        fl = spec::first_level(spec::GroupValues{x.data(), nullptr}, len, s.bits, s.method);
        if (fl.overflow) {
          overflow = std::min(overflow, (o * L.groups_per_axis + g) * L.inner + i);
          bad = true;
          break;
        }
        if (fl.s > smax) smax = fl.s;
        if (fl.mneg > mmax) mmax = fl.mneg;
      }
      if (bad) continue;
      const spec::SuperValue d = spec::super_value(smax, sd), dm = spec::super_value(mmax, sd);
      if (d.overflow || dm.overflow) {
        overflow = std::min(overflow, (o * L.groups_per_axis + g0) * L.inner + i);
        continue;
      }
      const int64_t si = (o * PS + sb) * L.inner + i;
      spec::store_param(out.scales + off, si, sd, d.value, d.bits16);
      spec::store_param(out.zeros + off, si, sd, dm.value, dm.bits16);
      // §T4: the codes against the effective (S, M), as §4.6 computes them.
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t p = (o * L.groups_per_axis + g) * L.inner + i;
        const int64_t len = gather(g);
        const spec::SubCodes c =
            spec::choose_sub_codes(spec::GroupValues{x.data(), nullptr}, len, s.bits,
                                   f[size_t(g - g0)], d.value, dm.value);
        sc[size_t(p)] = uint8_t(c.sc);
        mc[size_t(p)] = uint8_t(c.m);
        const spec::GroupParams gp = spec::effective_params(d.value, c.sc, dm.value, c.m);
        uint8_t* base = out.codes + (o * L.groups_per_axis + g) * L.bytes_per_group * L.inner + i;
        for (int64_t k = 0; k < len; ++k)
          spec::put_code(base, L.inner, k, s.bits, spec::encode_asym(x[size_t(k)], gp, s.bits));
      }
    }
  });
  const int64_t overflow = *std::min_element(chunk_overflow.begin(), chunk_overflow.end());
  if (overflow != INT64_MAX) throw_range_overflow(in, L, s, overflow);
  // §T5: the 6-bit streams. Four codes fill three bytes, so chunks of four
  // groups write disjoint bytes.
  const int64_t chunks = (groups + 3) / 4;
  cpu::parallel_for(threads, chunks, [&](int64_t c) {
    for (int64_t p = 4 * c; p < std::min(4 * c + 4, groups); ++p) {
      spec::put_code(out.scales, 1, p, kSubScaleBits, sc[size_t(p)]);
      spec::put_code(out.zeros, 1, p, kSubScaleBits, mc[size_t(p)]);
    }
  });
}

}  // namespace qpack::detail
