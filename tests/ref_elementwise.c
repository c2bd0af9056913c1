/* Reference elementwise ops, straight from their definitions. */
#include "ref_elementwise.h"

#include <math.h>

void ref_ew_unary(gim_op op, double attr, const double *x, double *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        switch (op) {
        case GIM_OP_RELU: y[i] = v > 0 ? v : 0; break;
        case GIM_OP_TANH: y[i] = tanh(v); break;
        case GIM_OP_SIGMOID: y[i] = 1.0 / (1.0 + exp(-v)); break;
        case GIM_OP_LEAKY_RELU: y[i] = v > 0 ? v : attr * v; break;
        case GIM_OP_SCALE: y[i] = v * attr; break;
        case GIM_OP_SHIFT: y[i] = v + attr; break;
        default: y[i] = NAN; break;
        }
    }
}

void ref_ew_binary(gim_op op, double attr, const double *a, const double *b, double *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double u = a[i], v = b[i];
        switch (op) {
        case GIM_OP_ADD: y[i] = u + v; break;
        case GIM_OP_SUB: y[i] = u - v; break;
        case GIM_OP_MUL: y[i] = u * v; break;
        case GIM_OP_RELU_BWD: y[i] = v > 0 ? u : 0; break;             /* d relu = [y > 0] */
        case GIM_OP_TANH_BWD: y[i] = u * (1 - v * v); break;            /* d tanh = 1 - tanh² */
        case GIM_OP_SIGMOID_BWD: y[i] = u * v * (1 - v); break;         /* d σ = σ (1 - σ) */
        case GIM_OP_LEAKY_RELU_BWD: y[i] = v > 0 ? u : attr * u; break;
        default: y[i] = NAN; break;
        }
    }
}

void ref_spatial_mean(const double *x, double *y, int64_t outer, int64_t hw) {
    for (int64_t o = 0; o < outer; o++) {
        double s = 0;
        for (int64_t k = 0; k < hw; k++) s += x[o * hw + k];
        y[o] = s / (double)hw;
    }
}

void ref_mean(const double *x, double *y, int64_t outer, int64_t len, int64_t inner) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double s = 0;
            for (int64_t k = 0; k < len; k++) s += x[(o * len + k) * inner + i];
            y[o * inner + i] = s / (double)len;
        }
}

void ref_broadcast(const double *b, double *y, int64_t outer, int64_t len, int64_t inner) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < len; k++)
            for (int64_t i = 0; i < inner; i++) y[(o * len + k) * inner + i] = b[k];
}

void ref_transpose(const double *x, double *y, const int64_t *d, int r, int a, int b) {
    int64_t n = 1, stride[GIM_MAX_RANK], ystride[GIM_MAX_RANK], yd[GIM_MAX_RANK];
    for (int i = 0; i < r; i++) yd[i] = d[i];
    yd[a] = d[b];
    yd[b] = d[a];
    for (int i = r - 1; i >= 0; i--) {
        stride[i] = n;
        n *= d[i];
    }
    int64_t m = 1;
    for (int i = r - 1; i >= 0; i--) {
        ystride[i] = m;
        m *= yd[i];
    }
    /* For each x index (multi-index idx), y at idx with a and b swapped. */
    for (int64_t f = 0; f < n; f++) {
        int64_t rem = f, yo = 0;
        for (int i = 0; i < r; i++) {
            int64_t idx = rem / stride[i];
            rem %= stride[i];
            int j = i == a ? b : i == b ? a : i;
            yo += idx * ystride[j];
        }
        y[yo] = x[f];
    }
}
