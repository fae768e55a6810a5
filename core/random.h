// Generator: an explicit, seedable source of randomness. Every random tensor
// and every dropout mask takes one, so a run is reproducible from its seed.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "tensor.h"

namespace flowgrad {

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0) : engine_(seed) {}

  void manual_seed(std::uint64_t seed) { engine_.seed(seed); }
  std::uint64_t next_u64() { return engine_(); }
  double uniform();  // in [0, 1), 53 random bits
  double normal();   // standard normal (Box-Muller; independent of libstdc++'s)

  // The full engine state as text, for checkpoints; set_state restores it.
  std::string state() const;
  void set_state(const std::string& state);

 private:
  std::mt19937_64 engine_;
  bool has_spare_normal_ = false;
  double spare_normal_ = 0.0;
};

// Uniform in [low, high) and normal(mean, std), float32 or float64.
Tensor rand(const Shape& shape, Generator& gen, DType dtype = kFloat32, double low = 0.0,
            double high = 1.0);
Tensor randn(const Shape& shape, Generator& gen, DType dtype = kFloat32, double mean = 0.0,
             double std = 1.0);
// Integers uniform in [low, high), int64.
Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator& gen);

}  // namespace flowgrad
