#include "apps/resnet.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "core/fingerprint.hpp"

namespace pxb {

namespace {
constexpr double kSmoothReluEps = 0.1;  // the quadratic piece of smooth_relu spans (-eps, eps)

// The hot loops run over the output channel with the input channel outside
// (z += W^T[j] * u_j): contiguous and vectorisable without reassociation, so
// every z_i is summed in the same order (bias, then j = 0, 1, ...) whatever
// the vector width. Built for AVX2 and the baseline; the loader picks one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define PXB_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define PXB_KERNEL
#endif

/// z = W u + bias for one sample (Wt = W transposed, n x n; bias: n values or one).
/// N > 0 fixes n at compile time, so z stays in registers for the common widths.
template <std::size_t N>
PXB_KERNEL void affine_row(const double* Wt, const double* bias, bool scalar_bias, const double* u, double* z,
                           std::size_t n) {
    if constexpr (N > 0) n = N;
    double acc[N > 0 ? N : 1];
    double* zz = N > 0 ? acc : z;
    for (std::size_t i = 0; i < n; ++i) zz[i] = scalar_bias ? bias[0] : bias[i];
    for (std::size_t j = 0; j < n; ++j) {
        const double uj = u[j];
        const double* col = Wt + j * n;
        for (std::size_t i = 0; i < n; ++i) zz[i] += col[i] * uj;
    }
    if constexpr (N > 0)
        for (std::size_t i = 0; i < n; ++i) z[i] = acc[i];
}

/// lambda += W^T s and dW += s u^T for one sample (W row-major, n x n).
template <std::size_t N>
PXB_KERNEL void adjoint_row(const double* W, const double* s, const double* u, double* lambda, double* gW,
                            std::size_t n) {
    if constexpr (N > 0) n = N;
    for (std::size_t i = 0; i < n; ++i) {
        const double si = s[i];
        const double* Wi = W + i * n;
        double* gWi = gW + i * n;
        for (std::size_t j = 0; j < n; ++j) {
            lambda[j] += Wi[j] * si;
            gWi[j] += si * u[j];
        }
    }
}

/// u += h sigma(z) over one row; the switch stays outside the loop so the
/// loop body is branch-light and inlined.
void residual_update(Activation a, const double* z, double* u, double h, std::size_t n) {
    switch (a) {
        case Activation::tanh:
            for (std::size_t i = 0; i < n; ++i) u[i] += h * std::tanh(z[i]);
            break;
        case Activation::relu:
            for (std::size_t i = 0; i < n; ++i) u[i] += h * (z[i] > 0.0 ? z[i] : 0.0);
            break;
        case Activation::smooth_relu:
            for (std::size_t i = 0; i < n; ++i) {
                const double zi = z[i];
                const double quad = (zi + kSmoothReluEps) * (zi + kSmoothReluEps) / (4.0 * kSmoothReluEps);
                u[i] += h * (zi <= -kSmoothReluEps ? 0.0 : zi >= kSmoothReluEps ? zi : quad);
            }
            break;
    }
}

/// s = h sigma'(z) * lambda over one row.
void adjoint_scale(Activation a, const double* z, const double* lambda, double* s, double h, std::size_t n) {
    switch (a) {
        case Activation::tanh:
            for (std::size_t i = 0; i < n; ++i) {
                const double t = std::tanh(z[i]);
                s[i] = h * (1.0 - t * t) * lambda[i];
            }
            break;
        case Activation::relu:
            for (std::size_t i = 0; i < n; ++i) s[i] = h * (z[i] > 0.0 ? 1.0 : 0.0) * lambda[i];
            break;
        case Activation::smooth_relu:
            for (std::size_t i = 0; i < n; ++i) {
                const double zi = z[i];
                const double lin = (zi + kSmoothReluEps) / (2.0 * kSmoothReluEps);
                s[i] = h * (zi <= -kSmoothReluEps ? 0.0 : zi >= kSmoothReluEps ? 1.0 : lin) * lambda[i];
            }
            break;
    }
}

using AffineRow = void (*)(const double*, const double*, bool, const double*, double*, std::size_t);
using AdjointRow = void (*)(const double*, const double*, const double*, double*, double*, std::size_t);

/// The row kernels for width n: fixed-width instances where one exists.
struct RowKernels {
    AffineRow affine;
    AdjointRow adjoint;
};

template <std::size_t N>
constexpr RowKernels kernels_of_width() {
    return {affine_row<N>, adjoint_row<N>};
}

RowKernels row_kernels(std::size_t n) {
    switch (n) {
        case 4: return kernels_of_width<4>();
        case 8: return kernels_of_width<8>();
        case 16: return kernels_of_width<16>();
        case 32: return kernels_of_width<32>();
        case 64: return kernels_of_width<64>();
        default: return kernels_of_width<0>();
    }
}

void transpose(const double* W, double* Wt, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) Wt[j * n + i] = W[i * n + j];
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

std::uint64_t ResNetBatch::fingerprint() const {
    const ResNetShape& s = shape_;
    return Fingerprint()
        .add(s.in_features)
        .add(s.width)
        .add(s.depth)
        .add(s.classes)
        .add(s.T)
        .add(static_cast<int>(s.activation))
        .add(s.dense_opening)
        .add(s.scalar_bias)
        .add(batch_)
        .value();
}

ResNetBatch::ResNetBatch(std::shared_ptr<ResNetParameters> params, int batch)
    : p_(std::move(params)), shape_(p_->shape()), batch_(batch), width_(shape_.width) {
    if (batch_ < 1) throw std::invalid_argument("ResNetBatch: batch must be >= 1");
    x_.assign(static_cast<std::size_t>(batch_) * static_cast<std::size_t>(shape_.in_features), 0.0);
    labels_.assign(static_cast<std::size_t>(batch_), 0);
    logits_.assign(static_cast<std::size_t>(batch_) * static_cast<std::size_t>(shape_.classes), 0.0);
    const std::size_t scratch = static_cast<std::size_t>(std::max(width_, shape_.classes));
    z_.assign(scratch, 0.0);
    s_.assign(scratch, 0.0);
    wt_.assign(static_cast<std::size_t>(width_) * static_cast<std::size_t>(width_), 0.0);
}

void ResNetBatch::set_batch(const double* x, const std::int64_t* labels, bool has_labels) {
    std::memcpy(x_.data(), x, x_.size() * sizeof(double));
    has_labels_ = has_labels;
    if (has_labels) std::memcpy(labels_.data(), labels, labels_.size() * sizeof(std::int64_t));
}

void ResNetBatch::on_setup(double tstart, double tstop) {
    tstart_ = tstart;
    h_ = (tstop - tstart) / shape_.depth;
}

bool ResNetBatch::at_final_time(double t) const {
    return std::fabs(t - (tstart_ + h_ * shape_.depth)) <= 1e-9 * std::max(1.0, std::fabs(h_ * shape_.depth));
}

int ResNetBatch::layer_of(const Status& st) const {
    // Every level uses the weights of the fine layer that ends at the step's
    // tstop: that layer belongs to the rank owning tstop, which is the rank
    // taking the step, so no rank ever needs a neighbour's weights.
    return static_cast<int>(std::lround((st.tstop - tstart_) / h_)) - 1;
}

void ResNetBatch::init(double t, double* u) {
    const std::size_t w = static_cast<std::size_t>(width_), nin = static_cast<std::size_t>(shape_.in_features);
    const std::size_t n = static_cast<std::size_t>(batch_) * w;
    // Guess at later times: the opening layer's output, the state of the
    // identity flow (residual layers start close to it). Ranks without the
    // opening layer use the replica the trainer broadcasts, so the iterate
    // does not depend on the number of ranks.
    const double* W =
        t == tstart_ || p_->has_opening() ? p_->values.data() + p_->opening_offset() : p_->opening_replica.data();
    if (!shape_.dense_opening) {
        std::fill(u, u + n, 0.0);
        for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b)
            std::memcpy(u + b * w, x_.data() + b * nin, nin * sizeof(double));
        return;
    }
    const double* bias = W + w * nin;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* xb = x_.data() + b * nin;
        double* ub = u + b * w;
        for (std::size_t i = 0; i < w; ++i) {
            double z = shape_.scalar_bias ? bias[0] : bias[i];
            for (std::size_t j = 0; j < nin; ++j) z += W[i * nin + j] * xb[j];
            ub[i] = activate(shape_.activation, z);
        }
    }
}

void ResNetBatch::init_adjoint(double t, const double* u_bar, const Status&) {
    if (t != tstart_ || !shape_.dense_opening) return;  // zero padding has no parameters
    const std::size_t w = static_cast<std::size_t>(width_), nin = static_cast<std::size_t>(shape_.in_features);
    const double* W = p_->values.data() + p_->opening_offset();
    const double* bias = W + w * nin;
    double* gW = p_->gradient.data() + p_->opening_offset();
    double* gb = gW + w * nin;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* xb = x_.data() + b * nin;
        const double* ubar = u_bar + b * w;
        for (std::size_t i = 0; i < w; ++i) {
            double z = shape_.scalar_bias ? bias[0] : bias[i];
            for (std::size_t j = 0; j < nin; ++j) z += W[i * nin + j] * xb[j];
            const double s = activate_derivative(shape_.activation, z) * ubar[i];
            for (std::size_t j = 0; j < nin; ++j) gW[i * nin + j] += s * xb[j];
            gb[shape_.scalar_bias ? 0 : i] += s;
        }
    }
}

void ResNetBatch::step(double* u, const double*, const double*, const Status& st) {
    const double h = st.tstop - st.tstart;  // cfactor^level * T / depth on coarse levels
    const std::size_t w = static_cast<std::size_t>(width_);
    const double* W = p_->values.data() + p_->layer_offset(layer_of(st));
    const double* bias = W + w * w;
    double* Wt = wt_.data();
    transpose(W, Wt, w);
    double* z = z_.data();
    const AffineRow affine_row = row_kernels(w).affine;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        double* ub = u + b * w;
        affine_row(Wt, bias, shape_.scalar_bias, ub, z, w);
        residual_update(shape_.activation, z, ub, h, w);
    }
}

void ResNetBatch::step_adjoint(const double* u, const double*, double* u_bar, double*, const Status& st) {
    // u_{n+1} = u + h sigma(W u + b):  s = h sigma'(z) * ubar,  ubar += W^T s,
    // dW += s u^T, db += s (summed over the batch).
    const double h = st.tstop - st.tstart;
    const std::size_t w = static_cast<std::size_t>(width_);
    const std::size_t off = p_->layer_offset(layer_of(st));
    const double* W = p_->values.data() + off;
    const double* bias = W + w * w;
    double* gW = p_->gradient.data() + off;
    double* gb = gW + w * w;
    double* Wt = wt_.data();
    transpose(W, Wt, w);
    double* z = z_.data();
    double* s = s_.data();
    const RowKernels kernels = row_kernels(w);
    const AffineRow affine_row = kernels.affine;
    const AdjointRow adjoint_row = kernels.adjoint;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* ub = u + b * w;
        double* lb = u_bar + b * w;
        affine_row(Wt, bias, shape_.scalar_bias, ub, z, w);
        adjoint_scale(shape_.activation, z, lb, s, h, w);
        adjoint_row(W, s, ub, lb, gW, w);
        if (shape_.scalar_bias)
            for (std::size_t i = 0; i < w; ++i) gb[0] += s[i];
        else
            for (std::size_t i = 0; i < w; ++i) gb[i] += s[i];
    }
}

void ResNetBatch::classify(const double* u) {
    const std::size_t w = static_cast<std::size_t>(width_), c = static_cast<std::size_t>(shape_.classes);
    const double* W = p_->values.data() + p_->classifier_offset();
    const double* bias = W + c * w;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* ub = u + b * w;
        double* zb = logits_.data() + b * c;
        for (std::size_t k = 0; k < c; ++k) {
            double acc = bias[k];
            for (std::size_t j = 0; j < w; ++j) acc += W[k * w + j] * ub[j];
            zb[k] = acc;
        }
    }
}

double ResNetBatch::objective(const double* u, const Status& st) {
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

void ResNetBatch::objective_adjoint(const double* u, double* u_bar, double f_bar, const Status& st) {
    if (!at_final_time(st.tstart) || !p_->has_classifier() || !has_labels_) return;
    classify(u);
    const std::size_t w = static_cast<std::size_t>(width_), c = static_cast<std::size_t>(shape_.classes);
    const double* W = p_->values.data() + p_->classifier_offset();
    double* gW = p_->gradient.data() + p_->classifier_offset();
    double* gb = gW + c * w;
    double* g = s_.data();
    const double scale = f_bar / batch_;
    for (std::size_t b = 0; b < static_cast<std::size_t>(batch_); ++b) {
        const double* zb = logits_.data() + b * c;
        const double zmax = *std::max_element(zb, zb + c);
        double sum = 0.0;
        for (std::size_t k = 0; k < c; ++k) sum += std::exp(zb[k] - zmax);
        const std::size_t y = static_cast<std::size_t>(labels_[b]);
        for (std::size_t k = 0; k < c; ++k) g[k] = scale * (std::exp(zb[k] - zmax) / sum - (k == y ? 1.0 : 0.0));
        const double* ub = u + b * w;
        double* lb = u_bar + b * w;
        for (std::size_t k = 0; k < c; ++k) {
            const double gk = g[k];
            for (std::size_t j = 0; j < w; ++j) {
                lb[j] += W[k * w + j] * gk;
                gW[k * w + j] += gk * ub[j];
            }
            gb[k] += gk;
        }
    }
}

void ResNetBatch::reset_gradient() {
    std::fill(p_->gradient.begin(), p_->gradient.end(), 0.0);
}

}  // namespace pxb
