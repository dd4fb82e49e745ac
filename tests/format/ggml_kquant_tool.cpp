// qpack's ggml block reference (qpack/spec/ggml_block_types.hpp) as a filter,
// for tests/format/ggml_kquant_llama_check.py to hold against ggml's C:
//
//   ggml_kquant_tool quantize TYPE   < float32 values > blocks
//   ggml_kquant_tool dequantize TYPE < blocks         > float32 values
//
// TYPE is a ggml name (Q2_K ... Q6_K, or a legacy Q4_0 ... Q8_0). Exit 2 for
// bad arguments or input that is not a whole number of blocks. Test-only.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "qpack/spec/ggml_block_types.hpp"

namespace gl = qpack::spec::ggml;

namespace {

bool type_by_name(const std::string& name, gl::GgmlBlockType* t) {
  for (uint32_t v = 0; v < 64; ++v) {
    const auto c = gl::GgmlBlockType(v);
    if (gl::is_block_type(c) && name == gl::type_name(c)) {
      *t = c;
      return true;
    }
  }
  return false;
}

int fail(const std::string& why) {
  std::fprintf(stderr, "ggml_kquant_tool: %s\n", why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  gl::GgmlBlockType t;
  if (argc != 3 || !type_by_name(argv[2], &t))
    return fail("usage: ggml_kquant_tool quantize|dequantize TYPE < in > out");
  std::freopen(nullptr, "rb", stdin);
  std::freopen(nullptr, "wb", stdout);
  const std::vector<char> in((std::istreambuf_iterator<char>(std::cin)),
                             std::istreambuf_iterator<char>());
  const size_t be = size_t(gl::block_elements(t));
  const size_t bytes = size_t(gl::block_bytes(t));
  const std::string mode = argv[1];
  std::vector<char> out;
  if (mode == "quantize") {
    if (in.size() % (4 * be) != 0) return fail("input is not a whole number of blocks of floats");
    const size_t n = in.size() / 4;
    std::vector<float> x(n);
    std::memcpy(x.data(), in.data(), in.size());
    out.resize(n / be * bytes);
    gl::quantize_row(t, x.data(), int64_t(n), reinterpret_cast<uint8_t*>(out.data()));
  } else if (mode == "dequantize") {
    if (in.size() % bytes != 0) return fail("input is not a whole number of blocks");
    const size_t n = in.size() / bytes * be;
    std::vector<float> y(n);
    gl::dequantize_row(t, reinterpret_cast<const uint8_t*>(in.data()), int64_t(n), y.data());
    out.resize(4 * n);
    std::memcpy(out.data(), y.data(), out.size());
  } else {
    return fail("mode must be quantize or dequantize");
  }
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size()) return fail("write failed");
  return 0;
}
