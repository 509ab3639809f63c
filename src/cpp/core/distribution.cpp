#include "core/distribution.hpp"

namespace pxb {

void block_interval(int npoints, int nranks, int rank, int& ilower, int& iupper) noexcept {
    const int quo = npoints / nranks;
    const int rem = npoints % nranks;
    ilower = rank * quo + (rank < rem ? rank : rem);
    const int next = rank + 1;
    iupper = next * quo + (next < rem ? next : rem) - 1;
}

int block_owner(int npoints, int nranks, int index) noexcept {
    if (index < 0 || index >= npoints) return -1;
    const int quo = npoints / nranks;
    const int rem = npoints % nranks;
    if (quo == 0) return index;  // fewer points than ranks: one point each
    const int p = index / (quo + 1);
    if (p < rem) return p;
    return rem + (index - rem * (quo + 1)) / quo;
}

}  // namespace pxb
