#include "apps/heat1d.hpp"

#include "core/fingerprint.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace pxb {

namespace {
constexpr double kPi = 3.14159265358979323846;

// Rank-independent pseudo-random guess in [0, 1): a hash of (t, entry).
double hashed_uniform(double t, int j) {
    std::uint64_t bits;
    std::memcpy(&bits, &t, sizeof bits);
    std::uint64_t z = bits ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(j + 1));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}
}  // namespace

Heat1D::Heat1D(int nspace, Guess guess, bool use_residual, bool spatial_coarsening)
    : nspace_(nspace),
      spatial_coarsening_(spatial_coarsening),
      dx_((kPi - 0.0) / (nspace - 1.0)),
      guess_(guess),
      use_residual_(use_residual) {
    if (nspace < 3) throw std::invalid_argument("nspace must be >= 3, got " + std::to_string(nspace));
    // ex-02 switches -sc off with a warning here; an error says it instead.
    if (spatial_coarsening && ((nspace - 1) & (nspace - 2)) != 0)
        throw std::invalid_argument("spatial_coarsening=True needs nspace - 1 to be a power of 2, got nspace=" +
                                    std::to_string(nspace));
    thomas_.resize(nspace);
    matvec_.resize(nspace);
}

std::uint64_t Heat1D::fingerprint() const {
    return Fingerprint().add(nspace_).add(static_cast<int>(guess_)).add(use_residual_).add(spatial_coarsening_).value();
}

bool Heat1D::coarsens(int fine_level) const {
    // ex-02: level < floor(log2(nspace)) - 1, nspace of the finest grid.
    return spatial_coarsening_ && fine_level < static_cast<int>(std::floor(std::log2(nspace_))) - 1;
}

int Heat1D::points_at(int level) const {
    int n = nspace_;
    for (int l = 0; l < level; ++l)
        if (coarsens(l)) n = (n - 1) / 2 + 1;
    return n;
}

void Heat1D::coarsen(const double* fine, double* coarse, const Status& st) {
    // Full weighting inside, injection at the boundary (ex-02's my_Coarsen).
    const int fsize = points_at(st.level);
    if (!coarsens(st.level)) {
        std::memcpy(coarse, fine, static_cast<std::size_t>(fsize) * sizeof(double));
        return;
    }
    const int csize = (fsize - 1) / 2 + 1;
    coarse[0] = fine[0];
    coarse[csize - 1] = fine[fsize - 1];
    for (int i = 1; i < csize - 1; ++i) coarse[i] = 0.5 * fine[2 * i] + 0.25 * fine[2 * i + 1] + 0.25 * fine[2 * i - 1];
}

void Heat1D::refine(const double* coarse, double* fine, const Status& st) {
    // Linear interpolation (ex-02's my_Interp).
    const int fsize = points_at(st.level);
    if (!coarsens(st.level)) {
        std::memcpy(fine, coarse, static_cast<std::size_t>(fsize) * sizeof(double));
        return;
    }
    const int csize = points_at(st.level + 1);
    for (int i = 1; i < fsize - 1; ++i)
        fine[i] = i % 2 == 1 ? 0.5 * coarse[i / 2] + 0.5 * coarse[(i + 1) / 2] : coarse[i / 2];
    fine[0] = coarse[0];
    fine[fsize - 1] = coarse[csize - 1];
}

double Heat1D::forcing(double t, double x) const {
    return (-1.0) * std::sin(x) * std::sin(t) + std::sin(x) * std::cos(t);
}

void Heat1D::exact(double t, double* u) const {
    double x = 0.0;
    for (int j = 0; j < nspace_; ++j) {
        u[j] = std::sin(x) * std::cos(t);
        x += dx_;
    }
}

double Heat1D::error(double t, const double* u) const {
    double x = 0.0, s = 0.0;
    for (int j = 0; j < nspace_; ++j) {
        const double d = u[j] - std::sin(x) * std::cos(t);
        s = s + d * d;
        x += dx_;
    }
    return std::sqrt(s * dx_);
}

void Heat1D::init(double t, double* u) {
    if (t == tstart_) {
        exact(t, u);
        return;
    }
    for (int j = 0; j < nspace_; ++j) {
        switch (guess_) {
            case Guess::xbraid:
                // XBraid's braid_Rand(): one generator per process, in call order.
                rand_state_ = rand_state_ * 1103515245 + 12345;
                u[j] = static_cast<double>((rand_state_ / 65536) % 32768) / 32768.0;
                break;
            case Guess::hashed: u[j] = hashed_uniform(t, j); break;
            case Guess::zero: u[j] = 0.0; break;
        }
    }
}

void Heat1D::step(double* u, const double*, const double* fstop, const Status& st) {
    // Operation order of XBraid's ex-02 (take_step + solve_tridiag).
    const double tstop = st.tstop;
    const double dt = st.tstop - st.tstart;
    const int n = points_at(st.level);
    const double dx = spacing(n);
    if (fstop)
        for (int j = 0; j < n; ++j) u[j] = u[j] + fstop[j];
    const double cfl = dt / (dx * dx);
    const double a = -cfl, b = 1.0 + 2 * cfl, c = -cfl;
    u[0] = std::sin(0.0) * std::cos(tstop);
    u[n - 1] = std::sin(kPi) * std::cos(tstop);
    double x = 0.0;
    for (int j = 0; j < n; ++j) {
        u[j] = u[j] + dt * forcing(tstop, x);
        x = x + dx;
    }
    double* g = thomas_.data();
    g[0] = 0.0;  // first and last rows are the identity
    for (int j = 1; j < n - 1; ++j) {
        const double m = 1.0 / (b - a * g[j - 1]);
        g[j] = m * c;
        u[j] = m * (u[j] - a * u[j - 1]);
    }
    for (int j = n - 2; j >= 1; --j) u[j] = u[j] - g[j] * u[j + 1];
}

void Heat1D::residual(const double* ustop, double* r, const Status& st) {
    // r = A ustop - r - dt g(t_{n+1}) (XBraid's ex-02 my_Residual).
    const double tstop = st.tstop;
    const double dt = st.tstop - st.tstart;
    const int n = points_at(st.level);
    const double dx = spacing(n);
    const double cfl = dt / (dx * dx);
    const double a = -cfl, b = 1.0 + 2 * cfl, c = -cfl;
    double* g = matvec_.data();
    for (int j = 1; j < n - 1; ++j) g[j] = a * ustop[j - 1] + b * ustop[j] + c * ustop[j + 1];
    g[0] = ustop[0];
    g[n - 1] = ustop[n - 1];
    double x = 0.0;
    for (int j = 0; j < n; ++j) {
        r[j] = g[j] - r[j] - dt * forcing(tstop, x);
        x = x + dx;
    }
}

}  // namespace pxb
