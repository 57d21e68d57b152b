// Tile-level views of a mask, shared by the block layouts and the hidden-unit reordering.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace strnn {

// Largest tile side accepted: Triton tiles are powers of two far below this, and the bound keeps
// every tile count and index inside int32.
constexpr std::int64_t kMaxBlock = 1 << 16;

// Validates a tile side (a Python int in [1, kMaxBlock]) and returns it.
std::size_t read_block(const pybind11::handle& obj, const std::string& name);

inline std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

}  // namespace strnn
