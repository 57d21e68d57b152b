#include "layer_state.hpp"

#include "parallel.hpp"

namespace strnn {

LayerState LayerState::from_adjacency(const BitMatrix& adjacency) {
  LayerState s;
  s.rows = adjacency.rows();
  s.colclass.resize(adjacency.cols());
  for (std::size_t j = 0; j < adjacency.cols(); ++j) s.colclass[j] = static_cast<std::uint32_t>(j);
  s.rowbits = adjacency;
  s.classbits = adjacency.transposed();
  s.weight.assign(adjacency.cols(), 1.0);
  return s;
}

std::vector<std::size_t> LayerState::nonzero_rows() const {
  std::vector<std::size_t> nz;
  for (std::size_t i = 0; i < rows; ++i)
    if (rowbits.row_any(i)) nz.push_back(i);
  return nz;
}

void LayerState::rows_containing(const std::uint64_t* pattern, std::uint64_t* out) const {
  const std::size_t w = classbits.words();
  bool first = true;
  const std::size_t pw = words_for(classes());
  for (std::size_t wi = 0; wi < pw; ++wi) {
    std::uint64_t bits = pattern[wi];
    while (bits) {
      const std::size_t c = wi * 64 + static_cast<std::size_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      const std::uint64_t* col = classbits.row(c);
      if (first) {
        std::memcpy(out, col, w * sizeof(std::uint64_t));
        first = false;
      } else {
        for (std::size_t k = 0; k < w; ++k) out[k] &= col[k];
      }
    }
  }
  if (first) std::memset(out, 0, w * sizeof(std::uint64_t));
}

double LayerState::paths_into(const std::uint64_t* pattern) const {
  double total = 0.0;
  const std::size_t pw = words_for(classes());
  for (std::size_t wi = 0; wi < pw; ++wi) {
    std::uint64_t bits = pattern[wi];
    while (bits) {
      total += weight[wi * 64 + static_cast<std::size_t>(__builtin_ctzll(bits))];
      bits &= bits - 1;
    }
  }
  return total;
}

LayerState advance(const LayerState& state, const LayerPlan& layer) {
  LayerState next;
  next.rows = state.rows;
  next.colclass = layer.q;
  next.classbits = layer.reach;
  next.rowbits = layer.reach.transposed();
  const std::size_t P = layer.patterns.rows();
  std::vector<double> multiplicity(P, 0.0);
  for (auto p : layer.q) multiplicity[p] += 1.0;
  next.weight.resize(P);
  for (std::size_t p = 0; p < P; ++p) next.weight[p] = multiplicity[p] * state.paths_into(layer.patterns.row(p));
  return next;
}

}  // namespace strnn
