#include "qpack/format/text.hpp"

#include <cstdint>
#include <cstdio>
#include <utility>

namespace qpack {

std::string scheme_label(const QuantScheme& s) {
  std::string r = "q" + std::to_string(s.bits) + " g";
  r += s.group_size == 0 ? std::string("all") : std::to_string(s.group_size);
  r += " ax" + std::to_string(s.axis);
  r += s.symmetric ? " sym " : (has_integer_zero(s) ? " asym-int " : " asym ");
  r += dtype_name(s.scale_dtype);
  if (s.method != QuantMethod::Rtn) r += std::string(" ") + method_name(s.method);
  if (has_two_level(s)) r += " two-level";
  return r;
}

const char* method_name(QuantMethod m) {
  return m == QuantMethod::Search ? "search" : (m == QuantMethod::Refit ? "refit" : "rtn");
}
std::optional<QuantMethod> method_from_string(std::string_view name) {
  if (name == "rtn") return QuantMethod::Rtn;
  if (name == "search") return QuantMethod::Search;
  if (name == "refit") return QuantMethod::Refit;
  return std::nullopt;
}

const char* zero_point_name(ZeroPoint zp) { return zp == ZeroPoint::Integer ? "integer" : "float"; }
std::optional<ZeroPoint> zero_point_from_string(std::string_view name) {
  if (name == "float") return ZeroPoint::Float;
  if (name == "integer") return ZeroPoint::Integer;
  return std::nullopt;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
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

namespace qpack {

namespace {

// One UTF-8 sequence at text[i]: its code point and length, or length 0 when
// the bytes are not well-formed UTF-8 (overlong, surrogate, truncated).
struct Utf8Char {
  uint32_t cp = 0;
  size_t len = 0;
};

Utf8Char decode_utf8(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return {c, 1};
  size_t len = 0;
  uint32_t cp = 0, min = 0;
  if ((c & 0xE0) == 0xC0) {
    len = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return {};
  }
  if (i + len > s.size()) return {};
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return {};
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {};
  return {cp, len};
}

bool needs_unicode_escape(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 || cp == 0x2029;
}

bool is_combining(uint32_t cp) {
  return (cp >= 0x0300 && cp <= 0x036F) || (cp >= 0x1AB0 && cp <= 0x1AFF) ||
         (cp >= 0x1DC0 && cp <= 0x1DFF) || (cp >= 0x20D0 && cp <= 0x20FF) ||
         (cp >= 0xFE20 && cp <= 0xFE2F) || cp == 0x200B || cp == 0x200C || cp == 0x200D ||
         (cp >= 0xFE00 && cp <= 0xFE0F);
}

bool is_wide(uint32_t cp) {
  return (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0x303E) ||
         (cp >= 0x3041 && cp <= 0x33FF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xA000 && cp <= 0xA4CF) ||
         (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
         (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
         (cp >= 0x1F900 && cp <= 0x1F9FF) || (cp >= 0x20000 && cp <= 0x3FFFD);
}

size_t char_width(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7F) return 0;
  if (is_combining(cp)) return 0;
  return is_wide(cp) ? 2 : 1;
}

}  // namespace

std::string escape_for_terminal(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  char buf[16];
  for (size_t i = 0; i < s.size();) {
    const Utf8Char ch = decode_utf8(s, i);
    if (ch.len == 0 || ch.cp < 0x20 || ch.cp == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(static_cast<unsigned char>(s[i])));
      out += buf;
      ++i;
    } else if (needs_unicode_escape(ch.cp)) {
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(ch.cp));
      out += buf;
      i += ch.len;
    } else {
      out.append(s.substr(i, ch.len));
      i += ch.len;
    }
  }
  return out;
}

size_t display_width(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    const Utf8Char ch = decode_utf8(s, i);
    if (ch.len == 0) {  // a stray byte (text not escaped): one column
      ++n;
      ++i;
      continue;
    }
    n += char_width(ch.cp);
    i += ch.len;
  }
  return n;
}

std::string ellipsize_middle(std::string_view s, size_t max_width) {
  if (display_width(s) <= max_width) return std::string(s);
  if (max_width == 0) return std::string();
  // Split the budget (one column for the ellipsis): the head a third, the
  // tail, which tells tensors apart, the rest.
  const size_t budget = max_width - 1;
  const size_t head_budget = budget / 3, tail_budget = budget - head_budget;
  std::vector<std::pair<size_t, size_t>> chars;  // (offset, width)
  for (size_t i = 0; i < s.size();) {
    const Utf8Char ch = decode_utf8(s, i);
    const size_t len = ch.len ? ch.len : 1;
    chars.emplace_back(i, ch.len ? char_width(ch.cp) : 1);
    i += len;
  }
  size_t head_end = 0, used = 0;
  while (head_end < chars.size() && used + chars[head_end].second <= head_budget)
    used += chars[head_end++].second;
  size_t tail_begin = chars.size(), tail_used = 0;
  while (tail_begin > head_end && tail_used + chars[tail_begin - 1].second <= tail_budget)
    tail_used += chars[--tail_begin].second;
  const size_t head_bytes = head_end < chars.size() ? chars[head_end].first : s.size();
  const size_t tail_bytes = tail_begin < chars.size() ? chars[tail_begin].first : s.size();
  // U+2026 HORIZONTAL ELLIPSIS
  return std::string(s.substr(0, head_bytes)) + "\xE2\x80\xA6" + std::string(s.substr(tail_bytes));
}

std::string pad_to_width(const std::string& text, size_t width, bool right_align) {
  const size_t w = display_width(text);
  if (w >= width) return text;
  const std::string pad(width - w, ' ');
  return right_align ? pad + text : text + pad;
}

}  // namespace qpack
