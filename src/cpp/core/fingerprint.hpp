/// \file fingerprint.hpp
/// \brief A 64-bit fingerprint (FNV-1a) of an app's problem parameters, so
///        that ranks can check cheaply that they solve the same problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace pxb {

class Fingerprint {
public:
    Fingerprint& add_bytes(const void* data, std::size_t n) noexcept {
        const auto* p = static_cast<const unsigned char*>(data);
        for (std::size_t k = 0; k < n; ++k) {
            h_ ^= p[k];
            h_ *= 1099511628211ULL;
        }
        return *this;
    }
    /// Doubles by their bit patterns: -0.0 and 0.0 differ, as do NaN payloads.
    Fingerprint& add(double v) noexcept { return add_bytes(&v, sizeof v); }
    Fingerprint& add(long long v) noexcept { return add_bytes(&v, sizeof v); }
    Fingerprint& add(int v) noexcept { return add(static_cast<long long>(v)); }
    Fingerprint& add(bool v) noexcept { return add(static_cast<long long>(v)); }
    Fingerprint& add(const std::vector<double>& v) noexcept {
        add(static_cast<long long>(v.size()));
        return v.empty() ? *this : add_bytes(v.data(), v.size() * sizeof(double));
    }
    Fingerprint& add(const std::string& s) noexcept {
        add(static_cast<long long>(s.size()));
        return add_bytes(s.data(), s.size());
    }
    std::uint64_t value() const noexcept { return h_; }

private:
    std::uint64_t h_ = 14695981039346656037ULL;
};

}  // namespace pxb
