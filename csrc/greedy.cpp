// Greedy factorization (the StrNN paper's Algorithm 1), bit-identical to the reference, plus an
// optional refinement that spends the spare hidden units on higher-scoring patterns.
//
// Reference semantics, per hidden layer on the current matrix C (a x b): unit k copies the
// (k mod n)-th nonzero row of C (M2), then M1[i, k] = 1 iff that row is a subset of row i of C;
// recurse with C <- M1. Masks: [M2_1^T, ..., M2_L^T, M1_L^T].
#include <algorithm>
#include <string>

#include "arrays.hpp"
#include "bindings.hpp"
#include "layer_state.hpp"
#include "parallel.hpp"

namespace strnn {

namespace {

void fill_reach(const LayerState& state, LayerPlan& layer) {
  layer.reach = BitMatrix(layer.patterns.rows(), state.rows);
  parallel_for(layer.patterns.rows(), [&](std::size_t b, std::size_t e) {
    for (std::size_t p = b; p < e; ++p) state.rows_containing(layer.patterns.row(p), layer.reach.row(p));
  }, 16);
}

// Best variant of nonzero row r for a spare unit: r itself, r ∩ s for sampled rows s, or the
// single class of r with the most paths; scored by paths in x outputs reached.
std::vector<std::uint64_t> best_variant(const LayerState& state, const std::vector<std::size_t>& nz, std::size_t r,
                                        double& best_score) {
  const std::size_t u = state.classes(), pw = words_for(u), aw = words_for(state.rows);
  std::vector<std::uint64_t> best(state.rowbits.row(nz[r]), state.rowbits.row(nz[r]) + pw), cand(pw), reach(aw);
  auto score = [&](const std::vector<std::uint64_t>& pat) {
    state.rows_containing(pat.data(), reach.data());
    std::size_t n = 0;
    for (auto w : reach) n += static_cast<std::size_t>(__builtin_popcountll(w));
    return state.paths_into(pat.data()) * static_cast<double>(n);
  };
  best_score = score(best);
  const std::size_t n = nz.size();
  const std::size_t partners = std::min<std::size_t>(n - 1, 32);
  for (std::size_t t = 1; t <= partners; ++t) {
    const std::size_t s = (r + t * std::max<std::size_t>(1, n / (partners + 1))) % n;
    if (s == r) continue;
    bool any = false;
    for (std::size_t w = 0; w < pw; ++w) {
      cand[w] = state.rowbits.row(nz[r])[w] & state.rowbits.row(nz[s])[w];
      any |= cand[w] != 0;
    }
    if (!any) continue;
    const double sc = score(cand);
    if (sc > best_score) best_score = sc, best = cand;
  }
  state.rowbits.for_each_set(nz[r], [&](std::size_t c) {
    std::fill(cand.begin(), cand.end(), 0);
    cand[c >> 6] = std::uint64_t{1} << (c & 63);
    const double sc = score(cand);
    if (sc > best_score) best_score = sc, best = cand;
  });
  return best;
}

LayerPlan plan_layer(const LayerState& state, std::size_t width, bool refine, std::size_t layer_index) {
  const std::vector<std::size_t> nz = state.nonzero_rows();
  const std::size_t n = nz.size();
  if (n == 0)
    throw py::value_error("adjacency has no nonzero entry at hidden layer " + std::to_string(layer_index) +
                          ": an all-zero adjacency has nothing to factorize");
  const std::size_t u = state.classes(), pw = words_for(u);
  LayerPlan layer;
  layer.q.resize(width);
  const std::size_t base = std::min(width, n);
  std::vector<std::vector<std::uint64_t>> extra;
  std::vector<std::size_t> spare_pattern(width, 0);
  if (refine && width > n) {
    // Spare unit k would copy row k mod n again; give it that row's best variant instead.
    std::vector<std::vector<std::uint64_t>> variant(n);
    std::vector<char> needed(n, 0);
    for (std::size_t k = n; k < width; ++k) needed[k % n] = 1;
    std::vector<std::size_t> rows_needed;
    for (std::size_t r = 0; r < n; ++r)
      if (needed[r]) rows_needed.push_back(r);
    parallel_for(rows_needed.size(), [&](std::size_t b, std::size_t e) {
      for (std::size_t t = b; t < e; ++t) {
        double s;
        variant[rows_needed[t]] = best_variant(state, nz, rows_needed[t], s);
      }
    }, 4);
    std::vector<std::size_t> index_of(n, 0);
    for (std::size_t r : rows_needed) {
      if (std::equal(variant[r].begin(), variant[r].end(), state.rowbits.row(nz[r]))) {
        index_of[r] = r;
      } else {
        index_of[r] = base + extra.size();
        extra.push_back(std::move(variant[r]));
      }
    }
    for (std::size_t k = n; k < width; ++k) spare_pattern[k] = index_of[k % n];
  }
  layer.patterns = BitMatrix(base + extra.size(), u);
  for (std::size_t p = 0; p < base; ++p) std::memcpy(layer.patterns.row(p), state.rowbits.row(nz[p]), pw * 8);
  for (std::size_t e = 0; e < extra.size(); ++e) std::memcpy(layer.patterns.row(base + e), extra[e].data(), pw * 8);
  for (std::size_t k = 0; k < width; ++k)
    layer.q[k] = static_cast<std::uint32_t>(refine && k >= n ? spare_pattern[k] : k % n);
  fill_reach(state, layer);
  return layer;
}

struct Plan {
  std::vector<LayerPlan> layers;
  double paths = 0.0;
  std::vector<std::size_t> nonzero_rows;
};

Plan plan_greedy(const BitMatrix& adjacency, const std::vector<std::size_t>& widths, bool refine) {
  Plan plan;
  LayerState state = LayerState::from_adjacency(adjacency);
  for (std::size_t l = 0; l < widths.size(); ++l) {
    plan.nonzero_rows.push_back(state.nonzero_rows().size());
    plan.layers.push_back(plan_layer(state, widths[l], refine, l));
    state = advance(state, plan.layers.back());
  }
  for (std::size_t p = 0; p < state.classes(); ++p)
    plan.paths += state.weight[p] * static_cast<double>(state.classbits.row_count(p));
  return plan;
}

// Row j of hidden mask l (j = an input or a unit of the previous layer, of class colclass[j])
// holds the units whose pattern contains that class. Rows of one class are identical, so the
// unit lists are built once per class, in increasing unit order.
std::vector<std::vector<std::uint32_t>> units_by_class(const LayerPlan& layer) {
  std::vector<std::vector<std::uint32_t>> units(layer.patterns.cols());
  for (std::size_t k = 0; k < layer.q.size(); ++k)
    layer.patterns.for_each_set(layer.q[k], [&](std::size_t c) { units[c].push_back(static_cast<std::uint32_t>(k)); });
  return units;
}

void write_masks(const BitMatrix& A, const Plan& plan, MaskChain& chain) {
  if (plan.layers.empty()) {
    // No hidden layer: the single mask is A itself, transposed (the reference crashes here).
    const BitMatrix At = A.transposed();
    chain.write(0, [&](std::size_t j, auto&& emit) { At.for_each_set(j, emit); });
    return;
  }
  std::vector<std::uint32_t> colclass(A.cols());
  for (std::size_t j = 0; j < colclass.size(); ++j) colclass[j] = static_cast<std::uint32_t>(j);
  for (std::size_t l = 0; l < plan.layers.size(); ++l) {
    const auto units = units_by_class(plan.layers[l]);
    chain.write(l, [&](std::size_t j, auto&& emit) {
      for (auto k : units[colclass[j]]) emit(k);
    });
    colclass = plan.layers[l].q;
  }
  // Output mask: row k holds the outputs that contain pattern q[k].
  const LayerPlan& last = plan.layers.back();
  chain.write(plan.layers.size(), [&](std::size_t k, auto&& emit) { last.reach.for_each_set(last.q[k], emit); });
}

double adjacency_paths(const BitMatrix& A) { return static_cast<double>(A.count()); }

py::tuple greedy_factorize(const py::handle& adjacency, const py::handle& hidden_sizes, bool refine, bool sparse,
                           const py::handle& max_bytes) {
  BitMatrix A = read_binary_matrix(adjacency, "adjacency");
  std::vector<std::size_t> widths = read_hidden_sizes(hidden_sizes, "hidden_sizes");
  MaskChain chain(A.cols(), widths, A.rows(), sparse, read_max_bytes(max_bytes));
  Plan plan;
  bool refined = false;
  {
    py::gil_scoped_release release;
    if (widths.empty()) {
      plan.paths = adjacency_paths(A);
    } else {
      plan = plan_greedy(A, widths, false);
      if (refine) {
        Plan better = plan_greedy(A, widths, true);
        // Kept only when it has at least as many paths: the refinement must never lose to greedy.
        if (better.paths >= plan.paths) {
          refined = better.paths > plan.paths;
          plan = std::move(better);
        }
      }
    }
    write_masks(A, plan, chain);
  }
  py::dict info;
  info["paths"] = plan.paths;
  py::list nz;
  for (auto n : plan.nonzero_rows) nz.append(n);
  info["nonzero_rows"] = nz;
  info["refined"] = refined;
  return py::make_tuple(chain.to_list(), info);
}

}  // namespace

void bind_greedy(py::module_& m) {
  m.def("greedy_factorize", &greedy_factorize, py::arg("adjacency"), py::arg("hidden_sizes"),
        py::arg("refine") = false, py::arg("sparse") = false, py::arg("max_bytes") = 0,
        "Greedy factorization (Algorithm 1). Returns (masks, info); masks are uint8 arrays, input side first,\n"
        "or with sparse=True CSR triples (indptr, indices, shape) of ones. max_bytes > 0 caps the output size.");
}

}  // namespace strnn
