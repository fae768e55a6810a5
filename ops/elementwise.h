// Elementwise ops with NumPy-style broadcasting, float32 and float64.
// Scalars act as 0-dim tensors of the other operand's dtype.
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);

Tensor neg(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor reciprocal(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor abs(const Tensor& x);  // gradient sign(x), 0 at 0 (as PyTorch)
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the GPT-2 form.
Tensor gelu(const Tensor& x);
// Gradient passes where min <= x <= max, and is zero outside.
Tensor clamp(const Tensor& x, double min, double max);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);

// In-place updates for optimizers and initialisers. They are not
// differentiable: they refuse tensors that require grad while grad mode is
// on, and bump the version so saved copies of `self` are detected.
void add_(const Tensor& self, const Tensor& other, double alpha = 1.0);  // self += alpha*other
void mul_(const Tensor& self, double factor);
void fill_(const Tensor& self, double value);
void zero_(const Tensor& self);
void copy_(const Tensor& self, const Tensor& src);

}  // namespace flowgrad
