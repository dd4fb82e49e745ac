#include "signals.hpp"

#include <unistd.h>

#include <csignal>
#include <cstring>

#include "qpack/format/error.hpp"
#include "qpack/format/live_files.hpp"

namespace qpack::cli {

namespace {

// Only async-signal-safe calls below: write, unlink (in live_files), sigaction,
// sigprocmask, raise, _exit.

void write_stderr(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= size_t(w);
  }
}

void die_of(int sig) {
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
  raise(sig);
  _exit(128 + sig);  // not reached: the default action ends the process
}

void on_termination(int sig) {
  live_files::unlink_temp_files();
  die_of(sig);
}

void on_bus(int sig, siginfo_t* info, void*) {
  const char* path = info ? live_files::mapping_path_at(info->si_addr) : nullptr;
  if (!path) {
    // Not a mapped input that shrank: a real fault, reported as one.
    live_files::unlink_temp_files();
    die_of(sig);
  }
  write_stderr("qpack: error: ");
  write_stderr(path);
  write_stderr(": file changed while being read (truncated by another process)\n");
  live_files::unlink_temp_files();
  _exit(kExitIo);
}

}  // namespace

void install_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  // Another termination signal while one is handled waits: the first one
  // removes the files and ends the process.
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGHUP);
  sa.sa_handler = on_termination;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    // A signal ignored at start stays ignored (nohup, a shell's background
    // job): the caller asked for that.
    struct sigaction old;
    if (sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    sigaction(sig, &sa, nullptr);
  }

  struct sigaction bus;
  std::memset(&bus, 0, sizeof bus);
  sigemptyset(&bus.sa_mask);
  sigaddset(&bus.sa_mask, SIGINT);
  sigaddset(&bus.sa_mask, SIGTERM);
  sigaddset(&bus.sa_mask, SIGHUP);
  bus.sa_sigaction = on_bus;
  bus.sa_flags = SA_SIGINFO;
  sigaction(SIGBUS, &bus, nullptr);

  // A file-size limit (ulimit -f) should fail the write with a message, not
  // kill the process: the temporary file is then removed.
  struct sigaction ign;
  std::memset(&ign, 0, sizeof ign);
  sigemptyset(&ign.sa_mask);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGXFSZ, &ign, nullptr);
}

}  // namespace qpack::cli
