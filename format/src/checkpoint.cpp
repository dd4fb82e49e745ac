#include "qpack/format/checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "json_strict.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

using nlohmann::json;

namespace {

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir == ".") return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Shard names come from an untrusted index: keep them inside its folder.
bool is_safe_relative(const std::string& name) {
  if (name.empty() || name.front() == '/') return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos) slash = name.size();
    const std::string part = name.substr(start, slash - start);
    if (part == "..") return false;
    start = slash + 1;
  }
  return name.find('\0') == std::string::npos;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec), end;
  if (ec) throw Error(ErrorCode::Io, dir, "", "cannot list folder: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error(ErrorCode::Io, dir, "", "cannot list folder: " + ec.message());
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// "model-00002-of-00003.safetensors" -> prefix "model", 2, 3.
bool parse_shard_name(const std::string& name, std::string* prefix, int* index, int* count) {
  static const std::string kExt = ".safetensors";
  if (!ends_with(name, kExt)) return false;
  const std::string stem = name.substr(0, name.size() - kExt.size());
  const size_t of = stem.rfind("-of-");
  if (of == std::string::npos || of < 1) return false;
  const size_t dash = stem.rfind('-', of - 1);
  if (dash == std::string::npos || dash == 0) return false;
  const std::string a = stem.substr(dash + 1, of - dash - 1), b = stem.substr(of + 4);
  const auto digits = [](const std::string& d) {
    return !d.empty() && d.size() <= 6 &&
           std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!digits(a) || !digits(b)) return false;
  *prefix = stem.substr(0, dash);
  *index = std::stoi(a);
  *count = std::stoi(b);
  return *index >= 1 && *index <= *count;
}

// A folder without an index is one model when it holds one .safetensors
// file, or the complete shards PREFIX-0000i-of-0000N of one prefix and one N.
// Anything else (model.safetensors beside adapter_model.safetensors, two
// models' shards) would be merged into one model that exists nowhere.
void check_files_form_one_model(const std::string& dir, const std::vector<std::string>& files) {
  if (files.size() <= 1) return;
  std::string list;
  for (size_t i = 0; i < files.size() && i < 4; ++i) list += (i ? ", " : "") + files[i];
  if (files.size() > 4) list += " and " + std::to_string(files.size() - 4) + " more";
  const std::string advice =
      "; pass the one to convert, or add a *.safetensors.index.json that lists the shards";
  std::string prefix0;
  int count0 = 0;
  std::set<int> seen;
  for (const std::string& f : files) {
    std::string prefix;
    int index = 0, count = 0;
    if (!parse_shard_name(f, &prefix, &index, &count) ||
        (!seen.empty() && (prefix != prefix0 || count != count0)))
      throw Error(ErrorCode::BadIndex, dir, "",
                  "folder holds " + std::to_string(files.size()) +
                      " .safetensors files that are not the shards of one model (" + list + ")" +
                      advice);
    prefix0 = prefix;
    count0 = count;
    seen.insert(index);
  }
  if (int(seen.size()) != count0)
    throw Error(ErrorCode::BadIndex, dir, "",
                "folder holds " + std::to_string(seen.size()) + " of the " +
                    std::to_string(count0) + " shards of '" + prefix0 + "' (" + list +
                    ") and no index: shards are missing");
}

}  // namespace

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& path) {
  auto cp = std::make_unique<Checkpoint>();
  cp->path_ = path;

  // shard file name (as listed) -> opened file, in name order
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards;
  std::string dir;
  std::string index_path;
  json index;

  auto open_index = [&](const std::string& ipath) {
    index_path = ipath;
    dir = parent_folder(ipath);
    const std::string text = read_text_file(ipath);
    const auto pr = detail::parse_json_strict(text.data(), text.data() + text.size(), &index);
    if (!pr.ok()) throw Error(ErrorCode::BadIndex, ipath, "", pr.describe());
    if (!index.is_object())
      throw Error(
          ErrorCode::BadIndex, ipath, "",
          std::string("index is a JSON ") + detail::json_type_name(index) + ", not an object");
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error(ErrorCode::BadIndex, ipath, "", "index has no \"weight_map\" object");
    if (index.contains("metadata") && !index["metadata"].is_object())
      throw Error(ErrorCode::BadIndex, ipath, "", "index \"metadata\" is not an object");
    // first tensor (by name) listed for each shard, for messages
    std::map<std::string, std::string> first_tensor;
    for (const auto& [tname, f] : index["weight_map"].items()) {
      if (!f.is_string())
        throw Error(ErrorCode::BadIndex, ipath, tname,
                    std::string("weight_map value is a JSON ") + detail::json_type_name(f) +
                        ", not a file name");
      const std::string& fname = f.get_ref<const std::string&>();
      if (!is_safe_relative(fname))
        throw Error(ErrorCode::BadIndex, ipath, tname,
                    "shard '" + fname + "' is not a relative path inside the index's folder");
      first_tensor.emplace(fname, tname);
    }
    for (const auto& [fname, tname] : first_tensor) {
      const std::string spath = join(dir, fname);
      if (!file_exists(spath))
        throw Error(ErrorCode::IndexMissingFile, ipath, tname,
                    "names shard '" + fname + "', which does not exist (" + spath + ")");
      shards.emplace(fname, SafetensorsFile::open(spath));
    }
    for (const auto& [tname, f] : index["weight_map"].items()) {
      const std::string& fname = f.get_ref<const std::string&>();
      if (!shards.at(fname)->find(tname))
        throw Error(ErrorCode::IndexMissingTensor, ipath, tname,
                    "listed in shard '" + fname + "', which does not hold it");
    }
    const json& wm = index["weight_map"];
    for (const auto& [fname, file] : shards) {
      for (const TensorInfo& t : file->tensors()) {
        const auto it = wm.find(t.name);
        if (it == wm.end())
          throw Error(ErrorCode::IndexUnlistedTensor, file->path(), t.name,
                      "is in this shard but not listed in the index " + ipath);
        if (it->get_ref<const std::string&>() != fname)
          throw Error(ErrorCode::DuplicateName, file->path(), t.name,
                      "is also in shard '" + it->get_ref<const std::string&>() +
                          "' (the one the index lists it in)");
      }
    }
  };

  if (is_directory(path)) {
    dir = path;
    std::vector<std::string> indexes, files;
    for (const std::string& name : list_dir(path)) {
      if (name.empty() || name[0] == '.') continue;  // hidden files, our own temporaries
      if (is_directory(join(path, name))) continue;
      if (ends_with(name, ".safetensors.index.json"))
        indexes.push_back(name);
      else if (ends_with(name, ".safetensors"))
        files.push_back(name);
    }
    if (!indexes.empty()) {
      std::string chosen;
      if (std::find(indexes.begin(), indexes.end(), "model.safetensors.index.json") !=
          indexes.end())
        chosen = "model.safetensors.index.json";
      else if (indexes.size() == 1)
        chosen = indexes[0];
      else
        throw Error(ErrorCode::BadIndex, path, "",
                    "folder holds several index files (" + indexes[0] + ", " + indexes[1] +
                        ", ...); pass the one to use");
      open_index(join(path, chosen));
    } else {
      if (files.empty())
        throw Error(ErrorCode::BadIndex, path, "",  // bad input (3), not a usage error
                    "folder holds no .safetensors file and no *.safetensors.index.json");
      check_files_form_one_model(path, files);
      for (const std::string& name : files)
        shards.emplace(name, SafetensorsFile::open(join(path, name)));
      std::map<std::string, std::string> seen;  // tensor -> shard
      for (const auto& [fname, file] : shards)
        for (const TensorInfo& t : file->tensors()) {
          const auto [it, inserted] = seen.emplace(t.name, fname);
          if (!inserted)
            throw Error(ErrorCode::DuplicateName, file->path(), t.name,
                        "is also in '" + it->second + "' in the same folder");
        }
    }
  } else {
    if (!file_exists(path)) throw Error(ErrorCode::Io, path, "", "no such file or folder");
    if (ends_with(path, ".json")) {
      open_index(path);
    } else {
      dir = parent_folder(path);
      const size_t slash = path.find_last_of('/');
      shards.emplace(slash == std::string::npos ? path : path.substr(slash + 1),
                     SafetensorsFile::open(path));
    }
  }

  for (auto& [fname, file] : shards) {
    for (const auto& [k, v] : file->metadata()) cp->metadata_[k] = v;  // later shards win
    cp->files_.push_back(std::move(file));
  }
  if (index.is_object() && index.contains("metadata"))
    for (const auto& [k, v] : index["metadata"].items())
      cp->metadata_[k] = v.is_string() ? v.get<std::string>() : detail::dump_lenient(v);

  for (const auto& file : cp->files_)
    for (const TensorInfo& t : file->tensors()) {
      cp->by_name_.emplace(t.name, cp->tensors_.size());
      cp->tensors_.push_back(CheckpointTensor{&t, file.get()});
    }

  const std::string config_path = join(dir, "config.json");
  if (file_exists(config_path) && !is_directory(config_path)) {
    const std::string text = read_text_file(config_path);
    json config;
    const auto pr = detail::parse_json_strict(text.data(), text.data() + text.size(), &config);
    if (!pr.ok()) throw Error(ErrorCode::BadJson, config_path, "", "config.json: " + pr.describe());
    if (!config.is_object())
      throw Error(ErrorCode::BadJson, config_path, "",
                  std::string("config.json is a JSON ") + detail::json_type_name(config) +
                      ", not an object");
    cp->config_ = std::move(config);
  }
  return cp;
}

const CheckpointTensor* Checkpoint::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const CheckpointTensor& t : tensors_) n += t.info->nbytes();
  return n;
}

}  // namespace qpack
