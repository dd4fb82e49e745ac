// The GGUF reader and writer: the must-fail corpus (each case its own
// ErrorCode, naming the file and tensor or key), writer round trips, the
// type table, and gguf-py (PyPI `gguf`) on the other side in both
// directions (skipped where `import gguf` fails).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "format/corpus_gguf.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/io.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using corpus::GgufCase;
using nlohmann::json;

class GgufMustFail : public ::testing::TestWithParam<std::string> {};

void expect_case_error(const GgufCase& c, const Error& e, const std::string& file) {
  EXPECT_EQ(error_code_name(e.code()), std::string(error_code_name(c.expected))) << e.what();
  EXPECT_EQ(e.file(), file) << e.what();
  EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  if (!c.tensor.empty()) {
    EXPECT_EQ(e.tensor(), c.tensor) << e.what();
  }
  if (!c.key.empty()) {
    EXPECT_NE(std::string(e.what()).find("'" + c.key + "'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(e.reason().empty());
}

TEST_P(GgufMustFail, RejectedWithItsErrorCode) {
  const GgufCase c = corpus::make_gguf_must_fail(GetParam());
  test::TempDir dir;
  const std::string path = dir.file(c.name + ".gguf");
  test::write_file(path, c.bytes.data(), c.bytes.size());
  try {
    (void)GgufFile::open(path);
    FAIL() << c.name << " was accepted";
  } catch (const Error& e) {
    expect_case_error(c, e, path);
  }
  try {
    (void)GgufFile::from_memory(c.bytes.data(), c.bytes.size(), "mem");
    FAIL() << c.name << " was accepted from memory";
  } catch (const Error& e) {
    expect_case_error(c, e, "mem");
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, GgufMustFail, ::testing::ValuesIn(corpus::gguf_must_fail_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(GgufMustFailCorpus, IsLargeAndVaried) {
  std::set<ErrorCode> codes;
  for (const std::string& n : corpus::gguf_must_fail_names()) {
    EXPECT_EQ(corpus::make_gguf_must_fail(n).name, n);
    codes.insert(corpus::make_gguf_must_fail(n).expected);
  }
  EXPECT_GE(corpus::gguf_must_fail_names().size(), 25u);
  EXPECT_GE(codes.size(), 20u);
}

TEST(GgufValidSamples, Open) {
  for (const GgufCase& c : corpus::gguf_valid_samples()) {
    SCOPED_TRACE(c.name);
    EXPECT_NO_THROW(GgufFile::from_memory(c.bytes.data(), c.bytes.size(), "mem"));
  }
  const GgufCase every = corpus::gguf_valid_samples().at(2);
  const auto f = GgufFile::from_memory(every.bytes.data(), every.bytes.size(), "mem");
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_start() % 64, 0u);
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->tensors()[0].nbytes, 2u * 144u);  // Q4_K [256, 2]
  EXPECT_EQ(f->tensors()[1].nbytes, 4u);         // 0-d F32
  EXPECT_EQ(f->tensors()[2].nbytes, 0u);
  const GgufValue* nested = f->find_key("v.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->items.size(), 2u);
  EXPECT_EQ(nested->items[1].items.at(0).str, "b");
  EXPECT_EQ(f->find_key("v.bool")->b, true);
  EXPECT_EQ(f->find_key("v.t3")->i, int16_t(0x4241));
}

// Metadata with every value type, nesting included.
std::vector<GgufKv> every_kv() {
  using V = GgufValue;
  return {
      {"general.architecture", V::of_string("llama")},
      {"general.alignment", V::of_u32(64)},
      {"v.u8", V::of_u8(250)},
      {"v.i8", V::of_i8(-7)},
      {"v.u16", V::of_u16(65535)},
      {"v.i16", V::of_i16(-32768)},
      {"v.u32", V::of_u32(4294967295u)},
      {"v.i32", V::of_i32(-5)},
      {"v.u64", V::of_u64(UINT64_MAX)},
      {"v.i64", V::of_i64(INT64_MIN)},
      {"v.f32", V::of_f32(0.1f)},
      {"v.f64", V::of_f64(-1e300)},
      {"v.bool", V::of_bool(false)},
      {"v.str", V::of_string(std::string("nul\0inside", 10))},
      {"v.arr", V::of_array(GgufType::String, {V::of_string("x"), V::of_string("")})},
      {"v.nested", V::of_array(GgufType::Array, {V::of_array(GgufType::Int32, {V::of_i32(1)}),
                                                 V::of_array(GgufType::Int32, {})})},
      {"v.empty", V::of_array(GgufType::Float32, {})},
  };
}

struct Written {
  std::vector<GgufTensorDecl> decls;
  std::vector<std::vector<uint8_t>> data;
};

Written awkward_tensors(uint64_t seed) {
  std::mt19937_64 rng(seed);
  Written w;
  auto add = [&](std::string name, GgmlType t, std::vector<int64_t> ne) {
    w.decls.push_back({std::move(name), t, ne});
    std::vector<uint8_t> d(gguf_tensor_nbytes(t, ne, "", ""));
    for (auto& b : d) b = uint8_t(rng());
    w.data.push_back(std::move(d));
  };
  add("f32.3d", GgmlType::F32, {3, 5, 7});
  add("q4k", GgmlType::Q4_K, {512, 3});
  add("empty", GgmlType::F16, {0, 4});
  add("scalar", GgmlType::F32, {});
  add("q8_0.4d", GgmlType::Q8_0, {32, 1, 2, 3});
  add("bf16", GgmlType::BF16, {1});
  add("q6k", GgmlType::Q6_K, {256});
  return w;
}

void write_all(const std::string& path, const std::vector<GgufKv>& kv, const Written& w) {
  GgufWriter out(path, kv, w.decls, true);
  for (const auto& d : w.data) {
    // In two pieces: the writer streams.
    out.append(d.data(), d.size() / 2);
    out.append(d.data() + d.size() / 2, d.size() - d.size() / 2);
  }
  out.commit();
}

TEST(GgufWriter, RoundTripsEveryValueTypeAndAwkwardShapes) {
  test::TempDir dir;
  const auto kv = every_kv();
  const Written w = awkward_tensors(test::test_seed());
  write_all(dir.file("a.gguf"), kv, w);
  const auto f = GgufFile::open(dir.file("a.gguf"));
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 64u);
  ASSERT_EQ(f->metadata().size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(f->metadata()[i].key, kv[i].key);
    EXPECT_TRUE(f->metadata()[i].value == kv[i].value) << kv[i].key;
  }
  ASSERT_EQ(f->tensors().size(), w.decls.size());
  for (size_t i = 0; i < w.decls.size(); ++i) {
    const GgufTensorInfo& t = f->tensors()[i];
    EXPECT_EQ(t.name, w.decls[i].name);
    EXPECT_EQ(t.type, w.decls[i].type);
    EXPECT_EQ(t.ne, w.decls[i].ne);
    EXPECT_EQ(t.offset % 64, 0u);
    ASSERT_EQ(t.nbytes, w.data[i].size());
    if (t.nbytes > 0) {  // an empty vector's data() may be null, which memcmp may not take
      EXPECT_EQ(std::memcmp(f->tensor_data(t), w.data[i].data(), t.nbytes), 0) << t.name;
    }
  }
  EXPECT_EQ(f->file_size() % 64, 0u) << "the last tensor is padded too";
}

TEST(GgufWriter, SameInputSameBytes) {
  test::TempDir dir;
  const Written w = awkward_tensors(42);
  write_all(dir.file("a.gguf"), every_kv(), w);
  write_all(dir.file("b.gguf"), every_kv(), w);
  EXPECT_EQ(test::read_file(dir.file("a.gguf")), test::read_file(dir.file("b.gguf")));
}

TEST(GgufWriter, RefusesWhatTheReaderRefuses) {
  test::TempDir dir;
  const std::string p = dir.file("x.gguf");
  auto code_of = [&](const std::vector<GgufKv>& kv, const std::vector<GgufTensorDecl>& t) {
    try {
      GgufWriter w(p, kv, t, true);
    } catch (const Error& e) {
      return std::string(error_code_name(e.code()));
    }
    return std::string("accepted");
  };
  using V = GgufValue;
  EXPECT_EQ(code_of({{"a", V::of_u8(1)}, {"a", V::of_u8(2)}}, {}), "GgufDuplicateKey");
  EXPECT_EQ(code_of({{"", V::of_u8(1)}}, {}), "GgufBadKey");
  EXPECT_EQ(code_of({{"general.alignment", V::of_u32(24)}}, {}), "GgufBadAlignment");
  EXPECT_EQ(code_of({{"general.alignment", V::of_u64(32)}}, {}), "GgufBadAlignment");
  EXPECT_EQ(code_of({{"a", V::of_array(GgufType::Uint8, {V::of_i8(1)})}}, {}), "GgufBadArray");
  EXPECT_EQ(code_of({}, {{"t", GgmlType::F32, {1}}, {"t", GgmlType::F32, {1}}}),
            "GgufDuplicateTensor");
  EXPECT_EQ(code_of({}, {{std::string(64, 'n'), GgmlType::F32, {1}}}), "GgufBadTensorName");
  EXPECT_EQ(code_of({}, {{"t", GgmlType::F32, {1, 1, 1, 1, 1}}}), "GgufBadDims");
  EXPECT_EQ(code_of({}, {{"t", GgmlType::Q4_0, {48}}}), "GgufBadRowSize");
  EXPECT_EQ(code_of({}, {{"t", GgmlType(4), {32}}}), "GgufUnknownTensorType");
  EXPECT_FALSE(file_exists(p));
}

TEST(GgufWriter, AppendsMustMatchTheDeclaredSizes) {
  test::TempDir dir;
  const std::string p = dir.file("x.gguf");
  const std::vector<uint8_t> bytes(64, 1);
  {
    GgufWriter w(p, {}, {{"t", GgmlType::F32, {4}}}, false);
    EXPECT_THROW(w.append(bytes.data(), 17), Error);
    w.append(bytes.data(), 8);
    try {
      w.commit();
      FAIL() << "commit with 8 of 16 bytes";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::GgufWrongDataSize);
      EXPECT_EQ(e.tensor(), "t");
    }
  }
  EXPECT_FALSE(file_exists(p)) << "no partial file under the final name";
}

// --- gguf-py on the other side ---

bool have_gguf_py() {
  static const bool ok =
      test::run_command(std::string(QPACK_PYTHON) + " -c 'import gguf, numpy' 2>/dev/null")
          .exit_code == 0;
  return ok;
}

json run_tool(const std::string& args) {
  const auto r = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                   "/tests/format/gguf_py_tool.py " + args + " 2>/dev/null");
  if (r.exit_code != 0) throw std::runtime_error("gguf_py_tool.py " + args + ": " + r.output);
  return json::parse(r.output);
}

#define REQUIRE_GGUF_PY() \
  if (!have_gguf_py()) GTEST_SKIP() << "python3 cannot import gguf (pip install gguf numpy)"

TEST(GgufPy, TypeTableMatchesGgmlQuantSizes) {
  REQUIRE_GGUF_PY();
  const json sizes = run_tool("sizes");
  ASSERT_GE(sizes.size(), 30u);
  for (const auto& [name, v] : sizes.items()) {
    SCOPED_TRACE(name);
    const GgmlTypeInfo* t = ggml_type_info(v[2].get<uint32_t>());
    ASSERT_NE(t, nullptr) << "qpack does not know gguf-py's type " << name;
    EXPECT_EQ(std::string(t->name), name);
    EXPECT_EQ(v[0].get<uint32_t>(), t->block_size);
    EXPECT_EQ(v[1].get<uint32_t>(), t->type_size);
  }
}

TEST(GgufPy, ReadsWhatQpackWrites) {
  REQUIRE_GGUF_PY();
  test::TempDir dir;
  const std::string p = dir.file("q.gguf");
  Written w = awkward_tensors(test::test_seed());
  std::vector<GgufKv> kv = every_kv();

  write_all(p, kv, w);
  const json d = run_tool("dump " + p);
  const json& fields = d.at("fields");
  ASSERT_EQ(fields.size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    SCOPED_TRACE(kv[i].key);
    EXPECT_EQ(fields[i].at("key"), kv[i].key);
    EXPECT_EQ(fields[i].at("types")[0].get<uint32_t>(), uint32_t(kv[i].value.type));
    const GgufValue& v = kv[i].value;
    const json& got = fields[i].at("value");
    switch (v.type) {
      case GgufType::Uint8:
      case GgufType::Uint16:
      case GgufType::Uint32:
      case GgufType::Uint64:
        EXPECT_EQ(got.get<uint64_t>(), v.u);
        break;
      case GgufType::Int8:
      case GgufType::Int16:
      case GgufType::Int32:
      case GgufType::Int64:
        EXPECT_EQ(got.get<int64_t>(), v.i);
        break;
      case GgufType::Float32:
      case GgufType::Float64:
        EXPECT_EQ(got.get<double>(), v.f);
        break;
      case GgufType::Bool:
        EXPECT_EQ(got.get<bool>(), v.b);
        break;
      case GgufType::String:
        EXPECT_EQ(got.get<std::string>(), v.str);
        break;
      case GgufType::Array:
        // gguf-py records no item type for an empty array.
        if (!v.items.empty()) {
          EXPECT_EQ(fields[i].at("types").at(1).get<uint32_t>(), uint32_t(v.array_type));
        }
        if (v.array_type == GgufType::String) {
          ASSERT_EQ(got.size(), v.items.size());
          for (size_t k = 0; k < v.items.size(); ++k) EXPECT_EQ(got[k], v.items[k].str);
        }
        break;
    }
  }
  const auto f = GgufFile::open(p);
  const json& ts = d.at("tensors");
  ASSERT_EQ(ts.size(), w.decls.size());
  for (size_t i = 0; i < w.decls.size(); ++i) {
    SCOPED_TRACE(w.decls[i].name);
    EXPECT_EQ(ts[i].at("name"), w.decls[i].name);
    EXPECT_EQ(ts[i].at("type").get<uint32_t>(), uint32_t(w.decls[i].type));
    std::vector<int64_t> ne = w.decls[i].ne;
    EXPECT_EQ(ts[i].at("ne").get<std::vector<int64_t>>(), ne);
    EXPECT_EQ(ts[i].at("n_bytes").get<uint64_t>(), w.data[i].size());
    EXPECT_EQ(ts[i].at("data_offset").get<uint64_t>(), f->data_start() + f->tensors()[i].offset);
    std::string hex;
    for (uint8_t b : w.data[i]) {
      char buf[3];
      std::snprintf(buf, sizeof buf, "%02x", b);
      hex += buf;
    }
    EXPECT_EQ(ts[i].at("hex").get<std::string>(), hex);
  }
}

TEST(GgufPy, QpackReadsWhatGgufPyWrites) {
  REQUIRE_GGUF_PY();
  test::TempDir dir;
  const std::string p = dir.file("py.gguf");
  const json wrote = run_tool("write " + p);
  const auto f = GgufFile::open(p);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->find_key("general.architecture")->str, "llama");
  EXPECT_EQ(f->find_key("v.u8")->u, 200u);
  EXPECT_EQ(f->find_key("v.i8")->i, -100);
  EXPECT_EQ(f->find_key("v.u16")->u, 65000u);
  EXPECT_EQ(f->find_key("v.i16")->i, -32000);
  EXPECT_EQ(f->find_key("v.u32")->u, 4000000000u);
  EXPECT_EQ(f->find_key("v.i32")->i, -2000000000);
  EXPECT_EQ(f->find_key("v.f32")->f, double(0.1f));
  EXPECT_EQ(f->find_key("v.bool")->b, true);
  EXPECT_EQ(f->find_key("v.str")->str, "h\xc3\xa9llo");
  EXPECT_EQ(f->find_key("v.u64")->u, (uint64_t(1) << 63) + 5);
  EXPECT_EQ(f->find_key("v.i64")->i, -(int64_t(1) << 62));
  EXPECT_EQ(f->find_key("v.f64")->f, 1.0 / 3.0);
  const GgufValue* s = f->find_key("v.arr_str");
  ASSERT_EQ(s->items.size(), 3u);
  EXPECT_EQ(s->items[1].str, "bc");
  EXPECT_EQ(f->find_key("v.arr_i32")->items.at(1).i, -2);
  EXPECT_EQ(f->find_key("v.arr_f32")->items.at(1).f, -1.25);
  const GgufValue* n = f->find_key("v.nested");
  ASSERT_EQ(n->array_type, GgufType::Array);
  EXPECT_EQ(n->items.at(0).items.at(1).i, 2);
  EXPECT_EQ(n->items.at(1).items.at(0).i, 3);
  const json& ts = wrote.at("tensors");
  ASSERT_EQ(f->tensors().size(), ts.size());
  std::set<uint32_t> types;
  for (size_t i = 0; i < ts.size(); ++i) {
    const GgufTensorInfo& t = f->tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, ts[i].at("name"));
    EXPECT_EQ(uint32_t(t.type), ts[i].at("type").get<uint32_t>());
    EXPECT_EQ(t.ne, ts[i].at("ne").get<std::vector<int64_t>>());
    const std::string hex = ts[i].at("hex");
    ASSERT_EQ(t.nbytes * 2, hex.size()) << "size from ne, block size and type size";
    std::string got;
    for (uint64_t k = 0; k < t.nbytes; ++k) {
      char buf[3];
      std::snprintf(buf, sizeof buf, "%02x", f->tensor_data(t)[k]);
      got += buf;
    }
    EXPECT_EQ(got, hex);
    types.insert(uint32_t(t.type));
  }
  EXPECT_GE(types.size(), 30u) << "every type gguf-py knows, legacy and K-quants included";
}

}  // namespace
}  // namespace qpack
