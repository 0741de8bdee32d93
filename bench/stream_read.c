/* How fast this machine streams memory into the cores: the bound on any decode kernel.
 *
 * Reads nano's fp32 weight bytes (430 MB) once per round, summing them with AVX2 on N OpenMP
 * threads, best of 10 rounds. A matrix-vector kernel cannot beat this (it reads the same
 * bytes and does more), so `bench_gemv.py`'s GB/s column divided by this figure is how close
 * a kernel is to the machine's limit.
 * Usage: cc -O3 -march=native -fopenmp bench/stream_read.c -o /tmp/stream_read && /tmp/stream_read 2
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 2;
  const size_t bytes = (size_t)430 << 20, n = bytes / sizeof(float), chunk = 1 << 16;
  float *a = aligned_alloc(64, bytes);
  if (!a || threads < 1) return 1;
  for (size_t i = 0; i < n; i++) a[i] = 1.0f;
  double best = 1e30, total = 0;
  for (int round = 0; round < 10; round++) {
    const int64_t start = now_ns();
    float sum = 0;
#pragma omp parallel for reduction(+ : sum) num_threads(threads) schedule(static)
    for (size_t c = 0; c < n; c += chunk) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (size_t i = c; i < c + chunk; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(a + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(a + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(a + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(a + i + 24));
      }
      float lanes[8];
      _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
      for (int j = 0; j < 8; j++) sum += lanes[j];
    }
    const double ms = (now_ns() - start) / 1e6;
    best = ms < best ? ms : best;
    total += sum;
  }
  printf("%d threads: %.2f ms to read %zu MB, %.1f GB/s (checksum %.0f)\n", threads, best,
         bytes >> 20, bytes / best / 1e6, total);
  free(a);
  return 0;
}
