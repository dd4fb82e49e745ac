// qpack as a child process that is interrupted (issue #12 item 3) or whose
// memory-mapped input shrinks under it (item 7). Each test stops the child
// with SIGSTOP once its temporary output exists, so what happens next does
// not depend on how fast the machine is; then it sends the signal or
// truncates the file and lets the child continue.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "testutil.hpp"

using namespace qpack;
namespace fs = std::filesystem;

namespace {

// Hidden files in a fresh output folder: the temporary output, whatever
// its name.
std::vector<std::string> partial_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (!n.empty() && n[0] == '.') out.push_back(n);
  }
  return out;
}

struct Child {
  pid_t pid = -1;
  std::string log;  // its stdout and stderr
};

Child spawn_qpack(const std::vector<std::string>& args, const std::string& log) {
  Child c;
  c.log = log;
  c.pid = fork();
  if (c.pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    // The dispositions a shell's foreground job gets.
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGBUS}) signal(sig, SIG_DFL);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(QPACK_CLI));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(QPACK_CLI, argv.data());
    _exit(127);
  }
  return c;
}

// The child's status as a shell reports it: exit code, or 128 + signal.
int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

bool has_exited(pid_t pid) {
  siginfo_t info{};
  return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

// Polls until `ready()` holds, then stops the child; false when the child
// ended first, or `ready()` no longer holds once it is stopped (it was about
// to finish). A guard against a hung child, not a timing assertion.
template <typename Ready>
bool stop_when(pid_t pid, Ready ready) {
  for (int i = 0; i < 600000; ++i) {
    if (ready()) {
      kill(pid, SIGSTOP);
      siginfo_t info{};
      waitid(P_PID, id_t(pid), &info, WSTOPPED | WEXITED | WNOWAIT);
      if (info.si_code != CLD_STOPPED) return false;
      if (ready()) return true;
      kill(pid, SIGCONT);
      return false;
    }
    if (has_exited(pid)) return false;
    usleep(100);
  }
  return false;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// /proc/PID/maps lists `path`: the child has mapped it.
bool maps_file(pid_t pid, const std::string& path) {
  return read_text("/proc/" + std::to_string(pid) + "/maps").find(path) != std::string::npos;
}

class SignalsCli : public ::testing::Test {
 protected:
  // A checkpoint that takes a while with one thread: ~130 MB of F32.
  std::string make_model(const std::string& name) {
    const std::string dir = dir_.file(name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    test::run_testgen("llama " + dir +
                      " --hidden 1024 --intermediate 2048 --layers 2 --vocab 8000 --dtype f32");
    return dir;
  }
  test::TempDir dir_;
};

}  // namespace

TEST_F(SignalsCli, InterruptingConvertOrDequantizeRemovesTheTemporaryFile) {
  const std::string model = make_model("model");
  const std::string qpack = dir_.file("model.qpack");
  ASSERT_EQ(test::run_qpack("convert " + model + " " + qpack + " -q").exit_code, 0);
  for (const std::string command : {"convert", "dequantize"}) {
    for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
      SCOPED_TRACE(command + " " + strsignal(sig));
      test::TempDir out_dir;
      const std::string out = out_dir.file("out.bin");
      bool caught = false;
      for (int attempt = 0; attempt < 5 && !caught; ++attempt) {
        fs::remove(out);
        const Child c = spawn_qpack(
            {command, command == "convert" ? model : qpack, out, "-q", "--threads", "1"},
            dir_.file("log.txt"));
        caught = stop_when(c.pid, [&] { return !partial_files(out_dir.path()).empty(); });
        if (caught) kill(c.pid, sig);
        kill(c.pid, SIGCONT);
        const int status = wait_status(c.pid);
        if (!caught) continue;
        EXPECT_EQ(status, 128 + sig) << read_text(c.log);
        EXPECT_TRUE(partial_files(out_dir.path()).empty()) << "temporary file left";
        EXPECT_FALSE(fs::exists(out));
      }
      if (!caught) GTEST_SKIP() << "the child finished before it could be signalled";
    }
  }
}

TEST_F(SignalsCli, InterruptingDequantizeIntoAFolderRemovesTheTemporaryFolder) {
  // The folder is built in `.m.qpack-partial.PID.XXXXXX/`, which the signal
  // handler empties and removes (live_files' temporary folders).
  const std::string model = make_model("model");
  const std::string qpack = dir_.file("model.qpack");
  ASSERT_EQ(test::run_qpack("convert " + model + " " + qpack + " -q").exit_code, 0);
  for (const int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(strsignal(sig));
    test::TempDir out_dir;
    const std::string out = out_dir.file("m");
    bool caught = false;
    for (int attempt = 0; attempt < 5 && !caught; ++attempt) {
      fs::remove_all(out);
      const Child c = spawn_qpack({"dequantize", qpack, out + "/", "-q", "--threads", "1",
                                   "--device", "cpu", "--max-shard-size", "20MB"},
                                  dir_.file("log.txt"));
      caught = stop_when(c.pid, [&] { return !partial_files(out_dir.path()).empty(); });
      if (caught) kill(c.pid, sig);
      kill(c.pid, SIGCONT);
      const int status = wait_status(c.pid);
      if (!caught) continue;
      EXPECT_EQ(status, 128 + sig) << read_text(c.log);
      EXPECT_TRUE(partial_files(out_dir.path()).empty()) << "temporary folder left";
      EXPECT_FALSE(fs::exists(out));
    }
    if (!caught) GTEST_SKIP() << "the child finished before it could be signalled";
  }
}

TEST_F(SignalsCli, ConvertOfASourceTruncatedWhileReadIsAnIoErrorNamingIt) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string model = make_model("shrinking");
    const std::string shard = model + "/model.safetensors";
    test::TempDir out_dir;
    const std::string out = out_dir.file("out.qpack");
    const Child c =
        spawn_qpack({"convert", model, out, "-q", "--threads", "1"}, dir_.file("log.txt"));
    const bool caught = stop_when(c.pid, [&] { return !partial_files(out_dir.path()).empty(); });
    if (caught) {
      EXPECT_EQ(::truncate(shard.c_str(), 1 << 20), 0);
    }
    kill(c.pid, SIGCONT);
    const int status = wait_status(c.pid);
    if (!caught) continue;
    const std::string log = read_text(c.log);
    EXPECT_EQ(status, 5) << log;
    EXPECT_NE(log.find("qpack: error: " + shard), std::string::npos) << log;
    EXPECT_NE(log.find("file changed while being read (truncated by another process)"),
              std::string::npos)
        << log;
    EXPECT_TRUE(partial_files(out_dir.path()).empty()) << "temporary file left";
    EXPECT_FALSE(fs::exists(out));
    return;
  }
  GTEST_SKIP() << "the child finished before the source could be truncated";
}

TEST_F(SignalsCli, DequantizeOrVerifyOfAQpackTruncatedWhileReadIsAnIoErrorNamingIt) {
  const std::string model = make_model("model");
  for (const std::string command : {"dequantize", "verify"}) {
    SCOPED_TRACE(command);
    bool done = false;
    for (int attempt = 0; attempt < 3 && !done; ++attempt) {
      const std::string qpack = dir_.file("shrinking.qpack");
      ASSERT_EQ(test::run_qpack("convert " + model + " " + qpack + " -q -f").exit_code, 0);
      test::TempDir out_dir;
      const std::string out = out_dir.file("out.safetensors");
      const std::vector<std::string> args =
          command == "dequantize"
              ? std::vector<std::string>{"dequantize", qpack, out, "-q", "--threads", "1"}
              : std::vector<std::string>{"verify", qpack, model, "-q", "--threads", "1"};
      const Child c = spawn_qpack(args, dir_.file("log.txt"));
      // dequantize: once its output exists; verify writes none, so once it
      // has mapped the .qpack.
      const bool caught = stop_when(c.pid, [&] {
        return command == "dequantize" ? !partial_files(out_dir.path()).empty()
                                       : maps_file(c.pid, fs::canonical(qpack).string());
      });
      if (caught) {
        EXPECT_EQ(::truncate(qpack.c_str(), 1 << 16), 0);
      }
      kill(c.pid, SIGCONT);
      const int status = wait_status(c.pid);
      if (!caught) continue;
      done = true;
      const std::string log = read_text(c.log);
      EXPECT_EQ(status, 5) << log;
      EXPECT_NE(log.find(qpack + ": file changed while being read"), std::string::npos) << log;
      EXPECT_TRUE(partial_files(out_dir.path()).empty()) << "temporary file left";
      EXPECT_FALSE(fs::exists(out));
    }
    if (!done) GTEST_SKIP() << "the child finished before the .qpack could be truncated";
  }
}
