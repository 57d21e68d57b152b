// Path counts through a chain of masks (the paper's Eq. 2 is their sum) and the validity check
// "the product of the masks has exactly A's sparsity pattern".
#include <limits>
#include <string>

#include "arrays.hpp"
#include "bindings.hpp"
#include "parallel.hpp"

namespace strnn {

namespace {

// Calls f(j, reach) with the set of outputs reachable from input j, for every input.
template <class F>
void for_each_input_reach(const std::vector<BitMatrix>& chain, F&& f) {
  const std::size_t n_in = chain.front().rows();
  parallel_for(n_in, [&](std::size_t b, std::size_t e) {
    std::vector<std::vector<std::uint64_t>> cur(chain.size());
    for (std::size_t l = 0; l < chain.size(); ++l) cur[l].resize(chain[l].words());
    for (std::size_t j = b; j < e; ++j) {
      std::memcpy(cur[0].data(), chain[0].row(j), chain[0].words() * 8);
      for (std::size_t l = 1; l < chain.size(); ++l) {
        std::fill(cur[l].begin(), cur[l].end(), 0);
        const std::size_t pw = chain[l - 1].words();
        for (std::size_t w = 0; w < pw; ++w) {
          std::uint64_t bits = cur[l - 1][w];
          while (bits) {
            const std::uint64_t* r = chain[l].row(w * 64 + static_cast<std::size_t>(__builtin_ctzll(bits)));
            bits &= bits - 1;
            for (std::size_t t = 0; t < cur[l].size(); ++t) cur[l][t] |= r[t];
          }
        }
      }
      f(j, cur.back().data());
    }
  }, 8);
}

bool check_masks(const py::handle& masks, const py::handle& adjacency) {
  std::vector<BitMatrix> chain = read_mask_chain(masks);
  BitMatrix A = read_binary_matrix(adjacency, "adjacency");
  if (A.rows() != chain.back().cols() || A.cols() != chain.front().rows())
    throw py::value_error("adjacency has shape (" + std::to_string(A.rows()) + ", " + std::to_string(A.cols()) +
                          ") but the masks map " + std::to_string(chain.front().rows()) + " inputs to " +
                          std::to_string(chain.back().cols()) + " outputs");
  const BitMatrix At = A.transposed();  // row j = outputs allowed to see input j
  std::vector<char> ok(At.rows(), 1);
  {
    py::gil_scoped_release release;
    for_each_input_reach(chain, [&](std::size_t j, const std::uint64_t* reach) {
      for (std::size_t w = 0; w < At.words(); ++w)
        if (reach[w] != At.row(j)[w]) {
          ok[j] = 0;
          return;
        }
    });
  }
  for (char c : ok)
    if (!c) return false;
  return true;
}

py::array_t<std::int64_t> path_counts(const py::handle& masks) {
  std::vector<BitMatrix> chain = read_mask_chain(masks);
  const std::size_t n_in = chain.front().rows(), n_out = chain.back().cols();
  py::array_t<std::int64_t> result({static_cast<py::ssize_t>(n_out), static_cast<py::ssize_t>(n_in)});
  std::int64_t* out = result.mutable_data();
  bool overflow = false;
  {
    py::gil_scoped_release release;
    parallel_for(n_in, [&](std::size_t b, std::size_t e) {
      std::vector<std::vector<std::uint64_t>> count(chain.size());
      for (std::size_t l = 0; l < chain.size(); ++l) count[l].resize(chain[l].cols());
      for (std::size_t j = b; j < e; ++j) {
        std::fill(count[0].begin(), count[0].end(), 0);
        chain[0].for_each_set(j, [&](std::size_t k) { count[0][k] = 1; });
        for (std::size_t l = 1; l < chain.size(); ++l) {
          std::fill(count[l].begin(), count[l].end(), 0);
          for (std::size_t k = 0; k < count[l - 1].size(); ++k) {
            const std::uint64_t c = count[l - 1][k];
            if (!c) continue;
            chain[l].for_each_set(k, [&](std::size_t t) {
              if (__builtin_add_overflow(count[l][t], c, &count[l][t])) overflow = true;
            });
          }
        }
        for (std::size_t i = 0; i < n_out; ++i) {
          const std::uint64_t c = count.back()[i];
          if (c > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) overflow = true;
          out[i * n_in + j] = static_cast<std::int64_t>(c);
        }
      }
    }, 8);
  }
  if (overflow) throw py::value_error("path counts overflow int64; use connections() for the total");
  return result;
}

// Total number of input->output paths (Eq. 2) without forming the n_out x n_in matrix.
double connections(const py::handle& masks) {
  std::vector<BitMatrix> chain = read_mask_chain(masks);
  std::vector<double> v(chain.front().rows(), 1.0);
  {
    py::gil_scoped_release release;
    for (const auto& m : chain) {
      std::vector<double> next(m.cols(), 0.0);
      for (std::size_t k = 0; k < m.rows(); ++k) {
        const double c = v[k];
        if (c != 0.0) m.for_each_set(k, [&](std::size_t t) { next[t] += c; });
      }
      v = std::move(next);
    }
  }
  double total = 0.0;
  for (double x : v) total += x;
  return total;
}

}  // namespace

void bind_paths(py::module_& m) {
  m.def("check_masks", &check_masks, py::arg("masks"), py::arg("adjacency"),
        "True iff the product of the masks has exactly the adjacency's sparsity pattern.");
  m.def("path_counts", &path_counts, py::arg("masks"),
        "Integer (n_out x n_in) matrix of input->output path counts; its sum is Eq. 2.");
  m.def("connections", &connections, py::arg("masks"), "Total number of input->output paths (Eq. 2), as float.");
}

}  // namespace strnn
