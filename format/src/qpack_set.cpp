// Shard sets (docs/format.md section 11): the index, opening a set as one
// QpackFile with every check of section 11.4, and qpack merge.
#include "qpack/format/qpack_set.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "json_strict.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexSuffix = ".qpack.index.json";
constexpr const char* kIndexFormat = "qpack-set";
constexpr const char* kIndexVersion = "1.0";

std::string base_of(const std::string& output) {
  return ends_with(output, ".qpack") ? output.substr(0, output.size() - 6) : output;
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir == "." ? name : dir + "/" + name;
}

std::string short_json(const json& j) {
  std::string s = detail::dump_lenient(j);
  if (s.size() > 160) s = s.substr(0, 157) + "...";
  return s;
}

// The *.qpack.index.json files of a folder, sorted, hidden ones skipped.
std::vector<std::string> index_files_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir.empty() ? "." : dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || !ends_with(name, kIndexSuffix)) continue;
    if (it->is_regular_file(ec)) out.push_back(join(dir, name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct IndexShard {
  std::string file;
  uint64_t size = 0, checksum = 0, tensors = 0;
};

struct SetIndex {
  std::string set;
  std::vector<IndexShard> shards;
  std::map<std::string, std::string> weight_map;
};

bool is_plain_qpack_name(const std::string& name) {
  return !name.empty() && name[0] != '.' && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && ends_with(name, ".qpack") && name.size() > 6;
}

SetIndex parse_index(const std::string& path) {
  const std::string text = read_text_file(path);
  auto bad = [&](const std::string& why) { return Error(ErrorCode::SetBadIndex, path, "", why); };
  json j;
  const detail::JsonParseResult r =
      detail::parse_json_strict(text.data(), text.data() + text.size(), &j);
  if (!r.ok()) throw bad("the index is not valid JSON: " + r.describe());
  if (!j.is_object()) throw bad("the index is not a JSON object");
  auto str = [&](const char* key) -> std::string {
    if (!j.contains(key) || !j.at(key).is_string())
      throw bad(std::string("the index has no string '") + key + "'");
    return j.at(key).get<std::string>();
  };
  if (str("format") != kIndexFormat)
    throw bad(std::string("'format' is not \"") + kIndexFormat + "\"");
  const std::string version = str("version");
  if (version.rfind("1.", 0) != 0) throw bad("unsupported index version '" + version + "'");
  SetIndex idx;
  idx.set = str("set");
  uint64_t unused = 0;
  if (!checksum_from_hex(idx.set, &unused)) throw bad("'set' is not 16 lower-case hex digits");
  if (!j.contains("shards") || !j.at("shards").is_array() || j.at("shards").empty())
    throw bad("'shards' is not a non-empty array");
  std::set<std::string> names;
  for (const json& s : j.at("shards")) {
    if (!s.is_object() || !s.contains("file") || !s.at("file").is_string() || !s.contains("size") ||
        !s.at("size").is_number_unsigned() || !s.contains("xxh3") || !s.at("xxh3").is_string() ||
        !s.contains("tensors") || !s.at("tensors").is_number_unsigned())
      throw bad("a shard entry lacks file, size, xxh3 or tensors: " + short_json(s));
    IndexShard e;
    e.file = s.at("file").get<std::string>();
    if (!is_plain_qpack_name(e.file))
      throw bad("shard file '" + e.file +
                "' is not a plain *.qpack name in the index's folder (no '/', not hidden)");
    if (!names.insert(e.file).second) throw bad("shard file '" + e.file + "' listed twice");
    e.size = s.at("size").get<uint64_t>();
    e.tensors = s.at("tensors").get<uint64_t>();
    if (!checksum_from_hex(s.at("xxh3").get<std::string>(), &e.checksum))
      throw bad("shard '" + e.file + "': xxh3 is not 16 lower-case hex digits");
    idx.shards.push_back(e);
  }
  if (!j.contains("weight_map") || !j.at("weight_map").is_object())
    throw bad("'weight_map' is not an object");
  for (const auto& [name, file] : j.at("weight_map").items()) {
    if (!file.is_string() || !names.count(file.get<std::string>()))
      throw bad("weight_map: tensor '" + name + "' names no listed shard");
    idx.weight_map[name] = file.get<std::string>();
  }
  return idx;
}

// The "shard" object of a manifest, checked for its keys and types; null
// when the file has none.
struct ShardInfo {
  bool present = false;
  std::string set;
  uint64_t index = 0, count = 0, first_tensor = 0, tensors_total = 0;
};

ShardInfo shard_info(const QpackFile& f, ErrorCode code) {
  ShardInfo s;
  const json& m = f.manifest();
  if (!m.contains("shard")) return s;
  const json& j = m.at("shard");
  auto num = [&](const char* key) {
    if (!j.is_object() || !j.contains(key) || !j.at(key).is_number_unsigned())
      throw Error(
          code, f.path(), "",
          std::string("the manifest's shard object has no '") + key + "' (an unsigned integer)");
    return j.at(key).get<uint64_t>();
  };
  if (!j.is_object() || !j.contains("set") || !j.at("set").is_string())
    throw Error(code, f.path(), "", "the manifest's shard object has no string 'set'");
  s.present = true;
  s.set = j.at("set").get<std::string>();
  s.index = num("index");
  s.count = num("count");
  s.first_tensor = num("first_tensor");
  s.tensors_total = num("tensors_total");
  return s;
}

const json& provenance_of(const QpackFile& f) {
  static const json kNull;
  return f.manifest().contains("provenance") ? f.manifest().at("provenance") : kNull;
}

// The manifest keys every shard of a set shares (all but tensors, shard and
// provenance, which merged_provenance compares): source, generator,
// alignment.
void check_same_source(const std::vector<const QpackFile*>& files, ErrorCode code) {
  const json& a = files[0]->manifest();
  for (size_t i = 1; i < files.size(); ++i) {
    const json& b = files[i]->manifest();
    for (const char* key : {"source", "generator", "alignment"})
      if (a.at(key) != b.at(key))
        throw Error(code, files[i]->path(), "",
                    std::string("its manifest's '") + key + "' differs from " + files[0]->path() +
                        "'s: " + short_json(b.at(key)) + " vs " + short_json(a.at(key)));
  }
}

}  // namespace

std::string qpack_shard_path(const std::string& output, size_t index, size_t count) {
  char tail[64];
  std::snprintf(tail, sizeof tail, "-%05zu-of-%05zu.qpack", index + 1, count);
  return base_of(output) + tail;
}

std::string qpack_set_index_path(const std::string& output) {
  return base_of(output) + kIndexSuffix;
}

std::string qpack_set_index_for(const std::string& path) {
  if (ends_with(path, kIndexSuffix)) return path;
  if (is_directory(path)) {
    const std::vector<std::string> found = index_files_in(path);
    if (found.size() > 1)
      throw Error(ErrorCode::SetBadIndex, path, "",
                  "the folder holds " + std::to_string(found.size()) +
                      " set indexes (*.qpack.index.json): name the one to read");
    return found.empty() ? std::string() : found[0];
  }
  if (!ends_with(path, ".qpack") || !file_exists(path)) return "";
  const std::string name = file_name(path);
  for (const std::string& index : index_files_in(parent_folder(path))) {
    SetIndex idx;
    try {
      idx = parse_index(index);
    } catch (const Error&) {
      continue;  // an index that does not list this file is not its set's
    }
    for (const IndexShard& s : idx.shards)
      if (s.file == name) return index;
  }
  return "";
}

json qpack_shard_json(const std::string& set_id, size_t index, size_t count, size_t first_tensor,
                      size_t tensors_total) {
  return {{"set", set_id},
          {"index", index},
          {"count", count},
          {"first_tensor", first_tensor},
          {"tensors_total", tensors_total}};
}

std::string qpack_set_id(const json& provenance, size_t count,
                         const std::vector<std::string>& tensor_names) {
  json p = provenance;
  if (p.is_object() && p.contains("source_files") && p.at("source_files").is_array())
    for (json& f : p.at("source_files"))
      if (f.is_object()) f["xxh3"] = nullptr;
  const std::string text =
      detail::dump_lenient({{"provenance", p}, {"shards", count}, {"tensors", tensor_names}});
  return checksum_to_hex(checksum64(text.data(), text.size()));
}

json merged_provenance(const std::vector<json>& provenances, const std::vector<std::string>& files,
                       int code_int) {
  const ErrorCode code = ErrorCode(code_int);
  json out = provenances.at(0);
  for (size_t i = 1; i < provenances.size(); ++i) {
    const json& p = provenances[i];
    auto differ = [&](const std::string& what, const json& a, const json& b) {
      return Error(code, files[i], "",
                   "made with a different " + what + " than " + files[0] + ": " + short_json(a) +
                       " vs " + short_json(b));
    };
    if (out.is_null() != p.is_null() || out.is_object() != p.is_object())
      throw differ("provenance", p, out);
    if (!out.is_object()) continue;
    std::set<std::string> keys;
    for (const auto& [k, v] : out.items()) keys.insert(k);
    for (const auto& [k, v] : p.items()) keys.insert(k);
    for (const std::string& k : keys) {
      const json a = p.contains(k) ? p.at(k) : json();
      json& b = out[k];
      if (k != "source_files" || !a.is_array() || !b.is_array()) {
        if (a != b) throw differ("provenance '" + k + "'", a, b);
        continue;
      }
      if (a.size() != b.size()) throw differ("list of source files", a, b);
      for (size_t f = 0; f < a.size(); ++f) {
        const json& fa = a[f];
        json& fb = b[f];
        if (!fa.is_object() || !fb.is_object() ||
            fa.value("path", json()) != fb.value("path", json()))
          throw differ("list of source files", a, b);
        const json ha = fa.value("xxh3", json()), hb = fb.value("xxh3", json());
        if (ha.is_null()) continue;
        if (hb.is_null())
          fb["xxh3"] = ha;
        else if (ha != hb)
          throw Error(code, files[i], "",
                      "made from a different source file " + short_json(fa.at("path")) + " (xxh3 " +
                          short_json(ha) + ") than another part (xxh3 " + short_json(hb) + ")");
      }
    }
  }
  return out;
}

std::unique_ptr<QpackFile> open_qpack_set(const std::string& index_path) {
  const SetIndex idx = parse_index(index_path);
  const std::string dir = parent_folder(index_path);
  const size_t n = idx.shards.size();

  // 11.4 step 2: every listed shard is there.
  std::vector<std::string> missing;
  for (const IndexShard& s : idx.shards)
    if (!file_exists(join(dir, s.file))) missing.push_back(s.file);
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size(); ++i) list += (i ? ", " : "") + missing[i];
    throw Error(ErrorCode::SetMissingShard, join(dir, missing[0]), "",
                count_of(missing.size(), "shard") + " the index " + index_path +
                    " lists cannot be found: " + list);
  }
  // Step 3: each is a valid .qpack on its own.
  std::vector<std::unique_ptr<QpackFile>> shards;
  for (const IndexShard& s : idx.shards) shards.push_back(QpackFile::open_file(join(dir, s.file)));
  std::vector<ShardInfo> info;
  for (const auto& f : shards) info.push_back(shard_info(*f, ErrorCode::SetShardMismatch));

  // Step 4: each is the shard the index lists (header checksums).
  std::vector<size_t> mismatched;
  for (size_t k = 0; k < n; ++k) {
    const uint64_t got = shards[k]->header_checksum();
    if (got == idx.shards[k].checksum && shards[k]->file_size() == idx.shards[k].size) continue;
    for (size_t j = 0; j < n; ++j)
      if (j != k && got == idx.shards[j].checksum)
        throw Error(ErrorCode::SetSwappedShard, shards[k]->path(), "",
                    file_name(shards[k]->path()) + " holds the bytes the index " + index_path +
                        " lists for shard " + std::to_string(j + 1) + " (" + idx.shards[j].file +
                        "), not those of shard " + std::to_string(k + 1) +
                        ": shard files swapped or renamed");
    mismatched.push_back(k);
  }
  if (!mismatched.empty()) {
    bool one_set = true;
    for (const ShardInfo& s : info) one_set = one_set && s.present && s.set == info[0].set;
    if (one_set && info[0].set != idx.set)
      throw Error(
          ErrorCode::SetStaleIndex, index_path, "",
          file_name(index_path) + " was written for set " + idx.set +
              ", but its shards are all of set " + info[0].set +
              " (converted again since?): write the index again (qpack merge --index-only)");
    const size_t k = mismatched[0];
    throw Error(ErrorCode::SetShardMismatch, shards[k]->path(), "",
                file_name(shards[k]->path()) + " is not the shard the index " + index_path +
                    " lists: header xxh3 " + checksum_to_hex(shards[k]->header_checksum()) +
                    " and " + std::to_string(shards[k]->file_size()) + " bytes, the index has " +
                    checksum_to_hex(idx.shards[k].checksum) + " and " +
                    std::to_string(idx.shards[k].size) +
                    (info[k].present && info[k].set != idx.set
                         ? "; it belongs to set " + info[k].set + ", the index to " + idx.set
                         : std::string()));
  }
  // Step 5: each says it is shard k of this set.
  uint64_t total = 0;
  for (const auto& f : shards) total += f->tensors().size();
  uint64_t first = 0;
  for (size_t k = 0; k < n; ++k) {
    const ShardInfo& s = info[k];
    if (!s.present || s.set != idx.set || s.index != k || s.count != n || s.first_tensor != first ||
        s.tensors_total != total)
      throw Error(ErrorCode::SetShardMismatch, shards[k]->path(), "",
                  file_name(shards[k]->path()) + ": its manifest's shard object " +
                      (s.present ? short_json(shards[k]->manifest().at("shard"))
                                 : std::string("is absent")) +
                      " does not make it shard " + std::to_string(k) + " (0-based) of " +
                      std::to_string(n) + " of set " + idx.set + " starting at tensor " +
                      std::to_string(first) + " of " + std::to_string(total));
    first += shards[k]->tensors().size();
  }
  // Step 6: the weight map says where each tensor is.
  for (size_t k = 0; k < n; ++k) {
    if (shards[k]->tensors().size() != idx.shards[k].tensors)
      throw Error(ErrorCode::SetStaleIndex, index_path, "",
                  "lists " + std::to_string(idx.shards[k].tensors) + " tensors in " +
                      idx.shards[k].file + ", which holds " +
                      std::to_string(shards[k]->tensors().size()));
    for (const QpackTensor& t : shards[k]->tensors()) {
      const auto it = idx.weight_map.find(t.name);
      if (it == idx.weight_map.end() || it->second != idx.shards[k].file)
        throw Error(ErrorCode::SetStaleIndex, index_path, t.name,
                    "the weight_map " +
                        (it == idx.weight_map.end() ? std::string("does not list it")
                                                    : "puts it in " + it->second) +
                        ", but " + idx.shards[k].file + " holds it");
    }
  }
  if (idx.weight_map.size() != total)
    throw Error(ErrorCode::SetStaleIndex, index_path, "",
                "the weight_map lists " + std::to_string(idx.weight_map.size()) +
                    " tensors, the shards hold " + std::to_string(total));
  // Step 7: no shard of the set beside it that the index leaves out.
  std::set<std::string> listed;
  for (const IndexShard& s : idx.shards) listed.insert(s.file);
  std::error_code ec;
  for (fs::directory_iterator it(dir.empty() ? "." : dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!is_plain_qpack_name(name) || listed.count(name) || !it->is_regular_file(ec)) continue;
    std::unique_ptr<QpackFile> other;
    try {
      other = QpackFile::open_file(join(dir, name));
    } catch (const Error&) {
      continue;  // not a .qpack at all: not a shard of this set
    }
    const ShardInfo s = shard_info(*other, ErrorCode::SetShardMismatch);
    if (s.present && s.set == idx.set)
      throw Error(ErrorCode::SetExtraShard, join(dir, name), "",
                  name + " is shard " + std::to_string(s.index + 1) + " of " +
                      std::to_string(s.count) + " of the set of " + index_path +
                      ", which does not list it");
  }
  // Step 8: one source, one provenance.
  std::vector<const QpackFile*> files;
  std::vector<json> provenances;
  std::vector<std::string> names;
  for (const auto& f : shards) {
    files.push_back(f.get());
    provenances.push_back(provenance_of(*f));
    names.push_back(f->path());
  }
  check_same_source(files, ErrorCode::SetShardMismatch);
  const json provenance = merged_provenance(provenances, names, int(ErrorCode::SetShardMismatch));

  auto set = std::unique_ptr<QpackFile>(new QpackFile());
  set->path_ = index_path;
  set->minor_ = shards[0]->version_minor();
  json manifest = shards[0]->manifest();
  manifest.erase("shard");
  if (!provenance.is_null()) manifest["provenance"] = provenance;
  json tensors = json::array();
  for (size_t k = 0; k < n; ++k) {
    set->size_ += shards[k]->file_size();
    set->major_ = std::max(set->major_, shards[k]->version_major());
    for (size_t i = 0; i < shards[k]->tensors().size(); ++i) {
      QpackTensor t = shards[k]->tensors()[i];
      for (SectionKind kind :
           {SectionKind::Data, SectionKind::Codes, SectionKind::Scales, SectionKind::Zeros})
        t.section(kind).shard = uint32_t(k);
      if (!set->by_name_.emplace(t.name, set->tensors_.size()).second)
        throw Error(ErrorCode::DuplicateName, shards[k]->path(), t.name,
                    "the tensor is in two shards of the set");
      set->tensors_.push_back(std::move(t));
      tensors.push_back(shards[k]->manifest().at("tensors").at(i));
    }
  }
  manifest["tensors"] = std::move(tensors);
  set->manifest_ = std::move(manifest);
  set->shards_ = std::move(shards);
  return set;
}

json MergeSummary::to_json() const {
  return {{"output", output},   {"set", set_id},          {"parts", parts},
          {"tensors", tensors}, {"bytes_out", bytes_out}, {"index_only", index_only},
          {"files", files}};
}

MergeSummary merge_qpack_parts(const std::vector<std::string>& part_paths,
                               const std::string& output, const MergeOptions& options) {
  if (part_paths.empty())
    throw Error(ErrorCode::InvalidArgument, output, "", "merge needs at least one part");
  for (const std::string& p : part_paths)
    if (file_exists(output) && same_file(p, output))
      throw Error(ErrorCode::InvalidArgument, output, "", "the output is one of the parts");
  if (options.index_only && !ends_with(output, kIndexSuffix))
    throw Error(ErrorCode::InvalidArgument, output, "",
                std::string("an index-only merge writes BASE") + kIndexSuffix +
                    ": the output must end in " + kIndexSuffix);
  std::vector<std::unique_ptr<QpackFile>> parts;
  std::vector<ShardInfo> info;
  for (const std::string& p : part_paths) {
    parts.push_back(QpackFile::open_file(p));
    info.push_back(shard_info(*parts.back(), ErrorCode::PartMismatch));
    if (!info.back().present)
      throw Error(ErrorCode::PartMismatch, p, "",
                  "is not a part of a set: its manifest has no shard object (qpack convert "
                  "--part or --max-shard-size writes one)");
  }
  // The same set: same count, same provenance (options, recipe, sources), same
  // source metadata, same tensors.
  for (size_t i = 1; i < parts.size(); ++i)
    if (info[i].count != info[0].count)
      throw Error(ErrorCode::PartMismatch, part_paths[i], "",
                  "is a part of " + std::to_string(info[i].count) + ", " + part_paths[0] +
                      " a part of " + std::to_string(info[0].count));
  std::vector<const QpackFile*> files;
  std::vector<json> provenances;
  for (const auto& f : parts) {
    files.push_back(f.get());
    provenances.push_back(provenance_of(*f));
  }
  check_same_source(files, ErrorCode::PartMismatch);
  const json provenance = merged_provenance(provenances, part_paths, int(ErrorCode::PartMismatch));
  for (size_t i = 1; i < parts.size(); ++i)
    if (info[i].set != info[0].set)
      throw Error(ErrorCode::PartMismatch, part_paths[i], "",
                  "is a part of set " + info[i].set + ", " + part_paths[0] + " of set " +
                      info[0].set + " (a different plan: other tensors or rules)");
  // Each part once.
  const size_t n = size_t(info[0].count);
  std::vector<int> by_index(n, -1);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (info[i].index >= n)
      throw Error(ErrorCode::PartMismatch, part_paths[i], "",
                  "says it is part " + std::to_string(info[i].index) + " of " + std::to_string(n));
    int& slot = by_index[size_t(info[i].index)];
    if (slot >= 0)
      throw Error(ErrorCode::PartDuplicate, part_paths[i], "",
                  "is part " + std::to_string(info[i].index) + " of " + std::to_string(n) +
                      ", as " + part_paths[size_t(slot)] + " is: give each part once");
    slot = int(i);
  }
  std::string missing;
  size_t n_missing = 0;
  for (size_t k = 0; k < n; ++k)
    if (by_index[k] < 0) {
      missing += (n_missing++ ? ", " : "") + std::to_string(k);
    }
  if (n_missing)
    throw Error(ErrorCode::PartMissing, output, "",
                count_of(n_missing, "part") + " of the " + std::to_string(n) + " of set " +
                    info[0].set + " not given: " + (n_missing > 1 ? "parts " : "part ") + missing +
                    " (0-based, as --part K/N counts)");
  uint64_t first = 0, total = 0;
  for (const auto& f : parts) total += f->tensors().size();
  MergeSummary sum;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = size_t(by_index[k]);
    if (info[i].first_tensor != first || info[i].tensors_total != total)
      throw Error(ErrorCode::PartMismatch, part_paths[i], "",
                  "starts at tensor " + std::to_string(info[i].first_tensor) + " of " +
                      std::to_string(info[i].tensors_total) + ", the parts before it end at " +
                      std::to_string(first) + " of " + std::to_string(total));
    first += parts[i]->tensors().size();
    sum.files.push_back(part_paths[i]);
  }
  sum.output = output;
  sum.set_id = info[0].set;
  sum.parts = n;
  sum.tensors = size_t(total);
  sum.index_only = options.index_only;

  if (options.index_only) {
    const std::string dir = parent_folder(output);
    json shards = json::array(), weight_map = json::object();
    uint64_t total_size = 0;
    for (size_t k = 0; k < n; ++k) {
      const QpackFile& f = *parts[size_t(by_index[k])];
      if (!same_file(parent_folder(f.path()), dir))
        throw Error(ErrorCode::InvalidArgument, f.path(), "",
                    "an index lists shards in its own folder: this part is not in " + dir);
      const std::string name = file_name(f.path());
      if (!is_plain_qpack_name(name))
        throw Error(ErrorCode::InvalidArgument, f.path(), "",
                    "a shard's name must end in .qpack and not start with '.'");
      shards.push_back({{"file", name},
                        {"size", f.file_size()},
                        {"xxh3", checksum_to_hex(f.header_checksum())},
                        {"tensors", f.tensors().size()}});
      for (const QpackTensor& t : f.tensors()) weight_map[t.name] = name;
      total_size += f.file_size();
    }
    const json index = {{"format", kIndexFormat},
                        {"version", kIndexVersion},
                        {"set", info[0].set},
                        {"tensors", total},
                        {"total_size", total_size},
                        {"shards", std::move(shards)},
                        {"weight_map", std::move(weight_map)}};
    const std::string text = index.dump(2) + "\n";
    AtomicOutputFile out(output, options.overwrite);
    out.write(text.data(), text.size());
    out.commit();
    sum.bytes_out = text.size();
    return sum;
  }
  WriterOptions wo;
  wo.overwrite = options.overwrite;
  wo.generator = parts[0]->manifest().at("generator").get<std::string>();
  QpackWriter writer(output, wo);
  writer.set_source(parts[0]->source_metadata(), parts[0]->source_config());
  if (!provenance.is_null()) writer.set_provenance(provenance);
  for (size_t k = 0; k < n; ++k) {
    const QpackFile& f = *parts[size_t(by_index[k])];
    for (size_t i = 0; i < f.tensors().size(); ++i) writer.add_copied(f, i);
  }
  writer.commit();
  sum.bytes_out = writer.bytes_written();
  return sum;
}

}  // namespace qpack
