// The CPU quantizer's threads: a small pool whose workers block (on a
// condition variable, i.e. a futex) between calls instead of spinning.
//
// Why not OpenMP: libgomp's idle workers spin for a while after each
// parallel region (GOMP_SPINCOUNT, read once when the library loads), and on
// a 2-core machine that spinning takes the core the convert pipeline's
// reader, checksum and writer threads need (measured: 18-20 % of the CPU
// time; docs/performance.md). The policy cannot be changed after libgomp has
// started, and qpack is a library: it must not depend on the user's
// OMP_WAIT_POLICY. So the quantizer's parallel loops run here, and the
// OpenMP environment does not affect them (OMP_NUM_THREADS still sets the
// default thread count, through omp_get_max_threads()).
//
// Deterministic bytes do not depend on the pool: every task writes its own
// disjoint outputs, and reductions are combined in task order by the caller.
#pragma once

#include <cstdint>
#include <functional>

namespace qpack::cpu {

// Runs task(t) for t = 0 .. tasks-1, task 0 on the calling thread and the
// others on pool workers; returns when all have finished. An exception from
// a task is rethrown here (the first by task index). When the pool is busy
// (another thread's call, or a call from inside a task) the tasks run one
// after another on the calling thread: the same results, never a deadlock.
void run_tasks(int tasks, const std::function<void(int)>& task);

// [0, n) split into `threads` contiguous chunks (the first n % threads one
// longer, as OpenMP's schedule(static)); body(begin, end, t) per chunk.
template <class Body>
void parallel_chunks(int threads, int64_t n, Body&& body) {
  if (n <= 0) return;
  const int nt = int(threads < 1 ? 1 : (n < threads ? n : threads));
  if (nt == 1) {
    body(int64_t(0), n, 0);
    return;
  }
  const int64_t q = n / nt, r = n % nt;
  run_tasks(nt, [&](int t) {
    const int64_t b = t * q + (t < r ? t : r);
    body(b, b + q + (t < r ? 1 : 0), t);
  });
}

// body(i) for every i in [0, n), chunked as parallel_chunks.
template <class Body>
void parallel_for(int threads, int64_t n, Body&& body) {
  parallel_chunks(threads, n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) body(i);
  });
}

}  // namespace qpack::cpu
