// One bind_* per C++ unit; module.cpp only registers them.
#pragma once

#include <pybind11/pybind11.h>

namespace strnn {
void bind_greedy(pybind11::module_& m);
void bind_zuko(pybind11::module_& m);
void bind_made(pybind11::module_& m);
void bind_paths(pybind11::module_& m);
void bind_block_layout(pybind11::module_& m);
void bind_reorder(pybind11::module_& m);
void bind_spline(pybind11::module_& m);
void bind_affine(pybind11::module_& m);
void bind_masked_linear(pybind11::module_& m);
void bind_csv_format(pybind11::module_& m);
}  // namespace strnn
