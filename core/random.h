// Generator: an explicit, seedable source of randomness. Every random tensor
// and every dropout mask takes one, so a run is reproducible from its seed.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "tensor.h"

namespace flowgrad {

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0);
  Generator(const Generator& other);  // copies the state; a move copies too
  Generator& operator=(const Generator& other);
  ~Generator();

  void manual_seed(std::uint64_t seed);
  std::uint64_t next_u64();  // the next output of the 64-bit Mersenne Twister (std::mt19937_64)
  double uniform();  // in [0, 1), 53 random bits
  double normal();   // standard normal (Box-Muller; independent of libstdc++'s)

  // The full engine state as text, for checkpoints; set_state restores it.
  std::string state() const;
  void set_state(const std::string& state);

 private:
  struct Engine;  // std::mt19937_64, kept out of this header (<random> is heavy)
  std::unique_ptr<Engine> engine_;
  bool has_spare_normal_ = false;
  double spare_normal_ = 0.0;
};

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011), the counter-based generator of PyTorch's CUDA dropout: four
// random 32-bit words from a counter and a key in ten rounds of multiply-
// and-xor. A pure function, so every element's bits can be computed on its
// own: in parallel, in any order, and again in backward.
constexpr std::uint32_t kPhiloxWeyl0 = 0x9E3779B9, kPhiloxWeyl1 = 0xBB67AE85;  // key increments per round

// One round on the counter words (c0, c1, c2, c3) with the round key (k0, k1).
inline void philox_round(std::uint32_t& c0, std::uint32_t& c1, std::uint32_t& c2, std::uint32_t& c3,
                         std::uint32_t k0, std::uint32_t k1) {
  const std::uint64_t p0 = std::uint64_t{0xD2511F53} * c0, p1 = std::uint64_t{0xCD9E8D57} * c2;
  const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
  const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
  c0 = n0;
  c1 = static_cast<std::uint32_t>(p1);
  c2 = n2;
  c3 = static_cast<std::uint32_t>(p0);
}

// The counter's words are (low, high) = (c0 + 2^32 c1, c2 + 2^32 c3).
inline std::array<std::uint32_t, 4> philox4x32(std::uint64_t key, std::uint64_t counter_low,
                                               std::uint64_t counter_high = 0) {
  std::uint32_t c0 = static_cast<std::uint32_t>(counter_low), c1 = static_cast<std::uint32_t>(counter_low >> 32);
  std::uint32_t c2 = static_cast<std::uint32_t>(counter_high), c3 = static_cast<std::uint32_t>(counter_high >> 32);
  std::uint32_t k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += kPhiloxWeyl0;
    k1 += kPhiloxWeyl1;
  }
  return {c0, c1, c2, c3};
}

// Uniform in [low, high) and normal(mean, std), float32 or float64.
Tensor rand(const Shape& shape, Generator& gen, DType dtype = kFloat32, double low = 0.0,
            double high = 1.0);
Tensor randn(const Shape& shape, Generator& gen, DType dtype = kFloat32, double mean = 0.0,
             double std = 1.0);
// Integers uniform in [low, high), int64.
Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator& gen);

}  // namespace flowgrad
