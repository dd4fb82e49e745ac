// The CPU quantizer's blocking pool (converter/src/cpu/thread_pool.hpp):
// every index once, chunks in order, exceptions carried to the caller,
// nested and concurrent calls complete, and idle workers use no CPU.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu/thread_pool.hpp"

using qpack::cpu::parallel_chunks;
using qpack::cpu::parallel_for;
using qpack::cpu::run_tasks;

namespace {

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

TEST(ThreadPool, EveryIndexOnceForAwkwardSizes) {
  for (int threads : {1, 2, 3, 7, 16})
    for (int64_t n : {0, 1, 2, 5, 17, 1000, 4099}) {
      std::vector<std::atomic<int>> seen(size_t(n + 1));
      for (auto& s : seen) s = 0;
      parallel_for(threads, n, [&](int64_t i) { seen[size_t(i)]++; });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[size_t(i)], 1) << threads << " " << n;
      ASSERT_EQ(seen[size_t(n)], 0);
    }
}

TEST(ThreadPool, ChunksAreContiguousAndInTaskOrder) {
  const int64_t n = 1003;
  for (int threads : {2, 3, 5}) {
    std::vector<int64_t> b(size_t(threads), -1), e(size_t(threads), -1);
    parallel_chunks(threads, n, [&](int64_t b0, int64_t e0, int t) {
      b[size_t(t)] = b0;
      e[size_t(t)] = e0;
    });
    EXPECT_EQ(b[0], 0);
    for (int t = 1; t < threads; ++t) EXPECT_EQ(b[size_t(t)], e[size_t(t - 1)]);
    EXPECT_EQ(e[size_t(threads - 1)], n);
  }
}

TEST(ThreadPool, TaskExceptionReachesTheCallerAndThePoolStillWorks) {
  EXPECT_THROW(run_tasks(3,
                         [](int t) {
                           if (t == 2) throw std::runtime_error("task 2");
                         }),
               std::runtime_error);
  std::atomic<int> sum{0};
  run_tasks(3, [&](int t) { sum += t + 1; });
  EXPECT_EQ(sum, 6);
}

TEST(ThreadPool, NestedAndConcurrentCallsComplete) {
  std::atomic<int64_t> total{0};
  run_tasks(2, [&](int) { parallel_for(2, 100, [&](int64_t i) { total += i; }); });
  EXPECT_EQ(total, 2 * 4950);
  total = 0;
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int r = 0; r < 50; ++r) parallel_for(3, 100, [&](int64_t i) { total += i; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total, 4 * 50 * 4950);
}

// Idle workers block instead of spinning: a process that has just used the
// pool takes (almost) no CPU time while its caller sleeps. OpenMP's default
// policy spins for a while here (libgomp: GOMP_SPINCOUNT); the bound is on
// CPU time, not wall time.
TEST(ThreadPool, IdleWorkersTakeNoCpuTime) {
  std::atomic<int64_t> sink{0};
  parallel_for(4, 1 << 16, [&](int64_t i) { sink += i & 1; });
  const double c0 = process_cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double used = process_cpu_seconds() - c0;
  EXPECT_LT(used, 0.05) << "idle pool workers used " << used << " s of CPU in 0.3 s";
  EXPECT_EQ(sink, 1 << 15);
}
