#include "verify/verify_fixtures.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>

#include "qpack/format/container.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

namespace qpack::vtest {

uint64_t HostTensor::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

float get_value(const HostTensor& t, uint64_t i) { return load_as_f32(t.bytes.data(), t.dtype, i); }

void set_value(HostTensor& t, uint64_t i, float v) {
  switch (t.dtype) {
    case DType::F16: {
      const uint16_t h = f32_to_f16_rne(v);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
      break;
    }
    case DType::BF16: {
      const uint16_t h = f32_to_bf16_rne(v);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
      break;
    }
    default:
      std::memcpy(t.bytes.data() + 4 * i, &v, 4);
  }
}

HostTensor random_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                         std::mt19937_64& rng, double sigma) {
  HostTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const uint64_t n = t.numel();
  t.bytes.resize(size_t(n * uint64_t(dtype_bits(dtype)) / 8));
  if (is_quantizable(dtype)) {
    std::normal_distribution<double> nd(0.0, sigma);
    for (uint64_t i = 0; i < n; ++i) set_value(t, i, float(nd(rng)));
  } else {
    for (auto& b : t.bytes) b = uint8_t(rng());
  }
  return t;
}

void write_source(const std::string& path, const std::vector<HostTensor>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<TensorToWrite> w;
  for (const auto& t : tensors)
    w.push_back({t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  write_safetensors(path, w, metadata, /*overwrite=*/true);
}

Quantized quantize(const HostTensor& t, QuantScheme scheme, NonFinitePolicy policy) {
  Quantized q;
  q.layout = make_layout(t.shape, scheme, t.name);
  scheme.group_size = q.layout.group_size;
  scheme.axis = q.layout.axis;
  q.scheme = scheme;
  const size_t params = size_t(q.layout.params_bytes(scheme.scale_dtype));
  q.codes.assign(size_t(q.layout.codes_bytes()), 0);
  q.scales.assign(params, 0);
  if (!scheme.symmetric) q.zeros.assign(params, 0);
  QuantInput in{t.bytes.data(), t.dtype, t.name};
  QuantBuffers out{q.codes.data(), q.scales.data(), scheme.symmetric ? nullptr : q.zeros.data()};
  quantize_reference(in, q.layout, scheme, policy, out);
  return q;
}

void write_qpack(const std::string& path, const std::vector<HostTensor>& tensors,
                 const SchemeChooser& choose, NonFinitePolicy policy,
                 const std::map<std::string, std::string>& metadata) {
  WriterOptions wo;
  wo.overwrite = true;
  QpackWriter w(path, wo);
  nlohmann::json md = nlohmann::json::object();
  for (const auto& [k, v] : metadata) md[k] = v;
  w.set_source(md, nullptr);
  for (const auto& t : tensors) {
    const auto scheme = choose(t);
    if (!scheme) {
      w.add_raw(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
      continue;
    }
    const Quantized q = quantize(t, *scheme, policy);
    w.add_quantized(t.name, t.dtype, t.shape, q.scheme, q.codes.data(), q.scales.data(),
                    q.scheme.symmetric ? nullptr : q.zeros.data());
  }
  w.commit();
}

SchemeChooser quantize_matrices(QuantScheme scheme) {
  return [scheme](const HostTensor& t) -> std::optional<QuantScheme> {
    if (!is_quantizable(t.dtype) || t.shape.size() < 2) return std::nullopt;
    return scheme;
  };
}

namespace {
float param(const std::vector<uint8_t>& v, int64_t i, DType sd) {
  return load_as_f32(v.data(), sd, uint64_t(i));
}
}  // namespace

RefMetrics reference_metrics(const HostTensor& src, const Quantized& q) {
  const GroupLayout& L = q.layout;
  const int64_t n = L.num_elements();
  std::vector<float> xh(size_t(std::max<int64_t>(n, 1)));
  dequantize_reference(q.codes.data(), q.scales.data(),
                       q.scheme.symmetric ? nullptr : q.zeros.data(), L, q.scheme, xh.data());
  RefMetrics m;
  for (int64_t i = 0; i < n; ++i) {
    const float x = get_value(src, uint64_t(i));
    if (!std::isfinite(x)) {
      ++m.nonfinite;
      continue;
    }
    const double e = double(x) - double(xh[size_t(i)]);
    m.sq_err += e * e;
    m.abs_err += std::fabs(e);
    m.sq_ref += double(x) * double(x);
    m.sq_hat += double(xh[size_t(i)]) * double(xh[size_t(i)]);
    m.dot += double(x) * double(xh[size_t(i)]);
    ++m.count;
    if (m.max_index < 0 || std::fabs(e) > m.max_abs) {
      m.max_abs = std::fabs(e);
      m.max_index = i;
    }
    const int64_t in = i % L.inner, a = (i / L.inner) % L.axis_len, o = i / L.inner / L.axis_len;
    const int64_t p = (o * L.groups_per_axis + a / L.group_size) * L.inner + in;
    const double s = param(q.scales, p, q.scheme.scale_dtype);
    const double z = q.scheme.symmetric ? 0.0 : param(q.zeros, p, q.scheme.scale_dtype);
    if (std::fabs(e) > test::reference_error_bound(x, s, z, q.scheme)) {
      if (m.violations == 0) m.first_violation = i;
      ++m.violations;
    }
  }
  return m;
}

double RefMetrics::rmse() const { return count ? std::sqrt(sq_err / double(count)) : 0; }
double RefMetrics::rel() const {
  if (sq_ref > 0) return std::sqrt(sq_err / sq_ref);
  return sq_err > 0 ? std::numeric_limits<double>::infinity() : 0;
}
double RefMetrics::snr_db() const {
  if (sq_err == 0) return std::numeric_limits<double>::infinity();
  return 10 * std::log10(sq_ref / sq_err);
}
double RefMetrics::cosine() const {
  if (sq_ref == 0 && sq_hat == 0) return 1;
  if (sq_ref == 0 || sq_hat == 0) return 0;
  return dot / std::sqrt(sq_ref * sq_hat);
}

std::vector<HostTensor> tiny_llama(std::mt19937_64& rng, int layers, DType dt) {
  const int64_t dim = 64, kv = 32, hidden = 96, vocab = 80;
  std::vector<HostTensor> t;
  t.push_back(random_tensor("model.embed_tokens.weight", dt, {vocab, dim}, rng, 0.5));
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back(random_tensor(p + "input_layernorm.weight", dt, {dim}, rng));
    t.push_back(random_tensor(p + "self_attn.q_proj.weight", dt, {dim, dim}, rng, 0.05));
    t.push_back(random_tensor(p + "self_attn.k_proj.weight", dt, {kv, dim}, rng, 0.05));
    t.push_back(random_tensor(p + "self_attn.v_proj.weight", dt, {kv, dim}, rng, 0.05));
    t.push_back(random_tensor(p + "self_attn.o_proj.weight", dt, {dim, dim}, rng, 0.05));
    t.push_back(random_tensor(p + "post_attention_layernorm.weight", dt, {dim}, rng));
    t.push_back(random_tensor(p + "mlp.gate_proj.weight", dt, {hidden, dim}, rng, 0.05));
    t.push_back(random_tensor(p + "mlp.up_proj.weight", dt, {hidden, dim}, rng, 0.05));
    t.push_back(random_tensor(p + "mlp.down_proj.weight", dt, {dim, hidden}, rng, 0.05));
  }
  t.push_back(random_tensor("model.norm.weight", dt, {dim}, rng));
  t.push_back(random_tensor("lm_head.weight", dt, {vocab, dim}, rng, 0.5));
  return t;
}

void flip_byte(const std::string& path, uint64_t offset, uint8_t mask) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  f.seekg(std::streamoff(offset));
  char c = 0;
  f.read(&c, 1);
  c = char(uint8_t(c) ^ mask);
  f.seekp(std::streamoff(offset));
  f.write(&c, 1);
  if (!f) throw std::runtime_error("cannot modify " + path);
}

QuantTensorView view_of(const HostTensor& t, const Quantized& q) {
  QuantTensorView v;
  v.source = t.bytes.data();
  v.source_dtype = t.dtype;
  v.codes = q.codes.data();
  v.scales = q.scales.data();
  v.zeros = q.scheme.symmetric ? nullptr : q.zeros.data();
  v.layout = q.layout;
  v.scheme = q.scheme;
  v.name = t.name;
  return v;
}

}  // namespace qpack::vtest
