// The progress bar (issue #12 items 9 and 22) and the terminal text helpers
// of qpack/format/text.hpp (item 12): the line always fits the terminal, the
// ETA only once it can be estimated, and, under a real pseudo-terminal at 80
// and 120 columns, no wrapped or stale line is left behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <string>
#include <vector>

#include "../../tools/qpack/progress_bar.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

bool has_control_byte(const std::string& s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  return false;
}

TEST(TerminalText, EscapesControlsKeepsUtf8) {
  EXPECT_EQ(escape_for_terminal("a\x1b]0;t\x07z"), "a\\x1b]0;t\\x07z");
  EXPECT_EQ(escape_for_terminal("x\x1b[2J\x7f\n\t"), "x\\x1b[2J\\x7f\\x0a\\x09");
  EXPECT_EQ(escape_for_terminal("\xc2\x9b"
                                "1m"),
            "\\u009b1m");  // C1 CSI
  EXPECT_EQ(escape_for_terminal("\xe2\x80\xae"
                                "abc"),
            "\\u202eabc");                                         // RTL override
  EXPECT_EQ(escape_for_terminal("bad\xff\xc3"), "bad\\xff\\xc3");  // not UTF-8
  EXPECT_EQ(escape_for_terminal("caf\xc3\xa9 \xe5\x90\x8d"), "caf\xc3\xa9 \xe5\x90\x8d");
}

TEST(TerminalText, DisplayWidthCountsColumns) {
  EXPECT_EQ(display_width("abc"), 3u);
  EXPECT_EQ(display_width("caf\xc3\xa9"), 4u);               // é: one column
  EXPECT_EQ(display_width("\xe5\x90\x8d\xe5\x89\x8d"), 4u);  // two CJK: two each
  EXPECT_EQ(display_width("e\xcc\x81"), 1u);                 // e + combining acute
  EXPECT_EQ(pad_to_width("\xe5\x90\x8d", 4), "\xe5\x90\x8d  ");
  EXPECT_EQ(pad_to_width("ab", 4, true), "  ab");
}

TEST(TerminalText, EllipsizeMiddleFitsAndKeepsEnds) {
  const std::string name = "model.layers.31.self_attn.q_proj.weight";
  EXPECT_EQ(ellipsize_middle(name, 100), name);
  for (size_t w = 1; w < name.size(); ++w) {
    const std::string e = ellipsize_middle(name, w);
    EXPECT_LE(display_width(e), w) << e;
  }
  const std::string e = ellipsize_middle(name, 20);
  EXPECT_NE(e.find("\xe2\x80\xa6"), std::string::npos) << e;
  EXPECT_EQ(e.substr(e.size() - 6), "weight") << e;
  const std::string cjk = "\xe5\x90\x8d\xe5\x89\x8d\xe5\x90\x8d\xe5\x89\x8d\xe5\x90\x8d";
  for (size_t w = 1; w < 12; ++w) EXPECT_LE(display_width(ellipsize_middle(cjk, w)), w);
}

// The pure function: for every width, every name, every fraction, the line
// is at most width - 1 columns and holds no control byte.
TEST(ProgressLine, NeverWiderThanTheTerminal) {
  const std::vector<std::string> names = {
      "",
      "lm_head.weight",
      std::string(500, 'x'),
      "model.layers.0.\xe5\x90\x8d\xe5\x89\x8d\xe5\x90\x8d\xe5\x89\x8d.weight" +
          std::string(80, 'y'),
      "evil\x1b]0;pwned\x07\x1b[2J.weight",
      "caf\xc3\xa9\xcc\x81" + std::string(300, '\xc3')};
  for (size_t width = 20; width <= 300; ++width)
    for (const auto& name : names)
      for (const double frac : {0.0, 0.33, 1.0}) {
        ProgressState s;
        s.label = "comparing";
        s.bytes_total = 1234567890123ull;
        s.bytes_done = uint64_t(double(s.bytes_total) * frac);
        s.items_total = 123456;
        s.items_done = size_t(double(s.items_total) * frac);
        s.current = name;
        s.seconds = 12.5;
        const std::string line = format_progress_line(s, width);
        ASSERT_LE(display_width(line), width - 1) << width << ": " << line;
        ASSERT_FALSE(has_control_byte(line)) << line;
      }
}

TEST(ProgressLine, EtaOnlyOnceItCanBeEstimated) {
  ProgressState s;
  s.label = "convert";
  s.bytes_total = 1000000000;
  s.items_total = 10;
  s.current = "a.weight";
  s.seconds = 0;  // at 0 %: no rate yet
  EXPECT_EQ(format_progress_line(s, 200).find("ETA"), std::string::npos)
      << format_progress_line(s, 200);
  s.seconds = 30;  // still 0 bytes done after 30 s
  EXPECT_EQ(format_progress_line(s, 200).find("ETA"), std::string::npos);
  s.bytes_done = 500000000;
  s.items_done = 5;
  s.seconds = 0.01;  // too early to trust a rate
  EXPECT_EQ(format_progress_line(s, 200).find("ETA"), std::string::npos);
  s.seconds = 10;
  EXPECT_NE(format_progress_line(s, 200).find("ETA 10s"), std::string::npos)
      << format_progress_line(s, 200);
  s.bytes_done = s.bytes_total;  // done: nothing left to estimate
  s.items_done = 10;
  EXPECT_EQ(format_progress_line(s, 200).find("ETA"), std::string::npos);
}

// Runs `argv` on a pseudo-terminal `cols` columns wide, stdout to
// /dev/null, and returns what reached the terminal (stderr).
std::string run_on_pty(const std::vector<std::string>& args, unsigned short cols) {
  winsize ws{};
  ws.ws_row = 24;
  ws.ws_col = cols;
  int master = -1;
  const pid_t pid = forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0) return "<forkpty failed>";
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    dup2(null, STDOUT_FILENO);
    unsetenv("CI");
    unsetenv("COLUMNS");
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(master, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, size_t(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EIO once the child has closed the terminal
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ::close(master);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    out += "<exit " + std::to_string(status) + ">";
  return out;
}

// Splits terminal output at \r, drops the clear-to-end-of-line sequences,
// and returns the text of each redraw.
std::vector<std::string> redraws(const std::string& tty, std::string* unexpected) {
  std::vector<std::string> lines(1);
  for (size_t i = 0; i < tty.size(); ++i) {
    if (tty[i] == '\r') {
      lines.emplace_back();
    } else if (tty.compare(i, 3, "\x1b[K") == 0) {
      i += 2;
    } else if (static_cast<unsigned char>(tty[i]) < 0x20 || tty[i] == 0x7f) {
      *unexpected += tty[i];
    } else {
      lines.back() += tty[i];
    }
  }
  return lines;
}

class ProgressPty : public ::testing::TestWithParam<int> {};

TEST_P(ProgressPty, OneLineFittedNothingLeftBehind) {
  const unsigned short cols = static_cast<unsigned short>(GetParam());
  test::TempDir dir;
  std::vector<float> data(64 * 64);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::cos(0.11f * float(i));
  std::vector<std::string> names;
  for (int i = 0; i < 40; ++i)
    names.push_back("model.layers." + std::to_string(i) +
                    ".a_rather_long_module_name_\xe5\x90\x8d\xe5\x89\x8d.self_attn." +
                    std::string(size_t(20 + 5 * i), 'q') + ".weight");
  std::vector<TensorToWrite> t;
  for (const auto& n : names)
    t.push_back({n, DType::F32, {64, 64}, data.data(), data.size() * sizeof(float)});
  const std::string src = dir.file("m.safetensors");
  write_safetensors(src, t, {}, false);
  const std::string out = run_on_pty(
      {QPACK_CLI, "convert", src, dir.file("m.qpack"), "--device", "cpu", "-j", "1"}, cols);
  std::string unexpected;
  const std::vector<std::string> lines = redraws(out, &unexpected);
  EXPECT_EQ(unexpected, "") << "newlines or other controls reached the terminal:\n" << out;
  size_t drawn = 0;
  for (const auto& l : lines) {
    EXPECT_LE(display_width(l), size_t(cols) - 1) << "would wrap at " << cols << ":\n" << l;
    drawn += !l.empty();
  }
  EXPECT_GE(drawn, 1u) << "no bar drawn:\n" << out;
  EXPECT_EQ(lines.back(), "") << "left behind:\n" << out;
}

INSTANTIATE_TEST_SUITE_P(Widths, ProgressPty, ::testing::Values(80, 120, 40));

}  // namespace
}  // namespace qpack
