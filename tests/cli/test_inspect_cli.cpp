// `qpack inspect` through the real executable: tables, --json, --check, and
// the must-fail corpus's exit codes and messages.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "format/corpus.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/inspect.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using nlohmann::json;
using test::run_qpack;
using test::TempDir;

std::string q(const std::string& path) { return "'" + path + "'"; }

std::string write_case(const corpus::Case& c, const TempDir& dir) {
  return corpus::materialize(c, dir.path());
}

corpus::Case valid(const std::string& name) {
  for (corpus::Case& c : corpus::valid_samples())
    if (c.name == name) return c;
  throw std::runtime_error("no valid sample " + name);
}

class InspectMustFail : public ::testing::TestWithParam<std::string> {};

TEST_P(InspectMustFail, ExitCodeAndMessage) {
  const corpus::Case c = corpus::make_must_fail(GetParam());
  TempDir dir;
  const std::string path = write_case(c, dir);
  // A .qpack that fails its checks is an integrity error (4), whatever the
  // code, as in verify and dequantize (issue #12 item 16).
  const bool qpack =
      is_qpack_file(path) || (path.size() >= 6 && path.compare(path.size() - 6, 6, ".qpack") == 0);
  const int expected_exit = qpack && exit_code_for(c.expected) == kExitBadInput
                                ? int(kExitIntegrity)
                                : exit_code_for(c.expected);
  for (const char* flags : {"--check", "--check --json"}) {
    const auto r = run_qpack(std::string("inspect ") + flags + " " + q(path));
    SCOPED_TRACE(r.output);
    EXPECT_EQ(r.exit_code, expected_exit) << flags;
    EXPECT_NE(r.output.find("qpack: error: "), std::string::npos);
    EXPECT_NE(r.output.find(dir.file(c.file_in_message)), std::string::npos)
        << "message must name the file";
    EXPECT_NE(r.output.find(std::string("[") + error_code_name(c.expected) + "]"),
              std::string::npos);
    if (!c.tensor.empty()) {
      EXPECT_NE(r.output.find("tensor '" + c.tensor + "'"), std::string::npos);
    }
  }
  if (c.on_check) {
    // Without --check only the header and manifest are read: it lists fine.
    const auto r = run_qpack("inspect " + q(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, InspectMustFail, ::testing::ValuesIn(corpus::must_fail_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(InspectCli, SafetensorsTable) {
  TempDir dir;
  const std::string path = write_case(valid("st_every_dtype"), dir);
  const auto r = run_qpack("inspect " + q(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("safetensors: " + path + " (1 file)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("NAME"), std::string::npos);
  for (const char* n : {"t_F4", "t_BF16", "t_C64", "t_F6_E3M2"})
    EXPECT_NE(r.output.find(n), std::string::npos) << n;
  EXPECT_NE(r.output.find("[2, 4]"), std::string::npos);
  EXPECT_NE(r.output.find("raw"), std::string::npos);
  EXPECT_NE(r.output.find("20 tensors"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("data 480 B"), std::string::npos) << r.output;
}

TEST(InspectCli, QpackTableWithSchemesAndRatios) {
  TempDir dir;
  const std::string path = write_case(valid("qp_sample_zstd"), dir);
  const auto r = run_qpack("inspect " + q(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("qpack 1.0: " + path), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("q4 g8 ax0 asym F16"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("q8 g16 ax1 sym BF16"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("RATIO"), std::string::npos);
  EXPECT_NE(r.output.find("5 tensors"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("source (ratio "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("check: OK"), std::string::npos);
}

TEST(InspectCli, MagicNotExtensionDecides) {
  TempDir dir;
  const auto b = corpus::sample_qpack(Codec::None);
  test::write_file(dir.file("weights.bin"), b.data(), b.size());
  const auto r = run_qpack("inspect --json " + q(dir.file("weights.bin")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json::parse(r.output)["format"], "qpack");
}

TEST(InspectCli, JsonForQpack) {
  TempDir dir;
  const std::string path = write_case(valid("qp_sample"), dir);
  const auto r = run_qpack("inspect --json --check " + q(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["format"], "qpack");
  EXPECT_EQ(j["version"], "1.0");
  EXPECT_EQ(j["generator"], "qpack-corpus");
  EXPECT_EQ(j["path"], path);
  EXPECT_EQ(j["check"], "ok");
  EXPECT_EQ(j["metadata"]["format"], "pt");
  EXPECT_EQ(j["config"]["hidden_size"], 16);
  ASSERT_EQ(j["tensors"].size(), 5u);
  const json& w = j["tensors"][1];
  EXPECT_EQ(w["name"], "w");
  EXPECT_EQ(w["dtype"], "F16");
  EXPECT_EQ(w["shape"], json({16, 8}));
  EXPECT_EQ(w["encoding"], "group_quant");
  EXPECT_EQ(w["scheme"], "q4 g8 ax0 asym F16");
  EXPECT_EQ(w["quant"]["bits"], 4);
  EXPECT_EQ(w["source_bytes"], 256);
  EXPECT_EQ(w["bytes"], 64 + 32 + 32);
  EXPECT_DOUBLE_EQ(w["ratio"].get<double>(), 2.0);
  EXPECT_TRUE(w["sections"].contains("zeros"));
  uint64_t bytes = 0, source = 0;
  for (const json& t : j["tensors"]) {
    bytes += t["bytes"].get<uint64_t>();
    source += t["source_bytes"].get<uint64_t>();
  }
  EXPECT_EQ(j["totals"]["tensors"], 5);
  EXPECT_EQ(j["totals"]["bytes"], bytes);
  EXPECT_EQ(j["totals"]["source_bytes"], source);
  EXPECT_EQ(j["file_size"], std::filesystem::file_size(path));
}

TEST(InspectCli, JsonForShardedFolder) {
  const corpus::Case base = corpus::make_must_fail("idx_missing_tensor");  // borrow its good shards
  TempDir dir;
  corpus::Case c = base;
  c.files.pop_back();  // drop the broken index
  const std::string index =
      R"({"metadata":{"total_size":19},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
      R"("b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})";
  c.files.push_back({"model.safetensors.index.json", corpus::Bytes(index.begin(), index.end())});
  test::write_file(dir.file("config.json"), R"({"vocab_size": 32})");
  const std::string path = write_case(c, dir);
  const auto r = run_qpack("inspect --json --check " + q(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["format"], "safetensors");
  ASSERT_EQ(j["files"].size(), 2u);
  EXPECT_EQ(j["files"][0], dir.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(j["config"]["vocab_size"], 32);
  EXPECT_EQ(j["metadata"]["total_size"], "19");
  EXPECT_EQ(j["metadata"]["format"], "pt");
  ASSERT_EQ(j["tensors"].size(), 3u);
  EXPECT_EQ(j["tensors"][2]["name"], "c");
  EXPECT_EQ(j["tensors"][2]["file"], dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(j["tensors"][2]["data_offsets"], json({0, 8}));
  EXPECT_EQ(j["totals"]["bytes"], 19);
  EXPECT_EQ(j["check"], "ok");

  const auto t = run_qpack("inspect " + q(path));
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_NE(t.output.find("FILE"), std::string::npos) << t.output;  // several files: a FILE column
  EXPECT_NE(t.output.find("(2 files)"), std::string::npos) << t.output;
}

TEST(InspectCli, CheckPrintsOk) {
  TempDir dir;
  for (const char* name : {"qp_sample", "qp_sample_zstd", "st_good"}) {
    const std::string path = write_case(valid(name), dir);
    const auto r = run_qpack("inspect --check " + q(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("check: OK"), std::string::npos) << r.output;
  }
}

TEST(InspectCli, UsageAndIoErrors) {
  TempDir dir;
  auto r = run_qpack("inspect");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.output;
  r = run_qpack("inspect " + q(dir.file("absent.qpack")));
  EXPECT_EQ(r.exit_code, kExitIo) << r.output;
  EXPECT_NE(r.output.find(dir.file("absent.qpack")), std::string::npos);
  r = run_qpack("inspect --bogus " + q(dir.path()));
  EXPECT_EQ(r.exit_code, kExitUsage) << r.output;
  r = run_qpack("inspect --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("docs/cli.md"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("format.md"), std::string::npos) << r.output;
}

// The library entry point the CLI uses.
TEST(InspectLibrary, ReportAndTable) {
  TempDir dir;
  const std::string path = write_case(valid("qp_sample"), dir);
  const json rep = inspect_report(path, InspectOptions{true});
  EXPECT_EQ(rep["check"], "ok");
  const std::string table = format_inspect_table(rep);
  EXPECT_NE(table.find("q8 g16 ax1 sym BF16"), std::string::npos);
  EXPECT_TRUE(is_qpack_file(path));
  EXPECT_FALSE(is_qpack_file(dir.path()));
  QuantScheme s;
  s.bits = 3;
  s.group_size = 128;
  s.axis = 1;
  s.symmetric = true;
  s.scale_dtype = DType::F32;
  EXPECT_EQ(scheme_label(s), "q3 g128 ax1 sym F32");
  s.group_size = 0;  // unresolved: the whole axis
  EXPECT_EQ(scheme_label(s), "q3 gall ax1 sym F32");
  EXPECT_EQ(shape_to_string({4096, 11008}), "[4096, 11008]");
  EXPECT_EQ(count_of(1, "tensor"), "1 tensor");
  EXPECT_EQ(count_of(0, "tensor"), "0 tensors");
  EXPECT_EQ(count_of(12, "thread"), "12 threads");
  EXPECT_EQ(shape_to_string({}), "[]");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(3u << 29), "1.50 GiB");
}

}  // namespace
}  // namespace qpack
