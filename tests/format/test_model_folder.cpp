// ModelFolderWriter (qpack/format/model_folder.hpp, docs/hf-folders.md):
// shard planning at awkward sizes, positional writes in any order, the
// folder read back by qpack's own readers and by the Python safetensors
// package, coverage and overlap refusals, the overwrite rules, atomicity
// (nothing under the final name, no temporary folder left) and the copying
// rules.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/live_files.hpp"
#include "qpack/format/model_folder.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

using namespace qpack;
using nlohmann::json;
using qpack::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

// A declared tensor with fresh random bytes.
struct Declared {
  FolderTensor t;
  std::vector<uint8_t> bytes;
};

Declared make(const std::string& name, DType dtype, std::vector<int64_t> shape,
              std::mt19937_64& rng) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);
  Declared d;
  d.t.name = name;
  d.t.dtype = dtype;
  d.t.shape = std::move(shape);
  d.t.nbytes = n * uint64_t(dtype_bits(dtype)) / 8;
  d.bytes.resize(d.t.nbytes);
  for (auto& b : d.bytes) b = uint8_t(rng());
  return d;
}

// A U8 vector tensor of exactly `nbytes` bytes.
Declared make_bytes(const std::string& name, uint64_t nbytes, std::mt19937_64& rng) {
  return make(name, DType::U8, {int64_t(nbytes)}, rng);
}

std::vector<FolderTensor> declarations(const std::vector<Declared>& ds) {
  std::vector<FolderTensor> out;
  for (const auto& d : ds) out.push_back(d.t);
  return out;
}

// Writes every tensor in random pieces, the pieces of all tensors shuffled.
void write_shuffled(ModelFolderWriter& w, const std::vector<Declared>& ds, std::mt19937_64& rng) {
  struct Piece {
    size_t tensor;
    uint64_t offset, size;
  };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < ds.size(); ++i) {
    uint64_t off = 0;
    while (off < ds[i].t.nbytes) {
      const uint64_t n = std::min<uint64_t>(ds[i].t.nbytes - off, 1 + rng() % 23);
      pieces.push_back({i, off, n});
      off += n;
    }
  }
  std::shuffle(pieces.begin(), pieces.end(), rng);
  for (const Piece& p : pieces)
    w.write(p.tensor, p.offset, ds[p.tensor].bytes.data() + p.offset, p.size);
}

// The raw JSON header of a safetensors file, in file order.
std::string raw_header(const std::string& path) {
  const std::vector<uint8_t> f = test::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | f[size_t(i)];
  return std::string(f.begin() + 8, f.begin() + 8 + long(n));
}

// The folder holds exactly the declared tensors with their bytes, through
// SafetensorsFile per shard and Checkpoint over the folder.
void expect_folder_holds(const std::string& dir, const std::vector<Declared>& ds,
                         const std::vector<std::string>& shard_names,
                         const std::vector<size_t>& shard_of) {
  size_t listed = 0;
  for (size_t s = 0; s < shard_names.size(); ++s) {
    const std::string path = dir + "/" + shard_names[s];
    auto f = SafetensorsFile::open(path);
    EXPECT_EQ(f->data_start() % 8, 0u) << path;
    EXPECT_EQ(f->metadata().at("format"), "pt");
    // Keys in the header are sorted (nlohmann's dump of an object is, but
    // this reads the file's own bytes).
    const std::string h = raw_header(path);
    std::vector<size_t> positions;
    std::vector<std::string> names;
    for (size_t i = 0; i < ds.size(); ++i)
      if (shard_of[i] == s) names.push_back(ds[i].t.name);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) positions.push_back(h.find("\"" + n + "\":{\"data_offsets\""));
    EXPECT_TRUE(std::is_sorted(positions.begin(), positions.end())) << h;
    EXPECT_EQ(std::count(positions.begin(), positions.end(), std::string::npos), 0) << h;
    listed += f->tensors().size();
    for (size_t i = 0; i < ds.size(); ++i) {
      if (shard_of[i] != s) continue;
      const TensorInfo* t = f->find(ds[i].t.name);
      ASSERT_NE(t, nullptr) << ds[i].t.name;
      EXPECT_EQ(t->dtype, ds[i].t.dtype);
      EXPECT_EQ(t->shape, ds[i].t.shape);
      ASSERT_EQ(t->nbytes(), ds[i].t.nbytes);
      EXPECT_TRUE(std::equal(ds[i].bytes.begin(), ds[i].bytes.end(), f->tensor_data(*t)))
          << ds[i].t.name;
    }
  }
  EXPECT_EQ(listed, ds.size());
  auto ck = Checkpoint::open(dir);
  ASSERT_EQ(ck->tensors().size(), ds.size());
  for (const auto& d : ds) {
    const CheckpointTensor* t = ck->find(d.t.name);
    ASSERT_NE(t, nullptr) << d.t.name;
    EXPECT_TRUE(std::equal(d.bytes.begin(), d.bytes.end(), t->data())) << d.t.name;
  }
}

struct ShardCase {
  const char* what;
  uint64_t max_shard;
  std::vector<uint64_t> sizes;
  std::vector<size_t> expected_shard;
};

}  // namespace

TEST(ModelFolder, ShardsFollowTheDeclaredOrderAtAwkwardSizes) {
  const ShardCase cases[] = {
      {"exact fit", 64, {32, 32, 32}, {0, 0, 1}},
      {"one byte over", 64, {32, 33, 31}, {0, 1, 1}},
      {"one byte under", 64, {32, 31, 1, 1}, {0, 0, 0, 1}},
      {"oversized alone", 64, {16, 100, 16}, {0, 1, 2}},
      {"oversized first", 64, {65, 64}, {0, 1}},
      {"zero-byte tensors join the current shard", 64, {64, 0, 0, 8, 0}, {0, 0, 0, 1, 1}},
      {"zero-byte first", 8, {0, 8, 0}, {0, 0, 0}},
      {"one shard", 1000, {7, 9, 1, 13}, {0, 0, 0, 0}},
      {"every tensor its own", 1, {1, 1, 1}, {0, 1, 2}},
  };
  const uint64_t seed = test::test_seed();
  std::mt19937_64 rng(seed);
  for (const ShardCase& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir dir;
    std::vector<Declared> ds;
    for (size_t i = 0; i < c.sizes.size(); ++i)
      ds.push_back(make_bytes("t" + std::to_string(i) + ".weight", c.sizes[i], rng));
    ModelFolderOptions opt;
    opt.max_shard_bytes = c.max_shard;
    opt.config = json{{"model_type", "llama"}};
    const std::string out = dir.file("model");
    ModelFolderWriter w(out, declarations(ds), opt);
    const size_t n_shards = *std::max_element(c.expected_shard.begin(), c.expected_shard.end()) + 1;
    ASSERT_EQ(w.shard_names().size(), n_shards);
    for (size_t i = 0; i < ds.size(); ++i) EXPECT_EQ(w.shard_of(i), c.expected_shard[i]) << i;
    if (n_shards == 1) {
      EXPECT_EQ(w.shard_names()[0], "model.safetensors");
    } else {
      char buf[64];
      for (size_t s = 0; s < n_shards; ++s) {
        std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", s + 1, n_shards);
        EXPECT_EQ(w.shard_names()[s], buf);
      }
    }
    EXPECT_FALSE(fs::exists(out));
    write_shuffled(w, ds, rng);
    EXPECT_FALSE(fs::exists(out)) << "visible before commit";
    w.commit();
    EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"model"}) << "temporary folder left";
    uint64_t total = 0;
    for (uint64_t s : c.sizes) total += s;
    EXPECT_EQ(w.tensor_bytes(), total);
    expect_folder_holds(out, ds, w.shard_names(), c.expected_shard);
    std::vector<std::string> want = w.shard_names();
    want.push_back("config.json");
    if (n_shards > 1) {
      want.push_back("model.safetensors.index.json");
      const json index = json::parse(test::read_file(out + "/model.safetensors.index.json"));
      json expected = {{"metadata", {{"total_size", total}}}, {"weight_map", json::object()}};
      for (size_t i = 0; i < ds.size(); ++i)
        expected["weight_map"][ds[i].t.name] = w.shard_names()[c.expected_shard[i]];
      EXPECT_EQ(index, expected);
    }
    std::sort(want.begin(), want.end());
    EXPECT_EQ(entries(out), want);
    EXPECT_EQ(json::parse(test::read_file(out + "/config.json")), opt.config);
  }
}

TEST(ModelFolder, DtypesAndZeroDimensionalTensorsRoundTrip) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {
      make("scalar", DType::F32, {}, rng),     make("b", DType::BF16, {3, 5}, rng),
      make("packed", DType::I32, {7, 3}, rng), make("shape", DType::I64, {2}, rng),
      make("empty", DType::F16, {0, 4}, rng),  make("h", DType::F16, {11}, rng),
      make("scalar64", DType::F64, {}, rng),   make("u", DType::U8, {1, 1, 1}, rng),
  };
  TempDir dir;
  ModelFolderOptions opt;
  opt.max_shard_bytes = 40;
  opt.metadata = {{"format", "pt"}, {"producer", "qpack test"}};
  ModelFolderWriter w(dir.file("m"), declarations(ds), opt);
  ASSERT_GT(w.shard_names().size(), 1u);
  write_shuffled(w, ds, rng);
  w.commit();
  std::vector<size_t> shard_of;
  for (size_t i = 0; i < ds.size(); ++i) shard_of.push_back(w.shard_of(i));
  expect_folder_holds(dir.file("m"), ds, w.shard_names(), shard_of);
  auto f = SafetensorsFile::open(dir.file("m") + "/" + w.shard_names()[0]);
  EXPECT_EQ(f->metadata().at("producer"), "qpack test");
  EXPECT_FALSE(file_exists(dir.file("m") + "/config.json")) << "no config given, none written";
}

TEST(ModelFolder, PythonSafetensorsReadsTheFolderAsHfDoes) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds;
  const DType types[] = {DType::F32, DType::F16, DType::I32, DType::I64, DType::U8, DType::F64};
  for (int i = 0; i < 14; ++i) {
    std::vector<int64_t> shape;
    if (i % 5 != 4) shape = {int64_t(1 + rng() % 9), int64_t(rng() % 13)};
    ds.push_back(make("model.layers." + std::to_string(i) + ".w", types[i % 6], shape, rng));
  }
  TempDir dir;
  ModelFolderOptions opt;
  opt.max_shard_bytes = 200;
  const std::string out = dir.file("m");
  ModelFolderWriter w(out, declarations(ds), opt);
  write_shuffled(w, ds, rng);
  w.commit();
  // What the tensors should hold, for the script to compare against.
  json expected = json::object();
  for (const auto& d : ds) {
    std::string hex;
    static const char kHex[] = "0123456789abcdef";
    for (uint8_t b : d.bytes) {
      hex += kHex[b >> 4];
      hex += kHex[b & 15];
    }
    expected[d.t.name] = {{"dtype", dtype_name(d.t.dtype)}, {"shape", d.t.shape}, {"hex", hex}};
  }
  test::write_file(dir.file("expected.json"), expected.dump());
  const auto r = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                   "/tests/format/model_folder_check.py " + q(out) + " " +
                                   q(dir.file("expected.json")) + " 2>&1");
  if (r.exit_code == 77) GTEST_SKIP() << "python3 cannot import numpy and safetensors";
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ok: 14 tensors"), std::string::npos) << r.output;
}

TEST(ModelFolder, WritesFromSeveralThreadsAtOnce) {
  // Exporters write slices of several tensors from worker threads.
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds;
  for (int i = 0; i < 24; ++i)
    ds.push_back(make_bytes("t" + std::to_string(i), 1000 + rng() % 5000, rng));
  TempDir dir;
  ModelFolderOptions opt;
  opt.max_shard_bytes = 20000;
  ModelFolderWriter w(dir.file("m"), declarations(ds), opt);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      // Thread k writes every 4th 97-byte piece of every tensor.
      for (size_t i = 0; i < ds.size(); ++i)
        for (uint64_t off = uint64_t(k) * 97; off < ds[i].t.nbytes; off += 4 * 97)
          w.write(i, off, ds[i].bytes.data() + off, std::min<uint64_t>(97, ds[i].t.nbytes - off));
    });
  for (auto& t : threads) t.join();
  w.commit();
  std::vector<size_t> shard_of;
  for (size_t i = 0; i < ds.size(); ++i) shard_of.push_back(w.shard_of(i));
  expect_folder_holds(dir.file("m"), ds, w.shard_names(), shard_of);
}

TEST(ModelFolder, MissingBytesAreRefusedAndNothingIsLeft) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {make_bytes("a", 10, rng), make_bytes("b", 30, rng),
                              make_bytes("z", 0, rng)};
  for (int gap : {0, 1, 2}) {  // never written, a hole in the middle, the last byte missing
    SCOPED_TRACE(gap);
    TempDir dir;
    {
      ModelFolderWriter w(dir.file("m"), declarations(ds), {});
      w.write(0, 0, ds[0].bytes.data(), 10);
      if (gap == 1) {
        w.write(1, 0, ds[1].bytes.data(), 10);
        w.write(1, 11, ds[1].bytes.data() + 11, 19);
      } else if (gap == 2) {
        w.write(1, 0, ds[1].bytes.data(), 29);
      }
      try {
        w.commit();
        FAIL() << "committed with bytes missing";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
        EXPECT_EQ(e.tensor(), "b");
        const std::string missing[] = {"byte 0 ", "byte 10 ", "byte 29 "};
        EXPECT_NE(std::string(e.what()).find(missing[gap]), std::string::npos) << e.what();
      }
      EXPECT_FALSE(fs::exists(dir.file("m")));
    }
    EXPECT_TRUE(entries(dir.path()).empty()) << "temporary folder left";
  }
}

TEST(ModelFolder, OverlappingOrOutOfRangeWritesAreRefused) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {make_bytes("a", 40, rng)};
  TempDir dir;
  ModelFolderWriter w(dir.file("m"), declarations(ds), {});
  const uint8_t* p = ds[0].bytes.data();
  w.write(0, 10, p + 10, 10);  // [10, 20)
  w.write(0, 30, p + 30, 5);   // [30, 35)
  struct Bad {
    uint64_t off, n;
  };
  for (Bad b : {Bad{19, 2}, Bad{5, 6}, Bad{0, 40}, Bad{12, 3}, Bad{34, 1}, Bad{25, 6}}) {
    SCOPED_TRACE(std::to_string(b.off) + "+" + std::to_string(b.n));
    try {
      w.write(0, b.off, p + b.off, b.n);
      FAIL() << "overlap accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(w.write(0, 39, p, 2), Error);  // past the end
  EXPECT_THROW(w.write(1, 0, p, 1), Error);   // not declared
  // Adjacent ranges are fine, in any order, and complete the tensor.
  w.write(0, 35, p + 35, 5);
  w.write(0, 20, p + 20, 10);
  w.write(0, 0, p, 10);
  w.commit();
  expect_folder_holds(dir.file("m"), ds, {"model.safetensors"}, {0});
}

TEST(ModelFolder, BadDeclarationsAreRefusedBeforeAnythingExists) {
  TempDir dir;
  auto t = [](std::string name, uint64_t nbytes) {
    return FolderTensor{std::move(name), DType::F32, {2}, nbytes};
  };
  EXPECT_THROW(ModelFolderWriter(dir.file("m"), {t("a", 8), t("a", 8)}, {}), Error);
  EXPECT_THROW(ModelFolderWriter(dir.file("m"), {t("a", 7)}, {}), Error);
  EXPECT_THROW(ModelFolderWriter(dir.file("m"), {t("__metadata__", 8)}, {}), Error);
  ModelFolderOptions zero;
  zero.max_shard_bytes = 0;
  EXPECT_THROW(ModelFolderWriter(dir.file("m"), {t("a", 8)}, zero), Error);
  ModelFolderOptions slash;
  slash.generated_files = {{"sub/x.json", "{}"}};
  EXPECT_THROW(ModelFolderWriter(dir.file("m"), {t("a", 8)}, slash), Error);
  ModelFolderOptions twice;
  twice.config = json::object();
  twice.generated_files = {{"config.json", "{}"}};
  EXPECT_THROW(ModelFolderWriter(dir.file("m"), {t("a", 8)}, twice), Error);
  EXPECT_TRUE(entries(dir.path()).empty());
}

TEST(ModelFolder, OverwriteReplacesOnlyAModelFolder) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {make_bytes("a", 16, rng)};
  auto write_folder = [&](const std::string& out, bool overwrite) {
    ModelFolderOptions opt;
    opt.overwrite = overwrite;
    opt.config = json{{"new", true}};
    ModelFolderWriter w(out, declarations(ds), opt);
    write_shuffled(w, ds, rng);
    w.commit();
  };
  auto expect_refused = [&](const std::string& out, ErrorCode code) {
    for (bool overwrite : {false, true}) {
      if (code == ErrorCode::OutputExists && overwrite) continue;
      try {
        write_folder(out, overwrite);
        ADD_FAILURE() << out << " replaced, overwrite " << overwrite;
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), code) << e.what();
        EXPECT_EQ(e.file(), out);
      }
    }
  };
  TempDir dir;
  // A model folder: exists without overwrite, replaced as a whole with it.
  const std::string model = dir.file("model");
  fs::create_directory(model);
  test::write_file(model + "/config.json", "{\"old\": true}");
  test::write_file(model + "/model-00001-of-00002.safetensors", "old");
  test::write_file(model + "/stale.txt", "old");
  ::chmod(model.c_str(), 0750);
  expect_refused(model, ErrorCode::OutputExists);
  EXPECT_EQ(test::read_file(model + "/stale.txt").size(), 3u);
  write_folder(model, true);
  EXPECT_EQ(entries(model), (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(json::parse(test::read_file(model + "/config.json")), json({{"new", true}}));
  struct stat st;
  ASSERT_EQ(::stat(model.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u) << "a replaced folder keeps its permissions";
  // A trailing slash names the same folder.
  write_folder(model + "/", true);
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"model"});

  // Not a model folder: no config.json or .safetensors, or a subfolder.
  const std::string other = dir.file("other");
  fs::create_directory(other);
  test::write_file(other + "/notes.txt", "mine");
  expect_refused(other, ErrorCode::Io);
  const std::string nested = dir.file("nested");
  fs::create_directories(nested + "/sub");
  test::write_file(nested + "/config.json", "{}");
  expect_refused(nested, ErrorCode::Io);
  EXPECT_TRUE(fs::exists(nested + "/sub"));
  // A model folder holding a symbolic link is not replaced either.
  const std::string linked = dir.file("linked");
  fs::create_directory(linked);
  test::write_file(linked + "/config.json", "{}");
  fs::create_symlink(other + "/notes.txt", linked + "/notes.txt");
  expect_refused(linked, ErrorCode::Io);
  // A file, a symbolic link to a model folder, a dangling link.
  const std::string file = dir.file("file");
  test::write_file(file, "data");
  expect_refused(file, ErrorCode::Io);
  EXPECT_EQ(test::read_file(file).size(), 4u);
  const std::string link = dir.file("link");
  fs::create_directory_symlink(model, link);
  expect_refused(link, ErrorCode::Io);
  const std::string dangling = dir.file("dangling");
  fs::create_symlink(dir.file("nowhere"), dangling);
  expect_refused(dangling, ErrorCode::Io);
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_TRUE(fs::is_symlink(dangling));
  EXPECT_EQ(test::read_file(other + "/notes.txt").size(), 4u);

  // An empty directory is taken without overwrite: nothing is lost.
  const std::string empty = dir.file("empty");
  fs::create_directory(empty);
  write_folder(empty, false);
  EXPECT_EQ(entries(empty), (std::vector<std::string>{"config.json", "model.safetensors"}));
  for (const auto& e : entries(dir.path()))
    EXPECT_EQ(e.find(".qpack-partial."), std::string::npos) << e;
}

TEST(ModelFolder, AFailureMidwayLeavesNothing) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {make_bytes("a", 100, rng), make_bytes("b", 100, rng)};
  TempDir dir;
  std::string temp;
  try {
    ModelFolderOptions opt;
    opt.max_shard_bytes = 100;
    ModelFolderWriter w(dir.file("m"), declarations(ds), opt);
    temp = w.temp_path();
    EXPECT_EQ(fs::path(temp).parent_path(), fs::path(dir.path()));
    EXPECT_EQ(fs::path(temp).filename().string().rfind(
                  ".m.qpack-partial." + std::to_string(::getpid()) + ".", 0),
              0u)
        << temp;
    EXPECT_TRUE(fs::is_directory(temp));
    w.write(0, 0, ds[0].bytes.data(), 100);
    throw std::runtime_error("stop");  // as a conversion failing on tensor b
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(temp.empty());
  EXPECT_TRUE(entries(dir.path()).empty()) << "left: " << entries(dir.path())[0];
}

TEST(ModelFolder, TheSignalCleanupRemovesTheTemporaryFolder) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {make_bytes("a", 50, rng), make_bytes("b", 50, rng)};
  TempDir dir;
  ModelFolderOptions opt;
  opt.max_shard_bytes = 50;
  opt.generated_files = {{"quantize_config.json", "{}"}};
  ModelFolderWriter w(dir.file("m"), declarations(ds), opt);
  w.write(0, 0, ds[0].bytes.data(), 50);
  ASSERT_EQ(entries(w.temp_path()).size(), 2u);
  live_files::unlink_temp_files();  // what tools/qpack/signals.cpp calls on SIGINT/SIGTERM
  EXPECT_TRUE(entries(dir.path()).empty());
}

TEST(ModelFolder, LeftoversOfDeadProcessesAreRemovedOthersKept) {
  TempDir dir;
  const pid_t dead = [] {
    const pid_t pid = fork();
    if (pid == 0) _exit(0);
    int status = 0;
    waitpid(pid, &status, 0);
    return pid;
  }();
  const std::string stale = dir.file(".m.qpack-partial." + std::to_string(dead) + ".Ab3xYz");
  fs::create_directory(stale);
  test::write_file(stale + "/model.safetensors", "partial");
  // Same pattern but holding a subfolder: not what a writer leaves, kept.
  const std::string odd = dir.file(".m.qpack-partial." + std::to_string(dead) + ".Qq1Qq1");
  fs::create_directories(odd + "/sub");
  // A live process's (this one's) and another output's are kept.
  const std::string mine = dir.file(".m.qpack-partial." + std::to_string(::getpid()) + ".aaaaaa");
  fs::create_directory(mine);
  const std::string other = dir.file(".n.qpack-partial." + std::to_string(dead) + ".bbbbbb");
  fs::create_directory(other);
  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {make_bytes("a", 8, rng)};
  ModelFolderWriter w(dir.file("m"), declarations(ds), {});
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(odd));
  EXPECT_TRUE(fs::exists(mine));
  EXPECT_TRUE(fs::exists(other));
}

TEST(ModelFolder, CopiesTheSourcesOtherRegularFiles) {
  TempDir dir;
  const std::string src = dir.file("src");
  fs::create_directories(src + "/onnx");
  fs::create_directories(src + "/.cache");
  test::write_file(src + "/config.json", "{\"source\": true}");
  test::write_file(src + "/tokenizer.json", std::string(3000000, 't'));  // more than one buffer
  test::write_file(src + "/tokenizer_config.json", "{}");
  test::write_file(src + "/generation_config.json", "{\"g\": 1}");
  test::write_file(src + "/README.md", "# readme");
  test::write_file(src + "/run.sh", "#!/bin/sh");
  ::chmod((src + "/run.sh").c_str(), 0751);
  test::write_file(src + "/LICENSE", "licence");
  test::write_file(src + "/quantize_config.json", "{\"from\": \"source\"}");
  test::write_file(src + "/.gitattributes", "*.bin lfs");
  for (const char* w : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "m.pt", "m.pth", "m.ckpt", "m.gguf", "m.qpack"})
    test::write_file(src + "/" + w, "weights");
  test::write_file(dir.file("blob"), "linked file");
  fs::create_symlink(dir.file("blob"), src + "/vocab.txt");  // as in an HF cache snapshot
  fs::create_symlink(dir.file("nowhere"), src + "/dangling.txt");
  ::mkfifo((src + "/fifo").c_str(), 0600);

  std::mt19937_64 rng(test::test_seed());
  std::vector<Declared> ds = {make_bytes("a", 8, rng)};
  ModelFolderOptions opt;
  opt.config = json{{"written", true}};
  opt.generated_files = {{"quantize_config.json", "{\"from\": \"writer\"}"}};
  opt.copy_files_from = src;
  const std::string out = dir.file("out");
  ModelFolderWriter w(out, declarations(ds), opt);
  write_shuffled(w, ds, rng);
  w.commit();
  EXPECT_EQ(entries(out), (std::vector<std::string>{
                              "LICENSE", "README.md", "config.json", "generation_config.json",
                              "model.safetensors", "quantize_config.json", "run.sh",
                              "tokenizer.json", "tokenizer_config.json", "vocab.txt"}));
  EXPECT_EQ(w.skipped(), (std::vector<std::string>{"dangling.txt", "fifo", "onnx"}));
  for (const char* f : {"LICENSE", "README.md", "generation_config.json", "run.sh",
                        "tokenizer.json", "tokenizer_config.json", "vocab.txt"})
    EXPECT_EQ(test::read_file(out + "/" + f), test::read_file(src + "/" + f)) << f;
  EXPECT_EQ(json::parse(test::read_file(out + "/config.json")), opt.config);
  EXPECT_EQ(json::parse(test::read_file(out + "/quantize_config.json")),
            json({{"from", "writer"}}));
  struct stat st;
  ASSERT_EQ(::lstat((out + "/run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0751u);
  ASSERT_EQ(::lstat((out + "/vocab.txt").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "a link is copied as the file it names";

  ModelFolderOptions bad;
  bad.copy_files_from = dir.file("missing");
  try {
    ModelFolderWriter w2(dir.file("out2"), declarations(ds), bad);
    FAIL() << "a missing source folder was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_EQ(e.file(), dir.file("missing"));
  }
  EXPECT_FALSE(fs::exists(dir.file("out2")));
}

namespace {

// A 1 MiB tmpfs mounted on a fresh folder, when this process may mount.
class SmallTmpfs {
 public:
  SmallTmpfs() {
    mounted_ = ::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, "size=1m") == 0;
    if (!mounted_) reason_ = std::strerror(errno);
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& reason() const { return reason_; }
  std::string file(const std::string& name) const { return dir_.file(name); }
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string reason_;
};

}  // namespace

TEST(ModelFolder, AFullDiskIsDiskFullWithNothingUnderTheFinalName) {
  SmallTmpfs small;
  if (!small.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << small.reason();
  std::mt19937_64 rng(test::test_seed());
  // Refused up front: the shards do not fit.
  {
    std::vector<Declared> ds = {make_bytes("a", 3u << 20, rng)};
    try {
      ModelFolderWriter w(small.file("m"), declarations(ds), {});
      FAIL() << "3 MiB fit in 1 MiB";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::DiskFull) << e.what();
    }
    EXPECT_TRUE(entries(small.path()).empty());
  }
  // The check passes but the disk fills while writing (another writer took
  // the space): DiskFull from write, nothing left after.
  {
    std::vector<Declared> ds = {make_bytes("a", 600u << 10, rng)};
    ModelFolderWriter w(small.file("m"), declarations(ds), {});
    test::write_file(small.file("filler"), std::string(600u << 10, 'f'));
    try {
      w.write(0, 0, ds[0].bytes.data(), ds[0].t.nbytes);
      w.commit();
      FAIL() << "1.2 MiB fit in 1 MiB";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::DiskFull) << e.what();
      EXPECT_EQ(e.file(), small.file("m"));
    }
  }
  EXPECT_EQ(entries(small.path()), std::vector<std::string>{"filler"});
}
