// Shell-style name patterns ('*', '?', '[...]'), as recipes, --skip, --rule
// and verify policies match tensor names.
#pragma once

#include <string>

namespace qpack {

bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace qpack
