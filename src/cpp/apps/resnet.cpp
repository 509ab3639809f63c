#include "apps/resnet.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "core/fingerprint.hpp"

namespace pxb {

namespace {
constexpr double kSmoothReluEps = 0.1;  // the quadratic piece of smooth_relu spans (-eps, eps)

// Kernels. A layer is three matrix products over a block of samples (states
// are batch x width, row-major): Z = U W^T + b forward, L += S W and
// dW += S^T U in the adjoint. One sample at a time (the first version) the
// width-8 products are bound by the latency of an 8-long chain of additions
// into the same two vector registers; a register tile of R samples (R x VC
// vector accumulators) gives R independent chains, and dW keeps R of its rows in
// registers across a whole block of samples instead of loading and storing all
// of dW per sample. Every output element is still summed in the same order
// (its initial value, then k = 0, 1, ... for Z and L, samples in batch order
// for dW) whatever R, N, the block size or the vector width, so the results
// are bitwise those of the per-sample loops and independent of the batch
// size's tiling; the build has -ffp-contract=off (no FMA), so the AVX2 and
// baseline clones agree too. A BLAS GEMM was measured against this and not
// taken (benchmarks/README.md): at width 8-32 the products are too thin for
// it to win, and its order of summation depends on the library and machine.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define PXB_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define PXB_KERNEL
#endif

/// 32 bytes of Real (4 doubles or 8 floats): one AVX2 register, two SSE2
/// registers in the baseline clone. GCC/Clang vector extensions: the
/// compiler cannot choose a layout of its own (it transposed the scalar tiles
/// through the stack), and a scalar operand is broadcast.
typedef double Vec4d __attribute__((vector_size(32)));
typedef float Vec8f __attribute__((vector_size(32)));
template <class Real>
using Vec32 = std::conditional_t<std::is_same_v<Real, double>, Vec4d, Vec8f>;

template <class Real>
[[gnu::always_inline]] inline void load32(Vec32<Real>& v, const Real* p) {
    std::memcpy(&v, p, sizeof v);
}
template <class Real>
[[gnu::always_inline]] inline void store32(Real* p, const Vec32<Real>& v) {
    std::memcpy(p, &v, sizeof v);
}

/// Lanes per vector, and the tile of one kernel call: VC vectors of columns
/// (at most 4) by R samples, R * VC <= 8 accumulator registers (with the VC
/// loaded vectors of B and a broadcast, within AVX2's 16: at 8
/// vectors of columns GCC spilled the tile to the stack at width 32).
template <class Real>
constexpr std::size_t kLanes = 32 / sizeof(Real);
template <class Real, std::size_t N>
constexpr std::size_t kColVecs = N / kLanes<Real> < 4 ? N / kLanes<Real> : 4;
template <class Real, std::size_t N>
constexpr std::size_t kTileRows = 8 / kColVecs<Real, N>;

/// C (R x N) += A (R x N) B (N x N row-major) on the VC column vectors from
/// column c0; C[r][i] summed over k in order.
template <class Real, std::size_t N, std::size_t R, std::size_t VC>
[[gnu::always_inline]] inline void tile_nn(const Real* A, const Real* B, Real* C, std::size_t c0) {
    constexpr std::size_t L = kLanes<Real>;
    Vec32<Real> acc[R][VC];
#pragma GCC unroll 64
    for (std::size_t q = 0; q < R * VC; ++q) load32(acc[q / VC][q % VC], C + (q / VC) * N + c0 + (q % VC) * L);
    for (std::size_t k = 0; k < N; ++k) {
        Vec32<Real> b[VC];
#pragma GCC unroll 8
        for (std::size_t v = 0; v < VC; ++v) load32(b[v], B + k * N + c0 + v * L);
#pragma GCC unroll 64
        for (std::size_t q = 0; q < R * VC; ++q) acc[q / VC][q % VC] += b[q % VC] * A[(q / VC) * N + k];
    }
#pragma GCC unroll 64
    for (std::size_t q = 0; q < R * VC; ++q) store32(C + (q / VC) * N + c0 + (q % VC) * L, acc[q / VC][q % VC]);
}

/// Rows i0..i0+R, column vectors from c0, of C (N x N) += A^T B over `rows`
/// samples (A, B: rows x N), samples in order.
template <class Real, std::size_t N, std::size_t R, std::size_t VC>
[[gnu::always_inline]] inline void tile_tn(const Real* A, const Real* B, Real* C, std::size_t rows, std::size_t i0,
                                           std::size_t c0) {
    constexpr std::size_t L = kLanes<Real>;
    Vec32<Real> acc[R][VC];
#pragma GCC unroll 64
    for (std::size_t q = 0; q < R * VC; ++q) load32(acc[q / VC][q % VC], C + (i0 + q / VC) * N + c0 + (q % VC) * L);
    for (std::size_t b = 0; b < rows; ++b) {
        Vec32<Real> u[VC];
#pragma GCC unroll 8
        for (std::size_t v = 0; v < VC; ++v) load32(u[v], B + b * N + c0 + v * L);
#pragma GCC unroll 64
        for (std::size_t q = 0; q < R * VC; ++q) acc[q / VC][q % VC] += A[b * N + i0 + q / VC] * u[q % VC];
    }
#pragma GCC unroll 64
    for (std::size_t q = 0; q < R * VC; ++q) store32(C + (i0 + q / VC) * N + c0 + (q % VC) * L, acc[q / VC][q % VC]);
}

/// C (rows x n) += A (rows x n) B (n x n, row-major). N > 0 (a multiple of
/// the lanes) fixes n = N; N = 0: any n, one sample at a time.
template <class Real, std::size_t N>
PXB_KERNEL void gemm_nn(const Real* A, const Real* B, Real* C, std::size_t rows, std::size_t n) {
    if constexpr (N > 0) {
        constexpr std::size_t R = kTileRows<Real, N>, VC = kColVecs<Real, N>;
        for (std::size_t c0 = 0; c0 < N; c0 += VC * kLanes<Real>) {
            std::size_t r = 0;
            for (; r + R <= rows; r += R) tile_nn<Real, N, R, VC>(A + r * N, B, C + r * N, c0);
            for (; r < rows; ++r) tile_nn<Real, N, 1, VC>(A + r * N, B, C + r * N, c0);
        }
    } else {
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t k = 0; k < n; ++k) {
                const Real a = A[r * n + k];
                for (std::size_t i = 0; i < n; ++i) C[r * n + i] += B[k * n + i] * a;
            }
    }
}

/// C (n x n) += A^T B (A, B: rows x n), summed over the rows in order.
template <class Real, std::size_t N>
PXB_KERNEL void gemm_tn(const Real* A, const Real* B, Real* C, std::size_t rows, std::size_t n) {
    if constexpr (N > 0) {
        constexpr std::size_t R = kTileRows<Real, N> < N ? kTileRows<Real, N> : N, VC = kColVecs<Real, N>;
        static_assert(N % R == 0, "the row tiles cover C");
        for (std::size_t c0 = 0; c0 < N; c0 += VC * kLanes<Real>)
            for (std::size_t i = 0; i < N; i += R) tile_tn<Real, N, R, VC>(A, B, C, rows, i, c0);
    } else {
        for (std::size_t b = 0; b < rows; ++b)
            for (std::size_t i = 0; i < n; ++i) {
                const Real a = A[b * n + i];
                for (std::size_t j = 0; j < n; ++j) C[i * n + j] += a * B[b * n + j];
            }
    }
}

template <class Real>
struct Kernels {
    void (*nn)(const Real*, const Real*, Real*, std::size_t, std::size_t);
    void (*tn)(const Real*, const Real*, Real*, std::size_t, std::size_t);
};

/// The kernels for width n: fixed-width instances where n is a multiple of
/// the vector lanes (4 doubles, 8 floats), else the generic loops.
template <class Real>
Kernels<Real> kernels_for(std::size_t n) {
    switch (n) {
        case 8: return {gemm_nn<Real, 8>, gemm_tn<Real, 8>};
        case 16: return {gemm_nn<Real, 16>, gemm_tn<Real, 16>};
        case 32: return {gemm_nn<Real, 32>, gemm_tn<Real, 32>};
        case 64: return {gemm_nn<Real, 64>, gemm_tn<Real, 64>};
        default:
            if constexpr (std::is_same_v<Real, double>)
                if (n == 4) return {gemm_nn<Real, 4>, gemm_tn<Real, 4>};
            return {gemm_nn<Real, 0>, gemm_tn<Real, 0>};
    }
}

/// Samples per block: the block's Z and S stay in L1/L2 between the products.
constexpr std::size_t kBlockRows = 64;

/// out = the activation's value (Deriv = false) or derivative at z,
/// elementwise; Z is Real or a vector of Real (an out parameter: a vector
/// return value would change the ABI between the clones, -Wpsabi).
/// Branch-free selects: the per-element branches on the sign of z
/// mispredicted on about every other sample. Each lane computes the same
/// expression as the scalar code, so the results agree bitwise with it.
template <bool Deriv, class Real, class Z>
[[gnu::always_inline]] inline void sigma(Activation a, const Z& z, Z& out) {
    constexpr Real eps = static_cast<Real>(kSmoothReluEps);
    const Z zero{}, one = zero + Real(1);  // lanes of 0 and 1 (Z may be Real)
    if (a == Activation::relu) {
        if constexpr (Deriv)
            out = z > Real(0) ? one : zero;
        else
            out = z > Real(0) ? z : zero;
    } else if constexpr (Deriv) {
        const Z lin = (z + eps) / (Real(2) * eps);
        out = z <= -eps ? zero : (z >= eps ? one : lin);
    } else {
        const Z quad = (z + eps) * (z + eps) / (Real(4) * eps);
        out = z <= -eps ? zero : (z >= eps ? z : quad);
    }
}

/// u += h sigma(z) (Deriv = false), or u = h sigma'(z) * lambda (Deriv =
/// true), over n values; relu and smooth_relu a vector at a time.
template <bool Deriv, class Real>
PXB_KERNEL void activation_pass(Activation a, const Real* z, const Real* lambda, Real* u, Real h, std::size_t n) {
    std::size_t i = 0;
    if (a == Activation::tanh) {
        for (; i < n; ++i) {
            const Real t = std::tanh(z[i]);
            if constexpr (Deriv)
                u[i] = h * (Real(1) - t * t) * lambda[i];
            else
                u[i] += h * t;
        }
        return;
    }
    constexpr std::size_t L = kLanes<Real>;
    for (; i + L <= n; i += L) {
        Vec32<Real> zv, x, sv;
        load32(zv, z + i);
        sigma<Deriv, Real>(a, zv, sv);
        if constexpr (Deriv) {
            load32(x, lambda + i);
            store32(u + i, h * sv * x);
        } else {
            load32(x, u + i);
            store32(u + i, x + h * sv);
        }
    }
    for (; i < n; ++i) {
        Real sv;
        sigma<Deriv, Real>(a, z[i], sv);
        if constexpr (Deriv)
            u[i] = h * sv * lambda[i];
        else
            u[i] += h * sv;
    }
}

/// z = the bias (per channel, or one value) on each of `rows` rows of width n.
template <class Real>
void fill_bias(Real* z, const Real* bias, bool scalar_bias, std::size_t rows, std::size_t n) {
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t i = 0; i < n; ++i) z[r * n + i] = scalar_bias ? bias[0] : bias[i];
}
}  // namespace

double activate(Activation a, double z) noexcept {
    switch (a) {
        case Activation::tanh: return std::tanh(z);
        case Activation::relu: return z > 0.0 ? z : 0.0;
        case Activation::smooth_relu:
            if (z <= -kSmoothReluEps) return 0.0;
            if (z >= kSmoothReluEps) return z;
            return (z + kSmoothReluEps) * (z + kSmoothReluEps) / (4.0 * kSmoothReluEps);
    }
    return 0.0;
}

double activate_derivative(Activation a, double z) noexcept {
    switch (a) {
        case Activation::tanh: {
            const double t = std::tanh(z);
            return 1.0 - t * t;
        }
        case Activation::relu: return z > 0.0 ? 1.0 : 0.0;
        case Activation::smooth_relu:
            if (z <= -kSmoothReluEps) return 0.0;
            if (z >= kSmoothReluEps) return 1.0;
            return (z + kSmoothReluEps) / (2.0 * kSmoothReluEps);
    }
    return 0.0;
}

// --- parameters -----------------------------------------------------------------

ResNetParameters::ResNetParameters(ResNetShape shape, int layer_lo, int layer_hi, bool has_opening, bool has_classifier)
    : shape_(shape), lo_(layer_lo), hi_(layer_hi), has_opening_(has_opening), has_classifier_(has_classifier) {
    if (shape_.width < 1 || shape_.in_features < 1 || shape_.classes < 2 || shape_.depth < 1)
        throw std::invalid_argument("ResNetParameters: invalid shape");
    if (lo_ < 0 || hi_ < lo_ || hi_ > shape_.depth)
        throw std::invalid_argument("ResNetParameters: invalid layer range");
    const std::size_t w = static_cast<std::size_t>(shape_.width);
    const std::size_t opening_size = w * static_cast<std::size_t>(shape_.in_features) + (shape_.scalar_bias ? 1 : w);
    const std::size_t opening = has_opening_ && shape_.dense_opening ? opening_size : 0;
    layers_offset_ = opening;
    classifier_offset_ = layers_offset_ + static_cast<std::size_t>(hi_ - lo_) * layer_size();
    const std::size_t classifier =
        has_classifier_ ? static_cast<std::size_t>(shape_.classes) * w + static_cast<std::size_t>(shape_.classes) : 0;
    values.assign(classifier_offset_ + classifier, 0.0);
    if (shape_.dense_opening) opening_replica.assign(opening_size, 0.0);
    gradient.assign(values.size(), 0.0);
}

std::size_t ResNetParameters::layer_size() const noexcept {
    const std::size_t w = static_cast<std::size_t>(shape_.width);
    return w * w + (shape_.scalar_bias ? 1 : w);
}

std::size_t ResNetParameters::layer_offset(int k) const {
    if (k < lo_ || k >= hi_)
        throw std::logic_error("residual layer " + std::to_string(k) + " is not stored on this rank (it holds " +
                               std::to_string(lo_) + ".." + std::to_string(hi_ - 1) + ")");
    return layers_offset_ + static_cast<std::size_t>(k - lo_) * layer_size();
}

// --- the batch app ----------------------------------------------------------------

template <class Real>
std::uint64_t ResNetBatchOf<Real>::fingerprint() const {
    const ResNetShape& s = shape_;
    Fingerprint f;
    f.add(s.in_features)
        .add(s.width)
        .add(s.depth)
        .add(s.classes)
        .add(s.T)
        .add(static_cast<int>(s.activation))
        .add(s.dense_opening)
        .add(s.scalar_bias)
        .add(batch_);
    if (std::is_same_v<Real, float>) f.add(32);  // float64 keeps its former value
    return f.value();
}

template <class Real>
ResNetBatchOf<Real>::ResNetBatchOf(std::shared_ptr<ResNetParameters> params, int batch)
    : p_(std::move(params)), shape_(p_->shape()), batch_(batch), width_(shape_.width) {
    if (batch_ < 1) throw std::invalid_argument("ResNetBatch: batch must be >= 1");
    const std::size_t w = static_cast<std::size_t>(width_);
    x_.assign(static_cast<std::size_t>(batch_) * static_cast<std::size_t>(shape_.in_features), 0.0);
    labels_.assign(static_cast<std::size_t>(batch_), 0);
    logits_.assign(static_cast<std::size_t>(batch_) * static_cast<std::size_t>(shape_.classes), 0.0);
    g_.assign(static_cast<std::size_t>(shape_.classes), 0.0);
    w_.assign(w * w, Real(0));
    wt_.assign(w * w, Real(0));
    bias_.assign(w, Real(0));
    const std::size_t block = std::min(kBlockRows, static_cast<std::size_t>(batch_)) * w;
    z_.assign(block, Real(0));
    s_.assign(block, Real(0));
    if (std::is_same_v<Real, float>) gw_.assign(p_->layer_size(), Real(0));
}

template <class Real>
void ResNetBatchOf<Real>::set_batch(const double* x, const std::int64_t* labels, bool has_labels) {
    std::memcpy(x_.data(), x, x_.size() * sizeof(double));
    has_labels_ = has_labels;
    if (has_labels) std::memcpy(labels_.data(), labels, labels_.size() * sizeof(std::int64_t));
}

template <class Real>
void ResNetBatchOf<Real>::on_setup(double tstart, double tstop) {
    tstart_ = tstart;
    h_ = (tstop - tstart) / shape_.depth;
}

template <class Real>
bool ResNetBatchOf<Real>::at_final_time(double t) const {
    return std::fabs(t - (tstart_ + h_ * shape_.depth)) <= 1e-9 * std::max(1.0, std::fabs(h_ * shape_.depth));
}

template <class Real>
int ResNetBatchOf<Real>::layer_of(const Status& st) const {
    // Every level uses the weights of the fine layer that ends at the step's
    // tstop: that layer belongs to the rank owning tstop, which is the rank
    // taking the step, so no rank ever needs a neighbour's weights.
    return static_cast<int>(std::lround((st.tstop - tstart_) / h_)) - 1;
}

template <class Real>
void ResNetBatchOf<Real>::load_layer(int k) {
    const std::size_t w = static_cast<std::size_t>(width_);
    const double* W = p_->values.data() + p_->layer_offset(k);
    for (std::size_t i = 0; i < w; ++i)
        for (std::size_t j = 0; j < w; ++j) {
            w_[i * w + j] = static_cast<Real>(W[i * w + j]);
            wt_[j * w + i] = static_cast<Real>(W[i * w + j]);
        }
    const std::size_t nb = shape_.scalar_bias ? 1 : w;
    for (std::size_t i = 0; i < nb; ++i) bias_[i] = static_cast<Real>(W[w * w + i]);
}

template <class Real>
void ResNetBatchOf<Real>::init(double t, Real* u) {
    const std::size_t w = static_cast<std::size_t>(width_), nin = static_cast<std::size_t>(shape_.in_features);
    const std::size_t n = static_cast<std::size_t>(batch_) * w;
    // Guess at later times: the opening layer's output, the state of the
    // identity flow (residual layers start close to it). Ranks without the
    // opening layer use the replica the trainer broadcasts, so the iterate
    // does not depend on the number of ranks.
    const double* W =
        t == tstart_ || p_->has_opening() ? p_->values.data() + p_->opening_offset() : p_->opening_replica.data();
    if (!shape_.dense_opening) {
        std::fill(u, u + n, Real(0));
        for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b)
            for (std::size_t j = 0; j < nin; ++j) u[b * w + j] = static_cast<Real>(x_[b * nin + j]);
        return;
    }
    const double* bias = W + w * nin;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* xb = x_.data() + b * nin;
        Real* ub = u + b * w;
        for (std::size_t i = 0; i < w; ++i) {
            double z = shape_.scalar_bias ? bias[0] : bias[i];
            for (std::size_t j = 0; j < nin; ++j) z += W[i * nin + j] * xb[j];
            ub[i] = static_cast<Real>(activate(shape_.activation, z));
        }
    }
}

template <class Real>
void ResNetBatchOf<Real>::init_adjoint(double t, const Real* u_bar, const Status&) {
    if (t != tstart_ || !shape_.dense_opening) return;  // zero padding has no parameters
    const std::size_t w = static_cast<std::size_t>(width_), nin = static_cast<std::size_t>(shape_.in_features);
    const double* W = p_->values.data() + p_->opening_offset();
    const double* bias = W + w * nin;
    double* gW = p_->gradient.data() + p_->opening_offset();
    double* gb = gW + w * nin;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* xb = x_.data() + b * nin;
        const Real* ubar = u_bar + b * w;
        for (std::size_t i = 0; i < w; ++i) {
            double z = shape_.scalar_bias ? bias[0] : bias[i];
            for (std::size_t j = 0; j < nin; ++j) z += W[i * nin + j] * xb[j];
            const double s = activate_derivative(shape_.activation, z) * static_cast<double>(ubar[i]);
            for (std::size_t j = 0; j < nin; ++j) gW[i * nin + j] += s * xb[j];
            gb[shape_.scalar_bias ? 0 : i] += s;
        }
    }
}

template <class Real>
void ResNetBatchOf<Real>::step(Real* u, const Real*, const Real*, const Status& st) {
    const Real h = static_cast<Real>(st.tstop - st.tstart);  // cfactor^level * T / depth on coarse levels
    const std::size_t w = static_cast<std::size_t>(width_), batch = static_cast<std::size_t>(batch_);
    load_layer(layer_of(st));
    const Kernels<Real> k = kernels_for<Real>(w);
    Real* z = z_.data();
    for (std::size_t b0 = 0; b0 < batch; b0 += kBlockRows) {
        const std::size_t rows = std::min(kBlockRows, batch - b0);
        Real* ub = u + b0 * w;
        fill_bias(z, bias_.data(), shape_.scalar_bias, rows, w);
        k.nn(ub, wt_.data(), z, rows, w);  // z = u W^T + b
        activation_pass<false>(shape_.activation, z, static_cast<const Real*>(nullptr), ub, h, rows * w);
    }
}

template <class Real>
void ResNetBatchOf<Real>::step_adjoint(const Real* u, const Real*, Real* u_bar, Real*, const Status& st) {
    // u_{n+1} = u + h sigma(W u + b):  s = h sigma'(z) * ubar,  ubar += W^T s,
    // dW += s u^T, db += s (summed over the batch).
    const Real h = static_cast<Real>(st.tstop - st.tstart);
    const std::size_t w = static_cast<std::size_t>(width_), batch = static_cast<std::size_t>(batch_);
    const int layer = layer_of(st);
    load_layer(layer);
    double* grad = p_->gradient.data() + p_->layer_offset(layer);
    // float64 accumulates straight into the gradient; float32 into gw_, added below.
    Real* gW;
    if constexpr (std::is_same_v<Real, double>) {
        gW = grad;
    } else {
        std::fill(gw_.begin(), gw_.end(), Real(0));
        gW = gw_.data();
    }
    Real* gb = gW + w * w;
    const Kernels<Real> k = kernels_for<Real>(w);
    Real* z = z_.data();
    Real* s = s_.data();
    for (std::size_t b0 = 0; b0 < batch; b0 += kBlockRows) {
        const std::size_t rows = std::min(kBlockRows, batch - b0);
        const Real* ub = u + b0 * w;
        Real* lb = u_bar + b0 * w;
        fill_bias(z, bias_.data(), shape_.scalar_bias, rows, w);
        k.nn(ub, wt_.data(), z, rows, w);  // z = u W^T + b
        activation_pass<true>(shape_.activation, z, lb, s, h, rows * w);
        k.nn(s, w_.data(), lb, rows, w);  // ubar += s W
        k.tn(s, ub, gW, rows, w);         // dW += s^T u
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t i = 0; i < w; ++i) gb[shape_.scalar_bias ? 0 : i] += s[r * w + i];
    }
    if constexpr (!std::is_same_v<Real, double>)
        for (std::size_t q = 0; q < gw_.size(); ++q) grad[q] += static_cast<double>(gw_[q]);
}

template <class Real>
void ResNetBatchOf<Real>::classify(const Real* u) {
    const std::size_t w = static_cast<std::size_t>(width_), c = static_cast<std::size_t>(shape_.classes);
    const double* W = p_->values.data() + p_->classifier_offset();
    const double* bias = W + c * w;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const Real* ub = u + b * w;
        double* zb = logits_.data() + b * c;
        for (std::size_t k = 0; k < c; ++k) {
            double acc = bias[k];
            for (std::size_t j = 0; j < w; ++j) acc += W[k * w + j] * static_cast<double>(ub[j]);
            zb[k] = acc;
        }
    }
}

template <class Real>
double ResNetBatchOf<Real>::objective(const Real* u, const Status& st) {
    // Cross-entropy of softmax(logits), averaged over the batch; only the
    // final time contributes (the objective window is [T, T]).
    if (!at_final_time(st.tstart) || !p_->has_classifier()) return 0.0;
    classify(u);
    const std::size_t c = static_cast<std::size_t>(shape_.classes);
    double total = 0.0;
    int correct = 0;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* zb = logits_.data() + b * c;
        const std::size_t best = static_cast<std::size_t>(std::max_element(zb, zb + c) - zb);
        if (!has_labels_) continue;
        // log-sum-exp shifted by the maximum: no overflow for large logits.
        double sum = 0.0;
        for (std::size_t k = 0; k < c; ++k) sum += std::exp(zb[k] - zb[best]);
        const std::size_t y = static_cast<std::size_t>(labels_[b]);
        total += std::log(sum) + zb[best] - zb[y];
        correct += best == y;
    }
    correct_ = correct;
    loss_ = has_labels_ ? total / batch_ : 0.0;
    return loss_;
}

template <class Real>
void ResNetBatchOf<Real>::objective_adjoint(const Real* u, Real* u_bar, double f_bar, const Status& st) {
    if (!at_final_time(st.tstart) || !p_->has_classifier() || !has_labels_) return;
    classify(u);
    const std::size_t w = static_cast<std::size_t>(width_), c = static_cast<std::size_t>(shape_.classes);
    const double* W = p_->values.data() + p_->classifier_offset();
    double* gW = p_->gradient.data() + p_->classifier_offset();
    double* gb = gW + c * w;
    double* g = g_.data();
    const double scale = f_bar / batch_;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* zb = logits_.data() + b * c;
        const double zmax = *std::max_element(zb, zb + c);
        double sum = 0.0;
        for (std::size_t k = 0; k < c; ++k) sum += std::exp(zb[k] - zmax);
        const std::size_t y = static_cast<std::size_t>(labels_[b]);
        for (std::size_t k = 0; k < c; ++k) g[k] = scale * (std::exp(zb[k] - zmax) / sum - (k == y ? 1.0 : 0.0));
        const Real* ub = u + b * w;
        Real* lb = u_bar + b * w;
        for (std::size_t k = 0; k < c; ++k) {
            const double gk = g[k];
            for (std::size_t j = 0; j < w; ++j) {
                lb[j] = static_cast<Real>(static_cast<double>(lb[j]) + W[k * w + j] * gk);
                gW[k * w + j] += gk * static_cast<double>(ub[j]);
            }
            gb[k] += gk;
        }
    }
}

template <class Real>
void ResNetBatchOf<Real>::reset_gradient() {
    std::fill(p_->gradient.begin(), p_->gradient.end(), 0.0);
}

template class ResNetBatchOf<double>;
template class ResNetBatchOf<float>;

}  // namespace pxb
