// A device that quantizes whole tensors from host memory into host buffers.
// convert() streams tensors through one of these; the CPU implementation is
// quantize_cpu, the CUDA one (kernels/) stages through pinned buffers and
// streams. Both must produce identical bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qpack/converter/quantize.hpp"

namespace qpack {

class TensorQuantizer {
 public:
  virtual ~TensorQuantizer() = default;
  // Same contract as quantize_reference (throws Error(NonFinite/RangeOverflow)
  // with the same messages; other failures as Error(Cuda/...)).
  virtual void quantize(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                        NonFinitePolicy policy, const QuantBuffers& out) = 0;

  // Pipelined use, for a caller with several tensors: submit() starts a
  // tensor and may return before it is done, so that the next tensor's
  // copies and kernels overlap this one's tail instead of the pipeline
  // draining at every tensor boundary. The source and the output buffers
  // must stay valid, and the outputs unread, until wait() on the ticket
  // returns. wait() throws what quantize() would have thrown for that tensor
  // (a failure of the device itself may surface from submit() or from the
  // wait of any tensor in flight at the time). Tickets may be waited in any
  // order, each once. The default runs quantize() inside submit().
  using Ticket = uint64_t;
  virtual Ticket submit(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                        NonFinitePolicy policy, const QuantBuffers& out) {
    quantize(in, layout, scheme, policy, out);
    return 0;
  }
  virtual void wait(Ticket) {}
  // Stops all submitted work and returns once none of it touches a source
  // or output buffer any more; results and errors are dropped and the
  // tickets are spent. For a caller unwinding from an error with tensors in
  // flight (their buffers are about to be freed).
  virtual void cancel() noexcept {}

  // "cpu (2 threads, avx2)" / "cuda:0 (NVIDIA H100 80GB HBM3)"
  virtual std::string description() const = 0;
  // How many tensors it works on at once (several devices: one each). The
  // converter keeps this many plus one submitted and unwaited.
  virtual int pipelines() const { return 1; }
};

std::unique_ptr<TensorQuantizer> make_cpu_quantizer(int threads);

// One quantizer over several (`--device cuda:all`: one per GPU). Each part
// gets a host thread of its own that submits its tensors in turn, so the
// parts run side by side however long a part's submit() takes; a tensor goes
// to the part with the fewest source bytes outstanding. Every part must give
// the same bytes (they all follow the spec), so the output does not depend
// on which part quantized which tensor. pipelines() is the number of parts;
// errors are those of the part that ran the tensor. `parts` must not be
// empty.
std::unique_ptr<TensorQuantizer> make_quantizer_set(
    std::vector<std::unique_ptr<TensorQuantizer>> parts);

}  // namespace qpack
