// Rational-quadratic spline (Durkan et al. 2019) on the CPU: forward map with its log-slope, the
// backward of both, and the inverse, in blocks of rows, each phase one pass over the block's
// elements.
//
// Why here: a spline flow step on a small batch is ~100 tiny tensor ops in torch (softmaxes over
// 8 bins, gathers, the rational map and its hand-written backward), each costing more in dispatch
// than in arithmetic. One pass over the elements touches each parameter once, and the backward
// recomputes the cheap forward quantities instead of saving a dozen tensors. The math, layout and
// parameterization are those of strnn_fast/flows/normalizers/spline.py, whose torch path (CUDA,
// half precision, torch.func) stays the reference for these functions in tests/test_spline.py.
//
// Layout: parameters h are (N, P, d) C-contiguous (parameter-major, P = 3K - 1: K width logits,
// K height logits, K - 1 interior slope raws), inputs and outputs (N, d).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "fast_math.hpp"
#include "parallel.hpp"

namespace py = pybind11;

namespace strnn {
namespace {

constexpr double kLogitBound = 10.0;  // spline.py LOGIT_BOUND: squash logits into (-10, 10)

struct SplineOptions {
  int K;
  double B, m, L;  // bound, min_bin, log(max_slope)
  bool relative;   // knot slopes relative to the harmonic mean of their two bins' slopes (spline.py)
};

// Per-thread scratch for one block of d elements (the rows of a block side by side): the phases
// below run as loops over the elements (vectorized), except the bin search, a short scalar loop
// per element (branch-free vector passes over the bins measured slower).
template <class T>
struct Work {
  Work(int K, std::size_t d)
      : E(2 * K * d), A(2 * K * d), S(2 * d), k(d), v(d), below(2 * d), pk(2 * d), pn(4 * d), th(2 * d), g(12 * d) {}
  std::vector<T> E, A;    // softmax numerators e_q and squash denominators a_q (2K x d)
  std::vector<T> S;       // softmax sums (2 x d: rows x, y)
  std::vector<T> k;       // bin index (as T: compared with T(j) in vector loops)
  std::vector<T> v;       // the inputs clamped to [-B, B] (the spline branch never sees far-out values)
  std::vector<T> below;   // mass below the bin (2 x d)
  std::vector<T> pk;      // mass of the bin (2 x d)
  std::vector<T> pn;      // masses of the neighbour bins k - 1, k + 1 (index clamped), (rows x, y) x (4 x d)
  std::vector<T> th;      // tanh(raw / L) at knots k, k + 1 (2 x d)
  std::vector<T> g;       // backward: edge, size, slope-raw, output and neighbour-size gradients (12 x d)
};

// Phase 1: e_q = exp(q / (1 + |q| / 10)) and the softmax sums of both rows.
template <class T>
ALWAYS_INLINE void softmax(const T* h, std::size_t d, int K, Work<T>& w) {
  T* S = w.S.data();
  for (std::size_t i = 0; i < 2 * d; ++i) S[i] = T(0);
  for (int q = 0; q < 2 * K; ++q) {
    const T* l = h + q * d;
    T* E = w.E.data() + q * d;
    T* A = w.A.data() + q * d;
    T* Sr = S + (q < K ? 0 : d);
    for (std::size_t i = 0; i < d; ++i) {
      const T a = T(1) + std::abs(l[i]) * T(1.0 / kLogitBound);
      const T e = fast_exp(l[i] / a);
      A[i] = a;
      E[i] = e;
      Sr[i] += e;
    }
  }
}

// What bins() found, as plain pointers into the scratch, and the options as values (loads of
// SplineOptions fields inside the element loops keep them from vectorizing).
template <class T>
struct Found {
  const T* k;
  const T* below;
  const T* pk;
  const T* pn;
  const T* th;
  const T* v;
  T B, m, c, L, last, relative;  // last = K - 1; relative as 0 or 1
};

template <class T>
Found<T> found(const Work<T>& w, const SplineOptions& o) {
  return Found<T>{w.k.data(), w.below.data(), w.pk.data(), w.pn.data(), w.th.data(), w.v.data(),
                  T(o.B), T(o.m), T(1) - T(o.K) * T(o.m), T(o.L), T(o.K - 1), T(o.relative ? 1 : 0)};
}

// Phases 1 and 2: the softmax, then the bin k of v (clamped to [-B, B], kept in w.v) among the
// interior knots of `row` (the number of knots at or below v), the two rows' masses below and in
// the bin, and tanh of the bin's knot-slope raws (0 at the end knots ±B, slope 1).
template <class T>
ALWAYS_INLINE Found<T> bins(const T* h, const T* v, std::size_t d, int row, const SplineOptions& o, Work<T>& w) {
  const int K = o.K;
  softmax(h, d, K, w);
  const T B = T(o.B), m = T(o.m), c = T(1) - T(K) * m, inv_L = T(1) / T(o.L);
  for (std::size_t i = 0; i < d; ++i) {
    const T vi = clamp_value(v[i], -B, B);
    w.v[i] = vi;
    const T target = (vi + B) * (T(1) / (T(2) * B));
    const T scale = c / w.S[row * d + i];
    int k = 0;
    T cum = 0;
    for (int j = 1; j < K; ++j) {
      cum += w.E[(row * K + j - 1) * d + i];
      if (target >= cum * scale + T(j) * m) k = j;
      else break;  // the knots increase
    }
    w.k[i] = T(k);
    for (int r = 0; r < 2; ++r) {
      T below = 0;
      for (int j = 0; j < k; ++j) below += w.E[(r * K + j) * d + i];
      w.below[r * d + i] = below / w.S[r * d + i];
      w.pk[r * d + i] = w.E[(r * K + k) * d + i] / w.S[r * d + i];
      w.pn[(2 * r) * d + i] = w.E[(r * K + std::max(k - 1, 0)) * d + i] / w.S[r * d + i];
      w.pn[(2 * r + 1) * d + i] = w.E[(r * K + std::min(k + 1, K - 1)) * d + i] / w.S[r * d + i];
    }
    w.th[i] = k > 0 ? h[(2 * K + k - 1) * d + i] * inv_L : T(0);
    w.th[d + i] = k < K - 1 ? h[(2 * K + k) * d + i] * inv_L : T(0);
  }
  for (std::size_t i = 0; i < 2 * d; ++i) w.th[i] = fast_tanh(w.th[i]);
  return found(w, o);
}

// The bin of element i: left knot (x0, y0), width, height, knot slopes; for the relative rule the
// weights w0, w1 (0 at an end knot or under the absolute rule) of the own bin's slope in the
// harmonic means of knots k and k + 1, i.e. d log hm / d log s = s_nb / (s_nb + s).
template <class T>
struct Knots {
  T x0, y0, w, hh, d0, d1, w0, w1;
};

template <class T>
ALWAYS_INLINE Knots<T> knots(const Found<T>& f, std::size_t d, std::size_t i) {
  const T two_B = T(2) * f.B, k = f.k[i];
  Knots<T> kn{(k * f.m + f.c * f.below[i]) * two_B - f.B, (k * f.m + f.c * f.below[d + i]) * two_B - f.B,
              (f.m + f.c * f.pk[i]) * two_B, (f.m + f.c * f.pk[d + i]) * two_B,
              fast_exp(f.th[i] * f.L), fast_exp(f.th[d + i] * f.L), T(0), T(0)};
  // Neighbour slopes s = (m + c p_y) / (m + c p_x) (2B cancels), then hm(s, s_nb) = 2 s share.
  const T sl = kn.hh / kn.w;
  const T sp = (f.m + f.c * f.pn[2 * d + i]) / (f.m + f.c * f.pn[i]);
  const T sn = (f.m + f.c * f.pn[3 * d + i]) / (f.m + f.c * f.pn[d + i]);
  const T share0 = sp / (sp + sl), share1 = sn / (sn + sl);
  const T in0 = k > T(0) ? f.relative : T(0), in1 = k < f.last ? f.relative : T(0);
  kn.d0 *= in0 > T(0) ? T(2) * sl * share0 : T(1);
  kn.d1 *= in1 > T(0) ? T(2) * sl * share1 : T(1);
  kn.w0 = in0 * share0;
  kn.w1 = in1 * share1;
  return kn;
}

// One block of the forward map: y and log-slope of d elements.
template <class T>
SIMD_CLONES void forward_row(const T* hn, const T* __restrict__ xn, T* __restrict__ yn, T* __restrict__ ln,
                             std::size_t d, const SplineOptions& o, Work<T>& w) {
  const Found<T> f = bins(hn, xn, d, 0, o, w);
  const T *v = f.v, B = f.B;
  for (std::size_t i = 0; i < d; ++i) {
    const Knots<T> kn = knots(f, d, i);
    const T sl = kn.hh / kn.w;
    const T xi = clamp_value((v[i] - kn.x0) / kn.w, T(0), T(1));
    const T om = T(1) - xi, t = xi * om;
    const T den = sl + (kn.d0 + kn.d1 - T(2) * sl) * t;
    const T y_in = kn.y0 + kn.hh * (sl * xi * xi + kn.d0 * t) / den;
    const T numer = kn.d1 * xi * xi + T(2) * sl * t + kn.d0 * om * om;
    yn[i] = y_in;
    ln[i] = sl * sl * numer / (den * den);  // the slope; its log below
  }
  // The tails in a loop of their own: selects in the loop above keep GCC from vectorizing it.
  for (std::size_t i = 0; i < d; ++i) {
    const bool inside = std::abs(xn[i]) < B;  // false for NaN: it passes through
    yn[i] = inside ? yn[i] : xn[i];
    ln[i] = inside ? ln[i] : T(1);
  }
  for (std::size_t i = 0; i < d; ++i) ln[i] = std::log(ln[i]);
}

// One block of the backward: gradients of d elements' outputs to their inputs and parameters.
template <class T>
SIMD_CLONES void backward_row(const T* hn, const T* __restrict__ xn, const T* __restrict__ gzn,
                              const T* __restrict__ gln, T* __restrict__ gxn, T* __restrict__ ghn, std::size_t d,
                              std::size_t P, const SplineOptions& o, Work<T>& w) {
  const int K = o.K;
  const Found<T> f = bins(hn, xn, d, 0, o, w);
  const T *k = f.k, *below = f.below, *pk = f.pk, *th = f.th, *v = f.v, B = f.B;
  T* __restrict__ g_edge = w.g.data();        // rows x, y
  T* __restrict__ g_size = w.g.data() + 2 * d;
  T* __restrict__ g_raw = w.g.data() + 4 * d;  // knots k, k + 1
  T* __restrict__ g_in = w.g.data() + 6 * d;   // the output gradients inside the bound (rows z, log_det)
  T* __restrict__ g_nb = w.g.data() + 8 * d;   // neighbour-size gradients: (rows x, y) x (bins k - 1, k + 1)
  const T* pn = f.pn;
  const T m = f.m, c = f.c, two_B = T(2) * B;
  // Outside the bound the map is the identity: nothing reaches the parameters. (Selects kept out
  // of the main loop, which GCC then vectorizes.)
  for (std::size_t i = 0; i < d; ++i) {
    const bool inside = std::abs(xn[i]) < B;
    g_in[i] = inside ? gzn[i] : T(0);
    g_in[d + i] = inside ? gln[i] : T(0);
  }
  for (std::size_t i = 0; i < d; ++i) {
    const Knots<T> kn = knots(f, d, i);
    const T gy = g_in[i], gl = g_in[d + i];
    const T sl = kn.hh / kn.w;
    const T xi = clamp_value((v[i] - kn.x0) / kn.w, T(0), T(1));
    const T om = T(1) - xi, t = xi * om, one_2xi = T(1) - T(2) * xi;
    const T mix = kn.d0 + kn.d1 - T(2) * sl;
    const T den = sl + mix * t;
    const T r = (sl * xi * xi + kn.d0 * t) / den;
    const T numer = kn.d1 * xi * xi + T(2) * sl * t + kn.d0 * om * om;
    // y = y0 + hh num / den, log_slope = log(s² numer) - 2 log den.
    const T g_num = gy * kn.hh / den;
    const T g_den = -g_num * r - T(2) * gl / den;
    const T g_numer = gl / numer;
    const T g_xi = g_num * (T(2) * sl * xi + kn.d0 * one_2xi) + g_den * mix * one_2xi +
                   g_numer * T(2) * (kn.d1 * xi + sl * one_2xi - kn.d0 * om);
    const T g_d0 = (g_num + g_den) * t + g_numer * om * om;
    const T g_d1 = g_den * t + g_numer * xi * xi;
    // Gradients of log d0, log d1; the relative rule passes w0, w1 of them to log s and the rest
    // to the neighbours' log slopes (0 under the absolute rule and at the end knots).
    const T gd0 = g_d0 * kn.d0, gd1 = g_d1 * kn.d1;
    const T g_s = g_num * xi * xi + g_den * (T(1) - T(2) * t) + g_numer * T(2) * t + gl * T(2) / sl +
                  (gd0 * kn.w0 + gd1 * kn.w1) / sl;
    const T in0 = k[i] > T(0) ? f.relative : T(0), in1 = k[i] < f.last ? f.relative : T(0);
    const T g_lp = gd0 * (in0 - kn.w0), g_ln = gd1 * (in1 - kn.w1);
    // log s_nb = log size_y - log size_x, sizes (m + c p) 2B.
    g_nb[i] = -g_lp / ((m + c * pn[i]) * two_B);
    g_nb[d + i] = -g_ln / ((m + c * pn[d + i]) * two_B);
    g_nb[2 * d + i] = g_lp / ((m + c * pn[2 * d + i]) * two_B);
    g_nb[3 * d + i] = g_ln / ((m + c * pn[3 * d + i]) * two_B);
    // s = hh / w, ξ = (x - x0) / w.
    const T g_u = g_xi / kn.w;
    gxn[i] = g_u;
    g_edge[i] = -g_u;
    g_edge[d + i] = gy;
    g_size[i] = -(g_s * sl + g_xi * xi) / kn.w;
    g_size[d + i] = gy * r + g_s / kn.w;
    // d = hm exp(L tanh(raw / L)): dd/draw = d (1 - tanh²).
    g_raw[i] = gd0 * (T(1) - th[i] * th[i]);
    g_raw[d + i] = gd1 * (T(1) - th[d + i] * th[d + i]);
  }
  for (std::size_t i = 0; i < d; ++i) gxn[i] = std::abs(xn[i]) < B ? gxn[i] : gzn[i];
  // Softmax and squash: ∂/∂q_j = (2B c / S) e_j (1[j<k] g_edge + 1[j=k] g_size + 1[j=k-1] g_prev
  // + 1[j=k+1] g_next - g_edge below - g_size p_k - g_prev p_{k-1} - g_next p_{k+1}) / a_j².
  const T two_Bc = T(2) * B * f.c;
  const T *__restrict__ E = w.E.data(), *__restrict__ A = w.A.data(), *__restrict__ S = w.S.data();
  for (int row = 0; row < 2; ++row) {
    for (int j = 0; j < K; ++j) {
      const std::size_t q = static_cast<std::size_t>(row * K + j) * d;
      const T jf = T(j);
      for (std::size_t i = 0; i < d; ++i) {
        const std::size_t ri = row * d + i;
        const std::size_t pi = 2 * row * d + i, ni = (2 * row + 1) * d + i;
        const T gj = (jf < k[i] ? g_edge[ri] : T(0)) + (jf == k[i] ? g_size[ri] : T(0)) +
                     (jf + T(1) == k[i] ? g_nb[pi] : T(0)) + (jf == k[i] + T(1) ? g_nb[ni] : T(0));
        const T base = g_edge[ri] * below[ri] + g_size[ri] * pk[ri] + g_nb[pi] * pn[pi] + g_nb[ni] * pn[ni];
        ghn[q + i] = (gj - base) * E[q + i] * (two_Bc / S[ri]) / (A[q + i] * A[q + i]);
      }
    }
  }
  // Slope raws: only knots k and k + 1 of each element's bin (the end knots have none).
  for (std::size_t i = 2 * K * d; i < P * d; ++i) ghn[i] = T(0);
  for (std::size_t i = 0; i < d; ++i) {
    const int ki = static_cast<int>(k[i]);
    if (ki > 0) ghn[(2 * K + ki - 1) * d + i] = g_raw[i];
    if (ki < K - 1) ghn[(2 * K + ki) * d + i] = g_raw[d + i];
  }
}

// One block of the inverse map.
template <class T>
SIMD_CLONES void inverse_row(const T* hn, const T* __restrict__ zn, T* __restrict__ xn, std::size_t d,
                             const SplineOptions& o, Work<T>& w) {
  const Found<T> f = bins(hn, zn, d, 1, o, w);
  const T *v = f.v, B = f.B;
  for (std::size_t i = 0; i < d; ++i) {
    const Knots<T> kn = knots(f, d, i);
    const T sl = kn.hh / kn.w, dy = v[i] - kn.y0, mix = kn.d0 + kn.d1 - T(2) * sl;
    const T qa = kn.hh * (sl - kn.d0) + dy * mix;
    const T qb = kn.hh * kn.d0 - dy * mix;
    const T qc = -sl * dy;
    const T sq = std::sqrt(std::max(qb * qb - T(4) * qa * qc, T(0)));
    // The root in [0, 1], in the form that adds numbers of one sign (see spline.py); the
    // guards only replace zero denominators of the form not taken.
    const T dn = -qb - sq;
    const T two_a = qa == T(0) ? T(1) : T(2) * qa;
    const T xi = qb >= T(0) ? T(2) * qc / (dn == T(0) ? T(-1) : dn) : (sq - qb) / two_a;
    const bool inside = std::abs(zn[i]) < B;
    xn[i] = inside ? kn.x0 + clamp_value(xi, T(0), T(1)) * kn.w : zn[i];
  }
}

template <class T>
py::array_t<T, py::array::c_style> checked(const py::handle& obj, const char* name) {
  // No conversion: outputs are written in place, so a converted copy would lose them.
  if (!py::isinstance<py::array_t<T, py::array::c_style>>(obj))
    throw std::invalid_argument(std::string(name) + " must be a C-contiguous array of the spline's dtype");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(obj);
}

struct Shapes {
  std::size_t N, P, d;
};

Shapes check_shapes(const py::array& h, const py::array& x, int K) {
  if (h.ndim() != 3 || x.ndim() != 2) throw std::invalid_argument("h must be (N, P, d) and x (N, d)");
  Shapes s{static_cast<std::size_t>(h.shape(0)), static_cast<std::size_t>(h.shape(1)),
           static_cast<std::size_t>(h.shape(2))};
  if (K < 1 || s.P != static_cast<std::size_t>(3 * K - 1))
    throw std::invalid_argument("h.shape[1] must be 3 * bins - 1");
  if (static_cast<std::size_t>(x.shape(0)) != s.N || static_cast<std::size_t>(x.shape(1)) != s.d)
    throw std::invalid_argument("x must be (N, d) with h (N, P, d)");
  return s;
}

void check_like(const py::array& a, const py::array& x, const char* name) {
  if (a.ndim() != 2 || a.shape(0) != x.shape(0) || a.shape(1) != x.shape(1))
    throw std::invalid_argument(std::string(name) + " must have the shape of x");
}

// Runs row(n, work) for n in [0, N) on up to `threads` threads, one scratch per thread.
// Rows are processed R at a time (R d about 128 elements; more spills the scratch out of L1), a
// block's parameters packed parameter-major, (P, R d): the element loops then run over R d
// elements instead of d (at d = 15 an 8-wide loop spends half its time in its remainder). A
// one-row block is already in that layout.
template <class T, class F>
void for_blocks(const Shapes& s, int K, unsigned threads, const T* h, T* grad_h, F&& block) {
  const std::size_t d = std::max<std::size_t>(1, s.d), R = std::max<std::size_t>(1, 128 / d);
  const std::size_t blocks = (s.N + R - 1) / R, P = s.P;
  parallel_for(
      blocks,
      [&](std::size_t b0, std::size_t b1) {
        Work<T> w(K, R * s.d);
        std::vector<T> hb(R > 1 ? P * R * s.d : 0), gb(R > 1 && grad_h ? P * R * s.d : 0);
        for (std::size_t b = b0; b < b1; ++b) {
          const std::size_t n0 = b * R, rows = std::min(R, s.N - n0), m = rows * s.d;
          const T* hp = h + n0 * P * s.d;
          T* gp = grad_h ? grad_h + n0 * P * s.d : nullptr;
          if (rows > 1) {
            for (std::size_t q = 0; q < P; ++q)
              for (std::size_t r = 0; r < rows; ++r)
                std::memcpy(hb.data() + q * m + r * s.d, hp + r * P * s.d + q * s.d, s.d * sizeof(T));
            hp = hb.data();
            if (grad_h) gp = gb.data();
          }
          block(n0, m, hp, gp, w);
          if (rows > 1 && grad_h)
            for (std::size_t q = 0; q < P; ++q)
              for (std::size_t r = 0; r < rows; ++r)
                std::memcpy(grad_h + (n0 + r) * P * s.d + q * s.d, gb.data() + q * m + r * s.d, s.d * sizeof(T));
        }
      },
      std::max<std::size_t>(1, 8192 / (R * d)), threads);
}

// One call's arrays, checked once: h (N, P, d), element inputs and outputs (N, d), and for the
// backward the (N, P, d) gradient of h. The pointers stay valid while the caller holds the arrays.
template <class T>
struct Call {
  Shapes s;
  const T* h;
  std::vector<const T*> in;
  std::vector<T*> out;
  T* grad_h = nullptr;
};

using Named = std::vector<std::pair<py::handle, const char*>>;

template <class T>
Call<T> prepare(const py::handle& h_obj, const Named& ins, const Named& outs, int K,
                const py::handle& grad_h = py::handle()) {
  auto h = checked<T>(h_obj, "h");
  auto first = checked<T>(ins.front().first, ins.front().second);
  Call<T> c{check_shapes(h, first, K), h.data(), {}, {}};
  for (const auto& [obj, name] : ins) {
    auto a = checked<T>(obj, name);
    check_like(a, first, name);
    c.in.push_back(a.data());
  }
  for (const auto& [obj, name] : outs) {
    auto a = checked<T>(obj, name);
    check_like(a, first, name);
    c.out.push_back(a.mutable_data());
  }
  if (grad_h) {
    auto g = checked<T>(grad_h, "grad_h");
    if (g.ndim() != 3 || g.shape(0) != h.shape(0) || g.shape(1) != h.shape(1) || g.shape(2) != h.shape(2))
      throw std::invalid_argument("grad_h must have the shape of h");
    c.grad_h = g.mutable_data();
  }
  return c;
}

template <class T>
void forward_impl(py::handle h, py::handle x, py::handle y, py::handle ld, SplineOptions o, unsigned threads) {
  const Call<T> c = prepare<T>(h, {{x, "x"}}, {{y, "y"}, {ld, "log_det"}}, o.K);
  const std::size_t d = c.s.d;
  py::gil_scoped_release release;
  for_blocks<T>(c.s, o.K, threads, c.h, nullptr, [&](std::size_t n, std::size_t m, const T* hb, T*, Work<T>& w) {
    forward_row(hb, c.in[0] + n * d, c.out[0] + n * d, c.out[1] + n * d, m, o, w);
  });
}

template <class T>
void backward_impl(py::handle h, py::handle x, py::handle gz, py::handle gld, py::handle gx, py::handle gh,
                   SplineOptions o, unsigned threads) {
  const Call<T> c = prepare<T>(h, {{x, "x"}, {gz, "grad_z"}, {gld, "grad_log_det"}}, {{gx, "grad_x"}}, o.K, gh);
  const std::size_t d = c.s.d, P = c.s.P;
  py::gil_scoped_release release;
  for_blocks<T>(c.s, o.K, threads, c.h, c.grad_h, [&](std::size_t n, std::size_t m, const T* hb, T* gb, Work<T>& w) {
    backward_row(hb, c.in[0] + n * d, c.in[1] + n * d, c.in[2] + n * d, c.out[0] + n * d, gb, m, P, o, w);
  });
}

template <class T>
void inverse_impl(py::handle h, py::handle z, py::handle x, SplineOptions o, unsigned threads) {
  const Call<T> c = prepare<T>(h, {{z, "z"}}, {{x, "x"}}, o.K);
  const std::size_t d = c.s.d;
  py::gil_scoped_release release;
  for_blocks<T>(c.s, o.K, threads, c.h, nullptr, [&](std::size_t n, std::size_t m, const T* hb, T*, Work<T>& w) {
    inverse_row(hb, c.in[0] + n * d, c.out[0] + n * d, m, o, w);
  });
}

SplineOptions options(int bins, double bound, double min_bin, double log_max_slope, bool relative) {
  if (bins < 1) throw std::invalid_argument("bins must be positive");
  if (!(bound > 0) || !(min_bin > 0) || !(bins * min_bin < 1) || !(log_max_slope > 0))
    throw std::invalid_argument("spline options out of range");
  return SplineOptions{bins, bound, min_bin, log_max_slope, relative};
}

bool is_double(const py::handle& h) { return py::isinstance<py::array_t<double>>(h); }

}  // namespace

void bind_spline(py::module_& m) {
  m.def(
      "rqs_forward",
      [](py::handle h, py::handle x, py::handle y, py::handle log_det, int bins, double bound, double min_bin,
         double log_max_slope, unsigned threads, bool relative) {
        const SplineOptions o = options(bins, bound, min_bin, log_max_slope, relative);
        if (is_double(h)) forward_impl<double>(h, x, y, log_det, o, threads);
        else forward_impl<float>(h, x, y, log_det, o, threads);
      },
      py::arg("h"), py::arg("x"), py::arg("y"), py::arg("log_det"), py::arg("bins"), py::arg("bound"),
      py::arg("min_bin"), py::arg("log_max_slope"), py::arg("threads") = 0, py::arg("relative") = true,
      "Spline map of x (N, d) with parameters h (N, 3 bins - 1, d), written into y and log_det (float32 or\n"
      "float64, all C-contiguous, one dtype).");
  m.def(
      "rqs_backward",
      [](py::handle h, py::handle x, py::handle grad_z, py::handle grad_log_det, py::handle grad_x,
         py::handle grad_h, int bins, double bound, double min_bin, double log_max_slope, unsigned threads,
         bool relative) {
        const SplineOptions o = options(bins, bound, min_bin, log_max_slope, relative);
        if (is_double(h)) backward_impl<double>(h, x, grad_z, grad_log_det, grad_x, grad_h, o, threads);
        else backward_impl<float>(h, x, grad_z, grad_log_det, grad_x, grad_h, o, threads);
      },
      py::arg("h"), py::arg("x"), py::arg("grad_z"), py::arg("grad_log_det"), py::arg("grad_x"), py::arg("grad_h"),
      py::arg("bins"), py::arg("bound"), py::arg("min_bin"), py::arg("log_max_slope"), py::arg("threads") = 0,
      py::arg("relative") = true,
      "Gradients of rqs_forward's outputs with respect to x and h, written into grad_x and grad_h.");
  m.def(
      "rqs_inverse",
      [](py::handle h, py::handle z, py::handle x, int bins, double bound, double min_bin, double log_max_slope,
         unsigned threads, bool relative) {
        const SplineOptions o = options(bins, bound, min_bin, log_max_slope, relative);
        if (is_double(h)) inverse_impl<double>(h, z, x, o, threads);
        else inverse_impl<float>(h, z, x, o, threads);
      },
      py::arg("h"), py::arg("z"), py::arg("x"), py::arg("bins"), py::arg("bound"), py::arg("min_bin"),
      py::arg("log_max_slope"), py::arg("threads") = 0, py::arg("relative") = true,
      "Inverse spline map of z, written into x.");
}

}  // namespace strnn
