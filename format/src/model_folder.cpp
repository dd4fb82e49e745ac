#include "qpack/format/model_folder.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <set>

#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/live_files.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

namespace {

using nlohmann::json;

std::string errno_text(int err) { return std::strerror(err); }

// "out/" and "out" name the same folder; "/" stays "/".
std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// Top-level names of a folder, sorted (so copies and reports are in a
// deterministic order). Error(Io) naming `folder` when it cannot be read.
std::vector<std::string> list_folder(const std::string& folder) {
  DIR* d = ::opendir(folder.c_str());
  if (!d) throw Error(ErrorCode::Io, folder, "", "cannot list the folder: " + errno_text(errno));
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

bool is_weights_name(const std::string& name) {
  static const char* const kWeights[] = {
      ".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".qpack"};
  for (const char* ext : kWeights)
    if (ends_with(name, ext)) return true;
  return false;
}

// Removes the regular files of `folder` (never following anything) and then
// the folder. Best effort: a folder holding anything else stays.
void remove_folder_files(const std::string& folder) {
  DIR* d = ::opendir(folder.c_str());
  if (!d) return;
  const int dfd = ::dirfd(d);
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  for (const std::string& name : names) {
    struct stat st;
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
      (void)::unlinkat(dfd, name.c_str(), 0);
  }
  ::closedir(d);
  (void)::rmdir(folder.c_str());
}

// A folder whose entries are all regular files (not followed through
// links), with config.json or a safetensors file among them: what overwrite
// may replace. Empty means "why not" is empty; otherwise the reason.
std::string why_not_model_folder(const std::string& folder) {
  DIR* d = ::opendir(folder.c_str());
  if (!d) return "cannot be listed: " + errno_text(errno);
  const int dfd = ::dirfd(d);
  bool model_file = false;
  std::string reason;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      reason = "cannot stat '" + name + "': " + errno_text(errno);
      break;
    }
    if (!S_ISREG(st.st_mode)) {
      reason = "holds '" + name + "', which is not a regular file";
      break;
    }
    if (name == "config.json" || ends_with(name, ".safetensors")) model_file = true;
  }
  ::closedir(d);
  if (reason.empty() && !model_file) reason = "holds neither config.json nor a .safetensors file";
  return reason;
}

// What sits at the final path before the writer starts.
enum class Existing { Absent, EmptyFolder, ModelFolder };

const char* const kUntouched =
    " (a model folder output must be absent, an empty directory, or with overwrite a model "
    "folder; left untouched)";

Existing inspect_final(const std::string& final_path, bool overwrite, mode_t* mode) {
  struct stat st;
  if (::lstat(final_path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return Existing::Absent;
    throw Error(ErrorCode::Io, final_path, "", "cannot access: " + errno_text(err));
  }
  *mode = st.st_mode & 07777;
  if (S_ISLNK(st.st_mode))
    throw Error(ErrorCode::Io, final_path, "", std::string("is a symbolic link") + kUntouched);
  if (!S_ISDIR(st.st_mode))
    throw Error(
        ErrorCode::Io, final_path, "",
        std::string(S_ISREG(st.st_mode) ? "is a regular file" : "is not a directory") + kUntouched);
  if (list_folder(final_path).empty()) return Existing::EmptyFolder;
  const std::string why = why_not_model_folder(final_path);
  if (!why.empty())
    throw Error(ErrorCode::Io, final_path, "",
                "is a directory that is not a model folder: " + why + kUntouched);
  if (!overwrite)
    throw Error(ErrorCode::OutputExists, final_path, "",
                "output already exists (a model folder; overwrite replaces it)");
  return Existing::ModelFolder;
}

// `.NAME.qpack-partial.PID.XXXXXX` folders of dead processes beside the
// output: removed when they hold only regular files, as a writer leaves them.
void remove_orphaned_partial_folders(const std::string& parent, const std::string& prefix) {
  DIR* d = ::opendir(parent.c_str());
  if (!d) return;
  const int dfd = ::dirfd(d);
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (!is_orphaned_partial_name(name, prefix)) continue;
    struct stat st;
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
      stale.push_back(name);
  }
  ::closedir(d);
  for (const std::string& name : stale) {
    const std::string path = parent + "/" + name;
    std::vector<std::string> names;
    try {
      names = list_folder(path);
    } catch (const Error&) {
      continue;  // best effort: an unreadable leftover stays
    }
    bool only_files = true;
    for (const std::string& n : names) {
      struct stat st;
      if (::lstat((path + "/" + n).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) only_files = false;
    }
    if (only_files) remove_folder_files(path);
  }
}

void fsync_folder(const std::string& folder) {
  // Some filesystems cannot fsync a directory; the data is safe already.
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

std::string shard_name(size_t i, size_t n) {
  if (n == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

struct CopyFile {
  std::string name, source;
  uint64_t size = 0;
  mode_t mode = 0;
};

constexpr const char* kIndexName = "model.safetensors.index.json";

}  // namespace

struct ModelFolderWriter::Impl {
  std::string final_path, parent, temp_path;
  ModelFolderOptions options;
  std::vector<FolderTensor> tensors;
  std::vector<size_t> shard_of;       // per tensor
  std::vector<uint64_t> file_offset;  // per tensor: where its bytes start in its shard
  std::vector<std::string> shard_names;
  std::vector<std::unique_ptr<FolderMemberFile>> shards;
  std::vector<CopyFile> copies;
  std::vector<std::string> skipped, copied;
  uint64_t tensor_bytes = 0;
  Existing existing = Existing::Absent;
  mode_t existing_mode = 0;
  int live_slot = -1;
  bool committed = false;

  std::mutex mu;  // guards coverage and failed
  // Per tensor: written ranges [begin, end) keyed by begin, adjacent ones merged.
  std::vector<std::map<uint64_t, uint64_t>> coverage;
  bool failed = false;

  void validate();
  void plan_shards();
  void scan_copy_source();
  void create_temp_folder();
  void write_member(const std::string& name, const std::string& contents);
  void copy_member(const CopyFile& c);
  void rename_into_place();
};

void ModelFolderWriter::Impl::validate() {
  const std::string base = file_name(final_path);
  if (base.empty() || base == "." || base == "..")
    throw Error(ErrorCode::InvalidArgument, final_path, "", "not a folder name");
  if (options.max_shard_bytes == 0)
    throw Error(ErrorCode::InvalidArgument, final_path, "", "the largest shard size must be > 0");
  std::set<std::string> names;
  for (const FolderTensor& t : tensors) {
    if (t.name.empty())
      throw Error(ErrorCode::InvalidArgument, final_path, t.name, "empty tensor name");
    if (!names.insert(t.name).second)
      throw Error(ErrorCode::InvalidArgument, final_path, t.name, "tensor name given twice");
  }
  std::set<std::string> files;
  for (const auto& [name, contents] : options.generated_files) {
    (void)contents;
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
        name.find('\0') != std::string::npos)
      throw Error(ErrorCode::InvalidArgument, final_path, "",
                  "generated file name '" + name + "' is not a plain file name");
    if (!files.insert(name).second)
      throw Error(ErrorCode::InvalidArgument, final_path, "",
                  "generated file '" + name + "' given twice");
    if (name == "config.json" && !options.config.is_null())
      throw Error(ErrorCode::InvalidArgument, final_path, "",
                  "config.json is both the config and a generated file");
    if (is_weights_name(name))
      throw Error(ErrorCode::InvalidArgument, final_path, "",
                  "generated file '" + name + "' has a weights name (the writer writes those)");
  }
  if (!options.metadata.count("format")) options.metadata["format"] = "pt";
}

void ModelFolderWriter::Impl::plan_shards() {
  // Declared order; a new shard when the next tensor would not fit in the
  // current one, so a tensor larger than the limit sits alone.
  size_t shard = 0;
  uint64_t in_shard = 0;
  bool shard_empty = true;
  shard_of.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t n = tensors[i].nbytes;
    if (!shard_empty && (n > options.max_shard_bytes || in_shard > options.max_shard_bytes - n)) {
      ++shard;
      in_shard = 0;
    }
    shard_of[i] = shard;
    in_shard += n;
    shard_empty = false;
    tensor_bytes += n;  // sizes were checked against their shapes below
  }
  const size_t n_shards = shard + 1;
  for (size_t s = 0; s < n_shards; ++s) shard_names.push_back(shard_name(s, n_shards));
}

const std::vector<std::string>& quantization_side_files() {
  static const std::vector<std::string> names = {"quantize_config.json", "quant_config.json"};
  return names;
}

void ModelFolderWriter::Impl::scan_copy_source() {
  const std::string& src = options.copy_files_from;
  if (src.empty()) return;
  if (!is_directory(src))
    throw Error(ErrorCode::Io, src, "", "the folder to copy files from is not a directory");
  std::set<std::string> written;
  for (const auto& g : options.generated_files) written.insert(g.first);
  for (const std::string& name : options.exclude_files) written.insert(name);
  for (const std::string& name : list_folder(src)) {
    if (name[0] == '.' || is_weights_name(name) || name == "config.json" || written.count(name))
      continue;
    const std::string path = src + "/" + name;
    struct stat st;  // a link to a regular file is copied as that file (HF cache snapshots)
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      skipped.push_back(name);
      continue;
    }
    copies.push_back({name, path, uint64_t(st.st_size), st.st_mode & 07777});
    copied.push_back(name);
  }
}

void ModelFolderWriter::Impl::create_temp_folder() {
  const std::string prefix = partial_file_prefix(file_name(final_path));
  // Recorded for the signal handlers before it exists, as AtomicOutputFile
  // does with its file; a name taken already is drawn again.
  std::random_device rd;
  static const char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  int err = EEXIST;
  for (int attempt = 0; attempt < 100 && err == EEXIST; ++attempt) {
    std::string name = parent + "/" + prefix + std::to_string(::getpid()) + ".";
    for (int i = 0; i < 6; ++i) name += kAlnum[rd() % (sizeof kAlnum - 1)];
    live_slot = live_files::add_temp_folder(name);
    if (::mkdir(name.c_str(), 0777) == 0) {
      temp_path = name;
      break;
    }
    err = errno;
    live_files::remove_temp_folder(live_slot);
    live_slot = -1;
  }
  if (temp_path.empty())
    throw Error(err == ENOSPC || err == EDQUOT ? ErrorCode::DiskFull : ErrorCode::Io, final_path,
                "", "cannot create a temporary folder in " + parent + ": " + errno_text(err));
  // A replaced folder keeps its permission bits; a new one gets what mkdir
  // gave (0777 & ~umask).
  if (existing != Existing::Absent) (void)::chmod(temp_path.c_str(), existing_mode);
}

void ModelFolderWriter::Impl::write_member(const std::string& name, const std::string& contents) {
  FolderMemberFile f(temp_path + "/" + name, final_path);
  f.write(contents.data(), contents.size());
  f.sync_and_close();
}

void ModelFolderWriter::Impl::copy_member(const CopyFile& c) {
  const int in = ::open(c.source.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw Error(ErrorCode::Io, c.source, "", "cannot open: " + errno_text(errno));
  try {
    FolderMemberFile f(temp_path + "/" + c.name, final_path);
    std::vector<char> buf(size_t(1) << 20);
    for (;;) {
      const ssize_t n = ::read(in, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Error(ErrorCode::Io, c.source, "", "read failed: " + errno_text(errno));
      }
      if (n == 0) break;
      f.write(buf.data(), size_t(n));
    }
    f.set_mode(c.mode);
    f.sync_and_close();
  } catch (...) {
    ::close(in);
    throw;
  }
  ::close(in);
}

void ModelFolderWriter::Impl::rename_into_place() {
  const char* from = temp_path.c_str();
  const char* to = final_path.c_str();
  if (existing == Existing::ModelFolder) {
    // The path may have changed since the constructor looked; only a model
    // folder is ever replaced.
    mode_t mode = 0;
    if (inspect_final(final_path, true, &mode) == Existing::ModelFolder) {
      // One atomic step: the new folder takes the name, the old one takes
      // the temporary name (still recorded for the signal handlers) and is
      // removed after.
      if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE) == 0) {
        remove_folder_files(temp_path);
        return;
      }
      const int err = errno;
      if (err != EINVAL && err != ENOSYS)
        throw Error(ErrorCode::Io, final_path, "",
                    "cannot exchange " + temp_path + " with it: " + errno_text(err));
      // No RENAME_EXCHANGE here: the old folder moves aside first, under a
      // name a later run recognises as a leftover if this one dies now.
      std::string aside = temp_path;
      aside.back() = aside.back() == 'x' ? 'y' : 'x';
      const int aside_slot = live_files::add_temp_folder(aside);
      if (::rename(to, aside.c_str()) != 0) {
        live_files::remove_temp_folder(aside_slot);
        throw Error(ErrorCode::Io, final_path, "",
                    "cannot move the old folder aside to " + aside + ": " + errno_text(errno));
      }
      if (::rename(from, to) != 0) {
        const int err2 = errno;
        (void)::rename(aside.c_str(), to);  // put the old folder back
        live_files::remove_temp_folder(aside_slot);
        throw Error(ErrorCode::Io, final_path, "",
                    "cannot rename " + temp_path + ": " + errno_text(err2));
      }
      remove_folder_files(aside);
      live_files::remove_temp_folder(aside_slot);
      return;
    }
    // It became an empty folder (inspect_final refuses anything else).
  }
  // rename(2) replaces an empty directory and fails on a non-empty one; an
  // absent name may have appeared meanwhile, and is never replaced.
  struct stat st;
  const bool present = ::lstat(to, &st) == 0;
  int rc = present ? ::rename(from, to) : renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
  if (rc != 0 && !present && (errno == EINVAL || errno == ENOSYS)) {
    if (::lstat(to, &st) == 0)
      throw Error(ErrorCode::OutputExists, final_path, "", "output appeared while writing it");
    rc = ::rename(from, to);
  }
  if (rc != 0) {
    const int err = errno;
    if (err == EEXIST || err == ENOTEMPTY)
      throw Error(ErrorCode::OutputExists, final_path, "", "output appeared while writing it");
    throw Error(ErrorCode::Io, final_path, "",
                "cannot rename " + temp_path + ": " + errno_text(err));
  }
}

ModelFolderWriter::ModelFolderWriter(const std::string& out_dir, std::vector<FolderTensor> tensors,
                                     ModelFolderOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.final_path = strip_trailing_slashes(out_dir);
  m.parent = parent_folder(m.final_path);
  m.tensors = std::move(tensors);
  m.options = std::move(options);
  m.validate();
  m.plan_shards();

  // Every shard's header, validated before anything exists on disk.
  std::vector<std::string> prefixes(m.shard_names.size());
  {
    std::vector<std::vector<TensorToWrite>> declared(m.shard_names.size());
    for (size_t i = 0; i < m.tensors.size(); ++i) {
      const FolderTensor& t = m.tensors[i];
      declared[m.shard_of[i]].push_back({t.name, t.dtype, t.shape, nullptr, t.nbytes});
    }
    m.file_offset.resize(m.tensors.size());
    std::vector<uint64_t> next(m.shard_names.size());
    for (size_t s = 0; s < declared.size(); ++s) {
      uint64_t data_bytes = 0;
      prefixes[s] = safetensors_file_prefix(m.final_path + "/" + m.shard_names[s], declared[s],
                                            m.options.metadata, &data_bytes);
      next[s] = prefixes[s].size();
    }
    for (size_t i = 0; i < m.tensors.size(); ++i) {
      m.file_offset[i] = next[m.shard_of[i]];
      next[m.shard_of[i]] += m.tensors[i].nbytes;
    }
  }

  m.existing = inspect_final(m.final_path, m.options.overwrite, &m.existing_mode);
  m.scan_copy_source();

  unsigned long long needed = m.tensor_bytes;
  for (const std::string& p : prefixes) needed += p.size();
  if (!m.options.config.is_null()) needed += m.options.config.dump(2).size() + 1;
  for (const auto& g : m.options.generated_files) needed += g.second.size();
  for (const CopyFile& c : m.copies) needed += c.size;
  if (m.shard_names.size() > 1) needed += 64 + 96 * m.tensors.size();  // about the index
  check_free_space(m.final_path, needed);

  remove_orphaned_partial_folders(m.parent, partial_file_prefix(file_name(m.final_path)));
  m.create_temp_folder();
  try {
    for (size_t s = 0; s < m.shard_names.size(); ++s) {
      m.shards.push_back(
          std::make_unique<FolderMemberFile>(m.temp_path + "/" + m.shard_names[s], m.final_path));
      m.shards.back()->write(prefixes[s].data(), prefixes[s].size());
    }
  } catch (...) {
    m.shards.clear();
    remove_folder_files(m.temp_path);
    live_files::remove_temp_folder(m.live_slot);
    throw;
  }
  m.coverage.resize(m.tensors.size());
}

ModelFolderWriter::~ModelFolderWriter() {
  if (!impl_) return;
  impl_->shards.clear();  // closes
  if (!impl_->committed && !impl_->temp_path.empty()) remove_folder_files(impl_->temp_path);
  live_files::remove_temp_folder(impl_->live_slot);
}

const std::vector<FolderTensor>& ModelFolderWriter::tensors() const { return impl_->tensors; }
const std::vector<std::string>& ModelFolderWriter::shard_names() const {
  return impl_->shard_names;
}
size_t ModelFolderWriter::shard_of(size_t tensor) const { return impl_->shard_of.at(tensor); }
const std::string& ModelFolderWriter::final_path() const { return impl_->final_path; }
const std::string& ModelFolderWriter::temp_path() const { return impl_->temp_path; }
const std::vector<std::string>& ModelFolderWriter::skipped() const { return impl_->skipped; }
const std::vector<std::string>& ModelFolderWriter::copied() const { return impl_->copied; }
uint64_t ModelFolderWriter::tensor_bytes() const { return impl_->tensor_bytes; }

void ModelFolderWriter::write(size_t tensor, uint64_t offset, const void* data, uint64_t nbytes) {
  Impl& m = *impl_;
  if (m.committed) throw Error(ErrorCode::Internal, m.final_path, "", "write after commit");
  if (tensor >= m.tensors.size())
    throw Error(ErrorCode::InvalidArgument, m.final_path, "",
                "tensor index " + std::to_string(tensor) + " was not declared");
  const FolderTensor& t = m.tensors[tensor];
  if (offset > t.nbytes || nbytes > t.nbytes - offset)
    throw Error(ErrorCode::InvalidArgument, m.final_path, t.name,
                "bytes [" + std::to_string(offset) + ", " + std::to_string(offset + nbytes) +
                    ") run past the tensor's " + std::to_string(t.nbytes) + " bytes");
  if (nbytes == 0) return;
  if (data == nullptr) throw Error(ErrorCode::InvalidArgument, m.final_path, t.name, "null data");
  {
    std::lock_guard<std::mutex> lock(m.mu);
    auto& cov = m.coverage[tensor];
    const uint64_t end = offset + nbytes;
    auto next = cov.lower_bound(offset);  // first range starting at or after offset
    if (next != cov.end() && next->first < end)
      throw Error(ErrorCode::InvalidArgument, m.final_path, t.name,
                  "bytes [" + std::to_string(offset) + ", " + std::to_string(end) +
                      ") overlap bytes written before, from " + std::to_string(next->first));
    auto prev = next == cov.begin() ? cov.end() : std::prev(next);
    if (prev != cov.end() && prev->second > offset)
      throw Error(ErrorCode::InvalidArgument, m.final_path, t.name,
                  "bytes [" + std::to_string(offset) + ", " + std::to_string(end) +
                      ") overlap bytes written before, up to " + std::to_string(prev->second));
    uint64_t begin = offset, stop = end;
    if (prev != cov.end() && prev->second == offset) {
      begin = prev->first;
      cov.erase(prev);
    }
    if (next != cov.end() && next->first == end) {
      stop = next->second;
      cov.erase(next);
    }
    cov[begin] = stop;
  }
  try {
    m.shards[m.shard_of[tensor]]->pwrite_at(m.file_offset[tensor] + offset, data, size_t(nbytes));
  } catch (...) {
    std::lock_guard<std::mutex> lock(m.mu);
    m.failed = true;  // the range counts as written: commit must not pass
    throw;
  }
}

void ModelFolderWriter::commit() {
  Impl& m = *impl_;
  if (m.committed) throw Error(ErrorCode::Internal, m.final_path, "", "committed twice");
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.failed)
      throw Error(ErrorCode::Internal, m.final_path, "",
                  "a write failed; the folder is incomplete");
    for (size_t i = 0; i < m.tensors.size(); ++i) {
      const FolderTensor& t = m.tensors[i];
      if (t.nbytes == 0) continue;
      const auto& cov = m.coverage[i];
      if (cov.size() == 1 && cov.begin()->first == 0 && cov.begin()->second == t.nbytes) continue;
      uint64_t missing = 0;  // the first byte not written
      if (!cov.empty() && cov.begin()->first == 0) missing = cov.begin()->second;
      throw Error(ErrorCode::InvalidArgument, m.final_path, t.name,
                  "not all bytes written: byte " + std::to_string(missing) + " of " +
                      std::to_string(t.nbytes) + " is missing");
    }
  }
  for (auto& s : m.shards) s->sync_and_close();
  if (m.shard_names.size() > 1) {
    json index = {{"metadata", {{"total_size", m.tensor_bytes}}}, {"weight_map", json::object()}};
    for (size_t i = 0; i < m.tensors.size(); ++i)
      index["weight_map"][m.tensors[i].name] = m.shard_names[m.shard_of[i]];
    m.write_member(kIndexName, index.dump(2) + "\n");
  }
  if (!m.options.config.is_null()) m.write_member("config.json", m.options.config.dump(2) + "\n");
  for (const auto& [name, contents] : m.options.generated_files) m.write_member(name, contents);
  for (const CopyFile& c : m.copies) m.copy_member(c);
  fsync_folder(m.temp_path);
  m.rename_into_place();
  m.committed = true;
  live_files::remove_temp_folder(m.live_slot);
  m.live_slot = -1;
  fsync_folder(m.parent);
}

}  // namespace qpack
