// What a person reads, spelled one way by every command and report: a
// quantization scheme, a shape, a byte count. docs/cli.md shows them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qpack/spec/scheme.hpp"

namespace qpack {

// "q4 g64 ax0 asym F16": bits, group size, axis, sym or asym, scale dtype
// (dtype_name). Shown schemes are resolved; an unresolved whole-axis group
// size (0) prints as "gall".
// "asym-int" in place of "asym" for integer zero-points.
std::string scheme_label(const QuantScheme& scheme);

// "float" or "integer": the zero-point kind as the CLI, recipes, the
// manifest (quant.zero_point) and the JSON reports spell it.
const char* zero_point_name(ZeroPoint zp);
std::optional<ZeroPoint> zero_point_from_string(std::string_view name);
// "rtn", "search", "refit" (docs/quantization.md §M), and back.
const char* method_name(QuantMethod m);
std::optional<QuantMethod> method_from_string(std::string_view name);

// Where a scheme is shown, a tensor stored as it is (not quantized) shows
// this: the format's encoding name.
inline constexpr const char* kRawLabel = "raw";

// "[4096, 11008]"; "[]" for a 0-d tensor.
// True when `s` ends with `suffix` (file extensions, name suffixes).
bool ends_with(std::string_view s, std::string_view suffix);

std::string shape_to_string(const std::vector<int64_t>& shape);

// "1 tensor", "3 tensors": a count and its noun, singular for exactly one
// (nouns that take an "s").
std::string count_of(uint64_t n, const char* noun);

// "1.50 GiB": binary units, two decimals (bytes below 1 KiB as "N B").
std::string format_bytes(uint64_t bytes);

// ---- the compression ratio: one definition for convert, inspect and verify.
// Source tensor bytes over stored bytes. For a whole model the stored bytes
// are the .qpack file's size (header, padding and manifest included), so
// convert's summary, its --dry-run plan, inspect's totals and verify's model
// line show the same number; for one tensor or one layer they are the bytes
// of its sections. nullopt when nothing is stored.
std::optional<double> compression_ratio(uint64_t source_bytes, uint64_t stored_bytes);
// "7.03x", or "-" for nullopt.
std::string format_ratio(std::optional<double> ratio);
// Text from a file (a tensor name, a path, an error's reason) made safe to
// print on a terminal: C0 controls, DEL and bytes that are not UTF-8 become
// \xHH (ESC is "\x1b"), C1 controls and the bidi overrides/isolates
// (U+202A..U+202E, U+2066..U+2069) and line/paragraph separators become
// \uHHHH. Everything else, valid multi-byte UTF-8 included, is kept: a
// downloaded checkpoint cannot set the title or clear the screen.
std::string escape_for_terminal(std::string_view text);

// Columns `text` takes on a terminal: UTF-8 code points, East Asian wide and
// fullwidth characters (CJK, Hangul, emoji) count 2, combining marks 0. For
// text already passed through escape_for_terminal (no controls).
size_t display_width(std::string_view text);

// `text` shortened in the middle to at most `max_width` display columns,
// "…" (one column) standing for what was cut, never splitting a UTF-8
// sequence. Unchanged when it fits.
std::string ellipsize_middle(std::string_view text, size_t max_width);

// `text` padded with spaces to `width` display columns, on the right (left
// aligned) or on the left (`right_align`).
std::string pad_to_width(const std::string& text, size_t width, bool right_align = false);

}  // namespace qpack
