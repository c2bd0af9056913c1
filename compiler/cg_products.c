/* The products a compiled step executes: the multiply-adds (counted 2 FLOPs
 * each) of its matrix and dot products, as the generated code runs them.
 *
 * The cost model (cost.c) counts what a model asks for: a convolution by the
 * direct method, every op with weights at three times its forward. The code
 * does something else: a 3×3 convolution runs as Winograd products (36 per 16
 * outputs under F(4×4), 16 per 4 under F(2×2)) or as one dense product on a
 * tiny image, a padded forward with few outputs skips the taps outside the
 * image, an input behind a gradient_block needs no data gradient, and
 * InfoNCE predicts at every position, targets or not. Dividing this count by
 * CPU time measures how near the products run to the hardware's rate, which
 * the cost model's effective rate cannot (it can pass SGEMM's).
 *
 * Only products count: transforms, gathers and elementwise arithmetic are
 * the overhead this number is there to expose. */
#include "cg.h"

/* Kernel taps of output o (along one axis) that land inside the image. */
static int64_t taps_inside(int64_t o, int64_t s, int64_t p, int64_t k, int64_t n) {
    int64_t t = 0;
    for (int64_t i = 0; i < k; i++) t += o * s - p + i >= 0 && o * s - p + i < n;
    return t;
}

/* Convolutions: per the path cg_conv takes (dense, then Winograd, then the
 * forward by output position over the taps inside the image, then im2col or
 * the direct 1×1 product, which multiply alike). The data gradient
 * multiplies as the forward does, and so does the weight gradient. */
static double conv_products(const gim_node *n) {
    cg_conv_dims d;
    if (!cg_conv_dims_of(n, &d)) return 0;
    double B = (double)gim_shape_numel(cg_conv_x_shape(n)) / (double)(d.C * d.H * d.W);
    if (cg_conv_dense_applies(n)) return 2.0 * B * (double)(d.C * d.H * d.W) * (double)(d.O * d.Ho * d.Wo);
    int m = cg_winograd_tile(n);
    if (m > 0) {
        double tiles = (double)((d.H + m - 1) / m) * (double)((d.W + m - 1) / m);
        return 2.0 * B * tiles * (double)((m + 2) * (m + 2)) * (double)(d.C * d.O);
    }
    if (cg_conv_window_applies(n)) {
        double taps = 0;
        for (int64_t oh = 0; oh < d.Ho; oh++)
            for (int64_t ow = 0; ow < d.Wo; ow++)
                taps += (double)(taps_inside(oh, d.sh, d.ph, d.kh, d.H) * taps_inside(ow, d.sw, d.pw, d.kw, d.W));
        return 2.0 * B * (double)(d.O * d.C) * taps;
    }
    return 2.0 * B * (double)(d.O * d.Ho * d.Wo) * (double)(d.C * d.kh * d.kw);
}

/* linear and its gradients: rows × in × out, each */
static double linear_products(const gim_node *n) {
    const gim_node *x = n->op == GIM_OP_LINEAR_BWD_WEIGHT ? n->in[1] : n->op == GIM_OP_LINEAR ? n->in[0] : n;
    const gim_node *y = n->op == GIM_OP_LINEAR ? n : n->in[0];
    const gim_shape *xs = &x->shape, *ys = &y->shape;
    if (!xs->rank || !ys->rank) return 0;
    double in = (double)xs->d[xs->rank - 1], out = (double)ys->d[ys->rank - 1];
    return 2.0 * ((double)gim_shape_numel(xs) / in) * in * out;
}

/* gru: the input projection over all steps and the recurrence's hidden
 * projection, 3H outputs each; its backward twice that (the data and the
 * weight gradient of both). */
static double gru_products(const gim_node *x, int64_t H, double times) {
    const gim_shape *s = &x->shape;
    if (s->rank < 2) return 0;
    double C = (double)s->d[s->rank - 1], rows = (double)gim_shape_numel(s) / C;
    return times * 2.0 * rows * 3.0 * (double)H * (C + (double)H);
}

/* InfoNCE: the predictions c Wᵀ at every position (a chunk's product covers
 * all its rows), and per position and step with a target one dot product per
 * candidate. The backward pass (which also yields the loss) repeats the
 * predictions, adds dc and dW, and two more passes over the candidates:
 * dpred = Σ g z and the scatter into dz. */
static double infonce_products(const gim_node *n, bool bwd) {
    const gim_shape *z = &n->in[0]->shape, *cx = &n->in[1]->shape;
    if (z->rank != 3 && z->rank != 4) return 0;
    double Cz = (double)z->d[z->rank - 1], Cc = (double)cx->d[cx->rank - 1];
    int64_t K = gim_attr_i(n, 0), len = z->d[1];
    double per_row = z->rank == 4 ? (double)(z->d[0] * z->d[2]) : (double)z->d[0];
    double P = (double)gim_shape_numel(z) / Cz, targets = 0;
    for (int64_t k = 1; k <= K && k < len; k++) targets += per_row * (double)(len - k);
    double cand = 2.0 * Cz * (double)(gim_attr_i(n, 1) + 1) * targets;
    double pred = 2.0 * P * Cc * (double)K * Cz;
    return bwd ? 3.0 * pred + 3.0 * cand : pred + cand;
}

double cg_node_products(const gim_node *n) {
    switch (n->op) {
    case GIM_OP_CONV2D: case GIM_OP_CONV2D_BWD_DATA: case GIM_OP_CONV2D_BWD_WEIGHT:
    case GIM_OP_CONV1D: case GIM_OP_CONV1D_BWD_DATA: case GIM_OP_CONV1D_BWD_WEIGHT:
        return conv_products(n);
    case GIM_OP_LINEAR: case GIM_OP_LINEAR_BWD_DATA: case GIM_OP_LINEAR_BWD_WEIGHT:
        return linear_products(n);
    case GIM_OP_GRU: return gru_products(n->in[0], gim_attr_i(n, 0), 1.0);
    case GIM_OP_GRU_BWD: return gru_products(n->in[1], gim_attr_i(n, 0), 2.0);
    case GIM_OP_INFONCE: return infonce_products(n, false);
    case GIM_OP_INFONCE_BWD: return infonce_products(n, true);
    default: return 0;
    }
}
