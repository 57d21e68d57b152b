// Hidden-unit reordering for block-sparse kernels.
//
// Permuting the units of a hidden layer (the columns of one mask together with the rows of the
// next) leaves the network's function class, its validity and its path counts unchanged, but
// changes how many (BLOCK_OUT x BLOCK_IN) tiles of the weights hold a nonzero — and a
// block-sparse kernel pays per tile. Layers are optimized one at a time with the neighbouring
// orders fixed (coordinate descent), over a few sweeps. For one layer, every unit is summarized
// by its *block signature*: the tiles of the previous layer it reads and of the next layer it
// feeds. The tile count of an order is then the sum over consecutive chunks of the size of the
// union of their signatures, so candidate orders are compared exactly and cheaply. The order
// kept for a layer is never worse than the one it had.
#include <pybind11/stl.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "block_layout.hpp"

namespace strnn {

namespace {

using Order = std::vector<std::uint32_t>;  // new position -> original unit

// Lexicographic comparison reading the highest bit first, so that nested prefixes {0..i} (the
// rows of a lower triangle) sort as a staircase.
bool lex_less(const std::uint64_t* a, const std::uint64_t* b, std::size_t words) {
  for (std::size_t w = words; w-- > 0;)
    if (a[w] != b[w]) return a[w] < b[w];
  return false;
}

// The block signatures of the units of one hidden layer, given the orders of its neighbours.
struct Layer {
  std::size_t units;
  BitMatrix in_sig, out_sig;  // tiles read in the previous layer / fed in the next layer
  BitMatrix in_pat;           // exact input pattern, in the previous layer's current positions
  std::size_t bo, bi;    // this layer is grouped by bo as an output and by bi as an input

  std::uint64_t cost(const Order& order) const {
    return chunk_cost(order, in_sig, bo) + chunk_cost(order, out_sig, bi);
  }

  static std::uint64_t chunk_cost(const Order& order, const BitMatrix& sig, std::size_t chunk) {
    std::vector<std::uint64_t> acc(sig.words());
    std::uint64_t total = 0;
    for (std::size_t s = 0; s < order.size(); s += chunk) {
      std::fill(acc.begin(), acc.end(), 0);
      for (std::size_t k = s; k < std::min(order.size(), s + chunk); ++k) {
        const std::uint64_t* r = sig.row(order[k]);
        for (std::size_t w = 0; w < sig.words(); ++w) acc[w] |= r[w];
      }
      total += popcount(acc.data(), acc.size());
    }
    return total;
  }
};

Order sorted_by(std::size_t n, const std::function<bool(std::uint32_t, std::uint32_t)>& less) {
  Order o(n);
  std::iota(o.begin(), o.end(), 0u);
  std::stable_sort(o.begin(), o.end(), less);
  return o;
}

// Greedy clustering: walk `seed_order`; each chunk starts from the first free unit and grows by
// the unit, among the next `window` free ones, that adds the fewest new tiles to the chunk.
Order cluster(const Layer& L, const Order& seed_order, std::size_t chunk, std::size_t window) {
  const std::size_t n = seed_order.size(), wi = L.in_sig.words(), wo = L.out_sig.words();
  std::vector<char> taken(n, 0);
  std::vector<std::uint64_t> acc_in(wi), acc_out(wo);
  Order out;
  out.reserve(n);
  std::size_t first = 0;
  auto growth = [&](std::uint32_t u) {
    std::size_t g = 0;
    const std::uint64_t* a = L.in_sig.row(u);
    for (std::size_t w = 0; w < wi; ++w) g += static_cast<std::size_t>(__builtin_popcountll(a[w] & ~acc_in[w]));
    const std::uint64_t* b = L.out_sig.row(u);
    for (std::size_t w = 0; w < wo; ++w) g += static_cast<std::size_t>(__builtin_popcountll(b[w] & ~acc_out[w]));
    return g;
  };
  auto take = [&](std::size_t idx) {
    taken[idx] = 1;
    const std::uint32_t u = seed_order[idx];
    out.push_back(u);
    for (std::size_t w = 0; w < wi; ++w) acc_in[w] |= L.in_sig.row(u)[w];
    for (std::size_t w = 0; w < wo; ++w) acc_out[w] |= L.out_sig.row(u)[w];
  };
  while (out.size() < n) {
    while (taken[first]) ++first;
    std::fill(acc_in.begin(), acc_in.end(), 0);
    std::fill(acc_out.begin(), acc_out.end(), 0);
    take(first);
    for (std::size_t filled = 1; filled < chunk && out.size() < n; ++filled) {
      std::size_t best = n, best_g = 0, seen = 0;
      for (std::size_t idx = first; idx < n && seen < window; ++idx) {
        if (taken[idx]) continue;
        ++seen;
        const std::size_t g = growth(seed_order[idx]);
        if (best == n || g < best_g) {
          best = idx;
          best_g = g;
          if (g == 0) break;
        }
      }
      take(best);
    }
  }
  return out;
}

class Reorderer {
 public:
  Reorderer(std::vector<BitMatrix> chain, std::size_t bo, std::size_t bi) : chain_(std::move(chain)), bo_(bo), bi_(bi) {
    for (const auto& m : chain_) trans_.push_back(m.transposed());
    for (std::size_t l = 0; l <= chain_.size(); ++l) {
      const std::size_t n = l < chain_.size() ? chain_[l].rows() : chain_.back().cols();
      Order o(n);
      std::iota(o.begin(), o.end(), 0u);
      orders_.push_back(o);
      pos_.push_back(std::vector<std::uint32_t>(o.begin(), o.end()));
    }
    methods_.assign(chain_.size() + 1, "identity");
  }

  // Nonzero tiles of each mask (fan_in x fan_out) in the current orders: inputs grouped by bi,
  // outputs by bo, as the (out x in) weight's (bo x bi) tiles.
  std::vector<std::uint64_t> tiles() const {
    std::vector<std::uint64_t> t;
    for (std::size_t l = 0; l < chain_.size(); ++l)
      t.push_back(count_tiles(chain_[l], bi_, bo_, orders_[l].data(), pos_[l + 1].data()));
    return t;
  }

  void run(std::size_t sweeps) {
    for (std::size_t s = 0; s < sweeps; ++s) {
      bool improved = false;
      for (std::size_t h = 1; h < chain_.size(); ++h) improved |= optimize(h);
      if (!improved) break;
    }
  }

  const Order& order(std::size_t h) const { return orders_[h]; }
  const std::string& method(std::size_t h) const { return methods_[h]; }

 private:
  Layer signatures(std::size_t h) const {
    const BitMatrix& prev = trans_[h - 1];  // unit -> its inputs in layer h-1
    const BitMatrix& next = chain_[h];      // unit -> its outputs in layer h+1
    const std::size_t n = next.rows();
    Layer L{n, BitMatrix(n, ceil_div(prev.cols(), bi_)), BitMatrix(n, ceil_div(next.cols(), bo_)),
            BitMatrix(n, prev.cols()), bo_, bi_};
    for (std::size_t u = 0; u < n; ++u) {
      prev.for_each_set(u, [&](std::size_t c) {
        L.in_sig.set(u, pos_[h - 1][c] / bi_);
        L.in_pat.set(u, pos_[h - 1][c]);
      });
      next.for_each_set(u, [&](std::size_t t) { L.out_sig.set(u, pos_[h + 1][t] / bo_); });
    }
    return L;
  }

  bool optimize(std::size_t h) {
    const Layer L = signatures(h);
    const std::size_t n = L.units;
    auto by_pattern = [&](std::uint32_t a, std::uint32_t b) {
      if (lex_less(L.in_pat.row(a), L.in_pat.row(b), L.in_pat.words())) return true;
      if (lex_less(L.in_pat.row(b), L.in_pat.row(a), L.in_pat.words())) return false;
      return lex_less(L.out_sig.row(a), L.out_sig.row(b), L.out_sig.words());
    };
    auto by_degree = [&](std::uint32_t a, std::uint32_t b) {
      const std::size_t da = popcount(L.in_pat.row(a), L.in_pat.words()), db = popcount(L.in_pat.row(b), L.in_pat.words());
      return da != db ? da < db : by_pattern(a, b);
    };
    auto by_signature = [&](std::uint32_t a, std::uint32_t b) {
      if (lex_less(L.in_sig.row(a), L.in_sig.row(b), L.in_sig.words())) return true;
      if (lex_less(L.in_sig.row(b), L.in_sig.row(a), L.in_sig.words())) return false;
      return lex_less(L.out_sig.row(a), L.out_sig.row(b), L.out_sig.words());
    };
    const Order pattern = sorted_by(n, by_pattern), signature = sorted_by(n, by_signature);
    const std::size_t window = 256;
    std::vector<std::pair<std::string, Order>> candidates = {
        {"pattern", pattern},
        {"degree", sorted_by(n, by_degree)},
        {"signature", signature},
        {"cluster", cluster(L, signature, bo_, window)},
        {"cluster-pattern", cluster(L, pattern, bo_, window)},
    };
    std::uint64_t best = L.cost(orders_[h]);
    bool improved = false;
    for (auto& [name, order] : candidates) {
      const std::uint64_t c = L.cost(order);
      if (c < best) {
        best = c;
        orders_[h] = std::move(order);
        methods_[h] = name;
        improved = true;
      }
    }
    for (std::size_t k = 0; k < n; ++k) pos_[h][orders_[h][k]] = static_cast<std::uint32_t>(k);
    return improved;
  }

  std::vector<BitMatrix> chain_, trans_;
  std::size_t bo_, bi_;
  std::vector<Order> orders_;                    // per layer (0 = inputs, L = outputs; both fixed)
  std::vector<std::vector<std::uint32_t>> pos_;  // inverse of orders_
  std::vector<std::string> methods_;
};

py::dict reorder_hidden(const py::handle& masks, const py::handle& block_out, const py::handle& block_in,
                        const py::handle& sweeps) {
  std::vector<BitMatrix> chain = read_mask_chain(masks);
  for (const auto& m : chain)
    if (m.rows() > 0xFFFFFFFFu || m.cols() > 0xFFFFFFFFu) throw py::value_error("masks are too large to reorder");
  const std::size_t bo = read_block(block_out, "block_out"), bi = read_block(block_in, "block_in");
  const long long n_sweeps = read_int(sweeps, "sweeps", 0, 100);
  const std::size_t L = chain.size();
  std::vector<std::uint64_t> before, after, total;
  for (const auto& m : chain)
    total.push_back(static_cast<std::uint64_t>(ceil_div(m.rows(), bi)) * ceil_div(m.cols(), bo));
  std::vector<Order> orders;
  std::vector<std::string> methods;
  {
    py::gil_scoped_release release;
    Reorderer r(std::move(chain), bo, bi);
    before = r.tiles();
    r.run(static_cast<std::size_t>(n_sweeps));
    after = r.tiles();
    for (std::size_t h = 1; h < L; ++h) {
      orders.push_back(r.order(h));
      methods.push_back(r.method(h));
    }
  }
  py::list perms;
  for (const auto& o : orders) {
    py::array_t<std::int64_t> a(static_cast<py::ssize_t>(o.size()));
    std::copy(o.begin(), o.end(), a.mutable_data());
    perms.append(a);
  }
  py::dict out;
  out["perms"] = perms;
  out["tiles_before"] = before;
  out["tiles_after"] = after;
  out["tiles_total"] = total;
  out["methods"] = methods;
  return out;
}

}  // namespace

void bind_reorder(py::module_& m) {
  m.def("reorder_hidden", &reorder_hidden, py::arg("masks"), py::arg("block_out"), py::arg("block_in"),
        py::arg("sweeps") = 3,
        "Permutes hidden units to minimize the nonzero (block_out x block_in) tiles of the layer weights.\n\n"
        "masks are in the reference orientation (fan_in x fan_out, input first); inputs and outputs keep\n"
        "their order. Returns a dict: perms (one int64 array per hidden layer, new position -> old unit),\n"
        "tiles_before / tiles_after (nonzero tiles per mask, counted as block_layout counts them),\n"
        "tiles_total (tiles of each mask's grid) and methods (the order kept per hidden layer).");
}

}  // namespace strnn
