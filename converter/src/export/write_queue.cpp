#include "write_queue.hpp"

#include <algorithm>
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
  if (n < kPooledBytes) {  // small: the heap recycles these cheaply
    b.resize(size_t(n));
    return b;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    largest_ = std::max(largest_, n);
    // Pooled buffers smaller than this request would have to grow (a copy,
    // then fresh pages): they go, and a new one of the largest size asked
    // for so far comes instead, so a steady export settles on a few buffers
    // that fit every request.
    for (size_t i = 0; i < pool_.size();)
      if (pool_[i].capacity() < n) {
        pool_[i] = std::move(pool_.back());
        pool_.pop_back();
      } else {
        ++i;
      }
    if (!pool_.empty()) {
      b = std::move(pool_.back());
      pool_.pop_back();
    }
  }
  if (b.capacity() < n) b.reserve(size_t(largest_));
  b.resize(size_t(n));
  return b;
}

void WriteQueue::rethrow_locked() {
  if (error_) std::rethrow_exception(error_);
}

void WriteQueue::push(Task t) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || pending_ == 0 || pending_ + t.cost <= max_pending_; });
  rethrow_locked();
  pending_ += t.cost;
  tasks_.push_back(std::move(t));
  lock.unlock();
  cv_.notify_all();
}

void WriteQueue::write(size_t tensor, uint64_t offset, std::vector<uint8_t> bytes) {
  Task t;
  t.tensor = tensor;
  t.offset = offset;
  t.bytes = bytes.size();
  t.cost = std::max<uint64_t>(bytes.capacity(), 1);
  t.owned = std::move(bytes);
  push(std::move(t));
}

void WriteQueue::write_strided(size_t tensor, uint64_t offset, uint64_t stride, uint64_t run,
                               std::vector<uint8_t> bytes) {
  Task t;
  t.tensor = tensor;
  t.offset = offset;
  t.bytes = bytes.size();
  t.stride = stride;
  t.run = std::max<uint64_t>(run, 1);
  t.cost = std::max<uint64_t>(bytes.capacity(), 1);
  t.owned = std::move(bytes);
  push(std::move(t));
}

void WriteQueue::write_borrowed(size_t tensor, uint64_t offset, const void* data, uint64_t n) {
  Task t;
  t.tensor = tensor;
  t.offset = offset;
  t.data = data;
  t.bytes = n;
  t.cost = std::max<uint64_t>(n, 1);
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
        const uint8_t* p = static_cast<const uint8_t*>(t.owned.empty() ? t.data : t.owned.data());
        if (t.run == 0) {
          sink_(t.tensor, t.offset, p, t.bytes);
        } else {
          for (uint64_t i = 0; i * t.run < t.bytes; ++i)
            sink_(t.tensor, t.offset + i * t.stride, p + i * t.run,
                  std::min(t.run, t.bytes - i * t.run));
        }
      }
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    pending_ -= t.cost;
    if (t.owned.capacity() >= kPooledBytes) pool_.push_back(std::move(t.owned));
    if (err && !error_) error_ = err;
    if (error_) {  // later tasks are dropped
      for (size_t i = head_; i < tasks_.size(); ++i) pending_ -= tasks_[i].cost;
      tasks_.clear();
      head_ = 0;
    }
    cv_.notify_all();
  }
}

}  // namespace qpack::hf_export
