#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "strnn_fast C++ core (numpy or scipy CSR in, numpy out): greedy/zuko/MADE factorizers with dense or\n"
      "CSR masks, mask checks and path counts, block-CSR layouts of masks, hidden-unit reordering, and the\n"
      "rational-quadratic spline of the spline normalizer (forward, backward, inverse) on the CPU, and the\n"
      "CSR products of masked layers (csr_spmm, csr_sddmm), and repr-exact CSV text of float64 rows\n"
      "(format_csv_rows).";
  strnn::bind_greedy(m);
  strnn::bind_zuko(m);
  strnn::bind_made(m);
  strnn::bind_paths(m);
  strnn::bind_block_layout(m);
  strnn::bind_reorder(m);
  strnn::bind_spline(m);
  strnn::bind_masked_linear(m);
  strnn::bind_csv_format(m);
}
