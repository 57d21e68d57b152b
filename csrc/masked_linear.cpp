// Masked linear layers on the CPU: the two products of a weight W that lives on a CSR pattern.
//
//   csr_spmm:  Y^T = W X^T (+ b, then relu)  with X^T (in, B) and Y^T (out, B), both C-contiguous;
//   csr_linear: the same product for X (B, in) row- or column-major, returning a new column-major Y;
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
// Determinism: every output element of the products is computed by one thread, its terms summed
// in the order of the pattern; the weight gradient sums fixed groups of batch blocks in group
// order. The bits do not depend on the thread count.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "bindings.hpp"
#include "parallel.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

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
constexpr std::size_t kGroups = 8;  // weight gradient: partial sums over groups of batch blocks

// Whether a (rows x ld) operand is larger than a core's share of L2: its next block then comes from
// L3 or memory, and fetching it ahead (Ahead) gave 1.06-1.34x at batch 4096 on d=50-200 layers, and
// nothing measurable where the operand stays in L2.
template <class T>
bool beyond_l2(std::size_t rows, std::size_t ld) {
  return rows * ld * sizeof(T) > (std::size_t(2) << 20);
}

// The rows of the next block of operands read or written in place (rows of kLanes elements, row
// stride ld), fetched into the cache while the current block computes: the kernels read x's rows
// in the order of the pattern's columns, which no hardware prefetcher follows, and rows ld apart
// each start a new page.
template <class T>
struct Ahead {
  struct Stream {
    const T* base = nullptr;
    std::size_t rows = 0, ld = 0;
  };
  Stream s[3];

  // Step i of `steps`: each stream's share of rows (about rows / steps of them).
  ALWAYS_INLINE void fetch(std::size_t i, std::size_t steps) const {
    for (const Stream& st : s) {
      if (st.base == nullptr) continue;
      for (std::size_t r = i * st.rows / steps, e = (i + 1) * st.rows / steps; r < e; ++r)
        for (std::size_t b = 0; b < kLanes * sizeof(T); b += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(st.base + r * st.ld) + b);
    }
  }
};

// The helpers below take plain pointers and make their own vector type: a vector type given as a
// template argument loses its alignment attribute (GCC), and 32-byte-aligned moves of these
// element-aligned rows fault.

// A block's kLanes accumulators (acc, NV vectors) stored to y's first n columns: as vectors where
// the block is full. A memcpy of the whole accumulator array made it live on the stack, stored and
// reloaded in 16-byte halves on every row: ~1/3 of a first layer's forward, whose rows keep two or
// three weights (measured); partial blocks go through a local copy.
template <class T>
ALWAYS_INLINE void store_block(T* y, const T* acc, std::size_t n) {
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t NV = kLanes / (32 / sizeof(T));
  const V* a = reinterpret_cast<const V*>(acc);
  if (n == kLanes) {
#pragma GCC unroll 16
    for (std::size_t q = 0; q < NV; ++q) reinterpret_cast<V*>(y)[q] = a[q];
  } else {
    V out[NV];
#pragma GCC unroll 16
    for (std::size_t q = 0; q < NV; ++q) out[q] = a[q];
    std::memcpy(y, out, n * sizeof(T));
  }
}

// out (one vector) (+)= the lane-wise dot of a gradient row g and an input row x over one block,
// in four chains of products; assigned where `first`. Every path that forms the weight gradient's
// partials goes through here: the same bits whichever runs.
template <class T>
ALWAYS_INLINE void lane_dot(const T* g_row, const T* x_row, T* out_lanes, bool first) {
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t NV = kLanes / (32 / sizeof(T));
  static_assert(NV % 4 == 0, "four chains of products");
  const V* g = reinterpret_cast<const V*>(g_row);
  const V* x = reinterpret_cast<const V*>(x_row);
  V a0 = g[0] * x[0], a1 = g[1] * x[1], a2 = g[2] * x[2], a3 = g[3] * x[3];
#pragma GCC unroll 16
  for (std::size_t q = 4; q < NV; q += 4) {
    a0 += g[q] * x[q];
    a1 += g[q + 1] * x[q + 1];
    a2 += g[q + 2] * x[q + 2];
    a3 += g[q + 3] * x[q + 3];
  }
  V sum = (a0 + a1) + (a2 + a3);
  V* out = reinterpret_cast<V*>(out_lanes);
  if (!first) sum += *out;
  *out = sum;
}

// *out (one vector) (+)= the lane-wise sum of a block's row (the bias gradient's partials); assigned
// where `first`.
template <class T>
ALWAYS_INLINE void lane_sum(const T* row_lanes, T* out_lanes, bool first) {
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t NV = kLanes / (32 / sizeof(T));
  const V* row = reinterpret_cast<const V*>(row_lanes);
  V sum = row[0];
#pragma GCC unroll 16
  for (std::size_t q = 1; q < NV; ++q) sum += row[q];
  V* out = reinterpret_cast<V*>(out_lanes);
  *out = first ? sum : *out + sum;
}

// Rows [r0, r1) of Y^T for one block of kLanes batch columns, read from xs (n_in rows of kLanes
// columns, row stride ldx) and written to yt's columns [c0, c0 + n). xs is a packed copy for
// batch-major input and partial blocks; a full block of feature-major input is read in place
// (the copy cost more than the cache conflicts of rows a batch apart: 10-20% at B = 256-4096,
// measured on d=100-200 layers), with the next block fetched `ahead`.
template <class T>
ALWAYS_INLINE void spmm_block(const T* xs, std::size_t ldx, const T* v, const std::int64_t* crow,
                              const std::int64_t* col, const T* bias, bool relu, T* yt, std::size_t ldy, std::size_t r0,
                              std::size_t r1, std::size_t c0, std::size_t n, Ahead<T> ahead) {
  // kLanes accumulators as NV vectors of 32 bytes (GCC vector extensions), so that they live in
  // registers through the loop over the row's terms (a plain array of kLanes stayed on the stack).
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t VL = 32 / sizeof(T), NV = kLanes / VL;
  for (std::size_t r = r0; r < r1; ++r) {
    ahead.fetch(r - r0, r1 - r0);
    V acc[NV];
    const T b = bias ? bias[r] : T(0);
#pragma GCC unroll 16
    for (std::size_t q = 0; q < NV; ++q) acc[q] = V{} + b;
    for (std::int64_t k = crow[r]; k < crow[r + 1]; ++k) {
      const T w = v[k];
      const V* x = reinterpret_cast<const V*>(xs + static_cast<std::size_t>(col[k]) * ldx);
#pragma GCC unroll 16
      for (std::size_t q = 0; q < NV; ++q) acc[q] += w * x[q];
    }
    T* y = yt + r * ldy + c0;
    if (relu)  // NaN stays NaN: (acc < 0 ? 0 : acc) keeps it, as torch.relu does
#pragma GCC unroll 16
      for (std::size_t q = 0; q < NV; ++q) acc[q] = acc[q] < T(0) ? V{} : acc[q];
    store_block<T>(y, reinterpret_cast<const T*>(acc), n);
  }
}

// Small batches (fewer than kLanes / 4 columns): per row and column, the row's terms in four
// interleaved partial sums (one chain of dependent adds would bound it by the add latency). Output
// element (r, j) goes to yt[r * ldy + j * ly].
template <class T>
ALWAYS_INLINE void spmm_narrow(const T* xt, std::size_t ldx, std::size_t ldb, const T* v, const std::int64_t* crow,
                               const std::int64_t* col, const T* bias, bool relu, T* yt, std::size_t ldy,
                               std::size_t ly, std::size_t r0, std::size_t r1, std::size_t c0, std::size_t n) {
  for (std::size_t r = r0; r < r1; ++r) {
    const std::int64_t k0 = crow[r], k1 = crow[r + 1];
    for (std::size_t j = c0; j < c0 + n; ++j) {
      const T* xj = xt + j * ldb;
      const auto term = [&](std::int64_t k) { return v[k] * xj[static_cast<std::size_t>(col[k]) * ldx]; };
      // Named partial sums, not an array: a tail indexed by a counter kept the array in memory,
      // and rows of a few terms (a first layer's) then waited on store forwarding (~4.6 ns a row
      // of 2 terms at batch 1, measured).
      T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
      std::int64_t k = k0;
      for (; k + 4 <= k1; k += 4) {
        a0 += term(k);
        a1 += term(k + 1);
        a2 += term(k + 2);
        a3 += term(k + 3);
      }
      if (k < k1) a0 += term(k);
      if (k + 1 < k1) a1 += term(k + 1);
      if (k + 2 < k1) a2 += term(k + 2);
      const T acc = (bias ? bias[r] : T(0)) + ((a0 + a1) + (a2 + a3));
      yt[r * ldy + j * ly] = relu && acc < T(0) ? T(0) : acc;
    }
  }
}

// Lane-wise partial dots: acc[k] (a vector of 32 bytes, VL lanes) (+)= sum over the block's
// vectors q of gs[row_k][q] * xs[col_k][q], for the kept entries of rows [r0, r1) over one block
// of kLanes batch columns (gs holds rows r0.. only; row strides ldg and ldx). The lanes are summed
// once, after the last block (sum_partials): 20-37% faster than a lane sum per block on d=50-200
// hidden layers at batch 256-4096 (measured).
template <class T>
ALWAYS_INLINE void sddmm_block(const T* gs, std::size_t ldg, const T* xs, std::size_t ldx, const std::int64_t* crow,
                               const std::int64_t* col, T* acc, std::size_t r0, std::size_t r1, bool first,
                               Ahead<T> ahead) {
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t VL = 32 / sizeof(T), NV = kLanes / VL;
  for (std::size_t r = r0; r < r1; ++r) {
    ahead.fetch(r - r0, r1 - r0);
    // Loaded as vectors (V is aligned as T): a memcpy of the row went through the stack in 16-byte
    // halves, and the 32-byte loads after them stalled on store forwarding (~1/3 of a batch-64
    // backward, measured).
    const V* grow = reinterpret_cast<const V*>(gs + (r - r0) * ldg);
    V g[NV];
#pragma GCC unroll 16
    for (std::size_t q = 0; q < NV; ++q) g[q] = grow[q];
    for (std::int64_t k = crow[r]; k < crow[r + 1]; ++k)
      lane_dot<T>(reinterpret_cast<const T*>(g), xs + static_cast<std::size_t>(col[k]) * ldx,
                  acc + static_cast<std::size_t>(k) * VL, first);
  }
}

// One block's three gradients in one sweep over the rows of g (rows of kLanes columns, stride
// ldg): each row is loaded once into registers and serves db (its lane-wise sum into db_acc[r]),
// dv (lane-wise dots with x's rows into dv_acc[k], as sddmm_block) and dx (added into dxs, n_in
// rows of kLanes, zeroed here first). The separate passes read a gradient block three times; where
// it is larger than L1 and x's block is small (first layers: many units, few inputs) those reads
// come from L2. Each dx row sums its terms in the order of the rows r, that of the transposed
// pattern: the bits of the separate products.
// With ys (relu's output, rows of stride ldy), each row of g is masked in registers as the
// separate passes mask it (zero where y <= 0, NaN passes g), and stored to `masked` (rows of
// kLanes) where given.
template <class T>
ALWAYS_INLINE void grads_sweep(const T* gs, std::size_t ldg, const T* ys, std::size_t ldy, T* masked, const T* xs,
                               std::size_t ldx, const T* v, const std::int64_t* crow, const std::int64_t* col,
                               std::size_t rows, std::size_t n_in, T* dv_acc, T* db_acc, T* dxs, bool first,
                               Ahead<T> ahead) {
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t VL = 32 / sizeof(T), NV = kLanes / VL;
  if (dxs != nullptr) std::fill(dxs, dxs + n_in * kLanes, T(0));
  for (std::size_t r = 0; r < rows; ++r) {
    ahead.fetch(r, rows);
    const V* grow = reinterpret_cast<const V*>(gs + r * ldg);
    V g[NV];
#pragma GCC unroll 16
    for (std::size_t q = 0; q < NV; ++q) g[q] = grow[q];
    if (ys != nullptr) {
      const V* yrow = reinterpret_cast<const V*>(ys + r * ldy);
#pragma GCC unroll 16
      for (std::size_t q = 0; q < NV; ++q) g[q] = yrow[q] <= T(0) ? V{} : g[q];
      if (masked != nullptr)
#pragma GCC unroll 16
        for (std::size_t q = 0; q < NV; ++q) reinterpret_cast<V*>(masked + r * kLanes)[q] = g[q];
    }
    if (db_acc != nullptr) lane_sum<T>(reinterpret_cast<const T*>(g), db_acc + r * VL, first);
    for (std::int64_t k = crow[r]; k < crow[r + 1]; ++k) {
      const std::size_t c = static_cast<std::size_t>(col[k]);
      if (dv_acc != nullptr)
        lane_dot<T>(reinterpret_cast<const T*>(g), xs + c * ldx, dv_acc + static_cast<std::size_t>(k) * VL,
                    first);
      if (dxs != nullptr) {
        const T w = v[k];
        V* d = reinterpret_cast<V*>(dxs + c * kLanes);
#pragma GCC unroll 16
        for (std::size_t q = 0; q < NV; ++q) d[q] += w * g[q];
      }
    }
  }
}

// dx and dv of one block in one sweep over x's rows, i.e. over the transposed pattern (vt: the
// weights in its order, t_perm: their CSR positions): each dx row is summed in registers from the
// rows of g (rows of kLanes, stride ldg) and written once to dx (row stride ld_dx, n columns), and
// each x row is read once a block for the dots of its column's kept weights. The separate passes
// read an x row once per kept weight in its column; where x's block is larger than L1 and g's is
// small (last layers: few outputs, many units) those reads come from L2. The same bits as the
// separate products.
template <class T>
ALWAYS_INLINE void grads_sweep_t(const T* gs, std::size_t ldg, const T* xs, std::size_t ldx, const T* vt,
                                 const std::int64_t* t_crow, const std::int64_t* t_col, const std::int64_t* t_perm,
                                 std::size_t n_in, T* dv_acc, T* dx, std::size_t ld_dx, std::size_t n, bool first,
                                 Ahead<T> ahead) {
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t VL = 32 / sizeof(T), NV = kLanes / VL;
  for (std::size_t c = 0; c < n_in; ++c) {
    ahead.fetch(c, n_in);
    V acc[NV];
#pragma GCC unroll 16
    for (std::size_t q = 0; q < NV; ++q) acc[q] = V{} + T(0);
    for (std::int64_t k = t_crow[c]; k < t_crow[c + 1]; ++k) {
      const T* g_row = gs + static_cast<std::size_t>(t_col[k]) * ldg;
      if (dx != nullptr) {
        const V* g = reinterpret_cast<const V*>(g_row);
        const T w = vt[k];
#pragma GCC unroll 16
        for (std::size_t q = 0; q < NV; ++q) acc[q] += w * g[q];
      }
      if (dv_acc != nullptr)
        lane_dot<T>(g_row, xs + c * ldx, dv_acc + static_cast<std::size_t>(t_perm[k]) * VL, first);
    }
    if (dx != nullptr) store_block<T>(dx + c * ld_dx, reinterpret_cast<const T*>(acc), n);
  }
}

// The same for a narrow block (fewer than kLanes / 4 columns), read in place with strides; the
// dot goes into lane 0 of acc[k].
template <class T>
ALWAYS_INLINE void sddmm_narrow(const T* g, std::size_t g_feat, std::size_t g_batch, const T* x, std::size_t x_feat,
                                std::size_t x_batch, const std::int64_t* crow, const std::int64_t* col, T* acc,
                                std::size_t r0, std::size_t r1, std::size_t c0, std::size_t n, bool first) {
  constexpr std::size_t VL = 32 / sizeof(T);
  for (std::size_t r = r0; r < r1; ++r)
    for (std::int64_t k = crow[r]; k < crow[r + 1]; ++k) {
      const T* xc = x + static_cast<std::size_t>(col[k]) * x_feat;
      T s = T(0);
      for (std::size_t j = c0; j < c0 + n; ++j) s += g[r * g_feat + j * g_batch] * xc[j * x_batch];
      T* out = acc + static_cast<std::size_t>(k) * VL;
      if (first) {
        std::fill(out, out + VL, T(0));
        out[0] = s;
      } else {
        out[0] += s;
      }
    }
}

// dst[(r - r0) * ld + j] = src[(c0 + j) * width + r] for features r in [r0, r1) and batch rows
// j < n: a block of a batch-major (B x width) array packed feature-major. Whole 32-byte tiles
// (8 x 8 floats, 4 x 4 doubles) are transposed in registers (one scalar load and store per
// element made the packing half the time of a whole layer, measured); the edges go one by one.
template <class T>
ALWAYS_INLINE void transpose_pack(const T* src, std::size_t width, std::size_t r0, std::size_t r1, std::size_t c0,
                                  std::size_t n, T* dst, std::size_t ld) {
  typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
  constexpr std::size_t VL = 32 / sizeof(T);
  const std::size_t rv = r0 + (r1 - r0) / VL * VL, nv = n / VL * VL;
  for (std::size_t j0 = 0; j0 < nv; j0 += VL) {
    for (std::size_t r = r0; r < rv; r += VL) {
      V a[VL];
      // Loaded and stored as vectors (V is aligned as T), not by memcpy: see spmm_block.
      for (std::size_t q = 0; q < VL; ++q) a[q] = *reinterpret_cast<const V*>(src + (c0 + j0 + q) * width + r);
      if constexpr (VL == 8) {  // unpack within 128-bit halves, then 64-bit pairs, then the halves
        V t[8], u[8];
        for (int q = 0; q < 8; q += 2) {
          t[q] = __builtin_shufflevector(a[q], a[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
          t[q + 1] = __builtin_shufflevector(a[q], a[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
        }
        for (int h = 0; h < 8; h += 4)
          for (int q = 0; q < 2; ++q) {
            u[h + 2 * q] = __builtin_shufflevector(t[h + q], t[h + q + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[h + 2 * q + 1] = __builtin_shufflevector(t[h + q], t[h + q + 2], 2, 3, 10, 11, 6, 7, 14, 15);
          }
        for (int q = 0; q < 4; ++q) {  // u[q] holds features q and q + 4 of rows 0-3, u[q + 4] of rows 4-7
          a[q] = __builtin_shufflevector(u[q], u[q + 4], 0, 1, 2, 3, 8, 9, 10, 11);
          a[q + 4] = __builtin_shufflevector(u[q], u[q + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        }
      } else {
        V t[4];
        for (int q = 0; q < 4; q += 2) {
          t[q] = __builtin_shufflevector(a[q], a[q + 1], 0, 4, 2, 6);
          t[q + 1] = __builtin_shufflevector(a[q], a[q + 1], 1, 5, 3, 7);
        }
        a[0] = __builtin_shufflevector(t[0], t[2], 0, 1, 4, 5);
        a[2] = __builtin_shufflevector(t[0], t[2], 2, 3, 6, 7);
        a[1] = __builtin_shufflevector(t[1], t[3], 0, 1, 4, 5);
        a[3] = __builtin_shufflevector(t[1], t[3], 2, 3, 6, 7);
      }
      for (std::size_t q = 0; q < VL; ++q) *reinterpret_cast<V*>(dst + (r - r0 + q) * ld + j0) = a[q];
    }
    for (std::size_t j = j0; j < j0 + VL; ++j)
      for (std::size_t r = rv; r < r1; ++r) dst[(r - r0) * ld + j] = src[(c0 + j) * width + r];
  }
  for (std::size_t j = nv; j < n; ++j)
    for (std::size_t r = r0; r < r1; ++r) dst[(r - r0) * ld + j] = src[(c0 + j) * width + r];
}

DEFINE_DISPATCH(spmm_block)
DEFINE_DISPATCH(transpose_pack)
DEFINE_DISPATCH(spmm_narrow)
DEFINE_DISPATCH(sddmm_block)
DEFINE_DISPATCH(sddmm_narrow)
DEFINE_DISPATCH(grads_sweep)
DEFINE_DISPATCH(grads_sweep_t)

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

// out[k] = the sum of the lane-wise partials partial[g][k] (VL lanes each) over the groups g,
// added in group order and then in lane order (from zero): the same bits whatever thread took which
// group. Vectorized over the entries: the groups are added lane by lane into group 0's partials
// (overwritten), then chunks of entries are transposed so that each lane's values lie in one row,
// and the rows are added one after another. One entry at a time (its lanes copied out and summed
// as scalars) had ~2% of a d=50 first layer's forward+backward at batch 64 in a perf profile
// (~2 us of ~90).
template <class T>
void sum_partials(T* partial, std::size_t groups, std::size_t count, T* out) {
  constexpr std::size_t VL = 32 / sizeof(T), kChunk = 64;
  const std::size_t n = count * VL;
  for (std::size_t g = 1; g < groups; ++g) {
    const T* other = partial + g * n;
    for (std::size_t i = 0; i < n; ++i) partial[i] += other[i];
  }
  alignas(64) T lanes[VL * kChunk];
  for (std::size_t k0 = 0; k0 < count; k0 += kChunk) {
    const std::size_t m = std::min(kChunk, count - k0);
    run_transpose_pack<T>(static_cast<const T*>(partial + k0 * VL), VL, std::size_t{0}, VL, std::size_t{0}, m,
                          static_cast<T*>(lanes), kChunk);  // lanes[i * kChunk + j] = lane i of entry k0 + j
    T* o = out + k0;
    for (std::size_t j = 0; j < m; ++j) o[j] = T(0);
    for (std::size_t i = 0; i < VL; ++i)
      for (std::size_t j = 0; j < m; ++j) o[j] += lanes[i * kChunk + j];
  }
}

// v made a block of `rows` rows of kLanes lanes, of which the caller writes the first n: sized
// without a fill (a pooled scratch refilled with zeros on every block, 5 MB for a 20000-row layer,
// had ~2% of a d=10,000 training step), and for a partial block the lanes past n zeroed (they are
// computed, never stored).
template <class T>
void shape_block(std::vector<T>& v, std::size_t rows, std::size_t n) {
  v.resize(rows * kLanes);
  if (n < kLanes)
    for (std::size_t r = 0; r < rows; ++r) std::fill(v.data() + r * kLanes + n, v.data() + (r + 1) * kLanes, T(0));
}

// dst (rows x kLanes) = the first n columns of `rows` rows of src (row stride ld).
template <class T>
void copy_rows(const T* src, std::size_t ld, std::size_t rows, std::size_t n, T* dst) {
  for (std::size_t r = 0; r < rows; ++r) std::memcpy(dst + r * kLanes, src + r * ld, n * sizeof(T));
}

// Rows [r0, r1) of a (rows x B) operand with row stride ld, feature-major, or batch-major (B x
// rows, row stride ld), packed for batch columns [c0, c0 + n) into dst (rows x kLanes, zero lanes
// past n).
template <class T>
void pack_block(const T* src, bool batch_major, std::size_t ld, std::size_t r0, std::size_t r1, std::size_t c0,
                std::size_t n, std::vector<T>& dst) {
  shape_block<T>(dst, r1 - r0, n);
  if (batch_major) return run_transpose_pack<T>(src, ld, r0, r1, c0, n, dst.data(), kLanes);
  copy_rows<T>(src + r0 * ld + c0, ld, r1 - r0, n, dst.data());
}

// Rows [r0, r1) of one batch block (columns [c0, c0 + n), n >= kLanes / 4) of Y (B, rows), row-major
// with row stride ldy, from the block's input xs (n_in rows of kLanes, stride ldxs, as spmm_block
// reads it): kTile rows at a time computed into an L1 tile (as spmm_block writes Y^T) and transposed
// into Y. The same terms in the same order as the feature-major output: the same bits. x_next: the
// next block of x read in place (n_in rows, stride ldx), fetched a share per tile, or nullptr.
template <class T>
void spmm_block_to_batch_major(const T* xs, std::size_t ldxs, const T* x_next, std::size_t n_in, std::size_t ldx,
                               const T* vp, const Pattern& p, const T* bias, bool relu, T* yp, std::size_t ldy,
                               std::size_t r0, std::size_t r1, std::size_t c0, std::size_t n) {
  constexpr std::size_t kTile = (std::size_t(16) << 10) / (kLanes * sizeof(T));  // 16 KiB
  alignas(64) T tile[kTile * kLanes];
  for (std::size_t rt = r0; rt < r1; rt += kTile) {
    const std::size_t m = std::min(kTile, r1 - rt);
    Ahead<T> ahead;
    if (x_next != nullptr) {
      const std::size_t a = (rt - r0) * n_in / (r1 - r0), e = (rt - r0 + m) * n_in / (r1 - r0);
      ahead.s[0] = {x_next + a * ldx, e - a, ldx};
    }
    run_spmm_block<T>(xs, ldxs, vp, p.crow + rt, p.col, bias == nullptr ? nullptr : bias + rt, relu,
                      static_cast<T*>(tile), kLanes, std::size_t{0}, m, std::size_t{0}, n, ahead);
    run_transpose_pack<T>(static_cast<const T*>(tile), kLanes, std::size_t{0}, n, std::size_t{0}, m,
                          yp + c0 * ldy + rt, ldy);
  }
}

// Y^T (rows, B) = W X^T (+ bias, relu), X read as X^T (n_in, B) or, batch_major, as X (B, n_in)
// itself: packing a block transposes it, which saves the caller a transposed copy of the input.
// ldx: X's row stride (>= B feature-major, >= n_in batch-major); ldy: Y^T's (>= B), or with
// y_batch_major, Y's (B, rows) (>= rows): a network's last layer writes the row-major output its
// caller gets, from an L1 tile of each block's rows transposed into place (a transposing copy of a
// 256 x 1000 column-major output after the layer took ~0.3 ms, 5% of a d=1000 train step).
template <class T>
void spmm_core(const T* xp, std::size_t n_in, std::size_t B, bool batch_major, std::size_t ldx, const T* vp,
               const Pattern& p, const T* bias, bool relu, T* yp, std::size_t ldy, unsigned threads,
               bool y_batch_major = false) {
  if (B == 0 || p.rows == 0) return;
  const std::size_t s_feat = batch_major ? 1 : ldx, s_batch = batch_major ? ldx : 1;
  const std::size_t blocks = (B + kLanes - 1) / kLanes;
  // Few batch blocks (small batches) and several threads: split the rows too.
  const bool fetch_ahead = !batch_major && beyond_l2<T>(n_in, ldx);
  const std::size_t row_chunks = blocks >= threads ? 1 : std::min<std::size_t>(std::max<std::size_t>(p.rows, 1),
                                                                               (threads + blocks - 1) / blocks);
  const std::size_t rows_per = (p.rows + row_chunks - 1) / std::max<std::size_t>(row_chunks, 1);
  const std::size_t work = p.nnz * B + p.rows * B;
  const unsigned use = work < (1u << 16) ? 1u : threads;  // a thread costs more than a small product
  parallel_for(
      blocks * row_chunks,
      [&](std::size_t t0, std::size_t t1) {
        Scratch<T> scratch;
        std::vector<T>& xs = scratch.v;
        for (std::size_t t = t0; t < t1; ++t) {
          const std::size_t blk = t / row_chunks, rc = t % row_chunks;
          const std::size_t c0 = blk * kLanes, n = std::min(kLanes, B - c0);
          const std::size_t r0 = rc * rows_per, r1 = std::min(p.rows, r0 + rows_per);
          if (r0 >= r1) continue;
          if (n < kLanes / 4) {
            run_spmm_narrow<T>(xp, s_feat, s_batch, vp, p.crow, p.col, bias, relu, yp, y_batch_major ? 1 : ldy,
                               y_batch_major ? ldy : 1, r0, r1, c0, n);
            continue;
          }
          // Full feature-major blocks are read in place (x's next block fetched ahead where x is
          // larger than L2), others packed (n_in x kLanes; lanes past the batch are zero: computed,
          // never stored).
          const bool in_place = !batch_major && n == kLanes;
          const T* x_next = in_place && fetch_ahead && row_chunks == 1 && c0 + 2 * kLanes <= B ? xp + c0 + kLanes
                                                                                              : nullptr;
          if (!in_place) pack_block<T>(xp, batch_major, ldx, 0, n_in, c0, n, xs);
          const T* xb = in_place ? xp + c0 : xs.data();
          const std::size_t ldxb = in_place ? ldx : kLanes;
          if (y_batch_major) {
            spmm_block_to_batch_major<T>(xb, ldxb, x_next, n_in, ldx, vp, p, bias, relu, yp, ldy, r0, r1, c0, n);
            continue;
          }
          // The next block's output rows, fetched while this one computes: a block writes a few
          // lines of every output row, rows ldy apart, and a write to a line not in cache waits
          // for it. A d=50 first layer (256 x 50) wrote its 1-4 MiB output 1.4-1.6x as fast at
          // B = 1024-4096, and as fast where the output stayed cached; not where x's next block
          // is fetched already: both made a 2000 x 2000 layer 1.2-1.4x slower (Xeon VM, measured).
          Ahead<T> ahead;
          if (c0 + 2 * kLanes <= B && !fetch_ahead) ahead.s[1] = {yp + r0 * ldy + c0 + kLanes, r1 - r0, ldy};
          if (x_next != nullptr) ahead.s[0] = {x_next, n_in, ldx};
          run_spmm_block<T>(xb, ldxb, vp, p.crow, p.col, bias, relu, yp, ldy, r0, r1, c0, n, ahead);
        }
      },
      1, use);
}

template <class T>
const T* bias_of(const py::handle& bias_o, std::size_t rows, Array<T>& keep) {
  if (bias_o.is_none()) return nullptr;
  keep = as_array<T>(bias_o, "bias", 1);
  if (static_cast<std::size_t>(keep.shape(0)) != rows) throw std::invalid_argument("bias must have n_rows entries");
  return keep.data();
}

template <class T>
void spmm_impl(const py::handle& xt_o, const py::handle& v_o, const Index& crow, const Index& col,
               const py::handle& bias_o, bool relu, const py::handle& yt_o, unsigned threads, bool batch_major) {
  auto xt = as_array<T>(xt_o, "xt", 2);
  auto v = as_array<T>(v_o, "values", 1);
  auto yt = as_array<T>(yt_o, "yt", 2);
  const std::size_t n_in = xt.shape(batch_major ? 1 : 0), B = xt.shape(batch_major ? 0 : 1);
  const Pattern p = check_pattern(crow, col, n_in);
  if (static_cast<std::size_t>(v.shape(0)) != p.nnz) throw std::invalid_argument("values must have nnz entries");
  if (static_cast<std::size_t>(yt.shape(0)) != p.rows || static_cast<std::size_t>(yt.shape(1)) != B)
    throw std::invalid_argument("yt must have shape (n_rows, batch)");
  Array<T> b;
  const T* bias = bias_of<T>(bias_o, p.rows, b);
  const T* xp = xt.data();
  const T* vp = v.data();
  T* yp = yt.mutable_data();
  py::gil_scoped_release release;
  spmm_core<T>(xp, n_in, B, batch_major, batch_major ? n_in : B, vp, p, bias, relu, yp, B, threads);
}

#if defined(__linux__)
// Outputs from 64 KiB up, freed by their last holder, go back to a small cache and are handed out
// again at the same size, the last freed first (the one most likely still in cache): a training
// loop allocates the same shapes every step, and a fresh buffer is zeroed by the OS page by page
// on first write, in the one thread that touches it first. A 1 MiB output written into fresh pages
// made a d=50 first layer's forward at batch 1024 take 348 us instead of 39-60 us on the 2-core
// VM (glibc hands out blocks this large as new mappings until its threshold adapts); a 2000 x 2000
// layer's forward+backward at batch 1024 faulted 12 2 MiB pages a step. At most kMaxBytes stay
// held; more are freed.
class OutputCache {
 public:
  static constexpr std::size_t kMaxBytes = std::size_t(128) << 20;

  // key: the size (a multiple of 4 KiB), plus one where the block is aligned for huge pages
  void* take(std::size_t key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(key);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* mem = it->second.back();
    it->second.pop_back();
    held_ -= key & ~std::size_t(1);
    return mem;
  }

  void give(void* mem, std::size_t key) {
    const std::size_t size = key & ~std::size_t(1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (held_ + size <= kMaxBytes) {
        free_[key].push_back(mem);
        held_ += size;
        return;
      }
    }
    std::free(mem);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  std::size_t held_ = 0;
};

// Never destroyed: capsules of outputs still alive at exit return their buffers to it.
OutputCache& output_cache() {
  static OutputCache* cache = new OutputCache();
  return *cache;
}

struct Owned {
  void* mem;
  std::size_t key;
};
#endif

// The row stride of a new feature-major (n x B) array: B, or B plus one cache line where B elements
// make a multiple of 1 KiB. Rows a multiple of 4 KiB apart fall on the same cache sets, so a block
// of 64 batch columns over a few hundred rows kept evicting itself: at B = 1024 and 4096 a d=50-100
// hidden layer ran 1.2-1.7x slower than at B + 16 (measured).
template <class T>
std::size_t padded_ld(std::size_t B) {
  return B >= kLanes && (B * sizeof(T)) % 1024 == 0 ? B + 64 / sizeof(T) : B;
}

// A new column-major (B x n) array (feature-major memory, row stride padded_ld(B)), or with
// batch_major a C-contiguous one. From 64 KiB up its buffer comes from OutputCache (see there);
// from 2 MiB up it is backed by transparent huge pages where the OS offers them (Linux, madvise):
// a fresh output is otherwise faulted in 4 KiB at a time, which cost ~15 ms for a 38 MB output
// (9,200 faults) on the 2-core VM where a kernel call writing it took ~10 ms.
template <class T>
py::array_t<T> new_output(std::size_t B, std::size_t n, bool batch_major = false) {
  constexpr std::size_t kPage = 4096, kCached = std::size_t(64) << 10, kHuge = std::size_t(2) << 20;
  const std::size_t ld = batch_major ? B : padded_ld<T>(B);
  const auto sz = static_cast<py::ssize_t>(sizeof(T));
  const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(n)};
  const std::vector<py::ssize_t> strides =
      batch_major ? std::vector<py::ssize_t>{static_cast<py::ssize_t>(n) * sz, sz}
                  : std::vector<py::ssize_t>{sz, static_cast<py::ssize_t>(std::max<std::size_t>(ld, 1)) * sz};
  const std::size_t bytes = ld * n * sizeof(T);
#if defined(__linux__)
  if (bytes >= kCached) {
    const bool huge = bytes >= kHuge;
    const std::size_t align = huge ? kHuge : kPage, size = (bytes + align - 1) / align * align;
    const std::size_t key = size | std::size_t(huge);
    void* mem = output_cache().take(key);
    if (mem == nullptr) {
      mem = std::aligned_alloc(align, size);
      if (mem == nullptr) throw std::bad_alloc();
      if (huge) madvise(mem, size, MADV_HUGEPAGE);  // advice only: without THP the pages are ordinary ones
    }
    py::capsule owner(new Owned{mem, key}, [](void* o) {
      auto* owned = static_cast<Owned*>(o);
      output_cache().give(owned->mem, owned->key);
      delete owned;
    });
    return py::array_t<T>(shape, strides, static_cast<T*>(mem), owner);
  }
#endif
  if (ld == B) return py::array_t<T>(shape, strides);  // one object: ~0.2 us less at batch 1
  // numpy sizes a new array's buffer by its shape, not its strides: the padding needs a base
  py::array_t<T> base(static_cast<py::ssize_t>(ld * n));
  return py::array_t<T>(shape, strides, base.mutable_data(), base);
}

// A (B, n) array that is row- or column-major, rows or columns possibly padded (strides of size-1
// dimensions do not matter: torch sets them freely): its data, whether it is batch-major (row-
// major) and its leading dimension (the stride, in elements, between rows of B x n batch-major or
// between columns feature-major).
struct Operand {
  const void* data;
  std::size_t B, n;
  bool batch_major;
  std::size_t ld;
};

template <class T>
Operand either_major(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array_t<T>>(obj))
    throw std::invalid_argument(std::string(name) + " must be a " + (sizeof(T) == 4 ? "float32" : "float64") +
                                " array");
  auto a = py::reinterpret_borrow<py::array_t<T>>(obj);
  if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must have 2 dims");
  const std::size_t B = a.shape(0), n = a.shape(1);
  const auto sz = static_cast<py::ssize_t>(sizeof(T));
  const py::ssize_t s0 = a.strides(0), s1 = a.strides(1);
  const auto at_least = [sz](py::ssize_t s, std::size_t n) { return s % sz == 0 && s >= static_cast<py::ssize_t>(n) * sz; };
  const bool c_ok = (n <= 1 || s1 == sz) && (B <= 1 || at_least(s0, n));
  const bool f_ok = (B <= 1 || s0 == sz) && (n <= 1 || at_least(s1, B));
  if (!c_ok && !f_ok) throw std::invalid_argument(std::string(name) + " must be row- or column-major");
  if (c_ok) return {a.data(), B, n, true, B <= 1 ? n : static_cast<std::size_t>(s0 / sz)};
  return {a.data(), B, n, false, n <= 1 ? B : static_cast<std::size_t>(s1 / sz)};
}

// The kept weights in CSR order: `values` itself (nnz entries), or with `flat` (the kept weights'
// row * n_in + col) gathered from the dense (n_rows x n_in) weight `values` into `kept` (a dense-
// stored layer's weights, read in place: no copy to keep in step with the optimizer's updates).
template <class T>
const T* kept_values(const py::handle& v_o, const py::handle& flat_o, const Pattern& p, std::size_t n_in,
                     std::vector<T>& kept) {
  auto v = as_array<T>(v_o, "values", 1);
  if (flat_o.is_none()) {
    if (static_cast<std::size_t>(v.shape(0)) != p.nnz) throw std::invalid_argument("values must have nnz entries");
    return v.data();
  }
  const Index flat = as_index(flat_o, "flat");
  const std::size_t dense = p.rows * n_in;
  if (static_cast<std::size_t>(flat.shape(0)) != p.nnz) throw std::invalid_argument("flat must have nnz entries");
  if (static_cast<std::size_t>(v.shape(0)) != dense)
    throw std::invalid_argument("values must have n_rows * n_in entries when flat is given");
  const std::int64_t* f = flat.data();
  kept.resize(p.nnz);
  for (std::size_t k = 0; k < p.nnz; ++k) {
    if (f[k] < 0 || static_cast<std::size_t>(f[k]) >= dense) throw std::invalid_argument("flat must lie in [0, n_rows * n_in)");
    kept[k] = v.data()[f[k]];
  }
  return kept.data();
}

// y (B, n_rows) = x W^T (+ bias, relu) for x (B, n_in) row- or column-major, returned as a new
// column-major array (feature-major memory, padded: the layout the next layer reads without a copy),
// or with row_major a C-contiguous one (a network's output, as its caller gets it).
template <class T>
py::array linear_impl(const py::handle& x_o, const py::handle& v_o, const Pattern& p, std::size_t n_cols,
                      const py::handle& bias_o, bool relu, unsigned threads, const py::handle& flat_o,
                      bool row_major) {
  const Operand x = either_major<T>(x_o, "x");
  const std::size_t B = x.B, n_in = x.n;
  if (n_in != n_cols) throw std::invalid_argument("x must have " + std::to_string(n_cols) + " columns");
  Scratch<T> kept;
  const T* vp = kept_values<T>(v_o, flat_o, p, n_in, kept.v);
  Array<T> b;
  const T* bias = bias_of<T>(bias_o, p.rows, b);
  py::array_t<T> y = new_output<T>(B, p.rows, row_major);
  const T* xp = static_cast<const T*>(x.data);
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    spmm_core<T>(xp, n_in, B, x.batch_major, x.ld, vp, p, bias, relu, yp, row_major ? p.rows : padded_ld<T>(B),
                 threads, row_major);
  }
  return std::move(y);
}

// dv[k] = the dot over the batch of gradient row row_k and input row col_k, for g (rows, B)
// feature-major or (B, rows) batch-major, and x (n_in, B) or (B, n_in) likewise; ldg and ldx are
// their row strides.
template <class T>
void sddmm_core(const T* gp, bool g_batch_major, std::size_t ldg, const T* xp, bool x_batch_major, std::size_t ldx,
                std::size_t n_in, std::size_t B, const Pattern& p, T* dp, unsigned threads) {
  if (B == 0) return std::fill(dp, dp + p.nnz, T(0));
  constexpr std::size_t VL = 32 / sizeof(T);
  const unsigned use = p.nnz * B < (1u << 16) ? 1u : threads;
  const std::size_t g_feat = g_batch_major ? 1 : ldg, g_bstride = g_batch_major ? ldg : 1;
  const std::size_t x_feat = x_batch_major ? 1 : ldx, x_bstride = x_batch_major ? ldx : 1;
  const std::size_t blocks = (B + kLanes - 1) / kLanes;
  // One pass over a batch block: pack rows [r0, r1) of the gradient and all of x, then add the
  // block's lane-wise dots into acc (assigned by the group's first block, `first`).
  auto block_pass = [&](std::size_t blk, std::size_t r0, std::size_t r1, T* acc, bool first, std::vector<T>& gs,
                        std::vector<T>& xs) {
    const std::size_t c0 = blk * kLanes, n = std::min(kLanes, B - c0);
    if (n < kLanes / 4)
      return run_sddmm_narrow<T>(gp, g_feat, g_bstride, xp, x_feat, x_bstride, p.crow, p.col, acc, r0, r1, c0, n,
                                 first);
    pack_block<T>(gp, g_batch_major, ldg, r0, r1, c0, n, gs);
    pack_block<T>(xp, x_batch_major, ldx, std::size_t{0}, n_in, c0, n, xs);
    run_sddmm_block<T>(gs.data(), kLanes, xs.data(), kLanes, p.crow, p.col, acc, r0, r1, first, Ahead<T>{});
  };
  // Threads take groups of consecutive blocks (each packs x once per block, where splitting rows
  // made every thread pack all of it), each group into its own lane-wise partials; one block:
  // threads take rows. The partials are then added in group order and their lanes in lane order:
  // the groups depend on the batch only, so every dv_k is summed in the same order whatever the
  // thread count.
  const std::size_t groups = std::min(blocks, kGroups);
  Scratch<T> partial_scratch;
  std::vector<T>& partial = partial_scratch.v;
  partial.resize(groups * p.nnz * VL);
  if (blocks < 2) {
    parallel_for(
        p.rows,
        [&](std::size_t r0, std::size_t r1) {
          Scratch<T> gs, xs;
          block_pass(0, r0, r1, partial.data(), true, gs.v, xs.v);
        },
        std::max<std::size_t>(1, p.rows / (8 * std::max(use, 1u))), use);
  } else {
    parallel_for(
        groups,
        [&](std::size_t g0, std::size_t g1) {
          Scratch<T> gs, xs;
          for (std::size_t g = g0; g < g1; ++g) {
            const std::size_t b0 = g * blocks / groups, b1 = (g + 1) * blocks / groups;
            for (std::size_t blk = b0; blk < b1; ++blk)
              block_pass(blk, 0, p.rows, partial.data() + g * p.nnz * VL, blk == b0, gs.v, xs.v);
          }
        },
        1, use);
  }
  sum_partials<T>(partial.data(), groups, p.nnz, dp);
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
  sddmm_core<T>(gp, g_batch_major, g_batch_major ? p.rows : B, xp, x_batch_major, x_batch_major ? n_in : B, n_in, B, p,
                dp, threads);
}

// Where the three gradients go: dx (ld_dx row stride, feature-major), dv (nnz, CSR order) and db
// (out); a null pointer for a gradient not asked for.
template <class T>
struct Grads {
  T* dx;
  std::size_t ld_dx;
  T* dv;
  T* db;
};

// The gradients for a narrow batch (B < kLanes / 4): relu's masked gradient formed once,
// feature-major, then the three products on it (the narrow kernels read the batch in place;
// packing it to kLanes lanes would compute up to 64x the lanes).
template <class T>
void grads_small(const Operand& g, const Operand& x, const Operand& y, const T* vt, const Pattern& p,
                 const Pattern& pt, const Grads<T>& out_g, unsigned threads) {
  const std::size_t B = g.B, out = g.n, inn = x.n;
  const T* gp = static_cast<const T*>(g.data);
  bool g_bm = g.batch_major;
  std::size_t ldg = g.ld;
  Scratch<T> masked;
  if (y.data != nullptr) {  // g, zero where y <= 0 (NaN in y passes g, as torch's relu backward does)
    masked.v.resize(out * B);
    T* m = masked.v.data();
    const T* yp = static_cast<const T*>(y.data);
    const std::size_t gf = g_bm ? 1 : ldg, gb = g_bm ? ldg : 1, yf = y.batch_major ? 1 : y.ld,
                      yb = y.batch_major ? y.ld : 1;
    // Both operands are loaded before the select: a conditional load compiles to a branch,
    // mispredicted on half the elements (3.8 ms instead of ~0.3 for 256 x 4096, measured).
    for (std::size_t r = 0; r < out; ++r)
      for (std::size_t j = 0; j < B; ++j) {
        const T gv = gp[r * gf + j * gb];
        m[r * B + j] = yp[r * yf + j * yb] <= T(0) ? T(0) : gv;
      }
    gp = m;
    g_bm = false;
    ldg = B;
  }
  if (out_g.db != nullptr) {  // in a fixed order over the batch: the same bits for any thread count
    const std::size_t gf = g_bm ? 1 : ldg, gb = g_bm ? ldg : 1;
    for (std::size_t r = 0; r < out; ++r) {
      T a = T(0);
      for (std::size_t j = 0; j < B; ++j) a += gp[r * gf + j * gb];
      out_g.db[r] = a;
    }
  }
  if (out_g.dx != nullptr && B > 0)  // dx^T (in, B) = W^T g^T: the product on the transposed pattern
    spmm_core<T>(gp, out, B, g_bm, ldg, vt, pt, nullptr, false, out_g.dx, out_g.ld_dx, threads);
  if (out_g.dv != nullptr) sddmm_core<T>(gp, g_bm, ldg, static_cast<const T*>(x.data), x.batch_major, x.ld, inn, B, p,
                                         out_g.dv, threads);
}

// The gradients block by block (B >= kLanes / 4): each block of kLanes batch columns of g is packed
// feature-major once, relu'd, and serves all three (full feature-major blocks without relu are
// read in place, and so are those beyond L2 with relu, masked in registers: big_sweep): db and dv as lane-wise partials per group of blocks, summed in group order
// (the groups depend on B only: the same bits for any thread count), dx written per block; threads
// take groups, so a batch of one block runs on one thread. The passes of grads_small write and
// read a masked copy of g three times; with the padded layout, this ran forward+backward
// 0.9-1.4x as fast at B = 1024-4096 on d=50-200 layers, and 2-3x at B = 48-63 (measured).
template <class T>
void grads_blocks(const Operand& g, const Operand& x, const Operand& y, const T* v, const T* vt, const Pattern& p,
                  const Pattern& pt, const std::int64_t* t_perm, const Grads<T>& out_g, unsigned threads) {
  constexpr std::size_t VL = 32 / sizeof(T);
  const std::size_t B = g.B, out = g.n, inn = x.n;
  const std::size_t blocks = (B + kLanes - 1) / kLanes, groups = std::min(blocks, kGroups);
  Scratch<T> dv_part, db_part;
  if (out_g.dv != nullptr) dv_part.v.resize(groups * p.nnz * VL);
  if (out_g.db != nullptr) db_part.v.resize(groups * out * VL);
  const T* gp = static_cast<const T*>(g.data);
  const T* xp = static_cast<const T*>(x.data);
  const T* yp = static_cast<const T*>(y.data);
  const unsigned use = (p.nnz + out) * B < (1u << 16) ? 1u : threads;
  const bool fetch_ahead = beyond_l2<T>(inn, x.ld) || beyond_l2<T>(out, g.ld);
  // One sweep a block where one operand's block fits a third of L1 and the other's does not (see
  // grads_sweep, grads_sweep_t): the backward kernel of a d=50 first layer (256 x 50) ran 1.1-1.3x
  // as fast at B = 1024-4096, of a last layer (50 x 256) 1.03-1.2x; with 32 KiB, d=100 layers
  // (256 x 100, 100 x 256) gained nothing or lost up to 1.2x (measured on the Xeon VM).
  constexpr std::size_t kSweepBytes = std::size_t(16) << 10;
  const bool small_in = inn * kLanes * sizeof(T) <= kSweepBytes, small_out = out * kLanes * sizeof(T) <= kSweepBytes;
  const bool sweep = small_in && !small_out, sweep_t = small_out && !small_in;
  // Blocks of g larger than L2 (layers of thousands of units), g and y feature-major: db and dv in
  // one sweep over g's rows read in place (grads_sweep), relu's mask applied in registers; the
  // masked copy of the separate passes went to L3 and was read back by each product. In one
  // process, toggled call by call: a d=10,000 network's 20000 x 10000 and 20000 x 20000 layers
  // (batch 256) ran their backward 1.15-1.22x as fast, a training step 1.06-1.09x. (For a
  // batch-major g, packed, the sweep measured 0.96x: those keep the separate passes.)
  const bool big_sweep = !sweep && out * kLanes * sizeof(T) > (std::size_t(1) << 20) && !g.batch_major &&
                         (yp == nullptr || !y.batch_major);
  parallel_for(
      groups,
      [&](std::size_t g0, std::size_t g1) {
        Scratch<T> gs, ys, xs, dxs;
        for (std::size_t grp = g0; grp < g1; ++grp) {
          const std::size_t b0 = grp * blocks / groups, b1 = (grp + 1) * blocks / groups;
          for (std::size_t blk = b0; blk < b1; ++blk) {
            const std::size_t c0 = blk * kLanes, n = std::min(kLanes, B - c0);
            const bool first = blk == b0;
            // The next block's rows read in place, fetched while this one computes: g's and y's
            // during dx, x's during dv (g's too when no dx is asked for, as of a first layer).
            Ahead<T> ahead_g, ahead_x;
            if (fetch_ahead && blk + 1 < b1 && c0 + 2 * kLanes <= B) {
              if (!x.batch_major) ahead_x.s[0] = {xp + c0 + kLanes, inn, x.ld};
              Ahead<T>& to = out_g.dx != nullptr ? ahead_g : ahead_x;
              if (!g.batch_major) to.s[1] = {gp + c0 + kLanes, out, g.ld};
              if (yp != nullptr && !y.batch_major) to.s[2] = {yp + c0 + kLanes, out, y.ld};
            }
            const T* gb = gp + c0;
            std::size_t ldb = g.ld;
            const T* y_in_place = nullptr;  // y's block, for the sweep to mask g's rows with
            if (big_sweep && n == kLanes) {
              if (yp != nullptr) y_in_place = yp + c0;
            } else if (yp != nullptr && !g.batch_major && !y.batch_major) {
              // g zero where y <= 0 (NaN in y passes g, as torch's relu backward), in one pass
              // over both; both are loaded before the select (a conditional load compiles to a
              // branch, mispredicted on half the elements: ~10x slower, measured).
              shape_block<T>(gs.v, out, n);
              for (std::size_t r = 0; r < out; ++r) {
                const T* gr = gp + r * g.ld + c0;
                const T* yr = yp + r * y.ld + c0;
                T* m = gs.v.data() + r * kLanes;
                for (std::size_t j = 0; j < n; ++j) {
                  const T gv = gr[j];
                  m[j] = yr[j] <= T(0) ? T(0) : gv;
                }
              }
              gb = gs.v.data();
              ldb = kLanes;
            } else if (g.batch_major || n < kLanes || yp != nullptr) {
              pack_block<T>(gp, g.batch_major, g.ld, 0, out, c0, n, gs.v);
              if (yp != nullptr) {  // as above, from packed copies of batch-major operands
                pack_block<T>(yp, y.batch_major, y.ld, 0, out, c0, n, ys.v);
                T* m = gs.v.data();
                const T* yb = ys.v.data();
                for (std::size_t i = 0; i < out * kLanes; ++i) {
                  const T gv = m[i];
                  m[i] = yb[i] <= T(0) ? T(0) : gv;
                }
              }
              gb = gs.v.data();
              ldb = kLanes;
            }
            // x's block: read in place when full and feature-major, else packed
            const auto x_block = [&](std::size_t& ld) -> const T* {
              if (!x.batch_major && n == kLanes) return ld = x.ld, xp + c0;
              pack_block<T>(xp, x.batch_major, x.ld, 0, inn, c0, n, xs.v);
              return ld = kLanes, xs.v.data();
            };
            T* dv_acc = out_g.dv != nullptr ? dv_part.v.data() + grp * p.nnz * VL : nullptr;
            T* db_acc = out_g.db != nullptr ? db_part.v.data() + grp * out * VL : nullptr;
            std::size_t ldxb = 0;
            if (big_sweep && n == kLanes) {
              // db and dv from each row of g's block (read in place) in registers, masked there;
              // a masked copy is stored only for dx.
              const T* xb = dv_acc != nullptr ? x_block(ldxb) : nullptr;
              T* masked = nullptr;
              if (y_in_place != nullptr && out_g.dx != nullptr) {
                shape_block<T>(gs.v, out, n);
                masked = gs.v.data();
              }
              run_grads_sweep<T>(gb, ldb, y_in_place, y.ld, masked, xb, ldxb, v, p.crow, p.col, out, inn, dv_acc,
                                 db_acc, static_cast<T*>(nullptr), first, Ahead<T>{});
              if (out_g.dx != nullptr)
                run_spmm_block<T>(masked != nullptr ? masked : gb, masked != nullptr ? kLanes : ldb, vt, pt.crow,
                                  pt.col, nullptr, false, out_g.dx, out_g.ld_dx, std::size_t{0}, inn, c0, n, ahead_g);
              continue;
            }
            if (sweep) {
              // The next block's operands read in place, whatever their size: in a network
              // (and a forward+backward loop) they come from L3 (d=50 256 x 50 layer's
              // forward+backward at B = 1024-4096: 1.02-1.1x dense's ratio, measured).
              Ahead<T> ahead_s;
              if (blk + 1 < b1 && c0 + 2 * kLanes <= B) {
                if (!g.batch_major) ahead_s.s[0] = {gp + c0 + kLanes, out, g.ld};
                if (yp != nullptr && !y.batch_major) ahead_s.s[1] = {yp + c0 + kLanes, out, y.ld};
                if (!x.batch_major) ahead_s.s[2] = {xp + c0 + kLanes, inn, x.ld};
              }
              const T* xb = x_block(ldxb);
              if (out_g.dx != nullptr) dxs.v.resize(inn * kLanes);
              run_grads_sweep<T>(gb, ldb, static_cast<const T*>(nullptr), std::size_t{0}, static_cast<T*>(nullptr), xb,
                                 ldxb, v, p.crow, p.col, out, inn, dv_acc, db_acc,
                                 out_g.dx != nullptr ? dxs.v.data() : nullptr, first, ahead_s);
              if (out_g.dx != nullptr)
                for (std::size_t c = 0; c < inn; ++c)
                  std::memcpy(out_g.dx + c * out_g.ld_dx + c0, dxs.v.data() + c * kLanes, n * sizeof(T));
              continue;
            }
            if (db_acc != nullptr)
              for (std::size_t r = 0; r < out; ++r) lane_sum<T>(gb + r * ldb, db_acc + r * VL, first);
            if (sweep_t) {
              const T* xb = x_block(ldxb);
              Ahead<T> ahead_t;  // dx's next block (written in place, rows ld_dx apart) and x's, as above
              if (blk + 1 < b1 && c0 + 2 * kLanes <= B) {
                if (out_g.dx != nullptr) ahead_t.s[0] = {out_g.dx + c0 + kLanes, inn, out_g.ld_dx};
                if (!x.batch_major) ahead_t.s[1] = {xp + c0 + kLanes, inn, x.ld};
              }
              run_grads_sweep_t<T>(gb, ldb, xb, ldxb, vt, pt.crow, pt.col, t_perm, inn, dv_acc,
                                   out_g.dx != nullptr ? out_g.dx + c0 : nullptr, out_g.ld_dx, n, first, ahead_t);
              continue;
            }
            if (out_g.dx != nullptr)
              run_spmm_block<T>(gb, ldb, vt, pt.crow, pt.col, nullptr, false, out_g.dx, out_g.ld_dx, std::size_t{0},
                                inn, c0, n, ahead_g);
            if (dv_acc != nullptr) {
              const T* xb = x_block(ldxb);
              run_sddmm_block<T>(gb, ldb, xb, ldxb, p.crow, p.col, dv_acc, std::size_t{0}, out, first, ahead_x);
            }
          }
        }
      },
      1, use);
  if (out_g.dv != nullptr) sum_partials<T>(dv_part.v.data(), groups, p.nnz, out_g.dv);
  if (out_g.db != nullptr) sum_partials<T>(db_part.v.data(), groups, out, out_g.db);
}

// The three gradients of y = act(x W^T + b) (act identity or relu) in one call, from the output
// gradient g (B, out) and, for relu, the forward's output y (B, out): dx (B, in) column-major
// (padded as the forward's outputs), dv (nnz) in CSR order, db (out). One call instead of three
// saves a first-order backward ~30 us of per-call costs (a d=50 hidden layer's whole backward at
// batch 64 is ~40 us of kernels).
template <class T>
py::tuple backward_impl(const py::handle& g_o, const py::handle& x_o, const py::handle& v_o, const Pattern& p,
                        const Pattern& pt, const std::int64_t* pp, const py::handle& y_o, bool need_dx, bool need_dv,
                        bool need_db, unsigned threads, const py::handle& flat_o) {
  const Operand g = either_major<T>(g_o, "g"), x = either_major<T>(x_o, "x");
  if (g.B != x.B) throw std::invalid_argument("g and x must have the same batch");
  const std::size_t B = g.B, out = g.n, inn = x.n;
  if (p.rows != out || pt.rows != inn)
    throw std::invalid_argument("g must have " + std::to_string(p.rows) + " columns and x " + std::to_string(pt.rows));
  Scratch<T> kept;
  const T* vp = kept_values<T>(v_o, flat_o, p, inn, kept.v);
  Operand y{nullptr, 0, 0, false, 0};
  if (!y_o.is_none()) {
    y = either_major<T>(y_o, "y");
    if (y.B != B || y.n != out) throw std::invalid_argument("y must have g's shape");
  }
  py::object dx = py::none(), dv = py::none(), db = py::none();
  Grads<T> grads{nullptr, padded_ld<T>(B), nullptr, nullptr};
  if (need_dx) {
    auto a = new_output<T>(B, inn);
    grads.dx = a.mutable_data();
    dx = std::move(a);
  }
  // With flat (checked by kept_values) the weight is dense-stored: dv is then its dense (out, in)
  // gradient, zero off the mask, scattered here rather than by two torch ops.
  const std::int64_t* flat = flat_o.is_none() ? nullptr : py::reinterpret_borrow<Index>(flat_o).data();
  Scratch<T> dv_kept;  // the kept weights' gradient in CSR order, before the scatter
  T* dense_dw = nullptr;
  if (need_dv) {
    if (flat != nullptr) {
      py::array_t<T> a({static_cast<py::ssize_t>(out), static_cast<py::ssize_t>(inn)});
      dense_dw = a.mutable_data();
      std::fill(dense_dw, dense_dw + out * inn, T(0));
      dv_kept.v.resize(p.nnz);
      grads.dv = dv_kept.v.data();
      dv = std::move(a);
    } else {
      py::array_t<T> a(static_cast<py::ssize_t>(p.nnz));
      grads.dv = a.mutable_data();
      dv = std::move(a);
    }
  }
  if (need_db) {
    py::array_t<T> a(static_cast<py::ssize_t>(out));
    grads.db = a.mutable_data();
    db = std::move(a);
  }
  {
    py::gil_scoped_release release;
    Scratch<T> vt;  // the weights in the transposed pattern's order, for dx
    if (need_dx) {
      vt.v.resize(p.nnz);
      for (std::size_t k = 0; k < p.nnz; ++k) vt.v[k] = vp[pp[k]];
    }
    if (B >= kLanes / 4) grads_blocks<T>(g, x, y, vp, vt.v.data(), p, pt, pp, grads, threads);
    else grads_small<T>(g, x, y, vt.v.data(), p, pt, grads, threads);
    if (dense_dw != nullptr)
      for (std::size_t k = 0; k < p.nnz; ++k) dense_dw[flat[k]] = grads.dv[k];
  }
  return py::make_tuple(dx, dv, db);
}

bool is_double(const py::handle& a) { return py::isinstance<py::array_t<double>>(a); }

// A CSR pattern checked once and then held by C++, immutable, with (for the backward) its transpose
// and the permutation t_perm (values.T = values[t_perm]). At batch 1 the per-call checks and
// conversions of the index arrays cost about half of a small layer's call (_C.csr_linear on a
// 256 x 50 layer: ~1.0 us of 2.2 with no product at all, measured).
struct CsrPattern {
  std::vector<std::int64_t> crow, col, t_crow, t_col, t_perm;
  std::size_t n_cols;

  CsrPattern(const py::handle& crow_o, const py::handle& col_o, std::size_t cols, const py::handle& t_crow_o,
             const py::handle& t_col_o, const py::handle& t_perm_o)
      : n_cols(cols) {
    const Index cr = as_index(crow_o, "crow"), cc = as_index(col_o, "col");
    const Pattern p = check_pattern(cr, cc, cols);
    crow.assign(p.crow, p.crow + p.rows + 1);
    col.assign(p.col, p.col + p.nnz);
    const int given = !t_crow_o.is_none() + !t_col_o.is_none() + !t_perm_o.is_none();
    if (given == 0) return;
    if (given != 3) throw std::invalid_argument("t_crow, t_col and t_perm go together");
    const Index tr = as_index(t_crow_o, "t_crow"), tc = as_index(t_col_o, "t_col"), tp = as_index(t_perm_o, "t_perm");
    const Pattern pt = check_pattern(tr, tc, p.rows);
    if (pt.rows != cols || pt.nnz != p.nnz) throw std::invalid_argument("t_crow, t_col must be the transposed pattern");
    if (static_cast<std::size_t>(tp.shape(0)) != p.nnz) throw std::invalid_argument("t_perm must have nnz entries");
    // t_perm must be a permutation that maps each transposed entry to the CSR entry at its
    // position: anything else would give wrong gradients, never an out-of-bounds read.
    const std::int64_t* pp = tp.data();
    for (std::size_t c = 0; c < cols; ++c)
      for (std::int64_t k = pt.crow[c]; k < pt.crow[c + 1]; ++k) {
        const std::int64_t e = pp[k];
        if (e < 0 || static_cast<std::size_t>(e) >= p.nnz || p.col[e] != static_cast<std::int64_t>(c) ||
            e < p.crow[pt.col[k]] || e >= p.crow[pt.col[k] + 1])
          throw std::invalid_argument("t_perm must map the transposed pattern's entries to the pattern's");
      }
    t_crow.assign(pt.crow, pt.crow + pt.rows + 1);
    t_col.assign(pt.col, pt.col + pt.nnz);
    t_perm.assign(pp, pp + p.nnz);
  }
  Pattern view() const { return {crow.data(), col.data(), crow.size() - 1, col.size()}; }
  Pattern t_view() const {
    if (t_crow.empty()) throw std::invalid_argument("this pattern was made without its transpose (t_crow, t_col, t_perm)");
    return {t_crow.data(), t_col.data(), t_crow.size() - 1, t_col.size()};
  }
};

}  // namespace

void bind_masked_linear(py::module_& m) {
  py::class_<CsrPattern>(m, "CsrPattern",
                         "A CSR pattern (crow, col) of an (n_rows x n_cols) matrix, checked once and copied.")
      .def(py::init<py::handle, py::handle, std::size_t, py::handle, py::handle, py::handle>(), py::arg("crow"),
           py::arg("col"), py::arg("n_cols"), py::arg("t_crow") = py::none(), py::arg("t_col") = py::none(),
           py::arg("t_perm") = py::none())
      .def_property_readonly("shape", [](const CsrPattern& c) { return py::make_tuple(c.crow.size() - 1, c.n_cols); })
      .def(
          "linear",
          [](const CsrPattern& c, py::handle x, py::handle values, py::handle bias, bool relu, unsigned threads,
             py::handle flat, bool row_major) -> py::array {
            const Pattern p = c.view();
            const unsigned t = std::max(threads, 1u);
            if (is_double(x)) return linear_impl<double>(x, values, p, c.n_cols, bias, relu, t, flat, row_major);
            return linear_impl<float>(x, values, p, c.n_cols, bias, relu, t, flat, row_major);
          },
          py::arg("x"), py::arg("values"), py::arg("bias"), py::arg("relu"), py::arg("threads") = 1,
          py::arg("flat") = py::none(), py::arg("row_major") = false,
          "y = x W^T (+ bias, then relu if asked) for x (B, n_in) row- or column-major float32/float64 and W\n"
          "(n_rows x n_in) given by its CSR values (or, with flat, the kept weights' row * n_in + col, by the\n"
          "dense weight flattened); y (B, n_rows) is a new column-major array, or with row_major a\n"
          "C-contiguous one.")
      .def(
          "backward",
          [](const CsrPattern& c, py::handle g, py::handle x, py::handle values, py::handle y, bool need_dx,
             bool need_dv, bool need_db, unsigned threads, py::handle flat) -> py::tuple {
            const Pattern p = c.view(), pt = c.t_view();
            if (is_double(x))
              return backward_impl<double>(g, x, values, p, pt, c.t_perm.data(), y, need_dx, need_dv, need_db,
                                           std::max(threads, 1u), flat);
            return backward_impl<float>(g, x, values, p, pt, c.t_perm.data(), y, need_dx, need_dv, need_db,
                                        std::max(threads, 1u), flat);
          },
          py::arg("g"), py::arg("x"), py::arg("values"), py::arg("y"), py::arg("need_dx"), py::arg("need_dv"),
          py::arg("need_db"), py::arg("threads") = 1, py::arg("flat") = py::none(),
          "(dx, dv, db) of y = act(x W^T + b) for the output gradient g (B, out) and x (B, in), each row- or\n"
          "column-major; y (the forward's output) for act = relu, else None. dx (B, in) is a new column-major\n"
          "array, dv (nnz) in CSR order, db (out); a gradient not needed is None. With flat (the kept weights'\n"
          "row * in + col), values is the dense weight flattened and dv its dense (out, in) gradient. Needs the\n"
          "pattern made with its transpose.");
  m.def(
      "feature_major_ld",
      [](std::size_t batch, std::size_t itemsize) -> std::size_t {
        if (itemsize == 8) return padded_ld<double>(batch);
        if (itemsize == 4) return padded_ld<float>(batch);
        throw std::invalid_argument("itemsize must be 4 or 8");
      },
      py::arg("batch"), py::arg("itemsize"),
      "The column stride (in elements) of the column-major (batch, n) arrays the kernels return: batch,\n"
      "or batch plus one cache line where batch * itemsize is a multiple of 1 KiB (cache-set aliasing).");
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
