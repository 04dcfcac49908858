// What the C++ code of paanet_fast uses of PyTorch: only its stable ABI (torch/csrc/stable and
// torch/headeronly, targeting TORCH_TARGET_VERSION, set by setup.py), so that one build loads into
// every torch from that release on. This header adds the few helpers the stable surface lacks:
// errors that Python sees as ValueError, printing of shapes and devices, calls of ATen operators
// through the stable dispatcher, and the float32 compute type of the half types.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>
#include <torch/headeronly/util/HeaderOnlyArrayRef.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace paanet {

using Tensor = torch::stable::Tensor;
using TensorList = std::vector<Tensor>;
using IntList = torch::headeronly::HeaderOnlyArrayRef<int64_t>;
using torch::headeronly::ScalarType;

// ---------------------------------------------------------------------------------------------
// Errors. An exception thrown by a stable kernel reaches Python as the type pybind11 gives it:
// std::invalid_argument becomes ValueError (bad arguments), std::runtime_error RuntimeError.

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

#define PAANET_CHECK_VALUE(cond, ...)                                            \
  do {                                                                           \
    if (!(cond)) throw std::invalid_argument(::paanet::str(__VA_ARGS__));        \
  } while (0)

#define PAANET_CHECK(cond, ...)                                                  \
  do {                                                                           \
    if (!(cond)) throw std::runtime_error(::paanet::str(__VA_ARGS__));           \
  } while (0)

// Printed as PyTorch prints a size in its own messages: [2, 1, 8, 12].
struct Shape {
  IntList sizes;
};

inline std::ostream& operator<<(std::ostream& out, const Shape& shape) {
  out << '[';
  for (size_t i = 0; i < shape.sizes.size(); ++i) out << (i ? ", " : "") << shape.sizes[i];
  return out << ']';
}

inline Shape shape(const Tensor& t) { return {t.sizes()}; }

// Printed as torch.device prints: cpu, cuda:0, meta. It holds the device's parts, not a
// torch::stable::Device, whose namespace has hidden visibility (GCC warns about every file otherwise).
struct DeviceName {
  torch::headeronly::DeviceType type;
  int index;  // -1: none
};

inline std::ostream& operator<<(std::ostream& out, const DeviceName& name) {
  using torch::headeronly::DeviceType;
  switch (name.type) {
    case DeviceType::CPU: out << "cpu"; break;
    case DeviceType::CUDA: out << "cuda"; break;
    case DeviceType::Meta: out << "meta"; break;
    default: out << "device type " << static_cast<int>(name.type);
  }
  if (name.index >= 0) out << ':' << name.index;
  return out;
}

inline DeviceName device_name(const Tensor& t) {
  const torch::stable::Device device = t.device();
  return {device.type(), device.has_index() ? static_cast<int>(device.index()) : -1};
}

inline bool same_device(const Tensor& a, const Tensor& b) { return a.device() == b.device(); }

// ---------------------------------------------------------------------------------------------
// ATen operators without a stable wrapper, called by name through the stable dispatcher. The
// arguments are the operator's schema arguments in order (std::nullopt for an optional left out);
// the first result is returned.
template <typename... Args>
Tensor call_op(const char* name, const char* overload, const Args&... args) {
  std::array<StableIValue, sizeof...(Args)> stack{torch::stable::detail::from(args)...};
  STD_TORCH_CHECK(torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION) == AOTI_TORCH_SUCCESS,
                  "paanet_fast: calling ", name, " failed");
  return torch::stable::detail::to<Tensor>(stack[0]);
}

inline Tensor mm(const Tensor& a, const Tensor& b) { return call_op("aten::mm", "", a, b); }
inline Tensor bmm(const Tensor& a, const Tensor& b) { return call_op("aten::bmm", "", a, b); }
inline Tensor expand(const Tensor& t, IntList sizes) { return call_op("aten::expand", "", t, sizes, false); }
inline Tensor cat(const TensorList& tensors, int64_t dim) { return call_op("aten::cat", "", tensors, dim); }
// torch::stable::permute is in torch 2.14's headers, not in 2.10 to 2.13's: the sources build against those too.
inline Tensor permuted(const Tensor& t, IntList dims) { return call_op("aten::permute", "", t, dims); }

// empty_like(like) (the strides of a dense `like` kept) in another dtype.
inline Tensor empty_like(const Tensor& like, ScalarType dtype) {
  return call_op("aten::empty_like", "", like, std::optional<ScalarType>(dtype),
                 std::optional<torch::headeronly::Layout>(), std::optional<torch::stable::Device>(),
                 std::optional<bool>(), std::optional<torch::headeronly::MemoryFormat>());
}

inline Tensor empty_like(const Tensor& like) { return torch::stable::empty_like(like); }

inline Tensor empty(IntList sizes, ScalarType dtype, const torch::stable::Device& device,
                    torch::headeronly::MemoryFormat format = torch::headeronly::MemoryFormat::Contiguous) {
  return torch::stable::empty(sizes, dtype, std::nullopt, device, std::nullopt, format);
}

// Whether `t` is laid out as a dense channels-last (NHWC) tensor, the rule of ATen's
// is_contiguous(ChannelsLast): strides of size-1 dimensions do not matter.
inline bool is_channels_last_contiguous(const Tensor& t) {
  if (t.dim() != 4) return false;
  int64_t expected = 1;
  for (const int64_t d : {1, 3, 2, 0}) {
    if (t.size(d) == 1) continue;
    if (t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Dtypes

inline bool is_floating(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half ||
         t == ScalarType::BFloat16 || t == ScalarType::Float8_e4m3fn || t == ScalarType::Float8_e5m2 ||
         t == ScalarType::Float8_e4m3fnuz || t == ScalarType::Float8_e5m2fnuz;
}

inline bool is_reduced_precision(ScalarType t) { return t == ScalarType::Half || t == ScalarType::BFloat16; }

// The type arithmetic on T is done in: float for the half types (ATen's opmath_type).
template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<torch::headeronly::Half> {
  using type = float;
};
template <>
struct OpMath<torch::headeronly::BFloat16> {
  using type = float;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

// Runs the lambda BODY with scalar_t the C++ type of TYPE, for float and double (and, with
// _AND_HALF, the two half types). Written out rather than with torch/headeronly's THO_DISPATCH_*
// macros, which torch 2.10's headers do not have: the sources also build against that torch.
#define PAANET_DISPATCH_CASE(ENUM, CPP_TYPE, ...) \
  case ::paanet::ScalarType::ENUM: {              \
    using scalar_t = CPP_TYPE;                    \
    return __VA_ARGS__();                         \
  }

#define PAANET_DISPATCH_SWITCH(TYPE, NAME, CASES)                                          \
  [&] {                                                                                    \
    const ::paanet::ScalarType dispatch_type = TYPE;                                       \
    switch (dispatch_type) {                                                               \
      CASES                                                                                \
      default:                                                                             \
        throw std::invalid_argument(::paanet::str(NAME, ": dtype ", dispatch_type, " has no kernel")); \
    }                                                                                      \
  }()

#define PAANET_DISPATCH_FLOATING(TYPE, NAME, ...)                     \
  PAANET_DISPATCH_SWITCH(TYPE, NAME,                                  \
                         PAANET_DISPATCH_CASE(Float, float, __VA_ARGS__) \
                         PAANET_DISPATCH_CASE(Double, double, __VA_ARGS__))

#define PAANET_DISPATCH_FLOATING_AND_HALF(TYPE, NAME, ...)                                 \
  PAANET_DISPATCH_SWITCH(TYPE, NAME,                                                       \
                         PAANET_DISPATCH_CASE(Float, float, __VA_ARGS__)                   \
                         PAANET_DISPATCH_CASE(Double, double, __VA_ARGS__)                 \
                         PAANET_DISPATCH_CASE(Half, torch::headeronly::Half, __VA_ARGS__) \
                         PAANET_DISPATCH_CASE(BFloat16, torch::headeronly::BFloat16, __VA_ARGS__))

// With PAANET_FAST_POISON set (the tests set it), freshly allocated outputs are filled with NaN
// (integers with -1) before a kernel writes them, so an element the kernel forgets shows up as NaN
// or garbage, never as stale memory that happens to hold the right value.
inline Tensor poisoned_if_testing(Tensor t) {
  if (std::getenv("PAANET_FAST_POISON") != nullptr) {
    const ScalarType type = t.scalar_type();
    const bool floating = type == ScalarType::Float || type == ScalarType::Double || type == ScalarType::Half ||
                          type == ScalarType::BFloat16;
    torch::stable::fill_(t, floating ? std::numeric_limits<double>::quiet_NaN() : -1.0);
  }
  return t;
}

}  // namespace paanet
