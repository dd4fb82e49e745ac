// libFuzzer target: QpackFile::from_memory, then every read path.
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "fuzz/fuzz_entry.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"

namespace qpack::fuzz {

namespace {

// Harness-side repair (not the code under test): see fuzz_entry.hpp.
void repair(std::vector<uint8_t>& f, bool sections) {
  if (f.size() < QpackHeader::kSize) return;
  const uint64_t size = f.size();
  QpackHeader h = QpackHeader::load(f.data());
  h.file_size = size;
  h.encode(f.data());
  const uint64_t moff = h.manifest_offset;
  if (moff < QpackHeader::kSize || moff > size) return;
  // nlohmann's dump recurses; very deep manifests are left for the reader
  // (which caps depth) rather than risking the harness's stack.
  size_t opens = 0;
  for (uint64_t i = moff; i < size; ++i) opens += f[i] == '[' || f[i] == '{';
  if (sections && opens < 4096) {
    nlohmann::json m = nlohmann::json::parse(f.begin() + long(moff), f.end(), nullptr, false);
    if (m.is_object() && m.contains("tensors") && m["tensors"].is_array()) {
      for (auto& t : m["tensors"]) {
        if (!t.is_object() || !t.contains("sections") || !t["sections"].is_object()) continue;
        for (auto& [k, s] : t["sections"].items()) {
          if (!s.is_object() || !s.contains("offset") || !s.contains("size")) continue;
          if (!s["offset"].is_number_unsigned() || !s["size"].is_number_unsigned()) continue;
          const uint64_t o = s["offset"].get<uint64_t>(), n = s["size"].get<uint64_t>();
          if (o > moff || n > moff - o) continue;
          s["xxh3"] = checksum_to_hex(checksum64(f.data() + o, n));
        }
      }
      const std::string text = m.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      f.resize(moff);
      f.insert(f.end(), text.begin(), text.end());
      h.file_size = f.size();
    }
  }
  h.manifest_size = f.size() - moff;
  h.manifest_xxh3 = checksum64(f.data() + moff, f.size() - moff);
  h.seal();
  h.encode(f.data());
}

}  // namespace

int qpack_reader(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::vector<uint8_t> file(data + 1, data + size);
  if (mode & 1) repair(file, (mode & 2) != 0);
  try {
    const auto f = QpackFile::from_memory(file.data(), file.size(), "fuzz.qpack");
    // Accepted: every section lies in the data area, and the sections a
    // tensor must have are there with the sizes its layout implies.
    for (const QpackTensor& t : f->tensors()) {
      for (const TensorSection& ts : t.sections())
        if (!ts.section->present || ts.section->raw_size != ts.raw_size) __builtin_trap();
      for (const Section* s : {&t.data, &t.codes, &t.scales, &t.zeros}) {
        if (!s->present) continue;
        if (s->offset < QpackHeader::kSize || s->offset > f->file_size() ||
            s->size > f->file_size() - s->offset)
          __builtin_trap();
        try {
          const SectionBytes b = f->read(t, *s);
          if (b.size != s->raw_size) __builtin_trap();
          if (b.size > 0) {
            volatile uint8_t sink = b.data[0] ^ b.data[b.size - 1];
            (void)sink;
          }
        } catch (const Error&) {
        }
        f->release(*s);
      }
      (void)t.source_bytes();
      (void)t.stored_bytes();
      (void)f->find(t.name);
    }
    (void)f->source_metadata();
    (void)f->source_config();
    f->check_all();
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace qpack::fuzz

#ifndef QPACK_FUZZ_REPLAY
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qpack::fuzz::qpack_reader(data, size);
}
#endif
