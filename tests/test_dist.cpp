// Data-parallel training: the single-process stand-in, the refusal of
// mpirun without MPI, and (in an MPI build) tests/dist_worker under
// `mpirun -np 2` against one process.
#include <sys/wait.h>

#include <fstream>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

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
  nn::Linear layer(3, 2, true, gen, 0.5, kFloat64);
  dist::DataParallel ddp(layer, world);
  REQUIRE(ddp.bucket_count() == 0);
  sum(layer.forward(ones({4, 3}, kFloat64))).backward();
  const std::vector<double> grad = layer.weight.grad().to_vector<double>();
  ddp.finish();
  REQUIRE(layer.weight.grad().to_vector<double>() == grad);
}

TEST_CASE("a job started by mpirun is refused when flowgrad has no MPI, instead of training alone per rank") {
  TempDir dir;
  // What mpirun tells each rank; the worker must not train as a lone rank then.
  const ProgramRun run = run_program("OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=1 " + std::string(DIST_WORKER_PATH),
                                     "--out " + dir.file("x.safetensors"), dir);
  if (dist::mpi_built()) {
    SUCCEED("this build has MPI: the refusal is tested by the build without it (scripts/test --sanitize)");
    return;
  }
  INFO(run.output);
  REQUIRE(run.status != 0);
  REQUIRE_THAT(run.output, Catch::Contains("[Communicator] this process is one of 2 ranks started by mpirun") &&
                               Catch::Contains("built without MPI") && Catch::Contains("-Dmpi=enabled"));
  REQUIRE_FALSE(std::filesystem::exists(dir.file("x.safetensors")));
}

#if FLOWGRAD_TEST_MPI

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
  REQUIRE_THAT(unused.output, Catch::Contains("[DataParallel] parameter 'unused' received no gradient") &&
                                  Catch::Contains("rank "));
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
