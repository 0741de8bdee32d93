/* Matrix-vector kernels for CPU decoding: y = x W^T for a few rows x, W in fp32, bf16 or q8.
 *
 * Why hand-written: decoding one token streams every weight once, so its speed is how fast the
 * weights leave memory. torch's CPU kernels are built for matrix-matrix products and read a
 * single row's weights at 17-23 GB/s (fp32) on the 2-core machines we measure, bf16 and int8 far
 * slower per byte (BENCHMARKS.md), where a plain AVX2 loop over four weight rows at a time reads
 * near the memory bus's limit. Three weight formats:
 *   fp32  the model's own weights, row-major (nothing copied);
 *   bf16  the top 16 bits of each fp32 weight, in tiles of 4 rows (below); one load and two ops
 *         widen 16 of them to fp32 (a shift for the even ones, a mask for the odd ones), against
 *         an x whose 16-blocks are split into even and odd halves once per call;
 *   q8    int8 codes with one fp32 scale per 32 weights (llama.cpp's q8_0 granularity), in
 *         tiles of 4 rows; x is
 *         quantized the same way once per call, and each 32-block's integer dot product
 *         (|w| x sign(x, w), so an int16 pair sum is at most 2 x 127 x 127 and never saturates)
 *         is scaled by both blocks' scales.
 * Threads: OpenMP, linked against the libgomp torch has already loaded (same soname), so these
 * loops run on torch's own thread team. A pool of our own spinning beside torch's made each
 * wait for the other's threads to be descheduled: 10 tok/s instead of 45 on 2 cores. Rows go
 * out in chunks as threads come free, so a descheduled thread delays only its chunk.
 * Built on first use by aethermind/model/cpu_gemv.py with the machine's own compiler
 * (-march=native); without AVX2 and FMA `aek_simd()` returns 0 and Python keeps torch's kernels.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define AEK_SIMD 1
#else
#define AEK_SIMD 0
#endif

int aek_simd(void) { return AEK_SIMD; }

#if AEK_SIMD

#define QBLOCK 32
enum { KIND_F32 = 0, KIND_BF16 = 1, KIND_Q8 = 2 };

typedef struct {
  int kind;
  const void *w;      /* (n, k) weights in the kind's format */
  const void *x;      /* (m, k): fp32, bf16's split fp32, or q8 codes */
  const float *xs;    /* q8: (m, k / 32) scales */
  float *y;           /* (m, n) */
  int64_t n, k, m;
} job_t;

/* The sums of four accumulators' lanes, each as ((0+1)+(2+3))+((4+5)+(6+7)): three hadds for
 * four rows, where one row at a time costs six ops each (a tenth of a short row's loop). */
static inline void hsum4(__m256 a, __m256 b, __m256 c, __m256 d, float *out) {
  const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1)));
}

/* One accumulator's sum, in hsum4's order (so one row alone sums as it does in a batch). */
static inline float hsum(__m256 v) {
  const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(v, v), v);
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1)));
}

/* Rows beyond `r` (a tail of fewer than 4) alias row 0: read again, never written. */
#define ROW(base, stride, j) ((base) + (r > (j)) * (j) * (stride))

static void rows_f32(const float *w, int64_t k, const float *x, float *y, int r) {
  const float *w0 = w, *w1 = ROW(w, k, 1), *w2 = ROW(w, k, 2), *w3 = ROW(w, k, 3);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 xv = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
  }
  float s[4];
  hsum4(a0, a1, a2, a3, s);
  for (; i < k; i++) {
    s[0] += w0[i] * x[i], s[1] += w1[i] * x[i], s[2] += w2[i] * x[i], s[3] += w3[i] * x[i];
  }
  for (int j = 0; j < r; j++) y[j] = s[j];
}

/* rows_f32 for two inputs at once: each weight load feeds two FMAs (a batch of rows, e.g. a
 * server's decode step, is bound by loads from cache, not by memory, after the first row). */
static void rows_f32_x2(const float *w, int64_t k, const float *x, const float *z, float *y,
                        float *v, int r) {
  const float *w0 = w, *w1 = ROW(w, k, 1), *w2 = ROW(w, k, 2), *w3 = ROW(w, k, 3);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), zv = _mm256_loadu_ps(z + i);
    __m256 wv = _mm256_loadu_ps(w0 + i);
    a0 = _mm256_fmadd_ps(wv, xv, a0), b0 = _mm256_fmadd_ps(wv, zv, b0);
    wv = _mm256_loadu_ps(w1 + i);
    a1 = _mm256_fmadd_ps(wv, xv, a1), b1 = _mm256_fmadd_ps(wv, zv, b1);
    wv = _mm256_loadu_ps(w2 + i);
    a2 = _mm256_fmadd_ps(wv, xv, a2), b2 = _mm256_fmadd_ps(wv, zv, b2);
    wv = _mm256_loadu_ps(w3 + i);
    a3 = _mm256_fmadd_ps(wv, xv, a3), b3 = _mm256_fmadd_ps(wv, zv, b3);
  }
  float s[4], t[4];
  hsum4(a0, a1, a2, a3, s);
  hsum4(b0, b1, b2, b3, t);
  for (; i < k; i++) {
    s[0] += w0[i] * x[i], s[1] += w1[i] * x[i], s[2] += w2[i] * x[i], s[3] += w3[i] * x[i];
    t[0] += w0[i] * z[i], t[1] += w1[i] * z[i], t[2] += w2[i] * z[i], t[3] += w3[i] * z[i];
  }
  for (int j = 0; j < r; j++) y[j] = s[j], v[j] = t[j];
}

/* bf16 and q8 weights come in tiles of 4 rows: each K-step of the 4 rows is stored together,
 * so a thread reads one sequential stream instead of four short ones (rows of 768 int8 codes
 * are 12 cache lines: too short for the hardware prefetcher to catch up), and it prefetches
 * PREFETCH bytes ahead itself. Measured on nano's shapes, 2 cores of an AMD EPYC: q8 9.1 ->
 * 4.1 ms a token, bf16 9.4 -> 7.2 (fp32's long rows gained nothing from either, so fp32 keeps
 * the model's own weights). */
#define PREFETCH 4096
#define PREFETCH_LINE(p, off) _mm_prefetch((const char *)(p) + PREFETCH + (off), _MM_HINT_T0)

/* Two weight rows against four inputs (4-7 rows of a batched step; eights take rows_f32_x8):
 * each weight load feeds four FMAs, and the loop prefetches the rows ahead itself, since a
 * longer pass over each row leaves the hardware prefetcher behind. Measured on nano's fp32
 * shapes, 2 cores of an AMD EPYC: 4 rows 13.8 ms a step, near the memory bound.
 * Each output is the same sum in the same order as rows_f32's, so a row's result does not
 * depend on its neighbours. */
static void rows_f32_x4(const float *w0, const float *w1, int64_t k, const float *x,
                        float *y, int64_t ystride, int r) {
  const float *x1 = x + k, *x2 = x + 2 * k, *x3 = x + 3 * k;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t i = 0;
#define F32_X4_STEP(j)                                                                   \
  do {                                                                                   \
    const __m256 u = _mm256_loadu_ps(w0 + (j)), v = _mm256_loadu_ps(w1 + (j));          \
    __m256 xv = _mm256_loadu_ps(x + (j));                                                \
    a0 = _mm256_fmadd_ps(u, xv, a0), b0 = _mm256_fmadd_ps(v, xv, b0);                    \
    xv = _mm256_loadu_ps(x1 + (j));                                                      \
    a1 = _mm256_fmadd_ps(u, xv, a1), b1 = _mm256_fmadd_ps(v, xv, b1);                    \
    xv = _mm256_loadu_ps(x2 + (j));                                                      \
    a2 = _mm256_fmadd_ps(u, xv, a2), b2 = _mm256_fmadd_ps(v, xv, b2);                    \
    xv = _mm256_loadu_ps(x3 + (j));                                                      \
    a3 = _mm256_fmadd_ps(u, xv, a3), b3 = _mm256_fmadd_ps(v, xv, b3);                    \
  } while (0)
  for (; i + 16 <= k; i += 16) {
    PREFETCH_LINE(w0 + i, 0);
    PREFETCH_LINE(w1 + i, 0);
    F32_X4_STEP(i);
    F32_X4_STEP(i + 8);
  }
  for (; i + 8 <= k; i += 8) F32_X4_STEP(i);
#undef F32_X4_STEP
  float s[8];
  hsum4(a0, a1, a2, a3, s);
  hsum4(b0, b1, b2, b3, s + 4);
  for (; i < k; i++)
    for (int j = 0; j < 4; j++) s[j] += w0[i] * x[j * k + i], s[4 + j] += w1[i] * x[j * k + i];
  for (int j = 0; j < 4; j++) {
    y[j * ystride] = s[j];
    if (r > 1) y[j * ystride + 1] = s[4 + j];
  }
}

/* Two weight rows against eight inputs (a server's step at full batch), K in blocks of
 * X8_BLOCK: each block of the two rows comes from memory once, for the first four inputs, and
 * from L1 for the other four, so the weights stream all through the pass (two passes of
 * rows_f32_x4 left memory idle during the second), and each group's pass prefetches one row
 * of the next pair, spread over the pass. The loads go to registers first (IN_REG): left to
 * itself the compiler folds each input load into both of its FMAs, ten loads for eight FMAs.
 * Nano's fp32 products for 8 rows, 2 cores of an AMD EPYC: 18.6 -> 15.4 ms a step
 * (bench/ab_kernels.py; in cache 140 GFLOPS, 70% of the FMA peak). Each output is the same
 * sum in the same order as rows_f32's. */
#define X8_BLOCK 256
#define IN_REG(v) __asm__("" : "+x"(v))
static void rows_f32_x8(const float *w0, const float *w1, int64_t k, const float *x,
                        float *y, int64_t ystride, int r) {
  __m256 acc[16];
  for (int j = 0; j < 16; j++) acc[j] = _mm256_setzero_ps();
  const int64_t k8 = k / 8 * 8;
  for (int64_t lo = 0; lo < k8; lo += X8_BLOCK) {
    const int64_t hi = lo + X8_BLOCK < k8 ? lo + X8_BLOCK : k8;
    for (int g = 0; g < 2; g++) {
      const float *x0 = x + 4 * g * k, *x1 = x0 + k, *x2 = x0 + 2 * k, *x3 = x0 + 3 * k;
      __m256 a0 = acc[8 * g], a1 = acc[8 * g + 1], a2 = acc[8 * g + 2], a3 = acc[8 * g + 3];
      __m256 b0 = acc[8 * g + 4], b1 = acc[8 * g + 5], b2 = acc[8 * g + 6], b3 = acc[8 * g + 7];
      for (int64_t i = lo; i < hi; i += 8) {
        if ((i & 15) == 0)  /* the next pair's rows, one in each group's pass */
          _mm_prefetch((const char *)((g ? w1 : w0) + 2 * k + i), _MM_HINT_T0);
        __m256 u = _mm256_loadu_ps(w0 + i), v = _mm256_loadu_ps(w1 + i);
        IN_REG(u);
        IN_REG(v);
        __m256 xv = _mm256_loadu_ps(x0 + i);
        IN_REG(xv);
        a0 = _mm256_fmadd_ps(u, xv, a0), b0 = _mm256_fmadd_ps(v, xv, b0);
        xv = _mm256_loadu_ps(x1 + i);
        IN_REG(xv);
        a1 = _mm256_fmadd_ps(u, xv, a1), b1 = _mm256_fmadd_ps(v, xv, b1);
        xv = _mm256_loadu_ps(x2 + i);
        IN_REG(xv);
        a2 = _mm256_fmadd_ps(u, xv, a2), b2 = _mm256_fmadd_ps(v, xv, b2);
        xv = _mm256_loadu_ps(x3 + i);
        IN_REG(xv);
        a3 = _mm256_fmadd_ps(u, xv, a3), b3 = _mm256_fmadd_ps(v, xv, b3);
      }
      acc[8 * g] = a0, acc[8 * g + 1] = a1, acc[8 * g + 2] = a2, acc[8 * g + 3] = a3;
      acc[8 * g + 4] = b0, acc[8 * g + 5] = b1, acc[8 * g + 6] = b2, acc[8 * g + 7] = b3;
    }
  }
  for (int g = 0; g < 2; g++) {
    float s[8];
    hsum4(acc[8 * g], acc[8 * g + 1], acc[8 * g + 2], acc[8 * g + 3], s);
    hsum4(acc[8 * g + 4], acc[8 * g + 5], acc[8 * g + 6], acc[8 * g + 7], s + 4);
    const float *xg = x + 4 * g * k;
    for (int64_t i = k8; i < k; i++)
      for (int j = 0; j < 4; j++) s[j] += w0[i] * xg[j * k + i], s[4 + j] += w1[i] * xg[j * k + i];
    float *yg = y + 4 * g * ystride;
    for (int j = 0; j < 4; j++) {
      yg[j * ystride] = s[j];
      if (r > 1) yg[j * ystride + 1] = s[4 + j];
    }
  }
}

static const int32_t ODD_MASK = (int32_t)0xFFFF0000;

/* One 16-block of bf16 weights against x split into even (xe) and odd (xo) halves. */
#define BF16_BLOCK(acc, wp)                                                              \
  do {                                                                                   \
    __m256i v = _mm256_loadu_si256((const __m256i *)(wp));                               \
    acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, acc);       \
    acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, odd)), xo, acc);       \
  } while (0)

/* A tile's K-step: 4 rows x 16 bf16 (128 bytes). */
static void rows_bf16(const uint16_t *tile, int64_t k, const float *xsplit, float *y, int r) {
  const __m256i odd = _mm256_set1_epi32(ODD_MASK);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const uint16_t *p = tile;
  for (int64_t i = 0; i < k; i += 16, p += 64) {
    PREFETCH_LINE(p, 0);
    PREFETCH_LINE(p, 64);
    __m256 xe = _mm256_loadu_ps(xsplit + i), xo = _mm256_loadu_ps(xsplit + i + 8);
    BF16_BLOCK(a0, p);
    BF16_BLOCK(a1, p + 16);
    BF16_BLOCK(a2, p + 32);
    BF16_BLOCK(a3, p + 48);
  }
  float s[4];
  hsum4(a0, a1, a2, a3, s);
  for (int j = 0; j < r; j++) y[j] = s[j];
}

/* One widened 16-block of a bf16 tile row against two inputs' split halves. */
#define BF16_BLOCK_X2(acc, acc2, wp)                                                     \
  do {                                                                                   \
    __m256i v = _mm256_loadu_si256((const __m256i *)(wp));                               \
    __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));                         \
    __m256 odds = _mm256_castsi256_ps(_mm256_and_si256(v, odd));                         \
    acc = _mm256_fmadd_ps(odds, xo, _mm256_fmadd_ps(even, xe, acc));                    \
    acc2 = _mm256_fmadd_ps(odds, zo, _mm256_fmadd_ps(even, ze, acc2));                   \
  } while (0)

/* rows_bf16 for two inputs at once: each tile is widened once for both. */
static void rows_bf16_x2(const uint16_t *tile, int64_t k, const float *xsplit,
                         const float *zsplit, float *y, float *w, int r) {
  const __m256i odd = _mm256_set1_epi32(ODD_MASK);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  const uint16_t *p = tile;
  for (int64_t i = 0; i < k; i += 16, p += 64) {
    PREFETCH_LINE(p, 0);
    PREFETCH_LINE(p, 64);
    const __m256 xe = _mm256_loadu_ps(xsplit + i), xo = _mm256_loadu_ps(xsplit + i + 8);
    const __m256 ze = _mm256_loadu_ps(zsplit + i), zo = _mm256_loadu_ps(zsplit + i + 8);
    BF16_BLOCK_X2(a0, b0, p);
    BF16_BLOCK_X2(a1, b1, p + 16);
    BF16_BLOCK_X2(a2, b2, p + 32);
    BF16_BLOCK_X2(a3, b3, p + 48);
  }
  float s[4], t[4];
  hsum4(a0, a1, a2, a3, s);
  hsum4(b0, b1, b2, b3, t);
  for (int j = 0; j < r; j++) y[j] = s[j], w[j] = t[j];
}

/* Integer dot product of two 32-blocks of int8 codes, as 8 fp32 partial sums. */
static inline __m256 q8_block(const int8_t *w, const int8_t *x, __m256i ones) {
  __m256i wv = _mm256_loadu_si256((const __m256i *)w);
  __m256i xv = _mm256_loadu_si256((const __m256i *)x);
  __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
}

/* A tile's K-step: the 4 rows' fp32 scales, then their 4 x 32 codes (144 bytes). */
#define Q8_STEP (4 * sizeof(float) + 4 * QBLOCK)

static void rows_q8(const int8_t *tile, int64_t k, const int8_t *x, const float *xs, float *y,
                    int r) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const int8_t *p = tile;
  for (int64_t b = 0; b < k / QBLOCK; b++, p += Q8_STEP) {
    PREFETCH_LINE(p, 0);
    PREFETCH_LINE(p, 64);
    PREFETCH_LINE(p, 128);
    const int8_t *xb = x + b * QBLOCK, *codes = p + 4 * sizeof(float);
    float sc[4];
    memcpy(sc, p, sizeof sc);
    const float xsb = xs[b];
    a0 = _mm256_fmadd_ps(q8_block(codes, xb, ones), _mm256_set1_ps(sc[0] * xsb), a0);
    a1 = _mm256_fmadd_ps(q8_block(codes + QBLOCK, xb, ones), _mm256_set1_ps(sc[1] * xsb), a1);
    a2 = _mm256_fmadd_ps(q8_block(codes + 2 * QBLOCK, xb, ones), _mm256_set1_ps(sc[2] * xsb), a2);
    a3 = _mm256_fmadd_ps(q8_block(codes + 3 * QBLOCK, xb, ones), _mm256_set1_ps(sc[3] * xsb), a3);
  }
  float s[4];
  hsum4(a0, a1, a2, a3, s);
  for (int j = 0; j < r; j++) y[j] = s[j];
}

static void run_rows(const job_t *j, int64_t lo, int64_t hi) {
  const int64_t k = j->k;
  for (int64_t n = lo; n < hi; n += 4) {
    const int r = hi - n < 4 ? (int)(hi - n) : 4;
    int64_t m = 0;
    for (; m + 8 <= j->m && j->kind == KIND_F32; m += 8) {
      const float *w = (const float *)j->w + n * k, *x = (const float *)j->x + m * k;
      float *y = j->y + m * j->n + n;
      rows_f32_x8(w, ROW(w, k, 1), k, x, y, j->n, r < 2 ? r : 2);
      if (r > 2) rows_f32_x8(w + 2 * k, ROW(w, k, 3), k, x, y + 2, j->n, r - 2);
    }
    for (; m + 4 <= j->m && j->kind == KIND_F32; m += 4) {
      const float *w = (const float *)j->w + n * k, *x = (const float *)j->x + m * k;
      float *y = j->y + m * j->n + n;
      rows_f32_x4(w, ROW(w, k, 1), k, x, y, j->n, r < 2 ? r : 2);
      if (r > 2) rows_f32_x4(w + 2 * k, ROW(w, k, 3), k, x, y + 2, j->n, r - 2);
    }
    for (; m + 2 <= j->m && j->kind != KIND_Q8; m += 2) {  /* pairs of inputs share loads */
      float *y = j->y + m * j->n + n;
      const float *x = (const float *)j->x + m * k;
      if (j->kind == KIND_F32)
        rows_f32_x2((const float *)j->w + n * k, k, x, x + k, y, y + j->n, r);
      else
        rows_bf16_x2((const uint16_t *)j->w + n * k, k, x, x + k, y, y + j->n, r);
    }
    for (; m < j->m; m++) {
      float *y = j->y + m * j->n + n;
      if (j->kind == KIND_F32)
        rows_f32((const float *)j->w + n * k, k, (const float *)j->x + m * k, y, r);
      else if (j->kind == KIND_BF16)
        rows_bf16((const uint16_t *)j->w + n * k, k, (const float *)j->x + m * k, y, r);
      else
        rows_q8((const int8_t *)j->w + n / 4 * (k / QBLOCK) * Q8_STEP, k,
                (const int8_t *)j->x + m * k, j->xs + m * (k / QBLOCK), y, r);
    }
  }
}

/* A per-thread buffer for the transformed x, grown as needed and kept for the next call. */
static void *scratch(size_t bytes) {
  static _Thread_local void *buf = NULL;
  static _Thread_local size_t size = 0;
  if (bytes > size) {
    void *grown = realloc(buf, bytes);
    if (!grown) return NULL;
    buf = grown, size = bytes;
  }
  return buf;
}

/* bf16's x: each 16-block as its 8 even then its 8 odd elements. */
static void split_even_odd(const float *x, float *out, int64_t k, int64_t m) {
  for (int64_t r = 0; r < m; r++)
    for (int64_t i = 0; i + 16 <= k; i += 16)
      for (int j = 0; j < 8; j++) {
        out[r * k + i + j] = x[r * k + i + 2 * j];
        out[r * k + i + 8 + j] = x[r * k + i + 2 * j + 1];
      }
}

/* q8's x: per 32-block, scale = max |x| / 127 and codes round(x / scale). */
static void quantize_q8(const float *x, int8_t *codes, float *scales, int64_t k, int64_t m) {
  for (int64_t b = 0; b < m * (k / QBLOCK); b++) {
    const float *xb = x + b * QBLOCK;
    float peak = 0.0f;
    for (int j = 0; j < QBLOCK; j++) peak = fmaxf(peak, fabsf(xb[j]));
    const float scale = peak / 127.0f, inv = peak > 0.0f ? 127.0f / peak : 0.0f;
    scales[b] = scale;
    for (int j = 0; j < QBLOCK; j++) codes[b * QBLOCK + j] = (int8_t)lrintf(xb[j] * inv);
  }
}

/* y (m, n) = x (m, k) W^T on `threads` threads. W: fp32 (n, k) row-major; bf16 and q8 in tiles
 * of 4 rows (n padded to a multiple of 4 with zero rows, k to a multiple of 16 / 32 with zero
 * columns, x too). Returns 0, or -1 for a k the kind cannot take, -2 when out of memory. */
int aek_gemv(int threads, int kind, const void *w, const float *x, float *y,
             int64_t n, int64_t k, int64_t m) {
  if (kind < KIND_F32 || kind > KIND_Q8 || (kind == KIND_Q8 && k % QBLOCK != 0) ||
      (kind == KIND_BF16 && k % 16 != 0))
    return -1;
  job_t j = {kind, w, x, NULL, y, n, k, m};
  if (kind == KIND_BF16) {
    float *split = scratch((size_t)(m * k) * sizeof(float));
    if (!split) return -2;
    split_even_odd(x, split, k, m);
    j.x = split;
  } else if (kind == KIND_Q8) {
    const size_t code_bytes = ((size_t)(m * k) + 63) / 64 * 64;
    int8_t *codes = scratch(code_bytes + (size_t)(m * (k / QBLOCK)) * sizeof(float));
    if (!codes) return -2;
    float *scales = (float *)(codes + code_bytes);
    quantize_q8(x, codes, scales, k, m);
    j.x = codes, j.xs = scales;
  }
  /* Chunks of whole 4-row groups, about 8 a thread, handed out as threads come free, so a
   * descheduled thread delays only its chunk. */
  int64_t chunk = (n / ((int64_t)threads * 8) + 3) / 4 * 4;
  if (chunk < 16) chunk = 16;
  const int64_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; c++)
    run_rows(&j, c * chunk, (c + 1) * chunk < n ? (c + 1) * chunk : n);
  return 0;
}

/* RMSNorm of m rows of k: y = x / sqrt(mean(x^2) + eps) * w. Eager decode runs 25 norms a
 * nano token, and torch's CPU rms_norm is six ops (~45 us a call there); this is one. */
int aek_rms_norm(const float *x, const float *w, float *y, int64_t m, int64_t k, float eps) {
  for (int64_t r = 0; r < m; r++) {
    const float *xr = x + r * k;
    float *yr = y + r * k;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
      const __m256 v = _mm256_loadu_ps(xr + i);
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    float sum = hsum(acc);
    for (; i < k; i++) sum += xr[i] * xr[i];
    const float inv = 1.0f / sqrtf(sum / (float)k + eps);
    const __m256 scale = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= k; i += 8)
      _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), scale),
                                             _mm256_loadu_ps(w + i)));
    for (; i < k; i++) yr[i] = xr[i] * inv * w[i];
  }
  return 0;
}

/* ---- A whole decode step in one call ------------------------------------------------------
 * Eager decoding in torch pays ~150 op dispatches and Python a token (4.2 ms of a nano step on
 * 2 AMD cores, against llama.cpp's ~0.5 ms outside its products); here one call runs every
 * layer of a Forge-1 model (RMSNorm, fused qkv, RoPE, the KV cache write, grouped-query
 * attention over each row's own positions, SwiGLU, the tied output projection) for m rows at
 * their own positions, with the products above and the weights as the model holds them. */

typedef struct {
  int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, ffn, vocab;
  int64_t cache_rows, cache_len; /* the KV cache: (layers, cache_rows, H_kv, cache_len, D) */
  float eps;
  int kind;                      /* every linear's weight format (KIND_*) */
  const float *emb;              /* (vocab, dim) token embedding */
  const float *cos, *sin;        /* (context, D) RoPE tables, HF's half-split layout */
  const void *const *wqkv, *const *wo, *const *wgu, *const *wdown; /* per layer */
  const float *const *attn_norm, *const *mlp_norm;                  /* per layer */
  const float *norm;
  const void *lm_head;
  float *k_cache, *v_cache;
} model_t;

/* e^x for 8 lanes (Cephes' expf polynomial, within 2 ulp; lanes below -87 give ~0). */
static inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                       _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static float dot(const float *a, const float *b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = hsum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* x (n) *= cos, + rotate_half(x) * sin, at one position's table rows (HF Llama's RoPE). */
static void rope(float *x, const float *cos, const float *sin, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; i++) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cos[i] - x2 * sin[i];
    x[i + half] = x2 * cos[i + half] + x1 * sin[i + half];
  }
}

/* scores[0..p] = e^(score - peak), in place; returns their sum (softmax's denominator). */
static float exp_scores(float *scores, int64_t p, float peak) {
  float total = 0.0f;
  int64_t j = 0;
  for (; j + 8 <= p + 1; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), _mm256_set1_ps(peak)));
    _mm256_storeu_ps(scores + j, e);
    total += hsum(e);
  }
  for (; j <= p; j++) total += (scores[j] = expf(scores[j] - peak));
  return total;
}

/* One query head of one row against its cache slot's positions 0..p; out (D). */
static void attend_head(const float *q, const float *k, const float *v, int64_t p, int64_t d,
                        float *scores, float *out) {
  const float scale = 1.0f / sqrtf((float)d);
  float peak = -INFINITY;
  for (int64_t j = 0; j <= p; j++) {
    scores[j] = dot(q, k + j * d, d) * scale;
    peak = fmaxf(peak, scores[j]);
  }
  const float inv = 1.0f / exp_scores(scores, p, peak);
  for (int64_t i = 0; i < d; i++) out[i] = 0.0f;
  for (int64_t j = 0; j <= p; j++) {
    const float w = scores[j] * inv;
    const float *vj = v + j * d;
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
      _mm256_storeu_ps(out + i, _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(vj + i),
                                                _mm256_loadu_ps(out + i)));
    for (; i < d; i++) out[i] += w * vj[i];
  }
}

/* attend_head for the G query heads that share one KV head (grouped-query attention), for a
 * head width D known when compiling (32: tiny, 64: nano and mini). Keys and values are read
 * in blocks of ATTEND_BLOCK positions, each block once for all G heads while it sits in L1
 * (each head on its own read the whole cache slot again: at long contexts the step was bound
 * by those reads); q and the output stay in registers, and four keys' dot products are reduced
 * at once (hsum4) instead of each alone. Each head's sums are the same sums in the same order
 * as attend_head's, so the results are bit for bit the same. Nano, 8 rows at position 900,
 * 2 AMD cores: a whole step 38.2 -> 27.4 ms (bench/ab_kernels.py --position 900). */
#define ATTEND_BLOCK 32
#define ATTEND_FIXED(D)                                                                    \
  static void attend_group_##D(const float *q, int64_t g, const float *k, const float *v,  \
                               int64_t p, float *scores, int64_t sstride, float *out) {    \
    enum { R = (D) / 8 };                                                                  \
    const float scale = 1.0f / sqrtf((float)(D));                                          \
    __m256 qv[R], o[R];                                                                    \
    for (int64_t jb = 0; jb <= p; jb += ATTEND_BLOCK) {                                    \
      const int64_t je = jb + ATTEND_BLOCK < p + 1 ? jb + ATTEND_BLOCK : p + 1;            \
      for (int64_t h = 0; h < g; h++) {                                                    \
        float *sc = scores + h * sstride;                                                  \
        for (int i = 0; i < R; i++) qv[i] = _mm256_loadu_ps(q + h * (D) + 8 * i);          \
        int64_t j = jb;                                                                    \
        for (; j + 4 <= je; j += 4) {                                                      \
          const float *k0 = k + j * (D), *k1 = k0 + (D), *k2 = k1 + (D), *k3 = k2 + (D);   \
          __m256 a0 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k0));                           \
          __m256 a1 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k1));                           \
          __m256 a2 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k2));                           \
          __m256 a3 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k3));                           \
          for (int i = 1; i < R; i++) {                                                    \
            a0 = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(k0 + 8 * i), a0);                 \
            a1 = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(k1 + 8 * i), a1);                 \
            a2 = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(k2 + 8 * i), a2);                 \
            a3 = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(k3 + 8 * i), a3);                 \
          }                                                                                \
          float s4[4];                                                                     \
          hsum4(a0, a1, a2, a3, s4);                                                       \
          for (int t = 0; t < 4; t++) sc[j + t] = s4[t] * scale;                           \
        }                                                                                  \
        for (; j < je; j++) {                                                              \
          __m256 a = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k + j * (D)));                   \
          for (int i = 1; i < R; i++)                                                      \
            a = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(k + j * (D) + 8 * i), a);           \
          sc[j] = hsum(a) * scale;                                                         \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
    for (int64_t h = 0; h < g; h++) {                                                      \
      float *sc = scores + h * sstride;                                                    \
      __m256 top = _mm256_set1_ps(-INFINITY);                                              \
      int64_t j = 0;                                                                       \
      for (; j + 8 <= p + 1; j += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(sc + j));    \
      float lanes[8], peak = -INFINITY;                                                    \
      _mm256_storeu_ps(lanes, top);                                                        \
      for (int i = 0; i < 8; i++) peak = lanes[i] > peak ? lanes[i] : peak;                \
      for (; j <= p; j++) peak = sc[j] > peak ? sc[j] : peak;                              \
      const float inv = 1.0f / exp_scores(sc, p, peak);                                    \
      for (j = 0; j <= p; j++) sc[j] *= inv;                                               \
    }                                                                                      \
    for (int64_t jb = 0; jb <= p; jb += ATTEND_BLOCK) {                                    \
      const int64_t je = jb + ATTEND_BLOCK < p + 1 ? jb + ATTEND_BLOCK : p + 1;            \
      for (int64_t h = 0; h < g; h++) {                                                    \
        const float *sc = scores + h * sstride;                                            \
        for (int i = 0; i < R; i++)                                                        \
          o[i] = jb ? _mm256_loadu_ps(out + h * (D) + 8 * i) : _mm256_setzero_ps();        \
        for (int64_t j = jb; j < je; j++) {                                                \
          const __m256 w = _mm256_set1_ps(sc[j]);                                          \
          for (int i = 0; i < R; i++)                                                      \
            o[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + j * (D) + 8 * i), o[i]);         \
        }                                                                                  \
        for (int i = 0; i < R; i++) _mm256_storeu_ps(out + h * (D) + 8 * i, o[i]);         \
      }                                                                                    \
    }                                                                                      \
  }
ATTEND_FIXED(32)
ATTEND_FIXED(64)
#undef ATTEND_FIXED

/* out (m, n) = silu(gate) * up for gu (m, 2n) = [gate | up] per row; out rows `stride` apart. */
static void swiglu(const float *gu, float *out, int64_t m, int64_t n, int64_t stride) {
  for (int64_t r = 0; r < m; r++) {
    const float *g = gu + r * 2 * n, *u = g + n;
    float *o = out + r * stride;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 gv = _mm256_loadu_ps(g + i);
      const __m256 sig = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(
          _mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
      _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_mul_ps(gv, sig), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
  }
}

/* A step's own buffers (aek_gemv's scratch is for its converted x), kept for the next call. */
static float *step_buffer(size_t floats) {
  static _Thread_local float *buf = NULL;
  static _Thread_local size_t size = 0;
  if (floats > size) {
    float *grown = realloc(buf, floats * sizeof(float));
    if (!grown) return NULL;
    buf = grown, size = floats;
  }
  return buf;
}

static int64_t padded(int kind, int64_t k) {
  const int64_t step = kind == KIND_BF16 ? 16 : kind == KIND_Q8 ? QBLOCK : 1;
  return (k + step - 1) / step * step;
}

/* logits (m, vocab) for tokens ids (m) at positions pos (m), row r in cache slot r. Returns
 * 0, -1 for a bad argument, -2 when out of memory, or aek_gemv's error. */
int aek_decode(int threads, const model_t *md, const int64_t *ids, const int64_t *pos,
               int64_t m, float *logits) {
  const int64_t dim = md->dim, nh = md->n_heads, nkv = md->n_kv_heads, d = md->head_dim;
  const int64_t qd = nh * d, kvd = nkv * d, qkvd = qd + 2 * kvd, ffn = md->ffn;
  const int64_t dp = padded(md->kind, dim), qp = padded(md->kind, qd), fp = padded(md->kind, ffn);
  if (m < 1 || m > md->cache_rows || nh % nkv) return -1;
  for (int64_t r = 0; r < m; r++)
    if (pos[r] < 0 || pos[r] >= md->cache_len || ids[r] < 0 || ids[r] >= md->vocab) return -1;
  const int team = threads > 0 ? threads : 1;
  const size_t need = (size_t)(m * (dim + dp + qkvd + qp + 2 * ffn + fp + dim) +
                               team * (nh / nkv) * md->cache_len);
  float *buf = step_buffer(need);
  if (!buf) return -2;
  memset(buf, 0, need * sizeof(float)); /* the K padding of every product's input stays 0 */
  float *x = buf, *h = x + m * dim, *qkv = h + m * dp, *att = qkv + m * qkvd, *gu = att + m * qp;
  float *act = gu + m * 2 * ffn, *out = act + m * fp, *scores = out + m * dim;
  for (int64_t r = 0; r < m; r++) memcpy(x + r * dim, md->emb + ids[r] * dim, dim * sizeof(float));
  int err;
  for (int64_t l = 0; l < md->n_layers; l++) {
    for (int64_t r = 0; r < m; r++)
      aek_rms_norm(x + r * dim, md->attn_norm[l], h + r * dp, 1, dim, md->eps);
    if ((err = aek_gemv(threads, md->kind, md->wqkv[l], h, qkv, qkvd, dp, m))) return err;
    float *kl = md->k_cache + l * md->cache_rows * nkv * md->cache_len * d;
    float *vl = md->v_cache + l * md->cache_rows * nkv * md->cache_len * d;
    for (int64_t r = 0; r < m; r++) {
      float *q = qkv + r * qkvd, *k = q + qd, *v = k + kvd;
      const float *c = md->cos + pos[r] * d, *s = md->sin + pos[r] * d;
      for (int64_t hh = 0; hh < nh; hh++) rope(q + hh * d, c, s, d);
      for (int64_t hh = 0; hh < nkv; hh++) {
        rope(k + hh * d, c, s, d);
        const int64_t at = ((r * nkv + hh) * md->cache_len + pos[r]) * d;
        memcpy(kl + at, k + hh * d, d * sizeof(float));
        memcpy(vl + at, v + hh * d, d * sizeof(float));
      }
    }
    /* One task per row and KV head: its nh / nkv query heads read the cache slot together. */
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1 && m * nkv > 1)
    for (int64_t t = 0; t < m * nkv; t++) {
      const int64_t r = t / nkv, g = t % nkv, heads = nh / nkv;
      const float *kg = kl + (r * nkv + g) * md->cache_len * d;
      const float *vg = vl + (r * nkv + g) * md->cache_len * d;
      const float *qg = qkv + r * qkvd + g * heads * d;
      float *og = att + r * qp + g * heads * d;
#ifdef _OPENMP
      float *sc = scores + (int64_t)omp_get_thread_num() * heads * md->cache_len;
#else
      float *sc = scores;
#endif
      if (d == 64)
        attend_group_64(qg, heads, kg, vg, pos[r], sc, md->cache_len, og);
      else if (d == 32)
        attend_group_32(qg, heads, kg, vg, pos[r], sc, md->cache_len, og);
      else
        for (int64_t h = 0; h < heads; h++)
          attend_head(qg + h * d, kg, vg, pos[r], d, sc, og + h * d);
    }
    if ((err = aek_gemv(threads, md->kind, md->wo[l], att, out, dim, qp, m))) return err;
    for (int64_t i = 0; i < m * dim; i++) x[i] += out[i];
    for (int64_t r = 0; r < m; r++)
      aek_rms_norm(x + r * dim, md->mlp_norm[l], h + r * dp, 1, dim, md->eps);
    if ((err = aek_gemv(threads, md->kind, md->wgu[l], h, gu, 2 * ffn, dp, m))) return err;
    swiglu(gu, act, m, ffn, fp);
    if ((err = aek_gemv(threads, md->kind, md->wdown[l], act, out, dim, fp, m))) return err;
    for (int64_t i = 0; i < m * dim; i++) x[i] += out[i];
  }
  for (int64_t r = 0; r < m; r++) aek_rms_norm(x + r * dim, md->norm, h + r * dp, 1, dim, md->eps);
  return aek_gemv(threads, md->kind, md->lm_head, h, logits, md->vocab, dp, m);
}

#else /* no AVX2 + FMA: Python keeps torch's kernels and never calls these */

int aek_rms_norm(const float *x, const float *w, float *y, int64_t m, int64_t k, float eps) {
  (void)x, (void)w, (void)y, (void)m, (void)k, (void)eps;
  return -1;
}

int aek_decode(int threads, const void *md, const int64_t *ids, const int64_t *pos, int64_t m,
               float *logits) {
  (void)threads, (void)md, (void)ids, (void)pos, (void)m, (void)logits;
  return -1;
}

int aek_gemv(int threads, int kind, const void *w, const float *x, float *y,
             int64_t n, int64_t k, int64_t m) {
  (void)threads, (void)kind, (void)w, (void)x, (void)y, (void)n, (void)k, (void)m;
  return -1;
}

#endif
