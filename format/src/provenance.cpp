// Source-file hashes for the manifest's provenance object.
#include "qpack/format/provenance.hpp"

#include <filesystem>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/io.hpp"

namespace qpack {

namespace fs = std::filesystem;

uint64_t file_checksum64(const std::string& path) {
  const MappedFile map(path);
  return checksum64(map.data(), map.size());
}

std::string source_root(const std::string& source) {
  std::error_code ec;
  if (fs::is_directory(source, ec)) return source;
  return fs::path(source).parent_path().string();
}

nlohmann::json source_files_json(const Checkpoint& checkpoint, const std::string& source,
                                 SourceHashes hashes) {
  const std::string root = source_root(source);
  const fs::path dir = root.empty() ? fs::path(".") : fs::path(root);
  nlohmann::json files = nlohmann::json::array();
  auto add = [&](const fs::path& p) {
    // Shards and config.json all sit in the source folder, so a
    // file name is its path relative to the root: no absolute path is kept.
    files.push_back(
        {{"path", p.filename().string()},
         {"xxh3", hashes == SourceHashes::Compute ? checksum_to_hex(file_checksum64(p.string()))
                                                  : std::string(16, '0')}});
  };
  for (const auto& f : checkpoint.files()) add(f->path());
  std::error_code ec;
  if (fs::is_regular_file(dir / "config.json", ec)) add(dir / "config.json");
  return files;
}

}  // namespace qpack
