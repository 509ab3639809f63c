/// \file tape_format.hpp
/// \brief The byte layout of the tape's records (see tape.hpp): sizes and the
///        parts of a fused step, shared by the writer (tape.cpp) and the
///        reader (inline in tape.hpp, so the reverse sweep's loop inlines it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pxb {
namespace tape_format {

// Layouts (each record ends with its kind byte):
//   copy, axpy_add/sub/neg:  y u32, x u32
//   axpy:                    y u32, x u32, a f64, b f64
//   recv / send:             y u32, peer i32, tag i32
//   step:                    y u32, x u32, status (u and ustop saved)
//   step_aliased:            y u32, x u32, status (u saved)
//   step_fused:              y u32, x u32, status, [pre x u32], [post x u32],
//                            [store / accumulate z u32], parts u8 (u, [ustop],
//                            [the objective's state] saved)
//   objective:               y u32, point (its state saved)
//   group_begin / group_end: nothing but the kind
//   coarsen / refine:        y u32, x u32, status
// status: level u8, phase u8, done u8, residual norm code u8, tindex i32
// point (level 0, phase objective): done u8, residual norm code u8, tindex i32
// Saved values are not named in the records: a record's values are saved in
// the order listed, and the reverse sweep, meeting the records last first,
// reads them back last first (SavedValues::take_last).
constexpr std::size_t kStatus = 4 + sizeof(std::int32_t);
constexpr std::size_t kPoint = 2 + sizeof(std::int32_t);

// The parts of a fused step (its byte before the kind), in the primal's
// order: pre, the step, post, store or accumulate, then the objective.
constexpr std::uint8_t kUstop = 1;        // its ustop was saved (a `step`, not a `step_aliased`)
constexpr std::uint8_t kPostAdd = 2;      // then y <- x + y (the FAS correction)
constexpr std::uint8_t kPostSub = 4;      // then y <- x - y (a residual)
constexpr std::uint8_t kStore = 8;        // then z <- y (storing the stepped value)
constexpr std::uint8_t kPre = 16;         // before it y <- x (the value it steps from)
constexpr std::uint8_t kAccumulate = 32;  // then z <- y + z (a coarse right-hand side)
constexpr std::uint8_t kObjective = 64;   // then the objective term of y (level 0; the point stepped to)
constexpr std::uint8_t kPost = kPostAdd | kPostSub;
constexpr std::uint8_t kLast = kStore | kAccumulate;  // one of them, in one slot

template <class T>
T read(const std::uint8_t*& p) noexcept {
    T value;
    std::memcpy(&value, p, sizeof(T));
    p += sizeof(T);
    return value;
}

/// A fused step's size from its parts.
constexpr std::size_t fused_size(std::uint8_t parts) noexcept {
    return 8 + kStatus + 2 + ((parts & kPre) ? 4 : 0) + ((parts & kPost) ? 4 : 0) + ((parts & kLast) ? 4 : 0);
}

/// fused_size of every parts byte (the reverse sweep looks a fused step's size up).
struct FusedSizes {
    std::uint8_t of[128];
};
constexpr FusedSizes make_fused_sizes() noexcept {
    FusedSizes t{};
    for (unsigned parts = 0; parts < 128; ++parts)
        t.of[parts] = static_cast<std::uint8_t>(fused_size(static_cast<std::uint8_t>(parts)));
    return t;
}
inline constexpr FusedSizes kFusedSizes = make_fused_sizes();

}  // namespace tape_format
}  // namespace pxb
