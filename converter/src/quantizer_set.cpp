// make_quantizer_set (qpack/converter/quantizer.hpp): several quantizers as
// one, each fed by a host thread of its own. A part's thread takes its
// tensors in the order they were given to it, submits the next one before
// waiting for the previous (so a device pipeline runs on from one tensor into
// the next, as convert does with a single quantizer), and reports each
// result through a promise that wait() collects.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "qpack/converter/quantizer.hpp"
#include "qpack/format/error.hpp"

namespace qpack {
namespace {

class QuantizerSet final : public TensorQuantizer {
 public:
  explicit QuantizerSet(std::vector<std::unique_ptr<TensorQuantizer>> parts) {
    if (parts.empty())
      throw Error(ErrorCode::InvalidArgument, "", "", "a quantizer set needs at least one part");
    for (auto& q : parts) {
      auto lane = std::make_unique<Lane>();
      lane->quantizer = std::move(q);
      lanes_.push_back(std::move(lane));
    }
    for (auto& lane : lanes_) lane->thread = std::thread([this, l = lane.get()] { run(*l); });
  }

  ~QuantizerSet() override {
    cancel();
    for (auto& lane : lanes_) {
      {
        std::lock_guard<std::mutex> g(lane->mutex);
        lane->stop = true;
      }
      lane->ready.notify_all();
      lane->thread.join();
    }
  }

  void quantize(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override {
    wait(submit(in, layout, scheme, policy, out));
  }

  Ticket submit(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override {
    const uint64_t bytes =
        uint64_t(layout.num_elements()) * uint64_t(std::max(1, dtype_bits(in.dtype) / 8));
    // The least-loaded part; ties to the lowest index, so a run is repeatable.
    Lane* best = nullptr;
    uint64_t best_load = 0;
    for (auto& lane : lanes_) {
      std::lock_guard<std::mutex> g(lane->mutex);
      if (!best || lane->outstanding < best_load) {
        best = lane.get();
        best_load = lane->outstanding;
      }
    }
    const Ticket t = next_++;
    Job job{t, in, layout, scheme, policy, out, bytes, {}};
    done_[t] = job.done.get_future();
    {
      std::lock_guard<std::mutex> g(best->mutex);
      best->outstanding += bytes;
      best->queue.push_back(std::move(job));
    }
    best->ready.notify_all();
    return t;
  }

  void wait(Ticket t) override {
    auto it = done_.find(t);
    if (it == done_.end())
      throw Error(ErrorCode::InvalidArgument, "", "", "wait on an unknown quantizer ticket");
    std::future<void> f = std::move(it->second);
    done_.erase(it);
    f.get();
  }

  void cancel() noexcept override {
    // Queued tensors are dropped (their promises broken); what a part is
    // running is stopped by that part's own cancel(), then every result is
    // collected so that no buffer is touched once this returns.
    for (auto& lane : lanes_) {
      std::lock_guard<std::mutex> g(lane->mutex);
      for (Job& j : lane->queue) {
        lane->outstanding -= j.bytes;
        j.done.set_exception(
            std::make_exception_ptr(Error(ErrorCode::InvalidArgument, "", j.in.name, "cancelled")));
      }
      lane->queue.clear();
      lane->cancelling = true;
    }
    for (auto& lane : lanes_) lane->quantizer->cancel();
    for (auto& [t, f] : done_) {
      try {
        f.get();
      } catch (...) {
      }
    }
    done_.clear();
    for (auto& lane : lanes_) {
      std::unique_lock<std::mutex> g(lane->mutex);
      lane->idle.wait(g, [&] { return !lane->busy; });
      lane->cancelling = false;
    }
  }

  std::string description() const override {
    std::string d = std::to_string(lanes_.size()) + " quantizers:";
    for (size_t i = 0; i < lanes_.size(); ++i)
      d += (i ? ", " : " ") + lanes_[i]->quantizer->description();
    return d;
  }

  int pipelines() const override { return int(lanes_.size()); }

 private:
  struct Job {
    Ticket ticket;
    QuantInput in;
    GroupLayout layout;
    QuantScheme scheme;
    NonFinitePolicy policy;
    QuantBuffers out;
    uint64_t bytes;
    std::promise<void> done;
  };
  struct Lane {
    std::unique_ptr<TensorQuantizer> quantizer;
    std::thread thread;
    std::mutex mutex;
    std::condition_variable ready, idle;
    std::deque<Job> queue;
    uint64_t outstanding = 0;  // source bytes queued or running
    bool busy = false, stop = false, cancelling = false;
  };

  // One part's thread: submit the next tensor, then finish the one before.
  void run(Lane& lane) {
    struct Running {
      Ticket inner;
      Job job;
    };
    std::optional<Running> prev;
    const auto finish = [&](Running& r) {
      try {
        lane.quantizer->wait(r.inner);
        r.job.done.set_value();
      } catch (...) {
        r.job.done.set_exception(std::current_exception());
      }
      std::lock_guard<std::mutex> g(lane.mutex);
      lane.outstanding -= r.job.bytes;
    };
    for (;;) {
      std::optional<Job> job;
      {
        std::unique_lock<std::mutex> g(lane.mutex);
        if (lane.queue.empty() && !prev) {
          lane.busy = false;
          lane.idle.notify_all();
          lane.ready.wait(g, [&] { return lane.stop || !lane.queue.empty(); });
          if (lane.stop && lane.queue.empty()) return;
        }
        if (!lane.queue.empty()) {
          job.emplace(std::move(lane.queue.front()));
          lane.queue.pop_front();
          lane.busy = true;
        }
      }
      if (!job) {  // nothing new: finish the tensor in flight
        finish(*prev);
        prev.reset();
        continue;
      }
      Ticket inner = 0;
      try {
        inner = lane.quantizer->submit(job->in, job->layout, job->scheme, job->policy, job->out);
      } catch (...) {
        job->done.set_exception(std::current_exception());
        std::lock_guard<std::mutex> g(lane.mutex);
        lane.outstanding -= job->bytes;
        job.reset();
      }
      if (prev) {
        finish(*prev);
        prev.reset();
      }
      if (job) prev.emplace(Running{inner, std::move(*job)});
    }
  }

  std::vector<std::unique_ptr<Lane>> lanes_;
  std::map<Ticket, std::future<void>> done_;
  Ticket next_ = 1;
};

}  // namespace

std::unique_ptr<TensorQuantizer> make_quantizer_set(
    std::vector<std::unique_ptr<TensorQuantizer>> parts) {
  if (parts.size() == 1) return std::move(parts.front());
  return std::make_unique<QuantizerSet>(std::move(parts));
}

}  // namespace qpack
