// verify()'s optional checks past the weights: the importance-weighted error
// (VerifyOptions::imatrix) and the output error on sample activations
// (VerifyOptions::activations_path), per quantized tensor, on the CPU.
#include <algorithm>
#include <cmath>

#include "qpack/format/error.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "qpack/verify/output_error.hpp"
#include "verify_detail.hpp"

namespace qpack::verify_detail {

std::unique_ptr<OutputChecks> OutputChecks::open(const VerifyOptions& opt) {
  if (!opt.imatrix && opt.activations_path.empty()) return nullptr;
  auto c = std::unique_ptr<OutputChecks>(new OutputChecks());
  c->imatrix_ = opt.imatrix.get();
  if (!opt.activations_path.empty()) {
    c->acts_ = SafetensorsFile::open(opt.activations_path);
    for (const TensorInfo& t : c->acts_->tensors()) {
      const auto fail = [&](const std::string& why) {
        throw Error(ErrorCode::ShapeMismatch, opt.activations_path, t.name, why);
      };
      if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
        throw Error(
            ErrorCode::UnsupportedDtype, opt.activations_path, t.name,
            std::string("activations must be F32, F16 or BF16, not ") + dtype_name(t.dtype));
      if (t.shape.size() != 2 || t.shape[0] < 1 || t.shape[1] < 1)
        fail("activations must be [samples, in] with both >= 1, not " + shape_to_string(t.shape));
      for (uint64_t i = 0; i < t.num_elements(); ++i)
        if (!std::isfinite(load_as_f32(c->acts_->tensor_data(t), t.dtype, i)))
          throw Error(ErrorCode::NonFinite, opt.activations_path, t.name,
                      "activation " + std::to_string(i) + " is not finite");
    }
  }
  return c;
}

void OutputChecks::measure(const QuantTensorView& v, const std::vector<int64_t>& shape,
                           TensorResult& r, int threads) {
  if (shape.size() < 2) return;
  const ImatrixEntry* e = imatrix_ ? imatrix_->find_for_tensor(v.name) : nullptr;
  const TensorInfo* a = acts_ ? acts_->find(v.name) : nullptr;
  if (a) used_.push_back(v.name);
  if (imatrix_ && !e) missing_.push_back(v.name);
  if (!e && !a) return;
  const int64_t in = shape.back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < shape.size(); ++d) rows *= shape[d];
  const std::vector<float> hat = reconstruct_qpack_tensor(v, threads);
  if (e) {
    // One matrix: channels == in. Stacked experts [E, out, in]: E matrices,
    // from a GGUF entry [in, E] or a legacy entry of E * in values.
    int64_t matrices = 0;
    if (e->matrices == 1 && e->columns == in)
      matrices = 1;
    else if (shape.size() == 3 && e->columns == in && e->matrices == shape[0])
      matrices = shape[0];
    else if (shape.size() == 3 && e->matrices == 1 && e->columns == shape[0] * in)
      matrices = shape[0];
    if (matrices == 0)
      throw Error(ErrorCode::ShapeMismatch, imatrix_->path, v.name,
                  "imatrix entry '" + e->name + "' holds " + std::to_string(e->matrices) + " x " +
                      std::to_string(e->columns) + " channel weights; the tensor " +
                      shape_to_string(shape) + " has " + std::to_string(in) +
                      " input channels (an imatrix of another model?)");
    r.weighted = importance_weighted_sums(v.source, v.source_dtype, hat.data(), rows, in,
                                          e->weights.data(), matrices, threads);
    r.has_weighted = true;
    r.imatrix_entry = e->name;
  }
  if (a) {
    if (shape.size() != 2 || a->shape[1] != in)
      throw Error(ErrorCode::ShapeMismatch, acts_->path(), v.name,
                  "activations " + shape_to_string(a->shape) + " do not feed the weight " +
                      shape_to_string(shape) + " (want [samples, " + std::to_string(in) +
                      "] for an [out, in] weight)");
    r.output = output_error_sums(v.source, v.source_dtype, hat.data(), shape[0], in,
                                 acts_->tensor_data(*a), a->dtype, a->shape[0], threads);
    r.has_output = true;
    acts_->release(*a);
  }
}

void OutputChecks::finish(VerifyReport& rep, const VerifyOptions& opt) const {
  rep.imatrix = opt.imatrix ? opt.imatrix_path : "";
  rep.activations = opt.activations_path;
  if (!missing_.empty())
    warn(rep, opt,
         "imatrix " + opt.imatrix_path + ": no entry for " +
             count_of(missing_.size(), "quantized matrix") + " (first: " + missing_.front() +
             "); their importance-weighted error is not reported");
  if (acts_) {
    std::vector<std::string> unused;
    for (const TensorInfo& t : acts_->tensors())
      if (std::find(used_.begin(), used_.end(), t.name) == used_.end()) unused.push_back(t.name);
    std::sort(unused.begin(), unused.end());
    if (!unused.empty())
      warn(rep, opt,
           "activations " + opt.activations_path + ": " + count_of(unused.size(), "key") +
               " name no quantized matrix of the file (first: " + unused.front() + ")");
  }
}

}  // namespace qpack::verify_detail
