#include "qpack/format/live_files.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>

namespace qpack::live_files {

namespace {

// A slot is free, being filled by one thread, or live; a signal handler reads
// only live slots. Every field a handler reads is written before the release
// store that makes the slot live.
enum : int { kFree = 0, kFilling = 1, kLive = 2 };

struct TempSlot {
  std::atomic<int> state{kFree};
  char path[PATH_MAX];
};

struct MappingSlot {
  std::atomic<int> state{kFree};
  uintptr_t begin = 0, end = 0;
  char path[1024];  // only for messages: a longer path is shortened
};

static_assert(std::atomic<int>::is_always_lock_free, "signal handlers need lock-free atomics");

// Sized for what one qpack process holds: a few outputs at a time, and every
// shard of a checkpoint plus a .qpack (zero pages until used).
TempSlot g_temp[64];
TempSlot g_folders[16];
MappingSlot g_maps[4096];

template <typename Slot, size_t N>
int claim(Slot (&table)[N]) noexcept {
  for (size_t i = 0; i < N; ++i) {
    int expected = kFree;
    if (table[i].state.compare_exchange_strong(expected, kFilling, std::memory_order_acquire))
      return int(i);
  }
  return -1;
}

}  // namespace

int add_temp_file(const std::string& path) noexcept {
  // A shortened path would unlink some other file: such a path is not stored.
  if (path.empty() || path.size() >= sizeof(TempSlot::path)) return -1;
  const int i = claim(g_temp);
  if (i < 0) return -1;
  std::memcpy(g_temp[i].path, path.c_str(), path.size() + 1);
  g_temp[i].state.store(kLive, std::memory_order_release);
  return i;
}

void remove_temp_file(int slot) noexcept {
  if (slot >= 0 && size_t(slot) < sizeof g_temp / sizeof g_temp[0])
    g_temp[slot].state.store(kFree, std::memory_order_release);
}

int add_temp_folder(const std::string& path) noexcept {
  if (path.empty() || path.size() >= sizeof(TempSlot::path)) return -1;
  const int i = claim(g_folders);
  if (i < 0) return -1;
  std::memcpy(g_folders[i].path, path.c_str(), path.size() + 1);
  g_folders[i].state.store(kLive, std::memory_order_release);
  return i;
}

void remove_temp_folder(int slot) noexcept {
  if (slot >= 0 && size_t(slot) < sizeof g_folders / sizeof g_folders[0])
    g_folders[slot].state.store(kFree, std::memory_order_release);
}

int add_mapping(const void* address, uint64_t length, const std::string& path) noexcept {
  if (!address || length == 0) return -1;
  const int i = claim(g_maps);
  if (i < 0) return -1;
  MappingSlot& s = g_maps[i];
  s.begin = reinterpret_cast<uintptr_t>(address);
  s.end = s.begin + uintptr_t(length);
  const size_t cap = sizeof s.path - 1;
  if (path.size() <= cap) {
    std::memcpy(s.path, path.c_str(), path.size() + 1);
  } else {  // keep the end, which names the file
    std::memcpy(s.path, "...", 3);
    std::memcpy(s.path + 3, path.c_str() + path.size() - (cap - 3), cap - 3);
    s.path[cap] = '\0';
  }
  s.state.store(kLive, std::memory_order_release);
  return i;
}

void remove_mapping(int slot) noexcept {
  if (slot >= 0 && size_t(slot) < sizeof g_maps / sizeof g_maps[0])
    g_maps[slot].state.store(kFree, std::memory_order_release);
}

namespace {

// The record getdents64(2) fills (the kernel's struct linux_dirent64).
struct DirEntry64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

// Removes the entries of `path` and then the folder, with raw system calls
// only: opendir/readdir allocate and are not async-signal-safe. Entries are
// read again from the start after each pass, since removing entries while
// reading a directory may skip some; a pass that removes nothing ends it.
void remove_folder_now(const char* path) noexcept {
  const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buf[4096];
  for (int pass = 0; pass < 1000; ++pass) {
    if (::lseek(fd, 0, SEEK_SET) != 0) break;
    bool removed = false;
    for (;;) {
      const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        const DirEntry64* e = reinterpret_cast<const DirEntry64*>(buf + off);
        off += e->d_reclen;
        const char* name = e->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
        if (::unlinkat(fd, name, 0) == 0) removed = true;
      }
    }
    if (!removed) break;
  }
  ::close(fd);
  (void)::rmdir(path);
}

}  // namespace

void unlink_temp_files() noexcept {
  for (TempSlot& s : g_temp)
    if (s.state.load(std::memory_order_acquire) == kLive) (void)::unlink(s.path);
  for (TempSlot& s : g_folders)
    if (s.state.load(std::memory_order_acquire) == kLive) remove_folder_now(s.path);
}

const char* mapping_path_at(const void* address, uint64_t length) noexcept {
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  const uintptr_t b = a + uintptr_t(length > 0 ? length : 1);
  for (MappingSlot& s : g_maps)
    if (s.state.load(std::memory_order_acquire) == kLive && a < s.end && s.begin < b) return s.path;
  return nullptr;
}

}  // namespace qpack::live_files
