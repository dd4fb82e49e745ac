// What every qpack subcommand must do the same way (issue #12 items 4, 8, 12,
// 16, 17): the shared flags, their ranges and messages, one exit code per
// kind of failure, the JSON error object, stdout write errors, and names from
// a hostile checkpoint escaped for the terminal.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::run_command;
using test::run_qpack;

std::string q(const std::string& path) { return "'" + path + "'"; }
std::string cli() { return std::string("'") + QPACK_CLI + "'"; }

// A checkpoint whose tensor names would, printed raw, set the terminal's
// title and clear its screen; plus a multi-byte and a wide (CJK) name.
const std::vector<std::string> kHostileNames = {"evil\x1b]0;pwned\x07.weight",
                                                "clear\x1b[2J.weight", "caf\xc3\xa9.weight",
                                                "\xe5\x90\x8d\xe5\x89\x8d.weight", "plain.weight"};

class SharedCli : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = dir_.file("model.safetensors");
    data_.resize(32 * 64);
    for (size_t i = 0; i < data_.size(); ++i) data_[i] = std::sin(0.37f * float(i));
    std::vector<TensorToWrite> t;
    for (const auto& name : kHostileNames)
      t.push_back({name, DType::F32, {32, 64}, data_.data(), data_.size() * sizeof(float)});
    write_safetensors(source_, t, {}, false);
    qpack_ = dir_.file("model.qpack");
    const auto r = run_qpack("convert " + q(source_) + " " + q(qpack_) + " -q --device cpu");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // Each command once, on valid inputs, with `extra` flags.
  std::map<std::string, std::string> commands(const std::string& extra) {
    return {{"inspect", "inspect " + q(qpack_) + " " + extra},
            {"convert", "convert " + q(source_) + " " + q(dir_.file("o.qpack")) + " -f " + extra},
            {"verify", "verify " + q(qpack_) + " " + q(source_) + " " + extra},
            {"dequantize",
             "dequantize " + q(qpack_) + " " + q(dir_.file("o.safetensors")) + " -f " + extra}};
  }
  test::TempDir dir_;
  std::vector<float> data_;
  std::string source_, qpack_;
};

// stdout only (stderr dropped), for JSON.
test::CommandResult stdout_of(const std::string& args) {
  return run_command("{ " + cli() + " " + args + " 2>/dev/null; }");
}

// Item 4: what a command promised to print must reach stdout.
TEST_F(SharedCli, StdoutWriteErrorIsExit5) {
  std::vector<std::string> calls = {
      "inspect " + q(qpack_) + " --json",
      "inspect " + q(qpack_),
      "inspect " + q(source_) + " --check",
      "convert " + q(source_) + " --dry-run",
      "convert " + q(source_) + " --dry-run --json",
      "convert " + q(source_) + " " + q(dir_.file("c.qpack")) + " -f",
      "verify " + q(qpack_) + " " + q(source_) + " --json",
      "verify " + q(qpack_) + " " + q(source_),
      "dequantize " + q(qpack_) + " " + q(dir_.file("d.safetensors")) + " -f",
      "dequantize " + q(qpack_) + " " + q(dir_.file("d.safetensors")) + " -f --json",
      "--help",
      "inspect --help",
      "convert --help",
      "verify --help",
      "dequantize --help",
      "--version"};
  for (const auto& c : calls) {
    const auto r = run_command("{ " + cli() + " " + c + " >/dev/full; }");
    EXPECT_EQ(r.exit_code, 5) << c << "\n" << r.output;
    EXPECT_NE(r.output.find("cannot write"), std::string::npos) << c << "\n" << r.output;
  }
}

// Item 8 and 16: one range, one message, -j and --threads everywhere.
TEST_F(SharedCli, ThreadsBoundedWithOneMessage) {
  for (const std::string& flag : std::vector<std::string>{"--threads", "-j"})
    for (const std::string& v : std::vector<std::string>{"33000", "100000", "-1", "1025", "x"})
      for (const auto& [name, args] : commands(flag + " " + v)) {
        if (name == "inspect") continue;  // no threads
        const auto r = run_qpack(args);
        EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
        EXPECT_NE(r.output.find("--threads must be 0 (all cores) or 1..1024"), std::string::npos)
            << args << "\n"
            << r.output;
      }
  for (const auto& [name, args] : commands("-j 1 -q")) {
    if (name == "inspect") continue;
    const auto r = run_qpack(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
  }
}

// Item 16: the shared flags are accepted by every command that has them.
TEST_F(SharedCli, SharedFlagsAcceptedEverywhere) {
  struct Flag {
    std::string text;
    std::vector<std::string> commands;
  };
  const std::vector<Flag> table = {
      {"-q", {"inspect", "convert", "verify", "dequantize"}},
      {"--quiet", {"inspect", "convert", "verify", "dequantize"}},
      {"--json", {"inspect", "convert", "verify", "dequantize"}},
      {"--threads 2", {"convert", "verify", "dequantize"}},
      {"-j 2", {"convert", "verify", "dequantize"}},
      {"--device cpu", {"convert", "verify", "dequantize"}},
      {"--device auto", {"convert", "verify", "dequantize"}},
  };
  for (const auto& f : table) {
    auto cmds = commands(f.text);
    for (const auto& c : f.commands) {
      const auto r = f.text == "--json" ? stdout_of(cmds.at(c)) : run_qpack(cmds.at(c));
      EXPECT_EQ(r.exit_code, 0) << cmds.at(c) << "\n" << r.output;
      if (f.text == "--json") {
        EXPECT_TRUE(json::accept(r.output)) << cmds.at(c) << "\n" << r.output;
      }
      if (f.text == "-q" || f.text == "--quiet") {
        // Nothing but verify's verdict line (what a CI log needs).
        EXPECT_EQ(r.output, c == "verify" ? "verdict: pass\n" : "") << cmds.at(c);
      }
    }
  }
  // --device defaults to auto in every command that has it.
  for (const std::string& c : std::vector<std::string>{"convert", "verify", "dequantize"}) {
    const auto r = run_qpack(c + " --help");
    const size_t at = r.output.find("--device");
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_NE(r.output.find("auto=auto", at), std::string::npos) << c << "\n" << r.output;
  }
}

// Item 16: the same dtype names, any case, for --dtype and --scale-dtype.
TEST_F(SharedCli, DtypeNamesCaseInsensitiveEverywhere) {
  for (const std::string& d :
       std::vector<std::string>{"f16", "F16", "BF16", "bf16", "F32", "float16"}) {
    auto r = run_qpack("dequantize " + q(qpack_) + " " + q(dir_.file("x.safetensors")) +
                       " -f -q --dtype " + d);
    EXPECT_EQ(r.exit_code, 0) << d << "\n" << r.output;
    r = run_qpack("convert " + q(source_) + " " + q(dir_.file("x.qpack")) +
                  " -f -q --scale-dtype " + d);
    EXPECT_EQ(r.exit_code, 0) << d << "\n" << r.output;
  }
  const auto bad =
      run_qpack("dequantize " + q(qpack_) + " " + q(dir_.file("x.safetensors")) + " -f --dtype f8");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--dtype must be f16, bf16 or f32"), std::string::npos) << bad.output;
}

// Item 16: --min-dims as the recipe requires.
TEST_F(SharedCli, MinDimsMustBeAtLeastOne) {
  for (const std::string& v : std::vector<std::string>{"0", "-1"}) {
    const auto r = run_qpack("convert " + q(source_) + " --dry-run --min-dims " + v);
    EXPECT_EQ(r.exit_code, 2) << v << "\n" << r.output;
    EXPECT_NE(r.output.find("--min-dims must be at least 1"), std::string::npos) << r.output;
  }
  EXPECT_EQ(run_qpack("convert " + q(source_) + " --dry-run -q --min-dims 1").exit_code, 0);
}

// Item 16: a broken .qpack is an integrity error (4) in every command.
TEST_F(SharedCli, BrokenQpackSameExitEverywhere) {
  const auto bytes = test::read_file(qpack_);
  struct Damage {
    std::string name;
    std::vector<uint8_t> bytes;
  };
  std::vector<Damage> damages = {
      {"truncated-to-12", {bytes.begin(), bytes.begin() + 12}},
      {"truncated-to-40", {bytes.begin(), bytes.begin() + 40}},
      {"truncated-half", {bytes.begin(), bytes.begin() + long(bytes.size() / 2)}}};
  std::vector<uint8_t> flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x5a;
  damages.push_back({"flipped", flipped});
  for (const auto& d : damages) {
    const std::string p = dir_.file(d.name + ".qpack");
    test::write_file(p, d.bytes.data(), d.bytes.size());
    const std::vector<std::string> calls = {
        "inspect " + q(p) + " --check", "verify " + q(p) + " " + q(source_),
        "dequantize " + q(p) + " " + q(dir_.file("b.safetensors")) + " -f"};
    for (const auto& c : calls) {
      const auto r = run_qpack(c);
      EXPECT_EQ(r.exit_code, 4) << d.name << ": " << c << "\n" << r.output;
    }
  }
}

// Item 16: an empty source folder is bad input (3) with a message.
TEST_F(SharedCli, EmptySourceFolderIsBadInput) {
  const std::string empty = dir_.file("empty");
  fs::create_directories(empty);
  for (const std::string& c :
       {"convert " + q(empty) + " " + q(dir_.file("e.qpack")), "convert " + q(empty) + " --dry-run",
        "inspect " + q(empty), "verify " + q(qpack_) + " " + q(empty)}) {
    const auto r = run_qpack(c);
    EXPECT_EQ(r.exit_code, 3) << c << "\n" << r.output;
    EXPECT_NE(r.output.find("holds no .safetensors file"), std::string::npos) << r.output;
  }
}

// Item 16: under --json, a failure is one JSON error object on stdout.
TEST_F(SharedCli, JsonErrorObjectEverywhere) {
  const std::string missing = dir_.file("missing.qpack");
  const std::vector<std::pair<std::string, int>> calls = {
      {"inspect " + q(missing) + " --json", 5},
      {"inspect " + q(missing) + " --check --json", 5},
      {"convert " + q(dir_.file("nope")) + " " + q(dir_.file("n.qpack")) + " --json", 5},
      {"convert " + q(dir_.file("nope")) + " --dry-run --json", 5},
      {"verify " + q(missing) + " " + q(source_) + " --json", 5},
      {"dequantize " + q(missing) + " " + q(dir_.file("n.safetensors")) + " --json", 5},
      {"convert " + q(source_) + " --dry-run --json --threads 99999", 2},
      {"dequantize " + q(qpack_) + " " + q(dir_.file("n.safetensors")) + " --json --device cuda",
       6}};
  for (const auto& [c, exit] : calls) {
    const auto r = stdout_of(c);
    EXPECT_EQ(r.exit_code, exit) << c << "\n" << r.output;
    json j;
    ASSERT_NO_THROW(j = json::parse(r.output)) << c << "\n" << r.output;
    ASSERT_TRUE(j.contains("error")) << r.output;
    const json& e = j["error"];
    EXPECT_TRUE(e["code"].is_string()) << r.output;
    EXPECT_EQ(e["exit"], exit) << r.output;
    EXPECT_TRUE(e.contains("file") && e.contains("tensor")) << r.output;
    EXPECT_TRUE(e["reason"].is_string()) << r.output;
  }
}

// Item 17: --device cuda without a usable GPU, one message, exit 6.
TEST_F(SharedCli, CudaWithoutDeviceSameMessageEverywhere) {
  if (std::getenv("QPACK_TEST_HAS_GPU")) GTEST_SKIP() << "a GPU is present";
  for (const std::string& d : std::vector<std::string>{"cuda", "cuda:0", "cuda:3"})
    for (const auto& [name, args] : commands("--device " + d)) {
      if (name == "inspect") continue;
      const auto r = run_qpack(args);
      EXPECT_EQ(r.exit_code, 6) << args << "\n" << r.output;
      EXPECT_NE(r.output.find("no usable CUDA device (use --device cpu)"), std::string::npos)
          << args << "\n"
          << r.output;
    }
}

// The column at which `needle` starts on the line holding `row`, in display
// columns.
size_t column_of(const std::string& text, const std::string& row, const std::string& needle) {
  const size_t at = text.find(row);
  if (at == std::string::npos) return std::string::npos;
  const size_t bol = text.rfind('\n', at) == std::string::npos ? 0 : text.rfind('\n', at) + 1;
  const size_t hit = text.find(needle, at);
  if (hit == std::string::npos) return std::string::npos;
  return display_width(std::string_view(text).substr(bol, hit - bol));
}

void expect_no_raw_controls(const std::string& out, const std::string& what) {
  for (char c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    ASSERT_FALSE(u == 0x1b || u == 0x07 || u == 0x7f) << what << ": raw control byte\n" << out;
  }
}

// Item 12: names reach the terminal escaped; columns align by display width.
TEST_F(SharedCli, HostileNamesEscapedAndAligned) {
  const std::vector<std::string> calls = {
      "inspect " + q(qpack_), "inspect " + q(source_), "convert " + q(source_) + " --dry-run",
      "verify " + q(qpack_) + " " + q(source_) + " --top 0",
      "verify " + q(qpack_) + " " + q(source_) + " -q --max-rel-error 0"};
  for (const auto& c : calls) {
    const auto r = run_qpack(c);
    expect_no_raw_controls(r.output, c);
    if (c.find("-q") == std::string::npos) {
      EXPECT_NE(r.output.find("evil\\x1b]0;pwned\\x07.weight"), std::string::npos) << c << "\n"
                                                                                   << r.output;
      EXPECT_NE(r.output.find("clear\\x1b[2J.weight"), std::string::npos) << r.output;
    }
  }
  // The column after the names (the shape) starts at one display column.
  for (const std::string& c :
       std::vector<std::string>{"inspect " + q(qpack_), "convert " + q(source_) + " --dry-run"}) {
    const auto r = run_qpack(c);
    const size_t ref = column_of(r.output, "plain.weight", "[32, 64]");
    ASSERT_NE(ref, std::string::npos) << r.output;
    for (const std::string& row :
         std::vector<std::string>{"caf\xc3\xa9.weight", "\xe5\x90\x8d\xe5\x89\x8d.weight",
                                  "evil\\x1b]0;pwned\\x07.weight"})
      EXPECT_EQ(column_of(r.output, row, "[32, 64]"), ref) << c << ": " << row << "\n" << r.output;
  }
  // JSON keeps the names exact, with the controls as JSON escapes.
  const auto j = stdout_of("inspect " + q(qpack_) + " --json");
  expect_no_raw_controls(j.output, "inspect --json");
  EXPECT_EQ(json::parse(j.output)["tensors"][0]["name"].get<std::string>().find('\x1b') !=
                std::string::npos,
            true);
}

// Item 12: error messages escape what they quote from a file.
TEST_F(SharedCli, ErrorMessagesEscaped) {
  // A header naming a tensor with controls, whose offsets do not match its shape.
  const std::string name = "bad\x1b[2J\x1b]0;pwned\x07";
  json h;
  h[name] = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 12}}};
  const std::string header = h.dump();
  std::string file(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[size_t(i)] = char((n >> (8 * i)) & 0xff);
  file += header + std::string(12, '\0');
  const std::string p = dir_.file("bad.safetensors");
  test::write_file(p, file);
  for (const std::string& c :
       std::vector<std::string>{"inspect " + q(p), "convert " + q(p) + " --dry-run"}) {
    const auto r = run_qpack(c);
    EXPECT_EQ(r.exit_code, 3) << r.output;
    expect_no_raw_controls(r.output, c);
    EXPECT_NE(r.output.find("bad\\x1b[2J"), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace qpack
