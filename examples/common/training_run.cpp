#include "training_run.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string_view>

namespace examples {

namespace {

namespace fs = std::filesystem;
namespace nn = fg::nn;

bool path_exists(const fs::path& path) {
  std::error_code error;
  return fs::exists(fs::symlink_status(path, error));  // a dangling link counts: it is in the way
}

std::string describe(const nn::NonFiniteValue& bad) {
  std::ostringstream out;
  out << "'" << bad.name << "' (element " << bad.index << " is " << bad.value << ")";
  return out.str();
}

// The step or epoch number at the start of a log row.
std::optional<std::int64_t> row_number(std::string_view line) {
  std::int64_t number = 0;
  const auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), number);
  if (error != std::errc() || end == line.data() || (end != line.data() + line.size() && *end != ','))
    return std::nullopt;
  return number;
}

}  // namespace

TrainingRun::TrainingRun(std::string program, RunOptions options, std::string log_header, bool writer)
    : program_(std::move(program)), options_(std::move(options)), log_header_(std::move(log_header)), writer_(writer) {
  if (!writes_files()) return;
  const fs::path dir = options_.out;
  std::error_code error;
  if (path_exists(dir) && !fs::is_directory(dir))
    fg::fail(program_, "--out ", options_.out, " exists and is not a directory");
  fs::create_directories(dir, error);
  if (error) fg::fail(program_, "cannot create the --out directory ", options_.out, ": ", error.message());

  const bool has_checkpoint = path_exists(checkpoint_path()), has_log = path_exists(log_path());
  const bool resumes_this_run =
      !options_.resume.empty() && has_checkpoint && fs::equivalent(options_.resume, checkpoint_path(), error);
  if (resumes_this_run && options_.overwrite)
    fg::fail(program_, "--overwrite starts a new run in ", options_.out, " but --resume continues the run there; give one");
  if (resumes_this_run || (!has_checkpoint && !has_log)) return;
  const std::string what = has_checkpoint && has_log ? "the checkpoint and the log" : has_checkpoint ? "the checkpoint" : "the log";
  if (!options_.overwrite)
    fg::fail(program_, "--out ", options_.out, " holds ", what, " of another run; continue it with --resume ",
             checkpoint_path(), ", replace it with --overwrite, or choose another --out");
  // Removed at the first write: a run that fails before its first step leaves the old one whole.
  overwrite_pending_ = true;
}

void TrainingRun::remove_overwritten_run() {
  if (!overwrite_pending_) return;
  overwrite_pending_ = false;
  std::error_code error;
  for (const std::string& path : {checkpoint_path(), log_path()})
    if (fs::remove(path, error); error) fg::fail(program_, "--overwrite: cannot remove ", path, ": ", error.message());
  std::printf("replaced the run in %s (--overwrite)\n", options_.out.c_str());
}

std::string TrainingRun::checkpoint_path() const { return (fs::path(options_.out) / "checkpoint.safetensors").string(); }
std::string TrainingRun::log_path() const { return (fs::path(options_.out) / "log.csv").string(); }

std::int64_t TrainingRun::resume(const fg::SafetensorsFile& checkpoint, nn::Module& model, nn::Optimizer& optimizer,
                                 const std::map<std::string, fg::Generator*>& rngs, std::int64_t steps_per_row) {
  const std::int64_t step = nn::load_checkpoint(checkpoint, options_.resume, model, optimizer, rngs).step;
  if (!options_.allow_nonfinite)
    if (const auto bad = nn::find_nonfinite(nn::training_state(model, optimizer)))
      fg::fail(program_, "the checkpoint ", options_.resume, " holds a non-finite value in ", describe(*bad),
               "; it cannot be resumed (--allow-nonfinite resumes it anyway)");
  std::error_code error;
  if (!options_.out.empty() && path_exists(checkpoint_path()) &&
      fs::equivalent(options_.resume, checkpoint_path(), error))
    saved_step_ = step;
  if (writes_files()) trim_log(step / steps_per_row);
  return step;
}

// Keeps the header and the rows numbered in increasing order up to
// last_row; drops what follows: rows the checkpoint has not seen, a line cut
// short by a kill, a second run's rows appended after the first's.
void TrainingRun::trim_log(std::int64_t last_row) {
  if (!path_exists(log_path())) return;
  const std::string text = fg::read_file_contents(program_, log_path());
  const std::size_t header_end = text.find('\n');
  if (header_end == std::string::npos && log_header_.rfind(text, 0) == 0) {  // cut inside the header: no row
    checked_write([&] { fg::replace_file_contents(program_, log_path(), ""); });
    return;
  }
  if (std::string_view(text).substr(0, header_end) != log_header_)
    fg::fail(program_, log_path(), " starts with \"", std::string_view(text).substr(0, std::min<std::size_t>(header_end, 80)),
             "\", not the header \"", log_header_, "\": it is not this program's log; move it away or choose another --out");
  std::size_t kept = header_end + 1;
  for (std::int64_t previous = 0; kept < text.size();) {
    const std::size_t newline = text.find('\n', kept);
    if (newline == std::string::npos) break;
    const auto number = row_number(std::string_view(text).substr(kept, newline - kept));
    if (!number || *number <= previous || *number > last_row) break;
    previous = *number;
    kept = newline + 1;
  }
  if (kept == text.size()) return;
  checked_write([&] { fg::replace_file_contents(program_, log_path(), std::string_view(text).substr(0, kept)); });
  std::printf("%s: dropped what was logged after the checkpoint (%zu bytes after row %lld)\n", log_path().c_str(),
              text.size() - kept, static_cast<long long>(last_row));
}

void TrainingRun::check_step(std::int64_t step, double loss, double grad_norm) const {
  if (options_.allow_nonfinite || (std::isfinite(loss) && std::isfinite(grad_norm))) return;
  std::ostringstream reason;
  reason << "step " << step << ": the loss (" << loss << ") or the gradient norm (" << grad_norm
         << ") is non-finite, so the step's update was not applied (lower --lr, or pass --allow-nonfinite to train "
            "on regardless)";
  stop(reason.str());
}

void TrainingRun::check_parameters(std::int64_t step, const nn::Module& model) const {
  if (options_.allow_nonfinite) return;
  if (const auto bad = nn::find_nonfinite(model.named_parameters()))
    stop("step " + std::to_string(step) + ": the update made parameter " + describe(*bad) +
         " non-finite (lower --lr, or pass --allow-nonfinite to train on regardless)");
}

void TrainingRun::log_row(const std::string& row) {
  if (!writes_files()) return;
  remove_overwritten_run();
  std::error_code error;
  const bool fresh = !path_exists(log_path()) || fs::file_size(log_path(), error) == 0;
  const std::string text = (fresh ? log_header_ + "\n" : "") + row + "\n";
  checked_write([&] { fg::append_to_file(program_, log_path(), text); });
}

void TrainingRun::save(std::int64_t step, const nn::Module& model, const nn::Optimizer& optimizer,
                       const std::map<std::string, fg::Generator*>& rngs, const std::string& config) {
  if (options_.out.empty()) return;
  if (!options_.allow_nonfinite)
    if (const auto bad = nn::find_nonfinite(nn::training_state(model, optimizer)))
      stop("step " + std::to_string(step) + ": not saved, the state holds a non-finite value in " + describe(*bad));
  if (writer_) {
    remove_overwritten_run();
    const std::map<std::string, const fg::Generator*> const_rngs(rngs.begin(), rngs.end());
    checked_write([&] { nn::save_checkpoint(checkpoint_path(), model, optimizer, step, const_rngs, config); });
  }
  saved_step_ = step;  // on every rank, for the messages
}

template <class Write>
void TrainingRun::checked_write(const Write& write) {
  try {
    write();
  } catch (const fg::Error& error) {
    stop(error.what());
  }
}

void TrainingRun::stop(const std::string& reason) const {
  fg::fail(program_, reason, "; training stopped: ", intact_checkpoint_note());
}

std::string TrainingRun::intact_checkpoint_note() const {
  if (options_.out.empty()) return "nothing was written (no --out)";
  if (saved_step_ < 0) return "no checkpoint of this run was saved in " + options_.out + " yet";
  return "the checkpoint of step " + std::to_string(saved_step_) + " in " + checkpoint_path() +
         " is intact (continue with --resume " + checkpoint_path() + ")";
}

void check_model_shape(const std::string& program, std::int64_t embd, std::int64_t heads) {
  if (heads > embd || embd % heads != 0)
    fg::fail(program, "--heads ", heads, " must divide --embd ", embd, " (each head gets --embd / --heads features)");
}

void check_training_memory(const std::string& program, const std::string& flags, double parameters,
                           std::int64_t tokens_per_step, std::int64_t layers, std::int64_t width) {
  // Each rank on this host holds the whole state and its share of the activations.
  const fg::dist::Communicator& comm = fg::dist::Communicator::world();
  const double state = 16.0 * parameters * comm.local_size();
  const double activations = 4.0 * 16.0 * static_cast<double>(tokens_per_step) * static_cast<double>(layers) *
                             static_cast<double>(width) * comm.local_size() / comm.size();
  const auto available = static_cast<double>(fg::available_memory_bytes());
  if (state + activations <= available) return;
  std::ostringstream message;
  message << "these sizes (" << flags << ") need at least " << fg::format_bytes(state + activations)
          << " to train: " << parameters << " parameters (" << fg::format_bytes(state)
          << " for weights, gradients and AdamW state) and " << fg::format_bytes(activations)
          << " of activations per step; " << fg::format_bytes(available) << " of memory are available";
  fg::fail(program, message.str());
}

}  // namespace examples
