// A checkpoint: one .safetensors file, a sharded model (model.safetensors.index.json),
// or a folder holding either. Tensors are listed in a deterministic order:
// shards sorted by file name, each shard's tensors by data offset.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "qpack/format/safetensors.hpp"

namespace qpack {

struct CheckpointTensor {
  const TensorInfo* info = nullptr;
  const SafetensorsFile* file = nullptr;
  const std::string& name() const { return info->name; }
  const uint8_t* data() const { return file->tensor_data(*info); }
};

class Checkpoint {
 public:
  static std::unique_ptr<Checkpoint> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  const CheckpointTensor* find(const std::string& name) const;
  // safetensors __metadata__ (merged over shards) and the index's "metadata".
  const nlohmann::json& metadata() const { return metadata_; }
  // config.json beside the checkpoint, or null.
  const nlohmann::json& config() const { return config_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t total_bytes() const;

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<CheckpointTensor> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  nlohmann::json metadata_ = nlohmann::json::object();
  nlohmann::json config_;
};

}  // namespace qpack
