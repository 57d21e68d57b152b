// MADE's deterministic degree assignment (the reference's MADEFactorizer) for the full lower
// triangle: inputs have degree j, hidden unit k of every layer degree d-1-(k mod d).
#include <string>

#include "arrays.hpp"
#include "bindings.hpp"

namespace strnn {

namespace {

py::list made_factorize(const py::handle& adjacency, const py::handle& hidden_sizes) {
  BitMatrix A = read_binary_matrix(adjacency, "adjacency");
  std::vector<std::size_t> widths = read_hidden_sizes(hidden_sizes, "hidden_sizes");
  const std::size_t d = A.rows();
  if (A.cols() != d) throw py::value_error("adjacency must be square for method='made'");
  for (std::size_t i = 0; i < d; ++i)
    for (std::size_t j = 0; j < d; ++j)
      if (A.test(i, j) != (j < i))
        throw py::value_error("method='made' needs the full strictly lower-triangular adjacency "
                              "(A[i, j] = 1 iff j < i); use method='greedy' for other graphs");
  MaskChain chain(d, widths, d);
  std::vector<std::size_t> fan = {d};
  fan.insert(fan.end(), widths.begin(), widths.end());
  fan.push_back(d);
  const std::vector<std::uint8_t*>& out = chain.data;
  {
    py::gil_scoped_release release;
    auto degree = [&](std::size_t layer, std::size_t k) -> std::size_t {
      return layer == 0 ? k : d - 1 - (k % d);  // layer 0 = inputs
    };
    const std::size_t L = widths.size();
    for (std::size_t l = 0; l <= L; ++l) {
      const std::size_t rows = fan[l], cols = fan[l + 1];
      std::uint8_t* m = out[l];
      for (std::size_t a = 0; a < rows; ++a) {
        const std::size_t da = degree(l, a);
        for (std::size_t b = 0; b < cols; ++b) {
          // Hidden units take inputs of degree <= theirs; outputs need strictly smaller degree.
          m[a * cols + b] = l == L ? (da < b) : (da <= degree(l + 1, b));
        }
      }
    }
  }
  return chain.to_list();
}

}  // namespace

void bind_made(py::module_& m) {
  m.def("made_factorize", &made_factorize, py::arg("adjacency"), py::arg("hidden_sizes"),
        "MADE's factorization of the full lower triangle. Returns uint8 masks, input side first.");
}

}  // namespace strnn
