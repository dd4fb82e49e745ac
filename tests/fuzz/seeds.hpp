// Seed inputs for the fuzzers, shared by make_fuzz_seeds and the replay test:
// the must-fail corpus and the valid samples, in each target's input form.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "format/corpus.hpp"
#include "format/corpus_gguf.hpp"

namespace qpack::fuzz {

struct Seed {
  std::string name;
  corpus::Bytes bytes;
};

inline std::vector<Seed> safetensors_seeds() {
  std::vector<Seed> out;
  auto take = [&](const corpus::Case& c) {
    for (const corpus::File& f : c.files)
      if (f.name.size() > 12 && f.name.compare(f.name.size() - 12, 12, ".safetensors") == 0)
        out.push_back({c.name + "__" + f.name, f.bytes});
  };
  for (const std::string& n : corpus::must_fail_names()) {
    const corpus::Case c = corpus::make_must_fail(n);
    if (c.kind != corpus::Kind::Qpack) take(c);
  }
  for (const corpus::Case& c : corpus::valid_samples())
    if (c.kind == corpus::Kind::Safetensors) take(c);
  return out;
}

// Each .qpack input three times: as is (mode 0), with header repair (1) and
// with header and section-checksum repair (3).
inline std::vector<Seed> qpack_seeds() {
  std::vector<Seed> out;
  auto take = [&](const corpus::Case& c) {
    for (uint8_t mode : {0, 1, 3}) {
      corpus::Bytes b;
      b.push_back(mode);
      b.insert(b.end(), c.files.at(0).bytes.begin(), c.files.at(0).bytes.end());
      out.push_back({c.name + "__mode" + std::to_string(mode), std::move(b)});
    }
  };
  for (const std::string& n : corpus::must_fail_names()) {
    const corpus::Case c = corpus::make_must_fail(n);
    if (c.kind == corpus::Kind::Qpack) take(c);
  }
  for (const corpus::Case& c : corpus::valid_samples())
    if (c.kind == corpus::Kind::Qpack) take(c);
  return out;
}

// The GGUF must-fail corpus and valid samples, as they are.
inline std::vector<Seed> gguf_seeds() {
  std::vector<Seed> out;
  for (const std::string& n : corpus::gguf_must_fail_names()) {
    corpus::GgufCase c = corpus::make_gguf_must_fail(n);
    out.push_back({c.name, std::move(c.bytes)});
  }
  for (corpus::GgufCase& c : corpus::gguf_valid_samples())
    out.push_back({c.name, std::move(c.bytes)});
  return out;
}

}  // namespace qpack::fuzz
