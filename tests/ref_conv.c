/* Reference conv-family ops: the definitions, written as directly as
 * possible (see ref_conv.h). */
#include "ref_conv.h"

#include <math.h>

void ref_conv2d_general(const double *x, int64_t B, int64_t C, int64_t H, int64_t W,
                        const double *w, const double *b, int64_t O, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw, double *y) {
    int64_t Ho = ref_out_len(H, kh, sh, ph), Wo = ref_out_len(W, kw, sw, pw);
    /* y[n, o, p, q] = b[o] + sum_{c,i,j} w[o, c, i, j] x[n, c, p sh - ph + i, q sw - pw + j] */
    for (int64_t n = 0; n < B; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t p = 0; p < Ho; p++)
                for (int64_t q = 0; q < Wo; q++) {
                    double s = b ? b[o] : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t i = 0; i < kh; i++)
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t r = p * sh - ph + i, t = q * sw - pw + j;
                                if (r < 0 || r >= H || t < 0 || t >= W) continue;
                                s += w[((o * C + c) * kh + i) * kw + j] *
                                     x[((n * C + c) * H + r) * W + t];
                            }
                    y[((n * O + o) * Ho + p) * Wo + q] = s;
                }
}

void ref_conv2d(const double *x, int64_t B, int64_t C, int64_t H, int64_t W, const double *w,
                const double *b, int64_t O, int64_t k, int64_t stride, int64_t pad, double *y) {
    ref_conv2d_general(x, B, C, H, W, w, b, O, k, k, stride, stride, pad, pad, y);
}

void ref_conv1d(const double *x, int64_t B, int64_t C, int64_t T, const double *w,
                const double *b, int64_t O, int64_t k, int64_t stride, int64_t pad, double *y) {
    /* y[n, o, t] = b[o] + sum_{c,j} w[o, c, j] x[n, c, t stride - pad + j] */
    int64_t To = ref_out_len(T, k, stride, pad);
    for (int64_t n = 0; n < B; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t t = 0; t < To; t++) {
                double s = b ? b[o] : 0.0;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t j = 0; j < k; j++) {
                        int64_t u = t * stride - pad + j;
                        if (u >= 0 && u < T) s += w[(o * C + c) * k + j] * x[(n * C + c) * T + u];
                    }
                y[(n * O + o) * To + t] = s;
            }
}

void ref_linear(const double *x, int64_t B, int64_t C, const double *w, const double *b,
                int64_t O, double *y) {
    for (int64_t n = 0; n < B; n++)
        for (int64_t o = 0; o < O; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t c = 0; c < C; c++) s += x[n * C + c] * w[o * C + c];
            y[n * O + o] = s;
        }
}

void ref_patches(const double *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t s,
                 int64_t stride, double *y) {
    int64_t Gh = (H - s) / stride + 1, Gw = (W - s) / stride + 1;
    /* y[n, gi, gj, c, r, t] = x[n, c, gi stride + r, gj stride + t] */
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < Gh; gi++)
            for (int64_t gj = 0; gj < Gw; gj++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t r = 0; r < s; r++)
                        for (int64_t t = 0; t < s; t++)
                            y[((((n * Gh + gi) * Gw + gj) * C + c) * s + r) * s + t] =
                                x[((n * C + c) * H + gi * stride + r) * W + gj * stride + t];
}

void ref_avgpool2d(const double *x, int64_t B, int64_t H, int64_t W, int64_t k, int64_t stride,
                   double *y) {
    int64_t Ho = (H - k) / stride + 1, Wo = (W - k) / stride + 1;
    for (int64_t n = 0; n < B; n++)
        for (int64_t p = 0; p < Ho; p++)
            for (int64_t q = 0; q < Wo; q++) {
                double s = 0;
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++)
                        s += x[(n * H + p * stride + i) * W + q * stride + j];
                y[(n * Ho + p) * Wo + q] = s / (double)(k * k);
            }
}

void ref_maxpool2d(const double *x, int64_t B, int64_t H, int64_t W, int64_t k, int64_t stride,
                   double *y) {
    int64_t Ho = (H - k) / stride + 1, Wo = (W - k) / stride + 1;
    for (int64_t n = 0; n < B; n++)
        for (int64_t p = 0; p < Ho; p++)
            for (int64_t q = 0; q < Wo; q++) {
                double m = -INFINITY;
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++)
                        m = fmax(m, x[(n * H + p * stride + i) * W + q * stride + j]);
                y[(n * Ho + p) * Wo + q] = m;
            }
}

void ref_conv2d_mask(const double *w, int64_t O, int64_t C, int64_t k, int type_b, double *y) {
    int64_t c = k / 2;
    for (int64_t oc = 0; oc < O * C; oc++)
        for (int64_t u = 0; u < k; u++)
            for (int64_t v = 0; v < k; v++) {
                int keep = u < c || (u == c && (v < c || (type_b && v == c)));
                int64_t i = (oc * k + u) * k + v;
                y[i] = keep ? w[i] : 0.0;
            }
}
