// Provenance of a .qpack (docs/format.md section 3.3): which qpack made it,
// with which options, from which source files. convert records it; inspect
// shows it; verify re-hashes the source files before comparing.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace qpack {

class Checkpoint;

// XXH3-64 (seed 0) of the whole file at `path`. Throws Error(Io) naming it.
uint64_t file_checksum64(const std::string& path);

// The folder the recorded source file names are relative to: `source` itself
// when it is a folder, else the folder holding it ("" for the current one).
std::string source_root(const std::string& source);

// [{"path": NAME, "xxh3": HEX}, ...]: every file of the checkpoint that
// convert reads data from (each .safetensors shard, then config.json when
// present), by its name relative to source_root(source), in that order.
// With SourceHashes::Placeholder the files are not read and every hash is
// sixteen zeros: the same length, for sizing a manifest before writing it.
enum class SourceHashes { Compute, Placeholder };
nlohmann::json source_files_json(const Checkpoint& checkpoint, const std::string& source,
                                 SourceHashes hashes = SourceHashes::Compute);

}  // namespace qpack
