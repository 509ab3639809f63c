/// \file grid.hpp
/// \brief One level of the time-grid hierarchy on one rank (XBraid's grid.c):
///        owned index range, C/F structure, times and the state arrays
///        ua (stored points), va (restricted values), fa (FAS right-hand sides).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/vector_ops.hpp"

namespace pxb {

/// `count` vectors plus one ghost vector in front (slot -1), contiguous inside
/// the engine's single state arena (see Arena): no per-vector heap objects, and
/// every vector has a fixed offset, which the adjoint uses to find its bar.
class VectorArray {
public:
    /// Number of vectors this array needs in the arena (the ghost included).
    static std::size_t vectors(int count) { return static_cast<std::size_t>(count) + 1; }
    /// `base`: the first of vectors(count) vectors of `stride` bytes each.
    void bind(Vec base, int count, std::size_t stride) noexcept {
        base_ = base;
        count_ = count;
        stride_ = stride;
    }
    Vec at(int slot) noexcept { return base_ + static_cast<std::size_t>(slot + 1) * stride_; }
    CVec at(int slot) const noexcept { return base_ + static_cast<std::size_t>(slot + 1) * stride_; }
    int count() const noexcept { return count_; }

private:
    Vec base_ = nullptr;
    std::size_t stride_ = 0;
    int count_ = 0;
};

/// One level on this rank. Indices are global indices of this level.
struct Level {
    int level = 0;
    int ilower = 0, iupper = -1;  ///< owned points (empty when ilower > iupper)
    int clower = 0, cupper = -1;  ///< first and last owned C-point
    int cfactor = 2;              ///< gupper+1 on a sequentially solved coarsest level
    int ncpoints = 0;             ///< owned C-points
    int gupper = 0;               ///< last index of this level
    bool stores_all = false;      ///< storage keeps F-points too on this level
    std::vector<double> ta;       ///< ta[0]: time of ilower-1 (ghost); ta[1+k]: time of ilower+k

    VectorArray ua;                    ///< stored points (+ ghost u[ilower-1])
    VectorArray va;                    ///< restricted values, all points (+ ghost), levels > 0
    VectorArray fa;                    ///< FAS right-hand sides, all points, levels > 0
    std::vector<std::uint8_t> ua_set;  ///< whether a stored slot holds a value yet
    /// Apps with shells: the shell of each owned point (slot i - ilower), used
    /// where ua keeps no state (XBraid's shell vectors at F-points).
    std::vector<double> sa;
    std::vector<std::uint8_t> sa_set;  ///< whether a point's shell in sa is set
    bool va_valid = false;             ///< va filled by the restriction of this cycle
    bool fa_valid = false;             ///< fa filled (false after skip: fa counts as zero)

    int npoints() const noexcept { return iupper >= ilower ? iupper - ilower + 1 : 0; }
    double t(int i) const noexcept { return ta[static_cast<std::size_t>(i - ilower + 1)]; }
    bool is_cpoint(int i) const noexcept { return i % cfactor == 0; }

    /// Slot of index i in ua, or -1 when the point is not stored on this level.
    int u_slot(int i) const noexcept {
        if (i < ilower || i > iupper) return -1;
        if (stores_all) return i - ilower;
        if (i % cfactor != 0) return -1;
        return i / cfactor - clower / cfactor;
    }
    /// Call f(i, u_slot(i)) for each point of this level that ua stores, in
    /// index order (without visiting the points it does not store).
    template <class F>
    void for_each_stored(F&& f) const {
        if (stores_all) {
            for (int i = ilower; i <= iupper; ++i) f(i, i - ilower);
            return;
        }
        const int first = (ilower + cfactor - 1) / cfactor * cfactor;  // indices are >= 0
        for (int i = first; i <= iupper; i += cfactor) f(i, u_slot(i));
    }
    /// XBraid's _braid_GetInterval: the F-points flo..fhi and the C-point ci
    /// (-1 when none) of interval k, k = 0..ncpoints.
    void interval(int k, int& flo, int& fhi, int& ci) const noexcept {
        flo = ilower;
        fhi = iupper;
        ci = -1;
        if (clower % cfactor == 0) {
            flo = clower + (k - 1) * cfactor + 1;
            fhi = clower + k * cfactor - 1;
            if (flo < ilower) flo = ilower;
            if (fhi > iupper) fhi = iupper;
            ci = clower + k * cfactor;
            if (ci > cupper) ci = -1;
        }
    }
    /// Drop the coarse-level values after interpolation (XBraid's GridClean).
    void clean() noexcept {
        std::fill(ua_set.begin(), ua_set.end(), std::uint8_t{0});
        std::fill(sa_set.begin(), sa_set.end(), std::uint8_t{0});
        va_valid = false;
        fa_valid = false;
    }
};

}  // namespace pxb
