// The qpack process's signal dispositions (libraries install none; they
// record their temporary files and memory maps in qpack/format/live_files.hpp).
#pragma once

namespace qpack::cli {

// SIGINT, SIGTERM, SIGHUP: remove the temporary output files, then die of
// the same signal (the shell sees 130, 143, 129). SIGBUS on a memory-mapped
// input (the file shrank while being read): "qpack: error: PATH: file changed
// while being read (truncated by another process)", remove the temporary
// files, exit 5. SIGXFSZ (ulimit -f) is ignored so that the write fails with
// a message instead.
void install_signal_handlers();

}  // namespace qpack::cli
