#include "write_queue.hpp"

#include <utility>

namespace qpack::hf_export {

WriteQueue::WriteQueue(Sink sink, uint64_t max_pending_bytes)
    : sink_(std::move(sink)), max_pending_(max_pending_bytes), thread_([this] { run(); }) {}

WriteQueue::~WriteQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::vector<uint8_t> WriteQueue::buffer(uint64_t n) {
  std::vector<uint8_t> b;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The pooled buffer that fits best without growing, else the largest.
    size_t pick = pool_.size();
    for (size_t i = 0; i < pool_.size(); ++i) {
      const bool fits = pool_[i].capacity() >= n;
      if (pick == pool_.size()) {
        pick = i;
      } else if (fits != (pool_[pick].capacity() >= n)) {
        if (fits) pick = i;
      } else if (fits ? pool_[i].capacity() < pool_[pick].capacity()
                      : pool_[i].capacity() > pool_[pick].capacity()) {
        pick = i;
      }
    }
    if (pick < pool_.size()) {
      b = std::move(pool_[pick]);
      pool_.erase(pool_.begin() + std::ptrdiff_t(pick));
    }
  }
  b.resize(size_t(n));
  return b;
}

void WriteQueue::rethrow_locked() {
  if (error_) std::rethrow_exception(error_);
}

void WriteQueue::push(Task t) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || pending_ == 0 || pending_ + t.bytes <= max_pending_; });
  rethrow_locked();
  pending_ += t.bytes;
  tasks_.push_back(std::move(t));
  lock.unlock();
  cv_.notify_all();
}

void WriteQueue::write(size_t tensor, uint64_t offset, std::vector<uint8_t> bytes) {
  Task t;
  t.tensor = tensor;
  t.offset = offset;
  t.bytes = bytes.size();
  t.owned = std::move(bytes);
  push(std::move(t));
}

void WriteQueue::write_borrowed(size_t tensor, uint64_t offset, const void* data, uint64_t n) {
  Task t;
  t.tensor = tensor;
  t.offset = offset;
  t.data = data;
  t.bytes = n;
  push(std::move(t));
}

void WriteQueue::then(std::function<void()> f) {
  Task t;
  t.then = std::move(f);
  push(std::move(t));
}

void WriteQueue::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || (head_ == tasks_.size() && !busy_); });
  rethrow_locked();
}

void WriteQueue::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || head_ < tasks_.size(); });
    if (stop_) return;
    Task t = std::move(tasks_[head_++]);
    if (head_ == tasks_.size()) {
      tasks_.clear();
      head_ = 0;
    }
    busy_ = true;
    lock.unlock();
    std::exception_ptr err;
    try {
      if (t.then) {
        t.then();
      } else {
        const void* p = t.owned.empty() ? t.data : t.owned.data();
        sink_(t.tensor, t.offset, p, t.bytes);
      }
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    pending_ -= t.bytes;
    if (!t.owned.empty() || t.owned.capacity() > 0) pool_.push_back(std::move(t.owned));
    if (err && !error_) error_ = err;
    if (error_) {  // later tasks are dropped
      for (size_t i = head_; i < tasks_.size(); ++i) pending_ -= tasks_[i].bytes;
      tasks_.clear();
      head_ = 0;
    }
    cv_.notify_all();
  }
}

}  // namespace qpack::hf_export
