// The CPU quantizer's ISA levels (quantize.hpp's CpuIsa) that this machine
// has, so that parity tests run each: scalar always, avx2 and avx512 where
// the CPU supports them (a test on a machine without one cannot cover it;
// the levels run are in each failure message).
#pragma once

#include <vector>

#include "qpack/converter/quantize.hpp"

namespace qpack::test {

inline std::vector<CpuIsa> available_cpu_isas() {
  std::vector<CpuIsa> v;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (int(isa) <= int(cpu_isa_available())) v.push_back(isa);
  return v;
}

// Caps the level for a scope; restores the previous one after.
class CpuIsaScope {
 public:
  explicit CpuIsaScope(CpuIsa isa) : previous_(cpu_isa()) { set_cpu_isa(isa); }
  ~CpuIsaScope() { set_cpu_isa(previous_); }
  CpuIsaScope(const CpuIsaScope&) = delete;
  CpuIsaScope& operator=(const CpuIsaScope&) = delete;

 private:
  CpuIsa previous_;
};

}  // namespace qpack::test
