#include "qpack/format/layout.hpp"

#include "qpack/format/error.hpp"

namespace qpack {

GroupLayout make_layout(const std::vector<int64_t>& shape, const QuantScheme& scheme,
                        const std::string& tensor) {
  GroupLayout layout;
  std::string why;
  switch (GroupLayout::resolve(shape, scheme, &layout, &why)) {
    case LayoutFault::None: return layout;
    case LayoutFault::ShapeMismatch: throw Error(ErrorCode::ShapeMismatch, "", tensor, why);
    case LayoutFault::UnsupportedScheme: break;
  }
  throw Error(ErrorCode::UnsupportedScheme, "", tensor, why);
}

std::string scheme_to_string(const QuantScheme& s) {
  std::string r = std::to_string(s.bits) + "b g";
  r += s.group_size == 0 ? std::string("all") : std::to_string(s.group_size);
  r += " ax" + std::to_string(s.axis);
  r += s.symmetric ? " sym" : " asym";
  r += std::string(" ") + dtype_name(s.scale_dtype);
  return r;
}

}  // namespace qpack
