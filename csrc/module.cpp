#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "strnn_fast C++ core (numpy or scipy CSR in, numpy out): greedy/zuko/MADE factorizers with dense or\n"
      "CSR masks, mask checks and path counts, block-CSR layouts of masks, hidden-unit reordering, and the\n"
      "rational-quadratic spline and the affine map of the normalizers (forward, backward, inverse) on the\n"
      "CPU, the CSR products of masked layers (csr_linear, csr_spmm, csr_sddmm, csr_backward), and\n"
      "repr-exact CSV text of float64 rows (format_csv_rows).";
  strnn::bind_greedy(m);
  strnn::bind_zuko(m);
  strnn::bind_made(m);
  strnn::bind_paths(m);
  strnn::bind_block_layout(m);
  strnn::bind_reorder(m);
  strnn::bind_spline(m);
  strnn::bind_affine(m);
  strnn::bind_masked_linear(m);
  strnn::bind_csv_format(m);
}
