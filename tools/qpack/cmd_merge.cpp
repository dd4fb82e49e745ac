// qpack merge PART... --output OUT [--index-only]: the parts of a conversion
// in parts (or the shards of a set) as one .qpack or as an index over them.
// The logic is merge_qpack_parts (qpack/format/qpack_set.hpp).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "commands.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/qpack_set.hpp"
#include "qpack/format/text.hpp"

namespace qpack::cli {

Runner add_merge(CLI::App& app) {
  struct Args {
    std::vector<std::string> parts;
    std::string output;
    bool index_only = false, force = false, quiet = false, json = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand(
      "merge",
      "Put the parts of qpack convert --part K/N together: one .qpack, byte for byte what one "
      "process writes, or (--index-only) an index over them");
  sub->footer(
      "The parts may be given in any order; every part 0 ... N-1 of one set must be there once,\n"
      "made from the same source with the same options (their manifests' provenance and shard\n"
      "objects say so). The output appears only when complete. docs/scale-out.md.\n"
      "\n"
      "Exit codes: 0 ok, 2 usage, 3 parts from different sources or options (PartMismatch),\n"
      "a part missing (PartMissing) or given twice (PartDuplicate), 4 a damaged part\n"
      "(checksum, manifest), 5 I/O error (output exists without --force, disk full).");
  sub->add_option("PART", a->parts, "the part files (BASE-00001-of-0000N.qpack ...)")->required();
  sub->add_option("-o,--output", a->output,
                  "the .qpack to write, or with --index-only BASE.qpack.index.json in the parts' "
                  "folder")
      ->required();
  sub->add_flag("--index-only", a->index_only,
                "write only the set's index over the parts: no data copied");
  sub->add_flag("--force,-f,--overwrite", a->force, "replace OUTPUT if it exists");
  add_quiet_flag(sub, &a->quiet, "no summary");
  add_json_flag(sub, &a->json, "print the summary as JSON (docs/cli.md)");
  return [a] {
    MergeOptions o;
    o.index_only = a->index_only;
    o.overwrite = a->force;
    MergeSummary s;
    try {
      s = merge_qpack_parts(a->parts, a->output, o);
    } catch (const Error& e) {
      // A part that fails its .qpack checks is an integrity error (4).
      for (const std::string& p : a->parts)
        if (e.file() == p && e.code() != ErrorCode::PartMismatch &&
            e.code() != ErrorCode::PartDuplicate)
          rethrow_qpack_error(e, p);
      throw;
    }
    if (a->json) {
      std::printf("%s\n", s.to_json().dump(2).c_str());
    } else if (!a->quiet) {
      std::printf("qpack merge: %s (%s) -> %s%s, %s\n", count_of(s.parts, "part").c_str(),
                  count_of(s.tensors, "tensor").c_str(), escape_for_terminal(s.output).c_str(),
                  s.index_only ? " (index only)" : "", format_bytes(s.bytes_out).c_str());
    }
    return int(kExitOk);
  };
}

}  // namespace qpack::cli
