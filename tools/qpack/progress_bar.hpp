// A one-line progress bar on stderr: shown only on a terminal, never with
// --quiet or in CI (CI set in the environment), redrawn at most 10 times a
// second. The line always fits the terminal's width (it never wraps, so a
// redraw never leaves a stale line behind) and is cleared on finish.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qpack {

// What one redraw shows.
struct ProgressState {
  std::string label;  // "convert", "checksums", ...
  uint64_t bytes_done = 0, bytes_total = 0;
  size_t items_done = 0, items_total = 0;
  std::string current;  // the tensor being worked on, as the file names it
  double seconds = 0;   // since the work began
};

// The bar's text for a terminal `width` columns wide, without the \r and
// clear-to-end-of-line around it: at most width - 1 display columns (the
// last column would make some terminals wrap), the tensor name escaped and
// shortened in the middle, parts dropped when the terminal is narrow. The ETA
// appears only once there is a rate to estimate it from.
std::string format_progress_line(const ProgressState& state, size_t width);

// Columns of the terminal on `fd` (TIOCGWINSZ), else $COLUMNS, else 80.
size_t terminal_columns(int fd);

class ProgressBar {
 public:
  // `enabled` is the caller's --quiet switch; the bar also stays off when
  // stderr is not a terminal or CI is set.
  ProgressBar(std::string label, bool enabled);
  ~ProgressBar();
  void update(uint64_t bytes_done, uint64_t bytes_total, size_t items_done, size_t items_total,
              const std::string& current);
  void finish();  // clears the line
  bool active() const { return active_; }

  static bool terminal_allows();  // stderr is a tty and CI is unset

 private:
  std::string label_;
  bool active_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace qpack
