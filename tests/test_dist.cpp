// Data-parallel training: the single-process stand-in, the refusal of
// mpirun without MPI, and (in an MPI build) tests/dist_worker under
// `mpirun -np 2` against one process.
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

TEST_CASE("without mpirun the world is one rank and every collective leaves its tensor as it is") {
  const dist::Communicator& world = dist::Communicator::world();
  REQUIRE(world.rank() == 0);
  REQUIRE(world.size() == 1);
  REQUIRE(world.local_size() == 1);
  REQUIRE_FALSE(world.distributed());
  const Tensor t = tensor({1.0, 2.0, 3.0}, kFloat64);
  world.all_reduce(t, dist::ReduceOp::Average);
  world.broadcast(t);
  world.all_reduce_async(t).wait();
  world.barrier();
  REQUIRE(t.to_vector<double>() == std::vector<double>{1, 2, 3});
  REQUIRE(world.all_gather(t).shape() == Shape{1, 3});
  REQUIRE(world.all_gather(std::string("text")) == std::vector<std::string>{"text"});
  REQUIRE(world.all_reduce(2.5) == 2.5);
  REQUIRE_THROWS_WITH(world.all_reduce(t.narrow(0, 0, 3).expand({2, 3})),
                      Catch::Contains("[Communicator] MPI_Allreduce needs a defined contiguous tensor"));
  REQUIRE_THROWS_WITH(world.broadcast(t, 1), Catch::Contains("broadcast from rank 1 of 1"));

  // DataParallel over one rank changes nothing.
  Generator gen(1);
  nn::Linear layer(3, 2, gen, nn::LinearOptions{.init_std = 0.5, .dtype = kFloat64});
  dist::DataParallel ddp(layer, world);
  REQUIRE(ddp.bucket_count() == 0);
  sum(layer.forward(ones({4, 3}, kFloat64))).backward();
  const std::vector<double> grad = layer.weight.grad().to_vector<double>();
  ddp.finish();
  REQUIRE(layer.weight.grad().to_vector<double>() == grad);
}

TEST_CASE("a job started by mpirun is refused when flowgrad has no MPI, instead of training alone per rank") {
  if (dist::mpi_built()) {
    SUCCEED("this build has MPI: the refusal is tested by the build without it (scripts/test --sanitize)");
    return;
  }
  TempDir dir;
  // What mpirun tells each rank; the worker must not train as a lone rank then.
  const ProgramRun run = run_program("OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=1 " + std::string(DIST_WORKER_PATH),
                                     "--out " + dir.file("x.safetensors"), dir);
  INFO(run.output);
  REQUIRE(run.status != 0);
  REQUIRE_THAT(run.output, Catch::Contains("[Communicator] this process is one of 2 ranks started by mpirun") &&
                               Catch::Contains("built without MPI") && Catch::Contains("-Dmpi=enabled"));
  REQUIRE_FALSE(std::filesystem::exists(dir.file("x.safetensors")));
}

TEST_CASE("the programs refuse mpirun without MPI too, naming the cause") {
  if (dist::mpi_built()) {
    SUCCEED("this build has MPI: the refusal is tested by the build without it (scripts/test --sanitize)");
    return;
  }
  TempDir dir;
  const ProgramRun run = run_program("OMPI_COMM_WORLD_SIZE=2 " + std::string(CHARLM_PATH),
                                     "train --steps 2 --batch 4 --block 16 --layers 1 --heads 2 --embd 16", dir);
  INFO(run.output);
  REQUIRE(run.status != 0);
  REQUIRE_THAT(run.output, Catch::Contains("charlm: [Communicator] this process is one of 2 ranks started by mpirun"));
}

#if FLOWGRAD_TEST_MPI

namespace {

// mpirun as CI runs it: as root, two ranks on two cores (or fewer), no binding.
const std::string kMpirun = "mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 ";

// |a - b| / |b| over all parameters as one vector (Euclidean norms): how far
// two runs' models drifted apart. (Single tensors whose gradient is nearly
// zero, such as the query and key biases, drift further in float32: AdamW
// divides their noise by their own tiny size.)
double relative_difference(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double difference = 0.0, norm = 0.0;
  for (const auto& [name, tensor] : a) {
    const std::vector<double> x = tensor.to_vector<double>(), y = b.at(name).to_vector<double>();
    for (std::size_t i = 0; i < x.size(); ++i) {
      difference += (x[i] - y[i]) * (x[i] - y[i]);
      norm += y[i] * y[i];
    }
  }
  return std::sqrt(difference / norm);
}

bool bitwise_equal(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  for (const auto& [name, tensor] : a)
    if (tensor.to_vector<double>() != b.at(name).to_vector<double>()) return false;
  return a.size() == b.size();
}

}  // namespace

namespace {

const std::string kCharlm = std::string(CHARLM_PATH) + " train --batch 4 --block 16 --layers 1 --heads 2 --embd 16 "
                                                       "--eval-every 2 --eval-batches 2 --sample-chars 0 --threads 1";

// log.csv's rows without the timing columns.
std::vector<std::vector<double>> log_values(const std::string& path) {
  std::vector<std::vector<double>> rows;
  std::istringstream lines(without_timing_columns(read_text_file(path)));
  std::string line;
  std::getline(lines, line);  // header
  while (std::getline(lines, line)) {
    std::vector<double> row;  // an empty cell (no validation at that step) reads as -1
    const std::string& kept = line;
    for (std::size_t start = 0; start <= kept.size();) {
      const std::size_t comma = std::min(kept.find(',', start), kept.size());
      row.push_back(comma == start ? -1.0 : std::stod(kept.substr(start, comma - start)));
      start = comma + 1;
    }
    rows.push_back(row);
  }
  return rows;
}


}  // namespace

TEST_CASE("charlm under mpirun -np 2: the single-process log, exact resumption, resumption with one rank") {
  TempDir dir;
  // Without dropout both runs see the same batches and the same model: equal up to float32 rounding.
  REQUIRE(run_program(kCharlm, "--steps 6 --dropout 0 --out " + dir.file("one"), dir).status == 0);
  const ProgramRun two = run_program(kMpirun + kCharlm, "--steps 6 --dropout 0 --out " + dir.file("two"), dir);
  INFO(two.output);
  REQUIRE(two.status == 0);
  REQUIRE_THAT(two.output, Catch::Contains("1 threads per rank, 2 ranks"));
  const auto one_rows = log_values(dir.file("one/log.csv")), two_rows = log_values(dir.file("two/log.csv"));
  REQUIRE(one_rows.size() == 6);
  REQUIRE(two_rows.size() == 6);
  for (std::size_t r = 0; r < 6; ++r) {
    REQUIRE(two_rows[r].size() == 3);
    for (std::size_t c = 0; c < 3; ++c) REQUIRE(two_rows[r][c] == Approx(one_rows[r][c]).epsilon(1e-5));
  }

  // With dropout (per-rank streams, saved for every rank): stopped at 3 and resumed under
  // np 2 logs what the straight np 2 run logs, digit for digit.
  REQUIRE(run_program(kMpirun + kCharlm, "--steps 6 --out " + dir.file("straight"), dir).status == 0);
  REQUIRE(run_program(kMpirun + kCharlm, "--steps 6 --stop-at 3 --out " + dir.file("resumed"), dir).status == 0);
  const std::string checkpoint = dir.file("resumed/checkpoint.safetensors");
  const auto generators = nn::read_checkpoint_info(checkpoint).generators;
  REQUIRE(std::find(generators.begin(), generators.end(), "dropout@1") != generators.end());
  const ProgramRun resumed =
      run_program(kMpirun + kCharlm, "--steps 6 --out " + dir.file("resumed") + " --resume " + checkpoint, dir);
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  REQUIRE(without_timing_columns(read_text_file(dir.file("resumed/log.csv"))) ==
          without_timing_columns(read_text_file(dir.file("straight/log.csv"))));

  // The np 2 checkpoint continues in one process: the schedule goes on to its end.
  REQUIRE(run_program(kMpirun + kCharlm, "--steps 6 --stop-at 3 --out " + dir.file("to_one"), dir).status == 0);
  const ProgramRun alone = run_program(kCharlm, "--steps 6 --out " + dir.file("to_one") + " --resume " +
                                                    dir.file("to_one/checkpoint.safetensors"),
                                       dir);
  INFO(alone.output);
  REQUIRE(alone.status == 0);
  REQUIRE(log_values(dir.file("to_one/log.csv")).size() == 6);
  REQUIRE(nn::read_checkpoint_info(dir.file("to_one/checkpoint.safetensors")).step == 6);
}

TEST_CASE("each rank's thread count defaults to the host's cores over its ranks") {
  TempDir dir;
  const ProgramRun run = run_program("env -u FLOWGRAD_NUM_THREADS " + kMpirun + std::string(CHARLM_PATH),
                                     "train --steps 1 --batch 2 --block 16 --layers 1 --heads 2 --embd 16 "
                                     "--sample-chars 0 --eval-batches 1",
                                     dir);
  INFO(run.output);
  REQUIRE(run.status == 0);
  const int expected = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 2);
  REQUIRE_THAT(run.output, Catch::Contains(std::to_string(expected) + " threads per rank, 2 ranks"));
}

TEST_CASE("data-parallel programs: an indivisible batch is refused, a rank's fault ends the job with the checkpoint intact") {
  TempDir dir;
  const ProgramRun odd = run_program(kMpirun + std::string(CHARLM_PATH), "train --steps 2 --batch 5 --block 16 --layers 1 "
                                                                         "--heads 2 --embd 16 --threads 1",
                                     dir);
  INFO(odd.output);
  REQUIRE(odd.status != 0);
  REQUIRE_THAT(odd.output, Catch::Contains("[charlm] --batch 5 is the global batch of all 2 ranks and must divide by them"));

  // Rank 1 fails before step 3; rank 0 saved step 2; no hang (timeout would exit 124).
  const ProgramRun fault = run_program("FLOWGRAD_FAULT_AT=1:3 timeout 120 " + kMpirun + kCharlm,
                                       "--steps 6 --save-every 2 --out " + dir.file("run"), dir);
  INFO(fault.output);
  REQUIRE(fault.status != 0);
  REQUIRE(WEXITSTATUS(fault.status) != 124);
  REQUIRE_THAT(fault.output, Catch::Contains("charlm: rank 1 of 2: [charlm] injected fault before step 3"));
  const std::string checkpoint = dir.file("run/checkpoint.safetensors");
  REQUIRE(nn::read_checkpoint_info(checkpoint).step == 2);
  // A rank killed by a signal ends the job too, and mpirun names it.
  const ProgramRun killed = run_program("FLOWGRAD_FAULT_AT=1:3:kill timeout 120 " + kMpirun + kCharlm,
                                        "--steps 6 --save-every 2 --out " + dir.file("killed"), dir);
  INFO(killed.output);
  REQUIRE(killed.status != 0);
  REQUIRE(WEXITSTATUS(killed.status) != 124);
  REQUIRE_THAT(killed.output, Catch::Contains("rank 1") && Catch::Contains("signal 9"));
  REQUIRE(nn::read_checkpoint_info(dir.file("killed/checkpoint.safetensors")).step == 2);
  // Resumed, it ends where a run without the fault ends.
  REQUIRE(run_program(kMpirun + kCharlm, "--steps 6 --out " + dir.file("run") + " --resume " + checkpoint, dir).status == 0);
  REQUIRE(run_program(kMpirun + kCharlm, "--steps 6 --out " + dir.file("clean"), dir).status == 0);
  REQUIRE(without_timing_columns(read_text_file(dir.file("run/log.csv"))) ==
          without_timing_columns(read_text_file(dir.file("clean/log.csv"))));
}

TEST_CASE("SIGUSR1 to mpirun stops every rank after the same step, saved and resumable") {
  TempDir dir;
  const std::string out = dir.file("run");
  // mpirun forwards SIGUSR1 to the ranks (Ctrl-C would make it SIGTERM, then SIGKILL).
  const std::string script = kMpirun + kCharlm + " --steps 100000 --out " + out + " & job=$!; " +
                             "while [ ! -s " + out + "/log.csv ] && kill -0 $job; do sleep 0.1; done; " +
                             "kill -USR1 $job; wait $job";
  const ProgramRun stopped = run_program("sh -c", "'" + script + "'", dir);
  INFO(stopped.output);
  REQUIRE(WEXITSTATUS(stopped.status) == 130);
  REQUIRE_THAT(stopped.output, Catch::Contains("interrupted: saved step"));
  const std::int64_t step = nn::read_checkpoint_info(out + "/checkpoint.safetensors").step;
  REQUIRE(step >= 1);
  REQUIRE(static_cast<std::int64_t>(log_values(out + "/log.csv").size()) == step);  // log and checkpoint agree
  const ProgramRun resumed = run_program(kMpirun + kCharlm, "--steps 100000 --stop-at " +
                                                                std::to_string(step + 2) + " --out " + out + " --resume " +
                                                                out + "/checkpoint.safetensors",
                                         dir);
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  REQUIRE(nn::read_checkpoint_info(out + "/checkpoint.safetensors").step == step + 2);
}

TEST_CASE("fashion and listops under mpirun -np 2 train as one process does, uneven last batches included") {
  TempDir dir;
  // 35 images in batches of 16: the last batch of each epoch (3 images) splits 1 + 2.
  const std::string data = " --data " + write_fashion_data_set(dir, "data", 28, 35, 10);
  const std::string fashion = std::string(FASHION_PATH) + " train --epochs 2 --batch 16 --lr 1e-2 --patch 7 --layers 1 "
                                                          "--heads 2 --embd 16 --threads 1" + data;
  REQUIRE(run_program(fashion, "--out " + dir.file("f1"), dir).status == 0);
  const ProgramRun f2 = run_program(kMpirun + fashion, "--out " + dir.file("f2"), dir);
  INFO(f2.output);
  REQUIRE(f2.status == 0);
  const auto f1_rows = log_values(dir.file("f1/log.csv")), f2_rows = log_values(dir.file("f2/log.csv"));
  REQUIRE(f1_rows.size() == 2);
  REQUIRE(f2_rows.size() == 2);
  for (std::size_t r = 0; r < 2; ++r) {
    REQUIRE(f2_rows[r][1] == Approx(f1_rows[r][1]).epsilon(1e-5));  // train loss
    REQUIRE(f2_rows[r][2] == f1_rows[r][2]);                        // test accuracy: same predictions
  }

  const std::string listops = std::string(LISTOPS_PATH) + " train --epochs 2 --train-size 40 --test-size 10 "
                                                          "--min-length 10 --max-length 30 --batch 8 --layers 1 "
                                                          "--heads 2 --embd 16 --threads 1";
  REQUIRE(run_program(listops, "--out " + dir.file("l1"), dir).status == 0);
  const ProgramRun l2 = run_program(kMpirun + listops, "--out " + dir.file("l2"), dir);
  INFO(l2.output);
  REQUIRE(l2.status == 0);
  const auto l1_rows = log_values(dir.file("l1/log.csv")), l2_rows = log_values(dir.file("l2/log.csv"));
  REQUIRE(l2_rows.size() == 2);
  for (std::size_t r = 0; r < 2; ++r) REQUIRE(l2_rows[r][1] == Approx(l1_rows[r][1]).epsilon(1e-5));
}

TEST_CASE("mpirun -np 2 trains as one process on the same global batch, and twice bit for bit") {
  TempDir dir;
  for (const std::string dtype : {"float64", "float32"}) {
    INFO(dtype);
    const std::string args = " --dtype " + dtype + " --bucket-bytes 4096 --out ";
    const ProgramRun one = run_program(DIST_WORKER_PATH, args + dir.file("one.safetensors"), dir);
    INFO(one.output);
    REQUIRE(one.status == 0);
    for (const std::string name : {"two_a", "two_b"}) {
      const ProgramRun two = run_program(kMpirun + DIST_WORKER_PATH, args + dir.file(name + ".safetensors"), dir);
      INFO(two.output);
      REQUIRE(two.status == 0);
    }
    const SafetensorsFile two = load_safetensors_file(dir.file("two_a.safetensors"));
    REQUIRE(two.metadata.at("ranks") == "2");
    REQUIRE(std::stoi(two.metadata.at("buckets")) > 3);
    const auto single = load_safetensors(dir.file("one.safetensors"));
    const double difference = relative_difference(two.tensors, single);
    INFO("relative difference " << difference);
    REQUIRE(difference <= (dtype == "float64" ? 1e-12 : 1e-5));
    REQUIRE(difference > 0.0);  // the sums really were split and reduced
    REQUIRE(bitwise_equal(two.tensors, load_safetensors(dir.file("two_b.safetensors"))));
  }
}

TEST_CASE("the first bucket's all-reduce starts while backward is still producing gradients") {
  TempDir dir;
  const ProgramRun run = run_program(kMpirun + DIST_WORKER_PATH,
                                     "--bucket-bytes 4096 --out " + dir.file("p.safetensors") + " --events " +
                                         dir.file("events.txt"),
                                     dir);
  INFO(run.output);
  REQUIRE(run.status == 0);
  std::ifstream events(dir.file("events.txt"));
  std::vector<std::string> kinds;
  for (std::string kind, index; events >> kind >> index;) kinds.push_back(kind);
  const auto first_start = std::find(kinds.begin(), kinds.end(), "BucketStarted");
  const auto last_ready = std::find(kinds.rbegin(), kinds.rend(), "GradientReady").base() - 1;
  const auto finish = std::find(kinds.begin(), kinds.end(), "FinishCalled");
  REQUIRE(first_start != kinds.end());
  REQUIRE(first_start < last_ready);  // overlap: communication began before the last gradient
  REQUIRE(last_ready < finish);       // and backward ended before finish() was called
  REQUIRE(std::count(kinds.begin(), kinds.end(), "BucketStarted") > 3);
}

TEST_CASE("data-parallel errors: an unused parameter is named, a failing rank ends the whole job") {
  TempDir dir;
  const ProgramRun unused =
      run_program(kMpirun + DIST_WORKER_PATH, "--unused --out " + dir.file("u.safetensors"), dir);
  INFO(unused.output);
  REQUIRE(unused.status != 0);
  REQUIRE_THAT(unused.output, Catch::Contains("[DataParallel] parameter 'extra' received no gradient") &&
                                  Catch::Contains("rank "));
  // Allowed, a parameter no rank used keeps no gradient, so AdamW skips it (no decay, no momentum
  // step) exactly as one process does: the runs agree.
  const ProgramRun allowed = run_program(kMpirun + DIST_WORKER_PATH,
                                         "--unused --allow-unused --out " + dir.file("a.safetensors"), dir);
  INFO(allowed.output);
  REQUIRE(allowed.status == 0);
  REQUIRE(run_program(DIST_WORKER_PATH, "--unused --out " + dir.file("one.safetensors"), dir).status == 0);
  const auto one = load_safetensors(dir.file("one.safetensors")), two = load_safetensors(dir.file("a.safetensors"));
  REQUIRE(relative_difference(two, one) <= 1e-12);
  REQUIRE(relative_difference({{"extra", two.at("extra")}}, {{"extra", one.at("extra")}}) <= 1e-12);
  // A rank that throws at step 2 brings its peer down: no hang (timeout 120 s would say 124).
  const ProgramRun failing = run_program("timeout 120 " + kMpirun + DIST_WORKER_PATH,
                                         "--throw-at 1:2 --out " + dir.file("f.safetensors"), dir);
  INFO(failing.output);
  REQUIRE(failing.status != 0);
  REQUIRE(WEXITSTATUS(failing.status) != 124);
  REQUIRE_THAT(failing.output, Catch::Contains("dist_worker: rank 1 of 2: [dist_worker] injected failure at step 2"));
  REQUIRE_FALSE(std::filesystem::exists(dir.file("f.safetensors")));
}

#endif
