// Tile-level views of a mask, shared by the block layouts and the hidden-unit reordering.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bitmatrix.hpp"

namespace strnn {

// Largest tile side accepted: Triton tiles are powers of two far below this, and the bound keeps
// every tile count and index inside int32.
constexpr std::int64_t kMaxBlock = 1 << 16;

// Validates a tile side (a Python int in [1, kMaxBlock]) and returns it.
std::size_t read_block(const pybind11::handle& obj, const std::string& name);

inline std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

// The one scan behind every tile count (the block layouts list the tiles, the hidden-unit
// reordering counts them). Marks in `hit` (one entry per column block, zeroed by the caller)
// the column blocks of the nonzero (block_rows x block_cols) tiles in row block `rb` of m.
// Row k of the block is m's row row_order[rb * block_rows + k], and column j lies in column
// block col_pos[j] / block_cols; nullptr means the identity order.
void mark_tile_row(const BitMatrix& m, std::size_t rb, std::size_t block_rows, std::size_t block_cols,
                   const std::uint32_t* row_order, const std::uint32_t* col_pos, std::vector<char>& hit);

// Number of nonzero tiles of m, rows and columns ordered as in mark_tile_row.
std::uint64_t count_tiles(const BitMatrix& m, std::size_t block_rows, std::size_t block_cols,
                          const std::uint32_t* row_order = nullptr, const std::uint32_t* col_pos = nullptr);

}  // namespace strnn
