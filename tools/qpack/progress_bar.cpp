#include "progress_bar.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "qpack/format/text.hpp"

namespace qpack {

namespace {

std::string percent_text(double frac) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%3.0f%%", 100 * frac);
  return buf;
}

std::string bar_text(double frac, size_t cells) {
  const size_t filled = size_t(frac * double(cells) + 0.5);
  std::string bar = "[" + std::string(filled, '#');
  bar.resize(filled + 1 + (cells - filled), '.');
  return bar + "]";
}

// Below this much work done, a rate (and so an ETA) is noise.
constexpr double kMinSecondsForRate = 0.5;

}  // namespace

std::string format_progress_line(const ProgressState& s, size_t width) {
  const size_t limit = width > 1 ? width - 1 : 0;
  const double frac =
      s.bytes_total ? double(s.bytes_done) / double(s.bytes_total) : (s.items_total ? 0.0 : 1.0);
  const bool has_rate = s.seconds >= kMinSecondsForRate && s.bytes_done > 0;
  const double rate = has_rate ? double(s.bytes_done) / s.seconds : 0.0;

  // The parts, from the one dropped last to the one dropped first.
  const std::string label = escape_for_terminal(s.label);
  const std::string percent = percent_text(frac);
  const std::string items = std::to_string(s.items_done) + "/" + std::to_string(s.items_total);
  const std::string bytes = format_bytes(s.bytes_done) + "/" + format_bytes(s.bytes_total);
  std::string speed, eta;
  if (has_rate) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%.2f GB/s", rate / 1e9);
    speed = buf;
    if (frac < 1) {
      std::snprintf(buf, sizeof buf, "ETA %.0fs", double(s.bytes_total - s.bytes_done) / rate);
      eta = buf;
    }
  }
  const std::string name = escape_for_terminal(s.current);

  // Widest first; each step drops the least useful part until the fixed
  // parts fit, then the name takes what is left (at least 8 columns, or it
  // is left out).
  for (int level = 0; level < 6; ++level) {
    std::vector<std::string> parts = {label};
    const size_t bar_cells = level == 0 ? 24 : (level == 1 ? 12 : 0);
    if (bar_cells) parts.push_back(bar_text(frac, bar_cells));
    parts.push_back(percent);
    if (level < 5) parts.push_back(items + (level < 3 ? " tensors" : ""));
    if (level < 3) parts.push_back(bytes);
    if (level < 4 && !speed.empty()) parts.push_back(speed);
    if (level < 4 && !eta.empty()) parts.push_back(eta);
    std::string line;
    for (const auto& p : parts) line += (line.empty() ? "" : " ") + p;
    const size_t used = display_width(line);
    if (used > limit) continue;
    if (!name.empty() && limit - used >= 1 + 8)
      line += " " + ellipsize_middle(name, limit - used - 1);
    return line;
  }
  return ellipsize_middle(label + " " + percent, limit);
}

size_t terminal_columns(int fd) {
  winsize ws{};
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    char* end = nullptr;
    const long v = std::strtol(c, &end, 10);
    if (end != c && *end == '\0' && v > 0 && v < 100000) return size_t(v);
  }
  return 80;
}

bool ProgressBar::terminal_allows() {
  const char* ci = std::getenv("CI");
  if (ci && *ci && std::string(ci) != "0" && std::string(ci) != "false") return false;
  return isatty(STDERR_FILENO) == 1;
}

ProgressBar::ProgressBar(std::string label, bool enabled)
    : label_(std::move(label)),
      active_(enabled && terminal_allows()),
      start_(std::chrono::steady_clock::now()),
      last_(start_ - std::chrono::seconds(1)) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(uint64_t done, uint64_t total, size_t items_done, size_t items_total,
                         const std::string& current) {
  if (!active_) return;
  const auto now = std::chrono::steady_clock::now();
  if (items_done < items_total && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  ProgressState s;
  s.label = label_;
  s.bytes_done = done;
  s.bytes_total = total;
  s.items_done = items_done;
  s.items_total = items_total;
  s.current = current;
  s.seconds = std::chrono::duration<double>(now - start_).count();
  // The width is read at every redraw: the window may have been resized.
  const std::string line = format_progress_line(s, terminal_columns(STDERR_FILENO));
  // Back to column 0, the line, then clear what a longer previous line left.
  std::fprintf(stderr, "\r%s\033[K", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (active_ && drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
  drawn_ = false;
}

}  // namespace qpack
