/*
 * The upsampled half of a decoder convolution, computed at low resolution.
 *
 * TransUNet's decoder blocks compute conv3x3(cat(up2(x), skip)) with up2 the bilinear x2
 * upsampling (corners aligned). A 1x1 channel mix commutes with any spatial linear map, so
 * the part of the 3x3 convolution that reads up2(x) is
 *
 *     T[i, j] = sum over taps t = (dy, dx) in {-1,0,1}^2 of up2(Z_t)[i + dy, j + dx]
 *
 * with Z_t = W_t x the tap's 1x1 convolution at LOW resolution (a quarter of the work; oneDNN
 * computes all nine as one 1x1 convolution with 9*C outputs). This kernel does the rest: it
 * upsamples each tap's map bilinearly, shifts it by its tap offset (zero outside the image:
 * the convolution's zero padding) and sums the nine, adds a float32 bias, optionally applies
 * ReLU, and rounds to bf16 once. Sums are fp32.
 *
 * Layouts (channels last, contiguous): z (B, h, w, 9, C) bf16 with tap t = (dy+1)*3 + (dx+1);
 * out (B, H, W, C) bf16; bias (C) fp32 or NULL. Source coordinates as torch's bilinear
 * interpolation with align_corners=True: src = i * ((h - 1) / (H - 1)) in fp32, i0 = floor,
 * i1 = min(i0 + 1, h - 1), weights (1 - f, f).
 *
 * Separable: per low-resolution row, the taps are upsampled and shifted along W and summed
 * over dx (three rows, one per dy: 6 multiply-adds per value), then per output row the rows it
 * reads are combined along H (6 more): 15 multiply-adds per output value instead of the 36 of
 * the direct sum, with the W-pass rows kept in a small per-thread ring (L2-sized).
 *
 * Built by upsampled_taps.py through native.py; parallel over (sample, block of 8 output
 * rows) with OpenMP.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct { int64_t i0, i1; float w0, w1; } Src;

static void source_index(Src *tab, int64_t out, int64_t in) {
    /* torch: area_pixel_compute_scale (align_corners) = (in - 1) / (out - 1), in float */
    float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    for (int64_t i = 0; i < out; i++) {
        float src = scale * (float)i;
        int64_t i0 = (int64_t)src;
        if (i0 > in - 1) i0 = in - 1;
        int64_t i1 = i0 < in - 1 ? i0 + 1 : i0;
        float f = src - (float)i0;
        tab[i].i0 = i0; tab[i].i1 = i1; tab[i].w1 = f; tab[i].w0 = 1.0f - f;
    }
}

static inline __m512 load16(const uint16_t *p) {
    /* bf16 -> fp32: the 16 bits become the high half of the fp32 word */
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

static inline void store16(uint16_t *p, __m512 v) {
    /* fp32 -> bf16, round to nearest even (vcvtneps2bf16) */
    _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(v));
}

/* Rows of the tap sums along W kept per thread: output row i reads low-resolution rows
 * y0(i-1) .. y1(i+1), at most 3 distinct ones, so 4 slots never evict a row still needed. */
#define SLOTS 4

/* M[dy][j][c] = sum_dx up_W(Z_(dy,dx))[p, j + dx, c] for one low-resolution row p: the taps
 * upsampled and shifted along W, summed over dx (fp32), one row per dy. */
static void row_along_w(float *m, const uint16_t *zrow, const Src *tx, int64_t W, int64_t C) {
    const int64_t zpix = 9 * C;
    for (int dy = 0; dy < 3; dy++) {
        float *mrow = m + dy * W * C;
        for (int64_t j = 0; j < W; j++) {
            for (int64_t c = 0; c < C; c += 16) {
                __m512 a = _mm512_setzero_ps();
                for (int dx = -1; dx <= 1; dx++) {
                    const int64_t s = j + dx;
                    if (s < 0 || s >= W) continue;
                    const Src sx = tx[s];
                    const int64_t t = dy * 3 + (dx + 1);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(sx.w0), load16(zrow + sx.i0 * zpix + t * C + c), a);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(sx.w1), load16(zrow + sx.i1 * zpix + t * C + c), a);
                }
                _mm512_storeu_ps(mrow + j * C + c, a);
            }
        }
    }
}

int upsampled_taps_bf16(const uint16_t *z, uint16_t *out, const float *bias,
                        int64_t B, int64_t h, int64_t w, int64_t C, int64_t H, int64_t W,
                        int relu, int nthreads) {
    /* upsampling only: then an output row reads at most 3 low-resolution rows (the ring) */
    if (C % 16 || h < 1 || w < 1 || H < h || W < w) return 1;
    Src *ty = malloc(sizeof(Src) * H), *tx = malloc(sizeof(Src) * W);
    if (!ty || !tx) { free(ty); free(tx); return 2; }
    source_index(ty, H, h);
    source_index(tx, W, w);
    const int64_t zpix = 9 * C, mrow = 3 * W * C;   /* floats per M row (3 dy) */
    /* Work items: (sample, block of output rows); each keeps its own M slots. */
    const int64_t rows_per_item = H < 8 ? H : 8;
    const int64_t items_per_b = (H + rows_per_item - 1) / rows_per_item;
    int failed = 0;

    #pragma omp parallel num_threads(nthreads)
    {
        float *slots = malloc(sizeof(float) * SLOTS * mrow);
        int64_t tag[SLOTS];
        if (!slots) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t item = 0; item < B * items_per_b; item++) {
            if (!slots) continue;
            const int64_t b = item / items_per_b;
            const int64_t i0 = (item % items_per_b) * rows_per_item;
            const int64_t i1 = i0 + rows_per_item < H ? i0 + rows_per_item : H;
            const uint16_t *zb = z + b * h * w * zpix;
            for (int k = 0; k < SLOTS; k++) tag[k] = -1;
            for (int64_t i = i0; i < i1; i++) {
                /* the low-resolution rows this output row reads, and their weights */
                const float *rp[6];
                float rw[6];
                int n = 0;
                for (int dy = -1; dy <= 1; dy++) {
                    const int64_t r = i + dy;
                    if (r < 0 || r >= H) continue;
                    const int64_t ps[2] = {ty[r].i0, ty[r].i1};
                    const float ws[2] = {ty[r].w0, ty[r].w1};
                    for (int e = 0; e < 2; e++) {
                        const int64_t p = ps[e];
                        const int k = (int)(p % SLOTS);
                        if (tag[k] != p) {
                            row_along_w(slots + k * mrow, zb + p * w * zpix, tx, W, C);
                            tag[k] = p;
                        }
                        rp[n] = slots + k * mrow + (dy + 1) * W * C;
                        rw[n] = ws[e];
                        n++;
                    }
                }
                uint16_t *orow = out + (b * H + i) * W * C;
                for (int64_t jc = 0; jc < W * C; jc += 16) {
                    __m512 a = bias ? _mm512_loadu_ps(bias + jc % C) : _mm512_setzero_ps();
                    for (int e = 0; e < n; e++)
                        a = _mm512_fmadd_ps(_mm512_set1_ps(rw[e]), _mm512_loadu_ps(rp[e] + jc), a);
                    if (relu) a = _mm512_max_ps(a, _mm512_setzero_ps());
                    store16(orow + jc, a);
                }
            }
        }
        free(slots);
    }
    free(ty);
    free(tx);
    return failed ? 2 : 0;
}
