#include "format/corpus.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>

#include "qpack/format/checksum.hpp"
#include "qpack/format/endian.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/format/safetensors.hpp"

namespace qpack::corpus {

using nlohmann::json;

namespace {

// A scratch folder for building files with the real writers.
class Scratch {
 public:
  Scratch() {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") + "/qpack-corpus-XXXXXX";
    std::vector<char> buf(t.begin(), t.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& n) const { return path_ + "/" + n; }

 private:
  std::string path_;
};

Bytes slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

Bytes text_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// Deterministic filler so that data regions are not all zero.
Bytes pattern(uint64_t n, uint32_t seed) {
  Bytes b(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& v : b) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    v = uint8_t(x);
  }
  return b;
}

// ------------------------------------------------------------ safetensors

const char* kGood =
    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})";

Case st_case(const std::string& name, Bytes bytes, ErrorCode code, const std::string& tensor = "") {
  Case c;
  c.name = name;
  c.kind = Kind::Safetensors;
  c.files.push_back({"x.safetensors", std::move(bytes)});
  c.open = "x.safetensors";
  c.expected = code;
  c.tensor = tensor;
  c.file_in_message = "x.safetensors";
  return c;
}

Case st_header(const std::string& name, const std::string& header, uint64_t data, ErrorCode code,
               const std::string& tensor = "") {
  return st_case(name, safetensors_bytes(header, data), code, tensor);
}

// ------------------------------------------------------------ checkpoints

const char* kShard1 = "model-00001-of-00002.safetensors";
const char* kShard2 = "model-00002-of-00002.safetensors";
const char* kIndex = "model.safetensors.index.json";

Bytes shard1() {
  return safetensors_bytes(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})",
      11);
}
Bytes shard2() {
  return safetensors_bytes(R"({"c":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}})", 8);
}

json good_index() {
  return {{"metadata", {{"total_size", 19}}},
          {"weight_map", {{"a", kShard1}, {"b", kShard1}, {"c", kShard2}}}};
}

Case ckpt_case(const std::string& name, std::vector<File> files, ErrorCode code,
               const std::string& tensor, const std::string& file_in_message) {
  Case c;
  c.name = name;
  c.kind = Kind::Checkpoint;
  c.files = std::move(files);
  c.open = "";
  c.expected = code;
  c.tensor = tensor;
  c.file_in_message = file_in_message;
  return c;
}

Case index_case(const std::string& name, const std::string& index_text, ErrorCode code,
                const std::string& tensor = "", const std::string& file = kIndex) {
  return ckpt_case(name,
                   {{kShard1, shard1()}, {kShard2, shard2()}, {kIndex, text_bytes(index_text)}},
                   code, tensor, file);
}

// ------------------------------------------------------------------ qpack

Case qp_case(const std::string& name, Bytes bytes, ErrorCode code, const std::string& tensor = "",
             bool on_check = false) {
  Case c;
  c.name = name;
  c.kind = Kind::Qpack;
  c.files.push_back({"m.qpack", std::move(bytes)});
  c.open = "m.qpack";
  c.expected = code;
  c.tensor = tensor;
  c.file_in_message = "m.qpack";
  c.on_check = on_check;
  return c;
}

json& tensor_json(json& m, const std::string& name) {
  for (json& t : m["tensors"])
    if (t["name"] == name) return t;
  throw std::runtime_error("corpus: no tensor " + name);
}

// The sample with its manifest edited (checksums fixed, so only the edit is wrong).
Bytes edit_manifest(const std::function<void(json&)>& edit, Codec codec = Codec::None) {
  const Bytes base = sample_qpack(codec);
  json m = read_manifest(base);
  edit(m);
  return with_manifest_text(base, m.dump());
}

// The same as a version 2.0 file: header and qpack_version both say 2.
Bytes edit_manifest_v2(const std::function<void(json&)>& edit) {
  Bytes f = edit_manifest([&](json& m) {
    m["qpack_version"] = std::to_string(kQpackVersionMajorIntegerZero) + ".0";
    edit(m);
  });
  QpackHeader h = QpackHeader::load(f.data());
  h.version_major = kQpackVersionMajorIntegerZero;
  h.seal();
  h.encode(f.data());
  return f;
}

// Section `key` of tensor `name` as (offset, size).
std::pair<uint64_t, uint64_t> section_of(const Bytes& f, const std::string& name,
                                         const std::string& key) {
  json m = read_manifest(f);
  const json& s = tensor_json(m, name)["sections"][key];
  return {s["offset"].get<uint64_t>(), s["size"].get<uint64_t>()};
}

// The file's header after `edit`, written back with its checksum recomputed
// (`seal`) or left as it was.
void edit_header(Bytes& f, const std::function<void(QpackHeader&)>& edit, bool seal = true) {
  QpackHeader h = QpackHeader::load(f.data());
  edit(h);
  if (seal) h.seal();
  h.encode(f.data());
}

using Builder = std::function<Case()>;

const std::vector<std::pair<std::string, Builder>>& registry() {
  static const std::vector<std::pair<std::string, Builder>> table = [] {
    std::vector<std::pair<std::string, Builder>> t;
    auto add = [&](const std::string& name, Builder b) { t.emplace_back(name, std::move(b)); };
    using E = ErrorCode;

    // ---- safetensors: framing
    add("st_empty_file", [] { return st_case("st_empty_file", {}, E::Truncated); });
    add("st_short_length", [] {
      return st_case("st_short_length", {5, 0, 0, 0, 0}, E::Truncated);
    });
    add("st_header_past_eof", [] {
      return st_case("st_header_past_eof", safetensors_bytes_with_length(1000, "{}", 0),
                     E::Truncated);
    });
    add("st_header_too_large", [] {
      return st_case("st_header_too_large", safetensors_bytes_with_length(100000001, "{}", 0),
                     E::HeaderTooLarge);
    });
    add("st_header_length_max", [] {
      return st_case("st_header_length_max", safetensors_bytes_with_length(~uint64_t(0), "{}", 0),
                     E::HeaderTooLarge);
    });
    // ---- safetensors: JSON
    add("st_empty_header", [] { return st_header("st_empty_header", "", 0, E::BadJson); });
    add("st_bad_json",
        [] { return st_header("st_bad_json", R"({"a":{"dtype":"F32",)", 0, E::BadJson); });
    add("st_trailing_garbage",
        [] { return st_header("st_trailing_garbage", "{}   x", 0, E::BadJson); });
    add("st_nul_padding", [] {
      return st_header("st_nul_padding", std::string("{}\0\0\0\0\0\0", 8), 0, E::BadJson);
    });
    add("st_invalid_utf8", [] {
      return st_header("st_invalid_utf8",
                       "{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                       E::BadJson);
    });
    add("st_byte_order_mark",
        [] { return st_header("st_byte_order_mark", "\xEF\xBB\xBF{}", 0, E::BadJson); });
    add("st_too_deep", [] {
      return st_header("st_too_deep",
                       "{\"a\":" + std::string(600, '[') + std::string(600, ']') + "}", 0,
                       E::BadJson);
    });
    add("st_non_object", [] { return st_header("st_non_object", "[1,2,3]", 0, E::BadHeader); });
    // ---- safetensors: entries
    add("st_entry_not_object",
        [] { return st_header("st_entry_not_object", R"({"a":5})", 0, E::BadHeader, "a"); });
    add("st_missing_dtype", [] {
      return st_header("st_missing_dtype", R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8,
                       E::BadHeader, "a");
    });
    add("st_extra_key", [] {
      return st_header("st_extra_key",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8,
                       E::BadHeader, "a");
    });
    add("st_duplicate_key_in_entry", [] {
      return st_header("st_duplicate_key_in_entry",
                       R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8,
                       E::BadHeader, "a");
    });
    add("st_dtype_not_string", [] {
      return st_header("st_dtype_not_string",
                       R"({"a":{"dtype":5,"shape":[2],"data_offsets":[0,8]}})", 8, E::BadHeader,
                       "a");
    });
    add("st_unknown_dtype", [] {
      return st_header("st_unknown_dtype",
                       R"({"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", 8,
                       E::UnknownDtype, "a");
    });
    add("st_shape_not_array", [] {
      return st_header("st_shape_not_array",
                       R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8, E::BadHeader,
                       "a");
    });
    add("st_negative_shape", [] {
      return st_header("st_negative_shape",
                       R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8,
                       E::BadHeader, "a");
    });
    add("st_float_shape", [] {
      return st_header("st_float_shape",
                       R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
                       E::BadHeader, "a");
    });
    add("st_offsets_one_value", [] {
      return st_header("st_offsets_one_value",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", 8, E::BadHeader,
                       "a");
    });
    add("st_offsets_negative", [] {
      return st_header("st_offsets_negative",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8,
                       E::BadHeader, "a");
    });
    add("st_offsets_beyond_u64", [] {
      return st_header(
          "st_offsets_beyond_u64",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]}})", 8,
          E::BadHeader, "a");
    });
    add("st_begin_after_end", [] {
      return st_header("st_begin_after_end",
                       R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", 8,
                       E::OffsetOutOfRange, "a");
    });
    add("st_size_mismatch", [] {
      return st_header("st_size_mismatch",
                       R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20,
                       E::ShapeMismatch, "a");
    });
    add("st_subbyte_uneven", [] {
      return st_header("st_subbyte_uneven",
                       R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2,
                       E::ShapeMismatch, "a");
    });
    add("st_element_count_overflow", [] {
      return st_header(
          "st_element_count_overflow",
          R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
          E::SizeOverflow, "a");
    });
    add("st_bit_count_overflow", [] {
      return st_header(
          "st_bit_count_overflow",
          R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})", 0,
          E::SizeOverflow, "a");
    });
    add("st_dimension_too_large", [] {
      return st_header("st_dimension_too_large",
                       R"({"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}})",
                       0, E::SizeOverflow, "a");
    });
    add("st_offset_huge", [] {
      return st_header(
          "st_offset_huge",
          R"({"a":{"dtype":"U8","shape":[15],"data_offsets":[18446744073709551600,18446744073709551615]}})",
          15, E::OffsetOutOfRange, "a");
    });
    add("st_offset_past_data", [] {
      return st_header("st_offset_past_data",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4,
                       E::OffsetOutOfRange, "a");
    });
    // ---- safetensors: layout
    add("st_overlap", [] {
      return st_header(
          "st_overlap",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[4,7]}})",
          8, E::Overlap, "b");
    });
    add("st_empty_tensor_inside_another", [] {
      return st_header(
          "st_empty_tensor_inside_another",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
          8, E::Overlap, "e");
    });
    add("st_hole", [] {
      return st_header(
          "st_hole",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[10,13]}})",
          13, E::Hole, "b");
    });
    add("st_hole_at_start", [] {
      return st_header("st_hole_at_start",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, E::Hole,
                       "a");
    });
    add("st_data_not_covered",
        [] { return st_header("st_data_not_covered", kGood, 16, E::DataNotCovered); });
    add("st_data_without_tensors",
        [] { return st_header("st_data_without_tensors", "{}", 8, E::DataNotCovered); });
    add("st_duplicate_name", [] {
      return st_header(
          "st_duplicate_name",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
          8, E::DuplicateName, "a");
    });
    // ---- safetensors: metadata
    add("st_metadata_not_object", [] {
      return st_header("st_metadata_not_object", R"({"__metadata__":"x"})", 0, E::BadMetadata);
    });
    add("st_metadata_non_string", [] {
      return st_header("st_metadata_non_string", R"({"__metadata__":{"k":1}})", 0, E::BadMetadata);
    });

    // ---- sharded checkpoints and folders
    add("idx_bad_json",
        [] { return index_case("idx_bad_json", R"({"weight_map": {"a": )", E::BadIndex); });
    add("idx_not_object", [] { return index_case("idx_not_object", "[]", E::BadIndex); });
    add("idx_no_weight_map",
        [] { return index_case("idx_no_weight_map", R"({"metadata":{}})", E::BadIndex); });
    add("idx_weight_map_value_not_string", [] {
      json j = good_index();
      j["weight_map"]["a"] = 1;
      return index_case("idx_weight_map_value_not_string", j.dump(), E::BadIndex, "a");
    });
    add("idx_metadata_not_object", [] {
      json j = good_index();
      j["metadata"] = "x";
      return index_case("idx_metadata_not_object", j.dump(), E::BadIndex);
    });
    add("idx_duplicate_key", [] {
      return index_case("idx_duplicate_key",
                        std::string(R"({"weight_map":{"a":")") + kShard1 + R"(","a":")" + kShard1 +
                            R"(","b":")" + kShard1 + R"(","c":")" + kShard2 + R"("}})",
                        E::BadIndex);
    });
    add("idx_path_escape", [] {
      json j = good_index();
      j["weight_map"]["c"] = std::string("../") + kShard2;
      return index_case("idx_path_escape", j.dump(), E::BadIndex, "c");
    });
    add("idx_missing_file", [] {
      json j = good_index();
      j["weight_map"]["c"] = "model-00003-of-00002.safetensors";
      return index_case("idx_missing_file", j.dump(), E::IndexMissingFile, "c");
    });
    add("idx_missing_tensor", [] {
      json j = good_index();
      j["weight_map"]["d"] = kShard2;
      return index_case("idx_missing_tensor", j.dump(), E::IndexMissingTensor, "d");
    });
    add("idx_unlisted_tensor", [] {
      json j = good_index();
      j["weight_map"].erase("b");
      return index_case("idx_unlisted_tensor", j.dump(), E::IndexUnlistedTensor, "b", kShard1);
    });
    add("idx_tensor_in_two_shards", [] {
      Case c = index_case("idx_tensor_in_two_shards", good_index().dump(), E::DuplicateName, "a",
                          kShard2);
      c.files[1].bytes = safetensors_bytes(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"c":{"dtype":"F16","shape":[2,2],"data_offsets":[8,16]}})",
          16);
      return c;
    });
    add("idx_bad_shard", [] {
      Case c = index_case("idx_bad_shard", good_index().dump(), E::Truncated, "", kShard2);
      c.files[1].bytes = {1, 2, 3};
      return c;
    });
    add("dir_duplicate_across_files", [] {
      return ckpt_case(
          "dir_duplicate_across_files",
          // Shards of one model (without an index, other names are refused
          // before any tensor is compared).
          {{kShard1, shard1()},
           {kShard2,
            safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8)}},
          E::DuplicateName, "a", kShard2);
    });
    add("dir_bad_config_json", [] {
      return ckpt_case(
          "dir_bad_config_json",
          {{"model.safetensors", shard1()}, {"config.json", text_bytes(R"({"hidden_size": )")}},
          E::BadJson, "", "config.json");
    });
    add("dir_config_not_object", [] {
      return ckpt_case("dir_config_not_object",
                       {{"model.safetensors", shard1()}, {"config.json", text_bytes("[1]")}},
                       E::BadJson, "", "config.json");
    });

    // ---- .qpack: header
    add("qp_empty_file", [] { return qp_case("qp_empty_file", {}, E::BadMagic); });
    add("qp_bad_magic", [] {
      Bytes f = sample_qpack(Codec::None);
      f[1] = 'X';
      return qp_case("qp_bad_magic", f, E::BadMagic);
    });
    add("qp_safetensors_named_qpack", [] {
      return qp_case("qp_safetensors_named_qpack", safetensors_bytes(kGood, 11), E::BadMagic);
    });
    add("qp_truncated_header", [] {
      Bytes f = sample_qpack(Codec::None);
      f.resize(20);
      return qp_case("qp_truncated_header", f, E::Truncated);
    });
    add("qp_future_major_version", [] {
      Bytes f = sample_qpack(Codec::None);
      edit_header(f, [](QpackHeader& h) { h.version_major = kQpackVersionMajorMax + 1; });
      return qp_case("qp_future_major_version", f, E::UnsupportedVersion);
    });
    add("qp_header_size_not_64", [] {
      Bytes f = sample_qpack(Codec::None);
      edit_header(f, [](QpackHeader& h) { h.header_size = 128; });
      return qp_case("qp_header_size_not_64", f, E::UnsupportedVersion);
    });
    add("qp_header_checksum_flip", [] {
      Bytes f = sample_qpack(Codec::None);
      edit_header(
          f, [](QpackHeader& h) { h.header_xxh3 ^= 1; }, false);
      return qp_case("qp_header_checksum_flip", f, E::HeaderChecksumMismatch);
    });
    add("qp_header_field_flip", [] {
      Bytes f = sample_qpack(Codec::None);
      // manifest_offset, checksum left stale
      edit_header(
          f, [](QpackHeader& h) { h.manifest_offset ^= uint64_t(0x40) << 32; }, false);
      return qp_case("qp_header_field_flip", f, E::HeaderChecksumMismatch);
    });
    add("qp_truncated", [] {
      Bytes f = sample_qpack(Codec::None);
      f.resize(f.size() - 10);
      return qp_case("qp_truncated", f, E::FileSizeMismatch);
    });
    add("qp_bytes_appended", [] {
      Bytes f = sample_qpack(Codec::None);
      f.resize(f.size() + 64, 0);
      return qp_case("qp_bytes_appended", f, E::FileSizeMismatch);
    });
    add("qp_manifest_not_at_end", [] {
      Bytes f = sample_qpack(Codec::None);
      edit_header(f, [](QpackHeader& h) { h.manifest_size -= 1; });
      return qp_case("qp_manifest_not_at_end", f, E::BadManifest);
    });
    add("qp_manifest_in_header", [] {
      Bytes f = sample_qpack(Codec::None);
      edit_header(f, [n = f.size()](QpackHeader& h) {
        h.manifest_offset = 8;
        h.manifest_size = n - 8;
      });
      return qp_case("qp_manifest_in_header", f, E::BadManifest);
    });
    // ---- .qpack: manifest
    add("qp_manifest_checksum_flip", [] {
      Bytes f = sample_qpack(Codec::None);
      f[manifest_offset(f) + 5] ^= 0x01;
      return qp_case("qp_manifest_checksum_flip", f, E::ManifestChecksumMismatch);
    });
    add("qp_manifest_bad_json", [] {
      return qp_case("qp_manifest_bad_json",
                     with_manifest_text(sample_qpack(Codec::None), R"({"tensors":[)"),
                     E::BadManifestJson);
    });
    add("qp_manifest_duplicate_key", [] {
      const Bytes base = sample_qpack(Codec::None);
      std::string text = read_manifest(base).dump();
      text.insert(1, R"("generator":"x",)");
      return qp_case("qp_manifest_duplicate_key", with_manifest_text(base, text),
                     E::BadManifestJson);
    });
    add("qp_manifest_not_object", [] {
      return qp_case("qp_manifest_not_object", with_manifest_text(sample_qpack(Codec::None), "[]"),
                     E::BadManifest);
    });
    add("qp_manifest_missing_tensors", [] {
      return qp_case("qp_manifest_missing_tensors",
                     edit_manifest([](json& m) { m.erase("tensors"); }), E::BadManifest);
    });
    add("qp_manifest_missing_source", [] {
      return qp_case("qp_manifest_missing_source",
                     edit_manifest([](json& m) { m.erase("source"); }), E::BadManifest);
    });
    add("qp_manifest_shape_wrong_type", [] {
      return qp_case("qp_manifest_shape_wrong_type",
                     edit_manifest([](json& m) { tensor_json(m, "emb")["shape"] = "3x4"; }),
                     E::BadManifest, "emb");
    });
    add("qp_manifest_metadata_non_string", [] {
      return qp_case("qp_manifest_metadata_non_string",
                     edit_manifest([](json& m) { m["source"]["metadata"]["k"] = 1; }),
                     E::BadManifest);
    });
    add("qp_version_mismatch", [] {
      return qp_case("qp_version_mismatch",
                     edit_manifest([](json& m) { m["qpack_version"] = "2.0"; }),
                     E::ManifestMismatch);
    });
    add("qp_bad_alignment", [] {
      return qp_case("qp_bad_alignment", edit_manifest([](json& m) { m["alignment"] = 48; }),
                     E::BadManifest);
    });
    add("qp_unknown_dtype", [] {
      return qp_case("qp_unknown_dtype",
                     edit_manifest([](json& m) { tensor_json(m, "emb")["dtype"] = "F17"; }),
                     E::UnknownDtype, "emb");
    });
    add("qp_unknown_encoding", [] {
      return qp_case("qp_unknown_encoding",
                     edit_manifest([](json& m) { tensor_json(m, "emb")["encoding"] = "lz"; }),
                     E::BadManifest, "emb");
    });
    add("qp_duplicate_tensor_names", [] {
      return qp_case("qp_duplicate_tensor_names",
                     edit_manifest([](json& m) { tensor_json(m, "norm")["name"] = "emb"; }),
                     E::DuplicateName, "emb");
    });
    add("qp_shape_overflow", [] {
      return qp_case("qp_shape_overflow", edit_manifest([](json& m) {
                       tensor_json(m, "emb")["shape"] = {uint64_t(1) << 40, uint64_t(1) << 40};
                     }),
                     E::ManifestMismatch, "emb");
    });
    // ---- .qpack: sections
    add("qp_section_out_of_range", [] {
      return qp_case("qp_section_out_of_range", edit_manifest([](json& m) {
                       tensor_json(m, "emb")["sections"]["data"]["offset"] = uint64_t(1) << 20;
                     }),
                     E::SectionOutOfRange, "emb");
    });
    add("qp_section_in_header", [] {
      return qp_case("qp_section_in_header", edit_manifest([](json& m) {
                       tensor_json(m, "emb")["sections"]["data"]["offset"] = 0;
                     }),
                     E::SectionOutOfRange, "emb");
    });
    add("qp_section_offset_overflow", [] {
      return qp_case("qp_section_offset_overflow", edit_manifest([](json& m) {
                       tensor_json(m, "emb")["sections"]["data"]["offset"] = ~uint64_t(63);
                     }),
                     E::SectionOutOfRange, "emb");
    });
    add("qp_section_into_manifest", [] {
      return qp_case("qp_section_into_manifest", edit_manifest([](json& m) {
                       json& s = tensor_json(m, "z")["sections"]["data"];
                       s["offset"] = s["offset"].get<uint64_t>() + 64;
                     }),
                     E::SectionOutOfRange, "z");
    });
    add("qp_sections_overlap", [] {
      return qp_case("qp_sections_overlap", edit_manifest([](json& m) {
                       json& s = tensor_json(m, "w")["sections"];
                       s["scales"]["offset"] = s["codes"]["offset"];
                     }),
                     E::SectionOverlap, "w");
    });
    add("qp_section_misaligned", [] {
      return qp_case("qp_section_misaligned", edit_manifest([](json& m) {
                       json& s = tensor_json(m, "emb")["sections"]["data"];
                       s["offset"] = s["offset"].get<uint64_t>() + 8;
                     }),
                     E::SectionMisaligned, "emb");
    });
    add("qp_raw_size_mismatch", [] {
      return qp_case("qp_raw_size_mismatch", edit_manifest([](json& m) {
                       json& s = tensor_json(m, "w")["sections"]["codes"];
                       s["raw_size"] = s["raw_size"].get<uint64_t>() - 1;
                       s["size"] = s["raw_size"];
                     }),
                     E::ManifestMismatch, "w");
    });
    add("qp_size_not_raw_size", [] {
      return qp_case("qp_size_not_raw_size", edit_manifest([](json& m) {
                       json& s = tensor_json(m, "emb")["sections"]["data"];
                       s["size"] = s["size"].get<uint64_t>() - 4;
                     }),
                     E::ManifestMismatch, "emb");
    });
    add("qp_group_size_unresolved", [] {
      return qp_case("qp_group_size_unresolved", edit_manifest([](json& m) {
                       tensor_json(m, "w")["quant"]["group_size"] = 64;
                     }),
                     E::ManifestMismatch, "w");
    });
    add("qp_group_size_zero", [] {
      return qp_case("qp_group_size_zero",
                     edit_manifest([](json& m) { tensor_json(m, "w")["quant"]["group_size"] = 0; }),
                     E::ManifestMismatch, "w");
    });
    add("qp_axis_out_of_range", [] {
      return qp_case("qp_axis_out_of_range",
                     edit_manifest([](json& m) { tensor_json(m, "w")["quant"]["axis"] = 2; }),
                     E::ManifestMismatch, "w");
    });
    add("qp_bits_unsupported", [] {
      return qp_case("qp_bits_unsupported",
                     edit_manifest([](json& m) { tensor_json(m, "w")["quant"]["bits"] = 5; }),
                     E::UnsupportedScheme, "w");
    });
    add("qp_scale_dtype_unsupported", [] {
      return qp_case("qp_scale_dtype_unsupported", edit_manifest([](json& m) {
                       tensor_json(m, "w")["quant"]["scale_dtype"] = "F64";
                     }),
                     E::UnsupportedScheme, "w");
    });
    add("qp_quantized_integer_dtype", [] {
      return qp_case("qp_quantized_integer_dtype",
                     edit_manifest([](json& m) { tensor_json(m, "w")["dtype"] = "I16"; }),
                     E::ManifestMismatch, "w");
    });
    add("qp_symmetric_with_zeros", [] {
      return qp_case("qp_symmetric_with_zeros", edit_manifest([](json& m) {
                       tensor_json(m, "w")["quant"]["symmetric"] = true;
                     }),
                     E::ManifestMismatch, "w");
    });
    // quant.zero_point (format.md §3.1): "integer" needs a 2.x file, only
    // asymmetric tensors have one, and its value is "float" or "integer".
    add("qp_zero_point_integer_in_v1", [] {
      return qp_case("qp_zero_point_integer_in_v1", edit_manifest([](json& m) {
                       tensor_json(m, "w")["quant"]["zero_point"] = "integer";
                     }),
                     E::ManifestMismatch, "w");
    });
    add("qp_zero_point_unknown", [] {
      return qp_case("qp_zero_point_unknown", edit_manifest_v2([](json& m) {
                       tensor_json(m, "w")["quant"]["zero_point"] = "int4";
                     }),
                     E::UnsupportedScheme, "w");
    });
    add("qp_zero_point_wrong_case", [] {
      return qp_case("qp_zero_point_wrong_case", edit_manifest_v2([](json& m) {
                       tensor_json(m, "w")["quant"]["zero_point"] = "Integer";
                     }),
                     E::UnsupportedScheme, "w");
    });
    add("qp_zero_point_not_string", [] {
      return qp_case("qp_zero_point_not_string", edit_manifest_v2([](json& m) {
                       tensor_json(m, "w")["quant"]["zero_point"] = 1;
                     }),
                     E::BadManifest, "w");
    });
    add("qp_zero_point_on_symmetric", [] {
      return qp_case("qp_zero_point_on_symmetric", edit_manifest_v2([](json& m) {
                       tensor_json(m, "ws")["quant"]["zero_point"] = "integer";
                     }),
                     E::ManifestMismatch, "ws");
    });
    add("qp_zero_point_float_on_symmetric", [] {
      return qp_case("qp_zero_point_float_on_symmetric", edit_manifest([](json& m) {
                       tensor_json(m, "ws")["quant"]["zero_point"] = "float";
                     }),
                     E::ManifestMismatch, "ws");
    });
    add("qp_v2_header_v1_manifest", [] {
      Bytes f =
          edit_manifest([](json& m) { tensor_json(m, "w")["quant"]["zero_point"] = "integer"; });
      edit_header(f, [](QpackHeader& h) { h.version_major = kQpackVersionMajorIntegerZero; });
      return qp_case("qp_v2_header_v1_manifest", f, E::ManifestMismatch);
    });
    add("qp_asymmetric_without_zeros", [] {
      return qp_case("qp_asymmetric_without_zeros", edit_manifest([](json& m) {
                       tensor_json(m, "ws")["quant"]["symmetric"] = false;
                     }),
                     E::BadManifest, "ws");
    });
    add("qp_unknown_codec", [] {
      return qp_case("qp_unknown_codec", edit_manifest([](json& m) {
                       tensor_json(m, "emb")["sections"]["data"]["codec"] = "lz4";
                     }),
                     E::BadCodec, "emb");
    });
    add("qp_bad_hex_checksum", [] {
      return qp_case("qp_bad_hex_checksum", edit_manifest([](json& m) {
                       tensor_json(m, "emb")["sections"]["data"]["xxh3"] = "xyz";
                     }),
                     E::BadManifest, "emb");
    });
    add("qp_uppercase_hex_checksum", [] {
      return qp_case("qp_uppercase_hex_checksum", edit_manifest([](json& m) {
                       json& s = tensor_json(m, "emb")["sections"]["data"];
                       std::string h = s["xxh3"];
                       for (char& c : h) c = char(std::toupper(static_cast<unsigned char>(c)));
                       if (h == s["xxh3"]) h[0] = 'G';  // all digits: still not lower-case hex
                       s["xxh3"] = h;
                     }),
                     E::BadManifest, "emb");
    });
    // ---- .qpack: section contents (found by check_all / inspect --check)
    add("qp_codes_byte_flip", [] {
      Bytes f = sample_qpack(Codec::None);
      f[section_of(f, "w", "codes").first + 3] ^= 0x10;
      return qp_case("qp_codes_byte_flip", f, E::ChecksumMismatch, "w", true);
    });
    add("qp_raw_data_byte_flip", [] {
      Bytes f = sample_qpack(Codec::None);
      f[section_of(f, "emb", "data").first] ^= 0x80;
      return qp_case("qp_raw_data_byte_flip", f, E::ChecksumMismatch, "emb", true);
    });
    add("qp_stale_section_checksum", [] {
      return qp_case("qp_stale_section_checksum", edit_manifest([](json& m) {
                       tensor_json(m, "ws")["sections"]["scales"]["xxh3"] = "0123456789abcdef";
                     }),
                     E::ChecksumMismatch, "ws", true);
    });
    add("qp_bad_zstd_frame", [] {
      Bytes f = sample_qpack(Codec::Zstd);
      const auto [off, size] = section_of(f, "z", "data");
      for (uint64_t i = 0; i < size; ++i) f[off + i] = uint8_t(0xA5 ^ i);
      json m = read_manifest(f);
      tensor_json(m, "z")["sections"]["data"]["xxh3"] =
          checksum_to_hex(checksum64(f.data() + off, size));
      return qp_case("qp_bad_zstd_frame", with_manifest_text(f, m.dump()), E::Decompress, "z",
                     true);
    });
    add("qp_zstd_wrong_content_size", [] {
      Bytes f = sample_qpack(Codec::Zstd);
      const auto [off, size] = section_of(f, "z", "data");
      // A valid frame, but of 512 bytes where raw_size says 1024.
      Scratch s;
      QpackWriter w(s.file("half.qpack"), WriterOptions{Codec::Zstd, 3, false, "corpus"});
      const std::vector<float> zeros(128, 0.0f);
      w.add_raw("z", DType::F32, {128}, zeros.data(), 512);
      w.commit();
      const Bytes half = slurp(s.file("half.qpack"));
      const auto [hoff, hsize] = section_of(half, "z", "data");
      if (hsize > size) throw std::runtime_error("corpus: replacement frame too large");
      std::copy(half.begin() + long(hoff), half.begin() + long(hoff + hsize),
                f.begin() + long(off));
      json m = read_manifest(f);
      json& sec = tensor_json(m, "z")["sections"]["data"];
      sec["size"] = hsize;
      sec["xxh3"] = checksum_to_hex(checksum64(f.data() + off, hsize));
      return qp_case("qp_zstd_wrong_content_size", with_manifest_text(f, m.dump()), E::Decompress,
                     "z", true);
    });
    add("qp_zstd_trailing_bytes", [] {
      Bytes f = sample_qpack(Codec::Zstd);
      const auto [off, size] = section_of(f, "z", "data");
      // The bytes after the frame are alignment padding, so growing the
      // section into them keeps it in range and non-overlapping.
      if (size % 64 == 0) throw std::runtime_error("corpus: no padding after the frame");
      json m = read_manifest(f);
      json& sec = tensor_json(m, "z")["sections"]["data"];
      sec["size"] = size + 1;
      sec["xxh3"] = checksum_to_hex(checksum64(f.data() + off, size + 1));
      return qp_case("qp_zstd_trailing_bytes", with_manifest_text(f, m.dump()), E::Decompress, "z",
                     true);
    });
    return t;
  }();
  return table;
}

}  // namespace

Bytes safetensors_bytes_with_length(uint64_t header_length, const std::string& header,
                                    uint64_t data_bytes) {
  Bytes b(8);
  store_le64(b.data(), header_length);
  b.insert(b.end(), header.begin(), header.end());
  const Bytes d = pattern(data_bytes, uint32_t(header.size()));
  b.insert(b.end(), d.begin(), d.end());
  return b;
}

Bytes safetensors_bytes(const std::string& header, uint64_t data_bytes) {
  return safetensors_bytes_with_length(header.size(), header, data_bytes);
}

uint64_t manifest_offset(const Bytes& f) { return QpackHeader::load(f.data()).manifest_offset; }

json read_manifest(const Bytes& f) {
  const QpackHeader h = QpackHeader::load(f.data());
  const auto begin = f.begin() + long(h.manifest_offset);
  return json::parse(begin, begin + long(h.manifest_size));
}

void fix_checksums(Bytes& f) {
  edit_header(f, [&f](QpackHeader& h) {
    h.manifest_xxh3 = checksum64(f.data() + h.manifest_offset, h.manifest_size);
  });
}

Bytes with_manifest_text(const Bytes& file, const std::string& text) {
  const uint64_t off = manifest_offset(file);
  Bytes f(file.begin(), file.begin() + long(off));
  f.insert(f.end(), text.begin(), text.end());
  edit_header(f, [&](QpackHeader& h) {
    h.manifest_size = text.size();
    h.file_size = f.size();
    h.manifest_xxh3 = checksum64(f.data() + off, text.size());
  });
  return f;
}

Bytes sample_qpack(Codec codec) {
  static std::map<int, Bytes> cache;
  const auto it = cache.find(int(codec));
  if (it != cache.end()) return it->second;

  Scratch s;
  const std::string path = s.file("sample.qpack");
  {
    QpackWriter w(path, WriterOptions{codec, 3, false, "qpack-corpus"});
    w.set_source(json{{"format", "pt"}}, json{{"hidden_size", 16}});
    const Bytes emb = pattern(48, 1);
    w.add_raw("emb", DType::F32, {3, 4}, emb.data(), emb.size());

    QuantScheme q4;
    q4.bits = 4;
    q4.group_size = 8;
    q4.axis = 0;
    q4.symmetric = false;
    q4.scale_dtype = DType::F16;
    const GroupLayout l4 = make_layout({16, 8}, q4);
    const Bytes codes = pattern(l4.codes_bytes(), 2),
                scales = pattern(l4.params_bytes(q4.scale_dtype), 3),
                zeros = pattern(l4.params_bytes(q4.scale_dtype), 4);
    w.add_quantized("w", DType::F16, {16, 8}, q4, codes.data(), scales.data(), zeros.data());

    const Bytes norm = pattern(32, 5);
    w.add_raw("norm", DType::BF16, {16}, norm.data(), norm.size());

    QuantScheme q8;
    q8.bits = 8;
    q8.group_size = 16;
    q8.axis = 1;
    q8.symmetric = true;
    q8.scale_dtype = DType::BF16;
    const GroupLayout l8 = make_layout({8, 16}, q8);
    const Bytes codes8 = pattern(l8.codes_bytes(), 6),
                scales8 = pattern(l8.params_bytes(q8.scale_dtype), 7);
    w.add_quantized("ws", DType::F32, {8, 16}, q8, codes8.data(), scales8.data(), nullptr);

    const std::vector<float> z(256, 0.0f);
    w.add_raw("z", DType::F32, {256}, z.data(), z.size() * 4);
    w.commit();
  }
  Bytes b = slurp(path);
  cache[int(codec)] = b;
  return b;
}

const std::vector<std::string>& must_fail_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& [name, _] : registry()) n.push_back(name);
    return n;
  }();
  return names;
}

std::vector<std::string> single_file_names() {
  std::vector<std::string> out;
  for (const std::string& n : must_fail_names())
    if (n.rfind("st_", 0) == 0 || n.rfind("qp_", 0) == 0) out.push_back(n);
  return out;
}

Case make_must_fail(const std::string& name) {
  for (const auto& [n, build] : registry())
    if (n == name) return build();
  throw std::runtime_error("corpus: no case " + name);
}

std::string materialize(const Case& c, const std::string& dir) {
  for (const File& f : c.files) {
    const std::string path = dir + "/" + f.name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(f.bytes.data()), std::streamsize(f.bytes.size()));
    if (!out) throw std::runtime_error("corpus: cannot write " + path);
  }
  return c.open.empty() ? dir : dir + "/" + c.open;
}

std::vector<Case> valid_samples() {
  std::vector<Case> out;
  auto st = [&](const std::string& name, Bytes b) {
    Case c;
    c.name = name;
    c.kind = Kind::Safetensors;
    c.files.push_back({"x.safetensors", std::move(b)});
    c.open = "x.safetensors";
    out.push_back(std::move(c));
  };
  st("st_good", safetensors_bytes(kGood, 11));
  st("st_empty_header_object", safetensors_bytes("{}", 0));
  st("st_padded_with_metadata",
     safetensors_bytes(
         R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}})"
         "      ",
         3));
  st("st_zero_sized",
     safetensors_bytes(
         R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})",
         8));
  {
    // Every dtype, through the real writer.
    Scratch s;
    std::vector<TensorToWrite> ts;
    std::vector<Bytes> keep;
    const char* names[] = {"BOOL", "U8",  "I8",   "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16",
                           "U16",  "F16", "BF16", "I32",     "U32",     "F32",     "F64",
                           "I64",  "U64", "C64",  "F4",      "F6_E2M3", "F6_E3M2"};
    for (const char* n : names) {
      const DType dt = *dtype_from_string(n);
      TensorToWrite t;
      t.name = std::string("t_") + n;
      t.dtype = dt;
      t.shape = {2, 4};
      t.nbytes = uint64_t(8 * dtype_bits(dt) / 8);
      keep.push_back(pattern(t.nbytes, uint32_t(keep.size())));
      t.data = keep.back().data();
      ts.push_back(t);
    }
    write_safetensors(s.file("all.safetensors"), ts, {{"k", "v"}}, false);
    st("st_every_dtype", slurp(s.file("all.safetensors")));
  }
  for (Codec c : {Codec::None, Codec::Zstd}) {
    Case q;
    q.name = c == Codec::None ? "qp_sample" : "qp_sample_zstd";
    q.kind = Kind::Qpack;
    q.files.push_back({"m.qpack", sample_qpack(c)});
    q.open = "m.qpack";
    out.push_back(std::move(q));
  }
  return out;
}

}  // namespace qpack::corpus
