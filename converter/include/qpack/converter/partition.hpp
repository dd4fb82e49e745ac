// How a plan is split into shards or parts (docs/format.md section 11.5):
// contiguous runs of tensors in plan order, so that the shards, put one
// after another, are the single file's tensors in its order. Pure functions
// of the tensors' sizes: the same split on every machine and thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qpack {

// `parts` + 1 boundaries b[0] = 0 <= b[1] <= ... <= b[parts] = weights.size():
// part p holds tensors b[p] ... b[p+1]-1. Tensor i goes to part
// floor(parts * (2 * c_i + w_i) / (2 * W)) (at most parts - 1), with w_i its
// weight, c_i the weights before it and W their sum: the part its weight's
// midpoint falls in when [0, W) is cut into `parts` equal pieces (when W = 0,
// part floor(parts * i / n)). Parts may be empty when there are fewer
// tensors than parts.
std::vector<size_t> balanced_partition(const std::vector<uint64_t>& weights, size_t parts);

// Boundaries of runs whose weights add up to at most `max_weight`, each as
// long as it can be: a tensor starts a new run when the run so far is not
// empty and would grow past max_weight (so one tensor larger than
// max_weight is a run of its own). At least one run.
std::vector<size_t> capped_partition(const std::vector<uint64_t>& weights, uint64_t max_weight);

}  // namespace qpack
