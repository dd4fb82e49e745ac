// The reader of compressed-tensors pack-quantized and GPTQ model folders
// (qpack/format/hf_quantized.hpp; the layouts: docs/hf-reading.md).
#include "qpack/format/hf_quantized.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/json.hpp"
#include "qpack/format/text.hpp"
#include "qpack/spec/codes.hpp"

namespace qpack {

using nlohmann::json;

const char* hf_quant_format_name(HfQuantFormat f) {
  return f == HfQuantFormat::Gptq ? "gptq" : "compressed-tensors";
}

namespace {

std::string folder_of(const std::string& path) {
  if (is_directory(path)) return path;
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir == "." ? name : (dir.back() == '/' ? dir + name : dir + "/" + name);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// int32 / int64 element i of a tensor, little-endian.
int64_t load_int(const CheckpointTensor& t, uint64_t i) {
  const uint8_t* p = t.data();
  if (t.info->dtype == DType::I64) {
    int64_t v;
    std::memcpy(&v, p + 8 * i, 8);
    return v;
  }
  int32_t v;
  std::memcpy(&v, p + 4 * i, 4);
  return v;
}
uint32_t load_word(const uint8_t* p, uint64_t i) {
  uint32_t v;
  std::memcpy(&v, p + 4 * i, 4);
  return v;
}

// -------------------------------------------------------------- the config

// Reads settings of one JSON object, each failure an Error naming the file
// and the key's path ("quantization_config.config_groups.group_0.weights.num_bits").
class ConfigReader {
 public:
  ConfigReader(std::string file, std::string where)
      : file_(std::move(file)), where_(std::move(where)) {}
  [[noreturn]] void fail(ErrorCode c, const std::string& key, const std::string& why) const {
    throw Error(c, file_, "", (key.empty() ? where_ : where_ + "." + key) + ": " + why);
  }
  const json* find(const json& o, const std::string& key) const {
    const auto it = o.find(key);
    return it == o.end() ? nullptr : &*it;
  }
  int64_t integer(const json& o, const std::string& key, std::optional<int64_t> dflt = {}) const {
    const json* v = find(o, key);
    if (!v || v->is_null()) {
      if (dflt) return *dflt;
      fail(ErrorCode::HfBadConfig, key, "missing (an integer is required)");
    }
    if (!v->is_number_integer())
      fail(ErrorCode::HfBadConfig, key, "is " + v->dump() + ", not an integer");
    return v->get<int64_t>();
  }
  bool boolean(const json& o, const std::string& key, std::optional<bool> dflt = {}) const {
    const json* v = find(o, key);
    if (!v || v->is_null()) {
      if (dflt) return *dflt;
      fail(ErrorCode::HfBadConfig, key, "missing (true or false is required)");
    }
    if (!v->is_boolean())
      fail(ErrorCode::HfBadConfig, key, "is " + v->dump() + ", not true or false");
    return v->get<bool>();
  }
  std::string string(const json& o, const std::string& key,
                     std::optional<std::string> dflt = {}) const {
    const json* v = find(o, key);
    if (!v || v->is_null()) {
      if (dflt) return *dflt;
      fail(ErrorCode::HfBadConfig, key, "missing (a string is required)");
    }
    if (!v->is_string()) fail(ErrorCode::HfBadConfig, key, "is " + v->dump() + ", not a string");
    return v->get<std::string>();
  }
  const std::string& file() const { return file_; }
  const std::string& where() const { return where_; }

 private:
  std::string file_, where_;
};

// One compressed-tensors config group (weights only: W{2,4,8}A16).
struct CtGroup {
  std::string name;
  std::vector<std::string> targets;
  int bits = 4;
  bool symmetric = true;
  int64_t group_size = 0;  // 0: strategy channel
};

// compressed-tensors' target and ignore entries: a class name ("Linear",
// which every quantized Linear is), a module name, or "re:REGEX" matched
// at the start of the module name (Python's re.match).
bool target_matches(const std::string& target, const std::string& module) {
  if (target == "Linear") return true;
  if (target.rfind("re:", 0) == 0) {
    try {
      const std::regex re(target.substr(3), std::regex::ECMAScript);
      return std::regex_search(module, re, std::regex_constants::match_continuous);
    } catch (const std::regex_error&) {
      return false;
    }
  }
  return target == module;
}

std::vector<std::string> string_list(const ConfigReader& r, const json& o, const std::string& key) {
  std::vector<std::string> out;
  const json* v = r.find(o, key);
  if (!v || v->is_null()) return out;
  if (!v->is_array()) r.fail(ErrorCode::HfBadConfig, key, "is not a list of strings");
  for (const json& e : *v) {
    if (!e.is_string()) r.fail(ErrorCode::HfBadConfig, key, "holds " + e.dump() + ", not a string");
    out.push_back(e.get<std::string>());
  }
  return out;
}

// A key that must be absent or null (activation quantization, sparsity...).
void require_null(const ConfigReader& r, const json& o, const std::string& key,
                  const std::string& why) {
  const json* v = r.find(o, key);
  if (v && !v->is_null() && !(v->is_object() && v->empty()))
    r.fail(ErrorCode::HfUnsupported, key, "is " + v->dump() + ": " + why);
}

std::vector<CtGroup> parse_ct_config(const json& qc, const std::string& file,
                                     std::vector<std::string>* ignore) {
  const ConfigReader r(file, "quantization_config");
  const std::string fmt = r.string(qc, "format");
  if (fmt != "pack-quantized")
    r.fail(ErrorCode::HfUnsupported, "format",
           "'" + fmt + "' is not read by qpack (it reads \"pack-quantized\" only)");
  const std::string status = r.string(qc, "quantization_status", std::string("compressed"));
  if (status != "compressed")
    r.fail(ErrorCode::HfUnsupported, "quantization_status",
           "'" + status + "': the weights are not stored compressed (\"compressed\" is required)");
  require_null(r, qc, "sparsity_config", "sparse checkpoints are not read");
  require_null(r, qc, "transform_config", "transformed (rotated) checkpoints are not read");
  require_null(r, qc, "kv_cache_scheme", "KV-cache quantization is not read");
  *ignore = string_list(r, qc, "ignore");
  const json* groups = r.find(qc, "config_groups");
  if (!groups || !groups->is_object() || groups->empty())
    r.fail(ErrorCode::HfBadConfig, "config_groups",
           "missing or empty (an object of groups is required)");
  std::vector<CtGroup> out;
  for (const auto& [gname, g] : groups->items()) {
    const ConfigReader gr(file, "quantization_config.config_groups." + gname);
    if (!g.is_object()) gr.fail(ErrorCode::HfBadConfig, "", "is not an object");
    CtGroup cg;
    cg.name = gname;
    cg.targets = string_list(gr, g, "targets");
    if (cg.targets.empty()) gr.fail(ErrorCode::HfBadConfig, "targets", "missing or empty");
    if (g.contains("format") && !g.at("format").is_null() && g.at("format") != "pack-quantized")
      gr.fail(ErrorCode::HfUnsupported, "format",
              g.at("format").dump() + " is not read by qpack (\"pack-quantized\" only)");
    require_null(gr, g, "input_activations",
                 "activation quantization is not read (weight-only W2/W4/W8A16 schemes only)");
    require_null(gr, g, "output_activations", "activation quantization is not read");
    const json* w = gr.find(g, "weights");
    if (!w || !w->is_object())
      gr.fail(ErrorCode::HfBadConfig, "weights", "missing (an object is required)");
    const ConfigReader wr(file, gr.where() + ".weights");
    const std::string type = wr.string(*w, "type", std::string("int"));
    if (type != "int")
      wr.fail(ErrorCode::HfUnsupported, "type", "'" + type + "': only integer weights are read");
    const int64_t bits = wr.integer(*w, "num_bits");
    if (bits == 3 || bits == 5 || bits == 6 || bits == 7)
      wr.fail(ErrorCode::HfUnsupported, "num_bits",
              std::to_string(bits) +
                  ": the packing of 3/5/6/7-bit codes changed between compressed-tensors versions "
                  "(qpack reads 2, 4 and 8 bits)");
    if (bits != 2 && bits != 4 && bits != 8)
      wr.fail(ErrorCode::HfUnsupported, "num_bits",
              std::to_string(bits) + " is not a supported width (2, 4 or 8)");
    cg.bits = int(bits);
    cg.symmetric = wr.boolean(*w, "symmetric", true);
    if (wr.boolean(*w, "dynamic", false))
      wr.fail(ErrorCode::HfUnsupported, "dynamic", "true: dynamic quantization stores no weights");
    const json* ao = wr.find(*w, "actorder");
    if (ao && !ao->is_null() && !(ao->is_boolean() && !ao->get<bool>()))
      wr.fail(ErrorCode::HfUnsupported, "actorder",
              ao->dump() + ": activation-ordered groups (weight_g_idx) are not read");
    const std::string strategy = wr.string(*w, "strategy");
    if (strategy == "group") {
      const int64_t gs = wr.integer(*w, "group_size");
      if (gs <= 0)
        wr.fail(ErrorCode::HfBadConfig, "group_size", std::to_string(gs) + " is not positive");
      cg.group_size = gs;
    } else if (strategy == "channel") {
      const json* gs = wr.find(*w, "group_size");
      if (gs && !gs->is_null() && !(gs->is_number_integer() && gs->get<int64_t>() <= 0))
        wr.fail(ErrorCode::HfBadConfig, "group_size",
                gs->dump() + " given with strategy \"channel\" (one group per row)");
      cg.group_size = 0;
    } else {
      wr.fail(ErrorCode::HfUnsupported, "strategy",
              "'" + strategy + "' is not read (\"group\" or \"channel\")");
    }
    out.push_back(std::move(cg));
  }
  return out;
}

struct GptqConfig {
  int bits = 4;
  int64_t group_size = -1;
  bool symmetric = true;
  bool v2 = false;
  std::string format;
};

GptqConfig parse_gptq_config(const json& qc, const std::string& file, const std::string& where) {
  const ConfigReader r(file, where);
  GptqConfig g;
  const int64_t bits = r.integer(qc, "bits");
  if (bits == 3)
    r.fail(ErrorCode::HfUnsupported, "bits",
           "3: 3-bit GPTQ packs codes across int32 words (not read)");
  if (bits != 2 && bits != 4 && bits != 8)
    r.fail(ErrorCode::HfUnsupported, "bits",
           std::to_string(bits) + " is not a supported width (2, 4 or 8)");
  g.bits = int(bits);
  g.group_size = r.integer(qc, "group_size", int64_t(-1));
  if (g.group_size == 0 || g.group_size < -1)
    r.fail(ErrorCode::HfBadConfig, "group_size",
           std::to_string(g.group_size) + " (a positive size, or -1 for one group per column)");
  if (r.boolean(qc, "desc_act", false))
    r.fail(ErrorCode::HfUnsupported, "desc_act",
           "true: activation-ordered GPTQ (a permuted g_idx) is not read");
  g.symmetric = r.boolean(qc, "sym", true);
  std::string fmt = r.string(qc, "checkpoint_format", std::string());
  if (fmt.empty()) fmt = r.string(qc, "format", std::string("gptq"));
  if (fmt != "gptq" && fmt != "gptq_v2")
    r.fail(ErrorCode::HfUnsupported, "checkpoint_format",
           "'" + fmt + "' is not read (\"gptq\", the v1 layout, or \"gptq_v2\")");
  g.v2 = fmt == "gptq_v2";
  g.format = fmt;
  const json* dyn = r.find(qc, "dynamic");
  if (dyn && !dyn->is_null() && !(dyn->is_object() && dyn->empty()))
    r.fail(ErrorCode::HfUnsupported, "dynamic", "per-module overrides are not read");
  return g;
}

// ------------------------------------------------------------- the tensors

class TensorChecker {
 public:
  TensorChecker(const CheckpointTensor* t) : t_(t) {}
  [[noreturn]] void fail(ErrorCode c, const std::string& why) const {
    throw Error(c, t_->file->path(), t_->name(), why);
  }
  void dtype(std::initializer_list<DType> allowed, const std::string& role) const {
    for (DType d : allowed)
      if (t_->info->dtype == d) return;
    std::string list;
    for (DType d : allowed) list += std::string(list.empty() ? "" : " or ") + dtype_name(d);
    fail(ErrorCode::HfBadTensor,
         std::string("dtype is ") + dtype_name(t_->info->dtype) + "; " + role + " must be " + list);
  }
  void shape(const std::vector<int64_t>& want, const std::string& why) const {
    if (t_->info->shape != want)
      fail(ErrorCode::HfBadTensor, "shape is " + shape_to_string(t_->info->shape) + ", expected " +
                                       shape_to_string(want) + " (" + why + ")");
  }
  void rank(size_t r) const {
    if (t_->info->shape.size() != r)
      fail(ErrorCode::HfBadTensor, "shape is " + shape_to_string(t_->info->shape) + ", expected " +
                                       std::to_string(r) + " dimensions");
  }

 private:
  const CheckpointTensor* t_;
};

void finish_tensor(HfQuantTensor& q, const std::string& file) {
  std::string why;
  if (GroupLayout::resolve(q.shape, q.scheme, &q.layout, &why) != LayoutFault::None)
    throw Error(ErrorCode::HfBadTensor, file, q.name, why);
  q.stored_bytes = 0;
  for (const CheckpointTensor* t : q.stored) q.stored_bytes += t->info->nbytes();
}

}  // namespace

// Builds the model's tensor lists (a friend of HfQuantizedModel).
struct HfReaderAccess {
  static void read_ct(HfQuantizedModel& m, const std::vector<CtGroup>& groups,
                      const std::vector<std::string>& ignore);
  static void read_gptq(HfQuantizedModel& m, const GptqConfig& g);
  static void list_entries(HfQuantizedModel& m, const std::set<const CheckpointTensor*>& stored);
};

void HfReaderAccess::list_entries(HfQuantizedModel& m,
                                  const std::set<const CheckpointTensor*>& stored) {
  std::map<const CheckpointTensor*, size_t> by_codes;
  for (size_t i = 0; i < m.quantized_.size(); ++i) by_codes[m.quantized_[i].codes] = i;
  std::set<std::string> quantized_names;
  for (const auto& q : m.quantized_) quantized_names.insert(q.name);
  for (const CheckpointTensor& t : m.ck_->tensors()) {
    const auto it = by_codes.find(&t);
    if (it != by_codes.end()) {
      m.entries_.push_back({true, it->second});
    } else if (!stored.count(&t)) {
      if (quantized_names.count(t.name()))
        throw Error(ErrorCode::HfBadTensor, t.file->path(), t.name(),
                    "is stored both as a plain tensor and quantized");
      m.entries_.push_back({false, m.kept_.size()});
      m.kept_.push_back(&t);
    }
  }
  if (m.quantized_.empty())
    throw Error(ErrorCode::HfBadTensor, m.config_file_, "",
                std::string("the folder's config says ") + m.format_name() +
                    " but no tensor is stored quantized (no " +
                    (m.format_ == HfQuantFormat::Gptq ? "*.qweight" : "*.weight_packed") +
                    " tensor)");
}

void HfReaderAccess::read_ct(HfQuantizedModel& m, const std::vector<CtGroup>& groups,
                             const std::vector<std::string>& ignore) {
  const Checkpoint& ck = *m.ck_;
  static const char* kCompanions[] = {".weight_packed", ".weight_scale", ".weight_zero_point",
                                      ".weight_shape", ".weight_g_idx"};
  // Every module that has a companion tensor, and check for orphans.
  std::set<std::string> modules;
  for (const CheckpointTensor& t : ck.tensors())
    if (ends_with(t.name(), ".weight_packed"))
      modules.insert(t.name().substr(0, t.name().size() - 14));
  for (const CheckpointTensor& t : ck.tensors())
    for (const char* c : kCompanions)
      if (ends_with(t.name(), c)) {
        const std::string mod = t.name().substr(0, t.name().size() - std::strlen(c));
        if (!modules.count(mod))
          throw Error(
              ErrorCode::HfBadTensor, t.file->path(), t.name(),
              "is a compressed-tensors companion, but " + mod + ".weight_packed is missing");
      }
  std::set<const CheckpointTensor*> stored;
  for (const CheckpointTensor& t : ck.tensors()) {
    if (!ends_with(t.name(), ".weight_packed")) continue;
    const std::string mod = t.name().substr(0, t.name().size() - 14);
    // Any other "mod.weight_*" is a companion qpack does not know.
    for (const CheckpointTensor& o : ck.tensors()) {
      const std::string& n = o.name();
      if (n.size() > mod.size() + 8 && n.compare(0, mod.size() + 8, mod + ".weight_") == 0) {
        bool known = false;
        for (const char* c : kCompanions) known = known || n == mod + c;
        if (!known)
          throw Error(ErrorCode::HfBadTensor, o.file->path(), n,
                      "is not a pack-quantized companion (weight_packed, weight_scale, "
                      "weight_zero_point, weight_shape)");
      }
    }
    for (const std::string& ig : ignore)
      if (target_matches(ig, mod) && ig != "Linear")
        throw Error(ErrorCode::HfBadTensor, t.file->path(), t.name(),
                    "is stored quantized, but quantization_config.ignore lists '" + ig + "'");
    const CtGroup* group = nullptr;
    for (const CtGroup& g : groups) {
      for (const std::string& target : g.targets)
        if (target_matches(target, mod)) group = &g;
      if (group) break;
    }
    if (!group)
      throw Error(ErrorCode::HfBadTensor, t.file->path(), t.name(),
                  "is stored quantized, but no config group's targets name module '" + mod + "'");
    const int b = group->bits;
    HfQuantTensor q;
    q.module = mod;
    q.name = mod + ".weight";
    q.codes = &t;
    const TensorChecker packed(&t);
    packed.dtype({DType::I32}, "weight_packed");
    packed.rank(2);
    const CheckpointTensor* shape_t = ck.find(mod + ".weight_shape");
    if (!shape_t)
      throw Error(ErrorCode::HfBadTensor, t.file->path(), mod + ".weight_shape",
                  "missing (every pack-quantized Linear stores its [out, in])");
    const TensorChecker st(shape_t);
    st.dtype({DType::I64, DType::I32}, "weight_shape");
    st.shape({2}, "[out, in]");
    const int64_t out = load_int(*shape_t, 0), in = load_int(*shape_t, 1);
    if (out <= 0 || in <= 0)
      st.fail(ErrorCode::HfBadValue, "holds [" + std::to_string(out) + ", " + std::to_string(in) +
                                         "]; both must be positive");
    packed.shape({out, ceil_div(in * b, 32)},
                 "[out, ceil(in * " + std::to_string(b) + " / 32)] for weight_shape [" +
                     std::to_string(out) + ", " + std::to_string(in) + "]");
    const int64_t G = group->group_size > 0 ? group->group_size : in;
    if (in % G != 0)
      throw Error(ErrorCode::HfBadTensor, t.file->path(), t.name(),
                  "in = " + std::to_string(in) + " is not a multiple of group size " +
                      std::to_string(G) + " (config group " + group->name + ")");
    const int64_t P = in / G;
    const CheckpointTensor* scale = ck.find(mod + ".weight_scale");
    if (!scale)
      throw Error(ErrorCode::HfBadTensor, t.file->path(), mod + ".weight_scale", "missing");
    const TensorChecker sc(scale);
    sc.dtype({DType::F16, DType::BF16, DType::F32}, "weight_scale");
    sc.shape({out, P}, "[out, in / group size]");
    const CheckpointTensor* zp = ck.find(mod + ".weight_zero_point");
    if (group->symmetric && zp)
      TensorChecker(zp).fail(ErrorCode::HfBadTensor, "present, but config group " + group->name +
                                                         " is symmetric (no zero-point is stored)");
    if (!group->symmetric) {
      if (!zp)
        throw Error(ErrorCode::HfBadTensor, t.file->path(), mod + ".weight_zero_point",
                    "missing (config group " + group->name + " is asymmetric)");
      const TensorChecker z(zp);
      z.dtype({DType::I32}, "weight_zero_point");
      z.shape({ceil_div(out * b, 32), P},
              "[ceil(out * " + std::to_string(b) + " / 32), in / group size]: packed along out");
      // The last packed row's bits past row out - 1 are padding, zero as
      // compressed-tensors writes them: anything else is not this layout.
      if ((out * b) % 32 != 0) {
        const int64_t last = ceil_div(out * b, 32) - 1;
        const uint32_t used = (1u << ((out * b) % 32)) - 1u;
        for (int64_t p = 0; p < P; ++p)
          if (load_word(zp->data(), uint64_t(last * P + p)) & ~used)
            z.fail(ErrorCode::HfBadValue, "padding bits after row " + std::to_string(out - 1) +
                                              " of column " + std::to_string(p) + " are not zero");
      }
    }
    if (const CheckpointTensor* gi = ck.find(mod + ".weight_g_idx"))
      TensorChecker(gi).fail(ErrorCode::HfUnsupported,
                             "activation-ordered groups (weight_g_idx) are not read");
    if (ck.find(mod + ".weight"))
      throw Error(ErrorCode::HfBadTensor, t.file->path(), mod + ".weight",
                  "stored beside " + t.name() + " (a Linear is either plain or quantized)");
    q.scales = scale;
    q.zeros = group->symmetric ? nullptr : zp;
    q.shape = {out, in};
    q.scheme.bits = b;
    q.scheme.group_size = G;
    q.scheme.axis = 1;
    q.scheme.symmetric = group->symmetric;
    q.scheme.scale_dtype = scale->info->dtype;
    q.scheme.zero_point = ZeroPoint::Integer;
    q.stored = {&t, scale};
    if (q.zeros) q.stored.push_back(zp);
    q.stored.push_back(shape_t);
    for (const CheckpointTensor* s : q.stored) stored.insert(s);
    finish_tensor(q, t.file->path());
    m.quantized_.push_back(std::move(q));
  }
  list_entries(m, stored);
}

void HfReaderAccess::read_gptq(HfQuantizedModel& m, const GptqConfig& g) {
  const Checkpoint& ck = *m.ck_;
  const int b = g.bits;
  const int per = 32 / b;
  std::set<std::string> modules;
  for (const CheckpointTensor& t : ck.tensors())
    if (ends_with(t.name(), ".qweight")) modules.insert(t.name().substr(0, t.name().size() - 8));
  for (const CheckpointTensor& t : ck.tensors())
    for (const char* c : {".qzeros", ".g_idx"})
      if (ends_with(t.name(), c)) {
        const std::string mod = t.name().substr(0, t.name().size() - std::strlen(c));
        if (!modules.count(mod))
          throw Error(ErrorCode::HfBadTensor, t.file->path(), t.name(),
                      "is a GPTQ companion, but " + mod + ".qweight is missing");
      }
  std::set<const CheckpointTensor*> stored;
  for (const CheckpointTensor& t : ck.tensors()) {
    if (!ends_with(t.name(), ".qweight")) continue;
    const std::string mod = t.name().substr(0, t.name().size() - 8);
    const std::string file = t.file->path();
    const TensorChecker qw(&t);
    qw.dtype({DType::I32}, "qweight");
    qw.rank(2);
    const int64_t K = t.info->shape[0] * per, N = t.info->shape[1];
    if (K <= 0 || N <= 0) qw.fail(ErrorCode::HfBadTensor, "is empty");
    const int64_t G = g.group_size > 0 ? g.group_size : K;
    if (K % G != 0)
      qw.fail(ErrorCode::HfBadTensor, "in = " + std::to_string(K) +
                                          " is not a multiple of group_size " + std::to_string(G));
    if ((N * b) % 32 != 0)
      qw.fail(ErrorCode::HfBadTensor, "out = " + std::to_string(N) + " is not a multiple of " +
                                          std::to_string(per) +
                                          " (qzeros pack out along int32 words)");
    const int64_t P = K / G;
    const CheckpointTensor* sc = ck.find(mod + ".scales");
    if (!sc) throw Error(ErrorCode::HfBadTensor, file, mod + ".scales", "missing");
    const TensorChecker sct(sc);
    sct.dtype({DType::F16, DType::BF16, DType::F32}, "scales");
    sct.shape({P, N}, "[in / group_size, out]");
    const CheckpointTensor* qz = ck.find(mod + ".qzeros");
    if (!qz) throw Error(ErrorCode::HfBadTensor, file, mod + ".qzeros", "missing");
    const TensorChecker qzt(qz);
    qzt.dtype({DType::I32}, "qzeros");
    qzt.shape({P, N * b / 32}, "[in / group_size, out * " + std::to_string(b) + " / 32]");
    const CheckpointTensor* gi = ck.find(mod + ".g_idx");
    if (gi) {
      const TensorChecker git(gi);
      git.dtype({DType::I32, DType::I64}, "g_idx");
      git.shape({K}, "[in]");
      for (int64_t k = 0; k < K; ++k) {
        const int64_t v = load_int(*gi, uint64_t(k));
        if (v != k / G)
          git.fail(ErrorCode::HfBadValue, "g_idx[" + std::to_string(k) +
                                              "] = " + std::to_string(v) +
                                              ", not k / group_size = " + std::to_string(k / G) +
                                              " (activation order is not read)");
      }
    }
    if (ck.find(mod + ".weight"))
      throw Error(ErrorCode::HfBadTensor, file, mod + ".weight",
                  "stored beside " + t.name() + " (a Linear is either plain or quantized)");
    // The zero-points: in the code range, and 2^(b-1) everywhere when symmetric.
    const int offset = g.v2 ? 0 : 1;
    const uint32_t mask = (1u << b) - 1u;
    const int64_t zw = N * b / 32;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t n = 0; n < N; ++n) {
        const uint32_t w = load_word(qz->data(), uint64_t(p * zw + n * b / 32));
        const int64_t stored_v = int64_t((w >> ((n * b) % 32)) & mask);
        const int64_t z = stored_v + offset;
        const std::string at = "qzeros[" + std::to_string(p) + "] column " + std::to_string(n);
        if (z > int64_t(mask))
          qzt.fail(ErrorCode::HfBadValue,
                   at + " stores z - 1 = " + std::to_string(stored_v) + ": z = " +
                       std::to_string(z) + " is outside the code range 0.." + std::to_string(mask) +
                       " (a v1 checkpoint cannot store z = 0: its z - 1 = -1 wraps; "
                       "use checkpoint_format gptq_v2)");
        if (g.symmetric && z != (int64_t(1) << (b - 1)))
          qzt.fail(ErrorCode::HfBadValue,
                   at + " holds z = " + std::to_string(z) +
                       ", but sym is true (z = " + std::to_string(1 << (b - 1)) + " everywhere)");
      }
    HfQuantTensor q;
    q.module = mod;
    q.name = mod + ".weight";
    q.codes = &t;
    q.scales = sc;
    q.zeros = g.symmetric ? nullptr : qz;
    q.zero_offset = offset;
    q.shape = {N, K};
    q.scheme.bits = b;
    q.scheme.group_size = G;
    q.scheme.axis = 1;
    q.scheme.symmetric = g.symmetric;
    q.scheme.scale_dtype = sc->info->dtype;
    q.scheme.zero_point = ZeroPoint::Integer;
    q.stored = {&t, qz, sc};
    if (gi) q.stored.push_back(gi);
    for (const CheckpointTensor* s : q.stored) stored.insert(s);
    finish_tensor(q, file);
    m.quantized_.push_back(std::move(q));
  }
  list_entries(m, stored);
}

// ------------------------------------------------------------------ public

std::string HfQuantizedModel::quant_method_of(const std::string& path) {
  if (!file_exists(path) && !is_directory(path)) return {};
  const std::string dir = folder_of(path);
  const auto method_in = [](const json& o) {
    const auto it = o.find("quant_method");
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string("?");
  };
  const std::string cfg = join(dir, "config.json");
  if (file_exists(cfg) && !is_directory(cfg)) {
    try {
      const json j = read_json_file(cfg, "config.json", ErrorCode::BadJson);
      if (j.is_object() && j.contains("quantization_config"))
        return j.at("quantization_config").is_object() ? method_in(j.at("quantization_config"))
                                                       : std::string("?");
    } catch (const Error&) {
      // Checkpoint::open (or open()) names the malformed config.json.
    }
  }
  const std::string qc = join(dir, "quantize_config.json");
  if (file_exists(qc) && !is_directory(qc)) {
    try {
      const json j = read_json_file(qc, "quantize_config.json", ErrorCode::BadJson);
      if (j.is_object()) {
        const std::string m = method_in(j);
        return m == "?" ? std::string("gptq") : m;
      }
    } catch (const Error&) {
    }
    return "?";
  }
  return {};
}

std::unique_ptr<HfQuantizedModel> HfQuantizedModel::open(const std::string& path) {
  auto m = std::make_unique<HfQuantizedModel>();
  m->path_ = path;
  const std::string dir = folder_of(path);
  const std::string cfg_path = join(dir, "config.json");
  const std::string qc_path = join(dir, "quantize_config.json");
  json cfg, qcfile;
  if (file_exists(cfg_path)) cfg = read_json_file(cfg_path, "config.json", ErrorCode::HfBadConfig);
  if (file_exists(qc_path))
    qcfile = read_json_file(qc_path, "quantize_config.json", ErrorCode::HfBadConfig);
  if (!cfg.is_null() && !cfg.is_object())
    throw Error(ErrorCode::HfBadConfig, cfg_path, "", "config.json is not a JSON object");
  if (!qcfile.is_null() && !qcfile.is_object())
    throw Error(ErrorCode::HfBadConfig, qc_path, "", "quantize_config.json is not a JSON object");
  const json* qc = nullptr;
  if (cfg.is_object() && cfg.contains("quantization_config")) {
    if (!cfg.at("quantization_config").is_object())
      throw Error(ErrorCode::HfBadConfig, cfg_path, "", "quantization_config is not an object");
    qc = &cfg.at("quantization_config");
    m->config_file_ = cfg_path;
  } else if (qcfile.is_object()) {
    qc = &qcfile;
    m->config_file_ = qc_path;
  } else {
    throw Error(ErrorCode::HfBadConfig, cfg_path, "",
                "no quantization_config in config.json and no quantize_config.json: not a "
                "quantized model folder");
  }
  const std::string method =
      qc->contains("quant_method") && qc->at("quant_method").is_string()
          ? qc->at("quant_method").get<std::string>()
          : (m->config_file_ == qc_path ? std::string("gptq") : std::string());
  m->quant_config_ = *qc;
  m->ck_ = Checkpoint::open(path);
  if (method == "compressed-tensors") {
    m->format_ = HfQuantFormat::CompressedTensors;
    m->layout_name_ = "pack-quantized";
    std::vector<std::string> ignore;
    const std::vector<CtGroup> groups = parse_ct_config(*qc, m->config_file_, &ignore);
    HfReaderAccess::read_ct(*m, groups, ignore);
  } else if (method == "gptq") {
    m->format_ = HfQuantFormat::Gptq;
    const GptqConfig g = parse_gptq_config(
        *qc, m->config_file_,
        m->config_file_ == qc_path ? "quantize_config.json" : "quantization_config");
    // Both files present: they must say the same.
    if (m->config_file_ == cfg_path && qcfile.is_object()) {
      const GptqConfig o = parse_gptq_config(qcfile, qc_path, "quantize_config.json");
      if (o.bits != g.bits || o.group_size != g.group_size || o.symmetric != g.symmetric ||
          o.v2 != g.v2)
        throw Error(ErrorCode::HfBadConfig, qc_path, "",
                    "disagrees with config.json's quantization_config (bits, group_size, sym or "
                    "checkpoint_format)");
    }
    m->layout_name_ = g.format;
    HfReaderAccess::read_gptq(*m, g);
  } else if (method.empty()) {
    throw Error(ErrorCode::HfBadConfig, m->config_file_, "",
                "quantization_config.quant_method: missing (a string is required)");
  } else {
    throw Error(ErrorCode::HfUnsupported, m->config_file_, "",
                "quantization_config.quant_method: '" + method +
                    "' is not read by qpack (it reads \"compressed-tensors\" pack-quantized and "
                    "\"gptq\")");
  }
  return m;
}

void require_decodable(const HfQuantTensor& t, const std::string& file) {
  if (!t.scheme.symmetric && !kIntegerZeroPointDecoded)
    throw Error(ErrorCode::HfUnsupported, file, t.name,
                "asymmetric (integer zero-point) tensors are not decoded by this build yet: the "
                "Integer zero-point rule is not in its decode");
}

const HfQuantTensor* HfQuantizedModel::find_quantized(const std::string& name) const {
  for (const HfQuantTensor& q : quantized_)
    if (q.name == name) return &q;
  return nullptr;
}

void HfQuantizedModel::release(const HfQuantTensor& t) const {
  for (const CheckpointTensor* s : t.stored) s->file->release(*s->info);
}

void HfQuantizedModel::unpack_rows(const HfQuantTensor& t, int64_t row0, int64_t rows,
                                   uint8_t* codes, uint8_t* scales, uint8_t* zeros) const {
  const GroupLayout& L = t.layout;
  const int b = t.scheme.bits;
  const int64_t out = t.shape[0], in = t.shape[1];
  if (row0 < 0 || rows < 0 || row0 + rows > out)
    throw Error(ErrorCode::Internal, path_, t.name, "row range outside the tensor");
  const int64_t P = L.groups_per_axis, B = L.bytes_per_group, G = L.group_size;
  const uint64_t row_bytes = uint64_t(P * B);
  const DType sd = t.scheme.scale_dtype;
  const int sb = scale_bytes(sd);
  const uint32_t mask = (1u << b) - 1u;
  // Byte-aligned groups: qpack's row (P groups of B bytes) is the row's
  // little-endian bit stream itself.
  const bool aligned = (G * b) % 8 == 0;
  const uint8_t* cw = t.codes->data();
  std::memset(codes, 0, size_t(uint64_t(rows) * row_bytes));
  const auto put = [&](int64_t r, int64_t k, uint32_t code) {
    spec::put_code(codes + uint64_t(r) * row_bytes + uint64_t(k / G) * uint64_t(B), 1, k % G, b,
                   code);
  };
  const auto store_zero = [&](int64_t index, uint32_t z) {
    const float v = float(z);
    const uint16_t bits16 = sd == DType::F16 ? f32_to_f16_rne(v) : f32_to_bf16_rne(v);
    spec::store_param(zeros, index, sd, v, bits16);
  };
  if (format_ == HfQuantFormat::CompressedTensors) {
    const int64_t words = t.codes->info->shape[1];
    // Each row's last word's bits past element in - 1 are padding, zero as
    // compressed-tensors writes them.
    const uint32_t used = (in * b) % 32 ? (1u << ((in * b) % 32)) - 1u : ~0u;
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = cw + uint64_t(row0 + r) * uint64_t(words) * 4;
      if (load_word(src, uint64_t(words - 1)) & ~used)
        throw Error(ErrorCode::HfBadValue, t.codes->file->path(), t.codes->name(),
                    "row " + std::to_string(row0 + r) + ": padding bits after element " +
                        std::to_string(in - 1) + " are not zero");
      if (aligned) {
        std::memcpy(codes + uint64_t(r) * row_bytes, src, size_t(row_bytes));
      } else {
        for (int64_t k = 0; k < in; ++k) put(r, k, spec::get_code(src, 1, k, b));
      }
    }
    std::memcpy(scales, t.scales->data() + uint64_t(row0) * uint64_t(P) * sb,
                size_t(uint64_t(rows) * uint64_t(P) * sb));
    if (t.zeros && zeros) {
      const uint8_t* zp = t.zeros->data();
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = row0 + r;
        for (int64_t p = 0; p < P; ++p) {
          const uint32_t w = load_word(zp, uint64_t((n * b / 32) * P + p));
          store_zero(r * P + p, (w >> ((n * b) % 32)) & mask);
        }
      }
    }
    return;
  }
  // GPTQ: qweight [in * b / 32, out], word (w, n) holds rows w * 32/b + i of
  // column n at bits i * b; its four bytes are bytes 4w..4w+3 of row n's stream.
  const int per = 32 / b;
  const int64_t kw = in / per;
  for (int64_t w = 0; w < kw; ++w)
    for (int64_t r = 0; r < rows; ++r) {
      const uint32_t word = load_word(cw, uint64_t(w * out + row0 + r));
      if (aligned) {
        std::memcpy(codes + uint64_t(r) * row_bytes + uint64_t(4 * w), &word, 4);
      } else {
        for (int i = 0; i < per; ++i) put(r, w * per + i, (word >> (i * b)) & mask);
      }
    }
  const uint8_t* sc = t.scales->data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = 0; p < P; ++p)
      std::memcpy(scales + uint64_t(r * P + p) * sb, sc + uint64_t(p * out + row0 + r) * sb,
                  size_t(sb));
  if (t.zeros && zeros) {
    const uint8_t* qz = t.zeros->data();
    const int64_t zw = out * b / 32;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = row0 + r;
      for (int64_t p = 0; p < P; ++p) {
        const uint32_t w = load_word(qz, uint64_t(p * zw + n * b / 32));
        store_zero(r * P + p, ((w >> ((n * b) % 32)) & mask) + uint32_t(t.zero_offset));
      }
    }
  }
}

}  // namespace qpack
