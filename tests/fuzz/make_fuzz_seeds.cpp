// Writes the fuzzers' seed corpora: make_fuzz_seeds OUTDIR creates
// OUTDIR/safetensors/, OUTDIR/qpack/ and OUTDIR/gguf/ (how to run the fuzzers: the
// comment above the fuzz targets in tests/CMakeLists.txt).
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "fuzz/seeds.hpp"

namespace {

bool write_all(const std::string& dir, const std::vector<qpack::fuzz::Seed>& seeds) {
  ::mkdir(dir.c_str(), 0755);
  for (const auto& s : seeds) {
    std::ofstream f(dir + "/" + s.name, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(s.bytes.data()), std::streamsize(s.bytes.size()));
    if (!f) {
      std::fprintf(stderr, "make_fuzz_seeds: cannot write %s/%s\n", dir.c_str(), s.name.c_str());
      return false;
    }
  }
  std::printf("%zu seeds in %s\n", seeds.size(), dir.c_str());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds OUTDIR\n");
    return 2;
  }
  const std::string out = argv[1];
  ::mkdir(out.c_str(), 0755);
  try {
    if (!write_all(out + "/safetensors", qpack::fuzz::safetensors_seeds())) return 1;
    if (!write_all(out + "/qpack", qpack::fuzz::qpack_seeds())) return 1;
    if (!write_all(out + "/gguf", qpack::fuzz::gguf_seeds())) return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
