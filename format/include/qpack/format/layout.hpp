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

}  // namespace qpack
