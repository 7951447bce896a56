// Per-frame GroupNorm (+ per-row, per-channel modulation) + SiLU (+ per-channel smoothing), then per-tensor
// asymmetric uint8 codes written channels-last: the input of a U-Net block's int8 convolution in two memory passes.
// Also the two small passes around every other oneDNN int8 convolution (accelerando/quant/int8_conv.py): the
// per-tensor min/max and codes of its input, and its channels-last output back to channels-first.
// Built and loaded by accelerando/quant/norm_codes.py (g++ -O3 -march=native -fopenmp -ffp-contract=off), which
// documents the contract. Every step rounds where PyTorch's eager ops round (bf16 after each op, float32 sums in
// channel order), so the values are those of the eager chain except where this file's exp differs from PyTorch's by
// an ulp before the bf16 rounding.
//
// Layouts: x and y [B, C, T] contiguous; codes [B, T, C] contiguous (the channels-last layout oneDNN reads), or
// float codes minus the zero point [B, C, T] (for a float32 convolution of the codes); weight,
// bias, smooth [C] float32; mul, add [B, C] float32 (or null). bf16 tensors are passed as uint16 bit patterns.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kTile = 128;  // frames per work item

inline float bf16_to_float(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even, as PyTorch's c10::BFloat16 (NaN stays NaN)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

struct Bf16 {
  using T = uint16_t;
  static inline float load(T v) { return bf16_to_float(v); }
  static inline T store(float v) { return float_to_bf16(v); }
  static inline float round(float v) { return bf16_to_float(float_to_bf16(v)); }
};

struct F32 {
  using T = float;
  static inline float load(T v) { return v; }
  static inline T store(float v) { return v; }
  static inline float round(float v) { return v; }
};

// exp(v) for v in float range: 2^n * p(r), Cephes' expf polynomial evaluated with fused multiply-adds; within 1 ulp
// of the correctly rounded value (40M points over [-87, 88]: benchmarks/norm_codes_exactness.py), written so that the compiler vectorises it
// (no calls, no branches).
inline float exp_vec(float v) {
  v = std::min(std::max(v, -87.0f), 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  float n = (v * 1.44269504088896341f + magic) - magic;
  float r = v - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);  // fused multiply-adds: half the time of separate roundings on the AVX2
  p = std::fma(p, r, 8.3334519073e-3f);  // CPU of BENCHMARKS.md (-ffp-contract=off keeps every other step apart)
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r) + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

inline float round_even(float v) {  // |v| < 2^22: round half to even in the default rounding mode
  const float magic = 12582912.0f;
  return (v + magic) - magic;
}

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols: a float32 block transposed, by 8 x 8 register
// transposes where AVX2 is compiled in (the strided scalar copy it replaces made the output pass a tenth of a
// quantized backbone call: BENCHMARKS.md, "W8A8 on a CPU without VNNI, third pass"), the scalar copy elsewhere.
inline void transpose_scalar(const float* src, int64_t ss, int64_t rows, int64_t cols, float* dst, int64_t ds) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ds + i] = src[i * ss + j];
}

#if defined(__AVX2__)
inline void transpose8(__m256 r[8]) {  // r[i][j] -> r[j][i]
  __m256 t[8], s[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 2; ++k) {
    s[4 * k] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x20);
    r[k + 4] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x31);
  }
}
#endif

inline void transpose_block(const float* src, int64_t ss, int64_t rows, int64_t cols, float* dst, int64_t ds) {
#if defined(__AVX2__)
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t i = 0; i < r8; i += 8)
    for (int64_t j = 0; j < c8; j += 8) {
      __m256 r[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + (i + k) * ss + j);
      transpose8(r);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + (j + k) * ds + i, r[k]);
    }
  transpose_scalar(src + c8, ss, rows, cols - c8, dst + c8 * ds, ds);  // the columns past the last 8
  transpose_scalar(src + r8 * ss, ss, rows - r8, c8, dst + r8, ds);    // the rows past the last 8
#else
  transpose_scalar(src, ss, rows, cols, dst, ds);
#endif
}

// codes[t * qs + j] = uint8(tile[j * ts + t]) for j < 8, t < len: eight channels' codes (float32 holding integers in
// [0, 255]) written channels-last.
inline void store_codes8(const float* tile, int64_t ts, int64_t len, uint8_t* codes, int64_t qs) {
  int64_t t = 0;
#if defined(__AVX2__)
  for (; t + 8 <= len; t += 8) {
    __m256 r[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(tile + k * ts + t);
    transpose8(r);  // r[k]: the eight channels of frame t + k
    for (int k = 0; k < 8; k += 2) {
      const __m256i a = _mm256_cvtps_epi32(r[k]), b = _mm256_cvtps_epi32(r[k + 1]);
      const __m128i w0 = _mm_packus_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
      const __m128i w1 = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
      const __m128i bytes = _mm_packus_epi16(w0, w1);  // frame t + k in the low 8 bytes, t + k + 1 in the high
      _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + (t + k) * qs), bytes);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + (t + k + 1) * qs), _mm_unpackhi_epi64(bytes, bytes));
    }
  }
#endif
  for (; t < len; ++t)
    for (int64_t j = 0; j < 8; ++j) codes[t * qs + j] = static_cast<uint8_t>(tile[j * ts + t]);
}

// Pass 1: y = smooth * silu(mod(affine(norm(x)))) with the eager chain's roundings; returns min and max of y.
template <class D>
void norm_silu(const typename D::T* x, typename D::T* y, int64_t B, int64_t C, int64_t T, int64_t G, float eps,
               const float* weight, const float* bias, const float* mul, const float* add, const float* smooth,
               float* lo_hi, int threads) {
  const int64_t n = C / G, tiles = (T + kTile - 1) / kTile, items = B * G * tiles;
  float lo = 0.0f, hi = 0.0f;
  int nan = 0;  // std::min / std::max skip NaNs: count them apart so that the range reports them
#pragma omp parallel for num_threads(threads) schedule(static) reduction(min : lo) reduction(max : hi) reduction(+ : nan)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t b = item / (G * tiles), g = (item / tiles) % G, t0 = (item % tiles) * kTile;
    const int64_t len = std::min(kTile, T - t0);
    float s[kTile], v[kTile], r[kTile];
    const int64_t base = (b * C + g * n) * T + t0;
    for (int64_t t = 0; t < len; ++t) s[t] = D::load(x[base + t]);
    for (int64_t j = 1; j < n; ++j) {
      const typename D::T* row = x + base + j * T;
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) s[t] += D::load(row[t]);
    }
    for (int64_t t = 0; t < len; ++t) s[t] = s[t] / static_cast<float>(n);  // the mean
    for (int64_t t = 0; t < len; ++t) v[t] = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const typename D::T* row = x + base + j * T;
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) {
        float d = D::load(row[t]) - s[t];
        float sq = d * d;
        v[t] = j == 0 ? sq : v[t] + sq;
      }
    }
    for (int64_t t = 0; t < len; ++t) r[t] = 1.0f / std::sqrt(v[t] / static_cast<float>(n) + eps);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t c = g * n + j;
      const typename D::T* row = x + base + j * T;
      typename D::T* out = y + base + j * T;
      const float w = weight[c], bb = bias[c];
      const float m = mul ? mul[b * C + c] : 1.0f, a = add ? add[b * C + c] : 0.0f;
      const float sm = smooth ? smooth[c] : 1.0f;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(+ : nan)
      for (int64_t t = 0; t < len; ++t) {
        float h = D::round((D::load(row[t]) - s[t]) * r[t]);
        h = D::round(D::round(h * w) + bb);
        if (mul) h = D::round(D::round(h * m) + a);
        h = D::round(h / (1.0f + exp_vec(-h)));
        if (smooth) h = D::round(h * sm);
        out[t] = D::store(h);
        lo = std::min(lo, h);
        hi = std::max(hi, h);
        nan += h != h;
      }
    }
  }
  lo_hi[0] = nan ? NAN : lo;
  lo_hi[1] = nan ? NAN : hi;
}

// Pass 2: codes[b, t, c] = clamp(round(y[b, c, t] * smooth[c] / scale) + zp, 0, 255), the product (if smooth is
// given) rounded to D as PyTorch's ``x * smooth.to(x.dtype)`` rounds it.
template <class D>
void codes(const typename D::T* y, const float* smooth, uint8_t* q, int64_t B, int64_t C, int64_t T, float scale,
           float zp, int threads) {
  const int64_t tiles = (T + kTile - 1) / kTile, items = B * tiles;
#pragma omp parallel num_threads(threads)
  {
    std::vector<uint8_t> buf(kTile * C);
    float tile[8 * kTile];  // eight channels' codes [8, kTile]
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / tiles, t0 = (item % tiles) * kTile, len = std::min(kTile, T - t0);
      for (int64_t c0 = 0; c0 < C; c0 += 8) {
        const int64_t nc = std::min<int64_t>(8, C - c0);
        for (int64_t j = 0; j < nc; ++j) {
          const int64_t c = c0 + j;
          const typename D::T* row = y + (b * C + c) * T + t0;
          const float sm = smooth ? smooth[c] : 1.0f;
          float* out = tile + j * kTile;
#pragma omp simd
          for (int64_t t = 0; t < len; ++t) {
            const float v = smooth ? D::round(D::load(row[t]) * sm) : D::load(row[t]);
            float code = round_even(v / scale) + zp;
            out[t] = std::min(std::max(code, 0.0f), 255.0f);
          }
        }
        if (nc == 8) {
          store_codes8(tile, kTile, len, buf.data() + c0, C);
        } else {
          for (int64_t j = 0; j < nc; ++j)
            for (int64_t t = 0; t < len; ++t) buf[t * C + c0 + j] = static_cast<uint8_t>(tile[j * kTile + t]);
        }
      }
      std::memcpy(q + (b * T + t0) * C, buf.data(), len * C);
    }
  }
}

// Pass 2 for a float32 convolution of the codes (CPUs without VNNI): out[i] = clamp(round(y[i] / scale) + zp, 0, 255)
// - zp, in y's layout [B, C, T].
template <class D>
void float_codes(const typename D::T* y, float* out, int64_t n, float scale, float zp, int threads) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float code = round_even(D::load(y[i]) / scale) + zp;
    out[i] = std::min(std::max(code, 0.0f), 255.0f) - zp;
  }
}

// min and max of y[b, c, t] * smooth[c] (rounded to D; smooth may be null) over [B, C, T], widened to include 0;
// both NaN if any value is (as PyTorch's amin / amax report it).
template <class D>
void minmax(const typename D::T* y, const float* smooth, int64_t B, int64_t C, int64_t T, float* lo_hi,
            int threads) {
  float lo = 0.0f, hi = 0.0f;
  int nan = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(min : lo) reduction(max : hi) reduction(+ : nan)
  for (int64_t row = 0; row < B * C; ++row) {
    const typename D::T* x = y + row * T;
    const float sm = smooth ? smooth[row % C] : 1.0f;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(+ : nan)
    for (int64_t t = 0; t < T; ++t) {
      const float v = smooth ? D::round(D::load(x[t]) * sm) : D::load(x[t]);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      nan += v != v;
    }
  }
  lo_hi[0] = nan ? NAN : lo;
  lo_hi[1] = nan ? NAN : hi;
}

// out[b, c, t] = residual[b, c, t] + D(y[b, t, c] + low[b, c, t]): oneDNN's channels-last float32 output back to
// channels-first in D, with the low-rank branch added in float32 before the rounding and a block's skip connection
// added after it (both optional), rounding where PyTorch's ``residual + (y + low.float()).to(D)`` rounds.
constexpr int64_t kBlock = 64;

template <class D>
void finish(const float* y, const typename D::T* low, const typename D::T* residual, typename D::T* out, int64_t B,
            int64_t C, int64_t T, int threads) {
  const int64_t cb = (C + kBlock - 1) / kBlock, tb = (T + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < B * cb * tb; ++item) {
    const int64_t b = item / (cb * tb), c0 = (item / tb) % cb * kBlock, t0 = item % tb * kBlock;
    const int64_t nc = std::min(kBlock, C - c0), len = std::min(kBlock, T - t0);
    float tile[kBlock * kBlock];  // [c - c0, t - t0]
    transpose_block(y + (b * T + t0) * C + c0, C, len, nc, tile, kBlock);
    for (int64_t j = 0; j < nc; ++j) {
      const float* src = tile + j * kBlock;
      const int64_t o = (b * C + c0 + j) * T + t0;
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) {
        float v = src[t];
        if (low) v += D::load(low[o + t]);
        v = D::round(v);
        if (residual) v = D::round(D::load(residual[o + t]) + v);
        out[o + t] = D::store(v);
      }
    }
  }
}

}  // namespace

extern "C" {

int accel_norm_codes_abi() { return 3; }

void accel_norm_silu_bf16(const uint16_t* x, uint16_t* y, int64_t B, int64_t C, int64_t T, int64_t G, float eps,
                          const float* weight, const float* bias, const float* mul, const float* add,
                          const float* smooth, float* lo_hi, int threads) {
  norm_silu<Bf16>(x, y, B, C, T, G, eps, weight, bias, mul, add, smooth, lo_hi, threads);
}

void accel_norm_silu_f32(const float* x, float* y, int64_t B, int64_t C, int64_t T, int64_t G, float eps,
                         const float* weight, const float* bias, const float* mul, const float* add,
                         const float* smooth, float* lo_hi, int threads) {
  norm_silu<F32>(x, y, B, C, T, G, eps, weight, bias, mul, add, smooth, lo_hi, threads);
}

void accel_codes_bf16(const uint16_t* y, const float* smooth, uint8_t* q, int64_t B, int64_t C, int64_t T,
                      float scale, float zp, int threads) {
  codes<Bf16>(y, smooth, q, B, C, T, scale, zp, threads);
}

void accel_codes_f32(const float* y, const float* smooth, uint8_t* q, int64_t B, int64_t C, int64_t T, float scale,
                     float zp, int threads) {
  codes<F32>(y, smooth, q, B, C, T, scale, zp, threads);
}

void accel_minmax_bf16(const uint16_t* y, const float* smooth, int64_t B, int64_t C, int64_t T, float* lo_hi,
                       int threads) {
  minmax<Bf16>(y, smooth, B, C, T, lo_hi, threads);
}

void accel_minmax_f32(const float* y, const float* smooth, int64_t B, int64_t C, int64_t T, float* lo_hi,
                      int threads) {
  minmax<F32>(y, smooth, B, C, T, lo_hi, threads);
}

void accel_finish_bf16(const float* y, const uint16_t* low, const uint16_t* residual, uint16_t* out, int64_t B,
                       int64_t C, int64_t T, int threads) {
  finish<Bf16>(y, low, residual, out, B, C, T, threads);
}

void accel_finish_f32(const float* y, const float* low, const float* residual, float* out, int64_t B, int64_t C,
                      int64_t T, int threads) {
  finish<F32>(y, low, residual, out, B, C, T, threads);
}

void accel_exp_f32(const float* x, float* y, int64_t n) {  // the kernels' exp, for its accuracy test
  for (int64_t i = 0; i < n; ++i) y[i] = exp_vec(x[i]);
}

void accel_float_codes_bf16(const uint16_t* y, float* out, int64_t n, float scale, float zp, int threads) {
  float_codes<Bf16>(y, out, n, scale, zp, threads);
}

void accel_float_codes_f32(const float* y, float* out, int64_t n, float scale, float zp, int threads) {
  float_codes<F32>(y, out, n, scale, zp, threads);
}

}  // extern "C"
