// File primitives: a read-only memory map, and an output file that appears
// under its final name only when complete (temporary file in the same folder,
// fsync, rename). A crash, kill -9 or full disk never leaves a partial file
// under the final name. Both record themselves in qpack/format/live_files.hpp
// so a tool's signal handlers can remove temporary files and name a mapped
// file that shrank (SIGBUS).
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
  int live_slot_ = -1;  // live_files::add_mapping
};

// The output path must be a regular file or absent. Anything else (a
// directory, device node, FIFO, socket, a dangling symbolic link or one to
// such a thing) is refused with Error(Io) and left untouched, `overwrite` or
// not. A symbolic link to a regular file is followed: with `overwrite` the
// target is replaced and the link kept. A replaced file keeps its permission
// bits.
//
// The temporary file, in the folder of the file it will replace, is named
// `.NAME.qpack-partial.PID.XXXXXX` (NAME the output's name, PID this
// process). The constructor removes such files of the same output whose
// process no longer exists (left by kill -9 or a power cut): only regular
// files matching that pattern exactly, never anything else.
class AtomicOutputFile {
 public:
  // Creates the temporary file. Refuses an existing final_path unless
  // `overwrite`. Throws Error(Io/OutputExists/DiskFull).
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
  // The file the commit replaces or creates: final_path, or the target of
  // the symbolic link at final_path.
  const std::string& target_path() const { return target_path_; }

 private:
  std::string final_path_, target_path_, temp_path_;
  int fd_ = -1;
  int live_slot_ = -1;  // live_files::add_temp_file
  uint64_t pos_ = 0;
  bool overwrite_ = false;
  bool committed_ = false;
};

// A new file inside a folder whose owner removes the folder as a whole when
// it fails (ModelFolderWriter's temporary folder): created exclusively, no
// temporary name and no rename of its own, with AtomicOutputFile's write and
// disk-full reporting. Errors name `report_path` (the final output) and the
// file. The file gets 0666 & ~umask, or `set_mode`'s bits.
class FolderMemberFile {
 public:
  // Throws Error(Io/DiskFull); an existing `path` is Error(Io).
  FolderMemberFile(const std::string& path, const std::string& report_path);
  ~FolderMemberFile();  // closes (the owner removes the file)
  FolderMemberFile(const FolderMemberFile&) = delete;
  FolderMemberFile& operator=(const FolderMemberFile&) = delete;

  void write(const void* data, size_t size);  // appends; Error(DiskFull/Io)
  // Positional; safe to call from several threads at once.
  void pwrite_at(uint64_t offset, const void* data, size_t size);
  void set_mode(unsigned mode);  // permission bits (& 07777)
  // fsync + close: a full disk reported only at this point is Error(DiskFull).
  void sync_and_close();
  const std::string& path() const { return path_; }

 private:
  std::string path_, report_path_;
  int fd_ = -1;
};

// The part of a temporary file's name before PID: `.NAME.qpack-partial.`
// (NAME shortened so that the whole name fits in 255 bytes).
std::string partial_file_prefix(const std::string& output_name);
// True when `entry` is `prefix` + PID + "." + 6 letters or digits, and no
// process PID exists (a leftover of kill -9 or a power cut); never for this
// process's own PID.
bool is_orphaned_partial_name(const std::string& entry, const std::string& prefix);

// Refuses, with Error(DiskFull) naming the folder, the bytes needed and the
// bytes free (statvfs f_bavail * f_frsize), an output of `bytes_needed` that
// does not fit in the folder where an AtomicOutputFile for `final_path`
// writes. A folder whose free space cannot be read passes: the write itself
// still fails cleanly when the disk fills.
void check_free_space(const std::string& final_path, uint64_t bytes_needed);

// The folder part of a path ("." for a bare name, "/" at the root) and its
// last component.
std::string parent_folder(const std::string& path);
std::string file_name(const std::string& path);

// Reads a whole (small) file into a string; throws Error(Io).
std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
// True when both paths name the same file (same device and inode).
bool same_file(const std::string& a, const std::string& b);

}  // namespace qpack
