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

// Throws ValueError if writing `entries` more bytes would pass kMaxEntries.
void check_budget(std::uint64_t& used, std::uint64_t rows, std::uint64_t cols, const std::string& what);

}  // namespace strnn
