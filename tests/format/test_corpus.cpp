// The must-fail corpus through the library: every malformed input is
// rejected with its own ErrorCode, naming the file (and tensor), and nothing
// crashes. The same corpus runs through the CLI in tests/cli/test_inspect_cli.cpp and
// seeds the fuzzers.
#include <gtest/gtest.h>

#include <set>

#include "format/corpus.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/safetensors.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using corpus::Case;
using corpus::Kind;

void open_case(const Case& c, const std::string& path) {
  switch (c.kind) {
    case Kind::Safetensors:
      (void)SafetensorsFile::open(path);
      break;
    case Kind::Checkpoint:
      (void)Checkpoint::open(path);
      break;
    case Kind::Qpack: {
      const auto f = QpackFile::open(path);
      if (c.on_check) {
        // The damage is in section data: opening must succeed, reading must not.
        f->check_all();
      }
      break;
    }
  }
}

class MustFail : public ::testing::TestWithParam<std::string> {};

TEST_P(MustFail, RejectedWithItsErrorCode) {
  const Case c = corpus::make_must_fail(GetParam());
  test::TempDir dir;
  const std::string path = corpus::materialize(c, dir.path());
  const std::string named = dir.file(c.file_in_message);
  try {
    open_case(c, path);
    FAIL() << c.name << " was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(error_code_name(e.code()), std::string(error_code_name(c.expected))) << e.what();
    EXPECT_EQ(e.file(), named) << e.what();
    EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    if (!c.tensor.empty()) {
      EXPECT_EQ(e.tensor(), c.tensor) << e.what();
      EXPECT_NE(std::string(e.what()).find("'" + c.tensor + "'"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(e.reason().empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, MustFail, ::testing::ValuesIn(corpus::must_fail_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// The in-memory entry points the fuzzers use give the same verdicts.
class MustFailInMemory : public ::testing::TestWithParam<std::string> {};

TEST_P(MustFailInMemory, SameVerdict) {
  const Case c = corpus::make_must_fail(GetParam());
  ASSERT_NE(c.kind, Kind::Checkpoint);
  const corpus::Bytes& b = c.files.at(0).bytes;
  try {
    if (c.kind == Kind::Safetensors) {
      std::vector<TensorInfo> ts;
      std::map<std::string, std::string> md;
      uint64_t start = 0;
      SafetensorsFile::parse_header(b.data(), b.size(), "mem", &ts, &md, &start);
    } else {
      const auto f = QpackFile::from_memory(b.data(), b.size(), "mem");
      if (c.on_check) f->check_all();
    }
    FAIL() << c.name << " was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(error_code_name(e.code()), std::string(error_code_name(c.expected))) << e.what();
    EXPECT_EQ(e.file(), "mem");
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, MustFailInMemory, ::testing::ValuesIn(corpus::single_file_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(MustFailCorpus, IsLargeAndCoversBothFormats) {
  int st = 0, ck = 0, qp = 0;
  std::set<ErrorCode> codes;
  for (const std::string& n : corpus::must_fail_names()) {
    const Case c = corpus::make_must_fail(n);
    EXPECT_EQ(c.name, n);
    const Kind by_prefix = n.rfind("st_", 0) == 0   ? Kind::Safetensors
                           : n.rfind("qp_", 0) == 0 ? Kind::Qpack
                                                    : Kind::Checkpoint;
    EXPECT_EQ(c.kind, by_prefix) << n;
    (c.kind == Kind::Safetensors ? st : c.kind == Kind::Checkpoint ? ck : qp)++;
    codes.insert(c.expected);
  }
  EXPECT_GE(st + ck + qp, 35);
  EXPECT_GE(st, 10);
  EXPECT_GE(ck, 5);
  EXPECT_GE(qp, 10);
  EXPECT_GE(codes.size(), 25u);
}

// Valid samples open cleanly (and so the corpus's expectations are not
// artefacts of a broken base file).
TEST(ValidSamples, OpenAndCheck) {
  for (const Case& c : corpus::valid_samples()) {
    SCOPED_TRACE(c.name);
    test::TempDir dir;
    const std::string path = corpus::materialize(c, dir.path());
    if (c.kind == Kind::Qpack) {
      EXPECT_NO_THROW(QpackFile::open(path)->check_all());
    } else {
      EXPECT_NO_THROW(Checkpoint::open(path));
    }
  }
}

}  // namespace
}  // namespace qpack
