#include "qpack/format/io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/format/live_files.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

std::string parent_folder(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string file_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

namespace {

std::string errno_text(int err) { return std::strerror(err); }

uint64_t page_size() {
  static const uint64_t p = [] {
    const long v = sysconf(_SC_PAGESIZE);
    return v > 0 ? uint64_t(v) : uint64_t(4096);
  }();
  return p;
}

// mkstemp creates files 0600; the output should get the permissions any other
// new file of this process would (0666 & ~umask). umask() itself can only be
// read by setting it, which races with other threads creating files, so the
// value comes from /proc when available.
mode_t current_umask() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Umask:", 0) == 0) return mode_t(std::strtoul(line.c_str() + 6, nullptr, 8));
  }
  return 022;
}

bool is_disk_full(int err) { return err == ENOSPC || err == EDQUOT || err == EFBIG; }

}  // namespace

// ---------------------------------------------------------------- MappedFile

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorCode::Io, path, "", "cannot open: " + errno_text(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ErrorCode::Io, path, "", "cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::Io, path, "",
                S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
  }
  size_ = uint64_t(st.st_size);
  if (size_ > 0) {  // mmap of length 0 fails; an empty file maps to nothing
    if (size_ > uint64_t(SIZE_MAX)) {
      ::close(fd);
      throw Error(ErrorCode::Io, path, "", "file too large to map");
    }
    void* p = mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(ErrorCode::Io, path, "", "cannot map: " + errno_text(err));
    }
    data_ = static_cast<const uint8_t*>(p);
    // A file that shrinks under the map raises SIGBUS on the lost pages; the
    // tool's handler names the file from this record.
    live_slot_ = live_files::add_mapping(data_, size_, path);
  }
  ::close(fd);  // the mapping keeps the file open
}

MappedFile::~MappedFile() {
  live_files::remove_mapping(live_slot_);
  if (data_) munmap(const_cast<uint8_t*>(data_), size_t(size_));
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(o.data_), size_(o.size_), live_slot_(o.live_slot_) {
  o.data_ = nullptr;
  o.size_ = 0;
  o.live_slot_ = -1;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    live_files::remove_mapping(live_slot_);
    if (data_) munmap(const_cast<uint8_t*>(data_), size_t(size_));
    path_ = std::move(o.path_);
    data_ = o.data_;
    size_ = o.size_;
    live_slot_ = o.live_slot_;
    o.data_ = nullptr;
    o.size_ = 0;
    o.live_slot_ = -1;
  }
  return *this;
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (!data_ || offset >= size_) return;
  length = std::min(length, size_ - offset);
  // Rounded inwards: pages shared with a neighbouring range may still be in use.
  const uint64_t ps = page_size();
  const uint64_t begin = (offset + ps - 1) / ps * ps;
  const uint64_t end = (offset + length) / ps * ps;
  if (end <= begin) return;
  // Advice only: failure costs memory, not correctness.
  (void)madvise(const_cast<uint8_t*>(data_) + begin, size_t(end - begin), MADV_DONTNEED);
}

void MappedFile::will_need(uint64_t offset, uint64_t length) const {
  if (!data_ || offset >= size_) return;
  length = std::min(length, size_ - offset);
  const uint64_t ps = page_size();
  const uint64_t begin = offset / ps * ps;
  const uint64_t end = offset + length;
  if (end <= begin) return;
    // MADV_POPULATE_READ (Linux 5.14) maps the whole range in one call instead
    // of one page fault per 4 KiB page, which dominates a conversion from the
    // page cache; older kernels reject it and get read-ahead instead.
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
  void* p = const_cast<uint8_t*>(data_) + begin;
  if (madvise(p, size_t(end - begin), MADV_POPULATE_READ) != 0)
    (void)madvise(p, size_t(end - begin), MADV_WILLNEED);
}

// ---------------------------------------------------------- AtomicOutputFile

namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

const char* const kNotRegular = ": the output must be a regular file or absent (left untouched)";

// What sits at an output path: nothing, or a regular file (maybe behind a
// symbolic link), whose path `target` the commit replaces. Anything else is
// refused here, before a byte is written.
struct OutputTarget {
  std::string target;
  bool exists = false;
  mode_t mode = 0;
};

OutputTarget inspect_output(const std::string& final_path) {
  OutputTarget t;
  t.target = final_path;
  struct stat st;
  if (::lstat(final_path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return t;
    throw Error(ErrorCode::Io, final_path, "", "cannot access: " + errno_text(err));
  }
  if (S_ISLNK(st.st_mode)) {
    struct stat target_st;
    if (::stat(final_path.c_str(), &target_st) != 0) {
      const int err = errno;
      throw Error(ErrorCode::Io, final_path, "",
                  err == ENOENT ? std::string("is a dangling symbolic link") + kNotRegular
                                : "is a symbolic link that cannot be followed: " + errno_text(err));
    }
    if (!S_ISREG(target_st.st_mode))
      throw Error(ErrorCode::Io, final_path, "",
                  std::string("is a symbolic link to ") + kind_of(target_st.st_mode) + kNotRegular);
    char resolved[PATH_MAX];
    if (!::realpath(final_path.c_str(), resolved))
      throw Error(ErrorCode::Io, final_path, "",
                  "cannot resolve the symbolic link: " + errno_text(errno));
    t.target = resolved;
    st = target_st;
  } else if (!S_ISREG(st.st_mode)) {
    throw Error(ErrorCode::Io, final_path, "",
                std::string("is ") + kind_of(st.st_mode) + kNotRegular);
  }
  t.exists = true;
  t.mode = st.st_mode & 0777;
  return t;
}

// `.NAME.qpack-partial.PID.XXXXXX` of a process that is gone: a leftover of
// kill -9. Only this exact shape qualifies.
bool is_orphaned_partial(const std::string& entry, const std::string& prefix);

}  // namespace

bool is_orphaned_partial_name(const std::string& entry, const std::string& prefix) {
  return is_orphaned_partial(entry, prefix);
}

namespace {

bool is_orphaned_partial(const std::string& entry, const std::string& prefix) {
  if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string rest = entry.substr(prefix.size());
  const size_t dot = rest.find('.');
  if (dot == std::string::npos || dot == 0 || dot > 9 || rest.size() != dot + 7) return false;
  long pid = 0;
  for (size_t i = 0; i < dot; ++i) {
    if (rest[i] < '0' || rest[i] > '9') return false;
    pid = pid * 10 + (rest[i] - '0');
  }
  if (pid <= 0 || rest[0] == '0') return false;
  for (size_t i = dot + 1; i < rest.size(); ++i) {
    const char c = rest[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  }
  if (pid_t(pid) == ::getpid()) return false;
  return ::kill(pid_t(pid), 0) != 0 && errno == ESRCH;
}

// Best effort: a folder that cannot be listed keeps its leftovers.
void remove_orphaned_partials(const std::string& folder, const std::string& prefix) {
  DIR* d = ::opendir(folder.c_str());
  if (!d) return;
  const int dfd = ::dirfd(d);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (!is_orphaned_partial(name, prefix)) continue;
    struct stat st;
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
      (void)::unlinkat(dfd, name.c_str(), 0);
  }
  ::closedir(d);
}

}  // namespace

std::string partial_file_prefix(const std::string& output_name) {
  // 255-byte names: "." + NAME + ".qpack-partial." + up to 10 pid digits + ".XXXXXX".
  return "." + output_name.substr(0, 200) + ".qpack-partial.";
}

AtomicOutputFile::AtomicOutputFile(const std::string& final_path, bool overwrite)
    : final_path_(final_path), overwrite_(overwrite) {
  const std::string base = file_name(final_path);
  if (base.empty() || base == "." || base == "..")
    throw Error(ErrorCode::InvalidArgument, final_path, "", "not a file name");
  const OutputTarget target = inspect_output(final_path);
  if (!overwrite && target.exists)
    throw Error(ErrorCode::OutputExists, final_path, "", "output already exists");
  target_path_ = target.target;
  const std::string folder = parent_folder(target_path_);
  const std::string prefix = partial_file_prefix(file_name(target_path_));
  remove_orphaned_partials(folder, prefix);
  // The name is recorded for the signal handlers before the file exists, so
  // that no moment has the file on disk and unknown to them (mkostemp would
  // create it first); a name taken already is drawn again.
  std::random_device rd;
  static const char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  int err = EEXIST;
  for (int attempt = 0; attempt < 100 && err == EEXIST; ++attempt) {
    std::string name = folder + "/" + prefix + std::to_string(::getpid()) + ".";
    for (int i = 0; i < 6; ++i) name += kAlnum[rd() % (sizeof kAlnum - 1)];
    live_slot_ = live_files::add_temp_file(name);
    fd_ = ::open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ >= 0) {
      temp_path_ = name;
      break;
    }
    err = errno;
    live_files::remove_temp_file(live_slot_);
    live_slot_ = -1;
  }
  if (fd_ < 0)
    throw Error(is_disk_full(err) ? ErrorCode::DiskFull : ErrorCode::Io, final_path, "",
                "cannot create a temporary file in " + folder + ": " + errno_text(err));
  // A replaced file keeps its permissions; a new one gets what any new file
  // of this process would.
  (void)fchmod(fd_, target.exists ? target.mode : (0666 & ~current_umask()));
}

AtomicOutputFile::~AtomicOutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
  live_files::remove_temp_file(live_slot_);
}

namespace {

// Writes all of data to fd, at `offset` (pwrite) or, when offset < 0, at the
// file position (write), retrying on EINTR; a failure is Error(DiskFull/Io)
// naming the final path and the temporary file being written.
void write_all(int fd, const char* p, size_t size, int64_t offset, const std::string& final_path,
               const std::string& temp_path) {
  while (size > 0) {
    // Linux writes at most 0x7ffff000 bytes per call; asking for less keeps
    // every call a plain, complete request.
    const size_t chunk = std::min<size_t>(size, size_t(1) << 30);
    const ssize_t n = offset < 0 ? ::write(fd, p, chunk) : ::pwrite(fd, p, chunk, off_t(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      // The data came from a memory-mapped input whose pages vanished: that
      // file was truncated while being read (what SIGBUS says elsewhere).
      if (err == EFAULT)
        if (const char* input = live_files::mapping_path_at(p, chunk))
          throw Error(ErrorCode::Io, input, "",
                      "file changed while being read (truncated by another process)");
      throw Error(is_disk_full(err) ? ErrorCode::DiskFull : ErrorCode::Io, final_path, "",
                  std::string(is_disk_full(err) ? "disk full" : "write failed") + " writing " +
                      temp_path + ": " + errno_text(err));
    }
    if (n == 0)  // no progress and no error: treat like a full device
      throw Error(ErrorCode::DiskFull, final_path, "", "write made no progress on " + temp_path);
    p += n;
    size -= size_t(n);
    if (offset >= 0) offset += n;
  }
}

}  // namespace

void AtomicOutputFile::write(const void* data, size_t size) {
  if (fd_ < 0) throw Error(ErrorCode::Internal, final_path_, "", "write after commit");
  write_all(fd_, static_cast<const char*>(data), size, -1, final_path_, temp_path_);
  pos_ += uint64_t(size);
}

void AtomicOutputFile::write_zeros(uint64_t count) {
  static const char zeros[4096] = {};
  while (count > 0) {
    const size_t n = size_t(std::min<uint64_t>(count, sizeof zeros));
    write(zeros, n);
    count -= n;
  }
}

void AtomicOutputFile::pwrite_at(uint64_t offset, const void* data, size_t size) {
  if (fd_ < 0) throw Error(ErrorCode::Internal, final_path_, "", "write after commit");
  write_all(fd_, static_cast<const char*>(data), size, int64_t(offset), final_path_, temp_path_);
}

// ----------------------------------------------------------- FolderMemberFile

FolderMemberFile::FolderMemberFile(const std::string& path, const std::string& report_path)
    : path_(path), report_path_(report_path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0) {
    const int err = errno;
    throw Error(is_disk_full(err) ? ErrorCode::DiskFull : ErrorCode::Io, report_path, "",
                "cannot create " + path + ": " + errno_text(err));
  }
}

FolderMemberFile::~FolderMemberFile() {
  if (fd_ >= 0) ::close(fd_);
}

void FolderMemberFile::write(const void* data, size_t size) {
  if (fd_ < 0) throw Error(ErrorCode::Internal, report_path_, "", "write after close of " + path_);
  write_all(fd_, static_cast<const char*>(data), size, -1, report_path_, path_);
}

void FolderMemberFile::pwrite_at(uint64_t offset, const void* data, size_t size) {
  if (fd_ < 0) throw Error(ErrorCode::Internal, report_path_, "", "write after close of " + path_);
  write_all(fd_, static_cast<const char*>(data), size, int64_t(offset), report_path_, path_);
}

void FolderMemberFile::set_mode(unsigned mode) {
  if (fd_ >= 0 && fchmod(fd_, mode_t(mode & 07777)) != 0)
    throw Error(ErrorCode::Io, report_path_, "",
                "cannot set the permissions of " + path_ + ": " + errno_text(errno));
}

void FolderMemberFile::sync_and_close() {
  if (fd_ < 0) return;
  if (fsync(fd_) != 0) {
    const int err = errno;
    throw Error(is_disk_full(err) ? ErrorCode::DiskFull : ErrorCode::Io, report_path_, "",
                "fsync of " + path_ + " failed: " + errno_text(err));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    throw Error(is_disk_full(err) ? ErrorCode::DiskFull : ErrorCode::Io, report_path_, "",
                "close of " + path_ + " failed: " + errno_text(err));
  }
}

void AtomicOutputFile::commit() {
  if (committed_) return;
  if (fd_ < 0) throw Error(ErrorCode::Internal, final_path_, "", "commit without a file");
  // Delayed allocation can report a full disk only at fsync or close.
  if (fsync(fd_) != 0) {
    const int err = errno;
    throw Error(is_disk_full(err) ? ErrorCode::DiskFull : ErrorCode::Io, final_path_, "",
                "fsync of " + temp_path_ + " failed: " + errno_text(err));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    throw Error(is_disk_full(err) ? ErrorCode::DiskFull : ErrorCode::Io, final_path_, "",
                "close of " + temp_path_ + " failed: " + errno_text(err));
  }
  if (overwrite_) {
    // The path may have been replaced by something that is not a regular
    // file since the constructor looked; that is refused, not overwritten.
    (void)inspect_output(final_path_);
    if (::rename(temp_path_.c_str(), target_path_.c_str()) != 0)
      throw Error(ErrorCode::Io, final_path_, "",
                  "cannot rename " + temp_path_ + ": " + errno_text(errno));
  } else {
    // The output may have appeared since the constructor checked; never
    // replace it behind the user's back.
    if (renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, target_path_.c_str(), RENAME_NOREPLACE) !=
        0) {
      const int err = errno;
      if (err == EEXIST)
        throw Error(ErrorCode::OutputExists, final_path_, "", "output appeared while writing it");
      if (err != EINVAL && err != ENOSYS)
        throw Error(ErrorCode::Io, final_path_, "",
                    "cannot rename " + temp_path_ + ": " + errno_text(err));
      // The filesystem does not support RENAME_NOREPLACE: a checked rename.
      struct stat st;
      if (::lstat(target_path_.c_str(), &st) == 0)
        throw Error(ErrorCode::OutputExists, final_path_, "", "output appeared while writing it");
      if (::rename(temp_path_.c_str(), target_path_.c_str()) != 0)
        throw Error(ErrorCode::Io, final_path_, "",
                    "cannot rename " + temp_path_ + ": " + errno_text(errno));
    }
  }
  committed_ = true;
  live_files::remove_temp_file(live_slot_);
  live_slot_ = -1;
  // Makes the rename itself durable. Some filesystems cannot fsync a
  // directory; the data is already safe, so that is not an error.
  const int dfd = ::open(parent_folder(target_path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    ::close(dfd);
  }
}

// ------------------------------------------------------------------- helpers

void check_free_space(const std::string& final_path, uint64_t bytes_needed) {
  if (bytes_needed == 0) return;
  std::string target = final_path;
  char resolved[PATH_MAX];
  struct stat st;
  if (::lstat(final_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode) &&
      ::realpath(final_path.c_str(), resolved))
    target = resolved;
  const std::string folder = parent_folder(target);
  struct statvfs vfs;
  if (::statvfs(folder.c_str(), &vfs) != 0) return;
  const uint64_t free_bytes = uint64_t(vfs.f_bavail) * uint64_t(vfs.f_frsize);
  if (bytes_needed > free_bytes)
    throw Error(ErrorCode::DiskFull, folder, "",
                "not enough free space for " + final_path + ": it needs " +
                    std::to_string(bytes_needed) + " bytes (" + format_bytes(bytes_needed) +
                    "), the folder has " + std::to_string(free_bytes) + " bytes (" +
                    format_bytes(free_bytes) + ") free");
}

std::string read_text_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorCode::Io, path, "", "cannot open: " + errno_text(errno));
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::Io, path, "", "is a directory");
  }
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw Error(ErrorCode::Io, path, "", "read failed: " + errno_text(err));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace qpack
