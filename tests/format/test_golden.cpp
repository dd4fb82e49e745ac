// Golden bytes: the worked example of docs/format.md §9 and a tiny
// safetensors file. A change here is a format change: update the spec (and
// its version rules) first.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using test::TempDir;

const char* const kGoldenHeaderDump =
    "00000000: 8951 504b 0d0a 1a0a 0100 0000 4000 0000  .QPK........@...\n"
    "00000010: 4001 0000 0000 0000 d702 0000 0000 0000  @...............\n"
    "00000020: 043c 962a 1be8 499f 1704 0000 0000 0000  .<.*..I.........\n"
    "00000030: 0000 0000 0000 0000 d954 49d4 7eaa ae5f  .........TI.~.._\n";
constexpr uint64_t kGoldenFileSize = 1047;
const char* const kGoldenFileXxh3 = "de6778d57dd444c9";

// The file of docs/format.md §9.
std::vector<uint8_t> worked_example(const TempDir& dir) {
  WriterOptions o;
  o.generator = "qpack 0.1.0";
  {
    QpackWriter w(dir.file("example.qpack"), o);
    w.set_source(nlohmann::json{{"format", "pt"}}, nullptr);
    const float bias[2] = {1.0f, -2.0f};
    w.add_raw("bias", DType::F32, {2}, bias, sizeof bias);
    QuantScheme s;
    s.bits = 4;
    s.group_size = 8;
    s.axis = -1;
    s.symmetric = false;
    s.scale_dtype = DType::F16;
    // quantization.md §8's worked example.
    const uint8_t codes[8] = {0x20, 0x64, 0xA8, 0xFC, 0xF0, 0x00, 0x00, 0x00};
    const uint8_t scales[4] = {0x00, 0x38, 0x44, 0x30};
    const uint8_t zeros[4] = {0x00, 0x00, 0x00, 0xBC};
    w.add_quantized("w", DType::F16, {1, 10}, s, codes, scales, zeros);
    w.commit();
  }
  return test::read_file(dir.file("example.qpack"));
}

// `xxd`-style lines: "00000000: 8951 504b 0d0a 1a0a 0100 0000 4000 0000  .QPK........@..."
std::string hex_dump(const std::vector<uint8_t>& b, size_t from, size_t to) {
  std::string out;
  for (size_t off = from; off < to; off += 16) {
    char line[128];
    int n = std::snprintf(line, sizeof line, "%08zx:", off);
    std::string ascii;
    for (size_t i = 0; i < 16; ++i) {
      if (i % 2 == 0) line[n++] = ' ';
      if (off + i < to) {
        n += std::snprintf(line + n, sizeof line - size_t(n), "%02x", b[off + i]);
        const uint8_t c = b[off + i];
        ascii += c >= 0x20 && c < 0x7f ? char(c) : '.';
      } else {
        n += std::snprintf(line + n, sizeof line - size_t(n), "  ");
      }
    }
    out += std::string(line, size_t(n)) + "  " + ascii + "\n";
  }
  return out;
}

std::string read_doc() {
  std::ifstream f(test::source_dir() + "/docs/format.md");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(Golden, WorkedExampleHeader) {
  TempDir dir;
  const auto f = worked_example(dir);
  const std::string dump = hex_dump(f, 0, 64);
  std::printf("%s", hex_dump(f, 0, f.size()).c_str());
  EXPECT_EQ(dump, kGoldenHeaderDump);
}

TEST(Golden, WorkedExampleWholeFile) {
  TempDir dir;
  const auto f = worked_example(dir);
  EXPECT_EQ(f.size(), kGoldenFileSize);
  EXPECT_EQ(checksum_to_hex(checksum64(f.data(), f.size())), kGoldenFileXxh3);
  const auto q = QpackFile::open(dir.file("example.qpack"));
  q->check_all();
  const QpackTensor* w = q->find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->scheme.axis, 1);  // -1 resolved
  EXPECT_EQ(w->codes.offset, 128u);
  EXPECT_EQ(w->scales.offset, 192u);
  EXPECT_EQ(w->zeros.offset, 256u);
}

// The spec shows the same bytes as the writer produces: the header and
// sections hex dump and the manifest text appear verbatim in docs/format.md.
TEST(Golden, SpecShowsTheseBytes) {
  TempDir dir;
  const auto f = worked_example(dir);
  const std::string doc = read_doc();
  ASSERT_FALSE(doc.empty()) << "docs/format.md not found";
  uint64_t moff = 0;
  for (int i = 7; i >= 0; --i) moff = (moff << 8) | f[16 + size_t(i)];
  const std::string sections = hex_dump(f, 0, moff);
  EXPECT_NE(doc.find(sections), std::string::npos) << "docs/format.md §9 should contain:\n"
                                                   << sections;
  const std::string manifest(f.begin() + long(moff), f.end());
  EXPECT_NE(doc.find(manifest), std::string::npos) << "docs/format.md §9 should contain:\n"
                                                   << manifest;
}

TEST(Golden, TinySafetensors) {
  TempDir dir;
  const uint8_t a[2] = {1, 2};
  write_safetensors(dir.file("t.safetensors"), {{"a", DType::U8, {2}, a, 2}}, {{"k", "v"}}, false);
  const auto b = test::read_file(dir.file("t.safetensors"));
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[0,2],"dtype":"U8","shape":[2]}})";
  std::string want(8, '\0');
  const size_t padded = (header.size() + 7) / 8 * 8;
  want[0] = char(padded);
  want += header + std::string(padded - header.size(), ' ');
  want += "\x01\x02";
  EXPECT_EQ(std::string(b.begin(), b.end()), want);
}

}  // namespace
}  // namespace qpack
