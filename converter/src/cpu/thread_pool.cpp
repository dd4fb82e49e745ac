// The blocking worker pool of thread_pool.hpp.
#include "cpu/thread_pool.hpp"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace qpack::cpu {
namespace {

class Pool {
 public:
  // Runs the tasks; false when the pool is busy (the caller runs them).
  bool run(int tasks, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock() || in_worker_) return false;
    std::vector<std::exception_ptr> errors(static_cast<size_t>(tasks));
    {
      std::lock_guard<std::mutex> lk(m_);
      while (int(workers_.size()) < tasks - 1) {
        const int id = int(workers_.size()) + 1;
        workers_.emplace_back([this, id] { work(id); });
      }
      task_ = &task;
      errors_ = &errors;
      tasks_ = tasks;
      remaining_ = tasks - 1;
      ++generation_;
    }
    wake_.notify_all();
    run_one(0);
    {
      std::unique_lock<std::mutex> lk(m_);
      done_.wait(lk, [this] { return remaining_ == 0; });
      task_ = nullptr;
      errors_ = nullptr;
    }
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    return true;
  }

 private:
  void run_one(int t) {
    try {
      (*task_)(t);
    } catch (...) {
      (*errors_)[size_t(t)] = std::current_exception();
    }
  }
  void work(int id) {
    in_worker_ = true;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      wake_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (id >= tasks_) continue;
      lk.unlock();
      run_one(id);
      lk.lock();
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  std::mutex run_mutex_;  // one run at a time
  std::mutex m_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* task_ = nullptr;
  std::vector<std::exception_ptr>* errors_ = nullptr;
  int tasks_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
  static thread_local bool in_worker_;
};
thread_local bool Pool::in_worker_ = false;

// Never destroyed: its workers wait for work until the process exits.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

}  // namespace

void run_tasks(int tasks, const std::function<void(int)>& task) {
  if (tasks <= 1 || !pool().run(tasks, task))
    for (int t = 0; t < tasks; ++t) task(t);
}

}  // namespace qpack::cpu
