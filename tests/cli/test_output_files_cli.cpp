// What convert and dequantize do with the output path (issue #12 item 1 and
// the free-space check): only a regular file or nothing may sit there; a
// symbolic link to a regular file is replaced through; a replaced file keeps
// its mode; an output that cannot fit is refused before any work; leftovers
// of killed runs to the same output are cleaned.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "testutil.hpp"

using namespace qpack;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> hidden_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (!n.empty() && n[0] == '.') out.push_back(n);
  }
  return out;
}

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

class OutputFilesCli : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("model");
    fs::create_directories(model_);
    test::run_testgen("llama " + model_ + " --hidden 64 --intermediate 128 --layers 1 --vocab 256");
    qpack_ = dir_.file("model.qpack");
    const auto r = test::run_qpack("convert " + model_ + " " + qpack_ + " -q");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // "convert MODEL OUT" or "dequantize MODEL.qpack OUT", with `flags`.
  // These are the single-file writer's rules, so dequantize is told to write
  // one file (an existing directory would otherwise be a folder output: the
  // folder rules are in test_dequantize_folder_cli.cpp).
  test::CommandResult run(const std::string& command, const std::string& out,
                          const std::string& flags) {
    const std::string input = command == "convert" ? model_ : qpack_;
    return test::run_qpack(command + " " + input + " '" + out + "' -q " + flags +
                           (command == "dequantize" ? " --format safetensors" : ""));
  }
  test::TempDir dir_;
  std::string model_, qpack_;
};

}  // namespace

TEST_F(OutputFilesCli, ConvertAndDequantizeRefuseOutputsThatAreNotRegularFiles) {
  for (const std::string command : {"convert", "dequantize"}) {
    for (const std::string force : {"", "--force"}) {
      test::TempDir out_dir;
      struct Case {
        std::string name, kind;
        bool made;
      };
      const std::string d = out_dir.path();
      std::vector<Case> cases = {
          {"dir", "is a directory", ::mkdir((d + "/dir").c_str(), 0755) == 0},
          {"fifo", "is a FIFO", ::mkfifo((d + "/fifo").c_str(), 0644) == 0},
          {"sock", "is a socket", make_socket(d + "/sock")},
          {"null", "is a character device",
           ::mknod((d + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0},
          {"dangling", "is a dangling symbolic link",
           ::symlink("missing", (d + "/dangling").c_str()) == 0},
          {"to-null", "is a symbolic link to a character device",
           ::symlink("null", (d + "/to-null").c_str()) == 0},
      };
      for (const Case& c : cases) {
        SCOPED_TRACE(command + " " + force + " onto " + c.name);
        if (!c.made) {
          if (c.name == "null" || c.name == "to-null") continue;  // mknod needs root
          FAIL() << "cannot make " << c.name;
        }
        const std::string out = d + "/" + c.name;
        struct stat before, after;
        ASSERT_EQ(::lstat(out.c_str(), &before), 0);
        const auto r = run(command, out, force);
        EXPECT_EQ(r.exit_code, 5) << r.output;
        EXPECT_NE(r.output.find(out), std::string::npos) << r.output;
        EXPECT_NE(r.output.find(c.kind), std::string::npos) << r.output;
        ASSERT_EQ(::lstat(out.c_str(), &after), 0);
        EXPECT_EQ(after.st_mode, before.st_mode) << "replaced";
        EXPECT_EQ(after.st_ino, before.st_ino) << "replaced";
      }
      EXPECT_TRUE(hidden_entries(d).empty()) << "a temporary file was left";
    }
  }
}

TEST_F(OutputFilesCli, ForceThroughASymlinkReplacesItsTargetKeepingLinkAndMode) {
  for (const std::string command : {"convert", "dequantize"}) {
    SCOPED_TRACE(command);
    test::TempDir out_dir;
    fs::create_directories(out_dir.file("store"));
    const std::string target = out_dir.file("store/real.bin"), link = out_dir.file("out.bin");
    test::write_file(target, "old contents");
    ASSERT_EQ(::chmod(target.c_str(), 0640), 0);
    ASSERT_EQ(::symlink("store/real.bin", link.c_str()), 0);
    auto r = run(command, link, "");
    EXPECT_EQ(r.exit_code, 5) << r.output;
    EXPECT_NE(r.output.find("already exists"), std::string::npos) << r.output;
    r = run(command, link, "--force");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(fs::is_symlink(link));
    EXPECT_EQ(fs::read_symlink(link), "store/real.bin");
    EXPECT_GT(fs::file_size(target), 100u);
    struct stat st;
    ASSERT_EQ(::stat(target.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640u);
    EXPECT_TRUE(hidden_entries(out_dir.file("store")).empty());
    EXPECT_TRUE(hidden_entries(out_dir.path()).empty());
  }
}

TEST_F(OutputFilesCli, ForceKeepsTheReplacedFilesMode) {
  for (const std::string command : {"convert", "dequantize"}) {
    const std::string out = dir_.file("out-" + command);
    test::write_file(out, "old");
    ASSERT_EQ(::chmod(out.c_str(), 0600), 0);
    const auto r = run(command, out, "-f");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    struct stat st;
    ASSERT_EQ(::stat(out.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << command;
  }
}

TEST_F(OutputFilesCli, TheNextRunRemovesLeftoversOfKilledRunsOnly) {
  // kill -9 leaves `.NAME.qpack-partial.PID.XXXXXX`; a later run to the same
  // output removes those whose process is gone, and nothing else.
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  int status = 0;
  waitpid(dead, &status, 0);
  for (const std::string command : {"convert", "dequantize"}) {
    SCOPED_TRACE(command);
    test::TempDir out_dir;
    const std::string out = out_dir.file("out.bin");
    const std::string orphan =
        out_dir.file(".out.bin.qpack-partial." + std::to_string(dead) + ".Ab12Cd");
    const std::string alive =
        out_dir.file(".out.bin.qpack-partial." + std::to_string(getpid()) + ".Ab12Cd");
    test::write_file(orphan, std::string(4096, 'p'));
    test::write_file(alive, std::string(4096, 'p'));
    const auto r = run(command, out, "");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_FALSE(fs::exists(orphan));
    EXPECT_TRUE(fs::exists(alive));
  }
}

namespace {

// A 1 MiB tmpfs on a fresh folder, where this process may mount one.
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
  const std::string& path() const { return dir_.path(); }

 private:
  test::TempDir dir_;
  bool mounted_ = false;
  std::string reason_;
};

}  // namespace

TEST_F(OutputFilesCli, AnOutputThatCannotFitIsRefusedBeforeAnyWork) {
  // Outputs of several MiB: both more than the 1 MiB tmpfs holds.
  const std::string big = dir_.file("big");
  fs::create_directories(big);
  test::run_testgen("llama " + big + " --hidden 512 --intermediate 1024 --layers 2 --vocab 2000");
  const std::string big_qpack = dir_.file("big.qpack");
  ASSERT_EQ(test::run_qpack("convert " + big + " " + big_qpack + " -q").exit_code, 0);
  ASSERT_GT(fs::file_size(big_qpack), 2u << 20);
  SmallTmpfs tmpfs;
  if (!tmpfs.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << tmpfs.reason();
  for (const std::string command : {"convert", "dequantize"}) {
    SCOPED_TRACE(command);
    const std::string out = tmpfs.path() + "/out.bin";
    const std::string input = command == "convert" ? big : big_qpack;
    const auto r = test::run_qpack(command + " " + input + " " + out + " -q");
    EXPECT_EQ(r.exit_code, 5) << r.output;
    EXPECT_NE(r.output.find("not enough free space"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(tmpfs.path() + ":"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("needs "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(") free"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(out));
    EXPECT_TRUE(fs::is_empty(tmpfs.path())) << "a temporary file was left";
  }
  // A small output still fits.
  const auto r = test::run_qpack("convert " + model_ + " " + tmpfs.path() + "/small.qpack -q");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}
