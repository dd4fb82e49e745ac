// The compressed-tensors / GPTQ folder reader through its C++ API, on
// folders written by tests/format/hf_quant_gen.py (numpy, from the
// documented layouts) with fresh seeds: row ranges unpack to exactly the
// bytes of the whole tensor (every start row and length, into poisoned
// buffers), dequantize in slices of a few rows writes the same file as in
// one slice, and verify's report does not depend on its row ranges beyond
// the order of its additions. Skipped where python3 cannot import numpy.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "qpack/converter/dequantize_hf.hpp"
#include "qpack/converter/export_hf.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/hf_quantized.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/verify/verify.hpp"
#include "testutil.hpp"

using namespace qpack;

namespace {

bool have_numpy() {
  static const bool ok =
      test::run_command(std::string(QPACK_PYTHON) + " -c 'import numpy' 2>/dev/null").exit_code ==
      0;
  return ok;
}

// Writes a folder with hf_quant_gen.write_model(folder, fmt, bits, sym, group, sdt, shards, seed).
void write_model(const std::string& folder, const std::string& fmt, int bits, bool sym,
                 const std::string& group, const std::string& sdt, int shards, uint64_t seed,
                 bool v2 = false) {
  const std::string py = "import sys; sys.path.insert(0, '" + test::source_dir() +
                         "/tests/format'); import hf_quant_gen as g; g.write_model('" + folder +
                         "', '" + fmt + "', " + std::to_string(bits) + ", " +
                         (sym ? "True" : "False") + ", " + group + ", '" + sdt + "', " +
                         std::to_string(shards) + ", seed=" + std::to_string(seed % 1000000007) +
                         ", v2=" + (v2 ? "True" : "False") + ")";
  const auto r = test::run_command(std::string(QPACK_PYTHON) + " -c \"" + py + "\" 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

struct Unpacked {
  std::vector<uint8_t> codes, scales, zeros;
};

Unpacked unpack(const HfQuantizedModel& m, const HfQuantTensor& t, int64_t row0, int64_t rows) {
  GroupLayout sub = t.layout;
  sub.outer = rows;
  Unpacked u;
  const size_t np = size_t(sub.num_groups()) * size_t(scale_bytes(t.scheme.scale_dtype));
  u.codes.assign(size_t(sub.codes_bytes()), 0xA5);  // poisoned: every byte must be written
  u.scales.assign(np, 0xA5);
  u.zeros.assign(t.scheme.symmetric ? 0 : np, 0xA5);
  m.unpack_rows(t, row0, rows, u.codes.data(), u.scales.data(),
                t.scheme.symmetric ? nullptr : u.zeros.data());
  return u;
}

struct Case {
  const char* fmt;
  int bits;
  bool sym;
  const char* group;
  const char* sdt;
  int shards;
  bool v2;
};

const Case kCases[] = {
    {"compressed-tensors", 4, true, "32", "BF16", 2, false},
    {"compressed-tensors", 2, false, "'channel'", "F16", 1, false},
    {"compressed-tensors", 8, false, "32", "F32", 3, false},
    {"gptq", 4, true, "32", "F16", 1, false},
    {"gptq", 2, false, "'channel'", "F16", 2, true},
    {"gptq", 8, false, "64", "BF16", 1, false},
};

}  // namespace

TEST(HfQuantized, RowRangesUnpackToTheWholeTensorsBytes) {
  if (!have_numpy()) GTEST_SKIP() << "python3 cannot import numpy";
  const uint64_t seed = test::test_seed();
  for (const Case& c : kCases) {
    SCOPED_TRACE(std::string(c.fmt) + " b" + std::to_string(c.bits) + (c.sym ? " sym" : " asym"));
    test::TempDir dir;
    write_model(dir.path(), c.fmt, c.bits, c.sym, c.group, c.sdt, c.shards, seed, c.v2);
    const auto m = HfQuantizedModel::open(dir.path());
    EXPECT_EQ(m->format_name(), std::string(c.fmt));
    ASSERT_FALSE(m->quantized().empty());
    for (const HfQuantTensor& t : m->quantized()) {
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.scheme.bits, c.bits);
      EXPECT_EQ(t.scheme.symmetric, c.sym);
      EXPECT_EQ(t.scheme.axis, 1);
      EXPECT_EQ(dtype_name(t.scheme.scale_dtype), std::string(c.sdt));
      const int64_t out = t.shape[0];
      const Unpacked whole = unpack(*m, t, 0, out);
      // Every start row with lengths 1, 2 and 3.
      for (int64_t len = 1; len <= 3; ++len)
        for (int64_t r0 = 0; r0 + len <= out; r0 += len) {
          const Unpacked part = unpack(*m, t, r0, len);
          const size_t cb = part.codes.size(), sb = part.scales.size();
          ASSERT_EQ(0, std::memcmp(part.codes.data(),
                                   whole.codes.data() + size_t(r0) * cb / size_t(len), cb))
              << "codes of rows " << r0 << ".." << r0 + len;
          ASSERT_EQ(0, std::memcmp(part.scales.data(),
                                   whole.scales.data() + size_t(r0) * sb / size_t(len), sb));
          if (!c.sym) {
            ASSERT_EQ(0, std::memcmp(part.zeros.data(),
                                     whole.zeros.data() + size_t(r0) * sb / size_t(len), sb));
          }
        }
      // Integer zero-points are whole numbers in the code range.
      for (size_t i = 0;
           !c.sym && i < whole.zeros.size() / size_t(scale_bytes(t.scheme.scale_dtype)); ++i) {
        const float z = spec::load_param(whole.zeros.data(), int64_t(i), t.scheme.scale_dtype);
        ASSERT_TRUE(z >= 0 && z <= float((1 << c.bits) - 1) && z == std::floor(z)) << z;
      }
    }
  }
}

TEST(HfQuantized, DequantizeInSlicesOfAFewRowsWritesTheSameFile) {
  if (!have_numpy()) GTEST_SKIP() << "python3 cannot import numpy";
  const uint64_t seed = test::test_seed();
  for (const Case& c : kCases) {
    if (!c.sym && !kIntegerZeroPointDecoded) continue;
    SCOPED_TRACE(std::string(c.fmt) + " b" + std::to_string(c.bits));
    test::TempDir dir;
    write_model(dir.path() + "/m", c.fmt, c.bits, c.sym, c.group, c.sdt, c.shards, seed, c.v2);
    DequantizeOptions opt;
    opt.device.kind = DeviceKind::Cpu;
    dequantize_hf_folder(dir.path() + "/m", dir.file("one.safetensors"), opt);
    opt.slice_bytes = 4 * 128 * 3;  // a few rows of the widest tensors, one row of others
    opt.threads = 1;
    dequantize_hf_folder(dir.path() + "/m", dir.file("sliced.safetensors"), opt);
    EXPECT_EQ(test::read_file(dir.file("one.safetensors")),
              test::read_file(dir.file("sliced.safetensors")));
  }
}

TEST(HfQuantized, VerifyReportDoesNotDependOnItsRowRanges) {
  if (!have_numpy()) GTEST_SKIP() << "python3 cannot import numpy";
  const uint64_t seed = test::test_seed();
  test::TempDir dir;
  write_model(dir.path() + "/m", "gptq", 4, true, "32", "F16", 2, seed);
  VerifyOptions opt;
  opt.device.kind = DeviceKind::Cpu;
  const VerifyReport self = verify(dir.path() + "/m", "", opt);
  EXPECT_EQ(self.verdict, Verdict::Pass);
  EXPECT_EQ(self.file_format, "gptq");
  EXPECT_FALSE(self.bound_is_promise);
  // A source: dequantize's output (the reconstruction rounded to F16).
  DequantizeOptions dopt;
  dopt.device.kind = DeviceKind::Cpu;
  dequantize_hf_folder(dir.path() + "/m", dir.file("src.safetensors"), dopt);
  const VerifyReport a = verify(dir.path() + "/m", dir.file("src.safetensors"), opt);
  opt.gguf_slice_bytes = 4 * 128;  // one row of the widest tensor per range
  opt.threads = 1;
  const VerifyReport b = verify(dir.path() + "/m", dir.file("src.safetensors"), opt);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  EXPECT_EQ(a.verdict, Verdict::Pass);
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorResult &x = a.tensors[i], &y = b.tensors[i];
    SCOPED_TRACE(x.name);
    EXPECT_EQ(x.status, TensorStatus::Ok);
    if (!x.quantized) continue;
    EXPECT_EQ(x.sums.count, y.sums.count);
    EXPECT_EQ(x.sums.max_abs_err, y.sums.max_abs_err);
    EXPECT_EQ(x.sums.max_abs_index, y.sums.max_abs_index);
    EXPECT_EQ(x.sums.bound_violations, y.sums.bound_violations);
    EXPECT_EQ(x.degenerate_groups, y.degenerate_groups);
    EXPECT_NEAR(x.sums.sum_sq_ref, y.sums.sum_sq_ref, 1e-12 * x.sums.sum_sq_ref);
    EXPECT_NEAR(x.sums.sum_dot, y.sums.sum_dot, 1e-12 * std::fabs(x.sums.sum_dot));
    EXPECT_NEAR(x.sums.sum_sq_err, y.sums.sum_sq_err, 1e-12 * x.sums.sum_sq_err);
  }
}

// Two independent implementations: folders written by qpack's exporter
// (export_hf, from the same codes a .qpack of the scheme holds) read back by
// this reader. dequantize of the folder must equal dequantize of the .qpack
// `qpack convert` makes with the same scheme bit for bit, and verify against
// the source must find no element beyond qpack's bound.
TEST(HfQuantized, ReadsWhatQpacksExporterWrites) {
  if (!have_numpy()) GTEST_SKIP() << "python3 cannot import numpy";
  test::TempDir dir;
  const std::string src = dir.path() + "/src";
  const std::string py =
      "import sys, os, json; sys.path.insert(0, '" + test::source_dir() +
      "/tests/format'); import hf_quant_gen as g, numpy as np; rng = "
      "np.random.default_rng(" +
      std::to_string(test::test_seed() % 1000003) + "); os.makedirs('" + src +
      "'); t = {}; b = lambda a: g.bf16_bits_of_f32(a.astype(np.float32)); "
      "t['model.embed_tokens.weight'] = ('BF16', (64, 128), b(rng.standard_normal((64, 128)))); "
      "[t.__setitem__('model.layers.%d.%s.weight' % (i, n), ('BF16', s, b(rng.standard_normal(s) "
      "* 0.05))) for i in range(2) for n, s in [('self_attn.q_proj', (128, 128)), "
      "('self_attn.k_proj', (64, 128)), ('self_attn.v_proj', (64, 128)), ('self_attn.o_proj', "
      "(128, 128)), ('mlp.gate_proj', (256, 128)), ('mlp.up_proj', (256, 128)), "
      "('mlp.down_proj', (128, 256))]]; t['model.norm.weight'] = ('BF16', (128,), "
      "b(np.ones(128))); t['lm_head.weight'] = ('BF16', (64, 128), b(rng.standard_normal((64, "
      "128)))); g.write_safetensors('" +
      src +
      "/model.safetensors', t); json.dump({'architectures': ['LlamaForCausalLM'], 'model_type': "
      "'llama', 'hidden_size': 128, 'intermediate_size': 256, 'num_hidden_layers': 2, "
      "'num_attention_heads': 4, 'num_key_value_heads': 2, 'vocab_size': 64, 'torch_dtype': "
      "'bfloat16'}, open('" +
      src + "/config.json', 'w'))";
  const auto gen = test::run_command(std::string(QPACK_PYTHON) + " -c \"" + py + "\" 2>&1");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;

  struct Export {
    HfFormat format;
    int bits;
    int64_t group;
    bool sym;
  };
  const Export exports[] = {{HfFormat::CompressedTensors, 4, 32, true},
                            {HfFormat::CompressedTensors, 8, 0, true},
                            {HfFormat::CompressedTensors, 2, 64, true},
                            {HfFormat::Gptq, 4, 128, true},
                            {HfFormat::Gptq, 8, 32, true},
                            {HfFormat::CompressedTensors, 4, 32, false}};
  for (const Export& x : exports) {
    if (!x.sym && !kIntegerZeroPointDecoded) continue;
    const std::string tag = std::string(hf_format_name(x.format)) + "_b" + std::to_string(x.bits) +
                            "_g" + std::to_string(x.group) + (x.sym ? "_sym" : "_asym");
    SCOPED_TRACE(tag);
    HfExportOptions eo;
    eo.format = x.format;
    eo.bits = x.bits;
    eo.group_size = x.group;
    eo.symmetric = x.sym;
    const auto quantizer = make_cpu_quantizer(2);
    const std::string out = dir.path() + "/" + tag;
    export_hf(src, out, eo, *quantizer);
    const auto m = HfQuantizedModel::open(out);
    ASSERT_EQ(m->format_name(), std::string(hf_format_name(x.format)));
    for (const HfQuantTensor& t : m->quantized()) {
      EXPECT_EQ(t.scheme.bits, x.bits);
      EXPECT_EQ(t.scheme.symmetric, x.sym);
      EXPECT_EQ(t.scheme.group_size, x.group == 0 ? t.shape[1] : x.group);
    }
    // The same scheme through the .qpack path, for the quantized tensors.
    const std::string sd = x.format == HfFormat::Gptq ? "f16" : "bf16";
    const std::string qp = dir.file(tag + ".qpack");
    const auto conv = test::run_qpack(
        "convert " + src + "/model.safetensors " + qp + " --axis -1 -b " + std::to_string(x.bits) +
        " -g " + (x.group == 0 ? std::string("all") : std::to_string(x.group)) +
        (x.sym ? " --symmetric" : " --asymmetric --zero-point integer") + " --scale-dtype " + sd +
        " --skip '*embed_tokens*' --skip 'lm_head*' --skip '*norm*' -q");
    ASSERT_EQ(conv.exit_code, 0) << conv.output;
    const auto d1 = test::run_qpack("dequantize " + out + " " + dir.file(tag + "_f.safetensors") +
                                    " --device cpu -q --dtype " + sd);
    ASSERT_EQ(d1.exit_code, 0) << d1.output;
    const auto d2 = test::run_qpack("dequantize " + qp + " " + dir.file(tag + "_q.safetensors") +
                                    " --device cpu -q --dtype " + sd);
    ASSERT_EQ(d2.exit_code, 0) << d2.output;
    const auto a = Checkpoint::open(dir.file(tag + "_f.safetensors"));
    const auto b = Checkpoint::open(dir.file(tag + "_q.safetensors"));
    for (const HfQuantTensor& t : m->quantized()) {
      const CheckpointTensor* ta = a->find(t.name);
      const CheckpointTensor* tb = b->find(t.name);
      ASSERT_TRUE(ta && tb) << t.name;
      ASSERT_EQ(ta->info->nbytes(), tb->info->nbytes()) << t.name;
      EXPECT_EQ(0, std::memcmp(ta->data(), tb->data(), ta->info->nbytes())) << t.name;
    }
    VerifyOptions vo;
    vo.device.kind = DeviceKind::Cpu;
    const VerifyReport rep = verify(out, src, vo);
    EXPECT_EQ(rep.verdict, Verdict::Pass);
    EXPECT_EQ(rep.bound_violations, 0u) << "qpack's own codes keep qpack's bound";
    EXPECT_EQ(rep.model.quantized, m->quantized().size());
  }
}
