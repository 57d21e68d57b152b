// MADE's deterministic degree assignment (the reference's MADEFactorizer) for the full lower
// triangle: inputs have degree j, hidden unit k of every layer degree d-1-(k mod d).
#include <string>

#include "arrays.hpp"
#include "bindings.hpp"

namespace strnn {

namespace {

py::list made_factorize(const py::handle& adjacency, const py::handle& hidden_sizes, bool sparse,
                        const py::handle& max_bytes) {
  BitMatrix A = read_binary_matrix(adjacency, "adjacency");
  std::vector<std::size_t> widths = read_hidden_sizes(hidden_sizes, "hidden_sizes");
  const std::size_t d = A.rows();
  if (A.cols() != d) throw py::value_error("adjacency must be square for method='made'");
  for (std::size_t i = 0; i < d; ++i)
    for (std::size_t j = 0; j < d; ++j)
      if (A.test(i, j) != (j < i))
        throw py::value_error("method='made' needs the full strictly lower-triangular adjacency "
                              "(A[i, j] = 1 iff j < i); use method='greedy' for other graphs");
  MaskChain chain(d, widths, d, sparse, read_max_bytes(max_bytes));
  {
    py::gil_scoped_release release;
    // Degrees: input j has degree j; hidden unit k of every layer d-1-(k mod d). Hidden units
    // take inputs of degree <= theirs; outputs need a strictly smaller degree.
    const std::size_t L = widths.size();
    for (std::size_t l = 0; l <= L; ++l) {
      const std::size_t cols = l == L ? d : widths[l];
      chain.write(l, [&](std::size_t a, auto&& emit) {
        const std::size_t da = l == 0 ? a : d - 1 - (a % d);
        if (l == L) {
          for (std::size_t b = da + 1; b < cols; ++b) emit(b);
        } else {
          for (std::size_t b = 0; b < cols; ++b)
            if (da <= d - 1 - (b % d)) emit(b);
        }
      });
    }
  }
  return chain.to_list();
}

}  // namespace

void bind_made(py::module_& m) {
  m.def("made_factorize", &made_factorize, py::arg("adjacency"), py::arg("hidden_sizes"), py::arg("sparse") = false,
        py::arg("max_bytes") = 0,
        "MADE's factorization of the full lower triangle. Returns uint8 masks, input side first (CSR triples\n"
        "with sparse=True).");
}

}  // namespace strnn
