// qpack convert end to end: the library entry point and the CLI, on
// generated checkpoints and on the real stories260K model.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <thread>

#include "qpack/converter/convert.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "testutil.hpp"

using namespace qpack;
namespace fs = std::filesystem;

namespace {

bool files_equal(const std::string& a, const std::string& b) {
  return test::read_file(a) == test::read_file(b);
}

// The same tensors (names, schemes, section sizes and checksums) in two
// .qpack files whose recipes (recorded in the provenance) are written
// differently.
bool same_tensors(const std::string& a, const std::string& b) {
  const auto ia = test::run_qpack("inspect " + a + " --json");
  const auto ib = test::run_qpack("inspect " + b + " --json");
  if (ia.exit_code != 0 || ib.exit_code != 0) return false;
  const auto ta = nlohmann::json::parse(ia.output)["tensors"];
  const auto tb = nlohmann::json::parse(ib.output)["tensors"];
  if (ta.size() != tb.size() || ta.empty()) return false;
  for (size_t i = 0; i < ta.size(); ++i)
    for (const char* k : {"name", "scheme", "shape"})
      if (ta[i][k] != tb[i][k]) return false;
  for (size_t i = 0; i < ta.size(); ++i)
    for (const auto& [sec, v] : ta[i]["sections"].items())
      if (v["xxh3"] != tb[i]["sections"][sec]["xxh3"] ||
          v["size"] != tb[i]["sections"][sec]["size"])
        return false;
  return true;
}

// Files in `dir` other than the ones named: temporary leftovers show here.
std::vector<std::string> stray_files(const std::string& dir,
                                     const std::vector<std::string>& expected) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (std::find(expected.begin(), expected.end(), n) == expected.end()) out.push_back(n);
  }
  return out;
}

// Every quantized tensor equals quantize_reference of its source; every kept
// tensor is byte-equal to the source.
void expect_matches_reference(const std::string& qpack_path, const std::string& source) {
  const auto q = QpackFile::open(qpack_path);
  q->check_all();
  const auto ck = Checkpoint::open(source);
  ASSERT_EQ(q->tensors().size(), ck->tensors().size());
  for (const auto& t : q->tensors()) {
    SCOPED_TRACE(t.name);
    const CheckpointTensor* s = ck->find(t.name);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(t.shape, s->info->shape);
    EXPECT_EQ(t.dtype, s->info->dtype);
    if (!t.quantized) {
      const SectionBytes d = q->read(t, t.data);
      ASSERT_EQ(d.size, s->info->nbytes());
      EXPECT_EQ(0, std::memcmp(d.data, s->data(), d.size));
      continue;
    }
    const GroupLayout& L = t.layout;
    std::vector<uint8_t> codes(L.codes_bytes()),
        scales(size_t(L.params_bytes(t.scheme.scale_dtype))),
        zeros(t.scheme.symmetric ? 0 : scales.size());
    quantize_reference({s->data(), s->info->dtype, t.name}, L, t.scheme, NonFinitePolicy::Error,
                       {codes.data(), scales.data(), zeros.empty() ? nullptr : zeros.data()});
    const SectionBytes c = q->read(t, t.codes), sc = q->read(t, t.scales);
    ASSERT_EQ(c.size, codes.size());
    EXPECT_EQ(0, std::memcmp(c.data, codes.data(), c.size)) << "codes";
    ASSERT_EQ(sc.size, scales.size());
    EXPECT_EQ(0, std::memcmp(sc.data, scales.data(), sc.size)) << "scales";
    if (!t.scheme.symmetric) {
      const SectionBytes z = q->read(t, t.zeros);
      ASSERT_EQ(z.size, zeros.size());
      EXPECT_EQ(0, std::memcmp(z.data, zeros.data(), z.size)) << "zeros";
    }
  }
}

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("model");
    fs::create_directories(model_);
    // Awkward sizes: 200 is not a multiple of 64, 72 not of 32; sharded.
    test::run_testgen("llama " + model_ +
                      " --hidden 200 --intermediate 72 --layers 2 --vocab 130 "
                      "--shard-bytes 150000 --seed 7");
  }
  test::TempDir dir_;
  std::string model_;
};

TEST_F(ConvertTest, ShardedCheckpointMatchesReferenceAndKeepsNorms) {
  const std::string out = dir_.file("m.qpack");
  const auto r = test::run_qpack("convert " + model_ + " " + out + " --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_matches_reference(out, model_);
  const auto q = QpackFile::open(out);
  size_t kept = 0;
  for (const auto& t : q->tensors()) {
    if (t.shape.size() == 1) {
      EXPECT_FALSE(t.quantized) << t.name;
      ++kept;
    } else {
      EXPECT_TRUE(t.quantized) << t.name;
      EXPECT_EQ(t.scheme.bits, 4);
      EXPECT_EQ(t.scheme.group_size, 64);
      EXPECT_EQ(t.scheme.axis, 0);
      EXPECT_FALSE(t.scheme.symmetric);
    }
  }
  EXPECT_EQ(kept, 5u);  // 2 per layer + final norm
  // Source metadata and config.json travel with the file.
  EXPECT_EQ(q->source_config().value("hidden_size", 0), 200);
}

TEST_F(ConvertTest, SameBytesForAnyThreadCountAndRun) {
  const std::string a = dir_.file("a.qpack"), b = dir_.file("b.qpack"), c = dir_.file("c.qpack");
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + a + " -q --threads 1").exit_code, 0);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + b + " -q --threads 2").exit_code, 0);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + c + " -q --threads 2").exit_code, 0);
  EXPECT_TRUE(files_equal(a, b));
  EXPECT_TRUE(files_equal(b, c));
  // Axis -1, symmetric, 3 bits, BF16 scales: same property.
  const std::string opts = " -q --axis -1 --symmetric --bits 3 --scale-dtype bf16 --group-size 48";
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + a + opts + " -f --threads 1").exit_code, 0);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + b + opts + " -f --threads 2").exit_code, 0);
  EXPECT_TRUE(files_equal(a, b));
  expect_matches_reference(a, model_);
}

TEST_F(ConvertTest, RulesRecipeAndDryRun) {
  const std::string recipe = dir_.file("recipe.json");
  test::write_file(recipe, R"({"defaults": {"bits": 8, "group_size": 32},
     "rules": [{"match": "lm_head*", "skip": true},
               {"match": "*.mlp.down_proj.weight", "bits": 2, "axis": -1, "scale_dtype": "f32"}]})");
  const std::string out = dir_.file("r.qpack");
  const auto dry = test::run_qpack("convert " + model_ + " " + out + " --recipe " + recipe +
                                   " --skip '*embed_tokens*' --dry-run --json");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_FALSE(fs::exists(out));
  const auto plan = nlohmann::json::parse(dry.output);
  EXPECT_TRUE(plan.value("dry_run", false));
  // The plan's own keys: the summary's, less what only a run knows.
  std::vector<std::string> keys;
  for (const auto& [k, v] : plan.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"bytes_in", "bytes_out", "bytes_out_is_upper_bound",
                                            "bytes_quantized_in", "bytes_quantized_out", "dry_run",
                                            "ratio", "tensors", "tensors_kept", "tensors_quantized",
                                            "warnings"}));
  uint64_t q_in = 0, q_out = 0, in = 0, out_bytes = 0;
  for (const auto& e : plan["tensors"]) {
    in += e["bytes_in"].get<uint64_t>();
    out_bytes += e["bytes_out"].get<uint64_t>();
    if (e["action"] == "quantize") {
      q_in += e["bytes_in"].get<uint64_t>();
      q_out += e["bytes_out"].get<uint64_t>();
    } else {
      EXPECT_EQ(e["action"], "keep");
    }
  }
  EXPECT_EQ(plan["bytes_in"].get<uint64_t>(), in);
  EXPECT_EQ(plan["bytes_quantized_in"].get<uint64_t>(), q_in);
  EXPECT_EQ(plan["bytes_quantized_out"].get<uint64_t>(), q_out);
  // The file holds the sections plus its header, padding and manifest.
  EXPECT_GT(plan["bytes_out"].get<uint64_t>(), out_bytes);
  EXPECT_DOUBLE_EQ(plan["ratio"].get<double>(),
                   double(in) / double(plan["bytes_out"].get<uint64_t>()));
  // The table: the one scheme label and shape spelling, "raw" for kept tensors.
  const auto table = test::run_qpack("convert " + model_ + " --recipe " + recipe +
                                     " --skip '*embed_tokens*' --dry-run");
  ASSERT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("q8 g32 ax0 asym F16"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("q2 g32 ax1 asym F32"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("raw"), std::string::npos) << table.output;
  EXPECT_EQ(table.output.find(" keep "), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("[130, 200]"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find(" raw), "), std::string::npos) << table.output;  // the totals line
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + out + " -q --recipe " + recipe +
                            " --skip '*embed_tokens*'")
                .exit_code,
            0);
  const auto q = QpackFile::open(out);
  for (const auto& t : q->tensors()) {
    if (t.name == "lm_head.weight" || t.name == "model.embed_tokens.weight") {
      EXPECT_FALSE(t.quantized) << t.name;
    } else if (t.name.find("down_proj") != std::string::npos) {
      EXPECT_EQ(t.scheme.bits, 2);
      EXPECT_EQ(t.scheme.axis, 1);
      EXPECT_EQ(t.scheme.scale_dtype, DType::F32);
    } else if (t.quantized) {
      EXPECT_EQ(t.scheme.bits, 8) << t.name;
      EXPECT_EQ(t.scheme.group_size, 32) << t.name;
    }
  }
  // The plan's sizes are the file's section sizes.
  for (const auto& e : plan["tensors"]) {
    const QpackTensor* t = q->find(e["name"].get<std::string>());
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(e["bytes_out"].get<uint64_t>(),
              t->quantized ? t->codes.raw_size + t->scales.raw_size + t->zeros.raw_size
                           : t->data.raw_size);
  }
  expect_matches_reference(out, model_);
}

// --zero-point integer end to end: the file (version 2.0, quant.zero_point)
// holds the reference's bytes, a rule can switch single tensors back to the
// float rule, the plan and inspect show the kind, verify passes its bound, and
// dequantize gives dequantize_reference's floats.
TEST_F(ConvertTest, IntegerZeroPointEndToEnd) {
  const std::string out = dir_.file("int.qpack");
  const std::string args = " --zero-point integer --rule '*.mlp.down_proj.weight:zero=float'";
  const auto dry = test::run_qpack("convert " + model_ + " " + out + args + " --dry-run --json");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  size_t integer = 0, floats = 0;
  const auto plan = nlohmann::json::parse(dry.output);
  for (const auto& e : plan["tensors"]) {
    if (e["action"] != "quantize") continue;
    const bool down = e["name"].get<std::string>().find("down_proj") != std::string::npos;
    EXPECT_EQ(e["scheme"]["zero_point"], down ? "float" : "integer") << e["name"];
    (down ? floats : integer)++;
  }
  EXPECT_GT(integer, 0u);
  EXPECT_EQ(floats, 2u);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + out + args + " -q").exit_code, 0);
  expect_matches_reference(out, model_);
  const auto q = QpackFile::open(out);
  EXPECT_EQ(q->version_major(), 2);
  for (const auto& t : q->tensors()) {
    if (!t.quantized) continue;
    const bool down = t.name.find("down_proj") != std::string::npos;
    EXPECT_EQ(t.scheme.zero_point, down ? ZeroPoint::Float : ZeroPoint::Integer) << t.name;
  }
  const auto ins = test::run_qpack("inspect " + out);
  ASSERT_EQ(ins.exit_code, 0) << ins.output;
  EXPECT_NE(ins.output.find("q4 g64 ax0 asym-int F16"), std::string::npos) << ins.output;
  EXPECT_NE(ins.output.find("q4 g64 ax0 asym F16"), std::string::npos) << ins.output;
  const auto ver = test::run_qpack("verify " + out + " " + model_ + " --device cpu --json");
  ASSERT_EQ(ver.exit_code, 0) << ver.output;
  const auto report = nlohmann::json::parse(ver.output);
  ASSERT_TRUE(report.contains("tensors")) << ver.output;
  for (const auto& t : report["tensors"]) {
    if (!t["quantized"].get<bool>()) continue;
    ASSERT_TRUE(t["metrics"].is_object()) << t.dump();
    EXPECT_EQ(t["metrics"]["bound_violations"].get<uint64_t>(), 0u) << t["name"];
    const bool down = t["name"].get<std::string>().find("down_proj") != std::string::npos;
    EXPECT_EQ(t["scheme"]["zero_point"], down ? "float" : "integer") << t["name"];
  }
  const std::string deq = dir_.file("deq.safetensors");
  ASSERT_EQ(
      test::run_qpack("dequantize " + out + " " + deq + " --dtype f32 --device cpu").exit_code, 0);
  const auto d = SafetensorsFile::open(deq);
  for (const auto& t : q->tensors()) {
    if (!t.quantized) continue;
    SCOPED_TRACE(t.name);
    const SectionBytes c = q->read(t, t.codes), sc = q->read(t, t.scales), z = q->read(t, t.zeros);
    std::vector<float> want(size_t(t.layout.num_elements()));
    dequantize_reference(c.data, sc.data, z.data, t.layout, t.scheme, want.data());
    const TensorInfo* dt = d->find(t.name);
    ASSERT_NE(dt, nullptr);
    ASSERT_EQ(dt->dtype, DType::F32);
    ASSERT_EQ(0, std::memcmp(d->tensor_data(*dt), want.data(), want.size() * 4));
  }
}

// --zero-point is a usage error with --symmetric or an unknown kind, and with
// GGUF output.
TEST_F(ConvertTest, ZeroPointUsageErrors) {
  const std::string out = dir_.file("x.qpack");
  auto r = test::run_qpack("convert " + model_ + " " + out + " --symmetric --zero-point integer");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--zero-point"), std::string::npos) << r.output;
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --zero-point int").exit_code, 2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --rule 'x:zero=int'").exit_code, 2);
  EXPECT_EQ(
      test::run_qpack("convert " + model_ + " " + dir_.file("x.gguf") + " --zero-point integer")
          .exit_code,
      2);
  const std::string recipe = dir_.file("zp.json");
  test::write_file(recipe, R"({"defaults": {"zero_point": 0}})");
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --recipe " + recipe).exit_code, 2);
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ConvertTest, BadRulesAndOptionsAreUsageErrors) {
  const std::string out = dir_.file("x.qpack");
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --bits 5").exit_code, 2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --group-size 7").exit_code, 2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --rule 'x:bits=9'").exit_code, 2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --rule 'x:colour=red'").exit_code,
            2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --device tpu").exit_code, 2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --device gpu").exit_code, 2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --device cuda:x").exit_code, 2);
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --nonfinite maybe").exit_code, 2);
  const std::string recipe = dir_.file("bad.json");
  test::write_file(recipe, R"({"defaults": {"bitz": 4}})");
  const auto r = test::run_qpack("convert " + model_ + " " + out + " --recipe " + recipe);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bitz"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

// Recipes are read by the converter with the format library's strict JSON
// reader: a duplicate key is a usage error naming the file and the key, not
// a silent last-one-wins.
// --skip and --rule take one value per occurrence (they used to swallow the
// positionals after them), and a bare --zstd means level 3 (it used to be a
// usage error).
TEST_F(ConvertTest, RepeatableOptionsTakeOneValueAndZstdHasADefaultLevel) {
  const std::string plain = dir_.file("plain.qpack"), mixed = dir_.file("mixed.qpack");
  ASSERT_EQ(
      test::run_qpack("convert " + model_ + " " + plain +
                      " -q --skip '*embed*' --rule '*down_proj*:bits=8' --rule '*up_proj*:bits=2'")
          .exit_code,
      0);
  const auto r =
      test::run_qpack("convert " + model_ + " --skip '*embed*' --rule '*down_proj*:bits=8' " +
                      "--rule '*up_proj*:bits=2' " + mixed + " -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::read_file(mixed), test::read_file(plain));

  const std::string bare = dir_.file("bare.qpack"), three = dir_.file("three.qpack");
  const auto b = test::run_qpack("convert " + model_ + " " + bare + " -q --zstd");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + three + " -q --zstd 3").exit_code, 0);
  EXPECT_EQ(test::read_file(bare), test::read_file(three));
  // A level that is not a number is a usage error naming the option.
  const auto bad =
      test::run_qpack("convert " + model_ + " " + dir_.file("x.qpack") + " -q --zstd x");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--zstd"), std::string::npos) << bad.output;
}

TEST_F(ConvertTest, RecipeWithADuplicateKeyIsRefused) {
  const std::string out = dir_.file("x.qpack"), recipe = dir_.file("dup.json");
  test::write_file(recipe, R"({"defaults": {"bits": 8, "group_size": 32, "bits": 2}})");
  auto r = test::run_qpack("convert " + model_ + " " + out + " --recipe " + recipe);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(
      r.output.find("qpack: error: " + recipe + ": recipe: duplicate key 'bits' in 'defaults'"),
      std::string::npos)
      << r.output;
  r = test::run_qpack("convert " + model_ + " --dry-run --recipe " + recipe);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  test::write_file(recipe, R"({"rules": [{"match": "a*", "skip": true, "match": "b*"}]})");
  r = test::run_qpack("convert " + model_ + " " + out + " --recipe " + recipe);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("duplicate key 'match' in 'rules'"), std::string::npos) << r.output;
  test::write_file(recipe, "{\"defaults\": {\"bits\": 8}");
  r = test::run_qpack("convert " + model_ + " " + out + " --recipe " + recipe);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(recipe + ": recipe: invalid JSON"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ConvertTest, RefusesToOverwriteWithoutForceAndNeverTheInput) {
  const std::string out = dir_.file("o.qpack");
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + out + " -q").exit_code, 0);
  const auto before = test::read_file(out);
  auto r = test::run_qpack("convert " + model_ + " " + out + " -q --bits 8");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("exists"), std::string::npos) << r.output;
  // The fix it names is the flag that exists.
  EXPECT_NE(r.output.find("pass --force to replace it"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("--overwrite"), std::string::npos) << r.output;
  EXPECT_EQ(test::read_file(out), before);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + out + " -q --bits 8 --force").exit_code, 0);
  EXPECT_NE(test::read_file(out), before);
  // Writing onto a source shard is refused even with --force; the shard is untouched.
  std::string shard;
  for (const auto& e : fs::directory_iterator(model_))
    if (e.path().filename().string().rfind("model-00001-of-", 0) == 0) shard = e.path().string();
  ASSERT_FALSE(shard.empty()) << "expected a sharded checkpoint";
  const auto shard_before = test::read_file(shard);
  r = test::run_qpack("convert " + model_ + " " + shard + " -q --force");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(test::read_file(shard), shard_before);
}

TEST(ConvertErrors, NonFiniteNamesTensorAndLeavesNothing) {
  test::TempDir dir;
  std::vector<float> w(64 * 8, 0.5f), b(8, 0.0f);
  w[77] = std::nanf("");
  const std::string src = dir.file("m.safetensors");
  write_safetensors(src,
                    {{"a.weight", DType::F32, {8}, b.data(), 32},
                     {"layers.0.w.weight", DType::F32, {64, 8}, w.data(), w.size() * 4}},
                    {}, false);
  const std::string out = dir.file("m.qpack");
  auto r = test::run_qpack("convert " + src + " " + out + " -q");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("layers.0.w.weight"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("flat index 77"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(src), std::string::npos) << r.output;
  EXPECT_TRUE(stray_files(dir.path(), {"m.safetensors"}).empty());
  // With --nonfinite=zero the NaN quantizes as 0.
  r = test::run_qpack("convert " + src + " " + out + " -q --nonfinite zero");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// A quantizer that runs each submitted tensor on its own thread after a
// random delay, so tensors finish out of order and long after submit()
// returns, as on a GPU pipeline. It poisons the output buffers at submit:
// a converter that reused a buffer set still being written would put the
// poison in the file. Any overlap between the buffers of tensors in flight
// at once is recorded.
class DeferredQuantizer final : public TensorQuantizer {
 public:
  explicit DeferredQuantizer(unsigned seed) : rng_(seed) {}
  ~DeferredQuantizer() override { cancel(); }
  void quantize(const QuantInput& in, const GroupLayout& L, const QuantScheme& s, NonFinitePolicy p,
                const QuantBuffers& out) override {
    wait(submit(in, L, s, p, out));
  }
  Ticket submit(const QuantInput& in, const GroupLayout& L, const QuantScheme& s, NonFinitePolicy p,
                const QuantBuffers& out) override {
    const uint64_t params = L.params_bytes(s.scale_dtype);
    const Range r{out.codes, L.codes_bytes()};
    for (const auto& [t, job] : jobs_)
      if (r.first < job.codes.first + job.codes.second && job.codes.first < r.first + r.second)
        ++overlaps;
    std::memset(out.codes, 0xA5, L.codes_bytes());
    std::memset(out.scales, 0xA5, params);
    if (out.zeros) std::memset(out.zeros, 0xA5, params);
    const auto delay = std::chrono::microseconds(rng_() % 3000);
    const Ticket t = next_++;
    ++submitted;
    jobs_[t] = Job{r, std::async(std::launch::async, [in, L, s, p, out, delay] {
                     std::this_thread::sleep_for(delay);
                     quantize_reference(in, L, s, p, out);
                   })};
    return t;
  }
  void wait(Ticket t) override {
    auto it = jobs_.find(t);
    if (it == jobs_.end()) throw Error(ErrorCode::InvalidArgument, "", "", "unknown ticket");
    std::future<void> f = std::move(it->second.done);
    jobs_.erase(it);
    f.get();
  }
  void cancel() noexcept override {
    for (auto& [t, job] : jobs_) {
      try {
        job.done.get();
      } catch (...) {
      }
    }
    jobs_.clear();
  }
  std::string description() const override { return "deferred"; }
  int overlaps = 0, submitted = 0;

 private:
  using Range = std::pair<const uint8_t*, uint64_t>;
  struct Job {
    Range codes;
    std::future<void> done;
  };
  std::mt19937 rng_;
  Ticket next_ = 1;
  std::map<Ticket, Job> jobs_;
};

TEST_F(ConvertTest, PipelinedQuantizerGivesTheSameFile) {
  ConvertOptions o;
  o.overwrite = true;
  const std::string a = dir_.file("a.qpack"), b = dir_.file("b.qpack");
  const ConvertSummary sa = convert_checkpoint(model_, a, o, *make_cpu_quantizer(2));
  for (unsigned seed : {1u, 2u, 3u}) {
    DeferredQuantizer q(seed);
    convert_checkpoint(model_, b, o, q);
    EXPECT_TRUE(files_equal(a, b)) << "seed " << seed;
    EXPECT_EQ(q.overlaps, 0) << "two tensors in flight shared an output buffer";
    EXPECT_EQ(q.submitted, int(sa.tensors_quantized));
  }
}

// --device cuda:all's quantizer set, with deferred parts that finish out of
// order: the same file as one CPU quantizer, work spread over parts, no two tensors
// in flight on one buffer set (the file would hold the poison).
TEST_F(ConvertTest, QuantizerSetGivesTheSameFile) {
  ConvertOptions o;
  o.overwrite = true;
  const std::string a = dir_.file("a.qpack"), b = dir_.file("b.qpack");
  const ConvertSummary sa = convert_checkpoint(model_, a, o, *make_cpu_quantizer(2));
  ASSERT_GE(sa.tensors_quantized, 3u);
  for (unsigned parts : {2u, 3u, 5u}) {
    std::vector<std::unique_ptr<TensorQuantizer>> qs;
    std::vector<DeferredQuantizer*> raw;
    for (unsigned k = 0; k < parts; ++k) {
      auto q = std::make_unique<DeferredQuantizer>(parts * 10 + k);
      raw.push_back(q.get());
      qs.push_back(std::move(q));
    }
    auto set = make_quantizer_set(std::move(qs));
    EXPECT_EQ(set->pipelines(), int(parts));
    convert_checkpoint(model_, b, o, *set);
    EXPECT_TRUE(files_equal(a, b)) << parts << " parts";
    int submitted = 0, used = 0;
    for (DeferredQuantizer* q : raw) {
      submitted += q->submitted;
      used += q->submitted > 0;
      EXPECT_EQ(q->overlaps, 0);
    }
    EXPECT_EQ(submitted, int(sa.tensors_quantized));
    // The second tensor is submitted while the first is still running (a
    // deferred part sleeps before it quantizes), so it goes to another part.
    EXPECT_GE(used, 2) << "the set ran every tensor on one part";
  }
}

// The third of six tensors holds a NaN; when its wait fails the next tensor
// is already submitted. Same error as the synchronous CPU path, no output.
TEST(ConvertErrors, FailureWithTensorsInFlightLeavesNothing) {
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors");
  test::write_model_with_nan(src, 40, 5);
  std::string want, got;
  try {
    convert_checkpoint(src, dir.file("a.qpack"), ConvertOptions{}, *make_cpu_quantizer(1));
  } catch (const Error& e) {
    want = e.what();
  }
  try {
    DeferredQuantizer q(9);
    convert_checkpoint(src, dir.file("b.qpack"), ConvertOptions{}, q);
  } catch (const Error& e) {
    got = e.what();
  }
  EXPECT_NE(want.find("layers.2.w.weight"), std::string::npos) << want;
  EXPECT_NE(want.find(src), std::string::npos) << want;
  EXPECT_EQ(got, want);
  EXPECT_TRUE(stray_files(dir.path(), {"m.safetensors"}).empty());
  // The same through a set of three deferred parts (cuda:all's path).
  std::string set_error;
  try {
    std::vector<std::unique_ptr<TensorQuantizer>> qs;
    for (unsigned k = 0; k < 3; ++k) qs.push_back(std::make_unique<DeferredQuantizer>(20 + k));
    auto set = make_quantizer_set(std::move(qs));
    convert_checkpoint(src, dir.file("c.qpack"), ConvertOptions{}, *set);
  } catch (const Error& e) {
    set_error = e.what();
  }
  EXPECT_EQ(set_error, want);
  EXPECT_TRUE(stray_files(dir.path(), {"m.safetensors"}).empty());
}

TEST(ConvertErrors, RangeOverflowSuggestsWiderScale) {
  test::TempDir dir;
  std::vector<float> w(64 * 4, 0.0f);
  w[3] = 1e6f;
  const std::string src = dir.file("m.safetensors");
  write_safetensors(src, {{"big.weight", DType::F32, {64, 4}, w.data(), w.size() * 4}}, {}, false);
  auto r = test::run_qpack("convert " + src + " " + dir.file("m.qpack") + " -q");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("big.weight"), std::string::npos);
  EXPECT_NE(r.output.find("bf16 or f32"), std::string::npos) << r.output;
  r = test::run_qpack("convert " + src + " " + dir.file("m.qpack") + " -q --scale-dtype bf16");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(ConvertTest, FileSizeLimitFailsCleanly) {
  // The kernel refuses writes past RLIMIT_FSIZE: the same path as a full disk.
  const std::string out = dir_.file("full.qpack");
  const auto r = test::run_command("ulimit -f 64; '" + std::string(QPACK_CLI) + "' convert " +
                                   model_ + " " + out + " -q");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find(out), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(stray_files(dir_.path(), {"model"}).empty());
}

TEST_F(ConvertTest, KilledProcessNeverLeavesAPartialFileUnderTheFinalName) {
  const std::string big = dir_.file("big");
  fs::create_directories(big);
  test::run_testgen("llama " + big + " --hidden 1024 --intermediate 2816 --layers 6 --vocab 2000");
  const std::string out = dir_.file("big.qpack");
  for (int delay_ms : {50, 200, 600}) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      execl(QPACK_CLI, QPACK_CLI, "convert", big.c_str(), out.c_str(), "-q", "--force", "--threads",
            "1", static_cast<char*>(nullptr));
      _exit(127);
    }
    usleep(useconds_t(delay_ms) * 1000);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      ASSERT_TRUE(WIFSIGNALED(status));
    }
    // Whenever it died (before, during or after the rename), the final name
    // either does not exist or holds a whole, valid file: never a partial one.
    if (fs::exists(out)) {
      EXPECT_EQ(test::run_qpack("inspect --check " + out).exit_code, 0) << "a partial " << out;
    }
    fs::remove(out);
  }
}

TEST_F(ConvertTest, ZstdSectionsRoundTrip) {
  const std::string a = dir_.file("plain.qpack"), z = dir_.file("z.qpack");
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + a + " -q").exit_code, 0);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + z + " -q --zstd 9").exit_code, 0);
  EXPECT_LE(fs::file_size(z), fs::file_size(a));
  expect_matches_reference(z, model_);
  EXPECT_EQ(test::run_qpack("inspect --check " + z).exit_code, 0);
}

TEST_F(ConvertTest, JsonSummary) {
  const auto r = test::run_qpack("convert " + model_ + " " + dir_.file("j.qpack") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["tensors_quantized"].get<int>() + j["tensors_kept"].get<int>(), 2 + 2 * 9 + 1);
  EXPECT_EQ(j["bytes_out"].get<uint64_t>(), fs::file_size(dir_.file("j.qpack")));
  EXPECT_GT(j["ratio"].get<double>(), 2.0);
}

// ------------------------------------------------------- stories260K ----

class Stories : public ::testing::TestWithParam<const char*> {};

TEST_P(Stories, ConvertsAndInspects) {
  const std::string bin = test::shared_data_dir() + "/stories260K/stories260K.bin";
  if (!fs::exists(bin)) GTEST_SKIP() << "no " << bin << " (../shared/data is absent in this clone)";
  test::TempDir dir;
  const std::string st = dir.file("model.safetensors"), out = dir.file("stories.qpack");
  test::run_testgen("stories " + bin + " " + st + " --dtype " + GetParam());
  const auto ck = Checkpoint::open(st);
  EXPECT_EQ(ck->tensors().size(), 1u + 5 * 9 + 2);
  uint64_t params = 0;
  for (const auto& t : ck->tensors()) params += t.info->num_elements();
  EXPECT_EQ(params, 260032u + 32768u);  // plus the tied classifier, stored separately
  auto r = test::run_qpack("convert " + dir.path() + " " + out + " -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_matches_reference(out, st);
  r = test::run_qpack("inspect " + out + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_FALSE(j.empty());
  r = test::run_qpack("inspect --check " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model.layers.4.mlp.down_proj.weight"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Stories, ::testing::Values("f32", "f16", "bf16"));

}  // namespace

// --method search|refit (quantization.md §M): the file records the method
// (minor version 1), holds the reference's bytes, and verifies against the
// method's bound; rtn writes no key; the methods are refused where they do
// not apply.
TEST_F(ConvertTest, MethodsEndToEnd) {
  const std::string rtn = dir_.file("rtn.qpack"), plain = dir_.file("plain.qpack");
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + plain + " -q").exit_code, 0);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + rtn + " -q --method rtn").exit_code, 0);
  EXPECT_TRUE(files_equal(plain, rtn));
  EXPECT_EQ(QpackFile::open(rtn)->version_minor(), 0);
  for (const char* m : {"search", "refit"}) {
    SCOPED_TRACE(m);
    const std::string out = dir_.file(std::string(m) + ".qpack");
    ASSERT_EQ(test::run_qpack("convert " + model_ + " " + out + " -q --method " + m).exit_code, 0);
    expect_matches_reference(out, model_);
    const auto q = QpackFile::open(out);
    EXPECT_EQ(q->version_major(), 1);
    EXPECT_EQ(q->version_minor(), 1);
    for (const auto& t : q->tensors()) {
      if (t.quantized) {
        EXPECT_EQ(method_name(t.scheme.method), std::string(m)) << t.name;
      }
    }
    const auto ver = test::run_qpack("verify " + out + " " + model_ + " --device cpu --json");
    ASSERT_EQ(ver.exit_code, 0) << ver.output;
    const auto report = nlohmann::json::parse(ver.output);
    EXPECT_EQ(report["bound_violations"].get<uint64_t>(), 0u);
    for (const auto& t : report["tensors"]) {
      if (t["quantized"].get<bool>()) {
        EXPECT_EQ(t["scheme"]["method"], m) << t["name"];
      }
    }
  }
  // §M5: the search with integer zero-points records both, holds the
  // reference's bytes, verifies against its bound (exit 0, no violation)
  // and lowers the model-wide error below RTN's with integer zero-points.
  {
    const std::string si = dir_.file("search-int.qpack"), ri = dir_.file("rtn-int.qpack");
    ASSERT_EQ(
        test::run_qpack("convert " + model_ + " " + si + " -q --zero-point integer --method search")
            .exit_code,
        0);
    ASSERT_EQ(
        test::run_qpack("convert " + model_ + " " + ri + " -q --zero-point integer").exit_code, 0);
    expect_matches_reference(si, model_);
    const auto q = QpackFile::open(si);
    EXPECT_EQ(q->version_minor(), 1);
    for (const auto& t : q->tensors()) {
      if (t.quantized) {
        EXPECT_EQ(t.scheme.method, QuantMethod::Search) << t.name;
        EXPECT_EQ(t.scheme.zero_point, ZeroPoint::Integer) << t.name;
      }
    }
    double err[2] = {0, 0};
    const std::string files[2] = {ri, si};
    for (int k = 0; k < 2; ++k) {
      const auto ver =
          test::run_qpack("verify " + files[k] + " --source " + model_ + " --device cpu --json");
      ASSERT_EQ(ver.exit_code, 0) << ver.output;
      const auto report = nlohmann::json::parse(ver.output);
      EXPECT_EQ(report["bound_violations"].get<uint64_t>(), 0u);
      err[k] = report["model"]["metrics"]["rel_error"].get<double>();
    }
    EXPECT_LT(err[1], 0.99 * err[0]) << "rtn " << err[0] << ", search " << err[1];
  }
  // --preset best is group 32, two-level scales and the search, along the
  // last axis except in the vocabulary tables (axis 0); with --axis, that
  // axis everywhere.
  const std::string best = dir_.file("best.qpack"), tl = dir_.file("tl.qpack");
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + best + " -q --preset best").exit_code, 0);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + tl +
                            " -q -g 32 --scales two-level --method search --axis -1" +
                            " --rule '*embed_tokens.weight:axis=0' --rule 'lm_head.weight:axis=0'")
                .exit_code,
            0);
  EXPECT_TRUE(same_tensors(best, tl));
  ASSERT_EQ(
      test::run_qpack("convert " + model_ + " " + best + " -q -f --preset best --axis 0").exit_code,
      0);
  ASSERT_EQ(test::run_qpack("convert " + model_ + " " + tl +
                            " -q -f -g 32 --scales two-level --method search --axis 0")
                .exit_code,
            0);
  EXPECT_TRUE(files_equal(best, tl));
  const auto plan = test::run_qpack("convert " + model_ + " " + best + " --preset best --dry-run");
  EXPECT_EQ(plan.output.find("matches no tensor"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("--preset best: a vocabulary table"), std::string::npos)
      << plan.output;
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + dir_.file("y.qpack") +
                            " --preset best --scales one-level")
                .exit_code,
            2);
  const std::string out = dir_.file("x.qpack");
  EXPECT_EQ(test::run_qpack("convert " + model_ + " " + out + " --method best").exit_code, 2);
  EXPECT_EQ(
      test::run_qpack("convert " + model_ + " " + out + " --method search --symmetric").exit_code,
      2);
  EXPECT_EQ(
      test::run_qpack("convert " + model_ + " " + out + " --method refit --zero-point integer")
          .exit_code,
      2);
  EXPECT_EQ(
      test::run_qpack("convert " + model_ + " " + out + " --preset best --method rtn").exit_code,
      2);
  // GGUF output takes --method (Q4_1/Q5_1 blocks, test_gguf_export_cli.cpp)
  // but not a bad name, and not --preset.
  EXPECT_EQ(
      test::run_qpack("convert " + model_ + " " + dir_.file("x.gguf") + " --method best").exit_code,
      2);
  EXPECT_EQ(
      test::run_qpack("convert " + model_ + " " + dir_.file("x.gguf") + " --preset best").exit_code,
      2);
}

// --profile: the stage table after the summary; --json always carries the
// stages, the converting thread's summing to no more than the wall time.
TEST_F(ConvertTest, ProfileAndStages) {
  const std::string out = dir_.file("p.qpack");
  const auto r = test::run_qpack("convert " + model_ + " " + out + " --profile");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"profile (wall", "source checksums", "quantize: submit",
                          "wait for the writer", "commit (manifest", "writer thread", "write()"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row << "\n" << r.output;
  const auto j = test::run_qpack("convert " + model_ + " " + out + " -f --json --profile");
  ASSERT_EQ(j.exit_code, 0) << j.output;
  const auto s = nlohmann::json::parse(j.output);
  const auto& g = s.at("stages");
  double sum = 0;
  for (const char* k : {"open", "hash_source", "submit", "quantize_wait", "write_wait", "commit"}) {
    ASSERT_TRUE(g.contains(k)) << k;
    EXPECT_GE(g[k].get<double>(), 0.0) << k;
    sum += g[k].get<double>();
  }
  for (const char* k : {"writer_write", "writer_checksum", "writer_compress"})
    EXPECT_GE(g.at(k).get<double>(), 0.0) << k;
  EXPECT_GT(g["writer_write"].get<double>(), 0.0);
  EXPECT_LE(sum, s["seconds"].get<double>() * 1.0001 + 1e-6);
}
