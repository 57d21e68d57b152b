// Zuko's factorization (as in the reference's ZukoFactorizer): unique rows of A, sorted
// lexicographically as torch.unique(dim=0) sorts them; hidden units cycle through the reachable
// unique rows; unit p feeds unit q iff row p is a subset of row q.
#include <algorithm>
#include <numeric>
#include <string>

#include "arrays.hpp"
#include "bindings.hpp"
#include "parallel.hpp"

namespace strnn {

namespace {

// Lexicographic order of 0/1 rows, element 0 most significant (torch.unique's order).
bool row_less(const BitMatrix& A, std::size_t x, std::size_t y) {
  const std::uint64_t *a = A.row(x), *b = A.row(y);
  for (std::size_t w = 0; w < A.words(); ++w) {
    const std::uint64_t diff = a[w] ^ b[w];
    if (diff) return ((b[w] >> __builtin_ctzll(diff)) & 1u) != 0;
  }
  return false;
}

py::list zuko_factorize(const py::handle& adjacency, const py::handle& hidden_sizes) {
  BitMatrix A = read_binary_matrix(adjacency, "adjacency");
  std::vector<std::size_t> widths = read_hidden_sizes(hidden_sizes, "hidden_sizes");
  const std::size_t n_out = A.rows(), n_in = A.cols();
  MaskChain chain(n_in, widths, n_out);
  bool any = false;
  for (std::size_t i = 0; i < n_out && !any; ++i) any = A.row_any(i);
  if (!any) throw py::value_error("adjacency is all zero: it would yield a null Jacobian");

  const std::vector<std::uint8_t*>& out = chain.data;
  {
    py::gil_scoped_release release;
    std::vector<std::size_t> order(n_out);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return row_less(A, x, y); });
    std::vector<std::size_t> unique_rows;  // index into A of each unique row
    std::vector<std::size_t> inv(n_out);
    for (std::size_t t = 0; t < n_out; ++t) {
      const std::size_t i = order[t];
      if (unique_rows.empty() || row_less(A, unique_rows.back(), i)) unique_rows.push_back(i);
      inv[i] = unique_rows.size() - 1;
    }
    const std::size_t u = unique_rows.size();
    BitMatrix U(u, n_in);
    for (std::size_t p = 0; p < u; ++p) std::memcpy(U.row(p), A.row(unique_rows[p]), U.words() * 8);
    // sup.row(p) = unique rows q with U_p ⊆ U_q (column p of the reference's P).
    const BitMatrix Ut = U.transposed();
    BitMatrix sup(u, u);
    parallel_for(u, [&](std::size_t b, std::size_t e) {
      for (std::size_t p = b; p < e; ++p) {
        std::uint64_t* dst = sup.row(p);
        std::fill(dst, dst + sup.words(), ~std::uint64_t{0});
        U.for_each_set(p, [&](std::size_t j) {
          for (std::size_t w = 0; w < sup.words(); ++w) dst[w] &= Ut.row(j)[w];
        });
        if (u % 64) dst[sup.words() - 1] &= (std::uint64_t{1} << (u % 64)) - 1;
      }
    }, 16);

    std::vector<std::size_t> reachable;
    for (std::size_t p = 0; p < u; ++p)
      if (U.row_any(p)) reachable.push_back(p);
    std::vector<std::size_t> indices(widths.empty() ? 0 : widths[0]);
    for (std::size_t l = 0; l < widths.size(); ++l) {
      std::vector<std::size_t> next(widths[l]);
      for (std::size_t k = 0; k < widths[l]; ++k) next[k] = reachable[k % reachable.size()];
      const std::size_t width = widths[l];
      std::uint8_t* m = out[l];
      if (l == 0) {
        for (std::size_t k = 0; k < width; ++k) U.for_each_set(next[k], [&](std::size_t j) { m[j * width + k] = 1; });
      } else {
        for (std::size_t kp = 0; kp < indices.size(); ++kp)
          for (std::size_t k = 0; k < width; ++k) m[kp * width + k] = sup.test(indices[kp], next[k]) ? 1 : 0;
      }
      indices = std::move(next);
      // Unique rows that contain at least one chosen unit feed the next layer.
      std::vector<char> is_reach(u, 0);
      std::vector<char> chosen(u, 0);
      for (auto p : indices) chosen[p] = 1;
      for (std::size_t p = 0; p < u; ++p)
        if (chosen[p]) sup.for_each_set(p, [&](std::size_t q) { is_reach[q] = 1; });
      reachable.clear();
      for (std::size_t p = 0; p < u; ++p)
        if (is_reach[p]) reachable.push_back(p);
    }
    std::uint8_t* last = out.back();
    if (widths.empty()) {
      write_transposed(A, last);
    } else {
      for (std::size_t k = 0; k < indices.size(); ++k)
        for (std::size_t i = 0; i < n_out; ++i) last[k * n_out + i] = sup.test(indices[k], inv[i]) ? 1 : 0;
    }
  }
  return chain.to_list();
}

}  // namespace

void bind_zuko(py::module_& m) {
  m.def("zuko_factorize", &zuko_factorize, py::arg("adjacency"), py::arg("hidden_sizes"),
        "Zuko's factorization. Returns uint8 masks, input side first.");
}

}  // namespace strnn
