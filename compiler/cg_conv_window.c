/* Code generator: the forward pass of 2-d convolutions with few output
 * positions per image (the canonical model's stride-2 layers: 4×4 and 2×2
 * outputs), lowered by output position rather than by im2col.
 *
 * With padding, some kernel taps of an edge output fall outside the image:
 * im2col multiplies those zeros (a third of the products of a 3×3 pad-1
 * stride-2 layer on 8×8 or 4×4 images), and its GEMMs are Ho·Wo columns per
 * image. Here each output position p = (oh, ow) sees a rectangle of taps,
 * kernel rows [i0, i1) and columns [j0, j1) that land inside the image.
 * Positions with the same rectangle form a class (top, interior and bottom
 * rows by left, interior and right columns for a 3×3 kernel); a class is one
 * GEMM over a chunk of nimg images:
 *
 *     X_c [n_c·nimg, C·h_c·w_c]   row (p, b): image b's taps for p, valid ones only
 *     W_c [O, C·h_c·w_c]          w restricted to the class's taps (once per call)
 *     Y_c = X_c · W_cᵀ            [n_c·nimg, O]
 *     y[b, o, p] = Y_c[(p, b), o] + bias[o]         (then the fused ReLU, if any)
 *
 * so only real products are computed, in GEMMs O columns wide and n_c·nimg
 * rows tall. The chunks run over the pool, each part with its own scratch
 * slice after the shared W_c; every output element is written once by one
 * part, so the bits do not depend on the thread count. The gradients stay
 * with im2col (cg_conv.c), which checks cg_conv_window_applies first. */
#include "cg.h"

/* Off switch, the largest Ho·Wo taken, and the chunk's scratch in floats:
 * variables so that test_op_conv --bench can compare. */
int cg_conv_window = 1;
int64_t cg_conv_window_pixels = 16;
int64_t cg_conv_window_cap = (int64_t)1 << 18;

#define WIN_MAX_POS 64

typedef struct win_class {
    int64_t i0, i1, j0, j1;   /* the taps: kernel rows [i0, i1), columns [j0, j1) */
    int64_t K;                /* C·(i1 − i0)·(j1 − j0) */
    int64_t npos;             /* positions of the class */
    int64_t w_off;            /* W_c in the shared scratch */
} win_class;

typedef struct win_geo {
    int64_t B, C, H, W, O, k, s, p, Ho, Wo, HoWo;   /* square kernel k, stride s, pad p */
    int n_classes;
    int pos_class[WIN_MAX_POS], pos_index[WIN_MAX_POS];
    win_class cl[WIN_MAX_POS];
    int64_t w_floats;         /* Σ_c O·K_c */
    int64_t per_img;          /* Σ_p K_p + Ho·Wo·O: X and Y of one image */
    int64_t nimg, chunks, part_floats;
} win_geo;

/* Kernel offsets t in [lo, hi) whose input o·stride − pad + t lies in [0, n). */
static void win_taps(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t n, int64_t *lo, int64_t *hi) {
    int64_t at = o * stride - pad;
    *lo = at < 0 ? -at : 0;
    *hi = n - at < k ? n - at : k;
    if (*hi < *lo) *hi = *lo;
}

static bool win_geometry(const gim_node *n, win_geo *g) {
    if (!cg_conv_window || n->op != GIM_OP_CONV2D || n->n_in < 2) return false;
    const gim_shape *xs = &n->in[0]->shape, *ws = &n->in[1]->shape;
    if (xs->rank < 3 || ws->rank != 4) return false;
    int64_t k = gim_attr_i(n, 1), s = gim_attr_i(n, 2), p = gim_attr_i(n, 3);
    if (s <= 0) s = 1;
    g->O = gim_attr_i(n, 0);
    g->C = xs->d[xs->rank - 3];
    g->H = xs->d[xs->rank - 2];
    g->W = xs->d[xs->rank - 1];
    g->k = k;
    g->s = s;
    g->p = p;
    if (g->C <= 0 || g->O <= 0 || k <= 0 || p < 0 || g->H <= 0 || g->W <= 0) return false;
    if (ws->d[0] != g->O || ws->d[1] != g->C || ws->d[2] != k || ws->d[3] != k) return false;
    if (g->H + 2 * p < k || g->W + 2 * p < k) return false;
    g->Ho = (g->H + 2 * p - k) / s + 1;
    g->Wo = (g->W + 2 * p - k) / s + 1;
    g->HoWo = g->Ho * g->Wo;
    if (g->HoWo > cg_conv_window_pixels || g->HoWo > WIN_MAX_POS) return false;
    g->B = gim_shape_numel(xs) / (g->C * g->H * g->W);
    if (g->B < 1 || gim_shape_numel(&n->shape) != g->B * g->O * g->HoWo) return false;
    g->n_classes = 0;
    g->w_floats = 0;
    int64_t taps = 0;
    for (int64_t oh = 0; oh < g->Ho; oh++)
        for (int64_t ow = 0; ow < g->Wo; ow++) {
            win_class want;
            win_taps(oh, s, p, k, g->H, &want.i0, &want.i1);
            win_taps(ow, s, p, k, g->W, &want.j0, &want.j1);
            /* an output whose window misses the image is only its bias:
             * leave such layers to im2col */
            if (want.i0 == want.i1 || want.j0 == want.j1) return false;
            int cl = 0;
            while (cl < g->n_classes && !(g->cl[cl].i0 == want.i0 && g->cl[cl].i1 == want.i1 &&
                                          g->cl[cl].j0 == want.j0 && g->cl[cl].j1 == want.j1))
                cl++;
            if (cl == g->n_classes) {
                want.K = g->C * (want.i1 - want.i0) * (want.j1 - want.j0);
                want.npos = 0;
                want.w_off = g->w_floats;
                g->w_floats += cg_round16(g->O * want.K);
                g->cl[g->n_classes++] = want;
            }
            int64_t pos = oh * g->Wo + ow;
            g->pos_class[pos] = cl;
            g->pos_index[pos] = (int)g->cl[cl].npos++;
            taps += g->cl[cl].K;
        }
    g->per_img = taps + g->HoWo * g->O;
    g->nimg = cg_conv_window_cap / g->per_img;
    if (g->nimg < 1) g->nimg = 1;
    if (g->nimg > g->B) g->nimg = g->B;
    g->chunks = (g->B + g->nimg - 1) / g->nimg;
    g->part_floats = cg_round16(g->nimg * g->per_img);
    return true;
}

bool cg_conv_window_applies(const gim_node *n) {
    win_geo g;
    return win_geometry(n, &g);
}

int64_t cg_conv_window_scratch_floats(const gim_node *n) {
    win_geo g;
    if (!win_geometry(n, &g)) return 0;
    return g.w_floats + cg_par_parts(g.chunks) * g.part_floats;
}

/* W_c[o, (ch·h + i − i0)·w + j − j0] = w[o, ch, i, j] for every class;
 * output channels over the pool (each part writes its own rows). */
static void gather_weights(cg_ctx *c, const win_geo *g, LLVMValueRef w, LLVMValueRef Wc) {
    LLVMValueRef v[2] = {w, Wc};
    cg_par p = cg_par_begin(c, "convwin.w", v, 2);
    w = v[0], Wc = v[1];
    cg_loop lo = cg_for_begin(c, p.begin, p.end, "o");
    for (int cl = 0; cl < g->n_classes; cl++) {
        const win_class *k = &g->cl[cl];
        int64_t h = k->i1 - k->i0, wd = k->j1 - k->j0;
        cg_loop lc = cg_for(c, g->C, "ch");
        LLVMValueRef src = cg_mulk(c, cg_mad(c, lo.iv, g->C, lc.iv), g->k * g->k);
        LLVMValueRef dst = cg_addk(c, cg_add(c, cg_mulk(c, lo.iv, k->K), cg_mulk(c, lc.iv, h * wd)), k->w_off);
        for (int64_t i = k->i0; i < k->i1; i++)
            for (int64_t j = k->j0; j < k->j1; j++)
                cg_storef(c, Wc, cg_addk(c, dst, (i - k->i0) * wd + j - k->j0),
                          cg_loadf(c, w, cg_addk(c, src, i * g->k + j)));
        cg_for_end(c, &lc);
    }
    cg_for_end(c, &lo);
    cg_par_end(c, &p, g->O);
}

/* Where class cl's X_c and Y_c start in a part's slice, for a chunk of nimg. */
static int64_t x_off(const win_geo *g, int cl, int64_t nimg) {
    int64_t at = 0;
    for (int i = 0; i < cl; i++) at += g->cl[i].npos * nimg * g->cl[i].K;
    return at;
}

static int64_t y_off(const win_geo *g, int cl, int64_t nimg) {
    int64_t at = x_off(g, g->n_classes, nimg);
    for (int i = 0; i < cl; i++) at += g->cl[i].npos * nimg * g->O;
    return at;
}

/* One chunk: nimg images from image b0 (an i64 value). */
static void win_chunk(cg_ctx *c, const win_geo *g, LLVMValueRef x, LLVMValueRef y, LLVMValueRef Wc,
                      LLVMValueRef bias, bool relu, LLVMValueRef part, LLVMValueRef b0, int64_t nimg) {
    /* X_c rows: for each image and channel, every position's taps */
    {
        cg_loop lb = cg_for(c, nimg, "img");
        cg_loop lc = cg_for(c, g->C, "ch");
        LLVMValueRef xb = cg_mulk(c, cg_mad(c, cg_add(c, b0, lb.iv), g->C, lc.iv), g->H * g->W);
        for (int64_t pos = 0; pos < g->HoWo; pos++) {
            const win_class *k = &g->cl[g->pos_class[pos]];
            int64_t h = k->i1 - k->i0, wd = k->j1 - k->j0;
            int64_t oh = pos / g->Wo, ow = pos % g->Wo;
            /* row (pos_index, b) of X_c, channel ch's taps */
            LLVMValueRef row = cg_mad(c, lb.iv, k->K, cg_mulk(c, lc.iv, h * wd));
            row = cg_addk(c, row, x_off(g, g->pos_class[pos], nimg) + g->pos_index[pos] * nimg * k->K);
            for (int64_t i = k->i0; i < k->i1; i++)
                for (int64_t j = k->j0; j < k->j1; j++) {
                    int64_t ih = oh * g->s - g->p + i, iw = ow * g->s - g->p + j;
                    cg_storef(c, part, cg_addk(c, row, (i - k->i0) * wd + j - k->j0),
                              cg_loadf(c, x, cg_addk(c, xb, ih * g->W + iw)));
                }
        }
        cg_for_end(c, &lc);
        cg_for_end(c, &lb);
    }
    /* Y_c = X_c · W_cᵀ, a GEMM a class */
    for (int cl = 0; cl < g->n_classes; cl++) {
        const win_class *k = &g->cl[cl];
        cg_sgemm(c, false, true, k->npos * nimg, g->O, k->K, 1.0f, cg_gep(c, part, cg_i64(c, x_off(g, cl, nimg))),
                 k->K, cg_gep(c, Wc, cg_i64(c, k->w_off)), k->K, 0.0f,
                 cg_gep(c, part, cg_i64(c, y_off(g, cl, nimg))), g->O);
    }
    /* y[b, o, pos] = Y_c[(pos_index, b), o] (+ bias[o]; ReLU) */
    cg_loop lb = cg_for(c, nimg, "img");
    cg_loop lo = cg_for(c, g->O, "o");
    LLVMValueRef bo = bias ? cg_loadf(c, bias, lo.iv) : NULL;
    LLVMValueRef yb = cg_mulk(c, cg_mad(c, cg_add(c, b0, lb.iv), g->O, lo.iv), g->HoWo);
    for (int64_t pos = 0; pos < g->HoWo; pos++) {
        int cl = g->pos_class[pos];
        LLVMValueRef src = cg_mad(c, lb.iv, g->O, lo.iv);
        src = cg_addk(c, src, y_off(g, cl, nimg) + g->pos_index[pos] * nimg * g->O);
        LLVMValueRef v = cg_loadf(c, part, src);
        if (bo) v = LLVMBuildFAdd(c->b, v, bo, "yb");
        if (relu) v = cg_keep_positive(c, v, v);
        cg_storef(c, y, cg_addk(c, yb, pos), v);
    }
    cg_for_end(c, &lo);
    cg_for_end(c, &lb);
}

int cg_conv_window_forward(cg_ctx *c, const gim_node *n, LLVMValueRef scratch) {
    win_geo g;
    if (!win_geometry(n, &g)) return cg_fail(c, n, "internal: %s is not a narrow conv2d", gim_op_name(n->op));
    LLVMValueRef x = cg_buf(c, n->in[0]), w = cg_buf(c, n->in[1]), y = cg_buf(c, n);
    LLVMValueRef bias = n->n_in > 2 ? cg_buf(c, n->in[2]) : NULL;
    bool relu = n->attr[GIM_FUSED_RELU] != 0;
    gather_weights(c, &g, w, scratch);
    int64_t full = g.B / g.nimg, rest = g.B % g.nimg;
    LLVMValueRef v[4] = {x, y, scratch, bias ? bias : x};
    cg_par p = cg_par_begin(c, "convwin", v, 4);
    x = v[0], y = v[1];
    LLVMValueRef Wc = v[2], b = bias ? v[3] : NULL;
    LLVMValueRef part = cg_gep(c, Wc, cg_addk(c, cg_mulk(c, p.part, g.part_floats), g.w_floats));
    LLVMValueRef hi = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, p.end, cg_i64(c, full), ""), p.end,
                                cg_i64(c, full));
    cg_loop l = cg_for_begin(c, p.begin, hi, "chunk");
    win_chunk(c, &g, x, y, Wc, b, relu, part, cg_mulk(c, l.iv, g.nimg), g.nimg);
    cg_for_end(c, &l);
    if (rest) {
        cg_if last = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntEQ, p.end, cg_i64(c, g.chunks), ""), "rest");
        win_chunk(c, &g, x, y, Wc, b, relu, part, cg_i64(c, full * g.nimg), rest);
        cg_if_end(c, &last);
    }
    cg_par_end(c, &p, g.chunks);
    return 0;
}
