// `qpack inspect FOLDER` for compressed-tensors pack-quantized and GPTQ
// model folders: the folder reader's view (qpack/format/hf_quantized.hpp),
// each tensor with its qpack scheme, its stored tensors, shards and bytes.
#include "inspect_hf.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "qpack/format/checksum.hpp"
#include "qpack/format/hf_quantized.hpp"
#include "qpack/format/text.hpp"

namespace qpack::detail {

using nlohmann::json;

namespace {

std::string base_name(const std::string& p) {
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

json quant_json(const QuantScheme& s) {
  return {{"bits", s.bits},
          {"group_size", s.group_size},
          {"axis", s.axis},
          {"symmetric", s.symmetric},
          {"zero_point", s.symmetric ? json(nullptr) : json("integer")},
          {"scale_dtype", dtype_name(s.scale_dtype)}};
}

}  // namespace

json hf_inspect_report(const std::string& path, const InspectOptions& options) {
  const auto m = HfQuantizedModel::open(path);
  const Checkpoint& ck = m->checkpoint();
  if (options.check)
    for (const CheckpointTensor& t : ck.tensors()) {
      (void)checksum64(t.data(), size_t(t.info->nbytes()));
      t.file->release(*t.info);
    }
  json r;
  r["path"] = path;
  r["format"] = m->format_name();
  r["layout"] = m->layout_name();
  r["config_file"] = m->config_file();
  r["quantization_config"] = m->quant_config();
  json shards = json::array();
  for (const auto& f : ck.files()) {
    uint64_t bytes = 0;
    for (const TensorInfo& t : f->tensors()) bytes += t.nbytes();
    shards.push_back({{"file", f->path()}, {"tensors", f->tensors().size()}, {"bytes", bytes}});
  }
  r["shards"] = std::move(shards);
  json tensors = json::array();
  uint64_t stored = 0, elements = 0, qstored = 0, qelements = 0, nquant = 0;
  for (const HfEntry& e : m->entries()) {
    json row;
    if (e.quantized) {
      const HfQuantTensor& q = m->quantized()[e.index];
      const uint64_t n = uint64_t(q.layout.num_elements());
      row["name"] = q.name;
      row["quantized"] = true;
      row["shape"] = q.shape;
      row["dtype"] = dtype_name(q.scheme.scale_dtype);  // what the decompression gives
      row["scheme"] = scheme_label(q.scheme);
      row["quant"] = quant_json(q.scheme);
      json st = json::array();
      std::set<std::string> files;
      for (const CheckpointTensor* s : q.stored) {
        st.push_back({{"name", s->name()},
                      {"dtype", dtype_name(s->info->dtype)},
                      {"shape", s->info->shape},
                      {"file", base_name(s->file->path())}});
        files.insert(base_name(s->file->path()));
      }
      row["stored_tensors"] = std::move(st);
      row["files"] = std::vector<std::string>(files.begin(), files.end());
      row["bytes"] = q.stored_bytes;
      row["stored_bytes"] = q.stored_bytes;
      row["bits_per_weight"] = n ? double(q.stored_bytes) * 8.0 / double(n) : 0.0;
      stored += q.stored_bytes;
      elements += n;
      qstored += q.stored_bytes;
      qelements += n;
      ++nquant;
    } else {
      const CheckpointTensor& t = *m->kept()[e.index];
      const uint64_t n = t.info->num_elements();
      row["name"] = t.name();
      row["quantized"] = false;
      row["shape"] = t.info->shape;
      row["dtype"] = dtype_name(t.info->dtype);
      row["scheme"] = kRawLabel;
      row["quant"] = nullptr;
      row["files"] = {base_name(t.file->path())};
      row["bytes"] = t.info->nbytes();
      row["stored_bytes"] = t.info->nbytes();
      row["bits_per_weight"] = n ? double(t.info->nbytes()) * 8.0 / double(n) : 0.0;
      stored += t.info->nbytes();
      elements += n;
    }
    tensors.push_back(std::move(row));
  }
  r["tensors"] = std::move(tensors);
  r["totals"] = {
      {"tensors", m->entries().size()},
      {"quantized", nquant},
      {"bytes", stored},
      {"elements", elements},
      {"bits_per_weight", elements ? double(stored) * 8.0 / double(elements) : 0.0},
      {"quantized_bits_per_weight", qelements ? double(qstored) * 8.0 / double(qelements) : 0.0}};
  r["check"] = options.check ? json("ok") : json(nullptr);
  return r;
}

std::string format_hf_inspect_table(const json& report) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "SHAPE", "DTYPE", "SCHEME", "BYTES", "BITS/W", "FILE"});
  char buf[32];
  for (const json& t : report.at("tensors")) {
    std::vector<int64_t> shape = t.at("shape").get<std::vector<int64_t>>();
    std::snprintf(buf, sizeof buf, "%.3f", t.at("bits_per_weight").get<double>());
    std::string files;
    for (const json& f : t.at("files")) files += (files.empty() ? "" : ",") + f.get<std::string>();
    rows.push_back({escape_for_terminal(t.at("name").get<std::string>()), shape_to_string(shape),
                    t.at("dtype").get<std::string>(), t.at("scheme").get<std::string>(),
                    std::to_string(t.at("bytes").get<uint64_t>()), buf,
                    escape_for_terminal(files)});
  }
  const json& tot = report.at("totals");
  std::snprintf(buf, sizeof buf, "%.3f", tot.at("bits_per_weight").get<double>());
  rows.push_back({"total",
                  count_of(tot.at("tensors").get<uint64_t>(), "tensor") + ", " +
                      std::to_string(tot.at("quantized").get<uint64_t>()) + " quantized",
                  "", "", std::to_string(tot.at("bytes").get<uint64_t>()), buf, ""});
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], display_width(row[c]));
  std::string out =
      report.at("format").get<std::string>() + " (" + report.at("layout").get<std::string>() +
      "): " + escape_for_terminal(report.at("path").get<std::string>()) + " (" +
      count_of(report.at("shards").size(), "shard") + ", config " +
      escape_for_terminal(base_name(report.at("config_file").get<std::string>())) + ")\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i + 1 == rows.size()) {
      size_t total_width = 0;
      for (size_t w : width) total_width += w + 2;
      out += std::string(total_width - 2, '-') + "\n";
    }
    std::string line;
    for (size_t c = 0; c < rows[i].size(); ++c) {
      if (c) line += "  ";
      line += pad_to_width(rows[i][c], width[c], c == 4 || c == 5);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  std::snprintf(buf, sizeof buf, "%.3f", tot.at("quantized_bits_per_weight").get<double>());
  out += "data " + format_bytes(tot.at("bytes").get<uint64_t>()) + "; quantized Linears " + buf +
         " bits per weight (codes, scales, zero-points, shapes)\n";
  if (report.at("check").is_string()) out += "check: OK\n";
  return out;
}

}  // namespace qpack::detail
