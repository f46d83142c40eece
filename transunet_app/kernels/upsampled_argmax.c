/*
 * Labels of bilinearly upsampled class scores: argmax_k of
 * F.interpolate(scores, (H, W), mode="bilinear", align_corners=True), without the float map.
 *
 * Bilinear interpolation is a convex combination of the 4 source pixels around an output
 * pixel, so where the 4 have the same argmax (first maximum) the output has it too: those
 * pixels copy the label. Only pixels between corners that disagree (organ boundaries) are
 * interpolated, with torch's weights and formula, in fp32, and take the first maximum (as
 * torch.argmax). Equal to interpolate + argmax except where two classes tie to float rounding.
 *
 * scores: fp32 (B, K, h, w) with element strides sB, sK, sH, sW (channels last: sK = 1, the
 * vectorised case for K <= 16); out: uint8 (B, H, W) contiguous; upsampling only (H >= h,
 * W >= w). Built by upsampled_argmax.py through native.py; OpenMP over (sample, output row).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct { int64_t i0, i1; float w1; } Src;

static void source_index(Src *tab, int64_t out, int64_t in) {
    float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    for (int64_t i = 0; i < out; i++) {
        float src = scale * (float)i;
        int64_t i0 = (int64_t)src;
        if (i0 > in - 1) i0 = in - 1;
        tab[i].i0 = i0;
        tab[i].i1 = i0 < in - 1 ? i0 + 1 : i0;
        tab[i].w1 = src - (float)i0;
    }
}

static inline uint8_t argmax_strided(const float *p, int64_t K, int64_t sK) {
    float best = p[0];
    int64_t arg = 0;
    for (int64_t k = 1; k < K; k++)
        if (p[k * sK] > best) { best = p[k * sK]; arg = k; }
    return (uint8_t)arg;
}

int upsampled_argmax_f32(const float *s, int64_t sB, int64_t sK, int64_t sH, int64_t sW,
                         int64_t B, int64_t K, int64_t h, int64_t w,
                         uint8_t *out, int64_t H, int64_t W, int nthreads) {
    if (K < 1 || K > 255 || h < 1 || w < 1 || H < h || W < w) return 1;
    Src *ty = malloc(sizeof(Src) * H), *tx = malloc(sizeof(Src) * W);
    uint8_t *lab = malloc((size_t)(B * h * w));
    if (!ty || !tx || !lab) { free(ty); free(tx); free(lab); return 2; }
    source_index(ty, H, h);
    source_index(tx, W, w);
    const int vec = sK == 1 && K <= 16;
    const __mmask16 kmask = (__mmask16)((1u << K) - 1u);

    #pragma omp parallel num_threads(nthreads)
    {
        /* labels on the source grid */
        #pragma omp for schedule(static)
        for (int64_t by = 0; by < B * h; by++) {
            const int64_t b = by / h, y = by % h;
            for (int64_t x = 0; x < w; x++)
                lab[by * w + x] = argmax_strided(s + b * sB + y * sH + x * sW, K, sK);
        }
        #pragma omp for schedule(static)
        for (int64_t bi = 0; bi < B * H; bi++) {
            const int64_t b = bi / H, i = bi % H;
            const Src sy = ty[i];
            const uint8_t *l0 = lab + (b * h + sy.i0) * w, *l1 = lab + (b * h + sy.i1) * w;
            const float *r0 = s + b * sB + sy.i0 * sH, *r1 = s + b * sB + sy.i1 * sH;
            const float wy = sy.w1, wy0 = 1.0f - wy;
            uint8_t *o = out + bi * W;
            for (int64_t j = 0; j < W; j++) {
                const Src sx = tx[j];
                const uint8_t a = l0[sx.i0];
                if (a == l0[sx.i1] && a == l1[sx.i0] && a == l1[sx.i1]) { o[j] = a; continue; }
                const float wx = sx.w1, wx0 = 1.0f - wx;
                const float *p00 = r0 + sx.i0 * sW, *p01 = r0 + sx.i1 * sW;
                const float *p10 = r1 + sx.i0 * sW, *p11 = r1 + sx.i1 * sW;
                if (vec) {
                    /* (1-wy)*((1-wx)*s00 + wx*s01) + wy*((1-wx)*s10 + wx*s11), unfused */
                    const __m512 v00 = _mm512_maskz_loadu_ps(kmask, p00), v01 = _mm512_maskz_loadu_ps(kmask, p01);
                    const __m512 v10 = _mm512_maskz_loadu_ps(kmask, p10), v11 = _mm512_maskz_loadu_ps(kmask, p11);
                    const __m512 bx0 = _mm512_set1_ps(wx0), bx1 = _mm512_set1_ps(wx);
                    const __m512 top = _mm512_add_ps(_mm512_mul_ps(bx0, v00), _mm512_mul_ps(bx1, v01));
                    const __m512 bot = _mm512_add_ps(_mm512_mul_ps(bx0, v10), _mm512_mul_ps(bx1, v11));
                    const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(wy0), top),
                                                   _mm512_mul_ps(_mm512_set1_ps(wy), bot));
                    const float m = _mm512_mask_reduce_max_ps(kmask, v);
                    const __mmask16 at = _mm512_mask_cmpeq_ps_mask(kmask, v, _mm512_set1_ps(m));
                    o[j] = (uint8_t)__builtin_ctz((unsigned)at);
                } else {
                    float best = 0.0f;
                    int64_t arg = 0;
                    for (int64_t k = 0; k < K; k++) {
                        const int64_t q = k * sK;
                        const float v = wy0 * (wx0 * p00[q] + wx * p01[q]) + wy * (wx0 * p10[q] + wx * p11[q]);
                        if (k == 0 || v > best) { best = v; arg = k; }
                    }
                    o[j] = (uint8_t)arg;
                }
            }
        }
    }
    free(ty);
    free(tx);
    free(lab);
    return 0;
}
