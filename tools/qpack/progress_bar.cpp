#include "progress_bar.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "qpack/format/text.hpp"

namespace qpack {

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
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double frac = total ? double(done) / double(total) : 1.0;
  const int width = 24;
  const int filled = int(frac * width + 0.5);
  std::string bar(size_t(filled), '#');
  bar.resize(size_t(width), '.');
  const double rate = secs > 0 ? double(done) / secs / 1e9 : 0.0;
  const double eta = (rate > 0 && frac < 1) ? (double(total - done) / 1e9) / rate : 0.0;
  std::string name = current;
  if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
  std::fprintf(stderr, "\r\033[2K%s [%s] %3.0f%% %zu/%zu tensors %s/%s %.2f GB/s ETA %.0fs %s",
               label_.c_str(), bar.c_str(), 100 * frac, items_done, items_total,
               format_bytes(done).c_str(), format_bytes(total).c_str(), rate, eta, name.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (active_ && drawn_) {
    std::fprintf(stderr, "\r\033[2K");
    std::fflush(stderr);
  }
  drawn_ = false;
}

}  // namespace qpack
