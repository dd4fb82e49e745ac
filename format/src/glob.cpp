#include "qpack/format/glob.hpp"

#include <fnmatch.h>

namespace qpack {

bool glob_match(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

}  // namespace qpack
