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
 * Built by upsampled_taps.py through native.py; parallel over output rows with OpenMP.
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

/* Channels per register block: up to 8 zmm accumulators (128 channels) per pass. */
#define CB 8

int upsampled_taps_bf16(const uint16_t *z, uint16_t *out, const float *bias,
                        int64_t B, int64_t h, int64_t w, int64_t C, int64_t H, int64_t W,
                        int relu, int nthreads) {
    if (C % 16 || h < 1 || w < 1 || H < 1 || W < 1) return 1;
    Src *ty = malloc(sizeof(Src) * H), *tx = malloc(sizeof(Src) * W);
    if (!ty || !tx) { free(ty); free(tx); return 2; }
    source_index(ty, H, h);
    source_index(tx, W, w);
    const int64_t zpix = 9 * C;            /* elements per low-resolution pixel */
    const int64_t nvec = C / 16;

    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t bi = 0; bi < B * H; bi++) {
        const int64_t b = bi / H, i = bi % H;
        const uint16_t *zb = z + b * h * w * zpix;
        uint16_t *orow = out + (b * H + i) * W * C;
        for (int64_t j = 0; j < W; j++) {
            for (int64_t v0 = 0; v0 < nvec; v0 += CB) {
                const int nb = (int)(nvec - v0 < CB ? nvec - v0 : CB);
                __m512 acc[CB];
                for (int u = 0; u < nb; u++)
                    acc[u] = bias ? _mm512_loadu_ps(bias + (v0 + u) * 16) : _mm512_setzero_ps();
                for (int dy = -1; dy <= 1; dy++) {
                    const int64_t r = i + dy;
                    if (r < 0 || r >= H) continue;
                    const Src sy = ty[r];
                    for (int dx = -1; dx <= 1; dx++) {
                        const int64_t s = j + dx;
                        if (s < 0 || s >= W) continue;
                        const Src sx = tx[s];
                        const int64_t t = (dy + 1) * 3 + (dx + 1);
                        const __m512 w00 = _mm512_set1_ps(sy.w0 * sx.w0), w01 = _mm512_set1_ps(sy.w0 * sx.w1);
                        const __m512 w10 = _mm512_set1_ps(sy.w1 * sx.w0), w11 = _mm512_set1_ps(sy.w1 * sx.w1);
                        const uint16_t *p00 = zb + (sy.i0 * w + sx.i0) * zpix + t * C + v0 * 16;
                        const uint16_t *p01 = zb + (sy.i0 * w + sx.i1) * zpix + t * C + v0 * 16;
                        const uint16_t *p10 = zb + (sy.i1 * w + sx.i0) * zpix + t * C + v0 * 16;
                        const uint16_t *p11 = zb + (sy.i1 * w + sx.i1) * zpix + t * C + v0 * 16;
                        for (int u = 0; u < nb; u++) {
                            __m512 a = acc[u];
                            a = _mm512_fmadd_ps(w00, load16(p00 + u * 16), a);
                            a = _mm512_fmadd_ps(w01, load16(p01 + u * 16), a);
                            a = _mm512_fmadd_ps(w10, load16(p10 + u * 16), a);
                            a = _mm512_fmadd_ps(w11, load16(p11 + u * 16), a);
                            acc[u] = a;
                        }
                    }
                }
                for (int u = 0; u < nb; u++) {
                    __m512 a = relu ? _mm512_max_ps(acc[u], _mm512_setzero_ps()) : acc[u];
                    store16(orow + j * C + (v0 + u) * 16, a);
                }
            }
        }
    }
    free(ty);
    free(tx);
    return 0;
}
