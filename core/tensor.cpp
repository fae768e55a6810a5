#include "tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <new>
#include <ostream>
#include <type_traits>

#include "parallel.h"
#include "strided.h"

namespace flowgrad {

TensorImpl& Tensor::impl() const {
  if (!impl_) fail("Tensor", "this tensor is undefined (default-constructed or moved-from)");
  return *impl_;
}

std::int64_t Tensor::size(std::int64_t dim) const {
  return impl().shape[normalize_dim(dim, this->dim(), "size")];
}

std::int64_t Tensor::stride(std::int64_t dim) const {
  return impl().strides[normalize_dim(dim, this->dim(), "stride")];
}

bool Tensor::is_contiguous() const {
  std::int64_t expected = 1;
  for (std::size_t i = impl().shape.size(); i-- > 0;) {
    if (impl().shape[i] == 1) continue;  // the stride of a size-1 dim never matters
    if (impl().strides[i] != expected) return false;
    expected *= impl().shape[i];
  }
  return true;
}

bool Tensor::shares_storage_with(const Tensor& other) const {
  return defined() && other.defined() && storage() == other.storage();
}

Tensor from_blob(void* data, const Shape& shape, DType dtype, std::function<void(void*)> release) {
  const std::size_t nbytes = static_cast<std::size_t>(checked_numel(shape, "from_blob")) * dtype_size(dtype);
  if (data == nullptr && nbytes > 0)
    fail("from_blob", "data is null for a ", dtype_name(dtype), " tensor of shape ", shape_str(shape));
  if (reinterpret_cast<std::uintptr_t>(data) % dtype_size(dtype) != 0)
    fail("from_blob", "data at ", reinterpret_cast<std::uintptr_t>(data), " is not aligned to the ",
         dtype_size(dtype), " bytes of ", dtype_name(dtype), " (shape ", shape_str(shape), ")");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(data, nbytes, std::move(release));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor empty(const Shape& shape, DType dtype) {
  const std::size_t nbytes = static_cast<std::size_t>(checked_numel(shape, "empty")) * dtype_size(dtype);
  auto impl = std::make_shared<TensorImpl>();
  try {
    impl->storage = std::make_shared<Storage>(nbytes);
  } catch (const std::bad_alloc&) {
    fail("empty", "out of memory: cannot allocate ", nbytes, " bytes for a ", dtype_name(dtype),
         " tensor of shape ", shape_str(shape));
  }
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  dispatch_all(dtype, [&]<class T>() {
    T* out = t.data<T>();
    parallel_for(t.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
      std::fill(out + begin, out + end, static_cast<T>(value));
    });
  });
  return t;
}

Tensor zeros(const Shape& shape, DType dtype) { return full(shape, 0.0, dtype); }
Tensor ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }
Tensor zeros_like(const Tensor& like) { return zeros(like.shape(), like.dtype()); }
Tensor ones_like(const Tensor& like) { return ones(like.shape(), like.dtype()); }

Tensor arange(double start, double end, double step, DType dtype) {
  if (step == 0.0 || !std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step))
    fail("arange", "invalid range start=", start, " end=", end, " step=", step);
  const double steps = std::ceil((end - start) / step);
  if (!(steps <= static_cast<double>(kMaxTensorElements)))  // also catches nan
    fail("arange", "[", start, ", ", end, ") in steps of ", step, " has more than 2^40 elements");
  const auto count = static_cast<std::int64_t>(steps);
  Tensor t = empty({std::max<std::int64_t>(count, 0)}, dtype);
  dispatch_all(dtype, [&]<class T>() {
    T* out = t.data<T>();
    for (std::int64_t i = 0; i < t.numel(); ++i)
      out[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  return t;
}

Tensor arange(std::int64_t end, DType dtype) {
  return arange(0.0, static_cast<double>(end), 1.0, dtype);
}

Tensor tensor(std::initializer_list<double> values, DType dtype) {
  return tensor(values, Shape{static_cast<std::int64_t>(values.size())}, dtype);
}

Tensor tensor(std::initializer_list<double> values, const Shape& shape, DType dtype) {
  if (shape_numel(shape) != static_cast<std::int64_t>(values.size()))
    fail("tensor", "shape ", shape_str(shape), " needs ", shape_numel(shape), " values, got ",
         values.size());
  Tensor t = empty(shape, dtype);
  dispatch_all(dtype, [&]<class T>() {
    T* out = t.data<T>();
    for (double v : values) *out++ = static_cast<T>(v);
  });
  return t;
}

Tensor scalar_tensor(double value, DType dtype) { return full({}, value, dtype); }

Tensor make_view(const Tensor& base, Shape shape, Strides strides, std::int64_t offset) {
  if (shape.size() != strides.size())
    fail("make_view", "shape ", shape_str(shape), " and strides ", shape_str(strides),
         " differ in length");
  checked_numel(shape, "make_view");
  // Every reachable element must lie inside the storage.
  std::int64_t lowest = offset;
  std::int64_t highest = offset;
  if (shape_numel(shape) > 0) {
    for (std::size_t d = 0; d < shape.size(); ++d) {
      const std::int64_t reach = checked_mul(strides[d], shape[d] - 1, "make_view", "stride x size");
      std::int64_t& end = reach < 0 ? lowest : highest;
      end = checked_add(end, reach, "make_view", "offset of the last element");
    }
    std::int64_t capacity =
        static_cast<std::int64_t>(base.storage()->nbytes() / dtype_size(base.dtype()));
    if (lowest < 0 || highest >= capacity)
      fail("make_view", "view of shape ", shape_str(shape), " with strides ", shape_str(strides),
           " at offset ", offset, " exceeds a storage of ", capacity, " elements");
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

namespace {

template <class Update>
void update_elements(const char* op, const Tensor& src, const Tensor& dst, Update update) {
  if (src.shape() != dst.shape())
    fail(op, "source shape ", shape_str(src.shape()), " differs from destination shape ",
         shape_str(dst.shape()));
  dst.bump_version();
  dispatch_all(src.dtype(), [&]<class Src>() {
    dispatch_all(dst.dtype(), [&]<class Dst>() {
      const Src* from = src.data<Src>();
      Dst* to = dst.data<Dst>();
      auto apply = [&](Dst& d, Src s) { update(d, s); };
      if (src.is_contiguous() && dst.is_contiguous()) {
        parallel_for(src.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t i = begin; i < end; ++i) apply(to[i], from[i]);
        });
        return;
      }
      parallel_for(src.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
        strided_range<2>(src.shape(), {&src.strides(), &dst.strides()}, begin, end,
                         [&](const std::array<std::int64_t, 2>& off) { apply(to[off[1]], from[off[0]]); });
      });
    });
  });
}

}  // namespace

void copy_elements(const Tensor& src, const Tensor& dst) {
  update_elements("copy", src, dst, [](auto& d, auto s) { d = static_cast<std::remove_reference_t<decltype(d)>>(s); });
}

void add_elements(const Tensor& src, const Tensor& dst) {
  update_elements("add_elements", src, dst, [](auto& d, auto s) { d += static_cast<std::remove_reference_t<decltype(d)>>(s); });
}

namespace {

// Prints the sub-tensor starting at `offset` along dims [dim, ndim).
template <class T>
void print_block(std::ostream& out, const Tensor& t, const T* base, std::size_t dim,
                 std::int64_t offset, int indent) {
  constexpr std::int64_t kEdgeItems = 3;  // summarise long dims as "a, b, c, ..., x, y, z"
  const std::int64_t size = t.shape()[dim];
  const bool summarise = size > 2 * kEdgeItems + 1;
  out << '[';
  for (std::int64_t i = 0; i < size; ++i) {
    if (summarise && i == kEdgeItems) {
      out << (dim + 1 == t.shape().size() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = size - kEdgeItems;
    }
    std::int64_t element = offset + i * t.strides()[dim];
    if (dim + 1 == t.shape().size()) {
      out << base[element];
    } else {
      print_block(out, t, base, dim + 1, element, indent + 1);
    }
    if (i + 1 < size) out << (dim + 1 == t.shape().size() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  out << ']';
}

}  // namespace

std::ostream& operator<<(std::ostream& out, const Tensor& t) {
  if (!t.defined()) return out << "tensor(undefined)";
  out << "tensor(";
  dispatch_all(t.dtype(), [&]<class T>() {
    const T* base = static_cast<const T*>(t.storage()->data());
    if (t.dim() == 0) {
      out << base[t.offset()];
    } else if (t.numel() == 0) {
      out << "[]";
    } else {
      std::ios_base::fmtflags flags = out.flags();
      std::streamsize precision = out.precision(is_floating(t.dtype()) ? 4 : 0);
      print_block(out, t, base, 0, t.offset(), 7);
      out.precision(precision);
      out.flags(flags);
    }
  });
  out << ", shape=" << shape_str(t.shape()) << ", dtype=" << dtype_name(t.dtype());
  if (t.requires_grad()) out << ", requires_grad=true";
  return out << ')';
}

}  // namespace flowgrad
