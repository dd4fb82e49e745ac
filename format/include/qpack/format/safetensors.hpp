// safetensors: reader over a memory map, with validation at least as strict
// as the reference implementation, and an atomic writer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "qpack/format/io.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

// Headers larger than this are refused (the reference implementation's cap).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets relative to the data region
  uint64_t end = 0;
  uint64_t num_elements() const;
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and validates. Throws Error with a specific code on any violation.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Parses and validates a header held in memory (used by the fuzzer too);
  // `file_size` is the size of the whole file the header came from.
  static void parse_header(const uint8_t* data, uint64_t file_size, const std::string& path,
                           std::vector<TensorInfo>* tensors,
                           std::map<std::string, std::string>* metadata, uint64_t* data_start);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in data-offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const uint8_t* tensor_data(const TensorInfo& t) const {
    return file_.data() + data_start_ + t.begin;
  }
  const TensorInfo* find(const std::string& name) const;
  void release(const TensorInfo& t) const { file_.release(data_start_ + t.begin, t.nbytes()); }
  void will_need(const TensorInfo& t) const { file_.will_need(data_start_ + t.begin, t.nbytes()); }
  uint64_t data_start() const { return data_start_; }
  const MappedFile& mapped() const { return file_; }

 private:
  MappedFile file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::unordered_map<std::string, size_t> by_name_;
  uint64_t data_start_ = 0;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
};

// The bytes of a safetensors file before its data region: the 8-byte header
// length and the JSON header (keys sorted, padded with spaces so that the
// data start 8-byte aligned, as the reference writer does). The tensors' data
// follow back to back in the given order; *data_bytes receives their total.
// Validates names, shapes and sizes: Error(InvalidArgument) naming `path`.
// Every safetensors writer of qpack builds its header here.
std::string safetensors_file_prefix(const std::string& path,
                                    const std::vector<TensorToWrite>& tensors,
                                    const std::map<std::string, std::string>& metadata,
                                    uint64_t* data_bytes);

// Writes tensors in the given order, header keys sorted, data 8-byte aligned
// header padding with spaces as the reference does. Atomic (temp + rename).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata, bool overwrite);

// A streaming variant for large outputs: declare every tensor first, then
// append each tensor's bytes in the same order.
class SafetensorsStreamWriter {
 public:
  SafetensorsStreamWriter(const std::string& path, const std::vector<TensorToWrite>& declared,
                          const std::map<std::string, std::string>& metadata, bool overwrite);
  void append(const void* data, uint64_t nbytes);
  void commit();

 private:
  AtomicOutputFile out_;
  uint64_t expected_ = 0, written_ = 0;
};

}  // namespace qpack
