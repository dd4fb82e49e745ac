// AtomicOutputFile and MappedFile as the hostile cases of issue #12 meet
// them: outputs that are not regular files, symbolic links, kept
// permissions, leftovers of killed processes, a folder without room, an input
// truncated under its map, and the records a signal handler walks.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/live_files.hpp"
#include "testutil.hpp"

using namespace qpack;
using qpack::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

struct stat lstat_of(const std::string& path) {
  struct stat st;
  std::memset(&st, 0, sizeof st);
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

// A pid that belonged to a process which has exited and been reaped.
pid_t dead_pid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
}

// A bound AF_UNIX socket at `path` (its file stays after close).
bool make_socket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return false;
  std::strcpy(addr.sun_path, path.c_str());
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

struct NonRegular {
  const char* kind;  // what the error must say
  std::function<bool(const std::string& dir, const std::string& path)> make;
};

std::vector<NonRegular> non_regular_outputs() {
  return {
      {"a directory", [](auto&, auto& p) { return ::mkdir(p.c_str(), 0755) == 0; }},
      {"a FIFO", [](auto&, auto& p) { return ::mkfifo(p.c_str(), 0644) == 0; }},
      {"a socket", [](auto&, auto& p) { return make_socket(p); }},
      // /dev/null's numbers, in the test's own folder (needs root).
      {"a character device",
       [](auto&, auto& p) { return ::mknod(p.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0; }},
      {"a dangling symbolic link",
       [](auto& d, auto& p) { return ::symlink((d + "/nothing-here").c_str(), p.c_str()) == 0; }},
      {"a symbolic link to a FIFO",
       [](auto& d, auto& p) {
         return ::mkfifo((d + "/fifo-target").c_str(), 0644) == 0 &&
                ::symlink("fifo-target", p.c_str()) == 0;
       }},
      {"a symbolic link to a directory",
       [](auto& d, auto& p) {
         return ::mkdir((d + "/dir-target").c_str(), 0755) == 0 &&
                ::symlink("dir-target", p.c_str()) == 0;
       }},
  };
}

}  // namespace

TEST(AtomicOutputFileTarget, RefusesEveryOutputThatIsNotARegularFileAndLeavesItUntouched) {
  for (const NonRegular& c : non_regular_outputs()) {
    for (const bool overwrite : {false, true}) {
      TempDir dir;
      const std::string out = dir.file("out.bin");
      if (!c.make(dir.path(), out)) {
        if (std::string(c.kind) == "a character device") {
          std::printf("[  SKIPPED ] mknod not permitted here: %s\n", std::strerror(errno));
          continue;
        }
        FAIL() << "cannot make " << c.kind << ": " << std::strerror(errno);
      }
      const struct stat before = lstat_of(out);
      const std::vector<std::string> listing = entries(dir.path());
      SCOPED_TRACE(std::string(c.kind) + (overwrite ? " with overwrite" : ""));
      try {
        AtomicOutputFile f(out, overwrite);
        ADD_FAILURE() << "accepted " << c.kind;
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::Io) << e.what();
        EXPECT_EQ(exit_code_for(e.code()), kExitIo);
        EXPECT_EQ(e.file(), out);
        EXPECT_NE(std::string(e.what()).find(c.kind), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("must be a regular file or absent"), std::string::npos)
            << e.what();
      }
      const struct stat after = lstat_of(out);
      EXPECT_EQ(after.st_mode, before.st_mode);
      EXPECT_EQ(after.st_ino, before.st_ino);
      EXPECT_EQ(after.st_rdev, before.st_rdev);
      EXPECT_EQ(entries(dir.path()), listing) << "no temporary file, nothing replaced";
    }
  }
}

TEST(AtomicOutputFileTarget, SymlinkToARegularFileReplacesTheTargetAndKeepsTheLink) {
  TempDir dir;
  fs::create_directories(dir.file("real"));
  const std::string target = dir.file("real/model.bin"), link = dir.file("out.bin");
  test::write_file(target, "old");
  ASSERT_EQ(::chmod(target.c_str(), 0640), 0);
  ASSERT_EQ(::symlink("real/model.bin", link.c_str()), 0);
  try {
    AtomicOutputFile f(link, /*overwrite=*/false);
    ADD_FAILURE() << "replaced an existing file without overwrite";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::OutputExists) << e.what();
  }
  {
    AtomicOutputFile f(link, /*overwrite=*/true);
    // Written beside the target: the rename stays on one filesystem.
    EXPECT_EQ(fs::path(f.temp_path()).parent_path(), fs::canonical(dir.file("real")));
    EXPECT_EQ(f.target_path(), fs::canonical(target).string());
    f.write("new", 3);
    f.commit();
  }
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(fs::read_symlink(link), "real/model.bin");
  const auto bytes = test::read_file(target);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "new");
  EXPECT_EQ(lstat_of(target).st_mode & 0777, 0640u);
  EXPECT_EQ(entries(dir.file("real")), std::vector<std::string>{"model.bin"});
}

TEST(AtomicOutputFileTarget, ReplacingAFileKeepsItsPermissionBits) {
  TempDir dir;
  const std::string out = dir.file("out.bin");
  for (const mode_t mode : {0600, 0640, 0755, 0444}) {
    test::write_file(out, "old");
    ASSERT_EQ(::chmod(out.c_str(), mode), 0);
    AtomicOutputFile f(out, /*overwrite=*/true);
    f.write("new", 3);
    f.commit();
    EXPECT_EQ(lstat_of(out).st_mode & 07777, mode);
  }
}

TEST(AtomicOutputFileLeftovers, TempNameSaysWhatItIsAndWhichProcessOwnsIt) {
  TempDir dir;
  AtomicOutputFile f(dir.file("model.qpack"), false);
  const std::string name = fs::path(f.temp_path()).filename().string();
  const std::string prefix = ".model.qpack.qpack-partial." + std::to_string(getpid()) + ".";
  EXPECT_EQ(name.rfind(prefix, 0), 0u) << name;
  EXPECT_EQ(name.size(), prefix.size() + 6) << name;
  EXPECT_EQ(partial_file_prefix("model.qpack"), ".model.qpack.qpack-partial.");
}

TEST(AtomicOutputFileLeftovers, RemovesOnlyPartialFilesOfTheSameOutputWhoseProcessIsGone) {
  TempDir dir;
  const pid_t dead = dead_pid();
  ASSERT_NE(kill(dead, 0), 0);
  const std::string p = ".out.bin.qpack-partial.";
  const std::string d = std::to_string(dead);
  const std::string orphan = p + d + ".aB3xYz";                       // removed
  const std::string live = p + std::to_string(getpid()) + ".aB3xYz";  // its owner runs
  const std::string parent = p + std::to_string(getppid()) + ".Qq1234";
  const std::vector<std::string> kept_files = {
      live,
      parent,
      p + d + ".abc",                               // not the exact pattern
      p + d + ".abcdefg",                           // not the exact pattern
      p + d + ".ab-def",                            // not the exact pattern
      p + "0" + d + ".abcdef",                      // a leading zero is not how a pid is written
      p + "x" + d + ".abcdef",                      // not a pid
      ".other.bin.qpack-partial." + d + ".abcdef",  // another output's
      ".out.bin.tmp-abcdef",                        // not ours to judge
      "out.bin.qpack-partial." + d + ".abcdef",     // not hidden: not a temp name
  };
  test::write_file(dir.file(orphan), "partial");
  for (const auto& k : kept_files) test::write_file(dir.file(k), "keep");
  // A directory and a symbolic link with a dead owner's name are left alone.
  const std::string dir_entry = p + d + ".dirdir", link_entry = p + d + ".linkln";
  fs::create_directories(dir.file(dir_entry));
  ASSERT_EQ(::symlink("out.bin", dir.file(link_entry).c_str()), 0);

  {
    AtomicOutputFile f(dir.file("out.bin"), false);
    f.write("x", 1);
    f.commit();
  }
  EXPECT_FALSE(fs::exists(dir.file(orphan)));
  for (const auto& k : kept_files) EXPECT_TRUE(fs::exists(dir.file(k))) << k;
  EXPECT_TRUE(fs::is_directory(dir.file(dir_entry)));
  EXPECT_TRUE(fs::is_symlink(dir.file(link_entry)));
}

TEST(LiveFiles, TempFilesAreRecordedUntilCommittedOrRemoved) {
  TempDir dir;
  std::string temp;
  {
    AtomicOutputFile f(dir.file("a.bin"), false);
    temp = f.temp_path();
    ASSERT_TRUE(fs::exists(temp));
    // What a SIGTERM handler does.
    live_files::unlink_temp_files();
    EXPECT_FALSE(fs::exists(temp));
  }
  // Committed files are no longer recorded: the handler must not touch them
  // (or a later file that reuses the name).
  {
    AtomicOutputFile f(dir.file("b.bin"), false);
    temp = f.temp_path();
    f.write("b", 1);
    f.commit();
  }
  test::write_file(temp, "someone else's");
  live_files::unlink_temp_files();
  EXPECT_TRUE(fs::exists(temp));
  EXPECT_TRUE(fs::exists(dir.file("b.bin")));
}

TEST(LiveFiles, MappingsAreRecordedWhileMapped) {
  TempDir dir;
  const std::string path = dir.file("input.bin");
  test::write_file(path, std::string(10000, 'x'));
  const uint8_t* begin = nullptr;
  {
    MappedFile m(path);
    begin = m.data();
    ASSERT_NE(live_files::mapping_path_at(begin + 9999), nullptr);
    EXPECT_EQ(std::string(live_files::mapping_path_at(begin + 9999)), path);
    EXPECT_EQ(live_files::mapping_path_at(begin + 10000), nullptr);
    MappedFile moved = std::move(m);
    EXPECT_EQ(std::string(live_files::mapping_path_at(begin)), path);
  }
  EXPECT_EQ(live_files::mapping_path_at(begin), nullptr);
}

TEST(MappedFileTruncation, WritingFromTheLostPagesNamesTheTruncatedInput) {
  // Data copied by write(2) from pages a truncation removed fails with
  // EFAULT rather than SIGBUS: the error must still name the input.
  TempDir dir;
  const std::string input = dir.file("shard.safetensors");
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  test::write_file(input, std::string(8 * page, 'x'));
  MappedFile m(input);
  ASSERT_EQ(::truncate(input.c_str(), 0), 0);
  AtomicOutputFile out(dir.file("out.bin"), false);
  try {
    out.write(m.data() + 4 * page, 2 * page);
    ADD_FAILURE() << "wrote bytes of a truncated file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_EQ(e.file(), input) << e.what();
    EXPECT_NE(std::string(e.what()).find("file changed while being read"), std::string::npos)
        << e.what();
  }
}

namespace {

// A 1 MiB tmpfs mounted on a fresh folder, when this process may mount.
class SmallTmpfs {
 public:
  SmallTmpfs() {
    mounted_ = ::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, "size=1m") == 0;
    if (!mounted_) reason_ = std::strerror(errno);
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& reason() const { return reason_; }
  std::string file(const std::string& name) const { return dir_.file(name); }
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string reason_;
};

}  // namespace

TEST(FreeSpace, AnOutputThatDoesNotFitIsRefusedNamingTheFolderAndBothSizes) {
  SmallTmpfs fs1;
  if (!fs1.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << fs1.reason();
  const std::string out = fs1.file("out.qpack");
  check_free_space(out, 64 * 1024);  // fits
  const uint64_t needed = 3u << 20;
  try {
    check_free_space(out, needed);
    FAIL() << "3 MiB fit in a 1 MiB tmpfs";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::DiskFull);
    EXPECT_EQ(exit_code_for(e.code()), kExitIo);
    EXPECT_EQ(e.file(), fs1.path());
    const std::string w = e.what();
    EXPECT_NE(w.find(std::to_string(needed) + " bytes"), std::string::npos) << w;
    EXPECT_NE(w.find("1048576 bytes"), std::string::npos) << w;  // all of it free
  }
  // Through a symbolic link the target's folder counts.
  TempDir elsewhere;
  test::write_file(fs1.file("target.qpack"), "t");
  const std::string link = elsewhere.file("link.qpack");
  ASSERT_EQ(::symlink(fs1.file("target.qpack").c_str(), link.c_str()), 0);
  EXPECT_THROW(check_free_space(link, needed), Error);
  check_free_space(elsewhere.file("plain.qpack"), needed);  // the big disk
}
