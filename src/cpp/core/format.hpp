/// \file format.hpp
/// \brief Numbers in error messages: the shortest text that reads back as the
///        same double (0.3, not 0.29999999999999999), as Python's repr does.
#pragma once

#include <charconv>
#include <string>

namespace pxb {

inline std::string shortest(double v) {
    char buf[32];
    const auto res = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, res.ptr);
}

}  // namespace pxb
