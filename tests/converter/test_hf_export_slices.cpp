// The per-format writers of one Linear weight (converter/src/export/
// export_compressed_tensors.cpp, export_gptq.cpp) driven into memory: the
// bytes must not depend on how the weight is cut into slices (row slices of
// 32 for compressed-tensors, column blocks of one group or single rows for
// GPTQ, against one slice for the whole weight) nor on the thread count,
// every output byte must be written exactly once, and the decoded tensors
// must be the whole tensor's quantization, also through a quantizer that
// finishes each block only when waited for (quantize_reference of the full
// [out, in] weight, re-laid out by the layout functions, which
// test_hf_layouts checks element by element).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "compressed_tensors_layout.hpp"
#include "export_hf_detail.hpp"
#include "gptq_layout.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

constexpr uint8_t kPoison = 0xa5;

struct Outputs {
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<std::vector<int>> writes;  // times each byte was written
};

// A quantizer that does the work only at wait(), as a device pipeline may:
// a writer that touched a block's buffers before waiting for it, or reused
// them while it was in flight, gets other bytes (or reads freed memory,
// which the sanitizer builds catch).
class DeferredQuantizer : public TensorQuantizer {
 public:
  explicit DeferredQuantizer(int threads) : cpu_(make_cpu_quantizer(threads)) {}
  void quantize(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override {
    cpu_->quantize(in, layout, scheme, policy, out);
  }
  Ticket submit(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override {
    pending_.push_back({in, layout, scheme, policy, out});
    // Poison the outputs: the writer must not read them before wait().
    std::memset(out.codes, kPoison, layout.codes_bytes());
    std::memset(out.scales, kPoison, layout.params_bytes(scheme.scale_dtype));
    if (out.zeros) std::memset(out.zeros, kPoison, layout.params_bytes(scheme.scale_dtype));
    return pending_.size() - 1;
  }
  void wait(Ticket t) override {
    const Pending& p = pending_.at(t);
    cpu_->quantize(p.in, p.layout, p.scheme, p.policy, p.out);
  }
  void cancel() noexcept override {}
  std::string description() const override { return "deferred"; }
  size_t submitted() const { return pending_.size(); }

 private:
  struct Pending {
    QuantInput in;
    GroupLayout layout;
    QuantScheme scheme;
    NonFinitePolicy policy;
    QuantBuffers out;
  };
  std::unique_ptr<TensorQuantizer> cpu_;
  std::vector<Pending> pending_;
};

Outputs run(bool gptq, const std::vector<uint8_t>& src, DType dtype, int64_t out, int64_t in,
            const QuantScheme& s, uint64_t slice_bytes, int threads,
            const std::vector<uint64_t>& sizes, int64_t min_slice_rows = 256,
            bool through_queue = false) {
  Outputs o;
  for (uint64_t n : sizes) {
    o.bytes.emplace_back(n, kPoison);
    o.writes.emplace_back(n, 0);
  }
  // threads < 0: the deferred quantizer with -threads threads.
  std::unique_ptr<TensorQuantizer> q =
      threads < 0 ? std::unique_ptr<TensorQuantizer>(new DeferredQuantizer(-threads))
                  : make_cpu_quantizer(threads);
  hf_export::LinearJob job;
  job.name = "w";
  job.data = src.data();
  job.dtype = dtype;
  job.out = out;
  job.in = in;
  job.scheme = s;
  job.slice_bytes = slice_bytes;
  job.first_output = 0;
  job.quantizer = q.get();
  job.min_slice_rows = min_slice_rows;
  job.write = [&o](size_t t, uint64_t off, const void* p, uint64_t n) {
    ASSERT_LT(t, o.bytes.size());
    ASSERT_LE(off + n, o.bytes[t].size()) << "tensor " << t;
    std::memcpy(o.bytes[t].data() + off, p, n);
    for (uint64_t i = 0; i < n; ++i) ++o.writes[t][off + i];
  };
  // The exporters' writer thread, its buffers handed over whole or strided.
  std::unique_ptr<hf_export::WriteQueue> queue;
  if (through_queue) {
    queue = std::make_unique<hf_export::WriteQueue>(job.write, 1ull << 20);
    job.queue = queue.get();
  }
  if (gptq)
    hf_export::write_gptq_linear(job);
  else
    hf_export::write_compressed_tensors_linear(job);
  if (queue) queue->drain();
  for (size_t t = 0; t < o.writes.size(); ++t)
    for (size_t i = 0; i < o.writes[t].size(); ++i)
      if (o.writes[t][i] != 1) {
        ADD_FAILURE() << "tensor " << t << " byte " << i << " written " << o.writes[t][i]
                      << " times";
        return o;
      }
  return o;
}

std::vector<uint8_t> random_bf16(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<uint8_t> b(size_t(n) * 2);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_bf16_rne(normal(rng));
    std::memcpy(&b[size_t(i) * 2], &h, 2);
  }
  return b;
}

struct Case {
  int64_t out, in;
  int bits;
  int64_t group;
};

TEST(HfExportSlices, CompressedTensorsRowSlices) {
  std::mt19937_64 rng(test::test_seed());
  for (const Case c :
       {Case{100, 256, 4, 128}, Case{64, 96, 8, 32}, Case{33, 192, 2, 64}, Case{70, 40, 4, 0}}) {
    SCOPED_TRACE(::testing::Message() << c.out << "x" << c.in << " b" << c.bits << " g" << c.group);
    const auto src = random_bf16(c.out * c.in, rng);
    QuantScheme s;
    s.bits = c.bits;
    s.group_size = c.group;
    s.axis = -1;
    s.symmetric = true;
    s.scale_dtype = DType::BF16;
    const int64_t P = c.group ? c.in / c.group : 1;
    const std::vector<uint64_t> sizes = {
        uint64_t(c.out * compressed_tensors::packed_words_per_row(c.in, c.bits) * 4),
        uint64_t(c.out * P * 2), 16};
    const Outputs whole = run(false, src, DType::BF16, c.out, c.in, s, 1ull << 30, 2, sizes);
    const Outputs sliced = run(false, src, DType::BF16, c.out, c.in, s, 1, 1, sizes);
    const Outputs deferred = run(false, src, DType::BF16, c.out, c.in, s, 1, -2, sizes);
    for (size_t t = 0; t < sizes.size(); ++t) {
      EXPECT_EQ(whole.bytes[t], sliced.bytes[t]) << t;
      EXPECT_EQ(whole.bytes[t], deferred.bytes[t]) << t;
    }
    // The whole tensor's quantization, re-laid out.
    const GroupLayout L = make_layout({c.out, c.in}, s);
    std::vector<uint8_t> codes(L.codes_bytes()), scales(L.params_bytes(s.scale_dtype));
    quantize_reference({src.data(), DType::BF16, "w"}, L, s, NonFinitePolicy::Error,
                       {codes.data(), scales.data(), nullptr});
    std::vector<uint8_t> packed(sizes[0]);
    compressed_tensors::pack_weight_rows(codes.data(), L, packed.data());
    EXPECT_EQ(sliced.bytes[0], packed);
    EXPECT_EQ(sliced.bytes[1], scales);
    int64_t shape[2];
    std::memcpy(shape, sliced.bytes[2].data(), 16);  // little-endian host
    EXPECT_EQ(shape[0], c.out);
    EXPECT_EQ(shape[1], c.in);
  }
}

// Asymmetric (Integer zero-point): weight_zero_point, packed along dim 0,
// is assembled from 32-row slices into the whole tensor's words.
TEST(HfExportSlices, CompressedTensorsIntegerZeroPoints) {
  std::mt19937_64 rng(test::test_seed());
  for (const Case c :
       {Case{96, 256, 4, 128}, Case{64, 96, 8, 32}, Case{80, 192, 2, 64}, Case{72, 40, 4, 0}}) {
    SCOPED_TRACE(::testing::Message() << c.out << "x" << c.in << " b" << c.bits << " g" << c.group);
    const auto src = random_bf16(c.out * c.in, rng);
    QuantScheme s;
    s.bits = c.bits;
    s.group_size = c.group;
    s.axis = -1;
    s.symmetric = false;
    s.zero_point = ZeroPoint::Integer;
    s.scale_dtype = DType::BF16;
    const int64_t P = c.group ? c.in / c.group : 1;
    const int64_t zr = compressed_tensors::zero_point_rows(c.out, c.bits);
    const std::vector<uint64_t> sizes = {
        uint64_t(c.out * compressed_tensors::packed_words_per_row(c.in, c.bits) * 4),
        uint64_t(c.out * P * 2), uint64_t(zr * P * 4), 16};
    const Outputs whole = run(false, src, DType::BF16, c.out, c.in, s, 1ull << 30, 2, sizes);
    const Outputs sliced = run(false, src, DType::BF16, c.out, c.in, s, 1, 1, sizes);
    const Outputs deferred = run(false, src, DType::BF16, c.out, c.in, s, 1, -2, sizes);
    for (size_t t = 0; t < sizes.size(); ++t) {
      EXPECT_EQ(whole.bytes[t], sliced.bytes[t]) << t;
      EXPECT_EQ(whole.bytes[t], deferred.bytes[t]) << t;
    }
    const GroupLayout L = make_layout({c.out, c.in}, s);
    std::vector<uint8_t> codes(L.codes_bytes()), scales(L.params_bytes(s.scale_dtype)),
        zeros(L.params_bytes(s.scale_dtype));
    quantize_reference({src.data(), DType::BF16, "w"}, L, s, NonFinitePolicy::Error,
                       {codes.data(), scales.data(), zeros.data()});
    std::vector<uint8_t> packed(sizes[0]), zp(sizes[2]);
    compressed_tensors::pack_weight_rows(codes.data(), L, packed.data());
    compressed_tensors::pack_zero_points(zeros.data(), s.scale_dtype, c.out, P, c.bits, zp.data());
    EXPECT_EQ(sliced.bytes[0], packed);
    EXPECT_EQ(sliced.bytes[1], scales);
    EXPECT_EQ(sliced.bytes[2], zp);
  }
}

TEST(HfExportSlices, GptqColumnBlocksAndRowSlices) {
  std::mt19937_64 rng(test::test_seed());
  for (const Case c :
       {Case{96, 384, 4, 128}, Case{40, 96, 8, 32}, Case{24, 64, 4, 0}, Case{16, 160, 4, 32}}) {
    SCOPED_TRACE(::testing::Message() << c.out << "x" << c.in << " b" << c.bits << " g" << c.group);
    const auto src = random_bf16(c.out * c.in, rng);
    QuantScheme s;
    s.bits = c.bits;
    s.group_size = c.group;
    s.axis = -1;
    s.symmetric = true;
    s.scale_dtype = DType::F16;
    const int cpw = gptq::codes_per_word(c.bits);
    const int64_t P = c.group ? c.in / c.group : 1;
    const std::vector<uint64_t> sizes = {uint64_t(c.in / cpw * c.out * 4),
                                         uint64_t(P * c.out / cpw * 4), uint64_t(P * c.out * 2),
                                         uint64_t(c.in * 4)};
    const Outputs whole = run(true, src, DType::BF16, c.out, c.in, s, 1ull << 30, 2, sizes);
    const Outputs sliced = run(true, src, DType::BF16, c.out, c.in, s, 1, 3, sizes);
    const Outputs deferred = run(true, src, DType::BF16, c.out, c.in, s, 1, -1, sizes);
    // Row slices of 7 rows (a partial last one), strided writes, with and
    // without the writer thread; and single rows.
    const uint64_t seven_rows = uint64_t(7 * c.in * 2);
    const Outputs rows7 = run(true, src, DType::BF16, c.out, c.in, s, seven_rows, 2, sizes, 1);
    const Outputs rows7q =
        run(true, src, DType::BF16, c.out, c.in, s, seven_rows, -1, sizes, 1, true);
    const Outputs rows1 = run(true, src, DType::BF16, c.out, c.in, s, 1, 1, sizes, 1, true);
    for (size_t t = 0; t < sizes.size(); ++t) {
      EXPECT_EQ(whole.bytes[t], sliced.bytes[t]) << t;
      EXPECT_EQ(whole.bytes[t], deferred.bytes[t]) << t;
      EXPECT_EQ(whole.bytes[t], rows7.bytes[t]) << t;
      EXPECT_EQ(whole.bytes[t], rows7q.bytes[t]) << t;
      EXPECT_EQ(whole.bytes[t], rows1.bytes[t]) << t;
    }
    const GroupLayout L = make_layout({c.out, c.in}, s);
    std::vector<uint8_t> codes(L.codes_bytes()), scales(L.params_bytes(s.scale_dtype));
    quantize_reference({src.data(), DType::BF16, "w"}, L, s, NonFinitePolicy::Error,
                       {codes.data(), scales.data(), nullptr});
    std::vector<uint8_t> qweight(sizes[0]), scales_t(sizes[2]);
    gptq::pack_qweight_block(codes.data(), L, qweight.data());
    gptq::transpose(scales.data(), c.out, P, 2, scales_t.data());
    EXPECT_EQ(sliced.bytes[0], qweight);
    EXPECT_EQ(sliced.bytes[2], scales_t);
    const uint32_t sym_word = c.bits == 4 ? 0x77777777u : 0x7F7F7F7Fu;
    for (uint64_t i = 0; i < sizes[1] / 4; ++i) {
      uint32_t w;
      std::memcpy(&w, &sliced.bytes[1][4 * i], 4);
      ASSERT_EQ(w, sym_word) << "qzeros word " << i;
    }
    for (int64_t k = 0; k < c.in; ++k) {
      int32_t g;
      std::memcpy(&g, &sliced.bytes[3][size_t(4 * k)], 4);
      ASSERT_EQ(g, c.group ? k / c.group : 0);
    }
  }
}

}  // namespace
}  // namespace qpack
