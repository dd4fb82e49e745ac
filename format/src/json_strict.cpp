#include "json_strict.hpp"

#include <cstring>
#include <set>

#include "qpack/format/io.hpp"
#include "qpack/format/json.hpp"

namespace qpack::detail {

namespace {

// Thrown from inside the parser callback to stop at the first problem;
// nlohmann lets exceptions from the callback propagate.
struct StopParse {};

}  // namespace

std::string JsonParseResult::describe() const {
  switch (kind) {
    case Ok:
      return "ok";
    case Syntax:
      return "invalid JSON: " + message;
    case DuplicateKey: {
      std::string where;
      for (const auto& p : path) where += (where.empty() ? "" : ".") + p;
      return "duplicate key '" + key + "'" +
             (where.empty() ? std::string(" at the top level") : " in '" + where + "'");
    }
    case TooDeep:
      return "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
  }
  return "?";
}

JsonParseResult parse_json_strict(const char* begin, const char* end, nlohmann::json* out,
                                  int max_depth) {
  using nlohmann::json;
  JsonParseResult r;
  // nlohmann stops at a NUL byte as if the input ended there, which would
  // accept `{...}\0anything`. Valid JSON text never holds a raw NUL (inside
  // strings control characters must be escaped), so any NUL is an error.
  if (const void* nul = end > begin ? std::memchr(begin, 0, size_t(end - begin)) : nullptr) {
    r.kind = JsonParseResult::Syntax;
    r.message = "NUL byte at offset " + std::to_string(static_cast<const char*>(nul) - begin);
    *out = json();
    return r;
  }
  struct Frame {
    bool is_object;
    std::string key;  // the key this container is the value of ("" for arrays / top)
    std::set<std::string> keys;
  };
  std::vector<Frame> stack;
  std::string pending_key;
  auto cb = [&](int /*depth*/, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (int(stack.size()) >= max_depth) {
          r.kind = JsonParseResult::TooDeep;
          throw StopParse{};
        }
        stack.push_back(
            Frame{ev == json::parse_event_t::object_start,
                  stack.empty() || !stack.back().is_object ? std::string() : pending_key,
                  {}});
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!stack.empty() && !stack.back().keys.insert(k).second) {
          r.kind = JsonParseResult::DuplicateKey;
          r.key = k;
          for (size_t i = 1; i < stack.size(); ++i)
            if (!stack[i].key.empty()) r.path.push_back(stack[i].key);
          throw StopParse{};
        }
        pending_key = k;
        break;
      }
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    *out = json::parse(begin, end, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const StopParse&) {
    *out = json();
  } catch (const json::exception& e) {
    r.kind = JsonParseResult::Syntax;
    r.message = e.what();
    *out = json();
  }
  return r;
}

const char* json_type_name(const nlohmann::json& j) {
  if (j.is_number_unsigned() || j.is_number_integer()) return "integer";
  if (j.is_number_float()) return "number";
  return j.type_name();
}

std::string dump_lenient(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace qpack::detail

namespace qpack {

nlohmann::json parse_json(const std::string& text, const std::string& file, const std::string& what,
                          ErrorCode code) {
  nlohmann::json j;
  const detail::JsonParseResult r =
      detail::parse_json_strict(text.data(), text.data() + text.size(), &j);
  if (!r.ok()) throw Error(code, file, "", what + ": " + r.describe());
  return j;
}

nlohmann::json read_json_file(const std::string& path, const std::string& what, ErrorCode code) {
  return parse_json(read_text_file(path), path, what, code);
}

}  // namespace qpack
