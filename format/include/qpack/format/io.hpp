// File primitives: a read-only memory map, and an output file that appears
// under its final name only when complete (temporary file in the same folder,
// fsync, rename). A crash, kill -9 or full disk never leaves a partial file
// under the final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace qpack {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws Error(Io) naming `path`.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Tells the kernel a range is no longer needed, so resident pages of a
  // large checkpoint do not pile up in this process (bounded RSS).
  void release(uint64_t offset, uint64_t length) const;
  void will_need(uint64_t offset, uint64_t length) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

class AtomicOutputFile {
 public:
  // Creates a temporary file next to `final_path`. Refuses an existing
  // final_path unless `overwrite`. Throws Error(Io/OutputExists).
  AtomicOutputFile(const std::string& final_path, bool overwrite);
  ~AtomicOutputFile();  // removes the temporary file unless committed
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  void write(const void* data, size_t size);  // appends; Error(DiskFull/Io)
  void write_zeros(uint64_t count);
  void pwrite_at(uint64_t offset, const void* data, size_t size);
  uint64_t position() const { return pos_; }
  // fsync + rename onto the final name. After this the destructor does nothing.
  void commit();

  const std::string& final_path() const { return final_path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string final_path_, temp_path_;
  int fd_ = -1;
  uint64_t pos_ = 0;
  bool overwrite_ = false;
  bool committed_ = false;
};

// Reads a whole (small) file into a string; throws Error(Io).
std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
// True when both paths name the same file (same device and inode).
bool same_file(const std::string& a, const std::string& b);

}  // namespace qpack
