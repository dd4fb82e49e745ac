// What a signal handler needs to know about this process's files: the
// temporary output files that exist now (to remove them on SIGINT, SIGTERM,
// SIGHUP or SIGBUS) and the memory-mapped input files (to name the file whose
// pages vanished when SIGBUS arrives). The library records them; it installs
// no handler, because signal dispositions are process state that only a tool
// owns (docs/architecture.md). tools/qpack/signals.cpp walks these tables.
//
// Registration is thread-safe and lock-free; the two queries below it are
// async-signal-safe (fixed-size tables, atomics, no allocation, no locks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace qpack::live_files {

// Records a temporary file; returns its slot, or -1 when the table is full or
// the path is too long to store (the file then only loses the signal-time
// clean-up: the next run to the same output removes it, see io.hpp).
int add_temp_file(const std::string& path) noexcept;
void remove_temp_file(int slot) noexcept;

// Records a temporary folder (ModelFolderWriter's), which holds only regular
// files: the signal-time clean-up removes its files and then the folder.
// Returns its slot or -1, as add_temp_file.
int add_temp_folder(const std::string& path) noexcept;
void remove_temp_folder(int slot) noexcept;

// Records a read-only mapping [address, address + length) of `path`; returns
// its slot or -1 (full table: SIGBUS on it is then reported without a name).
int add_mapping(const void* address, uint64_t length, const std::string& path) noexcept;
void remove_mapping(int slot) noexcept;

// Async-signal-safe: unlink(2)s every recorded temporary file, then removes
// every recorded temporary folder (its entries, then rmdir(2)).
void unlink_temp_files() noexcept;

// Async-signal-safe: the path of the recorded mapping that overlaps
// [address, address + length), or nullptr. The string stays valid until that
// mapping is removed.
const char* mapping_path_at(const void* address, uint64_t length = 1) noexcept;

}  // namespace qpack::live_files
