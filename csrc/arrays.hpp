// Reading untrusted numpy arrays into bit matrices, and writing uint8 masks back.
//
// Any dtype, ndim, stride or byte order may arrive here; everything is checked before it is
// read and every failure is a Python ValueError/TypeError naming the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bitmatrix.hpp"

namespace strnn {

namespace py = pybind11;

// Largest dimension accepted anywhere: index metadata downstream is int32.
constexpr std::int64_t kMaxDim = 2147483647;
// Largest number of mask entries a factorization may write (16 GiB of uint8).
constexpr std::uint64_t kMaxEntries = std::uint64_t{1} << 34;

// Validates a 2-D binary array (bool, integer or float holding only 0 and 1) and packs it.
BitMatrix read_binary_matrix(const py::handle& obj, const std::string& name);

// Validates a sequence of positive layer widths.
std::vector<std::size_t> read_hidden_sizes(const py::handle& obj, const std::string& name);

// A zero-filled C-contiguous uint8 array (allocated with the GIL held).
py::array_t<std::uint8_t> zeros_u8(std::size_t rows, std::size_t cols);

// Zeroed uint8 masks for the chain n_in -> widths... -> n_out, each (fan_in x fan_out), checked
// against kMaxEntries; `data` points into them so they can be filled with the GIL released.
struct MaskChain {
  std::vector<py::array_t<std::uint8_t>> arrays;
  std::vector<std::uint8_t*> data;

  MaskChain(std::size_t n_in, const std::vector<std::size_t>& widths, std::size_t n_out);
  py::list to_list() const;
};

// out (cols x rows) = the 0/1 transpose of m: the single mask of a network with no hidden layer.
void write_transposed(const BitMatrix& m, std::uint8_t* out);

}  // namespace strnn
