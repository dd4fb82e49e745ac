#include "qpack/format/inspect.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "inspect_gguf.hpp"
#include "inspect_hf.hpp"
#include "json_strict.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/hf_quantized.hpp"
#include "qpack/format/qpack_set.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

using nlohmann::json;

bool is_qpack_file(const std::string& path) {
  if (is_directory(path)) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint8_t magic[8];
  size_t got = 0;
  while (got < sizeof magic) {
    const ssize_t n = ::read(fd, magic + got, sizeof magic - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  ::close(fd);
  return got == sizeof magic && std::memcmp(magic, kQpackMagic.data(), sizeof magic) == 0;
}

namespace {

json ratio_of(uint64_t source, uint64_t stored) {
  const auto r = compression_ratio(source, stored);
  return r ? json(*r) : json(nullptr);
}

json qpack_report(const std::string& path, const InspectOptions& options) {
  const auto f = QpackFile::open(path);
  if (options.check) f->check_all();
  json r;
  r["path"] = path;
  r["format"] = "qpack";
  r["version"] = std::to_string(f->version_major()) + "." + std::to_string(f->version_minor());
  r["generator"] = f->manifest().at("generator");
  r["file_size"] = f->file_size();
  r["metadata"] = f->source_metadata();
  r["config"] = f->source_config();
  // docs/format.md section 3.3; null for files written without it.
  r["provenance"] = f->manifest().contains("provenance") ? f->manifest().at("provenance") : json();
  json tensors = json::array();
  uint64_t bytes = 0, source = 0;
  const json& mtensors = f->manifest().at("tensors");
  for (size_t i = 0; i < f->tensors().size(); ++i) {
    const QpackTensor& t = f->tensors()[i];
    json row;
    row["name"] = t.name;
    row["dtype"] = dtype_name(t.dtype);
    row["shape"] = t.shape;
    row["encoding"] = t.quantized ? "group_quant" : "raw";
    row["scheme"] = t.quantized ? scheme_label(t.scheme) : kRawLabel;
    row["quant"] = t.quantized ? mtensors[i].at("quant") : json(nullptr);
    row["bytes"] = t.stored_bytes();
    row["source_bytes"] = t.source_bytes();
    row["ratio"] = ratio_of(t.source_bytes(), t.stored_bytes());
    row["sections"] = mtensors[i].at("sections");
    bytes += t.stored_bytes();
    source += t.source_bytes();
    tensors.push_back(std::move(row));
  }
  r["tensors"] = std::move(tensors);
  r["totals"] = {{"tensors", f->tensors().size()},
                 {"bytes", bytes},
                 {"source_bytes", source},
                 {"ratio", ratio_of(source, f->file_size())}};  // the model's: over the file
  r["check"] = options.check ? json("ok") : json(nullptr);
  // A shard set (docs/format.md section 11): its shards, in order; null for one file.
  json shards;
  for (const auto& s : f->shards())
    shards.push_back(
        {{"file", s->path()}, {"tensors", s->tensors().size()}, {"file_size", s->file_size()}});
  r["shards"] = shards;
  return r;
}

json checkpoint_report(const std::string& path, const InspectOptions& options) {
  const auto cp = Checkpoint::open(path);
  if (options.check) {
    // safetensors has no checksums; reading every byte still surfaces I/O
    // errors and proves the mapping covers every tensor.
    for (const CheckpointTensor& t : cp->tensors()) {
      (void)checksum64(t.data(), size_t(t.info->nbytes()));
      t.file->release(*t.info);
    }
  }
  json r;
  r["path"] = path;
  r["format"] = "safetensors";
  json files = json::array();
  for (const auto& f : cp->files()) files.push_back(f->path());
  r["files"] = std::move(files);
  json meta = json::object();
  for (const auto& [k, v] : cp->metadata().items()) meta[k] = v;
  r["metadata"] = std::move(meta);
  r["config"] = cp->config();
  json tensors = json::array();
  uint64_t bytes = 0;
  for (const CheckpointTensor& t : cp->tensors()) {
    json row;
    row["name"] = t.name();
    row["dtype"] = dtype_name(t.info->dtype);
    row["shape"] = t.info->shape;
    row["encoding"] = "raw";
    row["scheme"] = kRawLabel;
    row["quant"] = nullptr;
    row["bytes"] = t.info->nbytes();
    row["source_bytes"] = t.info->nbytes();
    row["ratio"] = ratio_of(t.info->nbytes(), t.info->nbytes());
    row["file"] = t.file->path();
    row["data_offsets"] = {t.info->begin, t.info->end};
    bytes += t.info->nbytes();
    tensors.push_back(std::move(row));
  }
  r["tensors"] = std::move(tensors);
  r["totals"] = {{"tensors", cp->tensors().size()},
                 {"bytes", bytes},
                 {"source_bytes", bytes},
                 {"ratio", ratio_of(bytes, bytes)}};
  r["check"] = options.check ? json("ok") : json(nullptr);
  return r;
}

std::string ratio_text(const json& r) {
  return format_ratio(r.is_null() ? std::nullopt : std::optional<double>(r.get<double>()));
}

std::string shape_text(const json& shape) {
  std::vector<int64_t> s;
  for (const json& d : shape) s.push_back(d.get<int64_t>());
  return shape_to_string(s);
}

}  // namespace

json inspect_report(const std::string& path, const InspectOptions& options) {
  if (!file_exists(path)) throw Error(ErrorCode::Io, path, "", "no such file or folder");
  // The magic decides; a file named .qpack without it is still read as one,
  // so that its error says "bad magic" rather than something about safetensors.
  if (detail::is_gguf_file(path) ||
      (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0))
    return detail::gguf_inspect_report(path, options);
  const bool named_qpack =
      path.size() >= 6 && path.compare(path.size() - 6, 6, ".qpack") == 0 && !is_directory(path);
  // A folder whose config says it holds weights quantized by a method qpack
  // reads (docs/hf-reading.md); other methods are listed as plain tensors.
  if (!named_qpack && !is_qpack_file(path) &&
      HfQuantizedModel::reads_method(HfQuantizedModel::quant_method_of(path)))
    return detail::hf_inspect_report(path, options);
  if (!qpack_set_index_for(path).empty()) return qpack_report(path, options);
  return is_qpack_file(path) || named_qpack ? qpack_report(path, options)
                                            : checkpoint_report(path, options);
}

std::string format_inspect_table(const json& report) {
  if (report.at("format") == "gguf") return detail::format_gguf_inspect_table(report);
  if (report.at("format") == "compressed-tensors" || report.at("format") == "gptq")
    return detail::format_hf_inspect_table(report);
  const bool qp = report.at("format") == "qpack";
  const bool multi_file = !qp && report.at("files").size() > 1;
  std::vector<std::string> head = {"NAME", "SHAPE", "DTYPE", "SCHEME", "BYTES"};
  if (qp) {
    head.push_back("SOURCE");
    head.push_back("RATIO");
  }
  if (multi_file) head.push_back("FILE");
  std::vector<std::vector<std::string>> rows;
  rows.push_back(head);
  for (const json& t : report.at("tensors")) {
    std::vector<std::string> row = {escape_for_terminal(t.at("name").get<std::string>()),
                                    shape_text(t.at("shape")), t.at("dtype").get<std::string>(),
                                    t.at("scheme").get<std::string>(),
                                    std::to_string(t.at("bytes").get<uint64_t>())};
    if (qp) {
      row.push_back(std::to_string(t.at("source_bytes").get<uint64_t>()));
      row.push_back(ratio_text(t.at("ratio")));
    }
    if (multi_file) {
      const std::string f = t.at("file").get<std::string>();
      const size_t slash = f.find_last_of('/');
      row.push_back(escape_for_terminal(slash == std::string::npos ? f : f.substr(slash + 1)));
    }
    rows.push_back(std::move(row));
  }
  const json& tot = report.at("totals");
  const uint64_t ntensors = tot.at("tensors").get<uint64_t>();
  {
    std::vector<std::string> row = {
        "total", std::to_string(ntensors) + (ntensors == 1 ? " tensor" : " tensors"), "", "",
        std::to_string(tot.at("bytes").get<uint64_t>())};
    if (qp) {
      row.push_back(std::to_string(tot.at("source_bytes").get<uint64_t>()));
      row.push_back(ratio_text(tot.at("ratio")));
    }
    if (multi_file) row.push_back("");
    rows.push_back(std::move(row));
  }
  std::vector<size_t> width(head.size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], display_width(row[c]));
  // Numbers right-aligned: BYTES, SOURCE, RATIO.
  auto numeric = [&](size_t c) { return c == 4 || (qp && (c == 5 || c == 6)); };

  std::string out;
  if (qp) {
    out += "qpack " + report.at("version").get<std::string>() + ": " +
           escape_for_terminal(report.at("path").get<std::string>()) + " (" +
           std::to_string(report.at("file_size").get<uint64_t>()) + " bytes, generator " +
           escape_for_terminal(report.at("generator").get<std::string>()) + ")\n";
  } else {
    const size_t nf = report.at("files").size();
    out += "safetensors: " + escape_for_terminal(report.at("path").get<std::string>()) + " (" +
           std::to_string(nf) + (nf == 1 ? " file" : " files") + ")\n";
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i + 1 == rows.size()) {  // a rule above the totals
      size_t total_width = 0;
      for (size_t w : width) total_width += w + 2;
      out += std::string(total_width - 2, '-') + "\n";
    }
    std::string line;
    for (size_t c = 0; c < rows[i].size(); ++c) {
      if (c) line += "  ";
      line += pad_to_width(rows[i][c], width[c], numeric(c));
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  if (qp) {
    out += "stored " + format_bytes(tot.at("bytes").get<uint64_t>()) + " in sections, file " +
           format_bytes(report.at("file_size").get<uint64_t>()) + " for " +
           format_bytes(tot.at("source_bytes").get<uint64_t>()) + " source (ratio " +
           ratio_text(tot.at("ratio")) + ")\n";
  } else {
    out += "data " + format_bytes(tot.at("bytes").get<uint64_t>()) + "\n";
  }
  if (qp && report.contains("provenance") && report.at("provenance").is_object()) {
    const json& p = report.at("provenance");
    out += "provenance:";
    for (const char* k : {"command", "qpack"})
      if (p.contains(k) && p.at(k).is_string())
        out += std::string(" ") + k + " " + p.at(k).get<std::string>() + ";";
    if (p.contains("options")) out += " options " + p.at("options").dump() + ";";
    out += "\n";
    if (p.contains("recipe")) out += "  recipe " + p.at("recipe").dump() + "\n";
    if (p.contains("source_files") && p.at("source_files").is_array())
      for (const auto& sf : p.at("source_files"))
        if (sf.is_object() && sf.contains("path") && sf.contains("xxh3") &&
            sf.at("path").is_string() && sf.at("xxh3").is_string())
          out += "  source " + sf.at("path").get<std::string>() + " xxh3 " +
                 sf.at("xxh3").get<std::string>() + "\n";
  }
  if (report.at("check").is_string()) out += "check: OK\n";
  return out;
}

}  // namespace qpack
