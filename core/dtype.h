// Element types. Float kernels are written once as templates and dispatched
// on the runtime dtype with dispatch_floating().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "error.h"

namespace flowgrad {

enum class DType : std::uint8_t { Float32, Float64, Int64 };

constexpr DType kFloat32 = DType::Float32;
constexpr DType kFloat64 = DType::Float64;
constexpr DType kInt64 = DType::Int64;

constexpr std::size_t dtype_size(DType dtype) {
  return dtype == DType::Float32 ? 4 : 8;
}

constexpr std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
  }
  return "unknown";
}

constexpr bool is_floating(DType dtype) { return dtype != DType::Int64; }

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::Float32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::Float64; };
template <> struct DTypeOf<std::int64_t> { static constexpr DType value = DType::Int64; };
template <class T> constexpr DType dtype_of = DTypeOf<T>::value;

// Calls body.template operator()<T>() with T = float or double.
// Usage: dispatch_floating(x.dtype(), "exp", [&]<class T>() { ... });
template <class Body>
decltype(auto) dispatch_floating(DType dtype, std::string_view op, Body&& body) {
  switch (dtype) {
    case DType::Float32: return body.template operator()<float>();
    case DType::Float64: return body.template operator()<double>();
    default: break;
  }
  fail(op, "expected a float32 or float64 tensor, got ", dtype_name(dtype));
}

// Same, also accepting int64.
template <class Body>
decltype(auto) dispatch_all(DType dtype, Body&& body) {
  switch (dtype) {
    case DType::Float32: return body.template operator()<float>();
    case DType::Float64: return body.template operator()<double>();
    case DType::Int64: break;
  }
  return body.template operator()<std::int64_t>();
}

}  // namespace flowgrad
