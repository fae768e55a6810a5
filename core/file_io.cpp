#include "file_io.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace flowgrad {

namespace fs = std::filesystem;

std::string errno_message(int error) { return std::generic_category().message(error); }

FileDescriptor::~FileDescriptor() {
  if (fd >= 0) ::close(fd);
}

int FileDescriptor::close() {
  const int result = ::close(fd);
  fd = -1;
  return result;
}

// ---- sources ----

void ByteSource::check_range(std::uint64_t offset, std::uint64_t count, std::string_view what) const {
  if (offset > size_ || count > size_ - offset)
    ctx_.fail("file is truncated: ", what, " needs bytes [", offset, ", ", offset + count, ") of ", size_);
}

FileSource::FileSource(std::string_view op, const std::string& path) : ByteSource(op, path) {
  do {
    file_.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (file_.fd < 0 && errno == EINTR);
  if (file_.fd < 0) ctx_.fail("cannot open: ", errno_message(errno));
  struct stat info {};
  if (::fstat(file_.fd, &info) != 0) ctx_.fail("cannot stat: ", errno_message(errno));
  if (S_ISDIR(info.st_mode)) ctx_.fail("is a directory, not a file");
  if (!S_ISREG(info.st_mode)) ctx_.fail("not a regular file");
  size_ = static_cast<std::uint64_t>(info.st_size);
}

void FileSource::read(std::uint64_t offset, void* destination, std::uint64_t count, std::string_view what) {
  check_range(offset, count, what);
  auto* out = static_cast<char*>(destination);
  while (count > 0) {
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(count, 1u << 30));
    const ssize_t got = ::pread(file_.fd, out, chunk, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) ctx_.fail("reading ", what, " failed: ", errno_message(errno));
    // The size was checked against fstat: the file shrank while we read it.
    if (got == 0) ctx_.fail("file is truncated: it ends inside ", what, " at byte ", offset);
    out += got;
    offset += static_cast<std::uint64_t>(got);
    count -= static_cast<std::uint64_t>(got);
  }
}

MemorySource::MemorySource(std::string_view op, std::string_view bytes, std::string name)
    : ByteSource(op, std::move(name)), bytes_(bytes) {
  size_ = bytes.size();
}

void MemorySource::read(std::uint64_t offset, void* destination, std::uint64_t count, std::string_view what) {
  check_range(offset, count, what);
  if (count > 0) std::memcpy(destination, bytes_.data() + offset, static_cast<std::size_t>(count));
}

// ---- atomic writes ----

namespace {

// This host's name, as temporaries carry it: a file system shared between
// hosts holds their temporaries side by side, and a pid means something
// only on the host that made it.
std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string_view op, const std::string& path) : ctx_{op, path} {
  if (path.empty()) ctx_.fail("the path is empty");
  remove_stale_temporaries();
  static std::atomic<std::uint64_t> counter{0};
  const std::string stem = path + ".tmp." + host_name() + "." + std::to_string(::getpid()) + ".";
  for (int attempt = 0;; ++attempt) {
    temp_path_ = stem + std::to_string(counter++);
    file_.fd = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (file_.fd >= 0) break;
    const int error = errno;
    // A leftover of an earlier process with our pid, or an interrupted open.
    if ((error == EEXIST && attempt < 100) || error == EINTR) continue;
    temp_path_.clear();  // nothing of ours to delete
    if (error == ENOENT) ctx_.fail("the directory '", directory(), "' does not exist");
    ctx_.fail("cannot create a temporary file in '", directory(), "': ", errno_message(error));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::write(const void* data, std::uint64_t count) {
  const auto* in = static_cast<const char*>(data);
  while (count > 0) {
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(count, 1u << 30));
    const ssize_t written = ::write(file_.fd, in, chunk);
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) ctx_.fail("writing the temporary file '", temp_path_, "' failed: ", errno_message(errno));
    in += written;
    count -= static_cast<std::uint64_t>(written);
  }
}

void AtomicFileWriter::commit() {
  if (::fsync(file_.fd) != 0)
    ctx_.fail("fsync of the temporary file '", temp_path_, "' failed: ", errno_message(errno));
  if (file_.close() != 0)
    ctx_.fail("closing the temporary file '", temp_path_, "' failed: ", errno_message(errno));
  if (::rename(temp_path_.c_str(), ctx_.path.c_str()) != 0)
    ctx_.fail("cannot rename the temporary file '", temp_path_, "' into place: ", errno_message(errno));
  committed_ = true;
  // Best effort: persist the rename itself. The new file is in place either way.
  FileDescriptor dir;
  dir.fd = ::open(directory().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir.fd >= 0) ::fsync(dir.fd);
}

std::string AtomicFileWriter::directory() const {
  const fs::path parent = fs::path(ctx_.path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Deletes "<name>.tmp.<host>.<pid>.<n>" files of our target made on this host
// by processes that are gone. Best effort: a failure here must not stop the save.
void AtomicFileWriter::remove_stale_temporaries() const {
  const std::string prefix = fs::path(ctx_.path).filename().string() + ".tmp." + host_name() + ".";
  std::error_code error;
  for (fs::directory_iterator it(directory(), error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    pid_t pid = 0;
    const auto [dot, parsed] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
    if (parsed != std::errc() || dot == rest.data() + rest.size() || *dot != '.' || pid <= 0) continue;
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    std::error_code ignored;
    fs::remove(it->path(), ignored);
  }
}

// ---- whole-file helpers ----

void append_to_file(std::string_view op, const std::string& path, std::string_view bytes) {
  const FileContext ctx{op, path};
  FileDescriptor file;
  do {
    file.fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  } while (file.fd < 0 && errno == EINTR);
  if (file.fd < 0) ctx.fail("cannot open for appending: ", errno_message(errno));
  while (!bytes.empty()) {
    const ssize_t written = ::write(file.fd, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) ctx.fail("appending failed: ", errno_message(errno));
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
  if (file.close() != 0) ctx.fail("closing after appending failed: ", errno_message(errno));
}

void replace_file_contents(std::string_view op, const std::string& path, std::string_view bytes) {
  AtomicFileWriter out(op, path);
  out.write(bytes);
  out.commit();
}

std::string read_file_contents(std::string_view op, const std::string& path) {
  FileSource source(op, path);
  std::string contents;
  try {
    contents.resize(static_cast<std::size_t>(source.size()));
  } catch (const std::exception&) {  // bad_alloc, length_error
    source.context().fail("out of memory: cannot hold its ", source.size(), " bytes");
  }
  source.read(0, contents.data(), source.size(), "the contents");
  return contents;
}

}  // namespace flowgrad
