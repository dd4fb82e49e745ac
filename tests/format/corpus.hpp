// Hand-made inputs for the format tests, generated in memory at test time
// (no binaries in the repository): a must-fail corpus of malformed
// safetensors files, sharded checkpoints and .qpack files, each with the
// error it must produce, and valid samples of both formats. Depends on the
// format library only, so the fuzzers' seed generator can use it too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"

namespace qpack::corpus {

using Bytes = std::vector<uint8_t>;

enum class Kind { Safetensors, Checkpoint, Qpack };

struct File {
  std::string name;  // relative to the case's folder
  Bytes bytes;
};

struct Case {
  std::string name;  // [A-Za-z0-9_]: also the test name
  Kind kind = Kind::Safetensors;
  std::vector<File> files;
  std::string open;  // relative path to open; "" = the folder itself
  ErrorCode expected = ErrorCode::Internal;
  std::string tensor;           // the tensor the error must name ("" = none checked)
  std::string file_in_message;  // relative path the error must name
  bool on_check = false;        // raised only when sections are read (check_all)
};

// Names of every must-fail case, in a fixed order (cheap: builds nothing).
const std::vector<std::string>& must_fail_names();
// Names of the single-file cases (safetensors or .qpack): the prefix of a
// name gives its kind: st_ safetensors, idx_/dir_ checkpoint folder, qp_ .qpack.
std::vector<std::string> single_file_names();
// Builds one case by name.
Case make_must_fail(const std::string& name);

// Valid inputs: single safetensors files (every dtype, awkward shapes),
// .qpack files (raw, quantized, zstd) — for round trips and fuzz seeds.
std::vector<Case> valid_samples();

// Writes the case's files under `dir` (which must exist) and returns the
// path to open.
std::string materialize(const Case& c, const std::string& dir);

// Building blocks, exposed for the tests.
Bytes safetensors_bytes(const std::string& header, uint64_t data_bytes);
Bytes safetensors_bytes_with_length(uint64_t header_length, const std::string& header,
                                    uint64_t data_bytes);
// The sample .qpack the qpack cases are derived from: tensors "emb" (raw
// F32 [3,4]), "w" (F16 [16,8], q4 g8 ax0 asym F16), "norm" (raw BF16 [16]),
// "ws" (F32 [8,16], q8 g16 ax1 sym BF16), "z" (raw F32 [256] of zeros;
// zstd-compressed when codec is zstd).
Bytes sample_qpack(Codec codec);
// Recomputes the manifest and header checksums after an edit.
void fix_checksums(Bytes& file);
// Replaces the manifest with `text` (the file ends with it) and fixes the header.
Bytes with_manifest_text(const Bytes& file, const std::string& text);
nlohmann::json read_manifest(const Bytes& file);
uint64_t manifest_offset(const Bytes& file);

}  // namespace qpack::corpus
