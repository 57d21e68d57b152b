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

// For every key p in `keys`, the sorted members m (< n) with sup(p, g) for the group g of m:
// rows of a mask whose pattern is p list exactly these columns. Built with one n-bit scratch row
// per distinct key, so the cost is the output plus n/64 words per key, never n per row.
std::vector<std::vector<std::uint32_t>> members_of_supersets(const BitMatrix& sup, const std::vector<std::size_t>& keys,
                                                             const std::vector<std::vector<std::uint32_t>>& group,
                                                             std::size_t n) {
  std::vector<std::vector<std::uint32_t>> out(sup.rows());
  std::vector<char> wanted(sup.rows(), 0);
  std::vector<std::size_t> distinct;
  for (auto p : keys)
    if (!wanted[p]) wanted[p] = 1, distinct.push_back(p);
  parallel_for(distinct.size(), [&](std::size_t b, std::size_t e) {
    BitMatrix scratch(1, n);
    for (std::size_t t = b; t < e; ++t) {
      const std::size_t p = distinct[t];
      std::fill(scratch.row(0), scratch.row(0) + scratch.words(), 0);
      sup.for_each_set(p, [&](std::size_t q) {
        for (auto m : group[q]) scratch.set(0, m);
      });
      scratch.for_each_set(0, [&](std::size_t m) { out[p].push_back(static_cast<std::uint32_t>(m)); });
    }
  }, 16);
  return out;
}

py::list zuko_factorize(const py::handle& adjacency, const py::handle& hidden_sizes, bool sparse,
                        const py::handle& max_bytes) {
  BitMatrix A = read_binary_matrix(adjacency, "adjacency");
  std::vector<std::size_t> widths = read_hidden_sizes(hidden_sizes, "hidden_sizes");
  const std::size_t n_out = A.rows(), n_in = A.cols();
  MaskChain chain(n_in, widths, n_out, sparse, read_max_bytes(max_bytes));
  bool any = false;
  for (std::size_t i = 0; i < n_out && !any; ++i) any = A.row_any(i);
  if (!any) throw py::value_error("adjacency is all zero: it would yield a null Jacobian");

  {
    py::gil_scoped_release release;
    if (widths.empty()) {
      const BitMatrix At = A.transposed();
      chain.write(0, [&](std::size_t j, auto&& emit) { At.for_each_set(j, emit); });
    } else {
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
      std::vector<std::size_t> indices;  // unique row copied by each unit of the previous layer
      for (std::size_t l = 0; l < widths.size(); ++l) {
        const std::size_t width = widths[l];
        std::vector<std::size_t> next(width);
        std::vector<std::vector<std::uint32_t>> units_of(u);  // unique row -> units copying it
        for (std::size_t k = 0; k < width; ++k) {
          next[k] = reachable[k % reachable.size()];
          units_of[next[k]].push_back(static_cast<std::uint32_t>(k));
        }
        if (l == 0) {
          // Row j: the units whose row contains input j.
          std::vector<std::vector<std::uint32_t>> units_of_input(n_in);
          for (std::size_t k = 0; k < width; ++k)
            U.for_each_set(next[k], [&](std::size_t j) { units_of_input[j].push_back(static_cast<std::uint32_t>(k)); });
          chain.write(0, [&](std::size_t j, auto&& emit) {
            for (auto k : units_of_input[j]) emit(k);
          });
        } else {
          // Row kp: the units whose row is a superset of the row unit kp copies.
          const auto cols = members_of_supersets(sup, indices, units_of, width);
          chain.write(l, [&](std::size_t kp, auto&& emit) {
            for (auto k : cols[indices[kp]]) emit(k);
          });
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
      // Output mask, row k: the outputs whose row is a superset of the row unit k copies.
      std::vector<std::vector<std::uint32_t>> outputs_of(u);
      for (std::size_t i = 0; i < n_out; ++i) outputs_of[inv[i]].push_back(static_cast<std::uint32_t>(i));
      const auto cols = members_of_supersets(sup, indices, outputs_of, n_out);
      chain.write(widths.size(), [&](std::size_t k, auto&& emit) {
        for (auto i : cols[indices[k]]) emit(i);
      });
    }
  }
  return chain.to_list();
}

}  // namespace

void bind_zuko(py::module_& m) {
  m.def("zuko_factorize", &zuko_factorize, py::arg("adjacency"), py::arg("hidden_sizes"), py::arg("sparse") = false,
        py::arg("max_bytes") = 0,
        "Zuko's factorization. Returns uint8 masks, input side first (CSR triples with sparse=True).");
}

}  // namespace strnn
