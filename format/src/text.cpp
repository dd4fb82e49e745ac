#include "qpack/format/text.hpp"

#include <cstdio>

namespace qpack {

std::string scheme_label(const QuantScheme& s) {
  std::string r = "q" + std::to_string(s.bits) + " g";
  r += s.group_size == 0 ? std::string("all") : std::to_string(s.group_size);
  r += " ax" + std::to_string(s.axis);
  r += s.symmetric ? " sym " : " asym ";
  r += dtype_name(s.scale_dtype);
  return r;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string format_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

std::string count_of(uint64_t n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::optional<double> compression_ratio(uint64_t source_bytes, uint64_t stored_bytes) {
  if (stored_bytes == 0) return std::nullopt;
  return double(source_bytes) / double(stored_bytes);
}

std::string format_ratio(std::optional<double> ratio) {
  if (!ratio) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", *ratio);
  return buf;
}

}  // namespace qpack
