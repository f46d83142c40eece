/*
 * GroupNorm of a channels-last bf16 map with the ReLU and the residual addition that follow it
 * in R50's bottleneck units fused in:  out = relu?(GN(x) * gamma + beta (+ residual)).
 *
 * torch runs these as three or four passes over the map (GroupNorm: statistics and affine;
 * the addition; the ReLU, each rounding to bf16); here the statistics are one read and the
 * affine + addition + ReLU one read and one write, rounded to bf16 once.
 *
 * x, residual, out: (N, P, C) bf16 (channels last, P = H*W pixels), contiguous; gamma, beta:
 * (C) fp32. Statistics per (sample, group): per-channel shifted sums, combined per group
 * in fp64 without cancellation; biased variance, rstd = 1/sqrt(var + eps); then per channel
 * a = rstd * gamma and out = (x - mean) * a + beta in fp32. Built by group_norm.py through native.py; OpenMP over samples.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static inline __m512 load16(const uint16_t *p) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

static inline void store16(uint16_t *p, __m512 v) {
    _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(v));
}

int group_norm_bf16(const uint16_t *x, const uint16_t *residual, uint16_t *out,
                    const float *gamma, const float *beta, int64_t N, int64_t P, int64_t C,
                    int64_t G, double eps, int relu, int nthreads) {
    if (C % 16 || G < 1 || C % G || P < 1) return 1;
    const int64_t per = C / G;
    int failed = 0;

    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        double *sum = calloc((size_t)(2 * C), sizeof(double));
        float *a = malloc(sizeof(float) * 2 * C);
        if (!sum || !a) { free(sum); free(a); failed = 1; continue; }
        double *sq = sum + C;
        float *b = a + C;
        const uint16_t *xn = x + n * P * C;
        /* per-channel sums of (x - k_c), k_c the channel's first value (shifted data: the
         * sums stay near the deviations, so the variance below does not cancel), fp32 over
         * blocks of 64 pixels, then fp64 */
        float *k = malloc(sizeof(float) * C);
        if (!k) { free(sum); free(a); failed = 1; continue; }
        for (int64_t c = 0; c < C; c += 16) _mm512_storeu_ps(k + c, load16(xn + c));
        for (int64_t p0 = 0; p0 < P; p0 += 64) {
            const int64_t p1 = p0 + 64 < P ? p0 + 64 : P;
            for (int64_t c = 0; c < C; c += 16) {
                const __m512 kc = _mm512_loadu_ps(k + c);
                __m512 s = _mm512_setzero_ps(), q = _mm512_setzero_ps();
                for (int64_t p = p0; p < p1; p++) {
                    const __m512 v = _mm512_sub_ps(load16(xn + p * C + c), kc);
                    s = _mm512_add_ps(s, v);
                    q = _mm512_fmadd_ps(v, v, q);
                }
                float sf[16], qf[16];
                _mm512_storeu_ps(sf, s);
                _mm512_storeu_ps(qf, q);
                for (int j = 0; j < 16; j++) { sum[c + j] += sf[j]; sq[c + j] += qf[j]; }
            }
        }
        /* per channel: mean and sum of squared deviations; per group (Chan et al.): the
         * channels' deviations plus P * their means' spread about the group mean */
        for (int64_t g = 0; g < G; g++) {
            double mean = 0.0, m2 = 0.0;
            for (int64_t c = g * per; c < (g + 1) * per; c++) {
                const double mc = (double)k[c] + sum[c] / (double)P;
                mean += mc;
                m2 += sq[c] - sum[c] * sum[c] / (double)P;
            }
            mean /= (double)per;
            for (int64_t c = g * per; c < (g + 1) * per; c++) {
                const double d = (double)k[c] + sum[c] / (double)P - mean;
                m2 += (double)P * d * d;
            }
            double var = m2 / ((double)P * (double)per);
            if (var < 0.0) var = 0.0;
            const double rstd = 1.0 / sqrt(var + eps);
            for (int64_t c = g * per; c < (g + 1) * per; c++) {
                a[c] = (float)(rstd * (double)gamma[c]);
                b[c] = beta[c];
                k[c] = (float)mean;  /* k now holds the group mean, per channel */
            }
        }
        uint16_t *on = out + n * P * C;
        const uint16_t *rn = residual ? residual + n * P * C : NULL;
        const __m512 zero = _mm512_setzero_ps();
        for (int64_t p = 0; p < P; p++) {
            for (int64_t c = 0; c < C; c += 16) {
                /* (x - mean) * a + beta: x * a + (beta - mean * a) would cancel where the
                 * variance is small against the mean (a constant group must give beta) */
                const __m512 d = _mm512_sub_ps(load16(xn + p * C + c), _mm512_loadu_ps(k + c));
                __m512 v = _mm512_fmadd_ps(d, _mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c));
                if (rn) v = _mm512_add_ps(v, load16(rn + p * C + c));
                if (relu) v = _mm512_max_ps(v, zero);
                store16(on + p * C + c, v);
            }
        }
        free(k);
        free(sum);
        free(a);
    }
    return failed ? 2 : 0;
}
