// Dense bit matrices: the one data structure of the factorizers.
//
// Every hidden unit of a greedy/zuko factorization copies a row of the adjacency, so the masks
// are products of subset tests between rows. Rows as packed 64-bit words make those tests and
// the column intersections that answer them word-parallel.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace strnn {

inline std::size_t words_for(std::size_t bits) { return (bits + 63) / 64; }

// Set bits among `words` packed words.
inline std::size_t popcount(const std::uint64_t* r, std::size_t words) {
  std::size_t n = 0;
  for (std::size_t w = 0; w < words; ++w) n += static_cast<std::size_t>(__builtin_popcountll(r[w]));
  return n;
}

class BitMatrix {
 public:
  BitMatrix() = default;
  BitMatrix(std::size_t rows, std::size_t cols)
      : rows_(rows), cols_(cols), words_(words_for(cols)), data_(rows * words_for(cols), 0) {}

  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  std::size_t words() const { return words_; }

  std::uint64_t* row(std::size_t i) { return data_.data() + i * words_; }
  const std::uint64_t* row(std::size_t i) const { return data_.data() + i * words_; }

  bool test(std::size_t i, std::size_t j) const { return (row(i)[j >> 6] >> (j & 63)) & 1u; }
  void set(std::size_t i, std::size_t j) { row(i)[j >> 6] |= std::uint64_t{1} << (j & 63); }

  bool row_any(std::size_t i) const {
    const std::uint64_t* r = row(i);
    for (std::size_t w = 0; w < words_; ++w)
      if (r[w]) return true;
    return false;
  }

  std::size_t row_count(std::size_t i) const { return popcount(row(i), words_); }

  // Set bits of the whole matrix.
  std::size_t count() const { return popcount(data_.data(), data_.size()); }

  // Calls f(j) for every set bit j of row i, in increasing order.
  template <class F>
  void for_each_set(std::size_t i, F&& f) const {
    const std::uint64_t* r = row(i);
    for (std::size_t w = 0; w < words_; ++w) {
      std::uint64_t bits = r[w];
      while (bits) {
        f(w * 64 + static_cast<std::size_t>(__builtin_ctzll(bits)));
        bits &= bits - 1;
      }
    }
  }

  BitMatrix transposed() const {
    BitMatrix t(cols_, rows_);
    for (std::size_t i = 0; i < rows_; ++i) for_each_set(i, [&](std::size_t j) { t.set(j, i); });
    return t;
  }

 private:
  std::size_t rows_ = 0, cols_ = 0, words_ = 0;
  std::vector<std::uint64_t> data_;
};

}  // namespace strnn
