/*
 * bf16 attention for one CPU socket with AVX512-BF16: out = softmax(q k^T * scale, dim=-1) v.
 *
 * Built by attention.py (gcc -O3 -fopenmp -mavx512f -mavx512bw -mavx512vl -mavx512bf16
 * -mfma) and called through ctypes. Tensors are (B, H, N, D) of bf16 (uint16 bit patterns)
 * with arbitrary element strides for B, H, N and stride 1 along D.
 *
 * Numerics: the scores q.k are accumulated in fp32 by vdpbf16ps (bf16 products are exact in
 * fp32) and never rounded to bf16; the softmax is fp32 (row max subtracted, exp2 with a
 * polynomial of relative error ~1e-7); the probabilities are rounded to bf16 for the P.V
 * product, which accumulates in fp32; the row sum is taken over the *rounded* probabilities,
 * so the weights that multiply V sum to one exactly (the rounding errors of the weights do
 * not also scale the output); the output is rounded to bf16 round-to-nearest-even.
 *
 * Work split: one (b, h) pair at a time per OpenMP thread; per pair, K and V are packed
 * into thread-local buffers laid out for vdpbf16ps, then query rows are processed in blocks
 * of ROWS: all scores of the block (fp32, ROWS x N), the softmax, then P.V. N is small in
 * the models (196-1024 tokens), so whole score rows fit in L1/L2 and the softmax needs no
 * online rescaling.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Query rows per block; the QK^T tile is QK_ROWS x (16*QK_KB) keys, the P.V tile
 * PV_ROWS x (16*PV_DB) output columns. Both keep their accumulators in zmm registers (6x4 =
 * 24 of 32, plus the loaded K/V vectors); q and p pairs come from vpbroadcastd (a {1to16}
 * memory operand on vdpbf16ps, written with inline asm, was 2.5x slower on Zen 5). Measured
 * with tools/bench/bench_attention.py at (8, 12, 196, 64), one thread: 12/6x4/6x4 2.43-2.6 ms,
 * 12/6x4/4x4 2.50, 8/4x4/4x4 2.70, 8/8x3/8x3 2.74, 16/8x3/8x3 3.06 (noise ~3%). */
#ifndef ROWS
#define ROWS 12
#endif
#ifndef QK_ROWS
#define QK_ROWS 6
#endif
#ifndef QK_KB
#define QK_KB 4
#endif
#ifndef PV_ROWS
#define PV_ROWS 6
#endif
#ifndef PV_DB
#define PV_DB 4
#endif

#define INLINE static inline __attribute__((always_inline))

typedef uint32_t u32_unaligned __attribute__((aligned(1), may_alias));

INLINE __m512i bcast_pair(const uint16_t *p) {
    return _mm512_set1_epi32((int)*(const u32_unaligned *)p);
}

INLINE __m512 dot(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

/* 2^x for x <= 0 (fp32): 2^n * 2^f with n = round(x), |f| <= 1/2, 2^f by a degree-5
 * polynomial (near-minimax in relative error: 1.7e-7 with fp32 FMA Horner, measured on a
 * dense grid); vscalefps applies 2^n exactly and underflows gracefully to 0. x is clamped at
 * -150 so that -inf gives 0, not NaN. */
INLINE __m512 exp2_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-150.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(0.0013264722656458616f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.009671512991189957f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05550733581185341f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022242426872253f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931470036506653f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* fp32 -> bf16 round-to-nearest-even (vcvtneps2bf16), as 16 uint16 in a ymm. */
INLINE __m256i to_bf16(__m512 x) {
    return (__m256i)_mm512_cvtneps_pbh(x);
}

INLINE __mmask16 first_lanes(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

/* Per-thread buffers of one (b, h) pair. */
typedef struct {
    int N, D;
    int NB;    /* key blocks of 16 */
    int T;     /* key pairs: ceil(N / 2) */
    int DP;    /* D rounded up to 16: output columns in the packed V */
    int DB;    /* DP / 16 */
    int NS;    /* score/probability row stride: NB * 16 rounded up to 32 (64-byte rows of P) */
    uint32_t *kp;  /* K: [D/2 pairs][NB][16 keys] of (k[key][2p], k[key][2p+1]) */
    uint16_t *vp;  /* V: [T][DP][2] = (v[2t][d], v[2t+1][d]), zero padded */
    float *s;      /* scores times scale * log2(e): [ROWS][NS] */
    float *mx;     /* per-lane running maxima of the valid scores of each row: [ROWS][16] */
    uint16_t *p;   /* probabilities bf16: [ROWS][NS], zero beyond N */
    float *l;      /* row sums: [ROWS] */
} work_t;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t work_size(int N, int D, work_t *w) {
    w->N = N;
    w->D = D;
    w->NB = (N + 15) / 16;
    w->T = (N + 1) / 2;
    w->DP = (D + 15) / 16 * 16;
    w->DB = w->DP / 16;
    w->NS = (w->NB * 16 + 31) / 32 * 32;
    return align64((size_t)(D / 2) * w->NB * 16 * 4) + align64((size_t)w->T * w->DP * 2 * 2)
           + align64((size_t)ROWS * w->NS * 4) + align64((size_t)ROWS * w->NS * 2)
           + align64(ROWS * 16 * 4) + align64(ROWS * 4);
}

static void work_bind(work_t *w, char *base) {
    w->kp = (uint32_t *)base;
    base += align64((size_t)(w->D / 2) * w->NB * 16 * 4);
    w->vp = (uint16_t *)base;
    base += align64((size_t)w->T * w->DP * 2 * 2);
    w->s = (float *)base;
    base += align64((size_t)ROWS * w->NS * 4);
    w->p = (uint16_t *)base;
    base += align64((size_t)ROWS * w->NS * 2);
    w->mx = (float *)base;
    base += align64(ROWS * 16 * 4);
    w->l = (float *)base;
}

/* K pairs transposed so that one zmm holds pair p of 16 consecutive keys. */
static void pack_k(work_t *w, const uint16_t *k, int64_t sN) {
    const int P = w->D / 2, NB = w->NB, N = w->N;
    uint32_t *kp = w->kp;
    for (int kb = 0; kb < NB; kb++) {
        int n0 = kb * 16;
        if (n0 + 16 <= N && P % 16 == 0) {
            /* 16 keys x 16 pairs: a 16x16 transpose of 32-bit elements per chunk of pairs */
            for (int p0 = 0; p0 < P; p0 += 16) {
                __m512i r[16], t[16];
                for (int j = 0; j < 16; j++)
                    r[j] = _mm512_loadu_si512((const void *)(k + (n0 + j) * sN + 2 * p0));
                for (int j = 0; j < 16; j += 2) {
                    t[j] = _mm512_unpacklo_epi32(r[j], r[j + 1]);
                    t[j + 1] = _mm512_unpackhi_epi32(r[j], r[j + 1]);
                }
                for (int j = 0; j < 16; j += 4) {
                    r[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
                    r[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
                    r[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
                    r[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
                }
                /* r[4a+b], 128-bit lane L: pair 4L+b of keys 4a..4a+3 */
                for (int j = 0; j < 4; j++) {
                    t[j] = _mm512_shuffle_i32x4(r[j], r[j + 4], 0x88);
                    t[j + 4] = _mm512_shuffle_i32x4(r[j], r[j + 4], 0xdd);
                    t[j + 8] = _mm512_shuffle_i32x4(r[j + 8], r[j + 12], 0x88);
                    t[j + 12] = _mm512_shuffle_i32x4(r[j + 8], r[j + 12], 0xdd);
                }
                for (int j = 0; j < 4; j++) {
                    r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
                    r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xdd);
                    r[j + 4] = _mm512_shuffle_i32x4(t[j + 4], t[j + 12], 0x88);
                    r[j + 12] = _mm512_shuffle_i32x4(t[j + 4], t[j + 12], 0xdd);
                }
                /* r[j] now holds pair p0 + j of the 16 keys */
                for (int j = 0; j < 16; j++)
                    _mm512_store_si512((void *)(kp + ((size_t)(p0 + j) * NB + kb) * 16), r[j]);
            }
        } else {
            for (int p = 0; p < P; p++) {
                uint32_t *dst = kp + ((size_t)p * NB + kb) * 16;
                for (int j = 0; j < 16; j++)
                    dst[j] = n0 + j < N ? *(const u32_unaligned *)(k + (n0 + j) * sN + 2 * p) : 0;
            }
        }
    }
}

/* V rows interleaved in pairs of keys: (v[2t][d], v[2t+1][d]) for 16 columns per zmm. */
static void pack_v(work_t *w, const uint16_t *v, int64_t sN) {
    const int T = w->T, DP = w->DP, DB = w->DB, N = w->N, D = w->D;
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                        39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    for (int t = 0; t < T; t++) {
        const uint16_t *r0 = v + (int64_t)(2 * t) * sN;
        const uint16_t *r1 = r0 + sN;
        int has1 = 2 * t + 1 < N;
        uint16_t *dst = w->vp + (size_t)t * DP * 2;
        for (int d0 = 0, c = 0; d0 < DP; d0 += 32, c += 2) {
            int left = D - d0;
            __mmask32 m = left >= 32 ? 0xffffffffu : ((1u << left) - 1u);
            __m512i a = _mm512_maskz_loadu_epi16(m, r0 + d0);
            __m512i b = has1 ? _mm512_maskz_loadu_epi16(m, r1 + d0) : _mm512_setzero_si512();
            _mm512_store_si512((void *)(dst + c * 32), _mm512_permutex2var_epi16(a, lo, b));
            if (c + 1 < DB)
                _mm512_store_si512((void *)(dst + (c + 1) * 32), _mm512_permutex2var_epi16(a, hi, b));
        }
    }
}

/* Scores of R query rows x KB key blocks times c (= scale * log2 e), fp32, into s (row stride
 * ns); the row maxima over the first nvalid keys of the tile are folded into mx (row stride 16):
 * the max pass of the softmax costs nothing extra while the scores are still in registers. */
INLINE void qk_tile(const uint16_t *const *qr, const uint32_t *kp, int64_t kstride, int P,
                    float *s, int ns, float *mx, __m512 cv, int nvalid, const int R, const int KB) {
    __m512 acc[QK_ROWS][QK_KB];
    for (int r = 0; r < R; r++)
        for (int b = 0; b < KB; b++) acc[r][b] = _mm512_setzero_ps();
    for (int p = 0; p < P; p++) {
        __m512i kv[QK_KB];
        for (int b = 0; b < KB; b++) kv[b] = _mm512_load_si512((const void *)(kp + b * 16));
        kp += kstride;
        for (int r = 0; r < R; r++) {
            __m512i qb = bcast_pair(qr[r] + 2 * p);
            for (int b = 0; b < KB; b++) acc[r][b] = dot(acc[r][b], kv[b], qb);
        }
    }
    for (int r = 0; r < R; r++) {
        __m512 m = _mm512_load_ps(mx + r * 16);
        for (int b = 0; b < KB; b++) {
            __m512 x = _mm512_mul_ps(acc[r][b], cv);
            _mm512_store_ps(s + r * ns + b * 16, x);
            m = _mm512_mask_max_ps(m, first_lanes(nvalid - 16 * b), m, x);
        }
        _mm512_store_ps(mx + r * 16, m);
    }
}

/* out rows = (P V) / l for R rows x DB blocks of 16 columns starting at column c0. */
INLINE void pv_tile(const uint16_t *const *pr, const uint16_t *vp, int DP, int T, const float *l,
                    uint16_t *const *orow, int c0, int D, const int R, const int DB) {
    __m512 acc[PV_ROWS][PV_DB];
    for (int r = 0; r < R; r++)
        for (int b = 0; b < DB; b++) acc[r][b] = _mm512_setzero_ps();
    vp += c0 * 2;
    for (int t = 0; t < T; t++) {
        __m512i vv[PV_DB];
        for (int b = 0; b < DB; b++) vv[b] = _mm512_load_si512((const void *)(vp + b * 32));
        vp += 2 * DP;
        for (int r = 0; r < R; r++) {
            __m512i pb = bcast_pair(pr[r] + 2 * t);
            for (int b = 0; b < DB; b++) acc[r][b] = dot(acc[r][b], vv[b], pb);
        }
    }
    for (int r = 0; r < R; r++) {
        __m512 lv = _mm512_set1_ps(l[r]);
        for (int b = 0; b < DB; b++) {
            int c = c0 + b * 16;
            int left = D - c;
            __mmask16 m = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1u);
            _mm256_mask_storeu_epi16(orow[r] + c, m, to_bf16(_mm512_div_ps(acc[r][b], lv)));
        }
    }
}

/* Dispatch to tiles with compile-time shapes (the accumulators must be registers). */
#define CASE_KB(R, KB) \
    case KB: qk_tile(qr, w->kp + kb * 16, kstride, P, s + kb * 16, NS, mx, cv, N - kb * 16, R, KB); break;
/* Key blocks split into equal-as-possible tiles (13 = 4+3+3+3, not 4+4+4+1): a narrow tile
 * has too few independent accumulators to hide the latency of vdpbf16ps. */
#define QK_REST(R)                                                      \
    for (int tiles = (NB + QK_KB - 1) / QK_KB; tiles > 0; tiles--) {    \
        const int kbw = (NB - kb + tiles - 1) / tiles;                  \
        switch (kbw) { QK_KB_CASES(R) default: break; }                 \
        kb += kbw;                                                      \
    }

#if QK_KB == 4
#define QK_KB_CASES(R) CASE_KB(R, 1) CASE_KB(R, 2) CASE_KB(R, 3) CASE_KB(R, 4)
#elif QK_KB == 3
#define QK_KB_CASES(R) CASE_KB(R, 1) CASE_KB(R, 2) CASE_KB(R, 3)
#elif QK_KB == 2
#define QK_KB_CASES(R) CASE_KB(R, 1) CASE_KB(R, 2)
#else
#error "QK_KB must be 2, 3 or 4"
#endif

/* Scores of R <= QK_ROWS rows against all keys (into s, row stride NS; maxima into mx). */
static void qk_rows(work_t *w, const uint16_t *const *qr, float *s, float *mx, __m512 cv, int R) {
    const int P = w->D / 2, NB = w->NB, NS = w->NS, N = w->N;
    const int64_t kstride = (int64_t)NB * 16;
    int kb = 0;
    switch (R) {
#if QK_ROWS >= 8
    case 8: QK_REST(8) break;
    case 7: QK_REST(7) break;
#endif
#if QK_ROWS >= 6
    case 6: QK_REST(6) break;
    case 5: QK_REST(5) break;
#endif
    case 4: QK_REST(4) break;
    case 3: QK_REST(3) break;
    case 2: QK_REST(2) break;
    case 1: QK_REST(1) break;
    default: break;
    }
}

#define CASE_DB(R, DB) \
    case DB: pv_tile(pr, w->vp, w->DP, w->T, l, orow, c * 16, w->D, R, DB); break;
#define PV_REST(R)                                                     \
    for (; c + PV_DB <= DB; c += PV_DB)                                \
        pv_tile(pr, w->vp, w->DP, w->T, l, orow, c * 16, w->D, R, PV_DB); \
    switch (DB - c) { PV_DB_CASES(R) default: break; }

#if PV_DB == 4
#define PV_DB_CASES(R) CASE_DB(R, 1) CASE_DB(R, 2) CASE_DB(R, 3)
#elif PV_DB == 3
#define PV_DB_CASES(R) CASE_DB(R, 1) CASE_DB(R, 2)
#elif PV_DB == 2
#define PV_DB_CASES(R) CASE_DB(R, 1)
#else
#error "PV_DB must be 2, 3 or 4"
#endif

/* Output rows of R <= PV_ROWS rows, all columns. */
static void pv_rows(work_t *w, const uint16_t *const *pr, const float *l, uint16_t *const *orow,
                    int R) {
    const int DB = w->DB;
    int c = 0;
    switch (R) {
#if PV_ROWS >= 8
    case 8: PV_REST(8) break;
    case 7: PV_REST(7) break;
#endif
#if PV_ROWS >= 6
    case 6: PV_REST(6) break;
    case 5: PV_REST(5) break;
#endif
    case 4: PV_REST(4) break;
    case 3: PV_REST(3) break;
    case 2: PV_REST(2) break;
    case 1: PV_REST(1) break;
    default: break;
    }
}

/* Row softmax from the scaled scores of row r: bf16 probabilities (unnormalised, max -> 1)
 * into w->p, zero beyond N; the fp32 sum of the *rounded* probabilities into w->l, taken
 * with vdpbf16ps against ones, so that it sees exactly the values (denormals flushed
 * alike) that the P.V product multiplies. */
static void softmax_row(work_t *w, int r) {
    const int N = w->N, NS = w->NS;
    const float *s = w->s + (size_t)r * NS;
    uint16_t *p = w->p + (size_t)r * NS;
    const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_load_ps(w->mx + r * 16)));
    const __m512i ones = _mm512_set1_epi16(0x3f80);
    __m512 sum = _mm512_setzero_ps();
    int j = 0;
    const int NK = w->NB * 16;
    for (; j + 32 <= NK; j += 32) {
        __m512 e0 = exp2_ps(_mm512_sub_ps(_mm512_load_ps(s + j), mv));
        __m512 e1 = exp2_ps(_mm512_sub_ps(_mm512_load_ps(s + j + 16), mv));
        if (j + 32 > N) { /* padded keys: weight exactly 0 */
            e0 = _mm512_maskz_mov_ps(first_lanes(N - j), e0);
            e1 = _mm512_maskz_mov_ps(first_lanes(N - j - 16), e1);
        }
        __m512i pb = (__m512i)_mm512_cvtne2ps_pbh(e1, e0);
        sum = dot(sum, pb, ones);
        _mm512_store_si512((void *)(p + j), pb);
    }
    if (j < NK) {
        __m512 e0 = exp2_ps(_mm512_sub_ps(_mm512_load_ps(s + j), mv));
        e0 = _mm512_maskz_mov_ps(first_lanes(N - j), e0);
        __m512i pb = (__m512i)_mm512_cvtne2ps_pbh(_mm512_setzero_ps(), e0);
        sum = dot(sum, pb, ones);
        _mm256_store_si256((__m256i *)(p + j), _mm512_castsi512_si256(pb));
    }
    w->l[r] = _mm512_reduce_add_ps(sum);
}

/* Rows [n0, n1) of the next pair's q, k, v towards L1/L2: they are strided (e.g. 4.6 KB apart
 * in a (B, N, 3, H, D) qkv tensor), which the hardware prefetchers follow poorly. */
static void prefetch_rows(const uint16_t *x, int64_t sN, int n0, int n1, int D) {
    for (int n = n0; n < n1; n++)
        for (int d = 0; d < D; d += 32) _mm_prefetch((const char *)(x + n * sN + d), _MM_HINT_T1);
}

static void head(work_t *w, const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *o,
                 int64_t qsN, int64_t ksN, int64_t vsN, int64_t osN, float c,
                 const uint16_t *nq, const uint16_t *nk, const uint16_t *nv) {
    const int N = w->N;
    const __m512 cv = _mm512_set1_ps(c);
    pack_k(w, k, ksN);
    pack_v(w, v, vsN);
    for (int r0 = 0; r0 < N; r0 += ROWS) {
        const int nr = N - r0 < ROWS ? N - r0 : ROWS;
        if (nq) {
            prefetch_rows(nq, qsN, r0, r0 + nr, w->D);
            prefetch_rows(nk, ksN, r0, r0 + nr, w->D);
            prefetch_rows(nv, vsN, r0, r0 + nr, w->D);
        }
        const uint16_t *qr[ROWS];
        const uint16_t *pr[ROWS];
        uint16_t *orow[ROWS];
        for (int r = 0; r < nr; r++) {
            qr[r] = q + (r0 + r) * qsN;
            pr[r] = w->p + (size_t)r * w->NS;
            orow[r] = o + (r0 + r) * osN;
            _mm512_store_ps(w->mx + r * 16, _mm512_set1_ps(-__builtin_inff()));
        }
        for (int r = 0; r < nr; r += QK_ROWS)
            qk_rows(w, qr + r, w->s + (size_t)r * w->NS, w->mx + r * 16, cv,
                    nr - r < QK_ROWS ? nr - r : QK_ROWS);
        for (int r = 0; r < nr; r++)
            softmax_row(w, r);
        for (int r = 0; r < nr; r += PV_ROWS)
            pv_rows(w, pr + r, w->l + r, orow + r, nr - r < PV_ROWS ? nr - r : PV_ROWS);
    }
}

#if ROWS % QK_ROWS || ROWS % PV_ROWS
#error "ROWS must be a multiple of QK_ROWS and PV_ROWS"
#endif

/* out[b, h] = softmax(q[b, h] k[b, h]^T * scale) v[b, h] for all (b, h), element strides
 * (s*B, s*H, s*N; stride 1 along D). D even, 2 <= D <= 256 (any even D; multiples of 32 are the
 * fast path of the K packing), N >= 1. Returns 0, or -1 (bad arguments) / -2 (out of memory),
 * in which case out is not (fully) written. */
int attention_bf16(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *out,
                   int64_t B, int64_t H, int64_t N, int64_t D,
                   int64_t qsB, int64_t qsH, int64_t qsN, int64_t ksB, int64_t ksH, int64_t ksN,
                   int64_t vsB, int64_t vsH, int64_t vsN, int64_t osB, int64_t osH, int64_t osN,
                   double scale, int nthreads) {
    if (B < 0 || H < 0 || N < 1 || D < 2 || D > 256 || D % 2 || N > (1 << 24)) return -1;
    const int64_t BH = B * H;
    if (BH == 0) return 0;
    const float c = (float)(scale * 1.4426950408889634);
    int nt = nthreads < 1 ? 1 : nthreads;
    if (nt > BH) nt = (int)BH;
    work_t proto;
    const size_t size = work_size((int)N, (int)D, &proto);
    int status = 0;
#pragma omp parallel num_threads(nt)
    {
        work_t w = proto;
        char *buf = aligned_alloc(64, size);
        if (!buf) {
#pragma omp atomic write
            status = -2;
        } else {
            work_bind(&w, buf);
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < BH; i++) {
            if (!buf) continue;
            const int64_t b = i / H, h = i % H;
            /* static schedule: a thread's chunk is contiguous, i + 1 is usually its next pair */
            const int64_t b1 = (i + 1) / H, h1 = (i + 1) % H;
            const int more = i + 1 < BH;
            head(&w, q + b * qsB + h * qsH, k + b * ksB + h * ksH, v + b * vsB + h * vsH,
                 out + b * osB + h * osH, qsN, ksN, vsN, osN, c,
                 more ? q + b1 * qsB + h1 * qsH : NULL, more ? k + b1 * ksB + h1 * ksH : NULL,
                 more ? v + b1 * vsB + h1 * vsH : NULL);
        }
        free(buf);
    }
    return status;
}
