// What a checkpoint argument may be (issue #12 item 20): a .qpack or a GGUF
// file where a safetensors checkpoint is expected is named as what it is,
// and a folder without an index is one model only when it holds one
// .safetensors file or the complete shards of one.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

using namespace qpack;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

void write_matrix(const std::string& path, const std::string& name) {
  std::vector<float> w(64 * 16);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i % 13) - 6) / 8.0f;
  write_safetensors(path, {{name, DType::F32, {64, 16}, w.data(), w.size() * 4}}, {}, false);
}

TEST(SourceKind, QpackPassedAsCheckpointIsNamedAsOne) {
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors"), qp = dir.file("m.qpack");
  write_matrix(src, "w");
  ASSERT_EQ(test::run_qpack("convert " + src + " " + qp + " -q").exit_code, 0);
  // Its name does not matter: the magic does.
  fs::copy_file(qp, dir.file("renamed.safetensors"));
  for (const std::string& as : {qp, dir.file("renamed.safetensors")}) {
    SCOPED_TRACE(as);
    auto r = test::run_qpack("convert " + as + " " + dir.file("again.qpack") + " -q");
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_TRUE(has(r.output, as + ": is a .qpack file, not a safetensors checkpoint")) << r.output;
    EXPECT_FALSE(has(r.output, "header length")) << r.output;
    r = test::run_qpack("verify " + qp + " " + as + " --device cpu");
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_TRUE(has(r.output, "is a .qpack file, not a safetensors checkpoint")) << r.output;
  }
  EXPECT_FALSE(fs::exists(dir.file("again.qpack")));
}

TEST(SourceKind, GgufPassedAsCheckpointIsNamedAsOne) {
  test::TempDir dir;
  const std::string gguf = dir.file("model.gguf");
  std::string bytes = "GGUF";
  bytes += std::string("\x03\x00\x00\x00", 4) + std::string(64, '\0');
  test::write_file(gguf, bytes);
  const auto r = test::run_qpack("convert " + gguf + " " + dir.file("o.qpack") + " -q");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(has(r.output, gguf + ": is a GGUF file, not a safetensors checkpoint")) << r.output;
}

TEST(SourceKind, FolderOfSeparateModelsIsRefusedNamingThem) {
  test::TempDir dir;
  const std::string folder = dir.file("m");
  fs::create_directories(folder);
  write_matrix(folder + "/model.safetensors", "w");
  write_matrix(folder + "/adapter_model.safetensors", "lora_A.w");
  for (const std::string& cmd : {"convert " + folder + " " + dir.file("o.qpack") + " -q",
                                 "convert " + folder + " --dry-run", "inspect " + folder}) {
    SCOPED_TRACE(cmd);
    const auto r = test::run_qpack(cmd);
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_TRUE(has(r.output, "not the shards of one model")) << r.output;
    EXPECT_TRUE(has(r.output, "adapter_model.safetensors, model.safetensors")) << r.output;
  }
  EXPECT_FALSE(fs::exists(dir.file("o.qpack")));
  // Either file on its own converts.
  EXPECT_EQ(test::run_qpack("convert " + folder + "/model.safetensors --dry-run").exit_code, 0);
}

TEST(SourceKind, ShardsWithoutIndexMustBeCompleteAndOfOneModel) {
  test::TempDir dir;
  const std::string folder = dir.file("m");
  fs::create_directories(folder);
  write_matrix(folder + "/model-00001-of-00002.safetensors", "a");
  write_matrix(folder + "/model-00002-of-00002.safetensors", "b");
  EXPECT_EQ(test::run_qpack("convert " + folder + " --dry-run").exit_code, 0);
  // Another model's shards beside them.
  write_matrix(folder + "/other-00001-of-00001.safetensors", "c");
  auto r = test::run_qpack("convert " + folder + " --dry-run");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(has(r.output, "not the shards of one model")) << r.output;
  fs::remove(folder + "/other-00001-of-00001.safetensors");
  // A missing shard.
  fs::remove(folder + "/model-00002-of-00002.safetensors");
  write_matrix(folder + "/model-00003-of-00003.safetensors", "c");
  write_matrix(folder + "/model-00001-of-00003.safetensors", "a");
  fs::remove(folder + "/model-00001-of-00002.safetensors");
  r = test::run_qpack("convert " + folder + " --dry-run");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(has(r.output, "2 of the 3 shards of 'model'")) << r.output;
}

}  // namespace
