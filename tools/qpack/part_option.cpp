#include "part_option.hpp"

#include <cstdlib>

#include "qpack/format/error.hpp"

namespace qpack::cli {

namespace {

Error usage(const std::string& why) { return Error(ErrorCode::InvalidArgument, "", "", why); }

// A whole decimal number, no sign, no spaces; `what` names it in the error.
size_t parse_count(const std::string& text, const std::string& what) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos)
    throw usage(what + " must be a whole number, not '" + text + "'");
  return size_t(std::stoul(text));
}

}  // namespace

PartSpec parse_part_option(const std::string& text, size_t parts,
                           const std::function<const char*(const char*)>& env_in) {
  const std::function<const char*(const char*)> env =
      env_in ? env_in : [](const char* name) -> const char* { return std::getenv(name); };
  PartSpec p;
  if (text != "auto") {
    const size_t slash = text.find('/');
    if (slash == std::string::npos)
      throw usage("--part must be K/N (K from 0 to N-1) or 'auto', not '" + text + "'");
    p.index = parse_count(text.substr(0, slash), "--part's K");
    p.count = parse_count(text.substr(slash + 1), "--part's N");
    if (parts && parts != p.count)
      throw usage("--parts " + std::to_string(parts) + " contradicts --part " + text);
  } else {
    const char* slurm_id = env("SLURM_ARRAY_TASK_ID");
    const char* k8s_index = env("JOB_COMPLETION_INDEX");
    if (slurm_id && k8s_index)
      throw usage(
          "--part auto: both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set: give --part "
          "K/N");
    if (slurm_id) {
      const char* count = env("SLURM_ARRAY_TASK_COUNT");
      if (!count)
        throw usage(
            "--part auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (an old "
            "Slurm?): give --part K/N");
      const size_t id = parse_count(slurm_id, "SLURM_ARRAY_TASK_ID");
      const char* min_text = env("SLURM_ARRAY_TASK_MIN");
      const size_t min = min_text ? parse_count(min_text, "SLURM_ARRAY_TASK_MIN") : 0;
      p.count = parse_count(count, "SLURM_ARRAY_TASK_COUNT");
      if (id < min)
        throw usage("--part auto: SLURM_ARRAY_TASK_ID " + std::to_string(id) +
                    " is below SLURM_ARRAY_TASK_MIN " + std::to_string(min));
      p.index = id - min;
      if (const char* max_text = env("SLURM_ARRAY_TASK_MAX")) {
        const size_t max = parse_count(max_text, "SLURM_ARRAY_TASK_MAX");
        if (max + 1 != min + p.count)
          throw usage("--part auto: the array " + std::to_string(min) + "-" + std::to_string(max) +
                      " has " + std::to_string(p.count) + " tasks (SLURM_ARRAY_TASK_COUNT), not " +
                      std::to_string(max - min + 1) +
                      ": use a contiguous array without a step, --array=0-" +
                      std::to_string(p.count - 1));
      }
      if (parts && parts != p.count)
        throw usage("--parts " + std::to_string(parts) + " contradicts SLURM_ARRAY_TASK_COUNT " +
                    std::to_string(p.count));
    } else if (k8s_index) {
      p.index = parse_count(k8s_index, "JOB_COMPLETION_INDEX");
      const char* env_parts = env("QPACK_PARTS");
      if (!parts && !env_parts)
        throw usage(
            "--part auto in a Kubernetes Indexed Job needs the number of parts (the Job's "
            "completions): --parts N or QPACK_PARTS");
      p.count = parts ? parts : parse_count(env_parts, "QPACK_PARTS");
      if (parts && env_parts && parse_count(env_parts, "QPACK_PARTS") != parts)
        throw usage("--parts " + std::to_string(parts) + " contradicts QPACK_PARTS " + env_parts);
    } else {
      throw usage(
          "--part auto: no scheduler found: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor "
          "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give --part K/N");
    }
  }
  if (p.count == 0) throw usage("--part: the number of parts must be at least 1");
  if (p.index >= p.count)
    throw usage("--part: part " + std::to_string(p.index) + " of " + std::to_string(p.count) +
                " does not exist (parts count from 0 to " + std::to_string(p.count - 1) + ")");
  return p;
}

}  // namespace qpack::cli
