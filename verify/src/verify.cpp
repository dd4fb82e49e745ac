// verify(): integrity, source comparison, metrics, roll-ups and the gate.
// Streams tensor by tensor: at any time only one tensor's sections (and, for
// zstd files, their decoded bytes) are resident; mmap pages are released as
// soon as a tensor is done.
#include "qpack/verify/verify.hpp"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <map>
#include <tuple>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/hf_quantized.hpp"
#include "qpack/format/provenance.hpp"
#include "qpack/format/text.hpp"
#include "qpack/format/two_level.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/verify/metrics.hpp"
#include "qpack/version.hpp"
#include "verify_detail.hpp"

namespace qpack {

namespace verify_detail {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool is_io_error(ErrorCode c) {
  return c == ErrorCode::Io || c == ErrorCode::DiskFull || c == ErrorCode::OutputExists;
}

namespace {
void add_to_rollup(Rollup& r, const TensorResult& t) {
  ++r.tensors;
  r.elements += t.elements;
  r.source_bytes += t.source_bytes;
  r.stored_bytes += t.stored_bytes;
  if (!t.quantized || !t.compared) return;
  ++r.quantized;
  r.sums.add(t.sums);
  if (t.has_weighted) {
    ++r.weighted_tensors;
    r.weighted.add(t.weighted);
  }
  if (t.has_output) {
    ++r.output_tensors;
    r.output.add(t.output);
  }
  const double rel = t.sums.rel_error();
  if (r.worst_tensor.empty() || !(rel <= r.worst_rel_error)) {
    r.worst_tensor = t.name;
    r.worst_rel_error = rel;
  }
}

}  // namespace

void build_rollups(VerifyReport& rep) {
  // Global first, then by stack name and numeric index.
  std::map<std::tuple<int, std::string, int64_t>, Rollup> layers;
  std::map<std::string, Rollup> kinds;
  rep.model = Rollup{};
  rep.model.key = "model";
  for (const TensorResult& t : rep.tensors) {
    const auto key = std::make_tuple(t.layer.global() ? 0 : 1, t.layer.stack, t.layer.index);
    Rollup& l = layers[key];
    l.key = t.layer.label();
    l.layer_index = t.layer.index;
    add_to_rollup(l, t);
    Rollup& k = kinds[t.kind];
    k.key = t.kind;
    add_to_rollup(k, t);
    add_to_rollup(rep.model, t);
  }
  rep.layers.clear();
  for (auto& [k, r] : layers) rep.layers.push_back(std::move(r));
  rep.kinds.clear();
  for (auto& [k, r] : kinds) rep.kinds.push_back(std::move(r));
}

void warn(VerifyReport& rep, const VerifyOptions& opt, std::string line) {
  if (opt.warn) opt.warn(line);
  rep.warnings.push_back(std::move(line));
}

void warn_about_params(const TensorResult& r, VerifyReport& rep, const VerifyOptions& opt) {
  if (r.nonfinite_params > 0)
    warn(rep, opt,
         r.name + ": " + count_of(r.nonfinite_params, "stored scale or zero-point") +
             " not finite (a damaged or foreign file)");
  if (r.invalid_zero_points > 0)
    warn(rep, opt,
         r.name + ": " + count_of(r.invalid_zero_points, "integer zero-point") +
             " not a whole code in [0, 2^bits - 1] (a damaged or foreign file)");
  if (r.all_zero)
    warn(rep, opt,
         r.name + ": reconstructed as all zeros" +
             (rep.source.empty() ? std::string() : " while the source is not") +
             (r.degenerate_groups == r.groups ? " (every group is degenerate)" : ""));
  else if (r.degenerate_groups > 0)
    warn(rep, opt,
         r.name + ": " + std::to_string(r.degenerate_groups) + " of " +
             count_of(r.groups, "group") + " degenerate (stored scale 0)");
}

VerifyReport start_report(const std::string& file, const std::string& source,
                          const VerifyOptions& opt, const std::string& format) {
  VerifyReport rep;
  rep.file = file;
  rep.file_format = format;
  rep.source = source;
  rep.device_requested = opt.device;
  rep.threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  rep.policy = opt.policy;
  rep.qpack_version = QPACK_VERSION_STRING;
  rep.created_utc = utc_now_iso8601();
  return rep;
}

std::unique_ptr<CudaMetricsEngine> open_metrics_engine(const VerifyOptions& opt,
                                                       VerifyReport& rep) {
  std::unique_ptr<CudaMetricsEngine> gpu;
  const DeviceSelection device = resolve_device(opt.device);
  if (device.kind == DeviceKind::Cuda)
    gpu = CudaMetricsEngine::create(opt.gpu_chunk_bytes, device.index);
  rep.device = gpu ? gpu->description() : "cpu (" + count_of(uint64_t(rep.threads), "thread") + ")";
  return gpu;
}

void finish_report(VerifyReport& rep, Clock::time_point t_start) {
  build_rollups(rep);
  apply_gate(rep);
  rep.seconds = seconds_since(t_start);
}

}  // namespace verify_detail

namespace {

using namespace verify_detail;

// Checks every section's checksum and decoded size; records each failure.
void check_integrity(const QpackFile& qf, VerifyReport& rep, const VerifyOptions& opt) {
  VerifyProgress pr;
  pr.phase = VerifyProgress::Integrity;
  pr.tensor_count = qf.tensors().size();
  for (const auto& t : qf.tensors()) pr.total_bytes += t.stored_bytes();
  for (size_t ti = 0; ti < qf.tensors().size(); ++ti) {
    const QpackTensor& t = qf.tensors()[ti];
    pr.tensor_index = ti;
    pr.tensor = t.name;
    if (opt.progress) opt.progress(pr);
    for (const TensorSection& ns : t.sections()) {
      if (!ns.section->present) {
        if (ns.raw_size > 0)
          rep.integrity_issues.push_back({t.name, ns.name,
                                          error_code_name(ErrorCode::ManifestMismatch),
                                          std::string("the ") + ns.name + " section is missing"});
        continue;
      }
      try {
        const SectionBytes b = qf.read(t, *ns.section);
        if (b.size != ns.raw_size)
          rep.integrity_issues.push_back(
              {t.name, ns.name, error_code_name(ErrorCode::ManifestMismatch),
               std::string("the ") + ns.name + " section decodes to " + std::to_string(b.size) +
                   " bytes; the tensor's layout needs " + std::to_string(ns.raw_size)});
        ++rep.sections_checked;
        rep.bytes_checked += ns.section->size;
      } catch (const Error& e) {
        if (is_io_error(e.code())) throw;
        rep.integrity_issues.push_back({t.name, ns.name, error_code_name(e.code()), e.reason()});
      }
      qf.release(*ns.section);
      pr.done_bytes += ns.section->size;
    }
  }
  pr.tensor_index = pr.tensor_count;
  pr.tensor.clear();
  if (opt.progress) opt.progress(pr);
}

void check_thresholds(const ErrorSums& s, const Thresholds& th, const std::string& tensor,
                      std::vector<GateFailure>* out) {
  if (th.max_rel_error) {
    const double v = s.rel_error();
    if (!(v <= *th.max_rel_error))
      out->push_back({tensor, "rel_error", v, *th.max_rel_error, "<="});
  }
  if (th.min_snr_db) {
    const double v = s.snr_db();
    if (!(v >= *th.min_snr_db)) out->push_back({tensor, "snr_db", v, *th.min_snr_db, ">="});
  }
  if (th.min_cosine) {
    const double v = s.cosine();
    if (!(v >= *th.min_cosine)) out->push_back({tensor, "cosine", v, *th.min_cosine, ">="});
  }
  if (th.max_abs_error) {
    const double v = s.max_abs_err;
    if (!(v <= *th.max_abs_error))
      out->push_back({tensor, "max_abs_error", v, *th.max_abs_error, "<="});
  }
}

// What the .qpack says about a tensor, before anything is compared.
TensorResult describe(const QpackTensor& t) {
  TensorResult r;
  r.name = t.name;
  r.layer = parse_layer(t.name);
  r.kind = tensor_kind(t.name);
  r.dtype = t.dtype;
  r.shape = t.shape;
  r.quantized = t.quantized;
  r.scheme = t.scheme;
  r.source_bytes = t.source_bytes();
  r.stored_bytes = t.stored_bytes();
  return r;
}

// Two-level scales (quantization.md §T4): the tensor seen as one level with
// its exact F32 (S, M) expanded into scales and zeros, which every pass
// below reads as it reads any tensor; other tensors are returned as they are.
QpackTensor one_level_view(const QpackTensor& t, SectionBytes& scales, SectionBytes& zeros) {
  if (!has_two_level(t.scheme)) return t;
  ExpandedParams e = expand_two_level(t.layout, t.scheme, scales.data, zeros.data);
  scales.owned = std::move(e.scales);
  scales.data = scales.owned.data();
  scales.size = scales.owned.size();
  zeros.owned = std::move(e.zeros);
  zeros.data = zeros.owned.data();
  zeros.size = zeros.owned.size();
  QpackTensor v = t;
  v.scheme = e.scheme;
  v.layout = e.layout;
  return v;
}

// Counts the groups whose stored scale is zero (degenerate: they reconstruct
// as their zero-point), the scales and zero-points that are not finite, and
// the integer zero-points that are not a code (a fraction, negative, or above
// 2^bits - 1: never written by qpack, and no reader of the integer rule could
// decode them as the file's writer meant).
void check_params(const QpackTensor& t, const SectionBytes& scales, const SectionBytes* zeros,
                  TensorResult& r) {
  const DType sd = t.scheme.scale_dtype;
  const int64_t groups = t.layout.num_groups();
  const bool integer_zero = has_integer_zero(t.scheme);
  const float zmax = float(qmax_asym(t.scheme.bits));
  r.groups = uint64_t(groups);
  for (int64_t g = 0; g < groups; ++g) {
    const float s = spec::load_param(scales.data, g, sd);
    if (!std::isfinite(s))
      ++r.nonfinite_params;
    else if (s == 0.0f)
      ++r.degenerate_groups;
    if (!zeros) continue;
    const float z = spec::load_param(zeros->data, g, sd);
    if (!std::isfinite(z))
      ++r.nonfinite_params;
    else if (integer_zero && !(z >= 0.0f && z <= zmax && z == std::floor(z)))
      ++r.invalid_zero_points;
  }
  r.params_checked = true;
}

// Without a source: the reconstruction's energy, from the metrics pass run
// against an all-zero "source" of the tensor's dtype (sum_sq_hat is then the
// sum of the reconstructed squares; the other sums mean nothing).
double reconstruction_energy(const QpackTensor& t, const SectionBytes& codes,
                             const SectionBytes& scales, const SectionBytes* zeros, int threads) {
  const std::vector<uint8_t> zero_source(t.source_bytes(), 0);
  QuantTensorView v;
  v.source = zero_source.data();
  v.source_dtype = t.dtype;
  v.codes = codes.data;
  v.scales = scales.data;
  v.zeros = zeros ? zeros->data : nullptr;
  v.layout = t.layout;
  v.scheme = t.scheme;
  v.name = t.name;
  return compute_error_sums_cpu(v, threads).sum_sq_hat;
}

// The provenance's source files (docs/format.md section 3.3), hashed again
// under the source root; each one that differs or is gone is named.
void check_provenance(const QpackFile& qf, VerifyReport& rep, const VerifyOptions& opt) {
  const nlohmann::json& m = qf.manifest();
  if (!m.contains("provenance")) return;
  rep.provenance = m.at("provenance");
  if (rep.source.empty() || !rep.provenance.contains("source_files")) return;
  const std::string root = source_root(rep.source);
  for (const auto& f : rep.provenance.at("source_files")) {
    if (!f.is_object() || !f.contains("path") || !f.contains("xxh3") || !f.at("path").is_string() ||
        !f.at("xxh3").is_string())
      continue;  // informative only: a foreign writer's shape is not an error
    const std::string rel = f.at("path").get<std::string>();
    const std::string want = f.at("xxh3").get<std::string>();
    const std::string path = root.empty() ? rel : root + "/" + rel;
    std::string now;
    try {
      now = checksum_to_hex(file_checksum64(path));
    } catch (const Error&) {
      now = "";
    }
    if (now == want) continue;
    rep.source_files_changed.push_back(rel);
    warn(rep, opt,
         path + ": " +
             (now.empty() ? std::string("cannot be read")
                          : "differs from the file the .qpack was made from (xxh3 " + now +
                                ", recorded " + want + ")"));
  }
}

}  // namespace

std::string tensor_flags(const TensorResult& t) {
  std::string out;
  auto add = [&](const std::string& f) { out += (out.empty() ? "" : ", ") + f; };
  if (t.all_zero) add("all-zero");
  if (t.degenerate_groups > 0)
    add("degenerate " + std::to_string(t.degenerate_groups) + "/" + std::to_string(t.groups));
  if (t.nonfinite_params > 0) add("non-finite params " + std::to_string(t.nonfinite_params));
  if (t.invalid_zero_points > 0)
    add("invalid zero-points " + std::to_string(t.invalid_zero_points));
  return out;
}

void apply_gate(VerifyReport& rep) {
  rep.gate_failures.clear();
  rep.bound_violations = 0;
  bool mismatch = !rep.missing_from_qpack.empty() || rep.source_refused;
  for (TensorResult& t : rep.tensors) {
    t.gate_failures.clear();
    const Thresholds th = rep.policy.for_tensor(t.name, &t.policy_rule, &t.gate_ignored);
    if (t.quantized && t.compared && !t.gate_ignored)
      check_thresholds(t.sums, th, t.name, &t.gate_failures);
    // Never finite-less parameters; an all-zero reconstruction unless allowed.
    if (t.nonfinite_params > 0)
      t.gate_failures.push_back({t.name, "nonfinite_params", double(t.nonfinite_params), 0, "<="});
    if (t.invalid_zero_points > 0)
      t.gate_failures.push_back(
          {t.name, "invalid_zero_points", double(t.invalid_zero_points), 0, "<="});
    if (t.all_zero && !rep.policy.allow_zero_tensors && !t.gate_ignored)
      t.gate_failures.push_back({t.name, "all_zero", 1, 0, "=="});
    rep.bound_violations += t.sums.bound_violations;
    if (!t.problems.empty()) {
      t.status = TensorStatus::SourceMismatch;
      mismatch = true;
    } else if (t.sums.bound_violations > 0 && rep.bound_is_promise) {
      t.status = TensorStatus::BoundViolated;
    } else if (!t.gate_failures.empty()) {
      t.status = TensorStatus::GateFailed;
    } else {
      t.status = TensorStatus::Ok;
    }
    rep.gate_failures.insert(rep.gate_failures.end(), t.gate_failures.begin(),
                             t.gate_failures.end());
  }
  if (rep.integrity_ok) check_thresholds(rep.model.sums, rep.policy.model, "", &rep.gate_failures);
  if (!rep.integrity_ok)
    rep.verdict = Verdict::IntegrityFailed;
  else if (mismatch)
    rep.verdict = Verdict::SourceMismatch;
  else if (rep.bound_violations > 0 && rep.bound_is_promise)
    rep.verdict = Verdict::BoundViolated;
  else if (!rep.gate_failures.empty())
    rep.verdict = Verdict::GateFailed;
  else
    rep.verdict = Verdict::Pass;
}

VerifyReport verify(const std::string& qpack_path, const std::string& source_path,
                    const VerifyOptions& opt) {
  const bool output_checks = opt.imatrix || !opt.activations_path.empty();
  if (output_checks && source_path.empty())
    throw Error(ErrorCode::InvalidArgument, qpack_path, "",
                "--imatrix and --activations compare with the source: give SOURCE");
  if (output_checks && (has_gguf_magic(qpack_path) || HfQuantizedModel::detect(qpack_path)))
    throw Error(ErrorCode::InvalidArgument, qpack_path, "",
                "--imatrix and --activations measure .qpack files only (not yet GGUF files or "
                "model folders)");
  if (has_gguf_magic(qpack_path)) return verify_gguf(qpack_path, source_path, opt);
  if (HfQuantizedModel::detect(qpack_path)) return verify_hf(qpack_path, source_path, opt);
  const auto t_start = Clock::now();
  VerifyReport rep = start_report(qpack_path, source_path, opt, "qpack");

  const std::unique_ptr<CudaMetricsEngine> gpu = open_metrics_engine(opt, rep);
  // Opened before any work, so that a bad activations file fails first.
  const std::unique_ptr<OutputChecks> checks = OutputChecks::open(opt);

  // 1. Integrity: header and manifest (open), then every section.
  const auto t_int = Clock::now();
  std::unique_ptr<QpackFile> qf;
  try {
    qf = QpackFile::open(qpack_path);
  } catch (const Error& e) {
    if (is_io_error(e.code())) throw;
    rep.integrity_issues.push_back({"", "", error_code_name(e.code()), e.reason()});
  }
  if (qf) {
    rep.file_bytes = qf->file_size();
    rep.format_version =
        std::to_string(qf->version_major()) + "." + std::to_string(qf->version_minor());
    check_integrity(*qf, rep, opt);
  }
  rep.integrity_ok = rep.integrity_issues.empty();
  rep.integrity_seconds = seconds_since(t_int);
  if (!rep.integrity_ok) {
    // A corrupted file's numbers mean nothing: report the damage only.
    if (qf)
      for (const auto& t : qf->tensors()) rep.tensors.push_back(describe(t));
    finish_report(rep, t_start);
    return rep;
  }

  // 2. Is the source the one the file was made from? Said before comparing.
  check_provenance(*qf, rep, opt);
  if (source_path.empty() || (opt.require_recorded_source && !rep.source_files_changed.empty())) {
    // 2'. Without a source (or with one refused): the stored parameters only.
    rep.source_refused = !source_path.empty();
    const auto t_self = Clock::now();
    for (const QpackTensor& t : qf->tensors()) {
      TensorResult r = describe(t);
      r.elements = 1;
      for (int64_t d : t.shape) r.elements *= uint64_t(d);
      if (t.quantized && !rep.source_refused) {
        const SectionBytes codes = qf->read(t, t.codes);
        SectionBytes scales = qf->read(t, t.scales);
        SectionBytes zeros;
        if (!t.scheme.symmetric) zeros = qf->read(t, t.zeros);
        const SectionBytes* zp = t.scheme.symmetric ? nullptr : &zeros;
        const QpackTensor tv = one_level_view(t, scales, zeros);
        check_params(tv, scales, zp, r);
        r.all_zero =
            r.elements > 0 && reconstruction_energy(tv, codes, scales, zp, rep.threads) == 0.0;
        warn_about_params(r, rep, opt);
        for (const TensorSection& ns : t.sections())
          if (ns.section->present) qf->release(*ns.section);
      }
      rep.tensors.push_back(std::move(r));
    }
    rep.compare_seconds = seconds_since(t_self);
    finish_report(rep, t_start);
    return rep;
  }

  // 3. Source comparison and metrics, one tensor at a time.
  const auto t_cmp = Clock::now();
  std::unique_ptr<Checkpoint> ck = Checkpoint::open(source_path);
  for (const CheckpointTensor& st : ck->tensors())
    if (!qf->find(st.name())) rep.missing_from_qpack.push_back(st.name());

  VerifyProgress pr;
  pr.phase = VerifyProgress::Compare;
  pr.tensor_count = qf->tensors().size();
  for (const auto& t : qf->tensors()) pr.total_bytes += t.source_bytes();

  for (size_t ti = 0; ti < qf->tensors().size(); ++ti) {
    const QpackTensor& t = qf->tensors()[ti];
    const auto t0 = Clock::now();
    pr.tensor_index = ti;
    pr.tensor = t.name;
    if (opt.progress) opt.progress(pr);

    TensorResult r = describe(t);
    r.elements = t.quantized ? uint64_t(t.layout.num_elements()) : 0;
    if (!t.quantized) {
      uint64_t n = 1;
      for (int64_t d : t.shape) n *= uint64_t(d);
      r.elements = n;
    }

    const CheckpointTensor* st = ck->find(t.name);
    if (!st) {
      rep.extra_in_qpack.push_back(t.name);
      r.problems.push_back("not in the source checkpoint");
    } else {
      if (st->info->dtype != t.dtype)
        r.problems.push_back(std::string("dtype differs: source ") + dtype_name(st->info->dtype) +
                             ", .qpack " + dtype_name(t.dtype));
      if (st->info->shape != t.shape)
        r.problems.push_back("shape differs: source " + shape_to_string(st->info->shape) +
                             ", .qpack " + shape_to_string(t.shape));
    }

    if (r.problems.empty()) {
      if (t.quantized) {
        const SectionBytes codes = qf->read(t, t.codes);
        SectionBytes scales = qf->read(t, t.scales);
        SectionBytes zeros;
        if (!t.scheme.symmetric) zeros = qf->read(t, t.zeros);
        const QpackTensor tv = one_level_view(t, scales, zeros);
        QuantTensorView v;
        v.source = st->data();
        v.source_dtype = t.dtype;
        v.codes = codes.data;
        v.scales = scales.data;
        v.zeros = t.scheme.symmetric ? nullptr : zeros.data;
        v.layout = tv.layout;
        v.scheme = tv.scheme;
        v.name = t.name;
        r.sums = gpu ? gpu->compute(v) : compute_error_sums_cpu(v, rep.threads);
        r.compared = true;
        if (checks) checks->measure(v, t.shape, r, rep.threads);
        check_params(tv, scales, t.scheme.symmetric ? nullptr : &zeros, r);
        r.all_zero = r.sums.sum_sq_hat == 0.0 && r.sums.sum_sq_ref > 0.0;
        warn_about_params(r, rep, opt);
      } else {
        const SectionBytes data = qf->read(t, t.data);
        const uint8_t* src = st->data();
        const uint64_t n = st->info->nbytes();
        if (data.size != n) {
          r.problems.push_back("raw data is " + std::to_string(data.size) +
                               " bytes, the source has " + std::to_string(n));
        } else if (n > 0 && std::memcmp(data.data, src, n) != 0) {
          uint64_t first = 0;
          while (data.data[first] == src[first]) ++first;
          r.problems.push_back("raw bytes differ from the source (first difference at byte " +
                               std::to_string(first) + ")");
        }
        r.raw_equal = r.problems.empty();
        r.compared = true;
      }
    }
    for (const TensorSection& ns : t.sections())
      if (ns.section->present) qf->release(*ns.section);
    if (st) st->file->release(*st->info);

    r.seconds = seconds_since(t0);
    pr.done_bytes += t.source_bytes();
    rep.tensors.push_back(std::move(r));
  }
  pr.tensor_index = pr.tensor_count;
  pr.tensor.clear();
  if (opt.progress) opt.progress(pr);
  rep.compare_seconds = seconds_since(t_cmp);
  if (checks) checks->finish(rep, opt);

  finish_report(rep, t_start);
  return rep;
}

}  // namespace qpack
