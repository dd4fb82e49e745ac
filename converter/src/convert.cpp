// The conversion pipeline. Tensors stream in source order: tensor n is
// submitted to the quantizer before tensor n-1 is waited for (so a device
// pipeline runs on from one tensor into the next; a quantizer with P
// pipelines, several GPUs, gets P+1 tensors in flight), and writing the
// oldest tensor overlaps quantizing the next ones (one writer task in
// flight). Output buffer sets: the tensors in flight plus the one being
// written (three for one pipeline). Each
// tensor's mapped source pages are released once written, so peak memory is
// about three tensors' outputs plus two tensors' source pages, not the
// model's size.
#include "qpack/converter/convert.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <set>

#include "qpack/converter/partition.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/glob.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/provenance.hpp"
#include "qpack/format/qpack_set.hpp"
#include "qpack/format/text.hpp"
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
      e["scheme"] = {
          {"bits", p.scheme.bits},
          {"group_size", p.scheme.group_size},
          {"axis", p.scheme.axis},
          {"symmetric", p.scheme.symmetric},
          {"zero_point", p.scheme.symmetric ? nlohmann::json(nullptr)
                                            : nlohmann::json(zero_point_name(p.scheme.zero_point))},
          {"method", method_name(p.scheme.method)},
          {"scales", has_two_level(p.scheme) ? "two-level" : "one-level"},
          {"scale_dtype", scheme_json_name(p.scheme)}};
    t.push_back(e);
  }
  return t;
}

std::string rule_name(const TensorRule& r) {
  return r.origin.empty() ? "rule '" + r.pattern + "'" : r.origin;
}

// "'a' [4, 4], 'b' [2] and 3 more": the first few tensors of a list.
std::string some_tensors(const std::vector<const PlanEntry*>& entries) {
  constexpr size_t kShown = 3;
  std::string s;
  for (size_t i = 0; i < entries.size() && i < kShown; ++i) {
    if (i) s += i + 1 == entries.size() ? " and " : ", ";
    s += "'" + entries[i]->name + "' " + shape_to_string(entries[i]->shape);
  }
  if (entries.size() > kShown) s += " and " + std::to_string(entries.size() - kShown) + " more";
  return s;
}

WriterOptions writer_options(const ConvertOptions& options) {
  WriterOptions wo;
  wo.codec = options.codec;
  wo.zstd_level = options.zstd_level;
  wo.overwrite = options.overwrite;
  wo.generator = std::string("qpack ") + QPACK_VERSION_STRING;
  return wo;
}

double ratio_or_zero(uint64_t source, uint64_t stored) {
  return compression_ratio(source, stored).value_or(0.0);
}

// Provenance (docs/format.md section 3.3): what made this file from which
// bytes. Nothing machine- or time-dependent, so the same input and options
// still give the same file.
nlohmann::json provenance_json(const Checkpoint& ckpt, const std::string& source,
                               const ConvertOptions& options, SourceHashes hashes) {
  nlohmann::json opts = {
      {"codec", codec_name(options.codec)},
      {"nonfinite", options.nonfinite == NonFinitePolicy::Zero ? "zero" : "error"}};
  if (options.codec == Codec::Zstd) opts["zstd_level"] = options.zstd_level;
  return {{"command", "convert"},
          {"qpack", QPACK_VERSION_STRING},
          {"options", std::move(opts)},
          {"recipe", options.recipe.to_json()},
          {"source_files", source_files_json(ckpt, source, hashes)}};
}

// Decides every tensor, resolves the schemes, and sizes the file.
ConvertPlan plan_for(const Checkpoint& ckpt, const std::string& source,
                     const ConvertOptions& options) {
  const Recipe& recipe = options.recipe;
  ConvertPlan plan;
  plan.tensors.reserve(ckpt.tensors().size());
  std::vector<size_t> rule_matches(recipe.rules.size(), 0), rule_decides(recipe.rules.size(), 0);
  std::vector<size_t> axis_missing;  // tensors kept for the default axis alone
  size_t default_axis_used = 0;      // tensors quantized on the default axis
  for (const auto& t : ckpt.tensors()) {
    PlanEntry e;
    e.name = t.info->name;
    e.dtype = t.info->dtype;
    e.shape = t.info->shape;
    e.bytes_in = t.info->nbytes();
    for (size_t i = 0; i < recipe.rules.size(); ++i)
      rule_matches[i] += glob_match(recipe.rules[i].pattern, e.name);
    const TensorDecision d = decide(recipe, e.name, e.dtype, e.shape);
    const TensorRule* rule = d.rule >= 0 ? &recipe.rules[size_t(d.rule)] : nullptr;
    if (rule) ++rule_decides[size_t(d.rule)];
    e.action = d.action;
    e.reason = d.reason;
    e.bytes_out = e.bytes_in;
    if (d.default_axis_missing) axis_missing.push_back(plan.tensors.size());
    if (d.action == TensorAction::Quantize) {
      const bool rule_axis = rule && rule->axis;
      default_axis_used += !rule_axis;
      // A rule can combine with the defaults into a scheme no quantizer
      // takes (two-level or a method with symmetric codes): refused here.
      const std::string why = validate_scheme(d.scheme);
      if (!why.empty())
        throw Error(ErrorCode::InvalidArgument, ckpt.path(), e.name,
                    (rule ? rule_name(*rule) + ": " : std::string()) + why);
      GroupLayout L;
      try {
        L = make_layout(e.shape, d.scheme, e.name);
      } catch (const Error& err) {
        if (rule_axis && err.code() == ErrorCode::UnsupportedScheme)
          throw Error(ErrorCode::InvalidArgument, ckpt.path(), e.name,
                      rule_name(*rule) + " sets group axis " + std::to_string(*rule->axis) +
                          ", which this " + std::to_string(e.shape.size()) + "-d tensor " +
                          shape_to_string(e.shape) + " does not have");
        throw err.with_context(ckpt.path(), e.name);
      }
      const uint64_t sections =
          L.codes_bytes() + L.params_bytes(d.scheme.scale_dtype) * (d.scheme.symmetric ? 1 : 2);
      if (L.group_size < kMinResolvedGroup) {
        e.action = TensorAction::Keep;
        e.reason = "axis " + std::to_string(L.axis) + " has " + std::to_string(L.axis_len) +
                   " elements: groups below the minimum of " + std::to_string(kMinResolvedGroup) +
                   " (kept)";
      } else if (sections >= e.bytes_in) {
        e.action = TensorAction::Keep;
        e.reason = "quantized it would not be smaller (" + std::to_string(sections) +
                   " bytes for " + std::to_string(e.bytes_in) + ") (kept)";
      } else {
        e.scheme = d.scheme;
        e.scheme.group_size = L.group_size;
        e.scheme.axis = L.axis;
        e.bytes_out = sections;
      }
    }
    if (e.action == TensorAction::Quantize) {
      ++plan.tensors_quantized;
      plan.bytes_quantized_in += e.bytes_in;
      plan.bytes_quantized_out += e.bytes_out;
    } else {
      ++plan.tensors_kept;
    }
    plan.bytes_in += e.bytes_in;
    plan.tensors.push_back(std::move(e));
  }

  if (!axis_missing.empty()) {
    std::vector<const PlanEntry*> missing;
    for (size_t i : axis_missing) missing.push_back(&plan.tensors[i]);
    const std::string axis = std::to_string(recipe.defaults.axis);
    if (default_axis_used == 0)
      throw Error(
          ErrorCode::InvalidArgument, ckpt.path(), "",
          "the default group axis " + axis +
              " does not exist in any tensor selected for quantization: " + some_tensors(missing) +
              (missing.size() == 1 ? " has" : " have") + " fewer dimensions");
    plan.warnings.push_back("the default group axis " + axis + " does not exist in " +
                            count_of(missing.size(), "tensor") + " selected for quantization (" +
                            some_tensors(missing) + "): kept as they are");
  }
  for (size_t i = 0; i < recipe.rules.size(); ++i) {
    if (recipe.rules[i].preset) continue;
    if (rule_matches[i] == 0)
      plan.warnings.push_back(rule_name(recipe.rules[i]) + " matches no tensor");
    else if (rule_decides[i] == 0)
      plan.warnings.push_back(rule_name(recipe.rules[i]) + " matches " +
                              count_of(rule_matches[i], "tensor") +
                              ", each decided by an earlier rule");
  }
  if (plan.tensors_quantized == 0) {
    const std::string why =
        plan.tensors.empty()
            ? "the checkpoint holds no tensors"
            : "no tensor is quantized (all " + count_of(plan.tensors.size(), "tensor") + " kept)";
    if (options.require_quantized)
      throw Error(ErrorCode::NothingToQuantize, ckpt.path(), "",
                  why + ", and a quantized tensor is required");
    plan.warnings.push_back(why);
  }

  std::vector<PlannedQpackTensor> planned;
  planned.reserve(plan.tensors.size());
  for (const PlanEntry& e : plan.tensors)
    planned.push_back({e.name, e.dtype, e.shape, e.action == TensorAction::Quantize, e.scheme});
  plan.bytes_out = planned_qpack_file_size(
      planned, ckpt.metadata(), ckpt.config(),
      provenance_json(ckpt, source, options, SourceHashes::Placeholder), writer_options(options));
  plan.bytes_out_is_upper_bound = options.codec != Codec::None;
  return plan;
}

}  // namespace

double ConvertPlan::ratio() const { return ratio_or_zero(bytes_in, bytes_out); }

nlohmann::json ConvertPlan::to_json() const {
  nlohmann::json j;
  j["dry_run"] = true;
  j["tensors_quantized"] = tensors_quantized;
  j["tensors_kept"] = tensors_kept;
  j["bytes_in"] = bytes_in;
  j["bytes_out"] = bytes_out;
  j["bytes_out_is_upper_bound"] = bytes_out_is_upper_bound;
  j["ratio"] = ratio();
  j["bytes_quantized_in"] = bytes_quantized_in;
  j["bytes_quantized_out"] = bytes_quantized_out;
  j["warnings"] = warnings;
  j["tensors"] = plan_tensors_json(tensors);
  return j;
}

double ConvertSummary::ratio() const { return ratio_or_zero(bytes_in, bytes_out); }

nlohmann::json ConvertStages::to_json() const {
  return {{"open", open},
          {"hash_source", hash_source},
          {"submit", submit},
          {"quantize_wait", quantize_wait},
          {"write_wait", write_wait},
          {"commit", commit},
          {"writer_write", write},
          {"writer_checksum", checksum},
          {"writer_compress", compress}};
}

nlohmann::json ConvertSummary::to_json() const {
  nlohmann::json j;
  j["tensors_quantized"] = tensors_quantized;
  j["tensors_kept"] = tensors_kept;
  j["bytes_in"] = bytes_in;
  j["bytes_out"] = bytes_out;
  j["ratio"] = ratio();
  j["bytes_quantized_in"] = bytes_quantized_in;
  j["bytes_quantized_out"] = bytes_quantized_out;
  j["seconds"] = seconds;
  j["stages"] = stages.to_json();
  j["gbps"] = seconds > 0 ? double(bytes_in) / seconds / 1e9 : 0.0;
  j["device"] = device;
  j["warnings"] = warnings;
  j["files"] = files;
  j["tensors"] = plan_tensors_json(plan);
  return j;
}

ConvertPlan make_plan(const std::string& source, const ConvertOptions& options) {
  const auto ckpt = Checkpoint::open(source);
  return plan_for(*ckpt, source, options);
}

namespace {

// Streams plan tensors [begin, end) into `writer` (the pipeline of the
// comment at the top of this file), adding to `summary` and `progress`.
void convert_range(const Checkpoint& ckpt, const std::vector<PlanEntry>& plan, size_t begin,
                   size_t end, const ConvertOptions& options, TensorQuantizer& quantizer,
                   QpackWriter& writer, ConvertProgress& progress, ConvertSummary& summary) {
  // Tensors submitted and not yet waited for, at most `depth` at once: one
  // per pipeline of the quantizer (several GPUs work on several tensors)
  // plus one, so that each pipeline runs on into its next tensor. One more
  // buffer set than that: the tensor being written.
  const size_t depth = size_t(std::max(1, quantizer.pipelines())) + 1;
  std::vector<BufferSet> sets(depth + 1);
  std::future<void> pending;  // the write of the previous tensor
  using clock = std::chrono::steady_clock;
  const auto since = [](clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
  };
  auto wait_pending = [&] {
    const auto t = clock::now();
    if (pending.valid()) pending.get();
    summary.stages.write_wait += since(t);
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
  std::deque<InFlight> in_flight;  // in source order
  // Waits for the oldest tensor in flight, then hands it to the writer.
  auto write_oldest = [&] {
    const InFlight f = in_flight.front();
    in_flight.pop_front();
    const PlanEntry& e = plan[f.idx];
    const CheckpointTensor& t = ckpt.tensors()[f.idx];
    const auto tw = clock::now();
    try {
      quantizer.wait(f.ticket);
      summary.stages.quantize_wait += since(tw);
    } catch (const Error& err) {
      throw err.with_context(t.file->path(), e.name);
    }
    write_async(t, [&writer, &e, out = f.out] {
      writer.add_quantized(e.name, e.dtype, e.shape, e.scheme, out.codes, out.scales, out.zeros);
    });
  };
  auto write_all = [&] {
    while (!in_flight.empty()) write_oldest();
  };
  try {
    size_t n = 0;
    for (size_t idx = begin; idx < end; ++idx) {
      const PlanEntry& e = plan[idx];
      const CheckpointTensor& t = ckpt.tensors()[idx];
      progress.current = e.name;
      if (options.progress) options.progress(progress);
      if (e.action == TensorAction::Keep) {
        write_all();  // the file keeps source order
        write_async(t, [&writer, &t, &e] {
          writer.add_raw(e.name, e.dtype, e.shape, t.data(), e.bytes_in);
        });
        ++summary.tensors_kept;
      } else {
        const GroupLayout L = make_layout(e.shape, e.scheme, e.name);
        // Free: its last user, tensor n-depth-1, was written before tensor
        // n-depth's write began, and at most depth-1 tensors are in flight.
        BufferSet& b = sets[n++ % sets.size()];
        const uint64_t params = L.params_bytes(e.scheme.scale_dtype);
        QuantBuffers out{b.codes.get(L.codes_bytes()), b.scales.get(params),
                         e.scheme.symmetric ? nullptr : b.zeros.get(params)};
        t.file->will_need(*t.info);
        TensorQuantizer::Ticket ticket = 0;
        const auto ts = clock::now();
        try {
          ticket =
              quantizer.submit({t.data(), e.dtype, e.name}, L, e.scheme, options.nonfinite, out);
          summary.stages.submit += since(ts);
        } catch (const Error& err) {
          throw err.with_context(t.file->path(), e.name);
        }
        in_flight.push_back(InFlight{idx, ticket, out});
        if (in_flight.size() >= depth) write_oldest();
        ++summary.tensors_quantized;
        summary.bytes_quantized_in += e.bytes_in;
        summary.bytes_quantized_out += e.bytes_out;
      }
      summary.bytes_in += e.bytes_in;
      ++progress.tensors_done;
      progress.bytes_done += e.bytes_in;
    }
    write_all();
    wait_pending();
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
}

// What one output file of a conversion holds: plan tensors [begin, end).
struct Piece {
  std::string path;
  size_t index = 0, begin = 0, end = 0;
};

// A part's provenance (docs/format.md section 11.3): the source files it
// reads tensors from are hashed, the others recorded with a null xxh3; part 0
// also hashes the files no part reads tensors from (config.json, a shard
// without tensors), so that the parts together hash every file once.
nlohmann::json part_source_files(const Checkpoint& ckpt, const std::string& source,
                                 const std::vector<size_t>& bounds, size_t part) {
  nlohmann::json files = source_files_json(ckpt, source, SourceHashes::Placeholder);
  std::set<std::string> mine, anyones;
  for (size_t i = 0; i < ckpt.tensors().size(); ++i) {
    const std::string name = file_name(ckpt.tensors()[i].file->path());
    anyones.insert(name);
    if (i >= bounds[part] && i < bounds[part + 1]) mine.insert(name);
  }
  const std::string root = source_root(source);
  for (nlohmann::json& f : files) {
    const std::string name = f.at("path").get<std::string>();
    if (mine.count(name) || (part == 0 && !anyones.count(name)))
      f["xxh3"] = checksum_to_hex(file_checksum64(root.empty() ? name : root + "/" + name));
    else
      f["xxh3"] = nullptr;
  }
  return files;
}

}  // namespace

ConvertSummary convert_checkpoint(const std::string& source, const std::string& output,
                                  const ConvertOptions& options, TensorQuantizer& quantizer) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto ckpt = Checkpoint::open(source);
  if (options.part_count > 0 && options.part_index >= options.part_count)
    throw Error(ErrorCode::InvalidArgument, output, "",
                "part " + std::to_string(options.part_index) + " of " +
                    std::to_string(options.part_count) + ": parts count from 0 to " +
                    std::to_string(options.part_count - 1));
  if (options.part_count > 0 && options.max_shard_bytes > 0)
    throw Error(ErrorCode::InvalidArgument, output, "",
                "a part is one shard of its set: --part and --max-shard-size do not go together");

  ConvertPlan plan = plan_for(*ckpt, source, options);
  ConvertSummary summary;
  summary.warnings = std::move(plan.warnings);
  summary.device = quantizer.description();

  // The files to write (docs/format.md section 11.5).
  std::vector<size_t> bounds = {0, plan.tensors.size()};
  if (options.part_count > 0) {
    std::vector<uint64_t> w;
    for (const PlanEntry& e : plan.tensors) w.push_back(e.bytes_in);
    bounds = balanced_partition(w, options.part_count);
  } else if (options.max_shard_bytes > 0) {
    std::vector<uint64_t> w;
    for (const PlanEntry& e : plan.tensors) w.push_back(e.bytes_out);
    bounds = capped_partition(w, options.max_shard_bytes);
  }
  const size_t count = bounds.size() - 1;
  const bool sharded = count > 1 || options.part_count > 0;
  std::vector<Piece> pieces;
  for (size_t k = 0; k < count; ++k) {
    if (options.part_count > 0 && k != options.part_index) continue;
    pieces.push_back(
        {sharded ? qpack_shard_path(output, k, count) : output, k, bounds[k], bounds[k + 1]});
  }
  const std::string index_path = qpack_set_index_path(output);
  const bool write_index = sharded && options.part_count == 0;
  // Refused before anything is written: an output over an input, an
  // existing output without overwrite.
  std::vector<std::string> outputs;
  for (const Piece& p : pieces) outputs.push_back(p.path);
  if (write_index) outputs.push_back(index_path);
  for (const std::string& out : outputs) {
    for (const auto& f : ckpt->files())
      if (same_file(out, f->path()))
        throw Error(ErrorCode::InvalidArgument, out, "",
                    "the output would overwrite the input checkpoint " + f->path());
    if (same_file(out, source))
      throw Error(ErrorCode::InvalidArgument, out, "", "the output is the input");
    // Only a regular file (or a link to one) is "already there": anything
    // else is refused by the writer with what it is, before a byte is written.
    std::error_code ec;
    if (!options.overwrite && std::filesystem::is_regular_file(out, ec))
      throw Error(ErrorCode::OutputExists, out, "", "output already exists");
  }

  const auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  summary.stages.open = since(t0);
  const auto th = std::chrono::steady_clock::now();
  nlohmann::json provenance =
      provenance_json(*ckpt, source, options,
                      options.part_count > 0 ? SourceHashes::Placeholder : SourceHashes::Compute);
  if (options.part_count > 0)
    provenance["source_files"] = part_source_files(*ckpt, source, bounds, options.part_index);
  summary.stages.hash_source = since(th);
  std::string set_id;
  if (sharded) {
    std::vector<std::string> names;
    for (const PlanEntry& e : plan.tensors) names.push_back(e.name);
    set_id = qpack_set_id(provenance, count, names);
  }

  ConvertProgress progress;
  for (const Piece& piece : pieces)
    for (size_t i = piece.begin; i < piece.end; ++i) {
      ++progress.tensors_total;
      progress.bytes_total += plan.tensors[i].bytes_in;
      summary.plan.push_back(plan.tensors[i]);
    }
  // Before any tensor is read: the whole output must fit. The plan's size is
  // exact without zstd and an upper bound with it; a part or shard needs at
  // most its sections plus the single file's header and manifest.
  {
    uint64_t all = 0, mine = 0;
    for (const PlanEntry& e : plan.tensors) all += e.bytes_out;
    for (const PlanEntry& e : summary.plan) mine += e.bytes_out + kQpackAlignment;
    const uint64_t overhead = plan.bytes_out > all ? plan.bytes_out - all : 0;
    check_free_space(output, sharded ? mine + overhead * pieces.size() : plan.bytes_out);
  }

  for (const Piece& piece : pieces) {
    QpackWriter writer(piece.path, writer_options(options));
    writer.set_source(ckpt->metadata(), ckpt->config());
    writer.set_provenance(provenance);
    if (sharded)
      writer.set_shard(
          qpack_shard_json(set_id, piece.index, count, piece.begin, plan.tensors.size()));
    convert_range(*ckpt, plan.tensors, piece.begin, piece.end, options, quantizer, writer, progress,
                  summary);
    writer.commit();
    const QpackWriter::Times wt = writer.times();
    summary.stages.write += wt.write;
    summary.stages.checksum += wt.checksum;
    summary.stages.compress += wt.compress;
    summary.stages.commit += wt.commit;
    summary.bytes_out += writer.bytes_written();
    summary.files.push_back(piece.path);
  }
  if (write_index) {
    MergeOptions mo;
    mo.index_only = true;
    mo.overwrite = options.overwrite;
    summary.bytes_out += merge_qpack_parts(summary.files, index_path, mo).bytes_out;
    summary.files.push_back(index_path);
  }
  progress.current.clear();
  if (options.progress) options.progress(progress);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace qpack
