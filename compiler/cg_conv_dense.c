/* Code generator: convolutions in which every output sees every input pixel
 * (the canonical model's last layer, 3×3 pad 1 on 2×2 images; any kernel on
 * 1×1 images), forward and both gradients, as one dense layer.
 *
 * When for every output position the kernel window covers the whole image
 * on both axes (o·s − pad ≤ 0 and o·s − pad + k − 1 ≥ H − 1 for every
 * output o), each (input pixel p, output position q) pair meets exactly one
 * kernel tap, tap(p, q). With x viewed as [B, C·H·W] and y as [B, O·Ho·Wo]
 * (their NCHW layouts, no copies) the convolution is then
 *
 *     y  = x · E + bias       E [C·H·W, O·Ho·Wo],  E[(c, p), (o, q)] = w[o, c, tap(p, q)]
 *     dx = dy · Eᵀ            (then the fused ReLU gradient's mask, if any)
 *     dE = xᵀ · dy,           dw[o, c, t] = Σ_{(p, q): tap(p, q) = t} dE[(c, p), (o, q)]
 *
 * E holds exactly the products with real pixels: as many multiplications as
 * Winograd F(2×2, 3×3) on a 2×2 image (16 per channel pair), against the 36
 * of im2col and far fewer than Winograd's 16 on 1×1 or 1×2 images, in one
 * large GEMM (K = C·H·W) instead of 16 small ones and their transforms.
 *
 * E (or dE) lives in the node's scratch. The forward and data gradient
 * expand E once per call (output channels over the pool), then cut the B
 * rows into items over the pool: each item is one GEMM over its rows,
 * followed by the bias and fused ReLU (or the mask) on those rows while they
 * are in cache. The weight gradient cuts the output channels instead: an
 * item computes its columns of dE over all B images (one GEMM, K = B) and
 * folds them into its rows of dw, so there are no partial sums to add. Every
 * output element is computed by one item whose shape is fixed by the node's
 * shapes alone, so the bits do not depend on the thread count. conv1d is the
 * same with H = 1 and a one-row kernel. */
#include "cg.h"

/* Off switch, the largest E taken (floats), rows per item of the forward
 * and data gradient, and the weight gradient's items: variables so
 * test_op_conv --bench can compare. */
int cg_conv_dense = 1;
int64_t cg_conv_dense_cap = (int64_t)1 << 22;
int64_t cg_conv_dense_rows = 288;
int64_t cg_conv_dense_wgrad_items = 4;

/* (pixel, output position) pairs unrolled by the fold and the expansion */
#define DENSE_MAX_PAIRS 256

typedef struct dense_geo {
    union {
        struct { CG_CONV_DIMS; };
        cg_conv_dims dims;
    };
    int64_t B;
    int64_t HW, P, K, N;          /* H·W, Ho·Wo, C·H·W, O·Ho·Wo */
    int64_t items;                /* parallel items: row blocks, or output channels (weight gradient) */
    int tap[DENSE_MAX_PAIRS];     /* tap(p, q) at p·P + q, i·kw + j */
} dense_geo;

static bool dense_geometry(const gim_node *n, dense_geo *g) {
    if (!cg_conv_dense) return false;
    bool fwd = n->op == GIM_OP_CONV2D || n->op == GIM_OP_CONV1D;
    bool data = n->op == GIM_OP_CONV2D_BWD_DATA || n->op == GIM_OP_CONV1D_BWD_DATA;
    bool wgrad = n->op == GIM_OP_CONV2D_BWD_WEIGHT || n->op == GIM_OP_CONV1D_BWD_WEIGHT;
    if (!fwd && !data && !wgrad) return false;
    if (n->n_in < 2) return false;
    bool one_d = cg_conv_is_1d(n->op);
    const gim_shape *xs = fwd ? &n->in[0]->shape : data ? &n->shape : &n->in[1]->shape;
    const gim_shape *ws = wgrad ? &n->shape : &n->in[1]->shape;
    const gim_shape *ys = fwd ? &n->shape : &n->in[0]->shape;
    if (ws->rank != (one_d ? 3 : 4) || !cg_conv_dims_of(n, &g->dims)) return false;
    if (ws->d[0] != g->O || ws->d[1] != g->C || ws->d[2] != g->kw || (!one_d && ws->d[3] != g->kh)) return false;
    /* every window covers the image: the last output's starts at or before
     * pixel 0, and the first output's reaches the last pixel */
    if ((g->Ho - 1) * g->sh > g->ph || (g->Wo - 1) * g->sw > g->pw) return false;
    if (g->kh - g->ph < g->H || g->kw - g->pw < g->W) return false;
    g->HW = g->H * g->W;
    g->P = g->Ho * g->Wo;
    if (g->HW * g->P > DENSE_MAX_PAIRS) return false;
    g->K = g->C * g->HW;
    g->N = g->O * g->P;
    if (g->K * g->N > cg_conv_dense_cap) return false;
    g->B = gim_shape_numel(xs) / g->K;
    if (g->B < 1 || gim_shape_numel(xs) != g->B * g->K || gim_shape_numel(ys) != g->B * g->N) return false;
    for (int64_t pi = 0; pi < g->HW; pi++)
        for (int64_t q = 0; q < g->P; q++) {
            int64_t i = pi / g->W - (q / g->Wo * g->sh - g->ph), j = pi % g->W - (q % g->Wo * g->sw - g->pw);
            g->tap[pi * g->P + q] = (int)(i * g->kw + j);
        }
    if (wgrad) {
        g->items = g->O < cg_conv_dense_wgrad_items ? g->O : cg_conv_dense_wgrad_items;
        if (g->items < 1) g->items = 1;
    } else {
        int64_t rows = cg_conv_dense_rows > 0 ? cg_conv_dense_rows : 1;
        g->items = g->B / rows;
        /* a small batch still spreads over the pool (one item would run on
         * one thread): up to 4 items of at least 32 rows */
        int64_t few = g->B / 32 < 4 ? g->B / 32 : 4;
        if (g->items < few) g->items = few;
        if (g->items < 1) g->items = 1;
    }
    return true;
}

bool cg_conv_dense_applies(const gim_node *n) {
    dense_geo g;
    return dense_geometry(n, &g);
}

int64_t cg_conv_dense_scratch_floats(const gim_node *n) {
    dense_geo g;
    return dense_geometry(n, &g) ? g.K * g.N : 0;
}

/* E[(c·HW + p), o·P + q] = w[o, c, tap(p, q)], output channels over the pool
 * (a part writes its own columns). */
static void dense_expand(cg_ctx *c, const dense_geo *g, LLVMValueRef w, LLVMValueRef E) {
    LLVMValueRef v[2] = {w, E};
    cg_par p = cg_par_begin(c, "convdense.e", v, 2);
    w = v[0], E = v[1];
    cg_loop lo = cg_for_begin(c, p.begin, p.end, "o");
    cg_loop lc = cg_for(c, g->C, "ch");
    LLVMValueRef src = cg_mulk(c, cg_mad(c, lo.iv, g->C, lc.iv), g->kh * g->kw);
    LLVMValueRef dst = cg_add(c, cg_mulk(c, lc.iv, g->HW * g->N), cg_mulk(c, lo.iv, g->P));
    for (int64_t pi = 0; pi < g->HW; pi++)
        for (int64_t q = 0; q < g->P; q++)
            cg_storef(c, E, cg_addk(c, dst, pi * g->N + q), cg_loadf(c, w, cg_addk(c, src, g->tap[pi * g->P + q])));
    cg_for_end(c, &lc);
    cg_for_end(c, &lo);
    cg_par_end(c, &p, g->O);
}

/* The first of n rows (images, or output channels) of item t of the cut of
 * n into g->items. */
static LLVMValueRef item_row(cg_ctx *c, const dense_geo *g, LLVMValueRef t, int64_t n) {
    return LLVMBuildSDiv(c->b, cg_mulk(c, t, n), cg_i64(c, g->items), "row");
}

/* Forward (x, w[, bias], fused ReLU) or data gradient (dy, w[, y: the fused
 * ReLU gradient's mask]). */
static int dense_rows(cg_ctx *c, const gim_node *n, const dense_geo *g, LLVMValueRef E) {
    bool data = n->op == GIM_OP_CONV2D_BWD_DATA || n->op == GIM_OP_CONV1D_BWD_DATA;
    bool act = n->attr[GIM_FUSED_RELU] != 0;
    LLVMValueRef a = cg_buf(c, n->in[0]), w = cg_buf(c, n->in[1]), out = cg_buf(c, n);
    LLVMValueRef extra = n->n_in > 2 ? cg_buf(c, n->in[2]) : NULL;
    if (data && act && !extra) return cg_fail(c, n, "internal: fused data gradient without y");
    dense_expand(c, g, w, E);
    LLVMValueRef v[4] = {a, out, E, extra ? extra : a};
    cg_par p = cg_par_begin(c, "convdense", v, 4);
    a = v[0], out = v[1], E = v[2];
    extra = extra ? v[3] : NULL;
    LLVMValueRef r0 = item_row(c, g, p.begin, g->B), r1 = item_row(c, g, p.end, g->B);
    LLVMValueRef rows = LLVMBuildNSWSub(c->b, r1, r0, "rows");
    int64_t in_w = data ? g->N : g->K, out_w = data ? g->K : g->N;
    LLVMValueRef A = cg_gep(c, a, cg_mulk(c, r0, in_w)), Y = cg_gep(c, out, cg_mulk(c, r0, out_w));
    if (data) /* dx = dy · Eᵀ */
        cg_sgemm_v(c, false, true, rows, cg_i64(c, g->K), cg_i64(c, g->N), 1.0f, A, g->N, E, g->N, 0.0f, Y, g->K);
    else /* y = x · E */
        cg_sgemm_v(c, false, false, rows, cg_i64(c, g->N), cg_i64(c, g->K), 1.0f, A, g->K, E, g->N, 0.0f, Y, g->N);
    /* the epilogue on the item's rows, still in cache */
    if (data && act) {
        cg_loop l = cg_for_begin(c, cg_mulk(c, r0, g->K), cg_mulk(c, r1, g->K), "i");
        cg_storef(c, out, l.iv, cg_keep_positive(c, cg_loadf(c, extra, l.iv), cg_loadf(c, out, l.iv)));
        cg_for_end(c, &l);
    } else if (!data && (extra || act)) {
        cg_loop lr = cg_for_begin(c, r0, r1, "b");
        cg_loop lo = cg_for(c, g->O, "o");
        LLVMValueRef bo = extra ? cg_loadf(c, extra, lo.iv) : NULL;
        LLVMValueRef at = cg_mulk(c, cg_mad(c, lr.iv, g->O, lo.iv), g->P);
        for (int64_t q = 0; q < g->P; q++) {
            LLVMValueRef i = cg_addk(c, at, q), yv = cg_loadf(c, out, i);
            if (bo) yv = LLVMBuildFAdd(c->b, yv, bo, "yb");
            if (act) yv = cg_keep_positive(c, yv, yv);
            cg_storef(c, out, i, yv);
        }
        cg_for_end(c, &lo);
        cg_for_end(c, &lr);
    }
    cg_par_end(c, &p, g->items);
    return 0;
}

/* Weight gradient (dy, x): an item computes dE's columns of its output
 * channels [o0, o1) over all images and folds them into dw[o0, o1). */
static int dense_wgrad(cg_ctx *c, const gim_node *n, const dense_geo *g, LLVMValueRef dE) {
    LLVMValueRef dy = cg_buf(c, n->in[0]), x = cg_buf(c, n->in[1]), dw = cg_buf(c, n);
    LLVMValueRef v[4] = {dy, x, dw, dE};
    cg_par p = cg_par_begin(c, "convdense.dw", v, 4);
    dy = v[0], x = v[1], dw = v[2], dE = v[3];
    /* dE[:, o0·P, o1·P) = xᵀ [K, B] · dy[:, o0·P, o1·P) */
    LLVMValueRef o0 = item_row(c, g, p.begin, g->O), o1 = item_row(c, g, p.end, g->O);
    LLVMValueRef c0 = cg_mulk(c, o0, g->P);
    LLVMValueRef cols = cg_mulk(c, LLVMBuildNSWSub(c->b, o1, o0, ""), g->P);
    cg_sgemm_v(c, true, false, cg_i64(c, g->K), cols, cg_i64(c, g->B), 1.0f, x, g->K, cg_gep(c, dy, c0), g->N, 0.0f,
               cg_gep(c, dE, c0), g->N);
    /* dw[o, ch, t] = Σ_{(p, q): tap(p, q) = t} dE[ch·HW + p, o·P + q], pairs in (p, q) order */
    int64_t taps = g->kh * g->kw;
    cg_loop lo = cg_for_begin(c, o0, o1, "o");
    cg_loop lc = cg_for(c, g->C, "ch");
    LLVMValueRef src = cg_add(c, cg_mulk(c, lc.iv, g->HW * g->N), cg_mulk(c, lo.iv, g->P));
    LLVMValueRef dst = cg_mulk(c, cg_mad(c, lo.iv, g->C, lc.iv), taps);
    for (int64_t t = 0; t < taps; t++) {
        LLVMValueRef sum = NULL;
        for (int64_t pi = 0; pi < g->HW; pi++)
            for (int64_t q = 0; q < g->P; q++) {
                if (g->tap[pi * g->P + q] != t) continue;
                LLVMValueRef e = cg_loadf(c, dE, cg_addk(c, src, pi * g->N + q));
                sum = sum ? LLVMBuildFAdd(c->b, sum, e, "dw") : e;
            }
        cg_storef(c, dw, cg_addk(c, dst, t), sum ? sum : cg_f32(c, 0.0f));
    }
    cg_for_end(c, &lc);
    cg_for_end(c, &lo);
    cg_par_end(c, &p, g->items);
    return 0;
}

int cg_conv_dense_emit(cg_ctx *c, const gim_node *n, LLVMValueRef scratch) {
    dense_geo g;
    if (!dense_geometry(n, &g))
        return cg_fail(c, n, "internal: %s is not a convolution whose windows cover the image", gim_op_name(n->op));
    if (n->op == GIM_OP_CONV2D_BWD_WEIGHT || n->op == GIM_OP_CONV1D_BWD_WEIGHT) return dense_wgrad(c, n, &g, scratch);
    return dense_rows(c, n, &g, scratch);
}
