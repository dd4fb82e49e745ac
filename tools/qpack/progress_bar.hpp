// A one-line progress bar on stderr: shown only on a terminal, never with
// --quiet or in CI (CI set in the environment), redrawn at most 10 times a
// second.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qpack {

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
