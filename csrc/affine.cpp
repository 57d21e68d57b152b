// The affine normalizer on the CPU: z = t + x exp(s), s = b tanh(u / b), and log|dz/dx| = s, with
// the parameters (t, u) of each element read from h[..., 0] and h[..., 1]; its backward; and the
// inverse x = (z - t) exp(-s).
//
// Why here: in torch this is six element-wise ops forward and about ten backward, each a pass over
// memory and, at the sizes of the paper's data (d = 15, a few hundred rows), mostly dispatch. One
// pass reads each parameter once. The formulas are those of
// strnn_fast/flows/normalizers/affine.py, whose torch path stays the reference in the tests.
//
// Layout: every array is 2-D (N0, N1), h and its gradient (N0, N1, 2), each with its own strides
// (numpy's, in bytes): the conditioners hand h over as a transposed view of their output, and a
// copy into one layout cost as much as the arithmetic. Tiles of kTile elements are gathered into
// local arrays, computed in vector loops and scattered back.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "bindings.hpp"
#include "fast_math.hpp"
#include "parallel.hpp"

namespace py = pybind11;

namespace strnn {
namespace {

constexpr std::size_t kTile = 64;
// Lambdas are functions of their own: inlined, they are compiled for the enclosing clone's ISA.
#define ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

// A strided view: element (i, j) (and parameter p) of a numpy array, by byte strides.
template <class T>
struct View {
  char* data = nullptr;
  py::ssize_t s0 = 0, s1 = 0, s2 = 0;
  ALWAYS_INLINE T& at(std::size_t i, std::size_t j, std::size_t p = 0) const {
    return *reinterpret_cast<T*>(data + static_cast<py::ssize_t>(i) * s0 + static_cast<py::ssize_t>(j) * s1 +
                                 static_cast<py::ssize_t>(p) * s2);
  }
  explicit operator bool() const { return data != nullptr; }
};

// obj as an array of T, refused by name otherwise (or where it must be writable and is not).
template <class T>
py::array checked_array(const py::handle& obj, const char* name, bool writable) {
  if (!py::isinstance<py::array_t<T>>(obj))
    throw std::invalid_argument(std::string(name) + " must be a " + (sizeof(T) == 4 ? "float32" : "float64") +
                                " array");
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (writable && !a.writeable()) throw std::invalid_argument(std::string(name) + " must be writable");
  return a;
}

template <class T>
View<T> view_of(const py::handle& obj, const char* name, std::size_t n0, std::size_t n1, bool params, bool optional,
                bool writable) {
  if (optional && obj.is_none()) return {};
  const py::array a = checked_array<T>(obj, name, writable);
  const py::ssize_t nd = params ? 3 : 2;
  if (a.ndim() != nd || static_cast<std::size_t>(a.shape(0)) != n0 || static_cast<std::size_t>(a.shape(1)) != n1 ||
      (params && a.shape(2) != 2))
    throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(n0) + ", " +
                                std::to_string(n1) + (params ? ", 2)" : ")"));
  View<T> v;
  v.data = static_cast<char*>(const_cast<void*>(a.data()));
  v.s0 = a.strides(0);
  v.s1 = a.strides(1);
  v.s2 = params ? a.strides(2) : 0;
  return v;
}

struct Sizes {
  std::size_t n0, n1;
};

Sizes sizes_of(const py::handle& x, const char* name) {
  if (!py::isinstance<py::array>(x)) throw std::invalid_argument(std::string(name) + " must be an array");
  auto a = py::reinterpret_borrow<py::array>(x);
  if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must have 2 dims");
  return {static_cast<std::size_t>(a.shape(0)), static_cast<std::size_t>(a.shape(1))};
}

// s = b tanh(u / b) and e = exp(s) for n elements (vectorized).
template <class T>
ALWAYS_INLINE void log_scale(const T* u, std::size_t n, T bound, T* s, T* e) {
  for (std::size_t j = 0; j < n; ++j) {
    s[j] = bound * fast_tanh(u[j] / bound);
    e[j] = fast_exp(s[j]);
  }
}

// The elements of rows [r0, r1) in row order, kTile at a time whatever the row length (rows of a
// dozen variables would otherwise leave the vector loops mostly scalar remainders). gather(q, i,
// j, n) fills tile slots [q, q + n) from row i's elements [j, j + n) (a plain strided loop);
// compute(n) runs the vector loops; scatter() writes back the same way.
template <class Gather, class Compute, class Scatter>
ALWAYS_INLINE void tiles(std::size_t r0, std::size_t r1, std::size_t n1, Gather&& gather, Compute&& compute,
                         Scatter&& scatter) {
  if (n1 == 0) return;
  std::size_t i = r0, j = 0;
  while (i < r1) {
    const std::size_t i0 = i, j0 = j;
    std::size_t n = 0;
    for (; n < kTile && i < r1;) {
      const std::size_t m = std::min(kTile - n, n1 - j);
      gather(n, i, j, m);
      n += m;
      j += m;
      if (j == n1) j = 0, ++i;
    }
    compute(n);
    for (std::size_t q = 0, ii = i0, jj = j0; q < n;) {
      const std::size_t m = std::min(n - q, n1 - jj);
      scatter(q, ii, jj, m);
      q += m;
      jj += m;
      if (jj == n1) jj = 0, ++ii;
    }
  }
}

// Row i's elements [j, j + n) of a strided view, into or out of a tile.
template <class T>
ALWAYS_INLINE void load(const View<T>& v, std::size_t i, std::size_t j, std::size_t n, std::size_t p, T* dst) {
  const char* base = v.data + static_cast<py::ssize_t>(i) * v.s0 + static_cast<py::ssize_t>(j) * v.s1 +
                     static_cast<py::ssize_t>(p) * v.s2;
  for (std::size_t q = 0; q < n; ++q) dst[q] = *reinterpret_cast<const T*>(base + static_cast<py::ssize_t>(q) * v.s1);
}

template <class T>
ALWAYS_INLINE void store(const View<T>& v, std::size_t i, std::size_t j, std::size_t n, std::size_t p, const T* src) {
  char* base = v.data + static_cast<py::ssize_t>(i) * v.s0 + static_cast<py::ssize_t>(j) * v.s1 +
               static_cast<py::ssize_t>(p) * v.s2;
  for (std::size_t q = 0; q < n; ++q) *reinterpret_cast<T*>(base + static_cast<py::ssize_t>(q) * v.s1) = src[q];
}

// The map (inverse = false: out = t + in exp(s), ld = s) or its inverse (out = (in - t) exp(-s); ld
// unused), one gather of (in, t, u) for both.
template <class T>
SIMD_CLONES void map_rows(View<T> in, View<T> h, View<T> out, View<T> ld, std::size_t r0, std::size_t r1,
                          std::size_t n1, T bound, bool inverse) {
  T xs[kTile], ts[kTile], us[kTile], s[kTile], e[kTile];
  tiles(
      r0, r1, n1,
      [&](std::size_t q, std::size_t i, std::size_t j, std::size_t n) ALWAYS_INLINE_LAMBDA {
        load(in, i, j, n, 0, xs + q);
        load(h, i, j, n, 0, ts + q);
        load(h, i, j, n, 1, us + q);
      },
      [&](std::size_t n) ALWAYS_INLINE_LAMBDA {
        if (inverse) {
          for (std::size_t q = 0; q < n; ++q) us[q] = -us[q];  // exp(-s) = exp(b tanh(-u / b))
          log_scale(us, n, bound, s, e);
          for (std::size_t q = 0; q < n; ++q) xs[q] = (xs[q] - ts[q]) * e[q];
        } else {
          log_scale(us, n, bound, s, e);
          for (std::size_t q = 0; q < n; ++q) xs[q] = ts[q] + xs[q] * e[q];
        }
      },
      [&](std::size_t q, std::size_t i, std::size_t j, std::size_t n) ALWAYS_INLINE_LAMBDA {
        store(out, i, j, n, 0, xs + q);
        if (ld) store(ld, i, j, n, 0, s + q);
      });
}

// gx = gz e, gt = gz, gu = (gz x e + gld) ds/du with ds/du = 1 - (s / b)^2.
template <class T>
SIMD_CLONES void backward_rows(View<T> x, View<T> h, View<T> gz, View<T> gld, View<T> gx, View<T> gh,
                               std::size_t r0, std::size_t r1, std::size_t n1, T bound) {
  T xs[kTile], us[kTile], gzs[kTile], glds[kTile], s[kTile], e[kTile];
  tiles(
      r0, r1, n1,
      [&](std::size_t q, std::size_t i, std::size_t j, std::size_t n) ALWAYS_INLINE_LAMBDA {
        load(x, i, j, n, 0, xs + q);
        load(h, i, j, n, 1, us + q);
        if (gz) load(gz, i, j, n, 0, gzs + q);
        else std::fill(gzs + q, gzs + q + n, T(0));
        if (gld) load(gld, i, j, n, 0, glds + q);
        else std::fill(glds + q, glds + q + n, T(0));
      },
      [&](std::size_t n) ALWAYS_INLINE_LAMBDA {
        log_scale(us, n, bound, s, e);
        for (std::size_t q = 0; q < n; ++q) {
          const T r = s[q] / bound;
          us[q] = (gzs[q] * xs[q] * e[q] + glds[q]) * (T(1) - r * r);  // gu
          xs[q] = gzs[q] * e[q];                                      // gx
        }
      },
      [&](std::size_t q, std::size_t i, std::size_t j, std::size_t n) ALWAYS_INLINE_LAMBDA {
        store(gx, i, j, n, 0, xs + q);
        store(gh, i, j, n, 0, gzs + q);
        store(gh, i, j, n, 1, us + q);
      });
}

// The column path, for parameters whose batch dimension is contiguous (the fused chain's feature-
// major output viewed per variable): variable by variable over blocks of kRows rows, so that the
// vector loops run along the batch with no per-element index arithmetic. An operand whose rows are
// contiguous is read (written) in place; another is gathered (scattered) kCols columns at a time
// through a local buffer, row by row, so that a row-major operand's row segment is one cache line
// read once, not kCols lines read a column apart. The tile path gathered every parameter at a
// stride of the batch: the d=15, 1024-row map took 78 us there (21 us here).
constexpr std::size_t kRows = 256, kCols = 8;

template <class T>
ALWAYS_INLINE bool rows_contiguous(const View<T>& v) {
  return v.s0 == static_cast<py::ssize_t>(sizeof(T));
}

// Columns [j0, j0 + m) (parameter p) of rows [r0, r0 + n) into buf, column c at buf + c * kRows.
template <class T>
ALWAYS_INLINE void gather(const View<T>& v, std::size_t r0, std::size_t n, std::size_t j0, std::size_t m,
                          std::size_t p, T* buf) {
  for (std::size_t q = 0; q < n; ++q) {
    const T* row = &v.at(r0 + q, j0, p);
    for (std::size_t c = 0; c < m; ++c)
      buf[c * kRows + q] = *reinterpret_cast<const T*>(reinterpret_cast<const char*>(row) + c * v.s1);
  }
}

template <class T>
ALWAYS_INLINE void scatter(const View<T>& v, std::size_t r0, std::size_t n, std::size_t j0, std::size_t m,
                           std::size_t p, const T* buf) {
  for (std::size_t q = 0; q < n; ++q) {
    T* row = &v.at(r0 + q, j0, p);
    for (std::size_t c = 0; c < m; ++c)
      *reinterpret_cast<T*>(reinterpret_cast<char*>(row) + c * v.s1) = buf[c * kRows + q];
  }
}

// Column j0 + c (parameter p) of rows from r0: in place, or its slot of the buffer. An absent
// (optional) operand gets the buffer, as scratch.
template <class T>
ALWAYS_INLINE T* column(const View<T>& v, std::size_t r0, std::size_t j0, std::size_t c, std::size_t p, T* buf) {
  return v && rows_contiguous(v) ? &v.at(r0, j0 + c, p) : buf + c * kRows;
}

template <class T>
ALWAYS_INLINE bool buffered(const View<T>& v) {
  return v && !rows_contiguous(v);
}

// map_rows by columns; ld_sum (rows, stride s0; optional) gets the sum of each row's log-scales,
// added in column order.
template <class T, bool Inverse>
SIMD_CLONES_512 void map_columns(View<T> in, View<T> h, View<T> out, View<T> ld, View<T> ld_sum, std::size_t r0,
                                 std::size_t r1, std::size_t n1, T bound) {
  T bx[kCols * kRows], bt[kCols * kRows], bu[kCols * kRows], bo[kCols * kRows], bs[kCols * kRows], acc[kRows];
  const T sign = Inverse ? T(-1) : T(1);
  for (std::size_t a = r0; a < r1; a += kRows) {
    const std::size_t n = std::min(kRows, r1 - a);
    std::fill(acc, acc + n, T(0));
    for (std::size_t j0 = 0; j0 < n1; j0 += kCols) {
      const std::size_t m = std::min(kCols, n1 - j0);
      if (buffered(in)) gather(in, a, n, j0, m, 0, bx);
      if (buffered(h)) gather(h, a, n, j0, m, 0, bt), gather(h, a, n, j0, m, 1, bu);
      for (std::size_t c = 0; c < m; ++c) {
        const T* __restrict__ xs = column(in, a, j0, c, 0, bx);
        const T* __restrict__ ts = column(h, a, j0, c, 0, bt);
        const T* __restrict__ us = column(h, a, j0, c, 1, bu);
        T* __restrict__ os = column(out, a, j0, c, 0, bo);
        T* __restrict__ ss = column(ld, a, j0, c, 0, bs);
#pragma GCC ivdep  // the columns are distinct arrays (or local buffers): no alias checks in the loop
        for (std::size_t q = 0; q < n; ++q) {
          const T s = bound * fast_tanh(sign * us[q] / bound);  // exp(-s) = exp(b tanh(-u / b))
          const T e = fast_exp(s);
          // (a run-time choice here kept GCC from vectorizing the loop)
          if constexpr (Inverse) os[q] = (xs[q] - ts[q]) * e;
          else os[q] = ts[q] + xs[q] * e;
          ss[q] = s;
          acc[q] += s;
        }
      }
      if (buffered(out)) scatter(out, a, n, j0, m, 0, bo);
      if (buffered(ld)) scatter(ld, a, n, j0, m, 0, bs);
    }
    if (ld_sum)
      for (std::size_t q = 0; q < n; ++q) ld_sum.at(a + q, 0) = acc[q];
  }
}

// backward_rows by columns.
template <class T>
SIMD_CLONES_512 void backward_columns(View<T> x, View<T> h, View<T> gz, View<T> gld, View<T> gx, View<T> gh,
                                      std::size_t r0, std::size_t r1, std::size_t n1, T bound) {
  T bx[kCols * kRows], bu[kCols * kRows], bgz[kCols * kRows], bgld[kCols * kRows], bgx[kCols * kRows],
      bgt[kCols * kRows], bgu[kCols * kRows];
  for (std::size_t a = r0; a < r1; a += kRows) {
    const std::size_t n = std::min(kRows, r1 - a);
    for (std::size_t j0 = 0; j0 < n1; j0 += kCols) {
      const std::size_t m = std::min(kCols, n1 - j0);
      if (buffered(x)) gather(x, a, n, j0, m, 0, bx);
      if (buffered(h)) gather(h, a, n, j0, m, 1, bu);
      if (buffered(gz)) gather(gz, a, n, j0, m, 0, bgz);
      if (buffered(gld)) gather(gld, a, n, j0, m, 0, bgld);
      for (std::size_t c = 0; c < m; ++c) {
        const T* __restrict__ xs = column(x, a, j0, c, 0, bx);
        const T* __restrict__ us = column(h, a, j0, c, 1, bu);
        const T* __restrict__ gzs = gz ? column(gz, a, j0, c, 0, bgz) : nullptr;
        const T* __restrict__ glds = gld ? column(gld, a, j0, c, 0, bgld) : nullptr;
        T* __restrict__ gxs = column(gx, a, j0, c, 0, bgx);
        T* __restrict__ gts = column(gh, a, j0, c, 0, bgt);
        T* __restrict__ gus = column(gh, a, j0, c, 1, bgu);
#pragma GCC ivdep
        for (std::size_t q = 0; q < n; ++q) {
          const T s = bound * fast_tanh(us[q] / bound);
          const T e = fast_exp(s), r = s / bound;
          const T g = gzs ? gzs[q] : T(0), l = glds ? glds[q] : T(0);
          gus[q] = (g * xs[q] * e + l) * (T(1) - r * r);
          gxs[q] = g * e;
          gts[q] = g;
        }
      }
      if (buffered(gx)) scatter(gx, a, n, j0, m, 0, bgx);
      if (buffered(gh)) scatter(gh, a, n, j0, m, 0, bgt), scatter(gh, a, n, j0, m, 1, bgu);
    }
  }
}

// Rows split over threads in chunks that start at multiples of `align` rows: each element is
// computed alone, and the column path's blocks (and so which elements fall to a vector loop's
// remainder, computed with other instructions) start at the same rows for any thread count, so
// the result does not depend on it.
template <class F>
void over_rows(std::size_t n0, std::size_t n1, unsigned threads, F&& f, std::size_t align = 1) {
  const unsigned use = n0 * n1 < (1u << 15) ? 1u : threads;
  const std::size_t units = (n0 + align - 1) / align;
  const std::size_t min_rows = std::max<std::size_t>(1, 4096 / std::max<std::size_t>(n1, 1));
  parallel_for(
      units, [&](std::size_t u0, std::size_t u1) { f(u0 * align, std::min(n0, u1 * align)); },
      std::max<std::size_t>(1, min_rows / align), use);
}

bool is_double(const py::handle& a) { return py::isinstance<py::array_t<double>>(a); }

double checked_bound(double bound) {
  if (!(bound > 0)) throw std::invalid_argument("bound must be positive");
  return bound;
}

// A (n0,) array for the row sums of the log-scales, any stride; None is allowed.
template <class T>
View<T> sums_of(const py::handle& obj, const char* name, std::size_t n0) {
  if (obj.is_none()) return {};
  py::array a = checked_array<T>(obj, name, true);
  if (a.ndim() != 1 || static_cast<std::size_t>(a.shape(0)) != n0)
    throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(n0) + ",)");
  View<T> v;
  v.data = static_cast<char*>(a.mutable_data());
  v.s0 = a.strides(0);
  return v;
}

template <class T>
void forward_impl(const py::handle& x_o, const py::handle& h_o, const py::handle& z_o, const py::handle& ld_o,
                  const py::handle& sum_o, double bound, unsigned threads) {
  const Sizes n = sizes_of(x_o, "x");
  const View<T> x = view_of<T>(x_o, "x", n.n0, n.n1, false, false, false);
  const View<T> h = view_of<T>(h_o, "h", n.n0, n.n1, true, false, false);
  const View<T> z = view_of<T>(z_o, "z", n.n0, n.n1, false, false, true);
  const View<T> ld = view_of<T>(ld_o, "log_det", n.n0, n.n1, false, true, true);
  const View<T> sums = sums_of<T>(sum_o, "log_det_sum", n.n0);
  const T b = static_cast<T>(checked_bound(bound));
  const bool columns = rows_contiguous(h) || sums;  // h batch-contiguous: the column path
  if (!columns && !ld) throw std::invalid_argument("log_det and log_det_sum cannot both be None");
  py::gil_scoped_release release;
  over_rows(
      n.n0, n.n1, threads,
      [&](std::size_t r0, std::size_t r1) {
        if (columns) map_columns<T, false>(x, h, z, ld, sums, r0, r1, n.n1, b);
        else map_rows<T>(x, h, z, ld, r0, r1, n.n1, b, false);
      },
      columns ? kRows : 1);
}

template <class T>
void backward_impl(const py::handle& x_o, const py::handle& h_o, const py::handle& gz_o, const py::handle& gld_o,
                   const py::handle& gx_o, const py::handle& gh_o, double bound, unsigned threads) {
  const Sizes n = sizes_of(x_o, "x");
  const View<T> x = view_of<T>(x_o, "x", n.n0, n.n1, false, false, false);
  const View<T> h = view_of<T>(h_o, "h", n.n0, n.n1, true, false, false);
  const View<T> gz = view_of<T>(gz_o, "gz", n.n0, n.n1, false, true, false);
  const View<T> gld = view_of<T>(gld_o, "gld", n.n0, n.n1, false, true, false);
  const View<T> gx = view_of<T>(gx_o, "gx", n.n0, n.n1, false, false, true);
  const View<T> gh = view_of<T>(gh_o, "gh", n.n0, n.n1, true, false, true);
  const T b = static_cast<T>(checked_bound(bound));
  const bool columns = rows_contiguous(h);
  py::gil_scoped_release release;
  over_rows(
      n.n0, n.n1, threads,
      [&](std::size_t r0, std::size_t r1) {
        if (columns) backward_columns<T>(x, h, gz, gld, gx, gh, r0, r1, n.n1, b);
        else backward_rows<T>(x, h, gz, gld, gx, gh, r0, r1, n.n1, b);
      },
      columns ? kRows : 1);
}

template <class T>
void inverse_impl(const py::handle& z_o, const py::handle& h_o, const py::handle& x_o, double bound, unsigned threads) {
  const Sizes n = sizes_of(z_o, "z");
  const View<T> z = view_of<T>(z_o, "z", n.n0, n.n1, false, false, false);
  const View<T> h = view_of<T>(h_o, "h", n.n0, n.n1, true, false, false);
  const View<T> x = view_of<T>(x_o, "x", n.n0, n.n1, false, false, true);
  const T b = static_cast<T>(checked_bound(bound));
  const bool columns = rows_contiguous(h);
  py::gil_scoped_release release;
  over_rows(
      n.n0, n.n1, threads,
      [&](std::size_t r0, std::size_t r1) {
        if (columns) map_columns<T, true>(z, h, x, View<T>{}, View<T>{}, r0, r1, n.n1, b);
        else map_rows<T>(z, h, x, View<T>{}, r0, r1, n.n1, b, true);
      },
      columns ? kRows : 1);
}

}  // namespace

void bind_affine(py::module_& m) {
  m.def(
      "affine_forward",
      [](py::handle x, py::handle h, py::handle z, py::handle log_det, double bound, unsigned threads,
         py::handle log_det_sum) {
        if (is_double(x)) forward_impl<double>(x, h, z, log_det, log_det_sum, bound, threads);
        else forward_impl<float>(x, h, z, log_det, log_det_sum, bound, threads);
      },
      py::arg("x"), py::arg("h"), py::arg("z"), py::arg("log_det"), py::arg("bound"), py::arg("threads") = 1,
      py::arg("log_det_sum") = py::none(),
      "z = t + x exp(s) and log_det = s, s = bound tanh(u / bound), for x (N0, N1) and h (N0, N1, 2) holding\n"
      "(t, u); z and log_det (N0, N1) are written in place, and log_det_sum (N0,) gets each row's sum of s\n"
      "(either of the two may be None, not both). Any strides; float32 or float64, one dtype.");
  m.def(
      "affine_backward",
      [](py::handle x, py::handle h, py::handle gz, py::handle gld, py::handle gx, py::handle gh, double bound,
         unsigned threads) {
        if (is_double(x)) backward_impl<double>(x, h, gz, gld, gx, gh, bound, threads);
        else backward_impl<float>(x, h, gz, gld, gx, gh, bound, threads);
      },
      py::arg("x"), py::arg("h"), py::arg("gz"), py::arg("gld"), py::arg("gx"), py::arg("gh"), py::arg("bound"),
      py::arg("threads") = 1,
      "Gradients of affine_forward: gx (N0, N1) and gh (N0, N1, 2) from gz and gld (N0, N1; None is zero),\n"
      "written in place.");
  m.def(
      "affine_inverse",
      [](py::handle z, py::handle h, py::handle x, double bound, unsigned threads) {
        if (is_double(z)) inverse_impl<double>(z, h, x, bound, threads);
        else inverse_impl<float>(z, h, x, bound, threads);
      },
      py::arg("z"), py::arg("h"), py::arg("x"), py::arg("bound"), py::arg("threads") = 1,
      "x = (z - t) exp(-s), the inverse of affine_forward, written into x (N0, N1) in place.");
}

}  // namespace strnn
