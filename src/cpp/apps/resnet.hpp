/// \file resnet.hpp
/// \brief Residual network layers as time steps (Günther et al., SIMODS 2020):
///        u_{n+1} = u_n + h sigma(W_n u_n + b_n) on (batch x width) states,
///        with a dense or zero-padding opening layer as the initial condition
///        and softmax cross-entropy of an affine classifier as the objective
///        at the final time. Forward, adjoint and parameter gradients are
///        native: no Python runs per layer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/app.hpp"

namespace pxb {

enum class Activation { tanh, relu, smooth_relu };

/// Architecture, identical on every rank.
struct ResNetShape {
    int in_features = 2;
    int width = 8;
    int depth = 30;  ///< number of residual layers = time steps
    int classes = 5;
    double T = 1.0;  ///< final time; h = T / depth
    Activation activation = Activation::smooth_relu;
    bool dense_opening = true;  ///< sigma(W x + b); false: zero padding
    bool scalar_bias = false;   ///< one bias per layer (opening and residual) instead of one per channel
};

/// sigma(z) and sigma'(z). smooth_relu is quadratic on (-0.1, 0.1) and ReLU
/// outside, with a continuous derivative.
double activate(Activation a, double z) noexcept;
double activate_derivative(Activation a, double z) noexcept;

/// This rank's parameters and their gradient in one flat vector each:
/// [opening W (width x in), b (width, or 1 with scalar_bias)] if it owns time index 0,
/// then residual layers lo..hi-1 [W (width x width), b (width or 1)],
/// then [classifier W (classes x width), b (classes)] if it owns index depth.
/// Layer k advances index k to k+1, so it lives with the owner of index k+1.
class ResNetParameters {
public:
    ResNetParameters(ResNetShape shape, int layer_lo, int layer_hi, bool has_opening, bool has_classifier);

    const ResNetShape& shape() const noexcept { return shape_; }
    int layer_lo() const noexcept { return lo_; }
    int layer_hi() const noexcept { return hi_; }
    bool has_opening() const noexcept { return has_opening_; }
    bool has_classifier() const noexcept { return has_classifier_; }
    std::size_t layer_size() const noexcept;  ///< doubles per residual layer
    std::size_t opening_offset() const noexcept { return 0; }
    std::size_t layer_offset(int k) const;  ///< k in [lo, hi)
    std::size_t classifier_offset() const noexcept { return classifier_offset_; }

    std::vector<double> values;
    std::vector<double> gradient;
    /// Copy of the opening layer on ranks that do not own it (initial guesses only).
    std::vector<double> opening_replica;

private:
    ResNetShape shape_;
    int lo_, hi_;
    bool has_opening_, has_classifier_;
    std::size_t layers_offset_ = 0, classifier_offset_ = 0;
};

/// The engine's view of the network for one batch size: states are
/// batch x width, row-major (one sample per row), of type Real (double or
/// float). Parameters and their gradient stay float64 whatever Real is (the
/// optimisers and files work on them); a step converts its layer's weights to
/// Real, and float32 accumulates a step's weight gradient in float32 before
/// adding it to the float64 gradient, as a float32 GEMM would.
template <class Real>
class ResNetBatchOf : public TypedApp<Real> {
public:
    ResNetBatchOf(std::shared_ptr<ResNetParameters> params, int batch);

    /// Inputs (batch x in_features) and labels (batch; empty: no loss, logits only).
    void set_batch(const double* x, const std::int64_t* labels, bool has_labels);

    std::size_t size() const override { return static_cast<std::size_t>(batch_) * static_cast<std::size_t>(width_); }
    std::string name() const override { return "ResNet"; }
    /// The architecture and batch size (the layers' weights are distributed).
    std::uint64_t fingerprint() const override;
    void on_setup(double tstart, double tstop) override;
    void init(double t, Real* u) override;
    void step(Real* u, const Real* ustop, const Real* fstop, const Status& st) override;

    bool has_adjoint() const override { return true; }
    bool step_adjoint_uses_ustop() const override { return false; }
    double objective(const Real* u, const Status& st) override;
    void objective_adjoint(const Real* u, Real* u_bar, double f_bar, const Status& st) override;
    void step_adjoint(const Real* u, const Real* ustop, Real* u_bar, Real* ustop_bar, const Status& st) override;
    void reset_gradient() override;
    void init_adjoint(double t, const Real* u_bar, const Status& st) override;

    /// Results of the last objective evaluation (rank owning the final index).
    int correct() const noexcept { return correct_; }
    double loss() const noexcept { return loss_; }
    const std::vector<double>& logits() const noexcept { return logits_; }
    int batch() const noexcept { return batch_; }

private:
    int layer_of(const Status& st) const;  ///< residual layer of a step (any level)
    bool at_final_time(double t) const;
    void classify(const Real* u);  ///< logits_ = u W^T + b (in float64)
    /// Copy layer k's weights as Real into w_ (row-major) and wt_ (transposed), its bias into bias_.
    void load_layer(int k);

    std::shared_ptr<ResNetParameters> p_;
    ResNetShape shape_;
    int batch_, width_;
    double tstart_ = 0.0, h_ = 1.0;
    std::vector<double> x_;
    std::vector<std::int64_t> labels_;
    bool has_labels_ = false;
    std::vector<double> logits_;
    std::vector<double> g_;  ///< one row of classifier adjoints (scratch)
    std::vector<Real> w_, wt_, bias_;
    std::vector<Real> z_;   ///< pre-activations of one block of samples (scratch)
    std::vector<Real> s_;   ///< adjoint pre-activations of one block of samples (scratch)
    std::vector<Real> gw_;  ///< a step's weight and bias gradient in Real (float32 only)
    int correct_ = 0;
    double loss_ = 0.0;
};

using ResNetBatch = ResNetBatchOf<double>;
using ResNetBatch32 = ResNetBatchOf<float>;
extern template class ResNetBatchOf<double>;
extern template class ResNetBatchOf<float>;

}  // namespace pxb
