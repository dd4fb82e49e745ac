// Shard sets of .qpack files (docs/format.md section 11): shards that are
// each a complete .qpack, plus an index (BASE.qpack.index.json) naming them,
// which tensor is in which, and each shard's header checksum; and qpack
// merge, which puts the parts of a conversion together, as an index over
// them or as the one file a single process would have written.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qpack {

// BASE-00001-of-00003.qpack: the name of shard `index` (0-based) of `count`,
// BASE being `output` without a trailing ".qpack".
std::string qpack_shard_path(const std::string& output, size_t index, size_t count);
// BASE.qpack.index.json beside it.
std::string qpack_set_index_path(const std::string& output);

// The index of the set `path` names, or "" when it names none: a folder
// holding *.qpack.index.json files (exactly one, else Error(SetBadIndex)), a
// file ending in ".qpack.index.json", or a .qpack file that an index in the
// same folder lists.
std::string qpack_set_index_for(const std::string& path);

// The "shard" object a shard's or part's manifest carries:
// {"set", "index", "count", "first_tensor", "tensors_total"}.
nlohmann::json qpack_shard_json(const std::string& set_id, size_t index, size_t count,
                                size_t first_tensor, size_t tensors_total);
// The set identifier qpack writes: XXH3-64 (16 hex digits) of the compact
// JSON of {"provenance": P with every source_files[].xxh3 null, "shards":
// count, "tensors": [every tensor name of the set, in order]}.
std::string qpack_set_id(const nlohmann::json& provenance, size_t count,
                         const std::vector<std::string>& tensor_names);

// Provenance of the whole set from its shards' (docs/format.md section 11.3):
// equal but for source_files[].xxh3, where a null takes another shard's
// value. Throws Error(`code`) naming the shard that disagrees.
nlohmann::json merged_provenance(const std::vector<nlohmann::json>& provenances,
                                 const std::vector<std::string>& files, int code);

struct MergeOptions {
  bool index_only = false;  // write BASE.qpack.index.json over the parts, copy nothing
  bool overwrite = false;
};

struct MergeSummary {
  std::string output;
  std::string set_id;
  size_t parts = 0, tensors = 0;
  uint64_t bytes_out = 0;  // the merged file, or the index
  bool index_only = false;
  std::vector<std::string> files;  // the parts in order
  nlohmann::json to_json() const;
};

// qpack merge: `parts` (any order) must be every part of one set exactly
// once, each a complete .qpack with a "shard" object, made from the same
// source with the same options (Error PartMismatch, PartMissing,
// PartDuplicate naming them). index_only: writes `output` as the set's index
// (the parts must sit in its folder). Otherwise: one .qpack whose bytes are
// those a single conversion writes. Atomic: nothing under `output` unless it
// is complete.
MergeSummary merge_qpack_parts(const std::vector<std::string>& parts, const std::string& output,
                               const MergeOptions& options);

}  // namespace qpack
