#include "core/recorded_arena.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "core/errors.hpp"

namespace pxb {

namespace {
bool multiply(std::size_t a, std::size_t b, std::size_t& out) noexcept {
    return !__builtin_mul_overflow(a, b, &out);
}

/// Memory this process can still get: Linux's MemAvailable (free memory plus
/// what the kernel can reclaim) plus free swap, else the physical memory.
/// Asking for more gets the process killed by the kernel, not an exception.
std::size_t available_memory_bytes() noexcept {
    std::size_t available = 0, swap = 0;
    if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
        char key[64];
        unsigned long long kib = 0;
        while (std::fscanf(f, "%63s %llu kB\n", key, &kib) == 2) {
            if (std::strcmp(key, "MemAvailable:") == 0) available = static_cast<std::size_t>(kib) * 1024;
            if (std::strcmp(key, "SwapFree:") == 0) swap = static_cast<std::size_t>(kib) * 1024;
        }
        std::fclose(f);
    }
    if (available > 0) return available + swap;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) : 0;
}
}  // namespace

void check_storage_size(std::size_t vectors, std::size_t n, DType dtype, const std::string& what) {
    // Checked before anything is allocated: a size that wraps around (or that no
    // machine has) must be an error naming the problem, not a crash.
    std::size_t elements = 0, bytes = 0;
    const bool fits = multiply(vectors, n, elements) && multiply(elements, element_size(dtype), bytes);
    const std::size_t available = available_memory_bytes();
    if (fits && (available == 0 || bytes <= available)) return;
    std::ostringstream msg;
    msg << "the solver needs " << vectors << " state vectors of " << n << " " << dtype_name(dtype) << " values " << what
        << ": ";
    if (!fits)
        msg << "the size overflows 64-bit arithmetic";
    else
        msg << double(bytes) / double(1ULL << 30) << " GiB, more than the " << double(available) / double(1ULL << 30)
            << " GiB of memory available on this machine";
    msg << "; use fewer time points per rank (more ranks), storage=-1, or a smaller state";
    throw StorageSizeError(msg.str());
}

void RecordedArena::allocate(std::size_t vectors, bool with_bars) {
    mem_->arena.assign(vectors * bytes_);
    next_ = mem_->arena.data();
    if (with_bars) {
        mem_->bar.assign(vectors * bytes_);
        mem_->scratch.assign(2 * bytes_);
    }
}

void RecordedArena::send(CVec v, Vec buf, int dest, int tag, MPI_Request& req, std::size_t count) {
    copy(buf, v);
    comm_.isend(buf, message_elements(count), dtype_, dest, tag, req);
    if (recording_) tape_.send(index_of(buf), dest, tag);
}

void RecordedArena::received(Vec slot, int source, int tag) {
    if (recording_) tape_.recv(index_of(slot), source, tag);
}

}  // namespace pxb
