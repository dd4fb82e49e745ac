// safetensors reader and writer, checkpoints (single file, index, folder),
// and the atomic output file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "format/corpus.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using nlohmann::json;
using test::TempDir;

const char* kAllDtypes[] = {"BOOL", "U8",  "I8",   "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16",
                            "U16",  "F16", "BF16", "I32",     "U32",     "F32",     "F64",
                            "I64",  "U64", "C64",  "F4",      "F6_E2M3", "F6_E3M2"};

struct Owned {
  TensorToWrite t;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> random_bytes(std::mt19937_64& rng, uint64_t n) {
  std::vector<uint8_t> b(n);
  for (auto& v : b) v = uint8_t(rng());
  return b;
}

// memcmp with a null pointer is undefined even for 0 bytes (empty tensors
// have no data pointer).
bool same_bytes(const void* a, const void* b, size_t n) {
  return n == 0 || std::memcmp(a, b, n) == 0;
}

// Awkward shapes whose size in `dtype` is a whole number of bytes.
std::vector<std::vector<int64_t>> shapes_for(DType dt) {
  const std::vector<std::vector<int64_t>> all = {{},        {1},          {0}, {3, 0, 2}, {7},
                                                 {2, 3, 5}, {1, 1, 1, 1}, {4}, {8, 3}};
  std::vector<std::vector<int64_t>> out;
  for (const auto& s : all) {
    uint64_t n = 1;
    for (int64_t d : s) n *= uint64_t(d);
    if (n * uint64_t(dtype_bits(dt)) % 8 == 0) out.push_back(s);
  }
  return out;
}

std::vector<Owned> random_tensors(std::mt19937_64& rng, const std::string& prefix) {
  std::vector<Owned> out;
  for (const char* n : kAllDtypes) {
    const DType dt = *dtype_from_string(n);
    int k = 0;
    for (const auto& shape : shapes_for(dt)) {
      Owned o;
      o.t.name = prefix + n + "." + std::to_string(k++);
      o.t.dtype = dt;
      o.t.shape = shape;
      uint64_t count = 1;
      for (int64_t d : shape) count *= uint64_t(d);
      o.t.nbytes = count * uint64_t(dtype_bits(dt)) / 8;
      o.bytes = random_bytes(rng, o.t.nbytes);
      out.push_back(std::move(o));
    }
  }
  std::shuffle(out.begin(), out.end(), rng);
  for (auto& o : out) o.t.data = o.bytes.data();
  return out;
}

// The order a reader lists tensors written in the order of `v`: by data
// offset, zero-sized tensors sharing an offset by (end, name).
std::vector<const Owned*> reader_order(const std::vector<Owned>& v) {
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, const Owned*>> keyed;
  uint64_t off = 0;
  for (const Owned& o : v) {
    keyed.push_back({{off, off + o.t.nbytes}, &o});
    off += o.t.nbytes;
  }
  std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return a.second->t.name < b.second->t.name;
  });
  std::vector<const Owned*> out;
  for (const auto& k : keyed) out.push_back(k.second);
  return out;
}

std::vector<TensorToWrite> views(const std::vector<Owned>& v) {
  std::vector<TensorToWrite> out;
  for (const auto& o : v) out.push_back(o.t);
  return out;
}

TEST(Safetensors, RoundTripEveryDtypeAndAwkwardShapes) {
  std::mt19937_64 rng(test::test_seed());
  TempDir dir;
  const auto tensors = random_tensors(rng, "t.");
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode ✓"}};
  write_safetensors(dir.file("a.safetensors"), views(tensors), meta, false);

  const auto f = SafetensorsFile::open(dir.file("a.safetensors"));
  ASSERT_EQ(f->tensors().size(), tensors.size());
  EXPECT_EQ(f->metadata(), meta);
  EXPECT_EQ(f->data_start() % 8, 0u);
  // Data is written in the given order, so offset order is the given order
  // (up to ties between zero-sized tensors).
  const auto want = reader_order(tensors);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = f->tensors()[i];
    EXPECT_EQ(t.name, want[i]->t.name);
    EXPECT_EQ(t.dtype, want[i]->t.dtype);
    EXPECT_EQ(t.shape, want[i]->t.shape);
    ASSERT_EQ(t.nbytes(), want[i]->bytes.size());
    EXPECT_TRUE(same_bytes(f->tensor_data(t), want[i]->bytes.data(), t.nbytes())) << t.name;
    EXPECT_EQ(f->find(t.name), &t);
  }
  EXPECT_EQ(f->find("nope"), nullptr);
}

TEST(Safetensors, WriterIsDeterministicWithSortedKeysAndSpacePadding) {
  TempDir dir;
  const std::vector<float> a = {1, 2, 3};
  const std::vector<uint8_t> b = {7};
  std::vector<TensorToWrite> ts = {{"zeta", DType::F32, {3}, a.data(), 12},
                                   {"alpha", DType::U8, {1}, b.data(), 1}};
  write_safetensors(dir.file("1.safetensors"), ts, {}, false);
  write_safetensors(dir.file("2.safetensors"), ts, {}, false);
  const auto x = test::read_file(dir.file("1.safetensors"));
  EXPECT_EQ(x, test::read_file(dir.file("2.safetensors")));

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | x[size_t(i)];
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header(x.begin() + 8, x.begin() + 8 + long(n));
  const std::string trimmed = header.substr(0, header.find_last_not_of(' ') + 1);
  EXPECT_EQ(header.find_first_not_of(' ', trimmed.size()), std::string::npos);
  EXPECT_EQ(
      trimmed,
      R"({"alpha":{"data_offsets":[12,13],"dtype":"U8","shape":[1]},"zeta":{"data_offsets":[0,12],"dtype":"F32","shape":[3]}})");
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);  // only when non-empty
  // Data in the given order, header keys sorted: the reader lists by offset.
  const auto f = SafetensorsFile::open(dir.file("1.safetensors"));
  EXPECT_EQ(f->tensors()[0].name, "zeta");
  EXPECT_EQ(f->tensors()[1].name, "alpha");
}

TEST(Safetensors, ReaderOrdersByOffsetWhateverTheKeyOrder) {
  TempDir dir;
  const auto b = corpus::safetensors_bytes(
      R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
      3);
  test::write_file(dir.file("x.safetensors"), b.data(), b.size());
  const auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->tensors()[0].name, "b");
  EXPECT_EQ(f->tensors()[1].name, "e");  // empty tensor at 2 sorts before [2,3)
  EXPECT_EQ(f->tensors()[2].name, "a");
}

TEST(Safetensors, AcceptsPaddingAndLeadingWhitespace) {
  for (const std::string& h :
       {std::string(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}     )"),
        std::string(" \n{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}\t")}) {
    const auto b = corpus::safetensors_bytes(h, 1);
    std::vector<TensorInfo> ts;
    std::map<std::string, std::string> md;
    uint64_t start = 0;
    SafetensorsFile::parse_header(b.data(), b.size(), "mem", &ts, &md, &start);
    ASSERT_EQ(ts.size(), 1u);
    EXPECT_EQ(start, 8 + h.size());
  }
}

TEST(Safetensors, StreamWriterChecksWhatWasDeclared) {
  TempDir dir;
  const std::vector<uint8_t> d(10, 1);
  {
    SafetensorsStreamWriter w(dir.file("s.safetensors"), {{"a", DType::U8, {10}, nullptr, 10}}, {},
                              false);
    w.append(d.data(), 4);
    EXPECT_THROW(w.append(d.data(), 7), Error);
    EXPECT_THROW(w.commit(), Error);  // 4 of 10 bytes
  }
  EXPECT_FALSE(file_exists(dir.file("s.safetensors")));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0)
      << "temporary file left";
  {
    SafetensorsStreamWriter w(dir.file("s.safetensors"), {{"a", DType::U8, {10}, nullptr, 10}},
                              {{"k", "v"}}, false);
    w.append(d.data(), 4);
    w.append(d.data() + 4, 6);
    w.commit();
  }
  const auto f = SafetensorsFile::open(dir.file("s.safetensors"));
  EXPECT_EQ(f->metadata().at("k"), "v");
  EXPECT_EQ(f->tensors().at(0).nbytes(), 10u);
}

TEST(Safetensors, WriterRejectsBadDeclarations) {
  TempDir dir;
  const std::vector<uint8_t> d(16, 0);
  auto code_of = [&](const std::vector<TensorToWrite>& ts) {
    try {
      write_safetensors(dir.file("bad.safetensors"), ts, {}, false);
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::Internal;
  };
  EXPECT_EQ(code_of({{"a", DType::F32, {2}, d.data(), 7}}), ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of({{"a", DType::U8, {1}, d.data(), 1}, {"a", DType::U8, {1}, d.data(), 1}}),
            ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of({{"__metadata__", DType::U8, {1}, d.data(), 1}}), ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of({{"a", DType::U8, {-1}, d.data(), 1}}), ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of({{"a", DType::F4, {3}, d.data(), 2}}), ErrorCode::ShapeMismatch);
  EXPECT_FALSE(file_exists(dir.file("bad.safetensors")));
}

// ---------------------------------------------------------------- checkpoints

struct Sharded {
  std::vector<Owned> shard[3];
};

Sharded write_sharded(const std::string& dir, std::mt19937_64& rng, bool with_index) {
  Sharded s;
  const char* names[3] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                          "model-00003-of-00003.safetensors"};
  json wm = json::object();
  for (int i = 0; i < 3; ++i) {
    s.shard[i] = random_tensors(rng, "s" + std::to_string(i) + ".");
    s.shard[i].resize(std::min<size_t>(s.shard[i].size(), 12));
    for (const auto& o : s.shard[i]) wm[o.t.name] = names[i];
    write_safetensors(dir + "/" + names[i], views(s.shard[i]),
                      {{"shard", std::to_string(i)}, {"format", "pt"}}, false);
  }
  if (with_index)
    test::write_file(dir + "/model.safetensors.index.json",
                     json{{"metadata", {{"total_size", 1234}}}, {"weight_map", wm}}.dump(2));
  return s;
}

void expect_sharded(const Checkpoint& cp, const Sharded& s) {
  // Shards in file-name order, each in offset order (the order written).
  size_t k = 0;
  ASSERT_EQ(cp.files().size(), 3u);
  for (int i = 0; i < 3; ++i)
    for (const Owned* o : reader_order(s.shard[i])) {
      ASSERT_LT(k, cp.tensors().size());
      const CheckpointTensor& t = cp.tensors()[k++];
      EXPECT_EQ(t.name(), o->t.name);
      EXPECT_EQ(t.info->shape, o->t.shape);
      EXPECT_TRUE(same_bytes(t.data(), o->bytes.data(), o->bytes.size())) << o->t.name;
      EXPECT_EQ(cp.find(o->t.name), &t);
    }
  EXPECT_EQ(k, cp.tensors().size());
  uint64_t total = 0;
  for (int i = 0; i < 3; ++i)
    for (const auto& o : s.shard[i]) total += o.bytes.size();
  EXPECT_EQ(cp.total_bytes(), total);
}

TEST(Checkpoint, ShardedWithIndexViaFolderAndViaIndexFile) {
  std::mt19937_64 rng(test::test_seed() + 1);
  TempDir dir;
  const Sharded s = write_sharded(dir.path(), rng, true);
  test::write_file(dir.file("config.json"), R"({"hidden_size": 64, "architectures": ["Llama"]})");
  for (const std::string& path : {dir.path(), dir.file("model.safetensors.index.json")}) {
    SCOPED_TRACE(path);
    const auto cp = Checkpoint::open(path);
    expect_sharded(*cp, s);
    EXPECT_EQ(cp->metadata().at("shard"), "2");  // later shards win
    EXPECT_EQ(cp->metadata().at("format"), "pt");
    EXPECT_EQ(cp->metadata().at("total_size"), "1234");  // index metadata, as text
    EXPECT_EQ(cp->config().at("hidden_size"), 64);
  }
}

TEST(Checkpoint, FolderWithoutIndexReadsEverySafetensorsFile) {
  std::mt19937_64 rng(test::test_seed() + 2);
  TempDir dir;
  const Sharded s = write_sharded(dir.path(), rng, false);
  test::write_file(dir.file(".hidden.safetensors"), "junk that would not parse");
  const auto cp = Checkpoint::open(dir.path());
  expect_sharded(*cp, s);
  EXPECT_TRUE(cp->config().is_null());
}

TEST(Checkpoint, SingleFileWithConfigBesideIt) {
  TempDir dir;
  const std::vector<uint8_t> d(4, 9);
  write_safetensors(dir.file("m.safetensors"), {{"x", DType::U8, {4}, d.data(), 4}}, {}, false);
  test::write_file(dir.file("config.json"), R"({"a": {"b": [1, 2]}})");
  const auto cp = Checkpoint::open(dir.file("m.safetensors"));
  ASSERT_EQ(cp->tensors().size(), 1u);
  EXPECT_EQ(cp->config()["a"]["b"][1], 2);
  EXPECT_TRUE(cp->metadata().empty());
}

TEST(Checkpoint, OtherIndexNameAndSeveralIndexes) {
  std::mt19937_64 rng(test::test_seed() + 3);
  TempDir dir;
  const Sharded s = write_sharded(dir.path(), rng, true);
  std::filesystem::rename(dir.file("model.safetensors.index.json"),
                          dir.file("pytorch_model.safetensors.index.json"));
  expect_sharded(*Checkpoint::open(dir.path()), s);
  std::filesystem::copy_file(dir.file("pytorch_model.safetensors.index.json"),
                             dir.file("other.safetensors.index.json"));
  try {
    Checkpoint::open(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::BadIndex);
  }
  std::filesystem::copy_file(dir.file("other.safetensors.index.json"),
                             dir.file("model.safetensors.index.json"));
  expect_sharded(*Checkpoint::open(dir.path()), s);  // model.* preferred
}

TEST(Checkpoint, MissingPathsAndEmptyFolders) {
  TempDir dir;
  try {
    Checkpoint::open(dir.file("absent.safetensors"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_EQ(exit_code_for(e.code()), kExitIo);
  }
  try {
    Checkpoint::open(dir.path());
    FAIL();
  } catch (const Error& e) {
    // A folder with no checkpoint in it is bad input (3), not a usage error.
    EXPECT_EQ(e.code(), ErrorCode::BadIndex);
    EXPECT_EQ(exit_code_for(e.code()), kExitBadInput);
  }
}

// ------------------------------------------------------------------------ io

TEST(AtomicOutputFile, TempFileBesideTargetRemovedUnlessCommitted) {
  TempDir dir;
  const std::string final_path = dir.file("out.bin");
  std::string temp;
  {
    AtomicOutputFile f(final_path, false);
    temp = f.temp_path();
    EXPECT_EQ(temp.rfind(dir.file(".out.bin.qpack-partial." + std::to_string(getpid()) + "."), 0),
              0u)
        << temp;
    EXPECT_TRUE(file_exists(temp));
    f.write("abc", 3);
    EXPECT_FALSE(file_exists(final_path));
  }
  EXPECT_FALSE(file_exists(temp));
  EXPECT_FALSE(file_exists(final_path));
  {
    AtomicOutputFile f(final_path, false);
    f.write("hello", 5);
    f.write_zeros(3);
    f.pwrite_at(0, "J", 1);
    EXPECT_EQ(f.position(), 8u);
    f.commit();
    EXPECT_FALSE(file_exists(f.temp_path()));
  }
  const auto bytes = test::read_file(final_path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), std::string("Jello\0\0\0", 8));
  struct stat st;
  ASSERT_EQ(stat(final_path.c_str(), &st), 0);
  EXPECT_NE(st.st_mode & 0044, 0u) << "output should not keep mkstemp's 0600";
}

TEST(AtomicOutputFile, RefusesExistingOutputUnlessOverwrite) {
  TempDir dir;
  test::write_file(dir.file("o"), "old");
  try {
    AtomicOutputFile f(dir.file("o"), false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::OutputExists);
    EXPECT_EQ(e.file(), dir.file("o"));
  }
  {
    AtomicOutputFile f(dir.file("o"), true);
    f.write("new", 3);
    f.commit();
  }
  const auto b = test::read_file(dir.file("o"));
  EXPECT_EQ(std::string(b.begin(), b.end()), "new");
  // The output appearing while writing is not silently replaced.
  AtomicOutputFile f(dir.file("p"), false);
  test::write_file(dir.file("p"), "someone else");
  try {
    f.commit();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::OutputExists);
  }
}

// A full disk is simulated with RLIMIT_FSIZE (EFBIG), in a child process so
// the limit does not leak into other tests. Returns 0 when the write failed
// with DiskFull naming the output and left no file behind.
int write_past_size_limit(const std::string& final_path) {
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit rl = {4096, 4096};
  setrlimit(RLIMIT_FSIZE, &rl);
  std::string temp;
  int rc = 1;
  try {
    AtomicOutputFile f(final_path, false);
    temp = f.temp_path();
    const std::vector<char> chunk(3000, 'x');
    f.write(chunk.data(), chunk.size());
    f.write(chunk.data(), chunk.size());
  } catch (const Error& e) {
    if (e.code() == ErrorCode::DiskFull && e.file() == final_path) rc = 0;
  }
  if (file_exists(temp) || file_exists(final_path)) rc = 2;
  return rc;
}

TEST(AtomicOutputFile, FullDiskIsDiskFullAndLeavesNothing) {
  TempDir dir;
  EXPECT_EXIT(std::_Exit(write_past_size_limit(dir.file("big.bin"))), ::testing::ExitedWithCode(0),
              "");
}

TEST(Io, HelpersAndMappedFile) {
  TempDir dir;
  test::write_file(dir.file("t.txt"), "text");
  EXPECT_EQ(read_text_file(dir.file("t.txt")), "text");
  EXPECT_TRUE(file_exists(dir.file("t.txt")));
  EXPECT_FALSE(file_exists(dir.file("u.txt")));
  EXPECT_TRUE(is_directory(dir.path()));
  EXPECT_FALSE(is_directory(dir.file("t.txt")));
  EXPECT_TRUE(same_file(dir.file("t.txt"), dir.path() + "/./t.txt"));
  EXPECT_FALSE(same_file(dir.file("t.txt"), dir.file("u.txt")));
  EXPECT_THROW(read_text_file(dir.file("u.txt")), Error);
  EXPECT_THROW(MappedFile(dir.path()), Error);

  test::write_file(dir.file("empty"), "");
  MappedFile e(dir.file("empty"));
  EXPECT_EQ(e.size(), 0u);
  e.release(0, 100);
  e.will_need(0, 100);

  std::vector<uint8_t> big(1 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 7);
  test::write_file(dir.file("big"), big.data(), big.size());
  MappedFile m(dir.file("big"));
  ASSERT_EQ(m.size(), big.size());
  m.will_need(100, 500000);
  m.release(100, 500000);  // advice only: the bytes stay readable
  EXPECT_EQ(0, std::memcmp(m.data(), big.data(), big.size()));
  m.release(m.size() - 10, 1000);
  MappedFile moved(std::move(m));
  EXPECT_EQ(moved.size(), big.size());
  EXPECT_EQ(m.data(), nullptr);
}

}  // namespace
}  // namespace qpack
