// What verify.cpp (.qpack files), verify_gguf.cpp (GGUF files) and
// verify_hf.cpp (compressed-tensors / GPTQ folders) share: the clock, the
// report's settings, the roll-ups and the gate, warnings. Internal to the
// verify library.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/verify/metrics.hpp"
#include "qpack/verify/verify.hpp"

namespace qpack::verify_detail {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0);
std::string utc_now_iso8601();
bool is_io_error(ErrorCode c);
// The per-layer, per-kind and model roll-ups of rep.tensors.
void build_rollups(VerifyReport& rep);
// Passes `line` to opt.warn and keeps it in the report.
void warn(VerifyReport& rep, const VerifyOptions& opt, std::string line);
// A report with the run's settings filled in (file, source, policy,
// threads, version, date) for a file of `format` ("qpack", "gguf", ...).
VerifyReport start_report(const std::string& file, const std::string& source,
                          const VerifyOptions& opt, const std::string& format);
// The metrics engine of opt.device (null for the CPU), opened first so that
// an unusable --device cuda fails before any work; sets rep.device.
std::unique_ptr<CudaMetricsEngine> open_metrics_engine(const VerifyOptions& opt, VerifyReport& rep);
// The last steps of every format: roll-ups, the gate, the total time.
void finish_report(VerifyReport& rep, Clock::time_point t_start);
// The warnings a quantized tensor's stored parameters call for (non-finite
// scales or zero-points, all-zero reconstruction, degenerate groups).
void warn_about_params(const TensorResult& r, VerifyReport& rep, const VerifyOptions& opt);

}  // namespace qpack::verify_detail

namespace qpack {
// verify() for a GGUF file (verify_gguf.cpp).
VerifyReport verify_gguf(const std::string& gguf_path, const std::string& source_path,
                         const VerifyOptions& options);
// verify() for a compressed-tensors / GPTQ model folder (verify_hf.cpp).
VerifyReport verify_hf(const std::string& folder, const std::string& source_path,
                       const VerifyOptions& options);
}  // namespace qpack

namespace qpack::verify_detail {

// The importance-weighted and output errors of VerifyOptions (imatrix,
// activations_path), tensor by tensor (output_checks.cpp). open() returns
// null when neither is asked for; it validates the activations file (every
// key [samples, in] of F32/F16/BF16, finite) before any comparison.
class OutputChecks {
 public:
  static std::unique_ptr<OutputChecks> open(const VerifyOptions& opt);
  // Fills r.weighted / r.output for a quantized tensor of `shape` (source and
  // codes in `v`) where the imatrix has an entry or the activations a key.
  // Throws Error(ShapeMismatch) naming the imatrix or activations file when
  // an entry does not fit the tensor.
  void measure(const QuantTensorView& v, const std::vector<int64_t>& shape, TensorResult& r,
               int threads);
  // Records the paths in the report and warns about quantized matrices the
  // imatrix has no entry for and activation keys no tensor used.
  void finish(VerifyReport& rep, const VerifyOptions& opt) const;

 private:
  OutputChecks() = default;
  const ImportanceMatrix* imatrix_ = nullptr;
  std::unique_ptr<SafetensorsFile> acts_;
  std::vector<std::string> used_, missing_;
};

}  // namespace qpack::verify_detail
