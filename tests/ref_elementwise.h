/* Plain-C (double) reference implementations of the elementwise family:
 * activations and their backward ops, add/sub/mul/scale/shift, means,
 * bias_bwd, transpose. Layouts as in docs/internals.md. */
#ifndef GIM_REF_ELEMENTWISE_H
#define GIM_REF_ELEMENTWISE_H

#include <stdint.h>

#include "graph.h"

/* y = op(x) for relu, tanh, sigmoid, leaky_relu (attr: slope), scale (attr: s),
 * shift (attr: s). */
void ref_ew_unary(gim_op op, double attr, const double *x, double *y, int64_t n);
/* y = op(a, b) for add, sub, mul and the activation backward ops
 * (relu_bwd(dy, y), tanh_bwd(dy, y), sigmoid_bwd(dy, y), leaky_relu_bwd(dy, x; attr slope)). */
void ref_ew_binary(gim_op op, double attr, const double *a, const double *b, double *y, int64_t n);

/* x [outer, hw] -> y [outer], the mean of each row. */
void ref_spatial_mean(const double *x, double *y, int64_t outer, int64_t hw);
/* x [outer, len, inner] -> y [outer, inner], the mean over len. */
void ref_mean(const double *x, double *y, int64_t outer, int64_t len, int64_t inner);
/* b [len] broadcast to y [outer, len, inner] (what bias_bwd is the adjoint of). */
void ref_broadcast(const double *b, double *y, int64_t outer, int64_t len, int64_t inner);
/* Axes a and b of x (shape d, rank r) swapped into y. */
void ref_transpose(const double *x, double *y, const int64_t *d, int r, int a, int b);

#endif
