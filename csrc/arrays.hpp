// Reading untrusted Python arguments (numpy arrays, scipy CSR matrices, integers) and writing
// uint8 masks back, dense or as CSR.
//
// Any dtype, ndim, stride or byte order may arrive here; everything is checked before it is
// read and every failure is a Python ValueError/TypeError naming the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "bitmatrix.hpp"
#include "parallel.hpp"

namespace strnn {

namespace py = pybind11;

// Largest dimension accepted anywhere: index metadata downstream is int32.
constexpr std::int64_t kMaxDim = 2147483647;
// Largest number of mask entries a factorization may write (16 GiB of uint8).
constexpr std::uint64_t kMaxEntries = std::uint64_t{1} << 34;

// The one integer reader: a Python int (not a bool) in [lo, hi], else TypeError/ValueError
// naming `name`.
long long read_int(const py::handle& obj, const std::string& name, long long lo, long long hi);

// Validates a 2-D binary matrix and packs it: a numpy array (bool, integer or float holding only
// 0 and 1) or a scipy CSR matrix (any object with format == "csr", shape, indptr, indices, data).
BitMatrix read_binary_matrix(const py::handle& obj, const std::string& name);

// The one mask-chain reader: a non-empty sequence of binary matrices, each (fan_in x fan_out),
// input side first, with matching inner sizes.
std::vector<BitMatrix> read_mask_chain(const py::handle& obj);

// Validates a sequence of positive layer widths.
std::vector<std::size_t> read_hidden_sizes(const py::handle& obj, const std::string& name);

// Reads the optional byte budget of a factorization (0 = no limit beyond kMaxEntries).
std::uint64_t read_max_bytes(const py::handle& obj);

// The masks of the chain n_in -> widths... -> n_out, each (fan_in x fan_out), filled row by row
// with the GIL released and returned as numpy uint8 arrays (dense) or as CSR triples
// (indptr, indices, shape) whose every stored value is 1. A factorizer describes mask l by a
// function row_fn(r, emit) that calls emit(c) for every nonzero column c of row r, in increasing
// order; the same function serves both outputs, so they cannot disagree.
class MaskChain {
 public:
  // Dense masks are allocated here (GIL held) and checked against kMaxEntries and max_bytes;
  // sparse ones are checked against max_bytes as each mask's nonzeros are counted.
  MaskChain(std::size_t n_in, const std::vector<std::size_t>& widths, std::size_t n_out, bool sparse,
            std::uint64_t max_bytes);

  std::size_t size() const { return fan_.size() - 1; }

  template <class RowFn>
  void write(std::size_t l, RowFn&& row_fn);

  py::list to_list();  // GIL held

 private:
  struct Csr {
    bool wide = false;  // int64 indices (more than 2**31 - 1 nonzeros or columns)
    std::vector<std::int32_t> indptr32, indices32;
    std::vector<std::int64_t> indptr64, indices64;
  };

  void account(std::size_t l, std::uint64_t bytes);

  std::vector<std::size_t> fan_;
  bool sparse_;
  std::uint64_t max_bytes_, used_bytes_ = 0;
  std::vector<py::array_t<std::uint8_t>> dense_;
  std::vector<std::uint8_t*> data_;
  std::vector<Csr> csr_;
};

// Rows per thread: writing a row costs little, so small masks stay on one thread (spawning
// threads would cost more than the write).
constexpr std::size_t kRowsPerThread = 1024;

template <class RowFn>
void MaskChain::write(std::size_t l, RowFn&& row_fn) {
  const std::size_t rows = fan_[l], cols = fan_[l + 1];
  if (!sparse_) {
    std::uint8_t* out = data_[l];
    // Every row is written by one thread only.
    parallel_for(rows, [&](std::size_t b, std::size_t e) {
      for (std::size_t r = b; r < e; ++r) {
        std::uint8_t* row = out + r * cols;
        row_fn(r, [row](std::size_t c) { row[c] = 1; });
      }
    }, kRowsPerThread);
    return;
  }
  // Two passes (count, then fill) so that the index arrays are allocated once, at their size,
  // and the byte budget is checked before they are.
  std::vector<std::uint64_t> start(rows + 1, 0);
  parallel_for(rows, [&](std::size_t b, std::size_t e) {
    for (std::size_t r = b; r < e; ++r) {
      std::uint64_t n = 0;
      row_fn(r, [&n](std::size_t) { ++n; });
      start[r + 1] = n;
    }
  }, kRowsPerThread);
  for (std::size_t r = 0; r < rows; ++r) start[r + 1] += start[r];
  const std::uint64_t nnz = start[rows];
  const auto i32max = static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max());
  Csr& csr = csr_[l];
  csr.wide = nnz > i32max || cols > i32max;
  const std::uint64_t index_size = csr.wide ? 8 : 4;
  account(l, (rows + 1) * index_size + nnz * (index_size + 1));  // + 1: the uint8 data
  auto fill = [&](auto& indptr, auto& indices) {
    using I = typename std::decay_t<decltype(indptr)>::value_type;
    indptr.resize(rows + 1);
    for (std::size_t r = 0; r <= rows; ++r) indptr[r] = static_cast<I>(start[r]);
    indices.resize(nnz);
    parallel_for(rows, [&](std::size_t b, std::size_t e) {
      for (std::size_t r = b; r < e; ++r) {
        I* dst = indices.data() + start[r];
        row_fn(r, [&dst](std::size_t c) { *dst++ = static_cast<I>(c); });
      }
    }, kRowsPerThread);
  };
  if (csr.wide) fill(csr.indptr64, csr.indices64);
  else fill(csr.indptr32, csr.indices32);
}

}  // namespace strnn
