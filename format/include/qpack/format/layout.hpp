// GroupLayout as the libraries use it: resolved from a shape and a scheme,
// with failures as qpack::Error naming the tensor.
#pragma once

#include <string>
#include <vector>

#include "qpack/spec/layout.hpp"

namespace qpack {

// GroupLayout::resolve, throwing Error(UnsupportedScheme / ShapeMismatch)
// naming `tensor` when the pair has no layout.
GroupLayout make_layout(const std::vector<int64_t>& shape, const QuantScheme& scheme,
                        const std::string& tensor = {});

// "4b g64 ax0 asym F16": how every command prints a scheme.
std::string scheme_to_string(const QuantScheme& s);

}  // namespace qpack
