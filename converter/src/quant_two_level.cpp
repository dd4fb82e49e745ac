// Two-level scales (docs/quantization.md §T): the scalar text of §T2-§T5,
// one super-block at a time, and the same steps eight groups at a time
// through cpu/quant_two_level_avx2.hpp. The reference runs the scalar text
// on one thread; the CPU path runs on the quantizer's pool
// (cpu/thread_pool.hpp) over super-blocks, with the AVX2 batches where the
// CPU has them. Each super-block's bytes depend on its own elements only and
// every batch lane repeats the scalar operations, so all give the same
// bytes for any thread count.

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "cpu/quant_two_level_avx2.hpp"
#include "cpu/thread_pool.hpp"
#include "qpack/format/error.hpp"
#include "qpack/spec/two_level.hpp"
#include "quant_detail.hpp"

namespace qpack::detail {
namespace {

static_assert(kSuperBlockGroups == cpu::kTwoLevelLanes,
              "the row batches take one super-block's groups as their lanes");

// One tensor's run: its input, layout, scheme and outputs, and the groups'
// 6-bit codes (packed into the sections at the end).
struct Run {
  const QuantInput& in;
  const GroupLayout& L;
  const QuantScheme& s;
  const QuantBuffers& out;
  std::vector<uint8_t>& sc;
  std::vector<uint8_t>& mc;
  int64_t K, PS;
  uint64_t off;  // where the super values start in each section
};

// A worker's scratch: every group of one super-block for the widest batch,
// the search's codes, the batch's codes.
struct Scratch {
  std::vector<float> xs, ls;
  std::vector<uint32_t> q;
  bool nonfinite = false;  // a NaN or Inf was read (and taken as +0)
  explicit Scratch(const GroupLayout& L)
      : xs(size_t(std::max<int64_t>(L.super_block, 2) * L.group_size * cpu::kTwoLevelLanes *
                  cpu::kTwoLevelMaxVectors)),
        ls(size_t(L.group_size * cpu::kTwoLevelLanes * cpu::kTwoLevelMaxVectors)),
        q(ls.size()) {}
};

// §T3's super values of one super-block from its groups' first levels;
// false (and *overflow set) when D or Dmin is not finite.
bool store_super_values(const Run& r, const spec::FirstLevel* f, int64_t count, int64_t stride,
                        int64_t si, int64_t p0, int64_t* overflow, float* d, float* dmin) {
  float smax = 0.0f, mmax = 0.0f;
  for (int64_t g = 0; g < count; ++g) {
    const spec::FirstLevel& fl = f[g * stride];
    if (fl.s > smax) smax = fl.s;
    if (fl.mneg > mmax) mmax = fl.mneg;
  }
  const spec::SuperValue sv = spec::super_value(smax, r.s.scale_dtype);
  const spec::SuperValue mv = spec::super_value(mmax, r.s.scale_dtype);
  if (sv.overflow || mv.overflow) {
    *overflow = std::min(*overflow, p0);
    return false;
  }
  spec::store_param(r.out.scales + r.off, si, r.s.scale_dtype, sv.value, sv.bits16);
  spec::store_param(r.out.zeros + r.off, si, r.s.scale_dtype, mv.value, mv.bits16);
  *d = sv.value;
  *dmin = mv.value;
  return true;
}

// The scalar text for super-block unit u = (o, sb, i).
void unit_scalar(const Run& r, int64_t u, Scratch& w, int64_t* overflow) {
  const GroupLayout& L = r.L;
  const int64_t i = u % L.inner, sb = (u / L.inner) % r.PS, o = u / L.inner / r.PS;
  const int64_t g0 = sb * r.K, g1 = std::min(g0 + r.K, L.groups_per_axis);
  float* x = w.xs.data();
  const auto gather = [&](int64_t g) {
    const int64_t len = L.group_len(g);
    for (int64_t k = 0; k < len; ++k) {
      const float v = load_as_f32(r.in.data, r.in.dtype,
                                  uint64_t((o * L.axis_len + g * L.group_size + k) * L.inner + i));
      if (!spec::is_finite_f32(v)) {
        w.nonfinite = true;
        x[k] = 0.0f;
      } else {
        x[k] = v;
      }
    }
    return len;
  };
  // §T2: each group's first level.
  spec::FirstLevel f[kSuperBlockGroups] = {};
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t len = gather(g);
    f[g - g0] = spec::first_level(spec::GroupValues{x, nullptr}, len, r.s.bits, r.s.method);
    if (f[g - g0].overflow) {
      *overflow = std::min(*overflow, (o * L.groups_per_axis + g) * L.inner + i);
      return;
    }
  }
  // §T3: the super values; §T3.3 and §T4: the sub-codes and the codes.
  float d, dmin;
  if (!store_super_values(r, f, g1 - g0, 1, (o * r.PS + sb) * L.inner + i,
                          (o * L.groups_per_axis + g0) * L.inner + i, overflow, &d, &dmin))
    return;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t p = (o * L.groups_per_axis + g) * L.inner + i;
    const int64_t len = gather(g);
    const spec::SubCodes c =
        spec::choose_sub_codes(spec::GroupValues{x, nullptr}, len, r.s.bits, f[g - g0], d, dmin);
    r.sc[size_t(p)] = uint8_t(c.sc);
    r.mc[size_t(p)] = uint8_t(c.m);
    const spec::GroupParams gp = spec::effective_params(d, c.sc, dmin, c.m);
    uint8_t* base = r.out.codes + (o * L.groups_per_axis + g) * L.bytes_per_group * L.inner + i;
    for (int64_t k = 0; k < len; ++k)
      spec::put_code(base, L.inner, k, r.s.bits, spec::encode_asym(x[k], gp, r.s.bits));
  }
}

// One group's sub-codes and codes for 8V lanes (lane l: the group p[l]
// whose codes start at base[l], consecutive codes `stride` bytes apart).
template <int V, bool A512>
void lanes_codes(const Run& r, const float* xs, int64_t n, const spec::FirstLevel* f,
                 const float* d, const float* dmin, const int64_t* p, uint8_t* const* base,
                 int64_t stride, Scratch& w) {
  constexpr int W = cpu::kTwoLevelLanes * V;
  spec::SubCodes c[W];
  cpu::choose_sub_codes_lanes<V, A512>(xs, n, r.s.bits, f, d, dmin, c);
  alignas(32) float zero[W], inv[W];
  for (int l = 0; l < W; ++l) {
    r.sc[size_t(p[l])] = uint8_t(c[l].sc);
    r.mc[size_t(p[l])] = uint8_t(c[l].m);
    const spec::GroupParams gp = spec::effective_params(d[l], c[l].sc, dmin[l], c[l].m);
    zero[l] = gp.zero;
    inv[l] = gp.inv;
  }
  cpu::codes_lanes<V>(xs, n, r.s.bits, zero, inv, w.q.data());
  // put_code's bit layout (§5: code k at bits k*b of the group's stream),
  // each byte assembled in a register and stored once.
  const int bits = r.s.bits;
  for (int l = 0; l < W; ++l) {
    uint8_t* dst = base[l];
    uint32_t acc = 0;
    int have = 0;
    for (int64_t k = 0; k < n; ++k) {
      acc |= w.q[size_t(k * W + l)] << have;
      have += bits;
      while (have >= 8) {
        *dst = uint8_t(acc);
        dst += stride;
        acc >>= 8;
        have -= 8;
      }
    }
    if (have > 0) *dst = uint8_t(acc);
  }
}

// Units u .. u+8V-1 = (o, sb, i0 .. i0+8V-1): adjacent columns, one lane
// each, through every group of their super-block.
template <DType T, int V, bool A512>
void columns_avx2(const Run& r, int64_t u, Scratch& w, int64_t* overflow) {
  constexpr int W = cpu::kTwoLevelLanes * V;
  const GroupLayout& L = r.L;
  const int64_t i0 = u % L.inner, sb = (u / L.inner) % r.PS, o = u / L.inner / r.PS;
  const int64_t g0 = sb * r.K, g1 = std::min(g0 + r.K, L.groups_per_axis), G = L.group_size;
  spec::FirstLevel f[kSuperBlockGroups][W] = {};
  bool dead[W] = {};
  for (int64_t g = g0; g < g1; ++g) {
    float* xs = w.xs.data() + (g - g0) * G * W;
    const int64_t len = L.group_len(g);
    w.nonfinite |= cpu::gather_columns<T, V>(r.in.data, (o * L.axis_len + g * G) * L.inner + i0,
                                             L.inner, len, xs);
    cpu::first_level_lanes<V, A512>(xs, len, r.s.bits, r.s.method, w.ls.data(), f[g - g0]);
    for (int l = 0; l < W; ++l)
      if (!dead[l] && f[g - g0][l].overflow) {
        dead[l] = true;
        *overflow = std::min(*overflow, (o * L.groups_per_axis + g) * L.inner + i0 + l);
      }
  }
  alignas(32) float d[W], dmin[W];
  for (int l = 0; l < W; ++l) {
    d[l] = dmin[l] = 0.0f;  // a dead lane's bytes are never used: its error is thrown
    if (!dead[l])
      dead[l] = !store_super_values(r, &f[0][l], g1 - g0, W, (o * r.PS + sb) * L.inner + i0 + l,
                                    (o * L.groups_per_axis + g0) * L.inner + i0 + l, overflow,
                                    &d[l], &dmin[l]);
  }
  for (int64_t g = g0; g < g1; ++g) {
    int64_t p[W];
    uint8_t* base[W];
    for (int l = 0; l < W; ++l) {
      p[l] = (o * L.groups_per_axis + g) * L.inner + i0 + l;
      base[l] = r.out.codes + (o * L.groups_per_axis + g) * L.bytes_per_group * L.inner + i0 + l;
    }
    lanes_codes<V, A512>(r, w.xs.data() + (g - g0) * G * W, L.group_len(g), f[g - g0], d, dmin, p,
                         base, L.inner, w);
  }
}

// Units u .. u+V-1 = (o, sb .. sb+V-1) of a row layout (inner 1), whose
// groups are whole: one lane per group, super-block u+v in lanes 8v .. 8v+7.
template <DType T, int V, bool A512>
void rows_avx2(const Run& r, int64_t u, Scratch& w, int64_t* overflow) {
  constexpr int N = cpu::kTwoLevelLanes, W = N * V;
  const GroupLayout& L = r.L;
  const int64_t sb = u % r.PS, o = u / r.PS, g0 = sb * r.K, G = L.group_size;
  float* xs = w.xs.data();
  w.nonfinite |= cpu::gather_rows<T, V>(r.in.data, o * L.axis_len + g0 * G, G, xs);
  spec::FirstLevel f[W];
  cpu::first_level_lanes<V, A512>(xs, G, r.s.bits, r.s.method, w.ls.data(), f);
  alignas(32) float d[W], dmin[W];
  int64_t p[W];
  uint8_t* base[W];
  for (int v = 0; v < V; ++v) {
    float dv = 0.0f, dminv = 0.0f;  // a dead unit's bytes are never used: its error is thrown
    const int64_t pv = o * L.groups_per_axis + g0 + N * v;
    bool dead = false;
    for (int l = 0; l < N && !dead; ++l)
      if (f[N * v + l].overflow) {
        *overflow = std::min(*overflow, pv + l);
        dead = true;
      }
    if (!dead) store_super_values(r, f + N * v, N, 1, o * r.PS + sb + v, pv, overflow, &dv, &dminv);
    for (int l = 0; l < N; ++l) {
      d[N * v + l] = dv;
      dmin[N * v + l] = dminv;
      p[N * v + l] = pv + l;
      base[N * v + l] = r.out.codes + (pv + l) * L.bytes_per_group;
    }
  }
  lanes_codes<V, A512>(r, xs, G, f, d, dmin, p, base, 1, w);
}

template <DType T, bool A512>
void units_avx2(const Run& r, int64_t u0, int64_t u1, Scratch& w, int64_t* overflow) {
  const GroupLayout& L = r.L;
  constexpr int N = cpu::kTwoLevelLanes;
  // A row super-block whose eight groups are whole.
  const auto whole = [&](int64_t u) {
    const int64_t g0 = (u % r.PS) * r.K;
    return g0 + r.K < L.groups_per_axis ||
           (g0 + r.K == L.groups_per_axis && L.axis_len % L.group_size == 0);
  };
  for (int64_t u = u0; u < u1;) {
    if (L.inner >= N) {
      const int64_t left = std::min(L.inner - u % L.inner, u1 - u);
      if (left >= 2 * N) {
        columns_avx2<T, 2, A512>(r, u, w, overflow);
        u += 2 * N;
        continue;
      }
      if (left >= N) {
        columns_avx2<T, 1, A512>(r, u, w, overflow);
        u += N;
        continue;
      }
    } else if (L.inner == 1 && L.group_size % 8 == 0 && whole(u)) {
      // Two super-blocks of the same row when both are whole.
      if (u + 1 < u1 && (u + 1) % r.PS != 0 && whole(u + 1)) {
        rows_avx2<T, 2, A512>(r, u, w, overflow);
        u += 2;
      } else {
        rows_avx2<T, 1, A512>(r, u, w, overflow);
        ++u;
      }
      continue;
    }
    unit_scalar(r, u, w, overflow);
    ++u;
  }
}

template <bool A512>
void units_for_dtype(const Run& r, int64_t u0, int64_t u1, Scratch& w, int64_t* overflow) {
  if (r.in.dtype == DType::F16) return units_avx2<DType::F16, A512>(r, u0, u1, w, overflow);
  if (r.in.dtype == DType::BF16) return units_avx2<DType::BF16, A512>(r, u0, u1, w, overflow);
  return units_avx2<DType::F32, A512>(r, u0, u1, w, overflow);
}

}  // namespace

void quantize_two_level(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                        NonFinitePolicy policy, const QuantBuffers& out, int threads, CpuIsa isa) {
  const bool vector = isa >= CpuIsa::Avx2;
  threads = threads > 1 ? threads : 1;
  const std::string why = validate_scheme(s);
  if (!why.empty()) throw Error(ErrorCode::InvalidArgument, "", in.name, why);
  // The reference looks for NaN/Inf first; the CPU path notices them while
  // gathering and looks for the first one only then (the same error).
  if (policy == NonFinitePolicy::Error && !vector) {
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
  std::vector<uint8_t> sc(static_cast<size_t>(groups)), mc(static_cast<size_t>(groups));
  const Run r{in, L, s, out, sc, mc, L.super_block, L.supers_per_axis(), L.sub_codes_bytes()};
  // The first overflowing group per chunk; the minimum over chunks is the
  // one a single thread would report first.
  std::vector<int64_t> chunk_overflow(static_cast<size_t>(threads), INT64_MAX);
  std::vector<char> chunk_nonfinite(static_cast<size_t>(threads), 0);
  cpu::parallel_chunks(threads, L.num_supers(), [&](int64_t u0, int64_t u1, int t) {
    int64_t* overflow = &chunk_overflow[size_t(t)];
    Scratch w(L);
    if (!vector) {
      for (int64_t u = u0; u < u1; ++u) unit_scalar(r, u, w, overflow);
    } else if (isa == CpuIsa::Avx512) {
      units_for_dtype<true>(r, u0, u1, w, overflow);
    } else {
      units_for_dtype<false>(r, u0, u1, w, overflow);
    }
    chunk_nonfinite[size_t(t)] = w.nonfinite;
  });
  if (policy == NonFinitePolicy::Error && vector &&
      std::find(chunk_nonfinite.begin(), chunk_nonfinite.end(), 1) != chunk_nonfinite.end())
    throw_nonfinite(in, L, find_first_nonfinite(in.data, in.dtype, L.num_elements(), threads));
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
