/* Plain-C reference implementations of the conv family's forward ops, by
 * direct nested loops in double (no im2col, no BLAS), for differential tests
 * of generated code and finite-difference checks of its backward ops.
 *
 * Layouts follow docs/internals.md (PyTorch's). B counts the flattened
 * leading (batch) dimensions. Every output is fully overwritten. */
#ifndef GIM_REF_CONV_H
#define GIM_REF_CONV_H

#include <stdint.h>

/* A general 2-d convolution: x [B, C, H, W], w [O, C, kh, kw], b [O] or
 * NULL, zero padding -> y [B, O, Ho, Wo], Ho = (H + 2 ph - kh) / sh + 1. */
void ref_conv2d_general(const double *x, int64_t B, int64_t C, int64_t H, int64_t W,
                        const double *w, const double *b, int64_t O, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw, double *y);
/* conv2d: square kernel k, stride, pad. */
void ref_conv2d(const double *x, int64_t B, int64_t C, int64_t H, int64_t W, const double *w,
                const double *b, int64_t O, int64_t k, int64_t stride, int64_t pad, double *y);
/* PixelCNN's causal mask on conv2d weights w [O, C, k, k], k odd: kernel
 * position (u, v) is kept when it lies in a row above the centre, or in the
 * centre row left of it, and (type_b) the centre itself; every other entry of
 * y is 0. */
void ref_conv2d_mask(const double *w, int64_t O, int64_t C, int64_t k, int type_b, double *y);
/* conv1d: x [B, C, T], w [O, C, k] -> y [B, O, To]. */
void ref_conv1d(const double *x, int64_t B, int64_t C, int64_t T, const double *w,
                const double *b, int64_t O, int64_t k, int64_t stride, int64_t pad, double *y);
/* linear: x [B, C], w [O, C] -> y [B, O] = x wᵀ + b. */
void ref_linear(const double *x, int64_t B, int64_t C, const double *w, const double *b,
                int64_t O, double *y);
/* patches: x [N, C, H, W] -> y [N, Gh, Gw, C, s, s], G = (H - s) / stride + 1. */
void ref_patches(const double *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t s,
                 int64_t stride, double *y);
/* Pools over x [B, H, W] (B includes channels), no padding, floor:
 * y [B, Ho, Wo], Ho = (H - k) / stride + 1. */
void ref_avgpool2d(const double *x, int64_t B, int64_t H, int64_t W, int64_t k, int64_t stride,
                   double *y);
void ref_maxpool2d(const double *x, int64_t B, int64_t H, int64_t W, int64_t k, int64_t stride,
                   double *y);

/* Output extent of a convolution or pool along one axis. */
static inline int64_t ref_out_len(int64_t n, int64_t k, int64_t stride, int64_t pad) {
    return (n + 2 * pad - k) / stride + 1;
}

#endif
