// `qpack inspect FILE.gguf`: version, alignment, metadata (scalars and short
// strings with their values, arrays as item type and length), tensors with
// ggml type, ne, bytes and bits per weight, and the totals.
#include "inspect_gguf.hpp"

#include <cstdio>
#include <fstream>

#include "qpack/format/checksum.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/text.hpp"

namespace qpack::detail {

using nlohmann::json;

namespace {

// Strings longer than this show as their length only (tokenizer templates).
constexpr size_t kShownStringBytes = 64;

// Control characters and bytes that are not printable ASCII as \xNN, so a
// hostile key or value cannot drive the terminal.
std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) {
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    } else {
      out += char(ch);
    }
  }
  return out;
}

json scalar_json(const GgufValue& v) {
  switch (v.type) {
    case GgufType::Uint8:
    case GgufType::Uint16:
    case GgufType::Uint32:
    case GgufType::Uint64:
      return v.u;
    case GgufType::Int8:
    case GgufType::Int16:
    case GgufType::Int32:
    case GgufType::Int64:
      return v.i;
    case GgufType::Float32:
    case GgufType::Float64:
      return v.f;  // NaN and infinities dump as null
    case GgufType::Bool:
      return v.b;
    default:
      return nullptr;
  }
}

double bits_per_weight(uint64_t bytes, uint64_t elements) {
  return elements == 0 ? 0.0 : double(bytes) * 8.0 / double(elements);
}

std::string fixed(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

}  // namespace

bool is_gguf_file(const std::string& path) {
  if (is_directory(path)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::string(magic, 4) == "GGUF";
}

json gguf_inspect_report(const std::string& path, const InspectOptions& options) {
  const auto f = GgufFile::open(path);
  if (options.check) {
    // GGUF has no checksums; reading every byte still surfaces I/O errors.
    for (const GgufTensorInfo& t : f->tensors()) {
      (void)checksum64(f->tensor_data(t), size_t(t.nbytes));
      f->release(t);
    }
  }
  json r;
  r["path"] = path;
  r["format"] = "gguf";
  r["version"] = f->version();
  r["alignment"] = f->alignment();
  r["file_size"] = f->file_size();
  r["data_offset"] = f->data_start();
  json meta = json::array();
  for (const GgufKv& kv : f->metadata()) {
    json m;
    m["key"] = kv.key;
    m["type"] = gguf_type_name(kv.value.type);
    if (kv.value.type == GgufType::Array) {
      m["item_type"] = gguf_type_name(kv.value.array_type);
      m["length"] = kv.value.items.size();
    } else if (kv.value.type == GgufType::String) {
      m["length"] = kv.value.str.size();
      if (kv.value.str.size() <= kShownStringBytes) m["value"] = kv.value.str;
    } else {
      m["value"] = scalar_json(kv.value);
    }
    meta.push_back(std::move(m));
  }
  r["metadata"] = std::move(meta);
  json tensors = json::array();
  uint64_t bytes = 0, elements = 0;
  for (const GgufTensorInfo& t : f->tensors()) {
    json row;
    row["name"] = t.name;
    row["type"] = ggml_type_name(t.type);
    row["ne"] = t.ne;
    row["elements"] = t.num_elements();
    row["bytes"] = t.nbytes;
    row["offset"] = t.offset;
    row["bits_per_weight"] = bits_per_weight(t.nbytes, t.num_elements());
    bytes += t.nbytes;
    elements += t.num_elements();
    tensors.push_back(std::move(row));
  }
  r["tensors"] = std::move(tensors);
  r["totals"] = {{"tensors", f->tensors().size()},
                 {"elements", elements},
                 {"bytes", bytes},
                 {"bits_per_weight", bits_per_weight(bytes, elements)}};
  r["check"] = options.check ? json("ok") : json(nullptr);
  return r;
}

std::string format_gguf_inspect_table(const json& report) {
  std::string out = "gguf v" + std::to_string(report.at("version").get<uint32_t>()) + ": " +
                    escaped(report.at("path").get<std::string>()) + " (" +
                    std::to_string(report.at("file_size").get<uint64_t>()) + " bytes, alignment " +
                    std::to_string(report.at("alignment").get<uint32_t>()) + ")\n";
  const json& meta = report.at("metadata");
  out += "metadata: " + count_of(meta.size(), "key") + "\n";
  for (const json& m : meta) {
    const std::string type = m.at("type").get<std::string>();
    std::string value;
    if (type == "array") {
      value = "array of " + m.at("item_type").get<std::string>() + ", length " +
              std::to_string(m.at("length").get<uint64_t>());
    } else if (type == "string") {
      value = m.contains("value") ? "\"" + escaped(m.at("value").get<std::string>()) + "\""
                                  : "string of " + count_of(m.at("length").get<uint64_t>(), "byte");
    } else {
      const json& v = m.at("value");
      value = type + " " + (v.is_null() ? std::string("nan") : v.dump());
    }
    out += "  " + escaped(m.at("key").get<std::string>()) + " = " + value + "\n";
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "NE", "TYPE", "BYTES", "BPW"}};
  for (const json& t : report.at("tensors")) {
    std::vector<int64_t> ne = t.at("ne").get<std::vector<int64_t>>();
    rows.push_back({escaped(t.at("name").get<std::string>()), shape_to_string(ne),
                    t.at("type").get<std::string>(), std::to_string(t.at("bytes").get<uint64_t>()),
                    fixed(t.at("bits_per_weight").get<double>(), 2)});
  }
  const json& tot = report.at("totals");
  rows.push_back({"total", count_of(tot.at("tensors").get<uint64_t>(), "tensor"), "",
                  std::to_string(tot.at("bytes").get<uint64_t>()),
                  fixed(tot.at("bits_per_weight").get<double>(), 2)});
  std::vector<size_t> width(5, 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i + 1 == rows.size()) {
      size_t w = 0;
      for (size_t x : width) w += x + 2;
      out += std::string(w - 2, '-') + "\n";
    }
    std::string line;
    for (size_t c = 0; c < rows[i].size(); ++c) {
      const std::string pad(width[c] - rows[i][c].size(), ' ');
      if (c) line += "  ";
      line += c >= 3 ? pad + rows[i][c] : rows[i][c] + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  out += "data " + format_bytes(tot.at("bytes").get<uint64_t>()) + ", " +
         fixed(tot.at("bits_per_weight").get<double>(), 3) + " bits per weight\n";
  if (report.at("check").is_string()) out += "check: OK\n";
  return out;
}

}  // namespace qpack::detail
