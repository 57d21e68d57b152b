// Element-wise math for the normalizers' C++ loops (csrc/spline.cpp, csrc/affine.cpp): exp and
// tanh without library calls, so that the loops vectorize, and the clone attribute that compiles
// those loops for AVX2 next to the baseline.
#pragma once

#include <cstdint>
#include <cstring>

namespace strnn {

// Row functions are compiled twice on x86-64 Linux with GCC, for AVX2 and for the baseline,
// and picked at load time by the CPU's features: 8 floats a vector instead of 4 in the element
// loops. (The clone was "arch=haswell", whose resolver tests the CPU model: AMD CPUs ran the
// baseline. With "avx2" they get the vector clone: forward 10-15%, inverse 27% faster, measured.)
// The affine map's column loops (csrc/affine.cpp) also get an AVX-512 clone: 1024 x 15 in 21.6 us
// against 40.3 with AVX2 (Xeon VM, measured). The spline's row functions do not: with it, a d=50
// spline StrAF's log_prob took 37.4 ms against 26.6 (same machine, one build of each, measured).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#define SIMD_CLONES_512 __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#define SIMD_CLONES_512
#endif
// Helpers are inlined into each clone, so they are compiled for its instruction set.
#define ALWAYS_INLINE inline __attribute__((always_inline))

// exp without a library call, so that the element loops below vectorize (libm's expf and tanhf
// were 60% of the kernel): 2^n e^r with n = round(v / ln 2), |r| <= ln 2 / 2, e^r by its Taylor
// polynomial (degree 7 in float, 13 in double: under one ulp), 2^n written into the exponent.
// The input is clamped to the normal range; NaN stays NaN.
template <class T>
struct ExpConstants;
template <>
struct ExpConstants<float> {
  using I = std::int32_t;
  static constexpr float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float lo = -87.0f, hi = 88.0f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr int degree = 7, mantissa = 23;
  static constexpr I bias = 127;
  static constexpr float inv_factorial[] = {1.0f, 1.0f, 0.5f, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
};
template <>
struct ExpConstants<double> {
  using I = std::int64_t;
  static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double lo = -708.0, hi = 709.0, ln2_hi = 6.93147180369123816490e-01,
                          ln2_lo = 1.90821492927058770002e-10;
  static constexpr int degree = 13, mantissa = 52;
  static constexpr I bias = 1023;
  static constexpr double inv_factorial[] = {1.0, 1.0, 0.5, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                                             1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
                                             1.0 / 479001600, 1.0 / 6227020800.0};
};

template <class T>
ALWAYS_INLINE T fast_exp(T v) {
  using C = ExpConstants<T>;
  using I = typename C::I;
  v = v < C::lo ? C::lo : v;
  v = v > C::hi ? C::hi : v;
  const T t = v * T(1.4426950408889634) + C::magic;
  const T n = t - C::magic;
  const T r = (v - n * C::ln2_hi) - n * C::ln2_lo;
  // The Taylor coefficients 1 / k! by Estrin's scheme: pairs, then pairs of pairs, a dependency
  // chain of 4 or 5 steps instead of Horner's 8 or 14 (the loops calling this were bound by that
  // latency: the affine map's s and exp(s) took 2.06 ns an element instead of 2.57, measured).
  const T* c = C::inv_factorial;
  const T r2 = r * r, r4 = r2 * r2;
  const T q0 = (c[0] + r * c[1]) + r2 * (c[2] + r * c[3]), q1 = (c[4] + r * c[5]) + r2 * (c[6] + r * c[7]);
  T p;
  if constexpr (C::degree == 7) {
    p = q0 + r4 * q1;
  } else {
    static_assert(C::degree == 13, "Estrin's scheme written for degrees 7 and 13");
    const T q2 = (c[8] + r * c[9]) + r2 * (c[10] + r * c[11]), q3 = c[12] + r * c[13];
    p = (q0 + r4 * q1) + (r4 * r4) * (q2 + r4 * q3);
  }
  I ti, mi;
  const T magic = C::magic;
  std::memcpy(&ti, &t, sizeof(T));
  std::memcpy(&mi, &magic, sizeof(T));
  const I bits = ((ti - mi) + C::bias) << C::mantissa;  // t's low bits hold n
  T scale;
  std::memcpy(&scale, &bits, sizeof(T));
  return p * scale;
}

// std::clamp returns a reference, which keeps GCC from vectorizing the loops it stands in.
template <class T>
ALWAYS_INLINE T clamp_value(T v, T lo, T hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// tanh through fast_exp: absolute error of a few ulps, which is what the slope exp(L tanh) needs.
template <class T>
ALWAYS_INLINE T fast_tanh(T v) {
  return T(1) - T(2) / (fast_exp(T(2) * v) + T(1));
}

}  // namespace strnn
