// --part K/N | auto for qpack convert (docs/scale-out.md): which part of a
// conversion in parts this process writes, given or read from the
// scheduler's environment (Slurm job arrays, Kubernetes Indexed Jobs).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace qpack::cli {

struct PartSpec {
  size_t index = 0, count = 0;  // part `index` (0-based) of `count`
};

// "K/N" (0 <= K < N), or "auto": from the environment `env` (getenv's
// answer for a name, null when unset). Slurm: K = SLURM_ARRAY_TASK_ID -
// SLURM_ARRAY_TASK_MIN (0 when unset), N = SLURM_ARRAY_TASK_COUNT, and
// SLURM_ARRAY_TASK_MAX, when set, must be MIN + N - 1 (an array with a step
// or gaps has other ids). Kubernetes: K = JOB_COMPLETION_INDEX, N = `parts`
// (--parts) or QPACK_PARTS. `parts` (0: not given) must agree with Slurm's
// count. Throws Error(InvalidArgument) saying which variable is wrong.
PartSpec parse_part_option(const std::string& text, size_t parts,
                           const std::function<const char*(const char*)>& env = nullptr);

}  // namespace qpack::cli
