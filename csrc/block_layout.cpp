// Block-CSR layouts of a layer mask: which (BLOCK_OUT x BLOCK_IN) tiles of W hold a nonzero.
//
// The forward kernel walks the tiles of one output block (row_ptr/col_idx), the dX kernel the
// tiles of one input block (the transposed lists), and the dW kernel one program per tile
// (tile_row/col_idx). All index metadata is int32, as Triton indexes with int32 cheapest.
#include "block_layout.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "parallel.hpp"

namespace strnn {

std::size_t read_block(const py::handle& obj, const std::string& name) {
  return static_cast<std::size_t>(read_int(obj, name, 1, kMaxBlock));
}

void mark_tile_row(const BitMatrix& m, std::size_t rb, std::size_t block_rows, std::size_t block_cols,
                   const std::uint32_t* row_order, const std::uint32_t* col_pos, std::vector<char>& hit) {
  for (std::size_t k = rb * block_rows; k < std::min(m.rows(), (rb + 1) * block_rows); ++k)
    m.for_each_set(row_order ? row_order[k] : k,
                   [&](std::size_t j) { hit[(col_pos ? col_pos[j] : j) / block_cols] = 1; });
}

std::uint64_t count_tiles(const BitMatrix& m, std::size_t block_rows, std::size_t block_cols,
                          const std::uint32_t* row_order, const std::uint32_t* col_pos) {
  const std::size_t n_rb = ceil_div(m.rows(), block_rows), n_cb = ceil_div(m.cols(), block_cols);
  std::vector<char> hit(n_cb);
  std::uint64_t tiles = 0;
  for (std::size_t rb = 0; rb < n_rb; ++rb) {
    std::fill(hit.begin(), hit.end(), 0);
    mark_tile_row(m, rb, block_rows, block_cols, row_order, col_pos, hit);
    tiles += static_cast<std::uint64_t>(std::count(hit.begin(), hit.end(), 1));
  }
  return tiles;
}

namespace {

py::array_t<std::int32_t> to_int32(const std::vector<std::int32_t>& v) {
  py::array_t<std::int32_t> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(std::int32_t));
  return a;
}

py::dict block_layout(const py::handle& mask, const py::handle& block_out, const py::handle& block_in) {
  const BitMatrix M = read_binary_matrix(mask, "mask");
  const std::size_t bo = read_block(block_out, "block_out"), bi = read_block(block_in, "block_in");
  const std::size_t n_rb = ceil_div(M.rows(), bo), n_cb = ceil_div(M.cols(), bi);
  // Row blocks and column blocks are < 2**31 because the sides are; the tile count may not be.
  if (static_cast<std::uint64_t>(n_rb) * n_cb > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max()))
    throw py::value_error("mask has more than 2**31 tiles of (" + std::to_string(bo) + ", " + std::to_string(bi) +
                          "); use larger blocks");

  std::vector<std::int32_t> row_ptr(n_rb + 1, 0), col_idx, tile_row, t_row_ptr(n_cb + 1, 0), t_col_idx;
  {
    py::gil_scoped_release release;
    std::vector<std::vector<std::int32_t>> per_row(n_rb);
    parallel_for(n_rb, [&](std::size_t b, std::size_t e) {
      std::vector<char> hit(n_cb);
      for (std::size_t rb = b; rb < e; ++rb) {
        std::fill(hit.begin(), hit.end(), 0);
        mark_tile_row(M, rb, bo, bi, nullptr, nullptr, hit);
        for (std::size_t cb = 0; cb < n_cb; ++cb)
          if (hit[cb]) per_row[rb].push_back(static_cast<std::int32_t>(cb));
      }
    }, 1);
    for (std::size_t rb = 0; rb < n_rb; ++rb) {
      row_ptr[rb + 1] = row_ptr[rb] + static_cast<std::int32_t>(per_row[rb].size());
      col_idx.insert(col_idx.end(), per_row[rb].begin(), per_row[rb].end());
      tile_row.insert(tile_row.end(), per_row[rb].size(), static_cast<std::int32_t>(rb));
    }
    // Counting sort by column block; visiting tiles in row order keeps each list ascending.
    for (std::int32_t cb : col_idx) ++t_row_ptr[cb + 1];
    std::partial_sum(t_row_ptr.begin(), t_row_ptr.end(), t_row_ptr.begin());
    t_col_idx.resize(col_idx.size());
    std::vector<std::int32_t> fill(t_row_ptr.begin(), t_row_ptr.end() - 1);
    for (std::size_t t = 0; t < col_idx.size(); ++t) t_col_idx[fill[col_idx[t]]++] = tile_row[t];
  }
  py::dict out;
  out["row_ptr"] = to_int32(row_ptr);
  out["col_idx"] = to_int32(col_idx);
  out["tile_row"] = to_int32(tile_row);
  out["t_row_ptr"] = to_int32(t_row_ptr);
  out["t_col_idx"] = to_int32(t_col_idx);
  out["grid"] = py::make_tuple(n_rb, n_cb);
  return out;
}

}  // namespace

void bind_block_layout(py::module_& m) {
  m.def("block_layout", &block_layout, py::arg("mask"), py::arg("block_out"), py::arg("block_in"),
        "Block-CSR of the nonzero (block_out x block_in) tiles of an (out x in) mask.\n\n"
        "Returns a dict of int32 arrays: row_ptr/col_idx/tile_row (tiles by output block),\n"
        "t_row_ptr/t_col_idx (the transposed lists: output blocks by input block), and grid,\n"
        "the (row blocks, column blocks) tuple.");
}

}  // namespace strnn
