// The conversion pipeline. Tensors stream in source order: tensor n is
// submitted to the quantizer before tensor n-1 is waited for (so a device
// pipeline runs on from one tensor into the next), and writing tensor n-1
// overlaps quantizing tensor n (one writer task in flight). Three output
// buffer sets: n being quantized, n-1 finishing, n-2 being written. Each
// tensor's mapped source pages are released once written, so peak memory is
// about three tensors' outputs plus two tensors' source pages, not the
// model's size.
#include "qpack/converter/convert.hpp"

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/provenance.hpp"
#include "qpack/version.hpp"

namespace qpack {

namespace {

std::string scheme_json_name(const QuantScheme& s) { return dtype_name(s.scale_dtype); }

// A growable byte buffer that does not zero what it hands out (the
// quantizer writes every byte).
class ByteBuffer {
 public:
  uint8_t* get(uint64_t n) {
    if (n > cap_) {
      data_.reset(new uint8_t[n]);
      cap_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<uint8_t[]> data_;
  uint64_t cap_ = 0;
};

struct BufferSet {
  ByteBuffer codes, scales, zeros;
};

nlohmann::json plan_tensors_json(const std::vector<PlanEntry>& plan) {
  nlohmann::json t = nlohmann::json::array();
  for (const auto& p : plan) {
    nlohmann::json e = {{"name", p.name},
                        {"dtype", dtype_name(p.dtype)},
                        {"shape", p.shape},
                        {"action", p.action == TensorAction::Quantize ? "quantize" : "keep"},
                        {"reason", p.reason},
                        {"bytes_in", p.bytes_in},
                        {"bytes_out", p.bytes_out}};
    if (p.action == TensorAction::Quantize)
      e["scheme"] = {{"bits", p.scheme.bits},
                     {"group_size", p.scheme.group_size},
                     {"axis", p.scheme.axis},
                     {"symmetric", p.scheme.symmetric},
                     {"scale_dtype", scheme_json_name(p.scheme)}};
    t.push_back(e);
  }
  return t;
}

}  // namespace

nlohmann::json plan_to_json(const std::vector<PlanEntry>& plan) {
  size_t quantized = 0, kept = 0;
  uint64_t in = 0, out = 0, q_in = 0, q_out = 0;
  for (const auto& p : plan) {
    in += p.bytes_in;
    out += p.bytes_out;
    if (p.action == TensorAction::Quantize) {
      ++quantized;
      q_in += p.bytes_in;
      q_out += p.bytes_out;
    } else {
      ++kept;
    }
  }
  nlohmann::json j;
  j["dry_run"] = true;
  j["tensors_quantized"] = quantized;
  j["tensors_kept"] = kept;
  j["bytes_in"] = in;
  j["ratio"] = out ? double(in) / double(out) : 0.0;  // sections only: no file yet
  j["bytes_quantized_in"] = q_in;
  j["bytes_quantized_out"] = q_out;
  j["tensors"] = plan_tensors_json(plan);
  return j;
}

nlohmann::json ConvertSummary::to_json() const {
  nlohmann::json j;
  j["tensors_quantized"] = tensors_quantized;
  j["tensors_kept"] = tensors_kept;
  j["bytes_in"] = bytes_in;
  j["bytes_out"] = bytes_out;
  j["ratio"] = bytes_out ? double(bytes_in) / double(bytes_out) : 0.0;
  j["bytes_quantized_in"] = bytes_quantized_in;
  j["bytes_quantized_out"] = bytes_quantized_out;
  j["seconds"] = seconds;
  j["gbps"] = seconds > 0 ? double(bytes_in) / seconds / 1e9 : 0.0;
  j["device"] = device;
  j["tensors"] = plan_tensors_json(plan);
  return j;
}

namespace {

std::vector<PlanEntry> plan_for(const Checkpoint& ckpt, const Recipe& recipe) {
  std::vector<PlanEntry> plan;
  plan.reserve(ckpt.tensors().size());
  for (const auto& t : ckpt.tensors()) {
    PlanEntry e;
    e.name = t.info->name;
    e.dtype = t.info->dtype;
    e.shape = t.info->shape;
    e.bytes_in = t.info->nbytes();
    const TensorDecision d = decide(recipe, e.name, e.dtype, e.shape);
    e.action = d.action;
    e.reason = d.reason;
    if (d.action == TensorAction::Quantize) {
      GroupLayout L;
      try {
        L = make_layout(e.shape, d.scheme, e.name);
      } catch (const Error& err) {
        throw err.with_context(ckpt.path(), e.name);
      }
      e.scheme = d.scheme;
      e.scheme.group_size = L.group_size;
      e.scheme.axis = L.axis;
      e.bytes_out =
          L.codes_bytes() + L.params_bytes(d.scheme.scale_dtype) * (d.scheme.symmetric ? 1 : 2);
    } else {
      e.bytes_out = e.bytes_in;
    }
    plan.push_back(std::move(e));
  }
  return plan;
}

}  // namespace

std::vector<PlanEntry> make_plan(const std::string& source, const Recipe& recipe) {
  const auto ckpt = Checkpoint::open(source);
  return plan_for(*ckpt, recipe);
}

ConvertSummary convert_checkpoint(const std::string& source, const std::string& output,
                                  const ConvertOptions& options, TensorQuantizer& quantizer) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto ckpt = Checkpoint::open(source);
  for (const auto& f : ckpt->files())
    if (same_file(output, f->path()))
      throw Error(ErrorCode::InvalidArgument, output, "",
                  "the output would overwrite the input checkpoint " + f->path());
  if (same_file(output, source))
    throw Error(ErrorCode::InvalidArgument, output, "", "the output is the input");

  ConvertSummary summary;
  summary.plan = plan_for(*ckpt, options.recipe);
  summary.device = quantizer.description();
  ConvertProgress progress;
  progress.tensors_total = summary.plan.size();
  for (const auto& p : summary.plan) progress.bytes_total += p.bytes_in;

  WriterOptions wo;
  wo.codec = options.codec;
  wo.zstd_level = options.zstd_level;
  wo.overwrite = options.overwrite;
  wo.generator = std::string("qpack ") + QPACK_VERSION_STRING;
  QpackWriter writer(output, wo);
  // Before any tensor is read: the sections alone (uncompressed) must fit.
  // A zstd output's size is known only once written.
  if (options.codec == Codec::None) {
    uint64_t sections = 0;
    for (const auto& p : summary.plan) sections += p.bytes_out;
    check_free_space(output, QpackHeader::kSize + sections);
  }
  writer.set_source(ckpt->metadata(), ckpt->config());
  // Provenance (docs/format.md section 3.3, issue #12): what made this file
  // from which bytes. Nothing machine- or time-dependent, so the same input
  // and options still give the same file.
  {
    nlohmann::json opts = {
        {"codec", codec_name(options.codec)},
        {"nonfinite", options.nonfinite == NonFinitePolicy::Zero ? "zero" : "error"}};
    if (options.codec == Codec::Zstd) opts["zstd_level"] = options.zstd_level;
    writer.set_provenance({{"command", "convert"},
                           {"qpack", QPACK_VERSION_STRING},
                           {"options", std::move(opts)},
                           {"recipe", options.recipe.to_json()},
                           {"source_files", source_files_json(*ckpt, source)}});
  }

  BufferSet sets[3];
  std::future<void> pending;  // the write of the previous tensor
  auto wait_pending = [&] {
    if (pending.valid()) pending.get();
  };
  // Hands a tensor to the writer task once the previous write is done; the
  // task releases the tensor's source pages after writing it.
  auto write_async = [&](const CheckpointTensor& t, std::function<void()> add) {
    wait_pending();
    pending = std::async(std::launch::async, [&t, add = std::move(add)] {
      add();
      t.file->release(*t.info);
    });
  };
  // A tensor submitted to the quantizer and not yet waited for.
  struct InFlight {
    size_t idx;
    TensorQuantizer::Ticket ticket;
    QuantBuffers out;
  };
  std::optional<InFlight> prev;
  // Waits for the tensor in flight, then hands it to the writer.
  auto write_prev = [&] {
    if (!prev) return;
    const InFlight f = *prev;
    prev.reset();
    const PlanEntry& e = summary.plan[f.idx];
    const CheckpointTensor& t = ckpt->tensors()[f.idx];
    try {
      quantizer.wait(f.ticket);
    } catch (const Error& err) {
      throw err.with_context(t.file->path(), e.name);
    }
    write_async(t, [&writer, &e, out = f.out] {
      writer.add_quantized(e.name, e.dtype, e.shape, e.scheme, out.codes, out.scales, out.zeros);
    });
  };
  try {
    size_t n = 0;
    for (size_t idx = 0; idx < summary.plan.size(); ++idx) {
      const PlanEntry& e = summary.plan[idx];
      const CheckpointTensor& t = ckpt->tensors()[idx];
      progress.current = e.name;
      if (options.progress) options.progress(progress);
      if (e.action == TensorAction::Keep) {
        write_prev();  // the file keeps source order
        write_async(t, [&writer, &t, &e] {
          writer.add_raw(e.name, e.dtype, e.shape, t.data(), e.bytes_in);
        });
        ++summary.tensors_kept;
      } else {
        const GroupLayout L = make_layout(e.shape, e.scheme, e.name);
        // Free: its last user, tensor n-3, was written before tensor n-2's
        // write began.
        BufferSet& b = sets[n++ % 3];
        const uint64_t params = L.params_bytes(e.scheme.scale_dtype);
        QuantBuffers out{b.codes.get(L.codes_bytes()), b.scales.get(params),
                         e.scheme.symmetric ? nullptr : b.zeros.get(params)};
        t.file->will_need(*t.info);
        TensorQuantizer::Ticket ticket = 0;
        try {
          ticket =
              quantizer.submit({t.data(), e.dtype, e.name}, L, e.scheme, options.nonfinite, out);
        } catch (const Error& err) {
          throw err.with_context(t.file->path(), e.name);
        }
        write_prev();
        prev = InFlight{idx, ticket, out};
        ++summary.tensors_quantized;
        summary.bytes_quantized_in += e.bytes_in;
        summary.bytes_quantized_out += e.bytes_out;
      }
      summary.bytes_in += e.bytes_in;
      progress.tensors_done = idx + 1;
      progress.bytes_done += e.bytes_in;
    }
    write_prev();
    wait_pending();
    progress.current.clear();
    if (options.progress) options.progress(progress);
    writer.commit();
  } catch (...) {
    // Stop the quantizer and let the writer task finish with the buffers
    // before they go away; the writer's destructor then removes the
    // temporary file.
    quantizer.cancel();
    if (pending.valid()) {
      try {
        pending.get();
      } catch (...) {
      }
    }
    throw;
  }
  summary.bytes_out = writer.bytes_written();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace qpack
