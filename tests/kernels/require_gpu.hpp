// REQUIRE_GPU(): the first line of every gpu-labelled test; it skips the test
// (not fails it) where no CUDA device is usable, saying why, so CI without a
// GPU stays green and the device machine runs it.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "qpack/kernels/cuda_quant.hpp"

#define REQUIRE_GPU()                                                                      \
  do {                                                                                     \
    std::string why_;                                                                      \
    if (!::qpack::cuda::cuda_available(&why_)) GTEST_SKIP() << "no CUDA device: " << why_; \
  } while (0)
