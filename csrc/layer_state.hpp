// The state a greedy-style factorizer carries from one hidden layer to the next.
//
// After a layer, many columns of the new "adjacency" (the previous M1) are identical: every unit
// that copied the same pattern has the same column. Columns are therefore grouped into classes
// and all set operations run on classes, which keeps d=10,000, h=20,000 in bit-ops that fit in
// cache instead of in h-wide rows.
#pragma once

#include <cstdint>
#include <vector>

#include "bitmatrix.hpp"

namespace strnn {

struct LayerState {
  std::size_t rows = 0;                 // a: outputs of the current matrix
  std::vector<std::uint32_t> colclass;  // column -> class (size = current fan-in)
  BitMatrix classbits;                  // class -> set of rows that contain it (u x a)
  BitMatrix rowbits;                    // row -> set of classes it contains (a x u)
  std::vector<double> weight;           // class -> number of input->column paths summed over its columns

  static LayerState from_adjacency(const BitMatrix& adjacency);

  std::size_t classes() const { return classbits.rows(); }
  std::vector<std::size_t> nonzero_rows() const;
  // Rows (outputs) whose class set contains `pattern`: the AND of the pattern's class columns.
  void rows_containing(const std::uint64_t* pattern, std::uint64_t* out) const;
  // Paths arriving at a unit that reads the classes in `pattern`.
  double paths_into(const std::uint64_t* pattern) const;
};

// One hidden layer of a plan: unit k copies pattern q[k]; pattern p reads the previous classes in
// patterns.row(p) and feeds the outputs in reach.row(p).
struct LayerPlan {
  BitMatrix patterns;          // P x u_prev
  std::vector<std::uint32_t> q;  // width
  BitMatrix reach;             // P x a
};

// Builds the next state (the matrix M1 of this layer, in class form) from a finished layer.
LayerState advance(const LayerState& state, const LayerPlan& layer);

}  // namespace strnn
