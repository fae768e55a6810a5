// File input and output for the readers and writers of core (safetensors,
// .npy, IDX) and for programs that keep files a run depends on:
//   - ByteSource: the bytes a reader parses, from a regular file (read with
//     pread, its size known before anything is allocated) or from memory;
//   - AtomicFileWriter: writes a temporary file next to the target, checks
//     every write, fsync and close, then renames it into place, so a failed
//     write leaves the previous file untouched;
//   - append_to_file / replace_file_contents: checked whole writes.
// Every failure throws a flowgrad::Error "[op] 'path': ..." naming the
// operation, the file and the system's reason.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "error.h"

namespace flowgrad {

// The op and the file (or buffer name) that every message of one read or write names.
struct FileContext {
  std::string_view op;
  std::string path;

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    flowgrad::fail(op, "'", path, "': ", parts...);
  }
};

std::string errno_message(int error);

// Owns a POSIX file descriptor.
struct FileDescriptor {
  int fd = -1;
  FileDescriptor() = default;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor();
  // Closes now and returns close()'s result (it can report delayed write errors).
  int close();
};

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  const FileContext& context() const { return ctx_; }
  std::uint64_t size() const { return size_; }
  // Reads exactly `count` bytes at `offset`; the range must lie within
  // size() (callers check lengths taken from the contents first).
  virtual void read(std::uint64_t offset, void* destination, std::uint64_t count, std::string_view what) = 0;

 protected:
  ByteSource(std::string_view op, std::string name) : ctx_{op, std::move(name)} {}
  void check_range(std::uint64_t offset, std::uint64_t count, std::string_view what) const;
  FileContext ctx_;
  std::uint64_t size_ = 0;
};

// A regular file; anything else (a directory, a pipe, a device) is refused.
class FileSource final : public ByteSource {
 public:
  FileSource(std::string_view op, const std::string& path);
  void read(std::uint64_t offset, void* destination, std::uint64_t count, std::string_view what) override;

 private:
  FileDescriptor file_;
};

// Bytes in memory (not copied: they must outlive the source).
class MemorySource final : public ByteSource {
 public:
  MemorySource(std::string_view op, std::string_view bytes, std::string name);
  void read(std::uint64_t offset, void* destination, std::uint64_t count, std::string_view what) override;

 private:
  std::string_view bytes_;
};

// Writes `path` atomically: the bytes go to "<path>.tmp.<host>.<pid>.<n>",
// and commit() makes them durable and renames the file over `path`. Until
// then `path` is untouched; without commit() (an exception) the temporary
// file is deleted. Temporary files of `path` left on this host by processes
// that no longer run (killed during a save) are deleted when the next writer
// of `path` starts; other hosts' are left to them.
class AtomicFileWriter {
 public:
  AtomicFileWriter(std::string_view op, const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, std::uint64_t count);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  // fsync, close, rename: each step checked.
  void commit();

 private:
  std::string directory() const;
  void remove_stale_temporaries() const;

  FileContext ctx_;
  std::string temp_path_;
  FileDescriptor file_;
  bool committed_ = false;
};

// Appends `bytes` to `path` (created if missing) and closes it, checking the
// write and the close: a full disk is an error, never a missing line.
void append_to_file(std::string_view op, const std::string& path, std::string_view bytes);
// Replaces the contents of `path` atomically (AtomicFileWriter).
void replace_file_contents(std::string_view op, const std::string& path, std::string_view bytes);
// The whole contents of a regular file (FileSource's checks).
std::string read_file_contents(std::string_view op, const std::string& path);

}  // namespace flowgrad
