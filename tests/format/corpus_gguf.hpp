// Hand-made GGUF files for the format tests and the fuzzer's seeds,
// generated in memory at test time: a must-fail corpus (each case with the
// error it must produce) and valid samples. Depends on the format library only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"

namespace qpack::corpus {

struct GgufCase {
  std::string name;  // [A-Za-z0-9_]: also the test name
  std::vector<uint8_t> bytes;
  ErrorCode expected = ErrorCode::Internal;
  std::string tensor;  // the tensor the error must name ("" = none checked)
  std::string key;     // a key the message must name ("" = none checked)
};

const std::vector<std::string>& gguf_must_fail_names();
GgufCase make_gguf_must_fail(const std::string& name);
// Valid files: every value type, nested arrays, several tensor types and
// awkward shapes, a non-default alignment, no tensors at all.
std::vector<GgufCase> gguf_valid_samples();

}  // namespace qpack::corpus
