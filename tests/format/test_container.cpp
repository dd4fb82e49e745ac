// The .qpack container: writer -> reader round trips, layout rules of
// docs/format.md, codecs, forward compatibility and writer misuse.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "format/corpus.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using nlohmann::json;
using test::TempDir;

std::vector<uint8_t> random_bytes(std::mt19937_64& rng, uint64_t n, bool compressible = false) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < b.size(); ++i) b[i] = compressible ? uint8_t(i / 64) : uint8_t(rng());
  return b;
}

uint64_t le64(const std::vector<uint8_t>& f, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | f[at + size_t(i)];
  return v;
}

struct RawSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

struct QuantSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  QuantScheme scheme;  // as requested (may be unresolved)
  std::vector<uint8_t> codes, scales, zeros;
};

// The manifest's "quant" object of tensor `name`.
const json& corpus_quant(const QpackFile& f, const std::string& name) {
  for (const json& t : f.manifest()["tensors"])
    if (t["name"] == name) return t["quant"];
  throw std::runtime_error("no tensor " + name);
}

std::vector<RawSpec> raw_specs(std::mt19937_64& rng, bool compressible) {
  std::vector<RawSpec> out;
  const std::vector<std::vector<int64_t>> shapes = {{}, {1}, {0}, {5, 0}, {3, 7}, {2, 2, 3}, {100}};
  for (int d = 0; d < 20; ++d) {
    const DType dt = DType(d);
    for (const auto& s : shapes) {
      uint64_t n = 1;
      for (int64_t x : s) n *= uint64_t(x);
      if (n * uint64_t(dtype_bits(dt)) % 8) continue;
      out.push_back({std::string("raw.") + dtype_name(dt) + "." + std::to_string(out.size()), dt, s,
                     random_bytes(rng, n * uint64_t(dtype_bits(dt)) / 8, compressible)});
    }
  }
  return out;
}

std::vector<QuantSpec> quant_specs(std::mt19937_64& rng, bool compressible) {
  std::vector<QuantSpec> out;
  const std::vector<std::vector<int64_t>> shapes = {{1},    {7},    {16, 8}, {3, 10, 5},
                                                    {0, 4}, {4, 0}, {33, 2}};
  const int bits[] = {2, 3, 4, 8};
  const int64_t groups[] = {0, 8, 10, 64};
  const DType sds[] = {DType::F16, DType::BF16, DType::F32};
  const DType srcs[] = {DType::F16, DType::BF16, DType::F32};
  for (const auto& shape : shapes) {
    for (int k = 0; k < 4; ++k) {
      QuantSpec q;
      q.shape = shape;
      q.dtype = srcs[rng() % 3];
      q.scheme.bits = bits[rng() % 4];
      q.scheme.group_size = groups[rng() % 4];
      q.scheme.axis =
          int(rng() % shape.size()) - (rng() % 2 ? int(shape.size()) : 0);  // negative too
      q.scheme.symmetric = rng() % 2;
      q.scheme.scale_dtype = sds[rng() % 3];
      q.name = "q." + std::to_string(out.size());
      const GroupLayout l = make_layout(shape, q.scheme, q.name);
      const uint64_t sb = l.params_bytes(q.scheme.scale_dtype);
      q.codes = random_bytes(rng, l.codes_bytes(), compressible);
      q.scales = random_bytes(rng, sb, compressible);
      if (!q.scheme.symmetric) q.zeros = random_bytes(rng, sb, compressible);
      out.push_back(std::move(q));
    }
  }
  return out;
}

void write_all(const std::string& path, const WriterOptions& o, const std::vector<RawSpec>& raws,
               const std::vector<QuantSpec>& quants) {
  QpackWriter w(path, o);
  w.set_source(json{{"format", "pt"}, {"x", "y"}},
               json{{"hidden_size", 8}, {"nested", {{"a", {1, 2}}}}});
  // Interleaved, so that tensor order is the order added, not grouped by kind.
  size_t i = 0, j = 0;
  while (i < raws.size() || j < quants.size()) {
    if (i < raws.size()) {
      const auto& r = raws[i++];
      w.add_raw(r.name, r.dtype, r.shape, r.bytes.data(), r.bytes.size());
    }
    if (j < quants.size()) {
      const auto& q = quants[j++];
      w.add_quantized(q.name, q.dtype, q.shape, q.scheme, q.codes.data(), q.scales.data(),
                      q.scheme.symmetric ? nullptr : q.zeros.data());
    }
  }
  w.commit();
}

void expect_bytes(const QpackFile& f, const QpackTensor& t, const Section& s,
                  const std::vector<uint8_t>& want) {
  ASSERT_TRUE(s.present);
  EXPECT_EQ(s.raw_size, want.size());
  EXPECT_EQ(s.offset % kQpackAlignment, 0u);
  const SectionBytes b = f.read(t, s);
  ASSERT_EQ(b.size, want.size());
  if (!want.empty()) {
    EXPECT_EQ(0, std::memcmp(b.data, want.data(), want.size())) << t.name;
  }
}

void round_trip(Codec codec, bool compressible) {
  std::mt19937_64 rng(test::test_seed() + uint64_t(codec) * 7 + compressible);
  TempDir dir;
  const auto raws = raw_specs(rng, compressible);
  const auto quants = quant_specs(rng, compressible);
  WriterOptions o;
  o.codec = codec;
  o.generator = "qpack test";
  write_all(dir.file("m.qpack"), o, raws, quants);

  const auto f = QpackFile::open(dir.file("m.qpack"));
  EXPECT_EQ(f->version_major(), 1);
  EXPECT_EQ(f->version_minor(), 0);
  EXPECT_EQ(f->manifest()["generator"], "qpack test");
  EXPECT_EQ(f->source_metadata(), (json{{"format", "pt"}, {"x", "y"}}));
  EXPECT_EQ(f->source_config()["nested"]["a"][1], 2);
  ASSERT_EQ(f->tensors().size(), raws.size() + quants.size());
  f->check_all();

  size_t i = 0, j = 0, k = 0;
  bool any_zstd = false;
  while (i < raws.size() || j < quants.size()) {
    if (i < raws.size()) {
      const RawSpec& r = raws[i++];
      const QpackTensor& t = f->tensors()[k++];
      EXPECT_EQ(t.name, r.name);
      EXPECT_FALSE(t.quantized);
      EXPECT_EQ(t.dtype, r.dtype);
      EXPECT_EQ(t.shape, r.shape);
      EXPECT_EQ(t.source_bytes(), r.bytes.size());
      expect_bytes(*f, t, t.data, r.bytes);
      any_zstd |= t.data.codec == Codec::Zstd;
      EXPECT_EQ(f->find(r.name), &t);
    }
    if (j < quants.size()) {
      const QuantSpec& q = quants[j++];
      const QpackTensor& t = f->tensors()[k++];
      EXPECT_EQ(t.name, q.name);
      EXPECT_TRUE(t.quantized);
      const GroupLayout l = make_layout(q.shape, q.scheme);
      // Stored resolved.
      EXPECT_EQ(t.scheme.group_size, l.group_size);
      EXPECT_EQ(t.scheme.axis, l.axis);
      EXPECT_GE(t.scheme.group_size, 1);
      EXPECT_EQ(t.scheme.bits, q.scheme.bits);
      EXPECT_EQ(t.scheme.symmetric, q.scheme.symmetric);
      EXPECT_EQ(t.scheme.scale_dtype, q.scheme.scale_dtype);
      EXPECT_EQ(t.layout.codes_bytes(), l.codes_bytes());
      expect_bytes(*f, t, t.codes, q.codes);
      expect_bytes(*f, t, t.scales, q.scales);
      EXPECT_EQ(t.zeros.present, !q.scheme.symmetric);
      if (!q.scheme.symmetric) expect_bytes(*f, t, t.zeros, q.zeros);
      any_zstd |= t.codes.codec == Codec::Zstd;
      uint64_t stored = t.codes.size + t.scales.size + (t.zeros.present ? t.zeros.size : 0);
      EXPECT_EQ(t.stored_bytes(), stored);
    }
  }
  EXPECT_EQ(any_zstd, codec == Codec::Zstd && compressible);
  if (codec == Codec::Zstd && !compressible) {
    // Incompressible sections fall back to codec none (docs/format.md §5).
    for (const QpackTensor& t : f->tensors())
      for (const Section* s : {&t.data, &t.codes, &t.scales, &t.zeros})
        if (s->present) {
          EXPECT_EQ(s->codec, Codec::None);
        }
  }

  // The same verdict from memory.
  const auto bytes = test::read_file(dir.file("m.qpack"));
  const auto g = QpackFile::from_memory(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(g->tensors().size(), f->tensors().size());
  g->check_all();
}

// checksum64 dispatches to xxhash's AVX2 kernel on CPUs that have it; the
// digest must be the default kernel's at every length (the vector loop's
// stripes, blocks and tails) and alignment.
TEST(Checksum, DispatchedKernelMatchesTheDefaultOne) {
  std::mt19937_64 rng(test::test_seed() + 21);
  std::vector<uint8_t> buf(size_t(3) << 20);
  for (auto& b : buf) b = uint8_t(rng());
  std::vector<size_t> sizes = {0,
                               1,
                               16,
                               17,
                               128,
                               129,
                               240,
                               241,
                               255,
                               256,
                               1023,
                               1024,
                               1025,
                               4096,
                               65535,
                               1u << 20,
                               (3u << 20) - 64};
  for (int i = 0; i < 200; ++i) sizes.push_back(size_t(rng() % 20000));
  for (size_t n : sizes)
    for (size_t off : {size_t(0), size_t(1), size_t(7), size_t(33)}) {
      if (n + off > buf.size()) continue;
      ASSERT_EQ(checksum64(buf.data() + off, n), detail::checksum64_baseline(buf.data() + off, n))
          << "size " << n << " offset " << off << (detail::checksum64_uses_avx2() ? " (avx2)" : "");
    }
  // Streaming over uneven pieces gives the one-shot digest.
  Checksum64 st;
  for (size_t at = 0; at < buf.size();) {
    const size_t k = std::min(buf.size() - at, size_t(rng() % 100000));
    st.update(buf.data() + at, k);
    at += k;
  }
  EXPECT_EQ(st.digest(), checksum64(buf.data(), buf.size()));
}

TEST(Container, RoundTripNoCodec) { round_trip(Codec::None, false); }
TEST(Container, RoundTripZstdCompressible) { round_trip(Codec::Zstd, true); }
TEST(Container, RoundTripZstdIncompressibleFallsBackToNone) { round_trip(Codec::Zstd, false); }

TEST(Container, LayoutFollowsTheSpec) {
  TempDir dir;
  std::mt19937_64 rng(test::test_seed() + 11);
  write_all(dir.file("m.qpack"), {}, raw_specs(rng, false), quant_specs(rng, false));
  const auto f = test::read_file(dir.file("m.qpack"));
  ASSERT_GE(f.size(), 64u);
  EXPECT_EQ(0, std::memcmp(f.data(), kQpackMagic.data(), 8));
  EXPECT_EQ(f[8] | f[9] << 8, 1);
  EXPECT_EQ(f[10] | f[11] << 8, 0);
  EXPECT_EQ(le64(f, 12) & 0xffffffffu, 64u);
  const uint64_t moff = le64(f, 16), msize = le64(f, 24);
  EXPECT_EQ(moff % 64, 0u);
  EXPECT_EQ(moff + msize, f.size());
  EXPECT_EQ(le64(f, 40), f.size());
  EXPECT_EQ(le64(f, 48), 0u);
  EXPECT_EQ(le64(f, 32), checksum64(f.data() + moff, msize));
  EXPECT_EQ(le64(f, 56), checksum64(f.data(), 56));
  // QpackHeader reads the same fields, and writes the same bytes back.
  const QpackHeader h = QpackHeader::decode(f.data(), f.size(), "m.qpack");
  EXPECT_EQ(h.manifest_offset, moff);
  EXPECT_EQ(h.manifest_size, msize);
  EXPECT_EQ(h.manifest_xxh3, le64(f, 32));
  EXPECT_EQ(h.file_size, f.size());
  EXPECT_EQ(h.header_xxh3, h.checksum());
  uint8_t again[QpackHeader::kSize];
  h.encode(again);
  EXPECT_EQ(0, std::memcmp(again, f.data(), QpackHeader::kSize));
  const std::string text(f.begin() + long(moff), f.end());
  const json m = json::parse(text);
  EXPECT_EQ(m.dump(), text) << "manifest must be the compact, key-sorted dump";
  EXPECT_EQ(m["qpack_version"], "1.0");
  EXPECT_EQ(m["alignment"], 64);
  EXPECT_EQ(m["source"]["format"], "safetensors");
  // Sections do not overlap and padding is zero.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const json& t : m["tensors"])
    for (const auto& [k, s] : t["sections"].items()) {
      EXPECT_EQ(s["xxh3"].get<std::string>().size(), 16u);
      if (s["size"] > 0)
        spans.emplace_back(s["offset"], s["offset"].get<uint64_t>() + s["size"].get<uint64_t>());
    }
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 64;
  for (const auto& [b, e] : spans) {
    ASSERT_GE(b, pos);
    for (uint64_t x = pos; x < b; ++x) ASSERT_EQ(f[x], 0) << "padding at " << x;
    pos = e;
  }
  for (uint64_t x = pos; x < moff; ++x) ASSERT_EQ(f[x], 0);
}

TEST(Container, DeterministicOutput) {
  TempDir dir;
  for (const char* n : {"a.qpack", "b.qpack"}) {
    std::mt19937_64 rng(42);
    WriterOptions o;
    o.codec = Codec::Zstd;
    write_all(dir.file(n), o, raw_specs(rng, true), quant_specs(rng, true));
  }
  EXPECT_EQ(test::read_file(dir.file("a.qpack")), test::read_file(dir.file("b.qpack")));
}

TEST(Container, HigherMinorVersionAndUnknownKeysAreReadable) {
  corpus::Bytes f = corpus::sample_qpack(Codec::None);
  json m = corpus::read_manifest(f);
  m["future_top_level"] = {{"x", 1}};
  m["tensors"][0]["future_tensor_key"] = "y";
  m["tensors"][0]["sections"]["data"]["future_section_key"] = true;
  m["tensors"][1]["sections"]["future_section"] = {{"offset", 0}};
  m["qpack_version"] = "1.7";
  f = corpus::with_manifest_text(f, m.dump());
  QpackHeader h = QpackHeader::load(f.data());
  h.version_minor = 7;
  h.reserved = 1;  // ignored by readers
  h.encode(f.data());
  corpus::fix_checksums(f);
  const auto q = QpackFile::from_memory(f.data(), f.size(), "future.qpack");
  EXPECT_EQ(q->version_minor(), 7);
  EXPECT_EQ(q->tensors().size(), 5u);
  q->check_all();
}

TEST(Container, TensorSectionsAreTheManifestsWithTheirSizes) {
  const corpus::Bytes f = corpus::sample_qpack(Codec::None);
  const auto q = QpackFile::from_memory(f.data(), f.size(), "m.qpack");
  std::vector<std::string> names;
  for (const QpackTensor& t : q->tensors()) {
    std::string list;
    for (const TensorSection& ts : t.sections()) {
      list += std::string(list.empty() ? "" : ",") + ts.name;
      EXPECT_EQ(&t.section(ts.kind), ts.section);
      EXPECT_TRUE(ts.section->present) << t.name << " " << ts.name;
      EXPECT_EQ(ts.section->raw_size, ts.raw_size) << t.name << " " << ts.name;
    }
    names.push_back(t.name + ":" + list);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"emb:data", "w:codes,scales,zeros", "norm:data",
                                             "ws:codes,scales", "z:data"}));
  // w: F16 [16, 8], 4 bits, G = 8 along axis 0, F16 scales: 2 groups x 8 columns.
  const QpackTensor& w = *q->find("w");
  EXPECT_EQ(w.sections()[0].raw_size, 2u * 4u * 8u);
  EXPECT_EQ(w.sections()[1].raw_size, 2u * 8u * 2u);
  EXPECT_EQ(q->find("emb")->sections()[0].raw_size, 48u);
}

TEST(Container, UncommittedWriterLeavesNothing) {
  TempDir dir;
  {
    QpackWriter w(dir.file("m.qpack"), {});
    const std::vector<uint8_t> d(100, 1);
    w.add_raw("a", DType::U8, {100}, d.data(), d.size());
    EXPECT_GT(w.bytes_written(), 100u);
  }
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0);
}

TEST(Container, WriterRejectsMisuse) {
  TempDir dir;
  test::write_file(dir.file("exists.qpack"), "x");
  try {
    QpackWriter w(dir.file("exists.qpack"), {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::OutputExists);
  }
  QpackWriter w(dir.file("m.qpack"), {});
  const std::vector<uint8_t> d(64, 0);
  auto code = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::Internal;
  };
  QuantScheme s;
  s.bits = 4;
  s.group_size = 8;
  s.axis = 0;
  s.symmetric = true;
  EXPECT_EQ(code([&] { w.add_raw("a", DType::F32, {3}, d.data(), 11); }),
            ErrorCode::InvalidArgument);
  EXPECT_EQ(code([&] { w.add_quantized("q", DType::I32, {8}, s, d.data(), d.data(), nullptr); }),
            ErrorCode::UnsupportedDtype);
  EXPECT_EQ(code([&] { w.add_quantized("q", DType::F32, {8}, s, d.data(), d.data(), d.data()); }),
            ErrorCode::InvalidArgument);
  s.symmetric = false;
  EXPECT_EQ(code([&] { w.add_quantized("q", DType::F32, {8}, s, d.data(), d.data(), nullptr); }),
            ErrorCode::InvalidArgument);
  s.bits = 5;
  EXPECT_EQ(code([&] { w.add_quantized("q", DType::F32, {8}, s, d.data(), d.data(), d.data()); }),
            ErrorCode::UnsupportedScheme);
  EXPECT_EQ(code([&] { w.add_quantized("q", DType::F32, {}, s, d.data(), d.data(), d.data()); }),
            ErrorCode::UnsupportedScheme);
  w.add_raw("a", DType::U8, {4}, d.data(), 4);
  EXPECT_EQ(code([&] { w.add_raw("a", DType::U8, {4}, d.data(), 4); }), ErrorCode::DuplicateName);
  EXPECT_EQ(code([&] { w.add_raw("\xff", DType::U8, {4}, d.data(), 4); }),
            ErrorCode::InvalidArgument);
  EXPECT_EQ(code([&] { w.set_source(json{{"k", 1}}, nullptr); }), ErrorCode::InvalidArgument);
  w.commit();
  EXPECT_EQ(code([&] { w.commit(); }), ErrorCode::InvalidArgument);
  EXPECT_EQ(code([&] { w.add_raw("b", DType::U8, {4}, d.data(), 4); }), ErrorCode::InvalidArgument);
  const auto f = QpackFile::open(dir.file("m.qpack"));
  EXPECT_EQ(f->tensors().size(), 1u);
}

// A tensor with integer zero-points makes the file version 2.0 (1.x readers
// refuse it) and records quant.zero_point; the float rule's tensors beside it
// carry no zero_point key, and a file of float-rule tensors only stays 1.0.
TEST(Container, IntegerZeroPointIsVersion2AndRoundTrips) {
  TempDir dir;
  std::mt19937_64 rng(test::test_seed() + 9);
  for (const bool with_integer : {false, true}) {
    const std::string path = dir.file(with_integer ? "int.qpack" : "float.qpack");
    QuantScheme fl;
    fl.bits = 4;
    fl.group_size = 8;
    fl.axis = 1;
    QuantScheme in = fl;
    in.zero_point = ZeroPoint::Integer;
    QuantScheme sym = fl;
    sym.symmetric = true;
    sym.zero_point = ZeroPoint::Integer;  // ignored: symmetric has none
    const GroupLayout L = make_layout({4, 16}, fl);
    const auto codes = random_bytes(rng, L.codes_bytes()),
               params = random_bytes(rng, L.params_bytes(fl.scale_dtype));
    {
      QpackWriter w(path, WriterOptions{});
      w.add_quantized("float", DType::F16, {4, 16}, fl, codes.data(), params.data(), params.data());
      if (with_integer)
        w.add_quantized("int", DType::F16, {4, 16}, in, codes.data(), params.data(), params.data());
      w.add_quantized("sym", DType::F16, {4, 16}, sym, codes.data(), params.data(), nullptr);
      w.commit();
    }
    const auto f = QpackFile::open(path);
    EXPECT_EQ(f->version_major(), with_integer ? 2 : 1);
    EXPECT_EQ(f->manifest()["qpack_version"], with_integer ? "2.0" : "1.0");
    EXPECT_EQ(f->find("float")->scheme.zero_point, ZeroPoint::Float);
    EXPECT_FALSE(corpus_quant(*f, "float").contains("zero_point"));
    EXPECT_FALSE(corpus_quant(*f, "sym").contains("zero_point"));
    EXPECT_TRUE(f->find("sym")->scheme.symmetric);
    if (with_integer) {
      const QpackTensor* t = f->find("int");
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->scheme.zero_point, ZeroPoint::Integer);
      EXPECT_FALSE(t->scheme == f->find("float")->scheme);
      EXPECT_EQ(corpus_quant(*f, "int")["zero_point"], "integer");
      expect_bytes(*f, *t, t->zeros, params);
      expect_bytes(*f, *t, t->codes, codes);
    }
    f->check_all();
  }
}

// Every tensor of a checkpoint kept raw: the source bytes come back exactly
// and the checkpoint is left untouched.
TEST(Container, CheckpointToQpackRawCopy) {
  TempDir dir;
  std::mt19937_64 rng(test::test_seed() + 5);
  const auto raws = raw_specs(rng, false);
  std::vector<TensorToWrite> ts;
  for (const auto& r : raws)
    ts.push_back({r.name, r.dtype, r.shape, r.bytes.data(), r.bytes.size()});
  write_safetensors(dir.file("model.safetensors"), ts, {{"format", "pt"}}, false);
  test::write_file(dir.file("config.json"), R"({"model_type":"llama"})");
  const auto before = test::read_file(dir.file("model.safetensors"));

  const auto cp = Checkpoint::open(dir.path());
  {
    QpackWriter w(dir.file("out.qpack"), {});
    w.set_source(cp->metadata(), cp->config());
    for (const CheckpointTensor& t : cp->tensors())
      w.add_raw(t.name(), t.info->dtype, t.info->shape, t.data(), t.info->nbytes());
    w.commit();
  }
  EXPECT_EQ(before, test::read_file(dir.file("model.safetensors")));
  const auto f = QpackFile::open(dir.file("out.qpack"));
  ASSERT_EQ(f->tensors().size(), cp->tensors().size());
  EXPECT_EQ(f->source_config()["model_type"], "llama");
  EXPECT_EQ(f->source_metadata()["format"], "pt");
  for (size_t i = 0; i < f->tensors().size(); ++i) {
    const QpackTensor& t = f->tensors()[i];
    const CheckpointTensor& c = cp->tensors()[i];
    EXPECT_EQ(t.name, c.name());
    const SectionBytes b = f->read(t, t.data);
    ASSERT_EQ(b.size, c.info->nbytes());
    if (b.size) {
      EXPECT_EQ(0, std::memcmp(b.data, c.data(), b.size));
    }
    f->release(t.data);
  }
}

}  // namespace
}  // namespace qpack
