// Masked linear layers on the CPU: the two products of a weight W that lives on a CSR pattern.
//
//   csr_spmm:  Y^T = W X^T (+ b, then relu)  with X^T (in, B) and Y^T (out, B), both C-contiguous;
//   csr_sddmm: dv_k = <G^T[row_k], X^T[col_k]>  for every kept entry k (the weight gradient).
//
// Why this layout: masks of structured networks keep a few percent of the weights, a handful
// per row, so a product is nnz axpy/dot operations over the batch. With activations stored
// feature-major (the batch contiguous, as the torch sparse kernels already hand them on), every
// kept weight does one long, contiguous, vectorizable operation over a block of the batch, and
// a block of X^T is reused from cache by all the output rows that read it. dX = W^T G is the
// same product on the transposed pattern, so two kernels serve the forward, both gradients and
// every higher derivative (strnn_fast/csr_ops.py composes them).
//
// Determinism: every output element is computed by one thread, its terms summed in the order of
// the pattern (csr_spmm) or in fixed lane order (csr_sddmm), whatever the thread count.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "parallel.hpp"

namespace py = pybind11;

namespace strnn {
namespace {

// Each kernel's body is inlined twice, into a wrapper compiled for AVX2 + FMA and into a baseline
// one; run() picks the first where the CPU has them. (target_clones, as spline.cpp uses, left the
// 32-byte vector accumulators of these templates in the baseline build: 7x slower, measured.)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#if defined(__GNUC__) && defined(__x86_64__)
#define STRNN_X86 1
#define AVX2_TARGET __attribute__((target("avx2,fma")))
#else
#define AVX2_TARGET
#endif

bool cpu_has_avx2() {
#ifdef STRNN_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

#define DEFINE_DISPATCH(name)                                                      \
  template <class T, class... A>                                                    \
  AVX2_TARGET void name##_avx2(A... a) { name<T>(a...); }                           \
  template <class T, class... A>                                                    \
  void name##_base(A... a) { name<T>(a...); }                                       \
  template <class T, class... A>                                                    \
  void run_##name(A... a) {                                                         \
    if (cpu_has_avx2()) name##_avx2<T>(a...);                                       \
    else name##_base<T>(a...);                                                      \
  }

constexpr std::size_t kLanes = 64;  // batch columns per block: 8 AVX2 registers of floats
constexpr std::size_t kDotLanes = 16;
constexpr std::size_t kDotChunk = 256;  // batch columns per pass of the weight gradient

// Rows [r0, r1) of Y^T for one block of kLanes batch columns, read from the packed block xs
// (n_in x kLanes, contiguous: rows of X^T a whole batch apart would alias in the caches) and
// written to yt's columns [c0, c0 + n).
template <class T>
ALWAYS_INLINE void spmm_block(const T* xs, const T* v, const std::int64_t* crow, const std::int64_t* col, const T* bias,
                            bool relu, T* yt, std::size_t ldy, std::size_t r0, std::size_t r1, std::size_t c0,
                            std::size_t n) {
  // kLanes accumulators as NV vectors of 32 bytes (GCC vector extensions), so that they live in
  // registers through the loop over the row's terms (a plain array of kLanes stayed on the stack).
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t VL = 32 / sizeof(T), NV = kLanes / VL;
  for (std::size_t r = r0; r < r1; ++r) {
    V acc[NV];
    const T b = bias ? bias[r] : T(0);
#pragma GCC unroll 16
    for (std::size_t q = 0; q < NV; ++q) acc[q] = V{} + b;
    for (std::int64_t k = crow[r]; k < crow[r + 1]; ++k) {
      const T w = v[k];
      const V* x = reinterpret_cast<const V*>(xs + static_cast<std::size_t>(col[k]) * kLanes);
#pragma GCC unroll 16
      for (std::size_t q = 0; q < NV; ++q) acc[q] += w * x[q];
    }
    T* y = yt + r * ldy + c0;
    if (relu)  // NaN stays NaN: (acc < 0 ? 0 : acc) keeps it, as torch.relu does
#pragma GCC unroll 16
      for (std::size_t q = 0; q < NV; ++q) acc[q] = acc[q] < T(0) ? V{} : acc[q];
    if (n == kLanes) {
#pragma GCC unroll 16
      for (std::size_t q = 0; q < NV; ++q) std::memcpy(y + q * VL, &acc[q], sizeof(V));
    } else {
      T out[kLanes];
      std::memcpy(out, acc, sizeof(out));
      std::memcpy(y, out, n * sizeof(T));
    }
  }
}

// Small batches (fewer than kLanes / 4 columns): per row and column, the row's terms in four
// interleaved partial sums (one chain of dependent adds would bound it by the add latency).
template <class T>
ALWAYS_INLINE void spmm_narrow(const T* xt, std::size_t ldx, std::size_t ldb, const T* v, const std::int64_t* crow,
                               const std::int64_t* col, const T* bias, bool relu, T* yt, std::size_t ldy,
                               std::size_t r0, std::size_t r1, std::size_t c0, std::size_t n) {
  for (std::size_t r = r0; r < r1; ++r) {
    const std::int64_t k0 = crow[r], k1 = crow[r + 1];
    for (std::size_t j = c0; j < c0 + n; ++j) {
      T a[4] = {T(0), T(0), T(0), T(0)};
      std::int64_t k = k0;
      for (; k + 4 <= k1; k += 4)
        for (int q = 0; q < 4; ++q) a[q] += v[k + q] * xt[static_cast<std::size_t>(col[k + q]) * ldx + j * ldb];
      for (int q = 0; k < k1; ++k, ++q) a[q] += v[k] * xt[static_cast<std::size_t>(col[k]) * ldx + j * ldb];
      const T acc = (bias ? bias[r] : T(0)) + ((a[0] + a[1]) + (a[2] + a[3]));
      yt[r * ldy + j] = relu && acc < T(0) ? T(0) : acc;
    }
  }
}

// dv_k for the kept entries of rows [r0, r1): dots over the batch in kDotLanes fixed lanes.
template <class T>
ALWAYS_INLINE void sddmm_rows(const T* gt, std::size_t ldg, const T* xt, std::size_t ldx, const std::int64_t* crow,
                              const std::int64_t* col, T* dv, std::size_t r0, std::size_t r1, std::size_t c0,
                              std::size_t c1, bool first, std::size_t row_base) {
  const std::size_t main = c0 + (c1 - c0) - (c1 - c0) % kDotLanes;
  for (std::size_t r = r0; r < r1; ++r) {
    const T* g = gt + (r - row_base) * ldg;
    for (std::int64_t k = crow[r]; k < crow[r + 1]; ++k) {
      const T* x = xt + static_cast<std::size_t>(col[k]) * ldx;
      T lane[kDotLanes] = {};
      for (std::size_t c = c0; c < main; c += kDotLanes)
        for (std::size_t j = 0; j < kDotLanes; ++j) lane[j] += g[c + j] * x[c + j];
      for (std::size_t c = main; c < c1; ++c) lane[c - main] += g[c] * x[c];
      T s = T(0);
      for (std::size_t j = 0; j < kDotLanes; ++j) s += lane[j];
      dv[k] = first ? s : dv[k] + s;
    }
  }
}

DEFINE_DISPATCH(spmm_block)
DEFINE_DISPATCH(spmm_narrow)
DEFINE_DISPATCH(sddmm_rows)

template <class T>
using Array = py::array_t<T, py::array::c_style>;
using Index = py::array_t<std::int64_t, py::array::c_style>;

template <class T>
Array<T> as_array(const py::handle& obj, const char* name, int ndim) {
  if (!py::isinstance<Array<T>>(obj))
    throw std::invalid_argument(std::string(name) + " must be a C-contiguous " +
                                (sizeof(T) == 4 ? "float32" : "float64") + " array");
  auto a = py::reinterpret_borrow<Array<T>>(obj);
  if (a.ndim() != ndim) throw std::invalid_argument(std::string(name) + " must have " + std::to_string(ndim) + " dims");
  return a;
}

Index as_index(const py::handle& obj, const char* name) {
  if (!py::isinstance<Index>(obj)) throw std::invalid_argument(std::string(name) + " must be a C-contiguous int64 array");
  auto a = py::reinterpret_borrow<Index>(obj);
  if (a.ndim() != 1) throw std::invalid_argument(std::string(name) + " must be 1-D");
  return a;
}

// A CSR pattern of an (n_rows x n_cols) matrix, checked once: row pointers from 0 to nnz,
// non-decreasing, columns in range (no input can make the kernels read out of bounds).
struct Pattern {
  const std::int64_t* crow;
  const std::int64_t* col;
  std::size_t rows, nnz;
};

Pattern check_pattern(const Index& crow, const Index& col, std::size_t n_cols) {
  if (crow.shape(0) < 1) throw std::invalid_argument("crow must hold n_rows + 1 row pointers");
  const std::size_t rows = static_cast<std::size_t>(crow.shape(0)) - 1, nnz = static_cast<std::size_t>(col.shape(0));
  const std::int64_t* cr = crow.data();
  const std::int64_t* cc = col.data();
  if (cr[0] != 0 || cr[rows] != static_cast<std::int64_t>(nnz))
    throw std::invalid_argument("crow must run from 0 to nnz = len(col)");
  for (std::size_t r = 0; r < rows; ++r)
    if (cr[r + 1] < cr[r]) throw std::invalid_argument("crow must be non-decreasing");
  for (std::size_t k = 0; k < nnz; ++k)
    if (cc[k] < 0 || static_cast<std::size_t>(cc[k]) >= n_cols)
      throw std::invalid_argument("col must lie in [0, " + std::to_string(n_cols) + ")");
  return {cr, cc, rows, nnz};
}

template <class T>
void spmm_impl(const py::handle& xt_o, const py::handle& v_o, const Index& crow, const Index& col,
               const py::handle& bias_o, bool relu, const py::handle& yt_o, unsigned threads, bool batch_major) {
  auto xt = as_array<T>(xt_o, "xt", 2);
  auto v = as_array<T>(v_o, "values", 1);
  auto yt = as_array<T>(yt_o, "yt", 2);
  // x is read as X^T (n_in, B), or, batch_major, as X (B, n_in) itself: packing the block
  // transposes it, which saves the caller a transposed copy of the whole input.
  const std::size_t xt_rows = xt.shape(batch_major ? 1 : 0), B = xt.shape(batch_major ? 0 : 1);
  const std::size_t s_feat = batch_major ? 1 : B, s_batch = batch_major ? xt_rows : 1;
  const Pattern p = check_pattern(crow, col, xt_rows);
  if (static_cast<std::size_t>(v.shape(0)) != p.nnz) throw std::invalid_argument("values must have nnz entries");
  if (static_cast<std::size_t>(yt.shape(0)) != p.rows || static_cast<std::size_t>(yt.shape(1)) != B)
    throw std::invalid_argument("yt must have shape (n_rows, batch)");
  const T* bias = nullptr;
  Array<T> b;
  if (!bias_o.is_none()) {
    b = as_array<T>(bias_o, "bias", 1);
    if (static_cast<std::size_t>(b.shape(0)) != p.rows) throw std::invalid_argument("bias must have n_rows entries");
    bias = b.data();
  }
  if (B == 0 || p.rows == 0) return;
  const T* xp = xt.data();
  const T* vp = v.data();
  T* yp = yt.mutable_data();
  const std::size_t blocks = (B + kLanes - 1) / kLanes;
  // Few batch blocks (small batches) and several threads: split the rows too.
  const std::size_t row_chunks = blocks >= threads ? 1 : std::min<std::size_t>(std::max<std::size_t>(p.rows, 1),
                                                                               (threads + blocks - 1) / blocks);
  const std::size_t rows_per = (p.rows + row_chunks - 1) / std::max<std::size_t>(row_chunks, 1);
  py::gil_scoped_release release;
  const std::size_t work = p.nnz * B + p.rows * B;
  const unsigned use = work < (1u << 16) ? 1u : threads;  // a thread costs more than a small product
  const std::size_t n_in = xt_rows;
  parallel_for(
      blocks * row_chunks,
      [&](std::size_t t0, std::size_t t1) {
        std::vector<T> xs;
        for (std::size_t t = t0; t < t1; ++t) {
          const std::size_t blk = t / row_chunks, rc = t % row_chunks;
          const std::size_t c0 = blk * kLanes, n = std::min(kLanes, B - c0);
          const std::size_t r0 = rc * rows_per, r1 = std::min(p.rows, r0 + rows_per);
          if (r0 >= r1) continue;
          if (n < kLanes / 4) {
            run_spmm_narrow<T>(xp, s_feat, s_batch, vp, p.crow, p.col, bias, relu, yp, B, r0, r1, c0, n);
            continue;
          }
          xs.assign(n_in * kLanes, T(0));  // packed block, zero lanes past the batch
          if (batch_major)  // transposed in strips of 16 inputs: the 16 packed rows being written stay in L1
            for (std::size_t i0 = 0; i0 < n_in; i0 += 16) {
              const std::size_t i1 = std::min(n_in, i0 + 16);
              for (std::size_t j = 0; j < n; ++j) {
                const T* row = xp + (c0 + j) * n_in;
                for (std::size_t i = i0; i < i1; ++i) xs[i * kLanes + j] = row[i];
              }
            }
          else
            for (std::size_t i = 0; i < n_in; ++i) std::copy(xp + i * B + c0, xp + i * B + c0 + n, xs.data() + i * kLanes);
          run_spmm_block<T>(xs.data(), vp, p.crow, p.col, bias, relu, yp, B, r0, r1, c0, n);
        }
      },
      1, use);
}

// dst (rows x kDotChunk) = columns [c0, c0 + n) of rows [r0, r1) of the feature-major src
// (rows x B, row stride B), or of the batch-major src (B x width): transposed in strips of 16.
template <class T>
void pack_chunk(const T* src, bool batch_major, std::size_t width, std::size_t B, std::size_t r0, std::size_t r1,
                std::size_t c0, std::size_t n, T* dst) {
  if (!batch_major) {
    for (std::size_t r = r0; r < r1; ++r) std::copy(src + r * B + c0, src + r * B + c0 + n, dst + (r - r0) * kDotChunk);
    return;
  }
  for (std::size_t s0 = r0; s0 < r1; s0 += 16) {
    const std::size_t s1 = std::min(r1, s0 + 16);
    for (std::size_t j = 0; j < n; ++j) {
      const T* row = src + (c0 + j) * width;
      for (std::size_t r = s0; r < s1; ++r) dst[(r - r0) * kDotChunk + j] = row[r];
    }
  }
}

template <class T>
void sddmm_impl(const py::handle& gt_o, const py::handle& xt_o, const Index& crow, const Index& col,
                const py::handle& dv_o, unsigned threads, bool g_batch_major, bool x_batch_major) {
  auto gt = as_array<T>(gt_o, "gt", 2);
  auto xt = as_array<T>(xt_o, "xt", 2);
  auto dv = as_array<T>(dv_o, "dv", 1);
  // Operands are feature-major ((rows, B) and (n_in, B)), or each batch-major ((B, rows), (B, n_in)).
  const std::size_t B = xt.shape(x_batch_major ? 0 : 1), n_in = xt.shape(x_batch_major ? 1 : 0);
  const Pattern p = check_pattern(crow, col, n_in);
  const std::size_t g_rows = gt.shape(g_batch_major ? 1 : 0), g_batch = gt.shape(g_batch_major ? 0 : 1);
  if (g_rows != p.rows || g_batch != B) throw std::invalid_argument("gt must have n_rows features and the batch of xt");
  if (static_cast<std::size_t>(dv.shape(0)) != p.nnz) throw std::invalid_argument("dv must have nnz entries");
  const T* gp = gt.data();
  const T* xp = xt.data();
  T* dp = dv.mutable_data();
  py::gil_scoped_release release;
  const unsigned use = p.nnz * B < (1u << 16) ? 1u : threads;
  const bool packed = g_batch_major || x_batch_major;
  parallel_for(
      p.rows,
      [&](std::size_t r0, std::size_t r1) {
        // The batch in chunks of kDotChunk columns, in a fixed order: the rows of both operands
        // touched by a chunk stay in cache (whole rows of a large batch did not). Batch-major
        // operands are first packed feature-major, chunk by chunk.
        std::vector<T> gs(packed ? (r1 - r0) * kDotChunk : 0), xs(packed ? n_in * kDotChunk : 0);
        for (std::size_t c0 = 0; c0 < B || c0 == 0; c0 += kDotChunk) {
          const std::size_t c1 = std::min(B, c0 + kDotChunk);
          if (!packed) {
            run_sddmm_rows<T>(gp, B, xp, B, p.crow, p.col, dp, r0, r1, c0, c1, c0 == 0, std::size_t{0});
            continue;
          }
          pack_chunk<T>(gp, g_batch_major, p.rows, B, r0, r1, c0, c1 - c0, gs.data());
          pack_chunk<T>(xp, x_batch_major, n_in, B, 0, n_in, c0, c1 - c0, xs.data());
          run_sddmm_rows<T>(gs.data(), kDotChunk, xs.data(), kDotChunk, p.crow, p.col, dp, r0, r1, std::size_t{0},
                            c1 - c0, c0 == 0, r0);
        }
      },
      std::max<std::size_t>(1, p.rows / (8 * std::max(use, 1u))), use);
}

bool is_double(const py::handle& a) { return py::isinstance<py::array_t<double>>(a); }

}  // namespace

void bind_masked_linear(py::module_& m) {
  m.def(
      "csr_spmm",
      [](py::handle xt, py::handle values, py::handle crow, py::handle col, py::handle bias, bool relu, py::handle yt,
         unsigned threads, bool batch_major) {
        const Index cr = as_index(crow, "crow"), cc = as_index(col, "col");
        if (is_double(xt)) spmm_impl<double>(xt, values, cr, cc, bias, relu, yt, std::max(threads, 1u), batch_major);
        else spmm_impl<float>(xt, values, cr, cc, bias, relu, yt, std::max(threads, 1u), batch_major);
      },
      py::arg("xt"), py::arg("values"), py::arg("crow"), py::arg("col"), py::arg("bias"), py::arg("relu"),
      py::arg("yt"), py::arg("threads") = 1, py::arg("batch_major") = false,
      "yt = W xt (+ bias, then relu if asked) for W (n_rows x n_in) given by its CSR values, xt (n_in, B) (or,\n"
      "batch_major, x (B, n_in)) and yt (n_rows, B) C-contiguous float32/float64 (one dtype), written in place.");
  m.def(
      "csr_sddmm",
      [](py::handle gt, py::handle xt, py::handle crow, py::handle col, py::handle dv, unsigned threads,
         bool g_batch_major, bool x_batch_major) {
        const Index cr = as_index(crow, "crow"), cc = as_index(col, "col");
        if (is_double(xt)) sddmm_impl<double>(gt, xt, cr, cc, dv, std::max(threads, 1u), g_batch_major, x_batch_major);
        else sddmm_impl<float>(gt, xt, cr, cc, dv, std::max(threads, 1u), g_batch_major, x_batch_major);
      },
      py::arg("gt"), py::arg("xt"), py::arg("crow"), py::arg("col"), py::arg("dv"), py::arg("threads") = 1,
      py::arg("g_batch_major") = false, py::arg("x_batch_major") = false,
      "dv[k] = gt[row_k] . xt[col_k] for the kept entries k of the CSR pattern, written in place; gt is\n"
      "(n_rows, B) and xt (n_in, B), or, with the flags, (B, n_rows) and (B, n_in).");
}

}  // namespace strnn
