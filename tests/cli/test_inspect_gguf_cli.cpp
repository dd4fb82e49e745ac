// `qpack inspect FILE.gguf` through the real executable: the table, --json,
// --check, escaping of hostile metadata, and the GGUF must-fail corpus's
// exit codes and messages.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "format/corpus_gguf.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using nlohmann::json;
using test::run_qpack;

std::string q(const std::string& path) { return "'" + path + "'"; }

// The line of `text` that starts with `prefix` ("" when none does).
std::string line_with(const std::string& text, const std::string& prefix) {
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = text.find('\n', at);
    const std::string line = text.substr(at, end == std::string::npos ? end : end - at);
    if (line.rfind(prefix, 0) == 0) return line;
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return "";
}

// Q4_0 [64, 2] (4.5 bits per weight), F32 [3] (32), a key with an escape
// character and a long string.
std::string write_sample(const test::TempDir& dir) {
  const std::string path = dir.file("m.gguf");
  std::vector<uint8_t> q4(2 * 2 * 18, 0x11), f32(12, 0);
  write_gguf(path,
             {{"general.architecture", GgufValue::of_string("llama")},
              {"evil\x1b[2Jkey", GgufValue::of_string("bell\a")},
              {"llama.block_count", GgufValue::of_u32(2)},
              {"v.neg", GgufValue::of_i16(-3)},
              {"tokenizer.chat_template", GgufValue::of_string(std::string(300, 't'))},
              {"tokenizer.ggml.tokens",
               GgufValue::of_array(GgufType::String,
                                   {GgufValue::of_string("a"), GgufValue::of_string("b")})}},
             {{{"blk.0.w", GgmlType::Q4_0, {64, 2}}, q4.data()},
              {{"norm", GgmlType::F32, {3}}, f32.data()}},
             false);
  return path;
}

TEST(InspectGguf, Table) {
  test::TempDir dir;
  const std::string path = write_sample(dir);
  const auto r = run_qpack("inspect " + q(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gguf v3: " + path), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("alignment 32"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("metadata: 6 keys"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("general.architecture = \"llama\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("llama.block_count = u32 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("v.neg = i16 -3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokenizer.chat_template = string of 300 bytes"), std::string::npos);
  EXPECT_NE(r.output.find("tokenizer.ggml.tokens = array of string, length 2"), std::string::npos);
  // No raw control characters reach the terminal.
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\a'), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("evil\\x1b[2Jkey = \"bell\\x07\""), std::string::npos) << r.output;
  const std::string w = line_with(r.output, "blk.0.w ");
  EXPECT_NE(w.find("[64, 2]"), std::string::npos) << w;
  EXPECT_NE(w.find("Q4_0"), std::string::npos) << w;
  EXPECT_NE(w.find(" 72 "), std::string::npos) << w;
  EXPECT_NE(w.find("4.50"), std::string::npos) << w;
  const std::string n = line_with(r.output, "norm ");
  EXPECT_NE(n.find("[3]"), std::string::npos) << n;
  EXPECT_NE(n.find("F32"), std::string::npos) << n;
  EXPECT_NE(n.find("32.00"), std::string::npos) << n;
  EXPECT_NE(r.output.find("2 tensors"), std::string::npos) << r.output;
}

TEST(InspectGguf, Json) {
  test::TempDir dir;
  const std::string path = write_sample(dir);
  const auto r = run_qpack("inspect --json --check " + q(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j.at("format"), "gguf");
  EXPECT_EQ(j.at("version"), 3);
  EXPECT_EQ(j.at("alignment"), 32);
  EXPECT_EQ(j.at("check"), "ok");
  ASSERT_EQ(j.at("metadata").size(), 6u);
  EXPECT_EQ(j.at("metadata")[2].at("value"), 2);
  EXPECT_EQ(j.at("metadata")[5].at("item_type"), "string");
  EXPECT_EQ(j.at("metadata")[5].at("length"), 2);
  EXPECT_FALSE(j.at("metadata")[4].contains("value"));
  const json& t = j.at("tensors").at(0);
  EXPECT_EQ(t.at("type"), "Q4_0");
  EXPECT_EQ(t.at("ne"), json::array({64, 2}));
  EXPECT_EQ(t.at("bytes"), 72);
  EXPECT_EQ(t.at("bits_per_weight"), 4.5);
  EXPECT_EQ(j.at("totals").at("bytes"), 72 + 12);
  EXPECT_EQ(j.at("totals").at("elements"), 128 + 3);
}

class InspectGgufMustFail : public ::testing::TestWithParam<std::string> {};

TEST_P(InspectGgufMustFail, ExitCodeAndMessage) {
  const corpus::GgufCase c = corpus::make_gguf_must_fail(GetParam());
  test::TempDir dir;
  const std::string path = dir.file("bad.gguf");
  test::write_file(path, c.bytes.data(), c.bytes.size());
  const auto r = run_qpack("inspect " + q(path));
  EXPECT_EQ(r.exit_code, exit_code_for(c.expected)) << r.output;
  EXPECT_NE(r.output.find("qpack: error: " + path), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(std::string("[") + error_code_name(c.expected) + "]"), std::string::npos)
      << r.output;
}

INSTANTIATE_TEST_SUITE_P(Corpus, InspectGgufMustFail,
                         ::testing::Values("gg_bad_magic", "gg_version_1", "gg_big_endian",
                                           "gg_duplicate_key", "gg_tensors_overlap"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace qpack
