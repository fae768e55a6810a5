#include "random.h"

#include <cmath>
#include <numbers>
#include <random>
#include <sstream>

namespace flowgrad {

struct Generator::Engine {
  std::mt19937_64 mt;
};

Generator::Generator(std::uint64_t seed) : engine_(std::make_unique<Engine>(Engine{std::mt19937_64(seed)})) {}
Generator::Generator(const Generator& other)
    : engine_(std::make_unique<Engine>(*other.engine_)), has_spare_normal_(other.has_spare_normal_),
      spare_normal_(other.spare_normal_) {}
Generator& Generator::operator=(const Generator& other) {
  if (this != &other) {
    *engine_ = *other.engine_;
    has_spare_normal_ = other.has_spare_normal_;
    spare_normal_ = other.spare_normal_;
  }
  return *this;
}
Generator::~Generator() = default;

void Generator::manual_seed(std::uint64_t seed) { engine_->mt.seed(seed); }

std::uint64_t Generator::next_u64() { return engine_->mt(); }

double Generator::uniform() {
  return static_cast<double>(engine_->mt() >> 11) * 0x1.0p-53;
}

double Generator::normal() {
  if (has_spare_normal_) {
    has_spare_normal_ = false;
    return spare_normal_;
  }
  double u1 = 0.0;
  while (u1 == 0.0) u1 = uniform();  // log(0) is not allowed
  double u2 = uniform();
  double radius = std::sqrt(-2.0 * std::log(u1));
  double angle = 2.0 * std::numbers::pi * u2;
  spare_normal_ = radius * std::sin(angle);
  has_spare_normal_ = true;
  return radius * std::cos(angle);
}

std::string Generator::state() const {
  std::ostringstream out;
  out << engine_->mt << ' ' << has_spare_normal_ << ' ';
  out.precision(17);
  out << std::hexfloat << spare_normal_;
  return out.str();
}

void Generator::set_state(const std::string& state) {
  std::istringstream in(state);
  std::mt19937_64 engine;
  bool has_spare = false;
  double spare = 0.0;
  in >> engine >> has_spare;
  std::string spare_text;
  in >> spare_text;
  if (in.fail()) fail("Generator::set_state", "the state string is not one written by state()");
  spare = std::strtod(spare_text.c_str(), nullptr);
  engine_->mt = engine;
  has_spare_normal_ = has_spare;
  spare_normal_ = spare;
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype, double low, double high) {
  if (!(low < high)) fail("rand", "expected low < high, got ", low, " and ", high);
  Tensor t = empty(shape, dtype);
  dispatch_floating(dtype, "rand", [&]<class T>() {
    T* out = t.data<T>();
    for (std::int64_t i = 0; i < t.numel(); ++i)
      out[i] = static_cast<T>(low + (high - low) * gen.uniform());
  });
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std) {
  if (!(std >= 0.0)) fail("randn", "expected std >= 0, got ", std);
  Tensor t = empty(shape, dtype);
  dispatch_floating(dtype, "randn", [&]<class T>() {
    T* out = t.data<T>();
    for (std::int64_t i = 0; i < t.numel(); ++i) out[i] = static_cast<T>(mean + std * gen.normal());
  });
  return t;
}

Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator& gen) {
  if (!(low < high)) fail("randint", "expected low < high, got ", low, " and ", high);
  Tensor t = empty(shape, kInt64);
  auto range = static_cast<std::uint64_t>(high - low);
  std::int64_t* out = t.data<std::int64_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i)
    out[i] = low + static_cast<std::int64_t>(gen.next_u64() % range);
  return t;
}

}  // namespace flowgrad
