/// \file vector_ops.hpp
/// \brief The element type of states (float64 or float32, chosen by the app)
///        and the few loops the engine runs over a state vector. Everything
///        else treats a vector as bytes. Norms accumulate in float64 whatever
///        the element type. For float64 the loops are exactly the expressions
///        XBraid evaluates (XBraid parity is bitwise).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pxb {

/// Element type of the states of an app.
enum class DType : std::uint8_t { float64 = 0, float32 = 1 };

inline std::size_t element_size(DType d) noexcept {
    return d == DType::float32 ? sizeof(float) : sizeof(double);
}
inline const char* dtype_name(DType d) noexcept {
    return d == DType::float32 ? "float32" : "float64";
}

/// Where a vector's shell starts: after the state, rounded up to 8 bytes (the
/// shell is float64 whatever the state's type).
inline std::size_t shell_offset(std::size_t n, DType d) noexcept {
    return (n * element_size(d) + sizeof(double) - 1) / sizeof(double) * sizeof(double);
}
/// Bytes of one engine vector: the state, and its shell of `shell_n` float64
/// values when the app has shells (then a multiple of 8 bytes).
inline std::size_t vector_bytes(std::size_t n, DType d, std::size_t shell_n) noexcept {
    return shell_n == 0 ? n * element_size(d) : shell_offset(n, d) + shell_n * sizeof(double);
}

/// A state vector: bytes in the engine's arena (its element type is the app's).
using Vec = std::byte*;
using CVec = const std::byte*;

/// Call f with a value of the element type (double{} or float{}).
template <class F>
decltype(auto) with_type(DType d, F&& f) {
    if (d == DType::float32) return f(float{});
    return f(double{});
}

namespace ops {

template <class T>
T* as(Vec v) noexcept {
    return reinterpret_cast<T*>(v);
}
template <class T>
const T* as(CVec v) noexcept {
    return reinterpret_cast<const T*>(v);
}

/// A state of one float64 (a scalar ODE): the reverse sweep's loops below
/// take it without the loop and the type dispatch (the same arithmetic).
inline bool is_scalar64(DType d, std::size_t n) noexcept {
    return n == 1 && d == DType::float64;
}

/// The Euclidean dot product, summed in index order (XBraid's ex-07 InnerProd).
inline double dot(DType d, std::size_t n, CVec x, CVec y) noexcept {
    return with_type(d, [&](auto zero) {
        using T = decltype(zero);
        const T* xs = as<T>(x);
        const T* ys = as<T>(y);
        double sum = 0.0;
        for (std::size_t q = 0; q < n; ++q) sum += static_cast<double>(xs[q]) * static_cast<double>(ys[q]);
        return sum;
    });
}

/// y <- a x + b y
inline void axpy(DType d, std::size_t n, double a, CVec x, double b, Vec y) noexcept {
    with_type(d, [&](auto zero) {
        using T = decltype(zero);
        const T* xs = as<T>(x);
        T* ys = as<T>(y);
        const T ta = static_cast<T>(a), tb = static_cast<T>(b);
        for (std::size_t q = 0; q < n; ++q) ys[q] = ta * xs[q] + tb * ys[q];
    });
}

/// x_bar += y_bar; y_bar = 0 (the reverse of a copy y <- x)
inline void move_add(DType d, std::size_t n, Vec ybar, Vec xbar) noexcept {
    if (is_scalar64(d, n)) {
        as<double>(xbar)[0] += as<double>(ybar)[0];
        as<double>(ybar)[0] = 0.0;
        return;
    }
    with_type(d, [&](auto zero) {
        using T = decltype(zero);
        T* ys = as<T>(ybar);
        T* xs = as<T>(xbar);
        for (std::size_t q = 0; q < n; ++q) {
            xs[q] += ys[q];
            ys[q] = T(0);
        }
    });
}

/// y += a x
inline void add_scaled(DType d, std::size_t n, double a, CVec x, Vec y) noexcept {
    if (is_scalar64(d, n)) {
        as<double>(y)[0] += a * as<double>(x)[0];
        return;
    }
    with_type(d, [&](auto zero) {
        using T = decltype(zero);
        const T* xs = as<T>(x);
        T* ys = as<T>(y);
        const T ta = static_cast<T>(a);
        for (std::size_t q = 0; q < n; ++q) ys[q] += ta * xs[q];
    });
}

/// y += x
inline void add(DType d, std::size_t n, CVec x, Vec y) noexcept {
    if (is_scalar64(d, n)) {
        as<double>(y)[0] += as<double>(x)[0];
        return;
    }
    with_type(d, [&](auto zero) {
        using T = decltype(zero);
        const T* xs = as<T>(x);
        T* ys = as<T>(y);
        for (std::size_t q = 0; q < n; ++q) ys[q] += xs[q];
    });
}

/// y *= c
inline void scale(DType d, std::size_t n, double c, Vec y) noexcept {
    if (is_scalar64(d, n)) {
        as<double>(y)[0] *= c;
        return;
    }
    with_type(d, [&](auto zero) {
        using T = decltype(zero);
        T* ys = as<T>(y);
        const T tc = static_cast<T>(c);
        for (std::size_t q = 0; q < n; ++q) ys[q] *= tc;
    });
}

/// out <- 1 a + (-1) b (XBraid's sum with those coefficients)
inline void difference(DType d, std::size_t n, CVec a, CVec b, Vec out) noexcept {
    with_type(d, [&](auto zero) {
        using T = decltype(zero);
        const T* as_ = as<T>(a);
        const T* bs = as<T>(b);
        T* os = as<T>(out);
        for (std::size_t q = 0; q < n; ++q) os[q] = T(1) * as_[q] + T(-1) * bs[q];
    });
}

/// Euclidean 2-norm, accumulated in float64.
inline double norm2(DType d, std::size_t n, CVec x) noexcept {
    return with_type(d, [&](auto zero) {
        using T = decltype(zero);
        const T* xs = as<T>(x);
        double s = 0.0;
        for (std::size_t q = 0; q < n; ++q) s += static_cast<double>(xs[q]) * static_cast<double>(xs[q]);
        return std::sqrt(s);
    });
}

/// Index of the first non-finite entry, or n. The common (all finite) case
/// costs one vectorisable pass: x*0 is NaN exactly when x is NaN or infinite.
/// The products go into 16 independent partial sums: one running sum is a
/// chain of dependent additions the compiler may not reorder (no fast-math),
/// which cost 20% of a ResNet step at 40000 values per state. Any order of
/// summing gives the same answer here (a sum of zeros is zero, NaN stays NaN).
inline std::size_t first_non_finite(DType d, std::size_t n, CVec x, double& value) noexcept {
    return with_type(d, [&](auto zero) -> std::size_t {
        using T = decltype(zero);
        const T* xs = as<T>(x);
        constexpr std::size_t kLanes = 16;
        T probe = T(0);
        std::size_t q = 0;
        if (n >= 4 * kLanes) {
            // Small states (a scalar ODE) skip this: zeroing and folding the lanes would cost
            // more than the check itself (the fold alone is 16 dependent additions).
            T lanes[kLanes] = {};
            for (; q + kLanes <= n; q += kLanes)
                for (std::size_t k = 0; k < kLanes; ++k) lanes[k] += xs[q + k] * T(0);
            for (std::size_t k = 0; k < kLanes; ++k) probe += lanes[k];
        }
        for (; q < n; ++q) probe += xs[q] * T(0);
        if (probe == T(0)) return n;
        std::size_t bad = 0;
        while (bad < n && std::isfinite(xs[bad])) ++bad;
        value = bad < n ? static_cast<double>(xs[bad]) : 0.0;
        return bad;
    });
}

}  // namespace ops
}  // namespace pxb
