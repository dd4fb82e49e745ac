#include "qpack/format/layout.hpp"

#include "qpack/format/error.hpp"

namespace qpack {

GroupLayout make_layout(const std::vector<int64_t>& shape, const QuantScheme& scheme,
                        const std::string& tensor) {
  GroupLayout layout;
  std::string why;
  switch (GroupLayout::resolve(shape, scheme, &layout, &why)) {
    case LayoutFault::None:
      return layout;
    case LayoutFault::ShapeMismatch:
      throw Error(ErrorCode::ShapeMismatch, "", tensor, why);
    case LayoutFault::UnsupportedScheme:
      break;
  }
  throw Error(ErrorCode::UnsupportedScheme, "", tensor, why);
}

}  // namespace qpack
