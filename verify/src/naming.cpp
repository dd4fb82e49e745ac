// Tensor-name parsing for the roll-ups: layer and kind.
#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "qpack/verify/verify.hpp"

namespace qpack {

namespace {

std::vector<std::string_view> split_dots(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    const size_t dot = s.find('.', start);
    parts.push_back(
        s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

bool all_digits(std::string_view s) {
  if (s.empty() || s.size() > 9) return false;  // 9 digits cannot overflow int64 arithmetic below
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Name components that hold a numbered sequence of transformer blocks in the
// usual naming schemes (HF Llama/Mistral/Qwen/GPT-NeoX "layers", GPT-2/Falcon
// "h", GGUF "blk", BERT "layer", T5/MPT/RWKV "block(s)").
constexpr std::array<std::string_view, 7> kBlockContainers = {
    "layers", "layer", "h", "blk", "blocks", "block", "decoder_layers"};

bool is_block_container(std::string_view s) {
  for (auto c : kBlockContainers)
    if (s == c) return true;
  return false;
}

}  // namespace

std::string LayerId::label() const {
  if (global()) return "global";
  return stack.empty() ? std::to_string(index) : stack + "." + std::to_string(index);
}

LayerId parse_layer(const std::string& name) {
  const auto parts = split_dots(name);
  LayerId id;
  for (size_t i = 0; i < parts.size(); ++i) {
    // "blk.N" and "layers.N" may also start the name (GGUF, bare state dicts).
    if (!all_digits(parts[i]) || i == 0 || !is_block_container(parts[i - 1])) continue;
    std::string stack;
    for (size_t j = 0; j < i; ++j) {
      if (j) stack += '.';
      stack += parts[j];
    }
    int64_t v = 0;
    for (char c : parts[i]) v = v * 10 + (c - '0');
    id.stack = stack;
    id.index = v;
    return id;
  }
  return id;
}

std::string tensor_kind(const std::string& name) {
  // Inside a block, everything after the block index: "self_attn.q_proj",
  // and BERT's "attention.output.dense", "intermediate.dense" and
  // "output.dense" stay three kinds (the last component alone would merge
  // them into one "dense"). Outside any block, the whole name: each such
  // tensor is a matrix of its own.
  const LayerId layer = parse_layer(name);
  std::string kind = name;
  if (!layer.global()) kind = name.substr(layer.label().size() + 1);
  const std::string suffix = ".weight";
  if (kind.size() > suffix.size() &&
      kind.compare(kind.size() - suffix.size(), suffix.size(), suffix) == 0)
    kind.resize(kind.size() - suffix.size());
  return kind;
}

}  // namespace qpack
