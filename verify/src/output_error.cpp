// The importance-weighted error, the output error on sample inputs and the
// float32 reconstruction they work on (qpack/verify/output_error.hpp;
// docs/quantization.md section 11). Plain double arithmetic: the build's
// -ffp-contract=off keeps every product and sum its own rounding, and each
// parallel loop writes per-column or per-row partials that one thread adds
// in index order, so the figures do not depend on the thread count.
#include "qpack/verify/output_error.hpp"

#include <omp.h>

#include <cmath>

#include "qpack/format/error.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/spec/group_params.hpp"

namespace qpack {

namespace {

double ratio_sqrt(double err, double ref) {
  if (ref == 0) return err == 0 ? 0.0 : INFINITY;
  return std::sqrt(err / ref);
}

int thread_count(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Elements of a row-major buffer as double (F16/BF16/F32 are exact in it).
std::vector<double> widen(const uint8_t* p, DType t, uint64_t n) {
  std::vector<double> out(n);
  for (uint64_t i = 0; i < n; ++i) out[i] = double(load_as_f32(p, t, i));
  return out;
}

}  // namespace

double WeightedErrorSums::rel_error() const { return ratio_sqrt(sum_w_sq_err, sum_w_sq_ref); }
void WeightedErrorSums::add(const WeightedErrorSums& o) {
  count += o.count;
  sum_w_sq_err += o.sum_w_sq_err;
  sum_w_sq_ref += o.sum_w_sq_ref;
}

double OutputErrorSums::rel_error() const { return ratio_sqrt(sum_sq_err, sum_sq_ref); }
void OutputErrorSums::add(const OutputErrorSums& o) {
  samples += o.samples;
  sum_sq_err += o.sum_sq_err;
  sum_sq_ref += o.sum_sq_ref;
}

std::vector<float> reconstruct_qpack_tensor(const QuantTensorView& v, int threads) {
  const GroupLayout& L = v.layout;
  std::vector<float> out(size_t(L.num_elements()));
  if (out.empty()) return out;
  if (!v.codes || !v.scales || (!v.scheme.symmetric && !v.zeros))
    throw Error(ErrorCode::Internal, "", v.name, "missing buffer in the tensor view");
  const bool integer_zero = has_integer_zero(v.scheme);
  const int64_t P = L.groups_per_axis, inner = L.inner;
  // One (outer slice, group) per iteration: its groups over every inner column.
#pragma omp parallel for schedule(static) num_threads(thread_count(threads))
  for (int64_t og = 0; og < L.outer * P; ++og) {
    const int64_t o = og / P, g = og % P;
    const int64_t len = L.group_len(g);
    const uint8_t* codes = v.codes + og * L.bytes_per_group * inner;
    for (int64_t c = 0; c < inner; ++c) {
      const int64_t pidx = og * inner + c;
      const float scale = spec::load_param(v.scales, pidx, v.scheme.scale_dtype);
      const float zero =
          v.scheme.symmetric ? 0.0f : spec::load_param(v.zeros, pidx, v.scheme.scale_dtype);
      for (int64_t k = 0; k < len; ++k) {
        const uint32_t code = spec::get_code(codes + c, inner, k, L.bits);
        const int64_t a = g * L.group_size + k;  // index along the axis
        out[size_t((o * L.axis_len + a) * inner + c)] =
            spec::decode_scheme(code, scale, zero, v.scheme.symmetric, integer_zero, L.bits);
      }
    }
  }
  return out;
}

WeightedErrorSums importance_weighted_sums(const uint8_t* src, DType src_dtype, const float* hat,
                                           int64_t rows, int64_t cols, const double* weights,
                                           int64_t matrices, int threads) {
  if (matrices < 1 || rows % matrices != 0)
    throw Error(
        ErrorCode::InvalidArgument, "", "",
        std::to_string(rows) + " rows do not split into " + std::to_string(matrices) + " matrices");
  const int64_t per = rows / matrices;
  // Per (matrix, channel): the squared errors and squared sources over the
  // matrix's rows, in row order.
  const int64_t n = matrices * cols;
  std::vector<double> sq_err(size_t(n), 0.0), sq_ref(size_t(n), 0.0);
  std::vector<uint64_t> count(size_t(n), 0);
#pragma omp parallel for schedule(static) num_threads(thread_count(threads))
  for (int64_t mj = 0; mj < n; ++mj) {
    const int64_t m = mj / cols, j = mj % cols;
    double e2 = 0, r2 = 0;
    uint64_t c = 0;
    for (int64_t i = m * per; i < (m + 1) * per; ++i) {
      const uint64_t idx = uint64_t(i * cols + j);
      const float xf = load_as_f32(src, src_dtype, idx);
      if (!std::isfinite(xf)) continue;
      const double x = xf, e = x - double(hat[idx]);
      e2 += e * e;
      r2 += x * x;
      ++c;
    }
    sq_err[size_t(mj)] = e2;
    sq_ref[size_t(mj)] = r2;
    count[size_t(mj)] = c;
  }
  WeightedErrorSums s;
  for (int64_t mj = 0; mj < n; ++mj) {
    s.sum_w_sq_err += weights[mj] * sq_err[size_t(mj)];
    s.sum_w_sq_ref += weights[mj] * sq_ref[size_t(mj)];
    s.count += count[size_t(mj)];
  }
  return s;
}

OutputErrorSums output_error_sums(const uint8_t* src, DType src_dtype, const float* hat,
                                  int64_t out, int64_t in, const uint8_t* x, DType x_dtype,
                                  int64_t samples, int threads) {
  const std::vector<double> X = widen(x, x_dtype, uint64_t(samples * in));
  std::vector<double> err(size_t(out), 0.0), ref(size_t(out), 0.0);
#pragma omp parallel for schedule(dynamic, 8) num_threads(thread_count(threads))
  for (int64_t k = 0; k < out; ++k) {
    std::vector<double> w(static_cast<size_t>(in)), d(static_cast<size_t>(in));
    for (int64_t j = 0; j < in; ++j) {
      const uint64_t idx = uint64_t(k * in + j);
      w[size_t(j)] = double(load_as_f32(src, src_dtype, idx));
      d[size_t(j)] = w[size_t(j)] - double(hat[idx]);
    }
    double e2 = 0, r2 = 0;
    for (int64_t s = 0; s < samples; ++s) {
      const double* xs = X.data() + s * in;
      double y = 0, e = 0;
      for (int64_t j = 0; j < in; ++j) {
        y += xs[j] * w[size_t(j)];
        e += xs[j] * d[size_t(j)];
      }
      e2 += e * e;
      r2 += y * y;
    }
    err[size_t(k)] = e2;
    ref[size_t(k)] = r2;
  }
  OutputErrorSums r;
  r.samples = samples;
  for (int64_t k = 0; k < out; ++k) {
    r.sum_sq_err += err[size_t(k)];
    r.sum_sq_ref += ref[size_t(k)];
  }
  return r;
}

}  // namespace qpack
