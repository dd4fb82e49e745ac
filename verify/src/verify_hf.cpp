// verify() for compressed-tensors pack-quantized and GPTQ model folders
// (qpack/verify/verify.hpp; the layouts: docs/hf-reading.md). The folder
// reader's validation is the integrity check; every quantized Linear is
// unpacked into qpack's layout a range of rows at a time and measured by the
// same fused dequantize-and-compare pass as a .qpack (CPU, or the CUDA
// metrics path), so the report has the same fields, roll-ups and gate. Kept
// tensors are compared byte for byte. Memory: one row range of one tensor.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/hf_quantized.hpp"
#include "qpack/format/text.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/verify/metrics.hpp"
#include "verify_detail.hpp"

namespace qpack {

namespace {

using namespace verify_detail;

int dtype_bytes(DType d) { return dtype_bits(d) / 8; }

TensorResult describe(const HfQuantTensor& q) {
  TensorResult r;
  r.name = q.name;
  r.layer = parse_layer(q.name);
  r.kind = tensor_kind(q.name);
  r.dtype = q.scheme.scale_dtype;
  r.shape = q.shape;
  r.quantized = true;
  r.scheme = q.scheme;
  r.elements = uint64_t(q.layout.num_elements());
  r.source_bytes = r.elements * uint64_t(dtype_bytes(r.dtype));
  r.stored_bytes = q.stored_bytes;
  return r;
}

TensorResult describe(const CheckpointTensor& t) {
  TensorResult r;
  r.name = t.name();
  r.layer = parse_layer(t.name());
  r.kind = tensor_kind(t.name());
  r.dtype = t.info->dtype;
  r.shape = t.info->shape;
  r.elements = t.info->num_elements();
  r.source_bytes = t.info->nbytes();
  r.stored_bytes = t.info->nbytes();
  return r;
}

// Degenerate groups (stored scale +-0) and non-finite scales or zero-points
// among `groups` unpacked parameters.
void count_params(const uint8_t* scales, const uint8_t* zeros, int64_t groups, DType sd,
                  TensorResult& r) {
  for (int64_t g = 0; g < groups; ++g) {
    const float s = spec::load_param(scales, g, sd);
    if (!std::isfinite(s))
      ++r.nonfinite_params;
    else if (s == 0.0f)
      ++r.degenerate_groups;
    if (zeros && !std::isfinite(spec::load_param(zeros, g, sd))) ++r.nonfinite_params;
  }
  r.groups += uint64_t(groups);
}

}  // namespace

VerifyReport verify_hf(const std::string& path, const std::string& source_path,
                       const VerifyOptions& opt) {
  const auto t_start = Clock::now();
  VerifyReport rep = start_report(path, source_path, opt, "compressed-tensors");
  // Another quantizer made these codes: the bound is qpack's promise, not theirs.
  rep.bound_is_promise = false;

  const std::unique_ptr<CudaMetricsEngine> gpu = open_metrics_engine(opt, rep);

  // 1. Integrity: the reader's validation (safetensors headers, the config,
  // every companion's dtype and shape, zero-points, g_idx). A setting qpack
  // does not read is bad input, not damage: it is thrown.
  const auto t_int = Clock::now();
  std::unique_ptr<HfQuantizedModel> m;
  try {
    m = HfQuantizedModel::open(path);
  } catch (const Error& e) {
    if (is_io_error(e.code()) || e.code() == ErrorCode::HfUnsupported) throw;
    rep.integrity_issues.push_back({e.tensor(), "", error_code_name(e.code()), e.reason()});
  }
  if (m) {
    rep.file_format = m->format_name();
    rep.format_version = m->layout_name();
    for (const auto& f : m->checkpoint().files()) rep.file_bytes += f->mapped().size();
    for (const CheckpointTensor& t : m->checkpoint().tensors()) {
      ++rep.sections_checked;
      rep.bytes_checked += t.info->nbytes();
    }
  }
  rep.integrity_ok = rep.integrity_issues.empty();
  rep.integrity_seconds = seconds_since(t_int);
  if (!rep.integrity_ok) {
    finish_report(rep, t_start);
    return rep;
  }
  for (const HfQuantTensor& q : m->quantized()) require_decodable(q, m->config_file());

  std::unique_ptr<Checkpoint> src;
  if (!source_path.empty()) {
    src = Checkpoint::open(source_path);
    for (const CheckpointTensor& st : src->tensors()) {
      bool found = m->find_quantized(st.name()) != nullptr;
      for (const CheckpointTensor* k : m->kept()) found = found || k->name() == st.name();
      if (!found) rep.missing_from_qpack.push_back(st.name());
    }
  }

  // 2. Every tensor.
  const auto t_cmp = Clock::now();
  VerifyProgress pr;
  pr.phase = VerifyProgress::Compare;
  pr.tensor_count = m->entries().size();
  for (const HfQuantTensor& q : m->quantized()) pr.total_bytes += q.stored_bytes;
  for (const CheckpointTensor* k : m->kept()) pr.total_bytes += k->info->nbytes();
  std::vector<uint8_t> codes, scales, zeros, zero_source;
  for (size_t ei = 0; ei < m->entries().size(); ++ei) {
    const HfEntry& e = m->entries()[ei];
    const auto t0 = Clock::now();
    pr.tensor_index = ei;
    if (!e.quantized) {
      const CheckpointTensor& t = *m->kept()[e.index];
      pr.tensor = t.name();
      if (opt.progress) opt.progress(pr);
      TensorResult r = describe(t);
      if (src) {
        const CheckpointTensor* st = src->find(t.name());
        if (!st) {
          rep.extra_in_qpack.push_back(t.name());
          r.problems.push_back("not in the source checkpoint");
        } else if (st->info->dtype != t.info->dtype) {
          r.problems.push_back(std::string("dtype differs: source ") + dtype_name(st->info->dtype) +
                               ", folder " + dtype_name(t.info->dtype));
        } else if (st->info->shape != t.info->shape) {
          r.problems.push_back("shape differs: source " + shape_to_string(st->info->shape) +
                               ", folder " + shape_to_string(t.info->shape));
        } else {
          const uint64_t n = t.info->nbytes();
          const uint8_t* a = t.data();
          const uint8_t* b = st->data();
          if (n > 0 && std::memcmp(a, b, n) != 0) {
            uint64_t first = 0;
            while (a[first] == b[first]) ++first;
            r.problems.push_back("raw bytes differ from the source (first difference at byte " +
                                 std::to_string(first) + ")");
          }
          r.raw_equal = r.problems.empty();
          r.compared = true;
        }
        if (st) st->file->release(*st->info);
      }
      t.file->release(*t.info);
      pr.done_bytes += t.info->nbytes();
      r.seconds = seconds_since(t0);
      rep.tensors.push_back(std::move(r));
      continue;
    }
    const HfQuantTensor& q = m->quantized()[e.index];
    pr.tensor = q.name;
    if (opt.progress) opt.progress(pr);
    TensorResult r = describe(q);
    const CheckpointTensor* st = src ? src->find(q.name) : nullptr;
    if (src) {
      if (!st) {
        rep.extra_in_qpack.push_back(q.name);
        r.problems.push_back("not in the source checkpoint");
      } else {
        r.dtype = st->info->dtype;
        r.source_bytes = st->info->nbytes();
        if (st->info->shape != q.shape)
          r.problems.push_back("shape differs: source " + shape_to_string(st->info->shape) +
                               ", folder " + shape_to_string(q.shape));
        else if (!is_quantizable(st->info->dtype))
          r.problems.push_back(std::string("the source tensor is ") + dtype_name(st->info->dtype) +
                               "; a source holds F32, F16 or BF16");
      }
    }
    const GroupLayout& L = q.layout;
    const int sb = scale_bytes(q.scheme.scale_dtype);
    const int64_t in = std::max<int64_t>(q.shape[1], 1);
    // A fixed row range (from the option, never the thread count): the
    // report is the same on every run and device.
    const int64_t rows_per_chunk = std::max<int64_t>(1, int64_t(opt.gguf_slice_bytes / 4) / in);
    const bool measure = !src || r.problems.empty();
    if (measure && L.num_elements() > 0) {
      r.params_checked = true;
      bool nonzero_hat = false;
      for (int64_t r0 = 0; r0 < L.outer; r0 += rows_per_chunk) {
        const int64_t rows = std::min(rows_per_chunk, L.outer - r0);
        GroupLayout sub = L;
        sub.outer = rows;
        codes.resize(size_t(sub.codes_bytes()));
        scales.resize(size_t(sub.num_groups()) * size_t(sb));
        zeros.resize(q.scheme.symmetric ? 0 : scales.size());
        const uint8_t* z = q.scheme.symmetric ? nullptr : zeros.data();
        m->unpack_rows(q, r0, rows, codes.data(), scales.data(),
                       q.scheme.symmetric ? nullptr : zeros.data());
        count_params(scales.data(), z, sub.num_groups(), q.scheme.scale_dtype, r);
        QuantTensorView v;
        v.codes = codes.data();
        v.scales = scales.data();
        v.zeros = z;
        v.layout = sub;
        v.scheme = q.scheme;
        v.name = q.name;
        if (st) {
          v.source = st->data() + uint64_t(r0) * uint64_t(in) * uint64_t(dtype_bytes(r.dtype));
          v.source_dtype = r.dtype;
        } else {
          // Self-check: the reconstruction against zeros gives its energy.
          zero_source.assign(size_t(sub.num_elements()) * 4, 0);
          v.source = zero_source.data();
          v.source_dtype = DType::F32;
        }
        ErrorSums s = gpu ? gpu->compute(v) : compute_error_sums_cpu(v, rep.threads);
        if (!st) {
          nonzero_hat = nonzero_hat || s.sum_sq_hat > 0.0;
          continue;
        }
        const int64_t base = r0 * in;  // flat indexes of the whole tensor
        if (s.max_abs_index >= 0) s.max_abs_index += base;
        if (s.first_violation_index >= 0) s.first_violation_index += base;
        r.sums.add(s);
      }
      if (st) {
        r.compared = true;
        r.all_zero = r.sums.sum_sq_hat == 0.0 && r.sums.sum_sq_ref > 0.0;
      } else {
        r.all_zero = !nonzero_hat;
      }
      warn_about_params(r, rep, opt);
    }
    m->release(q);
    if (st) st->file->release(*st->info);
    pr.done_bytes += q.stored_bytes;
    r.seconds = seconds_since(t0);
    rep.tensors.push_back(std::move(r));
  }
  pr.tensor_index = pr.tensor_count;
  pr.tensor.clear();
  if (opt.progress) opt.progress(pr);
  rep.compare_seconds = seconds_since(t_cmp);
  finish_report(rep, t_start);
  return rep;
}

}  // namespace qpack
