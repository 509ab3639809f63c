/// \file distribution.hpp
/// \brief Block distribution of the fine time points over ranks (XBraid's
///        distribution.c): rank p owns [ilower(p), iupper(p)].
#pragma once

namespace pxb {

/// Owned interval of `rank` for `npoints` points over `nranks` ranks.
void block_interval(int npoints, int nranks, int rank, int& ilower, int& iupper) noexcept;

/// Rank owning fine index `index`, or -1 outside [0, npoints).
int block_owner(int npoints, int nranks, int index) noexcept;

}  // namespace pxb
