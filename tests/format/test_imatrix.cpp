// The importance-matrix reader (qpack/format/imatrix.hpp, docs/imatrix.md):
// valid files of both formats, built here byte by byte (legacy) or with
// qpack's GGUF writer, and a must-fail corpus of hand-made malformed files,
// each with the code, entry and words its error must carry. gguf-py's own
// writer on the other side is tests/verify/output_checks_check.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/imatrix.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using Bytes = std::vector<uint8_t>;

void put_i32(Bytes& b, int32_t v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(u >> (8 * i)));
}
void put_f32(Bytes& b, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(u >> (8 * i)));
}
void put_str(Bytes& b, const std::string& s) {
  put_i32(b, int32_t(s.size()));
  b.insert(b.end(), s.begin(), s.end());
}

struct DatEntry {
  std::string name;
  int32_t ncall;
  std::vector<float> values;
};

// llama.cpp's legacy layout, as docs/imatrix.md states it.
Bytes dat_bytes(const std::vector<DatEntry>& entries, int trailer /*0 none, 1 chunks, 2 both*/,
                int32_t chunks = 7, const std::string& dataset = "wiki.train.raw") {
  Bytes b;
  put_i32(b, int32_t(entries.size()));
  for (const DatEntry& e : entries) {
    put_str(b, e.name);
    put_i32(b, e.ncall);
    put_i32(b, int32_t(e.values.size()));
    for (float v : e.values) put_f32(b, v);
  }
  if (trailer >= 1) put_i32(b, chunks);
  if (trailer >= 2) put_str(b, dataset);
  return b;
}

std::vector<DatEntry> two_entries() {
  return {{"blk.0.attn_q.weight", 4, {4.0f, 8.0f, 0.0f, 1.0f}},
          {"blk.0.ffn_down.weight", 4, {2.0f, 6.0f, 10.0f}}};
}

ImportanceMatrix parse(const Bytes& b) { return parse_imatrix_dat(b.data(), b.size(), "im.dat"); }

// --- valid legacy files ---

TEST(ImatrixDat, ReadsEntriesAndTrailer) {
  for (int trailer = 0; trailer <= 2; ++trailer) {
    SCOPED_TRACE(trailer);
    const ImportanceMatrix im = parse(dat_bytes(two_entries(), trailer));
    EXPECT_EQ(im.format, ImatrixFormat::Legacy);
    ASSERT_EQ(im.entries.size(), 2u);
    const ImatrixEntry* q = im.find("blk.0.attn_q.weight");
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(q->columns, 4);
    EXPECT_EQ(q->matrices, 1);
    EXPECT_EQ(q->counts, std::vector<int64_t>{4});
    // Stored values are mean * ncall: the weights divide by ncall.
    EXPECT_EQ(q->weights, (std::vector<double>{1.0, 2.0, 0.0, 0.25}));
    EXPECT_EQ(im.entries[1].weights, (std::vector<double>{0.5, 1.5, 2.5}));
    EXPECT_EQ(im.chunk_count, trailer >= 1 ? 7 : -1);
    EXPECT_EQ(im.datasets, trailer == 2 ? std::vector<std::string>{"wiki.train.raw"}
                                        : std::vector<std::string>{});
  }
}

TEST(ImatrixDat, EmptyDatasetNameIsNone) {
  const ImportanceMatrix im = parse(dat_bytes(two_entries(), 2, 0, ""));
  EXPECT_EQ(im.chunk_count, 0);
  EXPECT_TRUE(im.datasets.empty());
}

TEST(ImatrixDat, MapsHfNamesToGgufEntries) {
  const ImportanceMatrix im = parse(dat_bytes(two_entries(), 0));
  EXPECT_EQ(im.find_for_tensor("model.layers.0.self_attn.q_proj.weight"),
            im.find("blk.0.attn_q.weight"));
  EXPECT_EQ(im.find_for_tensor("model.layers.0.mlp.down_proj.weight"),
            im.find("blk.0.ffn_down.weight"));
  EXPECT_EQ(im.find_for_tensor("blk.0.attn_q.weight"), im.find("blk.0.attn_q.weight"));
  EXPECT_EQ(im.find_for_tensor("model.layers.1.self_attn.q_proj.weight"), nullptr);
  EXPECT_EQ(im.find_for_tensor("model.layers.0.self_attn.k_proj.weight"), nullptr);
  EXPECT_EQ(im.find_for_tensor("lm_head.weight"), nullptr);
}

// Every prefix of a valid file is refused, except the three places where the
// layout lets a file end: after the entries, after the chunk count, at the end.
TEST(ImatrixDat, EveryTruncationIsRefused) {
  const Bytes whole = dat_bytes(two_entries(), 2);
  const size_t entries_end = dat_bytes(two_entries(), 0).size();
  for (size_t n = 0; n < whole.size(); ++n) {
    SCOPED_TRACE(n);
    const Bytes cut(whole.begin(), whole.begin() + long(n));
    if (n == entries_end || n == entries_end + 4) {
      EXPECT_NO_THROW(parse(cut));
      continue;
    }
    try {
      parse(cut);
      ADD_FAILURE() << "a " << n << "-byte prefix was accepted";
    } catch (const Error& e) {
      EXPECT_TRUE(e.code() == ErrorCode::Truncated || e.code() == ErrorCode::BadHeader)
          << error_code_name(e.code()) << ": " << e.what();
      EXPECT_EQ(e.file(), "im.dat");
    }
  }
}

// Random byte flips: either a valid matrix or a qpack::Error, nothing else.
TEST(ImatrixDat, MutationsFailCleanly) {
  const Bytes whole = dat_bytes(two_entries(), 2);
  std::mt19937_64 rng(test::test_seed());
  for (int i = 0; i < 4000; ++i) {
    Bytes b = whole;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = uint8_t(rng());
    try {
      const ImportanceMatrix im = parse(b);
      for (const auto& e : im.entries)
        for (double w : e.weights) EXPECT_TRUE(std::isfinite(w) && w >= 0);
    } catch (const Error&) {
    }
  }
}

// --- the legacy must-fail corpus ---

struct MustFail {
  std::string name;
  std::function<Bytes()> bytes;
  ErrorCode code;
  std::string entry;  // Error::tensor()
  std::string words;  // in the reason
};

std::vector<MustFail> dat_must_fail() {
  const auto with = [](std::function<void(std::vector<DatEntry>&)> edit, int trailer = 2) {
    return [edit, trailer] {
      std::vector<DatEntry> e = two_entries();
      edit(e);
      return dat_bytes(e, trailer);
    };
  };
  const auto raw = [](std::function<void(Bytes&)> edit) {
    return [edit] {
      Bytes b = dat_bytes(two_entries(), 2);
      edit(b);
      return b;
    };
  };
  // One entry: a cut inside it is not already refused by the entry count.
  const auto one = [](std::function<void(Bytes&)> edit) {
    return [edit] {
      Bytes b = dat_bytes({two_entries()[0]}, 0);
      edit(b);
      return b;
    };
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // Byte offsets in two_entries()'s file: count (0), entry 0's name length (4).
  const size_t e0_ncall = 4 + 4 + 19, e0_nval = e0_ncall + 4;
  const size_t trailer = dat_bytes(two_entries(), 0).size();
  const auto set_i32 = [](Bytes& b, size_t at, int32_t v) {
    Bytes t;
    put_i32(t, v);
    std::copy(t.begin(), t.end(), b.begin() + long(at));
  };
  return {
      {"empty_file", [] { return Bytes{}; }, ErrorCode::Truncated, "", "entry count"},
      {"three_bytes",
       [] {
         return Bytes{1, 0, 0};
       },
       ErrorCode::Truncated, "", "entry count"},
      {"zero_entries", [] { return dat_bytes({}, 0); }, ErrorCode::BadHeader, "", "entry count 0"},
      {"negative_entries", raw([=](Bytes& b) { set_i32(b, 0, -1); }), ErrorCode::BadHeader, "",
       "entry count -1"},
      {"entry_count_too_large", raw([=](Bytes& b) { set_i32(b, 0, 1 << 30); }),
       ErrorCode::BadHeader, "", "larger than the"},
      {"name_length_zero", with([](auto& e) { e[0].name = ""; }), ErrorCode::BadHeader, "",
       "entry 0: name length 0"},
      {"name_length_negative", raw([=](Bytes& b) { set_i32(b, 4, -5); }), ErrorCode::BadHeader, "",
       "name length -5"},
      {"name_past_end", raw([=](Bytes& b) { set_i32(b, 4, 1 << 20); }), ErrorCode::Truncated, "",
       "runs past the end"},
      {"name_with_nul", with([](auto& e) { e[1].name[3] = '\0'; }), ErrorCode::BadHeader, "",
       "entry 1: the name holds a NUL"},
      {"duplicate_name", with([](auto& e) { e[1].name = e[0].name; }), ErrorCode::DuplicateName,
       "blk.0.attn_q.weight", "repeats the name"},
      {"ends_in_ncall", one([=](Bytes& b) { b.resize(e0_ncall + 2); }), ErrorCode::Truncated,
       "blk.0.attn_q.weight", "ncall"},
      {"ncall_zero", raw([=](Bytes& b) { set_i32(b, e0_ncall, 0); }), ErrorCode::BadHeader,
       "blk.0.attn_q.weight", "ncall 0"},
      {"ncall_negative", raw([=](Bytes& b) { set_i32(b, e0_ncall, -3); }), ErrorCode::BadHeader,
       "blk.0.attn_q.weight", "ncall -3"},
      {"ends_in_value_count", one([=](Bytes& b) { b.resize(e0_nval + 1); }), ErrorCode::Truncated,
       "blk.0.attn_q.weight", "value count"},
      {"value_count_zero", raw([=](Bytes& b) { set_i32(b, e0_nval, 0); }), ErrorCode::BadHeader,
       "blk.0.attn_q.weight", "value count 0"},
      {"value_count_negative", raw([=](Bytes& b) { set_i32(b, e0_nval, -2); }),
       ErrorCode::BadHeader, "blk.0.attn_q.weight", "value count -2"},
      {"values_past_end", raw([=](Bytes& b) { set_i32(b, e0_nval, 0x7fffffff); }),
       ErrorCode::Truncated, "blk.0.attn_q.weight", "run past the end"},
      {"value_nan", with([=](auto& e) { e[1].values[2] = nan; }), ErrorCode::NonFinite,
       "blk.0.ffn_down.weight", "value 2 is nan"},
      {"value_inf", with([=](auto& e) { e[0].values[0] = inf; }), ErrorCode::NonFinite,
       "blk.0.attn_q.weight", "value 0 is inf"},
      {"value_negative", with([](auto& e) { e[0].values[3] = -0.5f; }), ErrorCode::RangeOverflow,
       "blk.0.attn_q.weight", "cannot be negative"},
      {"trailer_two_bytes", raw([=](Bytes& b) { b.resize(trailer + 2); }), ErrorCode::Truncated, "",
       "chunk count"},
      {"trailer_chunks_negative", raw([=](Bytes& b) { set_i32(b, trailer, -1); }),
       ErrorCode::BadHeader, "", "chunk count -1"},
      {"trailer_name_length_cut", raw([=](Bytes& b) { b.resize(trailer + 6); }),
       ErrorCode::Truncated, "", "dataset name length"},
      {"trailer_name_length_negative", raw([=](Bytes& b) { set_i32(b, trailer + 4, -7); }),
       ErrorCode::BadHeader, "", "dataset name length -7"},
      {"trailer_name_past_end", raw([=](Bytes& b) { set_i32(b, trailer + 4, 1000); }),
       ErrorCode::Truncated, "", "runs past the end"},
      {"bytes_after_trailer", raw([](Bytes& b) { b.push_back(0); }), ErrorCode::BadHeader, "",
       "1 bytes after the trailer"},
  };
}

TEST(ImatrixDat, MustFailCorpus) {
  for (const MustFail& c : dat_must_fail()) {
    SCOPED_TRACE(c.name);
    try {
      parse(c.bytes());
      ADD_FAILURE() << c.name << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), c.code) << error_code_name(e.code()) << ": " << e.what();
      EXPECT_EQ(e.file(), "im.dat");
      EXPECT_EQ(e.tensor(), c.entry);
      EXPECT_NE(e.reason().find(c.words), std::string::npos) << e.reason();
    }
  }
}

TEST(ImatrixDat, ReadImatrixNamesTheFile) {
  test::TempDir d;
  const std::string p = d.file("im.dat");
  const Bytes b = dat_bytes(two_entries(), 1);
  test::write_file(p, b.data(), b.size());
  const ImportanceMatrix im = read_imatrix(p);
  EXPECT_EQ(im.path, p);
  EXPECT_EQ(im.entries.size(), 2u);
  try {
    read_imatrix(d.file("absent.dat"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
  }
}

// --- GGUF imatrix ---

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;
  std::vector<float> values;  // F32 values; F16 tensors get zero bytes
};

struct GgufImatrix {
  std::vector<GgufKv> kv;
  std::vector<GgufTensor> tensors;
};

GgufImatrix valid_gguf() {
  GgufImatrix g;
  g.kv = {
      {"general.type", GgufValue::of_string("imatrix")},
      {"imatrix.datasets", GgufValue::of_array(GgufType::String, {GgufValue::of_string("a.txt"),
                                                                  GgufValue::of_string("b.txt")})},
      {"imatrix.chunk_count", GgufValue::of_u32(12)},
      {"imatrix.chunk_size", GgufValue::of_u32(512)}};
  g.tensors = {{"blk.0.attn_q.weight.in_sum2", GgmlType::F32, {3, 1}, {10, 20, 0}},
               {"blk.0.attn_q.weight.counts", GgmlType::F32, {1, 1}, {5}},
               // Two experts, the second never exercised (count 0: weights 1).
               {"blk.0.ffn_up_exps.weight.in_sum2", GgmlType::F32, {2, 2}, {3, 9, 0, 0}},
               {"blk.0.ffn_up_exps.weight.counts", GgmlType::F32, {1, 2}, {3, 0}}};
  return g;
}

std::string write(const GgufImatrix& g, const test::TempDir& d) {
  const std::string p = d.file("im.gguf");
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<GgufTensorToWrite> ts;
  for (const GgufTensor& t : g.tensors) {
    GgufTensorToWrite w;
    w.decl = {t.name, t.type, t.ne};
    const uint64_t nb = gguf_tensor_nbytes(t.type, t.ne, p, t.name);
    bufs.emplace_back(nb, 0);
    if (t.type == GgmlType::F32)
      std::memcpy(bufs.back().data(), t.values.data(), std::min<uint64_t>(nb, 4 * t.values.size()));
    ts.push_back(w);
  }
  for (size_t i = 0; i < ts.size(); ++i) ts[i].data = bufs[i].data();
  write_gguf(p, g.kv, ts, /*overwrite=*/true);
  return p;
}

TEST(ImatrixGguf, ReadsEntriesCountsAndMetadata) {
  test::TempDir d;
  const ImportanceMatrix im = read_imatrix(write(valid_gguf(), d));
  EXPECT_EQ(im.format, ImatrixFormat::Gguf);
  EXPECT_EQ(im.chunk_count, 12);
  EXPECT_EQ(im.chunk_size, 512);
  EXPECT_EQ(im.datasets, (std::vector<std::string>{"a.txt", "b.txt"}));
  ASSERT_EQ(im.entries.size(), 2u);
  const ImatrixEntry& q = im.entries[0];
  EXPECT_EQ(q.name, "blk.0.attn_q.weight");
  EXPECT_EQ(q.columns, 3);
  EXPECT_EQ(q.matrices, 1);
  EXPECT_EQ(q.counts, std::vector<int64_t>{5});
  EXPECT_EQ(q.weights, (std::vector<double>{2.0, 4.0, 0.0}));
  const ImatrixEntry& x = im.entries[1];
  EXPECT_EQ(x.columns, 2);
  EXPECT_EQ(x.matrices, 2);
  EXPECT_EQ(x.counts, (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(x.weights, (std::vector<double>{1.0, 3.0, 1.0, 1.0}));
  EXPECT_EQ(im.find_for_tensor("model.layers.0.self_attn.q_proj.weight"), &im.entries[0]);
}

TEST(ImatrixGguf, MetadataIsOptional) {
  test::TempDir d;
  GgufImatrix g = valid_gguf();
  g.kv.clear();
  const ImportanceMatrix im = read_imatrix(write(g, d));
  EXPECT_EQ(im.chunk_count, -1);
  EXPECT_EQ(im.chunk_size, -1);
  EXPECT_EQ(im.entries.size(), 2u);
}

struct GgufMustFail {
  std::string name;
  std::function<void(GgufImatrix&)> edit;
  ErrorCode code;
  std::string entry;
  std::string words;
};

TEST(ImatrixGguf, MustFailCorpus) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<GgufMustFail> cases = {
      {"a_model_not_an_imatrix", [](auto& g) { g.kv[0].value = GgufValue::of_string("model"); },
       ErrorCode::BadHeader, "", "not an imatrix"},
      {"general_type_not_a_string", [](auto& g) { g.kv[0].value = GgufValue::of_u32(1); },
       ErrorCode::BadMetadata, "", "general.type must be a string"},
      {"datasets_not_an_array", [](auto& g) { g.kv[1].value = GgufValue::of_string("a.txt"); },
       ErrorCode::BadMetadata, "", "imatrix.datasets must be an array of strings"},
      {"chunk_count_signed", [](auto& g) { g.kv[2].value = GgufValue::of_i32(12); },
       ErrorCode::BadMetadata, "", "imatrix.chunk_count must be a u32"},
      {"chunk_size_float", [](auto& g) { g.kv[3].value = GgufValue::of_f32(512); },
       ErrorCode::BadMetadata, "", "imatrix.chunk_size must be a u32"},
      {"no_tensors", [](auto& g) { g.tensors.clear(); }, ErrorCode::BadHeader, "", "no entries"},
      {"foreign_tensor",
       [](auto& g) {
         g.tensors.push_back({"token_embd.weight", GgmlType::F32, {4}, {1, 2, 3, 4}});
       },
       ErrorCode::BadHeader, "token_embd.weight", "neither NAME.in_sum2 nor NAME.counts"},
      {"sums_without_counts", [](auto& g) { g.tensors.erase(g.tensors.begin() + 1); },
       ErrorCode::ShapeMismatch, "blk.0.attn_q.weight", "but no blk.0.attn_q.weight.counts"},
      {"counts_without_sums", [](auto& g) { g.tensors.erase(g.tensors.begin()); },
       ErrorCode::ShapeMismatch, "blk.0.attn_q.weight", "but no blk.0.attn_q.weight.in_sum2"},
      {"sums_f16", [](auto& g) { g.tensors[0].type = GgmlType::F16; }, ErrorCode::UnsupportedDtype,
       "blk.0.attn_q.weight", "is F16; an imatrix stores F32"},
      {"counts_f16", [](auto& g) { g.tensors[1].type = GgmlType::F16; },
       ErrorCode::UnsupportedDtype, "blk.0.attn_q.weight", "counts is F16"},
      {"sums_three_dims",
       [](auto& g) {
         g.tensors[0].ne = {3, 1, 1};
       },
       ErrorCode::ShapeMismatch, "blk.0.attn_q.weight", "[channels] or [channels, matrices]"},
      {"counts_wrong_length",
       [](auto& g) {
         g.tensors[3].ne = {1, 3};
         g.tensors[3].values = {3, 0, 1};
       },
       ErrorCode::ShapeMismatch, "blk.0.ffn_up_exps.weight", "needs [1, 2]"},
      {"counts_not_one_column",
       [](auto& g) {
         g.tensors[3].ne = {2, 1};
       },
       ErrorCode::ShapeMismatch, "blk.0.ffn_up_exps.weight", "needs [1, 2]"},
      {"count_nan", [&](auto& g) { g.tensors[1].values[0] = nan; }, ErrorCode::NonFinite,
       "blk.0.attn_q.weight", "count 0 is nan"},
      {"count_negative", [](auto& g) { g.tensors[3].values[1] = -1; }, ErrorCode::RangeOverflow,
       "blk.0.ffn_up_exps.weight", "count 1 is -1"},
      {"count_fractional", [](auto& g) { g.tensors[1].values[0] = 2.5f; }, ErrorCode::RangeOverflow,
       "blk.0.attn_q.weight", "an integer >= 0"},
      {"sum_nan", [&](auto& g) { g.tensors[0].values[1] = nan; }, ErrorCode::NonFinite,
       "blk.0.attn_q.weight", "in_sum2 value 1 is nan"},
      {"sum_negative", [](auto& g) { g.tensors[2].values[1] = -9; }, ErrorCode::RangeOverflow,
       "blk.0.ffn_up_exps.weight", "cannot be negative"},
      {"sum_without_count", [](auto& g) { g.tensors[2].values[3] = 1; }, ErrorCode::RangeOverflow,
       "blk.0.ffn_up_exps.weight", "value 3 is 1 while its matrix's count is 0"},
  };
  for (const GgufMustFail& c : cases) {
    SCOPED_TRACE(c.name);
    test::TempDir d;
    GgufImatrix g = valid_gguf();
    c.edit(g);
    const std::string p = write(g, d);
    try {
      read_imatrix(p);
      ADD_FAILURE() << c.name << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), c.code) << error_code_name(e.code()) << ": " << e.what();
      EXPECT_EQ(e.file(), p);
      EXPECT_EQ(e.tensor(), c.entry);
      EXPECT_NE(e.reason().find(c.words), std::string::npos) << e.reason();
    }
  }
}

// A GGUF that is malformed as GGUF keeps the GGUF reader's own codes.
TEST(ImatrixGguf, ContainerFaultsAreTheGgufReaders) {
  test::TempDir d;
  const std::string p = write(valid_gguf(), d);
  std::vector<uint8_t> b = test::read_file(p);
  b.resize(b.size() - 40);  // the last tensor's data (8 bytes, padded to 32) cut short
  const std::string cut = d.file("cut.gguf");
  test::write_file(cut, b.data(), b.size());
  try {
    read_imatrix(cut);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), cut);
    EXPECT_EQ(std::string(error_code_name(e.code())).rfind("Gguf", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace qpack
