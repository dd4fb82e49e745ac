// The exporters' writer thread: the folder writes of one block (a copy into
// the page cache, most of an export's system time) run while the next block
// is quantized, as the .qpack converter's writer task does, and across tensor
// boundaries. Writes are done in the order queued; buffers come from a pool
// and go back to it once written, so a steady export allocates (and faults
// in) its buffers once. What waits in the queue is bounded by the memory it
// holds (buffer capacities, borrowed bytes).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qpack::hf_export {

class WriteQueue {
 public:
  // write(folder tensor, byte offset, data, bytes), called on the queue's
  // thread. At most `max_pending_bytes` (and at least one task) wait at a
  // time: queuing more blocks until some are written.
  using Sink = std::function<void(size_t, uint64_t, const void*, uint64_t)>;
  WriteQueue(Sink sink, uint64_t max_pending_bytes);
  ~WriteQueue();  // drops what is still queued and joins the thread
  WriteQueue(const WriteQueue&) = delete;
  WriteQueue& operator=(const WriteQueue&) = delete;

  // A buffer of `n` bytes (contents unspecified) from the pool.
  std::vector<uint8_t> buffer(uint64_t n);
  // Queues writing `bytes` (owned; back to the pool once written).
  void write(size_t tensor, uint64_t offset, std::vector<uint8_t> bytes);
  // Queues writing `bytes` (owned) as runs of `run` bytes, run i at
  // `offset + i * stride`: a column range of every row of a row-major output
  // (GPTQ's qweight written from a slice of weight rows).
  void write_strided(size_t tensor, uint64_t offset, uint64_t stride, uint64_t run,
                     std::vector<uint8_t> bytes);
  // Queues writing memory the caller keeps valid until a later `then` task
  // runs or drain() returns (a mapped source tensor).
  void write_borrowed(size_t tensor, uint64_t offset, const void* data, uint64_t n);
  // Queues `f` to run on the queue's thread after the writes queued before.
  void then(std::function<void()> f);
  // Waits until everything queued is done. Each of these calls first
  // rethrows the first error a queued task threw (later tasks are dropped).
  void drain();

 private:
  struct Task {
    size_t tensor = 0;
    uint64_t offset = 0;
    std::vector<uint8_t> owned;
    const void* data = nullptr;
    uint64_t bytes = 0;
    uint64_t stride = 0, run = 0;  // strided: runs of `run` bytes, `stride` apart
    uint64_t cost = 0;             // memory held while queued: the buffer's capacity
    std::function<void()> then;
  };
  void push(Task t);
  void run();
  void rethrow_locked();

  // Buffers of at least this size are pooled.
  static constexpr uint64_t kPooledBytes = 1ull << 20;

  Sink sink_;
  uint64_t max_pending_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Task> tasks_;  // FIFO from head_
  size_t head_ = 0;
  uint64_t pending_ = 0;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::vector<std::vector<uint8_t>> pool_;
  uint64_t largest_ = 0;  // the largest pooled request so far
  std::thread thread_;
};

}  // namespace qpack::hf_export
