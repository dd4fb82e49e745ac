// choose_to_budget: per-tensor candidates from the ladder, their errors
// measured on a strided sample by the CPU quantizer, then a greedy walk up
// each tensor's lower convex hull of (bits, error) in order of error cut per
// bit, and a fill of what is left of the budget. docs/quantization.md §B.
#include "qpack/converter/budget.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <set>

#include "qpack/converter/quantize.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/imatrix.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// The exchange pass is quadratic in the model's candidates: up to this many
// (about 250 tensors of 16 candidates).
constexpr size_t kExchangeCandidates = 4096;

// Windows of kBudgetWindow positions of an axis of length n: all of them, or
// k evenly spaced ones (the middle of each of k equal stretches), as a list
// of positions in ascending order (so a partial last window comes last, and
// every group of the sample is a group of the tensor).
std::vector<int64_t> window_positions(int64_t n, int64_t k) {
  const int64_t windows = (n + kBudgetWindow - 1) / kBudgetWindow;
  std::vector<int64_t> pos;
  if (k >= windows) {
    pos.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = i;
    return pos;
  }
  for (int64_t i = 0; i < k; ++i) {
    const int64_t w = ((2 * i + 1) * windows) / (2 * k);
    for (int64_t p = w * kBudgetWindow; p < std::min(n, (w + 1) * kBudgetWindow); ++p)
      pos.push_back(p);
  }
  return pos;
}

int64_t windows_of(int64_t n) { return (n + kBudgetWindow - 1) / kBudgetWindow; }

// The sample of one tensor: rows (positions along axis 0) x the middle axes
// whole x columns (positions along the last axis), as a dense F32 tensor.
struct Sample {
  std::vector<int64_t> shape;
  std::vector<float> x;
  std::vector<double> w;  // per element: the imatrix weight of its channel (1 without)
};

// Weights per (matrix, channel) for a tensor, normalised to mean 1 over the
// entry, or empty (uniform). A [.., in] weight's channel is its last index;
// stacked experts [E, out, in] are E matrices.
std::vector<double> channel_weights(const ImportanceMatrix* im, const std::string& path,
                                    const std::string& name, const std::vector<int64_t>& shape,
                                    int64_t* matrices) {
  *matrices = 1;
  if (!im || shape.size() < 2) return {};
  const ImatrixEntry* e = im->find_for_tensor(name);
  if (!e) return {};
  const int64_t in = shape.back();
  if (e->matrices == 1 && e->columns == in)
    *matrices = 1;
  else if (shape.size() == 3 && e->columns == in && e->matrices == shape[0])
    *matrices = shape[0];
  else if (shape.size() == 3 && e->matrices == 1 && e->columns == shape[0] * in)
    *matrices = shape[0];
  else
    throw Error(ErrorCode::ShapeMismatch, path, name,
                "imatrix entry '" + e->name + "' holds " + std::to_string(e->matrices) + " x " +
                    std::to_string(e->columns) + " channels, which do not fit the tensor " +
                    shape_to_string(shape));
  std::vector<double> w = e->weights;
  double sum = 0;
  for (double v : w) sum += v;
  if (!(sum > 0)) return {};
  const double mean = sum / double(w.size());
  for (double& v : w) v /= mean;
  return w;
}

// Per-channel mean squared activation of the inputs recorded for `name`,
// normalised to mean 1, or empty when the file has none for it.
std::vector<double> activation_weights(const SafetensorsFile* acts, const std::string& name,
                                       const std::vector<int64_t>& shape) {
  if (!acts || shape.size() < 2) return {};
  const TensorInfo* a = acts->find(name);
  if (!a) return {};
  if (a->dtype != DType::F32 && a->dtype != DType::F16 && a->dtype != DType::BF16)
    throw Error(ErrorCode::UnsupportedDtype, acts->path(), name,
                std::string("activations must be F32, F16 or BF16, not ") + dtype_name(a->dtype));
  if (a->shape.size() != 2 || a->shape[0] < 1 || a->shape[1] != shape.back())
    throw Error(ErrorCode::ShapeMismatch, acts->path(), name,
                "activations must be [samples, " + std::to_string(shape.back()) +
                    "] for the weight " + shape_to_string(shape) + ", not " +
                    shape_to_string(a->shape));
  const int64_t n = a->shape[0], in = a->shape[1];
  std::vector<double> w(size_t(in), 0.0);
  const uint8_t* data = acts->tensor_data(*a);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < in; ++j) {
      const double x = load_as_f32(data, a->dtype, uint64_t(r * in + j));
      if (!std::isfinite(x))
        throw Error(ErrorCode::NonFinite, acts->path(), name,
                    "activation " + std::to_string(r * in + j) + " is not finite");
      w[size_t(j)] += x * x;
    }
  acts->release(*a);
  double sum = 0;
  for (double v : w) sum += v;
  if (!(sum > 0)) return {};
  const double mean = sum / double(in);
  for (double& v : w) v /= mean;
  return w;
}

Sample take_sample(const CheckpointTensor& t, int64_t cap, const std::vector<double>& weights,
                   int64_t matrices) {
  const std::vector<int64_t>& shape = t.info->shape;
  const int rank = int(shape.size());
  const int64_t n0 = shape[0];
  const int64_t nl = rank >= 2 ? shape.back() : 1;
  int64_t mid = 1;
  for (int i = 1; i + 1 < rank; ++i) mid *= shape[size_t(i)];
  const int64_t numel = n0 * mid * nl;
  int64_t k0 = windows_of(n0), kl = rank >= 2 ? windows_of(nl) : 1;
  if (numel > cap) {
    const int64_t tile = std::min(n0, kBudgetWindow) * mid * std::min(nl, kBudgetWindow);
    const int64_t tiles = std::max<int64_t>(1, cap / std::max<int64_t>(1, tile));
    const int64_t all0 = k0, alll = kl;
    k0 = std::min(all0, std::max<int64_t>(1, int64_t(std::sqrt(double(tiles)))));
    kl = std::min(alll, std::max<int64_t>(1, tiles / k0));
    k0 = std::min(all0, std::max<int64_t>(1, tiles / kl));
  }
  const std::vector<int64_t> rows = window_positions(n0, k0);
  const std::vector<int64_t> cols = rank >= 2 ? window_positions(nl, kl) : std::vector<int64_t>{0};
  // The middle axes (flattened) whole, or, when one window of each end axis
  // already passes the cap, evenly spaced positions of them: groups run
  // along the first or the last axis only, so any subset keeps them whole.
  std::vector<int64_t> mids;
  const int64_t ends = int64_t(rows.size() * cols.size());
  const int64_t keep = numel > cap ? std::max<int64_t>(1, cap / std::max<int64_t>(1, ends)) : mid;
  if (keep >= mid) {
    for (int64_t m = 0; m < mid; ++m) mids.push_back(m);
  } else {
    for (int64_t i = 0; i < keep; ++i) mids.push_back(((2 * i + 1) * mid) / (2 * keep));
  }
  Sample s;
  s.shape = {int64_t(rows.size())};
  if (rank >= 3) s.shape.push_back(int64_t(mids.size()));
  if (rank >= 2) s.shape.push_back(int64_t(cols.size()));
  const uint8_t* data = t.data();
  s.x.resize(rows.size() * mids.size() * cols.size());
  s.w.assign(s.x.size(), 1.0);
  const int64_t rows_per_matrix = matrices > 1 ? n0 / matrices : n0;
  size_t k = 0;
  for (int64_t r : rows)
    for (int64_t m : mids)
      for (int64_t c : cols) {
        const uint64_t flat = uint64_t((r * mid + m) * nl + c);
        s.w[k] = weights.empty()
                     ? 1.0
                     : weights[size_t((matrices > 1 ? r / rows_per_matrix : 0) * nl + c)];
        s.x[k++] = load_as_f32(data, t.info->dtype, flat);
      }
  t.file->release(*t.info);
  return s;
}

// sum w * (x_hat - x)^2 over the sample's finite elements, in float64, in
// element order.
double sample_error(const Sample& s, const QuantScheme& scheme, NonFinitePolicy policy,
                    const std::string& name, int threads) {
  const GroupLayout L = make_layout(s.shape, scheme, name);
  const uint64_t params = L.params_bytes(scheme.scale_dtype);
  std::vector<uint8_t> codes(L.codes_bytes()), scales(params), zeros(scheme.symmetric ? 0 : params);
  QuantBuffers out{codes.data(), scales.data(), scheme.symmetric ? nullptr : zeros.data()};
  QuantInput in{reinterpret_cast<const uint8_t*>(s.x.data()), DType::F32, name};
  quantize_cpu(in, L, scheme, policy, out, threads);
  std::vector<float> xh(s.x.size());
  dequantize_cpu(out.codes, out.scales, out.zeros, L, scheme, xh.data(), threads);
  double e = 0;
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (!std::isfinite(s.x[i])) continue;
    const double d = double(xh[i]) - double(s.x[i]);
    e += s.w[i] * (d * d);
  }
  return e;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Marks the lower convex hull of (bytes, error), from the cheapest candidate
// (least error among equally cheap) to the least error, and returns its
// vertices in ascending bytes.
std::vector<size_t> mark_hull(std::vector<BudgetCandidate>& cs) {
  std::vector<size_t> order(cs.size());
  for (size_t i = 0; i < cs.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (cs[a].bytes != cs[b].bytes) return cs[a].bytes < cs[b].bytes;
    return cs[a].error < cs[b].error;
  });
  std::vector<size_t> front;  // error strictly falling as bytes rise
  for (size_t i : order)
    if (front.empty() ||
        (cs[i].error < cs[front.back()].error && cs[i].bytes > cs[front.back()].bytes))
      front.push_back(i);
  std::vector<size_t> hull;
  for (size_t i : front) {
    while (hull.size() >= 2) {
      const BudgetCandidate& a = cs[hull[hull.size() - 2]];
      const BudgetCandidate& b = cs[hull.back()];
      const BudgetCandidate& c = cs[i];
      // b is above the segment a-c (or on it): not a vertex.
      const double lhs = (b.error - a.error) * double(c.bytes - a.bytes);
      const double rhs = (c.error - a.error) * double(b.bytes - a.bytes);
      if (lhs >= rhs)
        hull.pop_back();
      else
        break;
    }
    hull.push_back(i);
  }
  for (size_t i : hull) cs[i].on_hull = true;
  return hull;
}

}  // namespace

const char* budget_objective_name(BudgetObjective o) {
  return o == BudgetObjective::Relative ? "relative" : "total";
}

nlohmann::json BudgetReport::to_json() const {
  auto num = [](double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  };
  nlohmann::json t = nlohmann::json::array();
  for (const BudgetTensor& b : tensors) {
    const BudgetCandidate& c = b.choice();
    nlohmann::json cands = nlohmann::json::array();
    for (const BudgetCandidate& x : b.candidates)
      cands.push_back({{"bits", x.bits},
                       {"group_size", x.group_size},
                       {"axis", x.axis},
                       {"bytes", x.bytes},
                       {"bpw", x.bpw(b.elements)},
                       {"est_rel_error", b.reference > 0 ? std::sqrt(x.error / b.reference) : 0.0},
                       {"on_hull", x.on_hull}});
    t.push_back({{"name", b.name},
                 {"elements", b.elements},
                 {"sampled_elements", b.sampled},
                 {"reference", b.reference},
                 {"weighted", b.weighted},
                 {"bits", c.bits},
                 {"group_size", c.group_size},
                 {"axis", c.axis},
                 {"bytes", c.bytes},
                 {"bpw", c.bpw(b.elements)},
                 {"est_rel_error", b.reference > 0 ? std::sqrt(c.error / b.reference) : 0.0},
                 {"gain_per_bit_taken", num(b.gain_taken)},
                 {"gain_per_bit_next", num(b.gain_next)},
                 {"why", b.why},
                 {"candidates", cands}});
  }
  return {{"target_bpw", target_bpw ? nlohmann::json(*target_bpw) : nlohmann::json(nullptr)},
          {"target_error", target_error ? nlohmann::json(*target_error) : nlohmann::json(nullptr)},
          {"reachable_min_rel_error", min_rel_error},
          {"axis_auto", axis_auto},
          {"objective", budget_objective_name(objective)},
          {"weights", weights},
          {"elements", elements},
          {"bytes", bytes},
          {"bpw", bpw},
          {"reachable_bpw", {min_bpw, max_bpw}},
          {"threshold_gain_per_bit", num(threshold)},
          {"est_rel_error", estimated_rel_error},
          {"notes", notes},
          {"tensors", t}};
}

Recipe choose_to_budget(const Checkpoint& ckpt, const Recipe& recipe_in,
                        const BudgetOptions& options, BudgetReport* report) {
  if (options.axis_auto && !options.imatrix && options.activations_path.empty())
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--axis auto needs --imatrix or --activations: weight error alone picks the wrong "
                "axis on one "
                "model in two (docs/quantization.md §B)");
  if (options.target_bpw && !(std::isfinite(*options.target_bpw) && *options.target_bpw > 0))
    throw Error(ErrorCode::InvalidArgument, "", "", "--target-bpw must be a positive number");
  if (options.target_error && !(std::isfinite(*options.target_error) && *options.target_error > 0))
    throw Error(ErrorCode::InvalidArgument, "", "", "--target-error must be a positive number");
  if (options.target_error && options.target_bpw)
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--target-bpw and --target-error are two targets; give one");
  if (options.target_error && options.objective != BudgetObjective::Total)
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--target-error bounds the model-wide error: the objective is 'total'");
  // Bits and group sizes are free under either target.
  const bool budgeted = options.target_bpw || options.target_error;
  Recipe recipe = recipe_in;
  recipe.tensors.clear();
  BudgetReport rep;
  rep.target_bpw = options.target_bpw;
  rep.target_error = options.target_error;
  rep.axis_auto = options.axis_auto;
  rep.objective = options.objective;
  rep.weights = options.imatrix ? "imatrix " + options.imatrix->path : "";
  if (!options.activations_path.empty())
    rep.weights += (rep.weights.empty() ? "" : ", ") + ("activations " + options.activations_path);
  if (rep.weights.empty()) rep.weights = "none";
  std::unique_ptr<SafetensorsFile> acts;
  if (!options.activations_path.empty()) acts = SafetensorsFile::open(options.activations_path);

  // 1. Candidates and their estimated errors, tensor by tensor.
  for (const CheckpointTensor& t : ckpt.tensors()) {
    const std::string& name = t.info->name;
    const TensorDecision d = decide(recipe, name, t.info->dtype, t.info->shape);
    if (d.action != TensorAction::Quantize) continue;
    const TensorRule* rule = d.rule >= 0 ? &recipe.rules[size_t(d.rule)] : nullptr;
    std::vector<int> bits_list, axis_list;
    std::vector<int64_t> group_list;
    if ((rule && rule->bits) || !budgeted)
      bits_list = {d.scheme.bits};
    else
      bits_list.assign(std::begin(kBudgetBits), std::end(kBudgetBits));
    if ((rule && rule->group_size) || !budgeted)
      group_list = {d.scheme.group_size};
    else
      group_list.assign(std::begin(kBudgetGroups), std::end(kBudgetGroups));
    if ((rule && rule->axis) || !options.axis_auto)
      axis_list = {d.scheme.axis};
    else
      axis_list = {0, -1};
    const uint64_t bytes_in = t.info->nbytes();
    BudgetTensor b;
    b.name = name;
    b.shape = t.info->shape;
    b.elements = 1;
    for (int64_t s : b.shape) b.elements *= s;
    std::set<std::tuple<int, int64_t, int>> seen;  // resolved (bits, group, axis)
    std::vector<QuantScheme> schemes;
    auto consider = [&](const QuantScheme& s) {
      if (!validate_scheme(s).empty()) return;
      GroupLayout L;
      std::string why;
      if (GroupLayout::resolve(b.shape, s, &L, &why) != LayoutFault::None) return;
      const uint64_t sections =
          L.codes_bytes() + L.params_bytes(s.scale_dtype) * (s.symmetric ? 1 : 2);
      if (L.group_size < kMinResolvedGroup || sections >= bytes_in) return;
      if (!seen.insert({s.bits, L.group_size, L.axis}).second) return;
      BudgetCandidate c;
      c.bits = s.bits;
      c.group_size = s.group_size;
      c.axis = L.axis;
      c.bytes = sections;
      b.candidates.push_back(c);
      schemes.push_back(s);
    };
    for (int bits : bits_list)
      for (int64_t g : group_list)
        for (int ax : axis_list) {
          QuantScheme s = d.scheme;
          s.bits = bits;
          s.group_size = g;
          s.axis = ax;
          consider(s);
        }
    if (b.candidates.empty()) consider(d.scheme);  // as the plan would do without a budget
    if (b.candidates.empty()) continue;            // the plan keeps it (too small to gain)
    int64_t matrices = 1;
    std::vector<double> weights = activation_weights(acts.get(), name, b.shape);
    if (weights.empty())
      weights = channel_weights(options.imatrix, t.file->path(), name, b.shape, &matrices);
    b.weighted = !weights.empty();
    const Sample s =
        take_sample(t, std::max<int64_t>(1, options.sample_elements), weights, matrices);
    b.sampled = int64_t(s.x.size());
    const double scale = double(b.elements) / double(b.sampled);
    double ref = 0;
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i])) ref += s.w[i] * (double(s.x[i]) * double(s.x[i]));
    b.reference = ref * scale;
    // One candidate per thread, each quantized on one thread into its own
    // slot: the same errors for any thread count. A failure is rethrown
    // for the first candidate (ladder order) that failed.
    const int64_t count = int64_t(b.candidates.size());
    std::vector<std::unique_ptr<Error>> failed(b.candidates.size());
    const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < count; ++i) {
      QuantScheme q = schemes[size_t(i)];
      // The sample is [rows, (middle,) columns]: the first axis or its last.
      q.axis = b.candidates[size_t(i)].axis == 0 ? 0 : int(s.shape.size()) - 1;
      try {
        b.candidates[size_t(i)].error = sample_error(s, q, options.nonfinite, name, 1) * scale;
      } catch (const Error& err) {
        failed[size_t(i)] = std::make_unique<Error>(err);
      } catch (const std::exception& err) {
        failed[size_t(i)] = std::make_unique<Error>(ErrorCode::Internal, "", name, err.what());
      }
    }
    for (const auto& f : failed)
      if (f) throw f->with_context(t.file->path(), name);
    rep.tensors.push_back(std::move(b));
  }

  // 2. Hulls; the cheapest vertex of each to start.
  std::vector<std::vector<size_t>> hulls;
  std::vector<size_t> at;  // position on the hull
  uint64_t min_bytes = 0, max_bytes = 0;
  double ref_sum = 0;
  for (BudgetTensor& b : rep.tensors) {
    hulls.push_back(mark_hull(b.candidates));
    at.push_back(0);
    b.chosen = hulls.back().front();
    rep.elements += b.elements;
    min_bytes += b.candidates[hulls.back().front()].bytes;
    max_bytes += b.candidates[hulls.back().back()].bytes;
    ref_sum += b.reference;
  }
  if (rep.tensors.empty()) {
    rep.notes.push_back("no tensor is quantized: nothing to choose");
    if (report) *report = rep;
    return recipe;
  }
  rep.min_bpw = double(min_bytes) * 8.0 / double(rep.elements);
  rep.max_bpw = double(max_bytes) * 8.0 / double(rep.elements);
  // Each tensor's errors as the objective counts them: over its own
  // reference (relative), or over the model's mean weighted square of a
  // weight (total).
  const double unit = ref_sum > 0 ? ref_sum / double(rep.elements) : 1.0;
  const size_t n = rep.tensors.size();
  std::vector<double> per(n);
  for (size_t i = 0; i < n; ++i) {
    const double ref = rep.tensors[i].reference;
    per[i] = options.objective == BudgetObjective::Total ? 1.0 / unit : ref > 0 ? 1.0 / ref : 1.0;
  }
  size_t current = 0;  // the tensor `gain` is asked about
  auto gain = [&](const BudgetCandidate& from, const BudgetCandidate& to) {
    return (from.error - to.error) * per[current] / (double(to.bytes - from.bytes) * 8.0);
  };
  // The next hull step from each choice, for the plan's "why" (both targets).
  auto set_next_gains = [&] {
    for (size_t i = 0; i < n; ++i) {
      BudgetTensor& b = rep.tensors[i];
      const BudgetCandidate& cur = b.choice();
      b.gain_next = kNaN;
      current = i;
      for (size_t h : hulls[i])
        if (b.candidates[h].bytes > cur.bytes && b.candidates[h].error < cur.error) {
          b.gain_next = gain(cur, b.candidates[h]);
          break;
        }
    }
  };
  for (size_t i = 0; i < n; ++i) rep.tensors[i].gain_taken = rep.tensors[i].gain_next = kNaN;
  rep.threshold = kNaN;

  {
    double least = 0;  // every tensor at its least-error candidate
    for (const BudgetTensor& b : rep.tensors) {
      double m = b.candidates[0].error;
      for (const BudgetCandidate& c : b.candidates) m = std::min(m, c.error);
      least += m;
    }
    rep.min_rel_error = ref_sum > 0 ? std::sqrt(least / ref_sum) : 0.0;
  }

  if (options.target_error) {
    // The least bits to an error: the greedy of --target-bpw along the hulls
    // (largest error cut per bit first, ties by name) until the estimated
    // total error is within the target, then a trim: repeatedly the single
    // change to a cheaper candidate that keeps the total within the target
    // and saves the most bits (ties: the smaller error added, then tensor
    // name, then candidate order), until none does.
    const double target = *options.target_error;
    const double limit = target * target * ref_sum;
    if (target < rep.min_rel_error * (1 - 1e-9))
      throw Error(ErrorCode::InvalidArgument, ckpt.path(), "",
                  "--target-error " + fmt("%g", target) +
                      " is below the least reachable estimated error " +
                      fmt("%.5f", rep.min_rel_error) + " of the " +
                      count_of(n, "quantized tensor") + " (every one at its least-error scheme)");
    double err = 0;
    for (const BudgetTensor& b : rep.tensors) err += b.choice().error;
    while (err > limit) {
      size_t best = n;
      double best_gain = 0;
      for (size_t i = 0; i < n; ++i) {
        if (at[i] + 1 >= hulls[i].size()) continue;
        const BudgetTensor& b = rep.tensors[i];
        current = i;
        const double g = gain(b.candidates[hulls[i][at[i]]], b.candidates[hulls[i][at[i] + 1]]);
        if (best == n || g > best_gain ||
            (g == best_gain && rep.tensors[i].name < rep.tensors[best].name)) {
          best = i;
          best_gain = g;
        }
      }
      if (best == n) break;  // every hull at its end: the least error, within the target
      BudgetTensor& b = rep.tensors[best];
      err += b.candidates[hulls[best][at[best] + 1]].error - b.choice().error;
      ++at[best];
      b.chosen = hulls[best][at[best]];
      b.gain_taken = best_gain;
      rep.threshold = best_gain;
    }
    for (;;) {
      size_t bt = n, bk = 0;
      uint64_t saved = 0;
      double added = 0;
      for (size_t i = 0; i < n; ++i) {
        const BudgetTensor& b = rep.tensors[i];
        for (size_t k = 0; k < b.candidates.size(); ++k) {
          const BudgetCandidate& c = b.candidates[k];
          if (c.bytes >= b.choice().bytes) continue;
          const double d = c.error - b.choice().error;
          if (err + d > limit) continue;
          const uint64_t s = b.choice().bytes - c.bytes;
          if (bt == n || s > saved || (s == saved && d < added)) {
            bt = i, bk = k, saved = s, added = d;
          }
        }
      }
      if (bt == n) break;
      BudgetTensor& b = rep.tensors[bt];
      err += added;
      b.chosen = bk;
      b.gain_taken = kNaN;
      b.trimmed = true;
    }
    set_next_gains();
  } else if (!options.target_bpw) {
    // --axis auto alone: per tensor the candidate of least error (ladder
    // order breaks ties).
    for (size_t i = 0; i < n; ++i) {
      BudgetTensor& b = rep.tensors[i];
      size_t best = 0;
      for (size_t k = 1; k < b.candidates.size(); ++k)
        if (b.candidates[k].error < b.candidates[best].error) best = k;
      b.chosen = best;
    }
  } else {
    const double target = *options.target_bpw;
    const double eps = 1e-9;
    if (target < rep.min_bpw * (1 - eps) || target > rep.max_bpw * (1 + eps))
      throw Error(ErrorCode::InvalidArgument, ckpt.path(), "",
                  "--target-bpw " + fmt("%g", target) + " is outside the reachable range " +
                      fmt("%.4f", rep.min_bpw) + " .. " + fmt("%.4f", rep.max_bpw) +
                      " bits per weight of the " + count_of(n, "quantized tensor"));
    const uint64_t budget =
        std::max<uint64_t>(min_bytes * 8, uint64_t(std::floor(target * double(rep.elements))));
    uint64_t used = min_bytes * 8;
    // Greedy along the hulls: the step of largest gain per bit first (ties:
    // tensor name, which is the checkpoint's order of distinct names); a
    // step that does not fit ends that tensor's walk.
    auto better = [&](size_t a, double ga, size_t b, double gb) {
      if (ga != gb) return ga > gb;
      return rep.tensors[a].name < rep.tensors[b].name;
    };
    std::vector<bool> stopped(n, false);
    bool first_refusal = false;
    for (;;) {
      size_t best = n;
      double best_gain = 0;
      for (size_t i = 0; i < n; ++i) {
        if (stopped[i] || at[i] + 1 >= hulls[i].size()) continue;
        const BudgetTensor& b = rep.tensors[i];
        current = i;
        const double g = gain(b.candidates[hulls[i][at[i]]], b.candidates[hulls[i][at[i] + 1]]);
        if (best == n || better(i, g, best, best_gain)) {
          best = i;
          best_gain = g;
        }
      }
      if (best == n) break;
      BudgetTensor& b = rep.tensors[best];
      const BudgetCandidate& from = b.candidates[hulls[best][at[best]]];
      const BudgetCandidate& to = b.candidates[hulls[best][at[best] + 1]];
      const uint64_t step = (to.bytes - from.bytes) * 8;
      if (used + step <= budget) {
        used += step;
        ++at[best];
        b.chosen = hulls[best][at[best]];
        b.gain_taken = best_gain;
        if (!first_refusal) rep.threshold = best_gain;
      } else {
        stopped[best] = true;
        b.gain_next = best_gain;
        first_refusal = true;
      }
    }
    // Fill: what is left of the budget goes to the single change of best
    // gain per bit that fits, hull vertex or not, until none fits.
    for (;;) {
      size_t bt = n, bk = 0;
      double bg = 0;
      for (size_t i = 0; i < n; ++i) {
        const BudgetTensor& b = rep.tensors[i];
        const BudgetCandidate& cur = b.choice();
        current = i;
        for (size_t k = 0; k < b.candidates.size(); ++k) {
          const BudgetCandidate& c = b.candidates[k];
          if (c.bytes <= cur.bytes || !(c.error < cur.error)) continue;
          if (used + (c.bytes - cur.bytes) * 8 > budget) continue;
          const double g = gain(cur, c);
          if (bt == n || better(i, g, bt, bg)) {
            bt = i;
            bk = k;
            bg = g;
          }
        }
      }
      if (bt == n) break;
      BudgetTensor& b = rep.tensors[bt];
      used += (b.candidates[bk].bytes - b.choice().bytes) * 8;
      b.chosen = bk;
      b.gain_taken = bg;
    }
    // Exchange: the greedy sees only hull steps, and a choice off the hulls
    // (the uniform default itself, often) can be better. Repeatedly take
    // the single change, or pair of changes (one tensor up, one down), that
    // fits and lowers the total cost most; ties by tensor names, then
    // candidate order. Quadratic in the candidates, so only up to
    // kExchangeCandidates of them.
    size_t total_candidates = 0;
    for (const BudgetTensor& b : rep.tensors) total_candidates += b.candidates.size();
    if (total_candidates <= kExchangeCandidates) {
      auto cost = [&](size_t i, size_t k) { return rep.tensors[i].candidates[k].error * per[i]; };
      double cost_sum = 0;
      for (size_t i = 0; i < n; ++i) cost_sum += cost(i, rep.tensors[i].chosen);
      for (size_t round = 0; round < 4 * n + 16; ++round) {
        double best = -1e-12 * cost_sum;  // strictly better by more than rounding
        size_t bi = n, bk = 0, bj = n, bl = 0;
        for (size_t i = 0; i < n; ++i) {
          const BudgetTensor& a = rep.tensors[i];
          for (size_t k = 0; k < a.candidates.size(); ++k) {
            if (k == a.chosen) continue;
            const double di = cost(i, k) - cost(i, a.chosen);
            if (!(di < 0)) continue;  // the tensor that goes up must gain
            const int64_t bits_i = (int64_t(a.candidates[k].bytes) - int64_t(a.choice().bytes)) * 8;
            if (int64_t(used) + bits_i <= int64_t(budget)) {
              if (di < best) {
                best = di;
                bi = i, bk = k, bj = n;
              }
              continue;
            }
            const int64_t need = int64_t(used) + bits_i - int64_t(budget);
            for (size_t j = 0; j < n; ++j) {
              if (j == i) continue;
              const BudgetTensor& c = rep.tensors[j];
              for (size_t l = 0; l < c.candidates.size(); ++l) {
                const int64_t freed =
                    (int64_t(c.choice().bytes) - int64_t(c.candidates[l].bytes)) * 8;
                if (freed < need) continue;
                const double d = di + (cost(j, l) - cost(j, c.chosen));
                if (d < best) {
                  best = d;
                  bi = i, bk = k, bj = j, bl = l;
                }
              }
            }
          }
        }
        if (bi == n) break;
        auto move = [&](size_t i, size_t k) {
          BudgetTensor& b = rep.tensors[i];
          used = uint64_t(int64_t(used) +
                          (int64_t(b.candidates[k].bytes) - int64_t(b.choice().bytes)) * 8);
          current = i;
          b.gain_taken =
              b.candidates[k].bytes > b.choice().bytes ? gain(b.choice(), b.candidates[k]) : kNaN;
          b.chosen = k;
        };
        move(bi, bk);
        if (bj != n) move(bj, bl);
        cost_sum += best;
      }
    }
    set_next_gains();
  }

  // 3. The recipe's tensors, the totals and the reasons.
  double err_sum = 0;
  for (BudgetTensor& b : rep.tensors) {
    const BudgetCandidate& c = b.choice();
    rep.bytes += c.bytes;
    err_sum += c.error;
    const double rel = b.reference > 0 ? std::sqrt(c.error / b.reference) : 0.0;
    std::string why = options.origin + ": " + fmt("%.3f", c.bpw(b.elements)) +
                      " bpw, est. rel. error " + fmt("%.4f", rel);
    if (!budgeted) {
      // The other axis's error, for comparison.
      for (const BudgetCandidate& o : b.candidates)
        if (o.axis != c.axis && o.bits == c.bits && o.group_size == c.group_size)
          why += " (axis " + std::to_string(o.axis) + ": " +
                 fmt("%.4f", b.reference > 0 ? std::sqrt(o.error / b.reference) : 0.0) + ")";
    } else {
      why += b.trimmed ? "; trimmed within the target"
             : std::isfinite(b.gain_taken)
                 ? "; last step gained " + fmt("%.3g", b.gain_taken) + "/bit"
                 : "; cheapest";
      why += std::isfinite(b.gain_next) ? ", next " + fmt("%.3g", b.gain_next) + "/bit"
                                        : ", least error";
    }
    if (b.weighted) why += " (weighted)";
    b.why = why;
    recipe.tensors[b.name] = TensorChoice{c.bits, c.group_size, c.axis, why};
  }
  rep.bpw = double(rep.bytes) * 8.0 / double(rep.elements);
  rep.estimated_rel_error = ref_sum > 0 ? std::sqrt(err_sum / ref_sum) : 0.0;
  if (options.target_bpw && rep.bpw < *options.target_bpw * 0.99)
    rep.notes.push_back("--target-bpw " + fmt("%g", *options.target_bpw) + ": reached " +
                        fmt("%.4f", rep.bpw) +
                        " bpw, more than 1 % below (the tensors' steps are too coarse)");
  if (report) *report = std::move(rep);
  return recipe;
}

}  // namespace qpack
