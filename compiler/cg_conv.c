/* Code generators: convolutions, patches, pools, linear layers (forward and
 * backward).
 *
 * Convolutions are lowered to SGEMMs over an im2col matrix, per chunk of
 * nimg images:
 *
 *     cols [K, N]   K = C·kh·kw, N = nimg·Ho·Wo   (column b·Ho·Wo + p of image b)
 *     Y    [O, N] = W [O, K] · cols                 forward
 *     dcols[K, N] = Wᵀ · dYᵗ,  dx = col2im(dcols)   backward data
 *     dWᵀ  [K, O] += cols · dYᵗᵀ                     backward weight (then dw = (dWᵀ)ᵀ)
 *
 * where dYᵗ [O, N] is dy [nimg, O, Ho·Wo] with its first two axes swapped
 * (a copy of contiguous rows). A chunk of one image needs no transposes (Y
 * and dY are already [O, Ho·Wo]) and its cols stay in cache; wider chunks
 * make fewer, larger GEMMs at the price of the transposes. Measured on the
 * canonical model (`test_op_conv --bench`), one image per GEMM is best for
 * the forward and data gradient and chunks of ~128 KB for the weight
 * gradient (see conv_geometry). The chunk size is a compile-time constant; a last,
 * partial chunk is emitted separately. A 1×1 stride-1 unpadded convolution
 * over large images needs no im2col at all.
 *
 * Scratch (cols and the transposed chunk): the planner's per-node scratch
 * (cg_scratch, sized by the cg_conv_scratch table). When none was planned
 * (hand-built graphs), one zero-initialised global per module
 * (`gim_conv_scratch_m<N>`) sized for the module's largest need; that
 * fallback assumes one module's functions never run concurrently.
 *
 * The chunks run over the runtime's thread pool (cg_par_begin): the fixed cut
 * of the chunks into cg_par_parts(chunks) parts, each part with its own slice
 * of the scratch (the planner reserves a slice per part) and, for the weight
 * gradient, its own dWᵀ, summed into dw in part order afterwards, so the
 * result does not depend on the thread count. Each part's GEMMs run on one
 * thread (OpenBLAS is single-threaded; see runtime/pool.c). Measured on the
 * canonical model (2 cores): the conv ops' CPU time is unchanged and the
 * calling thread does about half of it.
 *
 * conv1d is conv2d with H = 1, kh = 1. */
#include <stdint.h>
#include <stdio.h>

#include "cg.h"

/* Floats of scratch a chunk may use; bounds the batched GEMM's width.
 * Variables (not in any header) so a benchmark can compare policies: a cap
 * of 1 forces one image per GEMM; cg_conv_wide_all batches every conv op
 * rather than only the weight gradient (see conv_geometry). 128 KB: the
 * canonical stride-2 layers' weight gradients ran 10-12% faster than with
 * 1 MB chunks (test_op_conv --bench; their cols then stay in L2). */
int64_t cg_conv_chunk_cap = (int64_t)1 << 15;
int cg_conv_wide_all = 0;
/* A 2-d forward or data gradient with at most cg_conv_narrow_pixels output
 * positions per image batches its images too, in chunks of about
 * cg_conv_narrow_cap floats of scratch: its per-image GEMMs would be only
 * Ho·Wo columns wide (the canonical stride-2 layers: 16 and 4), where
 * OpenBLAS runs at a fraction of its rate. 0: never (one GEMM per image).
 * Measured: see conv_geometry. */
int64_t cg_conv_narrow_pixels = 16;
/* A 2-d forward with K below this batches its images as the narrow ones do
 * (0: never). */
int64_t cg_conv_short_k = 32;
int64_t cg_conv_narrow_cap = (int64_t)1 << 15;
/* The weight gradient computed transposed, dWᵀ [K, O] = cols · dYᵗᵀ, into
 * scratch, then transposed into dw: OpenBLAS runs the taller GEMM (M = K)
 * 2-8% faster on the canonical layers (measured, single thread). */
int cg_conv_wgrad_t = 1;
/* Chunks spread over the runtime's thread pool (0: one loop on the caller). */
int cg_conv_parallel = 1;
#define CONV_SCRATCH_CAP cg_conv_chunk_cap

/* ---- geometry -------------------------------------------------------------- */

typedef struct conv_geo {
    union {
        struct { CG_CONV_DIMS; };
        cg_conv_dims dims;
    };
    int64_t B;                   /* flattened batch */
    int64_t K, HoWo, CHW;        /* C·kh·kw, Ho·Wo, C·H·W */
    int64_t chunk;               /* images per GEMM */
    bool direct;                 /* 1×1, stride 1, no padding, one image per GEMM: no im2col */
} conv_geo;

bool cg_conv_is_1d(gim_op op) {
    return op == GIM_OP_CONV1D || op == GIM_OP_CONV1D_BWD_DATA || op == GIM_OP_CONV1D_BWD_WEIGHT;
}

static bool conv_is_conv(gim_op op) {
    switch (op) {
    case GIM_OP_CONV2D: case GIM_OP_CONV2D_BWD_DATA: case GIM_OP_CONV2D_BWD_WEIGHT:
    case GIM_OP_CONV1D: case GIM_OP_CONV1D_BWD_DATA: case GIM_OP_CONV1D_BWD_WEIGHT:
        return true;
    default:
        return false;
    }
}

/* The tensor whose shape is the convolution's input x: x itself for the
 * forward and weight gradient, the node's own shape (dx) for the data gradient. */
const gim_shape *cg_conv_x_shape(const gim_node *n) {
    switch (n->op) {
    case GIM_OP_CONV2D: case GIM_OP_CONV1D: return &n->in[0]->shape;
    case GIM_OP_CONV2D_BWD_WEIGHT: case GIM_OP_CONV1D_BWD_WEIGHT: return &n->in[1]->shape;
    default: return &n->shape;
    }
}

bool cg_conv_dims_of(const gim_node *n, cg_conv_dims *d) {
    const gim_shape *xs = cg_conv_x_shape(n);
    bool one_d = cg_conv_is_1d(n->op);
    int need = one_d ? 2 : 3;
    if (xs->rank < need) return false;
    int64_t k = gim_attr_i(n, 1), s = gim_attr_i(n, 2), p = gim_attr_i(n, 3);
    if (s <= 0) s = 1;
    d->O = gim_attr_i(n, 0);
    d->C = xs->d[xs->rank - need];
    d->H = one_d ? 1 : xs->d[xs->rank - 2];
    d->W = xs->d[xs->rank - 1];
    d->kh = one_d ? 1 : k;
    d->kw = k;
    d->sh = one_d ? 1 : s;
    d->sw = s;
    d->ph = one_d ? 0 : p;
    d->pw = p;
    if (d->C <= 0 || d->O <= 0 || k <= 0 || p < 0 || d->H <= 0 || d->W <= 0) return false;
    if (d->H + 2 * d->ph < d->kh || d->W + 2 * d->pw < d->kw) return false;
    d->Ho = (d->H + 2 * d->ph - d->kh) / d->sh + 1;
    d->Wo = (d->W + 2 * d->pw - d->kw) / d->sw + 1;
    return true;
}

/* Fills g from n's sizes. Returns false if the shapes cannot be a convolution. */
static bool conv_geometry(const gim_node *n, conv_geo *g) {
    if (!cg_conv_dims_of(n, &g->dims)) return false;
    const gim_shape *xs = cg_conv_x_shape(n);
    g->K = g->C * g->kh * g->kw;
    g->HoWo = g->Ho * g->Wo;
    g->CHW = g->C * g->H * g->W;
    g->B = gim_shape_numel(xs) / g->CHW;
    int64_t per_img = (g->K + g->O) * g->HoWo;
    g->direct = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 &&
                g->HoWo >= 256;
    /* Measured on the canonical model's layers (3x3 on 8x8 patches, B = 1152,
     * see test_op_conv --bench): one GEMM per image is as fast or faster for
     * the forward and data gradient of 8x8 outputs (no transposes; cols stay
     * in cache), while the weight gradient, whose per-image GEMMs have an
     * inner dimension of only Ho·Wo, gains from chunks (of about 128 KB);
     * tiny K loses to the dy copy. The stride-2 layers' forward and data
     * gradient, 16 and 4 columns per image, gain from 128 KB chunks too
     * (single thread: 4x4 outputs 0-9%, 2x2 outputs 2.2-2.4x; 64 KB and
     * 256 KB chunks did worse on the 2x2 layer). Only 2-d: 1-d layers keep
     * one GEMM per sequence. */
    bool narrow = (n->op == GIM_OP_CONV2D || n->op == GIM_OP_CONV2D_BWD_DATA) && g->HoWo <= cg_conv_narrow_pixels;
    /* A 2-d forward with a short K (the first layer of an image model: one
     * channel, K = 9) batches its images too: its per-image GEMM is a few
     * hundred multiplications, less than the call (canonical first layer,
     * 2 threads: 1.5 -> 0.7 ms). */
    narrow = narrow || (n->op == GIM_OP_CONV2D && g->K < cg_conv_short_k);
    bool wide = cg_conv_wide_all || narrow ||
                ((n->op == GIM_OP_CONV2D_BWD_WEIGHT || n->op == GIM_OP_CONV1D_BWD_WEIGHT) && g->K >= 32);
    int64_t cap = narrow && !cg_conv_wide_all ? cg_conv_narrow_cap : CONV_SCRATCH_CAP;
    if (g->direct || !wide || per_img >= cap) g->chunk = 1;
    else g->chunk = cap / per_img;
    if (g->chunk > g->B) g->chunk = g->B;
    if (g->chunk < 1) g->chunk = 1;
    return true;
}

static bool conv_is_wgrad(gim_op op) {
    return op == GIM_OP_CONV2D_BWD_WEIGHT || op == GIM_OP_CONV1D_BWD_WEIGHT;
}

/* Chunks run in parallel over the pool (see cg_conv) unless the convolution
 * is direct (no scratch) or the weight gradient accumulates straight into dw:
 * parts need a scratch slice (and a partial dWᵀ) of their own. */
static bool conv_parallel(const gim_node *n, const conv_geo *g) {
    return cg_conv_parallel && !g->direct && (!conv_is_wgrad(n->op) || cg_conv_wgrad_t);
}

/* Chunks of the op: full ones of g->chunk images, and a last partial one. */
static int64_t conv_items(const conv_geo *g) {
    return g->B / g->chunk + (g->B % g->chunk ? 1 : 0);
}

/* Scratch floats one chunk loop (one part) needs. */
static int64_t conv_part_floats(const gim_node *n, const conv_geo *g) {
    /* A one-image chunk reads and writes y / dy in place: only cols. */
    int64_t f = g->chunk == 1 ? g->K * g->HoWo : g->chunk * (g->K + g->O) * g->HoWo;
    if (cg_conv_wgrad_t && conv_is_wgrad(n->op))
        f += g->K * g->O;   /* dWᵀ, after the chunk's space */
    return cg_round16(f);   /* parts' slices on their own cache lines */
}

/* Scratch floats n's generated code needs (0 for ops without scratch): a
 * slice per part when the chunks run in parallel. */
static int64_t cg_conv_scratch_floats(const gim_node *n) {
    conv_geo g;
    if (cg_conv_dense_applies(n)) return cg_conv_dense_scratch_floats(n);
    if (cg_winograd_applies(n)) return cg_winograd_scratch_floats(n);
    if (cg_conv_window_applies(n)) return cg_conv_window_scratch_floats(n);
    if (!conv_is_conv(n->op) || !conv_geometry(n, &g) || g.direct) return 0;
    int64_t f = conv_part_floats(n, &g);
    if (conv_parallel(n, &g)) f *= cg_par_parts(conv_items(&g));
    return f;
}

static LLVMValueRef conv_scratch(cg_ctx *c, const gim_node *n) {
    LLVMValueRef planned = cg_scratch(c, n);
    if (planned) return planned;
    int64_t need = cg_conv_scratch_floats(n), size = need;
    char name[64];
    if (c->module) {
        snprintf(name, sizeof name, "gim_conv_scratch_m%d", c->module->index + 1);
        for (int pass = 0; pass < 2; pass++) {
            const gim_ptrvec *v = pass ? &c->module->bwd_nodes : &c->module->nodes;
            for (int i = 0; i < v->len; i++) {
                int64_t f = cg_conv_scratch_floats((const gim_node *)v->items[i]);
                if (f > size) size = f;
            }
        }
    } else {
        snprintf(name, sizeof name, "gim_conv_scratch_n%d", n->id);
    }
    LLVMValueRef g = LLVMGetNamedGlobal(c->mod, name);
    if (g) {
        int64_t have = (int64_t)LLVMGetArrayLength(LLVMGlobalGetValueType(g));
        if (have >= need) return g;
        /* Not one of the module's nodes (hand-built graphs): its own scratch. */
        snprintf(name, sizeof name, "gim_conv_scratch_n%d", n->id);
        size = need;
        if ((g = LLVMGetNamedGlobal(c->mod, name))) return g;
    }
    if (size > (int64_t)UINT32_MAX) return NULL;   /* beyond an LLVM array; the caller reports */
    LLVMTypeRef t = LLVMArrayType(c->f32, (unsigned)size);
    g = LLVMAddGlobal(c->mod, t, name);
    LLVMSetInitializer(g, LLVMConstNull(t));
    LLVMSetLinkage(g, LLVMInternalLinkage);
    LLVMSetAlignment(g, 64);
    return g;
}

/* ---- small emit helpers ------------------------------------------------------ */

/* base[idx] += v */
static void conv_accum(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v) {
    cg_storef(c, base, idx, LLVMBuildFAdd(c->b, cg_loadf(c, base, idx), v, "acc"));
}

/* ---- im2col and its adjoint ----------------------------------------------------- */

static LLVMValueRef conv_smax(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) {
    return cg_select(c, LLVMBuildICmp(c->b, LLVMIntSGT, a, b, ""), a, b);
}

static LLVMValueRef conv_smin(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) {
    return cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, a, b, ""), a, b);
}

/* The output positions o in [*lo, *hi) whose input o·stride + off lies in
 * [0, n), for a run-time offset off (i64):
 *   lo = ⌈max(−off, 0) / stride⌉,  hi = ⌊(n − 1 − off) / stride⌋ + 1,
 * both clamped to [0, n_out] with lo <= hi. */
static void conv_valid(cg_ctx *c, int64_t n_out, int64_t stride, LLVMValueRef off, int64_t n,
                       LLVMValueRef *lo, LLVMValueRef *hi) {
    LLVMValueRef zero = cg_i64(c, 0), nout = cg_i64(c, n_out);
    LLVMValueRef neg = conv_smax(c, LLVMBuildNSWSub(c->b, zero, off, ""), zero);
    LLVMValueRef l = LLVMBuildSDiv(c->b, cg_addk(c, neg, stride - 1), cg_i64(c, stride), "lo");
    l = conv_smin(c, l, nout);
    LLVMValueRef u = LLVMBuildNSWSub(c->b, cg_i64(c, n - 1), off, "");
    LLVMValueRef h = cg_addk(c, LLVMBuildSDiv(c->b, conv_smax(c, u, zero), cg_i64(c, stride), ""), 1);
    h = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, u, zero, ""), zero, conv_smin(c, h, nout));
    *lo = l;
    *hi = conv_smax(c, h, l);
}

/* cols[(cc·kh + i)·kw + j, b·HoWo + oh·Wo + ow] = x[b, cc, oh·sh − ph + i, ow·sw − pw + j]
 * (0 outside x), for the nimg images at x; rows of nimg·HoWo floats. With
 * adjoint, the transpose: dx[...] += cols[...] (x is then dx).
 *
 * The valid (oh, ow) ranges of each kernel offset (i, j) are computed once
 * per offset, so the inner loop has no bounds tests (a contiguous,
 * vectorisable copy for stride 1) and padding is one memset. The loops stay
 * loops (run-time bounds): fully unrolling small shapes would only cost
 * compile time. */
/* The valid range of conv_valid for a constant offset. */
static void conv_valid_k(int64_t n_out, int64_t stride, int64_t off, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = 0;
    while (*lo < n_out && *lo * stride + off < 0) ++*lo;
    *hi = n_out;
    while (*hi > *lo && (*hi - 1) * stride + off >= n) --*hi;
}

/* for o in [lo, hi): base[o] = 0 (constant bounds; nothing when empty) */
static void conv_zero_run(cg_ctx *c, LLVMValueRef base, LLVMValueRef at, int64_t lo, int64_t hi) {
    if (lo >= hi) return;
    cg_loop l = cg_for_begin(c, cg_i64(c, lo), cg_i64(c, hi), "z");
    cg_storef(c, base, cg_add(c, at, l.iv), cg_f32(c, 0.0f));
    cg_for_end(c, &l);
}

/* for o in [lo, hi): base[at + o] = 0, run-time bounds */
static void conv_zero_rt(cg_ctx *c, LLVMValueRef base, LLVMValueRef at, LLVMValueRef lo, LLVMValueRef hi) {
    cg_loop l = cg_for_begin(c, lo, hi, "z");
    cg_storef(c, base, cg_add(c, at, l.iv), cg_f32(c, 0.0f));
    cg_for_end(c, &l);
}

/* conv_im2col for short rows: the kernel column j unrolled at compile time,
 * so each row's valid range [wl, wh) is a constant and the row copy (8
 * floats for the canonical 8x8 patches) becomes straight vector code rather
 * than a scalar loop of unknown trip count; the padding positions are zeroed
 * exactly (no memset of the whole matrix). Rows (i) stay a loop, which keeps
 * the code, and the compile time, small. */
static void conv_im2col_rows(cg_ctx *c, const conv_geo *g, LLVMValueRef x, int64_t nimg,
                             LLVMValueRef cols, bool adjoint) {
    int64_t npix = nimg * g->HoWo;
    cg_loop li = cg_for(c, g->kh, "ki");
    LLVMValueRef hl, hh;
    conv_valid(c, g->Ho, g->sh, cg_addk(c, li.iv, -g->ph), g->H, &hl, &hh);
    LLVMValueRef hlw = cg_mulk(c, hl, g->Wo), hhw = cg_mulk(c, hh, g->Wo);
    LLVMValueRef xi = cg_mulk(c, cg_addk(c, li.iv, -g->ph), g->W);
    for (int64_t j = 0; j < g->kw; j++) {
        int64_t wl, wh;
        conv_valid_k(g->Wo, g->sw, j - g->pw, g->W, &wl, &wh);
        if (wl >= wh && adjoint) continue;
        cg_loop lc = cg_for(c, g->C, "ic");
        LLVMValueRef row = cg_addk(c, cg_mulk(c, cg_mad(c, lc.iv, g->kh, li.iv), g->kw), j);
        LLVMValueRef cbase = cg_mulk(c, row, npix);
        LLVMValueRef xcbase = cg_addk(c, cg_mad(c, lc.iv, g->H * g->W, xi), j - g->pw);
        cg_loop lb = cg_for(c, nimg, "img");
        LLVMValueRef cb = cg_mad(c, lb.iv, g->HoWo, cbase);
        if (!adjoint) {
            conv_zero_rt(c, cols, cb, cg_i64(c, 0), hlw);
            conv_zero_rt(c, cols, cb, hhw, cg_i64(c, g->HoWo));
        }
        if (wl >= wh) {
            conv_zero_rt(c, cols, cb, hlw, hhw);
        } else {
            LLVMValueRef xb = cg_mad(c, lb.iv, g->CHW, xcbase);
            cg_loop lh = cg_for_begin(c, hl, hh, "oh");
            LLVMValueRef xr = cg_mad(c, lh.iv, g->sh * g->W, xb), cr = cg_mad(c, lh.iv, g->Wo, cb);
            if (!adjoint) {
                conv_zero_run(c, cols, cr, 0, wl);
                conv_zero_run(c, cols, cr, wh, g->Wo);
            }
            cg_loop lw = cg_for_begin(c, cg_i64(c, wl), cg_i64(c, wh), "ow");
            LLVMValueRef src = cg_mad(c, lw.iv, g->sw, xr), dst = cg_add(c, lw.iv, cr);
            if (!adjoint) cg_storef(c, cols, dst, cg_loadf(c, x, src));
            else conv_accum(c, x, src, cg_loadf(c, cols, dst));
            cg_for_end(c, &lw);
            cg_for_end(c, &lh);
        }
        cg_for_end(c, &lb);
        cg_for_end(c, &lc);
    }
    cg_for_end(c, &li);
}

static void conv_im2col(cg_ctx *c, const conv_geo *g, LLVMValueRef x, int64_t nimg,
                        LLVMValueRef cols, bool adjoint) {
    if (g->kw <= 8 && g->Wo <= 32) {
        conv_im2col_rows(c, g, x, nimg, cols, adjoint);
        return;
    }
    int64_t npix = nimg * g->HoWo;
    if (!adjoint && (g->ph > 0 || g->pw > 0)) cg_zero(c, cols, cg_i64(c, g->K * npix));
    cg_loop li = cg_for(c, g->kh, "ki");
    LLVMValueRef hl, hh;
    conv_valid(c, g->Ho, g->sh, cg_addk(c, li.iv, -g->ph), g->H, &hl, &hh);
    cg_loop lj = cg_for(c, g->kw, "kj");
    LLVMValueRef wl, wh;
    conv_valid(c, g->Wo, g->sw, cg_addk(c, lj.iv, -g->pw), g->W, &wl, &wh);
    /* x offset of (oh, ow) = (0, 0) for this (i, j), may be negative */
    LLVMValueRef xoff = cg_add(c, cg_mulk(c, cg_addk(c, li.iv, -g->ph), g->W), cg_addk(c, lj.iv, -g->pw));
    LLVMValueRef rowij = cg_mad(c, li.iv, g->kw, lj.iv);
    cg_loop lc = cg_for(c, g->C, "ic");
    LLVMValueRef cbase = cg_mulk(c, cg_mad(c, lc.iv, g->kh * g->kw, rowij), npix);
    LLVMValueRef xcbase = cg_mad(c, lc.iv, g->H * g->W, xoff);
    cg_loop lb = cg_for(c, nimg, "img");
    LLVMValueRef xb = cg_mad(c, lb.iv, g->CHW, xcbase), cb = cg_mad(c, lb.iv, g->HoWo, cbase);
    cg_loop lh = cg_for_begin(c, hl, hh, "oh");
    LLVMValueRef xr = cg_mad(c, lh.iv, g->sh * g->W, xb), cr = cg_mad(c, lh.iv, g->Wo, cb);
    cg_loop lw = cg_for_begin(c, wl, wh, "ow");
    LLVMValueRef src = cg_mad(c, lw.iv, g->sw, xr), dst = cg_add(c, lw.iv, cr);
    if (!adjoint) cg_storef(c, cols, dst, cg_loadf(c, x, src));
    else conv_accum(c, x, src, cg_loadf(c, cols, dst));
    cg_for_end(c, &lw);
    cg_for_end(c, &lh);
    cg_for_end(c, &lb);
    cg_for_end(c, &lc);
    cg_for_end(c, &lj);
    cg_for_end(c, &li);
}

/* Swaps the first two axes of nimg images: to [O, nimg·HoWo] from
 * [nimg, O, HoWo] (to_wide) or back; optionally adding bias[o] (back only). */
static void conv_swap_axes(cg_ctx *c, const conv_geo *g, int64_t nimg, LLVMValueRef wide,
                           LLVMValueRef imgs, bool to_wide, LLVMValueRef bias) {
    int64_t npix = nimg * g->HoWo;
    cg_loop lb = cg_for(c, nimg, "img");
    cg_loop lo = cg_for(c, g->O, "o");
    LLVMValueRef bo = bias ? cg_loadf(c, bias, lo.iv) : NULL;
    LLVMValueRef ibase = cg_mulk(c, cg_mad(c, lb.iv, g->O, lo.iv), g->HoWo);
    LLVMValueRef wbase = cg_mad(c, lo.iv, npix, cg_mulk(c, lb.iv, g->HoWo));
    cg_loop lp = cg_for(c, g->HoWo, "p");
    LLVMValueRef ii = cg_add(c, ibase, lp.iv), wi = cg_add(c, wbase, lp.iv);
    if (to_wide) {
        cg_storef(c, wide, wi, cg_loadf(c, imgs, ii));
    } else {
        LLVMValueRef v = cg_loadf(c, wide, wi);
        cg_storef(c, imgs, ii, bo ? LLVMBuildFAdd(c->b, v, bo, "yb") : v);
    }
    cg_for_end(c, &lp);
    cg_for_end(c, &lo);
    cg_for_end(c, &lb);
}

/* ---- convolutions ----------------------------------------------------------------- */

typedef struct conv_args {
    const conv_geo *g;
    gim_op op;
    LLVMValueRef a, w, bias, out, scratch;   /* a: x (fwd, bwd weight) or dy (bwd data) */
    LLVMValueRef dy;                          /* bwd weight */
    LLVMValueRef dwt;                         /* bwd weight: dWᵀ [K, O] in scratch, or NULL */
    bool relu;                                /* forward: a fused ReLU (gim_fuse) */
    LLVMValueRef mask;                        /* bwd data: y of a fused ReLU gradient, or NULL */
} conv_args;

/* base[i] = keep[i] > 0 ? base[i] : 0 for i < n: a fused ReLU (keep = base)
 * or ReLU gradient (keep = y). */
static void conv_keep_positive(cg_ctx *c, LLVMValueRef base, LLVMValueRef keep, int64_t n) {
    cg_loop l = cg_for(c, n, "i");
    LLVMValueRef v = cg_loadf(c, base, l.iv), k = keep == base ? v : cg_loadf(c, keep, l.iv);
    cg_storef(c, base, l.iv, cg_keep_positive(c, k, v));
    cg_for_end(c, &l);
}

/* One chunk of nimg images starting at image b0 (an i64 value). */
static void conv_chunk(cg_ctx *c, const conv_args *a, LLVMValueRef b0, int64_t nimg) {
    const conv_geo *g = a->g;
    int64_t npix = nimg * g->HoWo;
    LLVMValueRef xoff = cg_mulk(c, b0, g->CHW), yoff = cg_mulk(c, b0, g->O * g->HoWo);
    LLVMValueRef cols = a->scratch;
    LLVMValueRef wide = nimg == 1 ? NULL : cg_gep(c, a->scratch, cg_i64(c, g->K * npix));
    switch (a->op) {
    case GIM_OP_CONV2D:
    case GIM_OP_CONV1D: {
        /* y[b, o, p] = Σ_k W[o, k] cols[k, b·HoWo + p] + bias[o] */
        LLVMValueRef xb = cg_gep(c, a->a, xoff), yb = cg_gep(c, a->out, yoff);
        if (g->direct) cols = xb;
        else conv_im2col(c, g, xb, nimg, cols, false);
        cg_sgemm(c, false, false, g->O, npix, g->K, 1.0f, a->w, g->K, cols, npix, 0.0f,
                 wide ? wide : yb, npix);
        if (wide) {
            conv_swap_axes(c, g, nimg, wide, yb, false, a->bias);
            if (a->relu) conv_keep_positive(c, yb, yb, nimg * g->O * g->HoWo);
        } else if (a->bias) {
            cg_loop lo = cg_for(c, g->O, "o");
            LLVMValueRef bo = cg_loadf(c, a->bias, lo.iv);
            cg_loop lp = cg_for(c, g->HoWo, "p");
            LLVMValueRef i = cg_mad(c, lo.iv, g->HoWo, lp.iv);
            LLVMValueRef v = LLVMBuildFAdd(c->b, cg_loadf(c, yb, i), bo, "yb");
            if (a->relu)
                v = cg_keep_positive(c, v, v);
            cg_storef(c, yb, i, v);
            cg_for_end(c, &lp);
            cg_for_end(c, &lo);
        } else if (a->relu) {
            conv_keep_positive(c, yb, yb, g->O * g->HoWo);
        }
        break;
    }
    case GIM_OP_CONV2D_BWD_DATA:
    case GIM_OP_CONV1D_BWD_DATA: {
        /* dcols = Wᵀ dYᵗ; dx = col2im(dcols) */
        LLVMValueRef dyb = cg_gep(c, a->a, yoff), dxb = cg_gep(c, a->out, xoff);
        LLVMValueRef dyt = dyb;
        if (wide) {
            conv_swap_axes(c, g, nimg, wide, dyb, true, NULL);
            dyt = wide;
        }
        if (g->direct) {
            cg_sgemm(c, true, false, g->K, npix, g->O, 1.0f, a->w, g->K, dyt, npix, 0.0f, dxb, npix);
        } else {
            cg_sgemm(c, true, false, g->K, npix, g->O, 1.0f, a->w, g->K, dyt, npix, 0.0f, cols, npix);
            /* cleared here, chunk by chunk, so dx is still in cache for col2im */
            cg_zero(c, dxb, cg_i64(c, nimg * g->CHW));
            conv_im2col(c, g, dxb, nimg, cols, true);
        }
        if (a->mask) conv_keep_positive(c, dxb, cg_gep(c, a->mask, xoff), nimg * g->CHW);
        break;
    }
    default: {
        /* dW += dYᵗ colsᵀ */
        LLVMValueRef xb = cg_gep(c, a->a, xoff), dyb = cg_gep(c, a->dy, yoff);
        LLVMValueRef dyt = dyb;
        if (wide) {
            conv_swap_axes(c, g, nimg, wide, dyb, true, NULL);
            dyt = wide;
        }
        if (g->direct) cols = xb;
        else conv_im2col(c, g, xb, nimg, cols, false);
        if (a->dwt) cg_sgemm(c, false, true, g->K, g->O, npix, 1.0f, cols, npix, dyt, npix, 1.0f, a->dwt, g->O);
        else cg_sgemm(c, false, true, g->O, g->K, npix, 1.0f, dyt, npix, cols, npix, 1.0f, a->out, g->K);
        break;
    }
    }
}

/* The chunk loop over the pool: part t of the cut of the chunks runs them
 * with its own scratch slice (scratch + t·per); for the weight gradient each
 * part sums its chunks into its own dWᵀ_t, and then
 *   dw[o, k] = Σ_t dWᵀ_t[k, o]   (t in order: the same bits on any thread count). */
static int conv_run_parallel(cg_ctx *c, const gim_node *n, const conv_geo *g, conv_args *a) {
    int64_t full = g->B / g->chunk, rest = g->B % g->chunk, items = conv_items(g);
    int64_t per = conv_part_floats(n, g), parts = cg_par_parts(items);
    int64_t at = g->chunk == 1 ? g->K * g->HoWo : g->chunk * (g->K + g->O) * g->HoWo;
    bool wgrad = conv_is_wgrad(n->op);
    LLVMValueRef outer_scratch = a->scratch, outer_out = a->out;
    LLVMValueRef *slots[7] = {&a->a, &a->w, &a->bias, &a->out, &a->scratch, &a->dy, &a->mask};
    LLVMValueRef v[7];
    int nv = 0;
    for (int i = 0; i < 7; i++)
        if (*slots[i]) v[nv++] = *slots[i];
    cg_par p = cg_par_begin(c, "conv", v, nv);
    nv = 0;
    for (int i = 0; i < 7; i++)
        if (*slots[i]) *slots[i] = v[nv++];
    a->scratch = cg_gep(c, a->scratch, cg_mulk(c, p.part, per));
    if (wgrad) {
        a->dwt = cg_gep(c, a->scratch, cg_i64(c, at));
        cg_zero(c, a->dwt, cg_i64(c, g->K * g->O));
    }
    LLVMValueRef hi = conv_smin(c, p.end, cg_i64(c, full));
    cg_loop l = cg_for_begin(c, p.begin, hi, "chunk");
    conv_chunk(c, a, cg_mulk(c, l.iv, g->chunk), g->chunk);
    cg_for_end(c, &l);
    if (rest) {
        cg_if last = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntEQ, p.end, cg_i64(c, items), ""), "rest");
        conv_chunk(c, a, cg_i64(c, full * g->chunk), rest);
        cg_if_end(c, &last);
    }
    cg_par_end(c, &p, items);
    if (wgrad) {
        /* dw[o, k] = Σ_t dWᵀ_t[k, o], output channels over the pool (a part
         * writes its own rows of dw, reading rows of each dWᵀ_t in order) */
        LLVMValueRef w2[2] = {outer_scratch, outer_out};
        cg_par q = cg_par_begin(c, "conv.dw", w2, 2);
        cg_loop lk = cg_for(c, g->K, "k");
        cg_loop lo = cg_for_begin(c, q.begin, q.end, "o");
        LLVMValueRef src = cg_mad(c, lk.iv, g->O, lo.iv), sum = NULL;
        for (int64_t t = 0; t < parts; t++) {
            LLVMValueRef v1 = cg_loadf(c, w2[0], cg_addk(c, src, t * per + at));
            sum = sum ? LLVMBuildFAdd(c->b, sum, v1, "dw") : v1;
        }
        cg_storef(c, w2[1], cg_mad(c, lo.iv, g->K, lk.iv), sum);
        cg_for_end(c, &lo);
        cg_for_end(c, &lk);
        cg_par_end(c, &q, g->O);
    }
    return 0;
}

/* conv2d / conv1d and their gradients (PyTorch semantics, zero padding):
 *   y[b, o, p, q]  = bias[o] + Σ_{c,i,j} w[o, c, i, j] x[b, c, p·sh − ph + i, q·sw − pw + j]
 *   dx[b, c, r, t] = Σ_{o,p,q,i,j: p·sh−ph+i = r, q·sw−pw+j = t} w[o, c, i, j] dy[b, o, p, q]
 *   dw[o, c, i, j] = Σ_{b,p,q} dy[b, o, p, q] x[b, c, p·sh − ph + i, q·sw − pw + j]
 * (the bias gradient is a BIAS_BWD node). */
static int cg_conv(cg_ctx *c, const gim_node *n) {
    if (cg_conv_dense_applies(n)) {
        LLVMValueRef scratch = conv_scratch(c, n);
        if (!scratch) return cg_fail(c, n, "%s: no room for its expanded weight", gim_op_name(n->op));
        return cg_conv_dense_emit(c, n, scratch);
    }
    if (cg_winograd_applies(n)) {
        LLVMValueRef scratch = conv_scratch(c, n);
        if (!scratch) return cg_fail(c, n, "%s: no room for its Winograd scratch", gim_op_name(n->op));
        return cg_winograd(c, n, scratch);
    }
    if (cg_conv_window_applies(n)) {
        LLVMValueRef scratch = conv_scratch(c, n);
        if (!scratch) return cg_fail(c, n, "%s: no room for its scratch", gim_op_name(n->op));
        return cg_conv_window_forward(c, n, scratch);
    }
    conv_geo g;
    if (!conv_geometry(n, &g)) return cg_fail(c, n, "%s: unsupported shapes", gim_op_name(n->op));
    conv_args a = {.g = &g, .op = n->op, .out = cg_buf(c, n)};
    switch (n->op) {
    case GIM_OP_CONV2D: case GIM_OP_CONV1D:
        a.a = cg_buf(c, n->in[0]);
        a.w = cg_buf(c, n->in[1]);
        a.bias = n->n_in > 2 ? cg_buf(c, n->in[2]) : NULL;
        a.relu = n->attr[GIM_FUSED_RELU] != 0;
        break;
    case GIM_OP_CONV2D_BWD_DATA: case GIM_OP_CONV1D_BWD_DATA:
        a.a = cg_buf(c, n->in[0]);
        a.w = cg_buf(c, n->in[1]);
        if (n->attr[GIM_FUSED_RELU] != 0) {
            if (n->n_in < 3) return cg_fail(c, n, "internal: fused data gradient without y");
            a.mask = cg_buf(c, n->in[2]);
        }
        break;
    default:
        a.dy = cg_buf(c, n->in[0]);
        a.a = cg_buf(c, n->in[1]);
        if (!cg_conv_wgrad_t || g.direct) cg_zero(c, a.out, cg_i64(c, g.O * g.K));
        break;
    }
    a.scratch = cg_conv_scratch_floats(n) > 0 ? conv_scratch(c, n) : NULL;
    if (cg_conv_scratch_floats(n) > 0 && !a.scratch)
        return cg_fail(c, n, "%s: no room for its im2col scratch", gim_op_name(n->op));
    bool wgrad = conv_is_wgrad(n->op);
    if (conv_parallel(n, &g)) return conv_run_parallel(c, n, &g, &a);
    if (wgrad && cg_conv_wgrad_t && !g.direct) {
        int64_t at = g.chunk == 1 ? g.K * g.HoWo : g.chunk * (g.K + g.O) * g.HoWo;
        a.dwt = cg_gep(c, a.scratch, cg_i64(c, at));
        cg_zero(c, a.dwt, cg_i64(c, g.K * g.O));
    }
    int64_t full = g.B / g.chunk, rest = g.B % g.chunk;
    if (full == 1) {
        conv_chunk(c, &a, cg_i64(c, 0), g.chunk);
    } else if (full > 1) {
        cg_loop l = cg_for(c, full, "chunk");
        conv_chunk(c, &a, cg_mulk(c, l.iv, g.chunk), g.chunk);
        cg_for_end(c, &l);
    }
    if (rest) conv_chunk(c, &a, cg_i64(c, full * g.chunk), rest);
    if (a.dwt) {
        /* dw[o, k] = dWᵀ[k, o] */
        cg_loop lo = cg_for(c, g.O, "o");
        cg_loop lk = cg_for(c, g.K, "k");
        cg_storef(c, a.out, cg_mad(c, lo.iv, g.K, lk.iv), cg_loadf(c, a.dwt, cg_mad(c, lk.iv, g.O, lo.iv)));
        cg_for_end(c, &lk);
        cg_for_end(c, &lo);
    }
    return 0;
}

/* ---- linear --------------------------------------------------------------------- */

/* y [B, O] = x [B, C] wᵀ + b */
static int cg_linear(cg_ctx *c, const gim_node *n) {
    const gim_shape *xs = &n->in[0]->shape;
    if (xs->rank < 1) return cg_fail(c, n, "linear: scalar input");
    int64_t C = xs->d[xs->rank - 1], O = gim_attr_i(n, 0), B = gim_shape_numel(xs) / C;
    LLVMValueRef y = cg_buf(c, n);
    cg_sgemm(c, false, true, B, O, C, 1.0f, cg_buf(c, n->in[0]), C, cg_buf(c, n->in[1]), C, 0.0f, y, O);
    if (n->n_in > 2) {
        LLVMValueRef b = cg_buf(c, n->in[2]);
        cg_loop li = cg_for(c, B, "row");
        cg_loop lo = cg_for(c, O, "o");
        LLVMValueRef i = cg_mad(c, li.iv, O, lo.iv);
        cg_storef(c, y, i, LLVMBuildFAdd(c->b, cg_loadf(c, y, i), cg_loadf(c, b, lo.iv), "yb"));
        cg_for_end(c, &lo);
        cg_for_end(c, &li);
    }
    return 0;
}

/* dx [B, C] = dy [B, O] w [O, C] */
static int cg_linear_bwd_data(cg_ctx *c, const gim_node *n) {
    const gim_shape *ws = &n->in[1]->shape;
    if (ws->rank != 2) return cg_fail(c, n, "linear_bwd_data: weight must be [out, C]");
    int64_t O = ws->d[0], C = ws->d[1], B = gim_shape_numel(&n->shape) / C;
    cg_sgemm(c, false, false, B, C, O, 1.0f, cg_buf(c, n->in[0]), O, cg_buf(c, n->in[1]), C, 0.0f,
             cg_buf(c, n), C);
    return 0;
}

/* dw [O, C] = dyᵀ [O, B] x [B, C] */
static int cg_linear_bwd_weight(cg_ctx *c, const gim_node *n) {
    const gim_shape *ds = &n->in[0]->shape, *xs = &n->in[1]->shape;
    if (ds->rank < 1 || xs->rank < 1) return cg_fail(c, n, "linear_bwd_weight: scalar input");
    int64_t O = ds->d[ds->rank - 1], C = xs->d[xs->rank - 1], B = gim_shape_numel(xs) / C;
    cg_sgemm(c, true, false, O, C, B, 1.0f, cg_buf(c, n->in[0]), O, cg_buf(c, n->in[1]), C, 0.0f,
             cg_buf(c, n), C);
    return 0;
}

/* ---- patches --------------------------------------------------------------------- */

/* y[n, gi, gj, c, r, t] = x[n, c, gi·stride + r, gj·stride + t]; the backward
 * op sums each dy element back into dx at the same place (patches overlap). */
static int cg_patches(cg_ctx *c, const gim_node *n) {
    bool bwd = n->op == GIM_OP_PATCHES_BWD;
    const gim_shape *xs = bwd ? &n->shape : &n->in[0]->shape;
    if (xs->rank != 4) return cg_fail(c, n, "patches: input must be [N, C, H, W]");
    int64_t N = xs->d[0], C = xs->d[1], H = xs->d[2], W = xs->d[3];
    int64_t s = gim_attr_i(n, 0), st = gim_attr_i(n, 1);
    if (s <= 0 || s > H || s > W || st <= 0) return cg_fail(c, n, "patches: bad size or stride");
    int64_t Gh = (H - s) / st + 1, Gw = (W - s) / st + 1;
    LLVMValueRef x = bwd ? cg_buf(c, n) : cg_buf(c, n->in[0]);
    LLVMValueRef y = bwd ? cg_buf(c, n->in[0]) : cg_buf(c, n);
    if (bwd) cg_zero(c, x, cg_i64(c, N * C * H * W));
    cg_loop ln = cg_for(c, N, "n");
    cg_loop lgi = cg_for(c, Gh, "gi");
    cg_loop lgj = cg_for(c, Gw, "gj");
    cg_loop lc = cg_for(c, C, "c");
    LLVMValueRef ybase = cg_mulk(c, cg_mad(c, cg_mad(c, cg_mad(c, ln.iv, Gh, lgi.iv), Gw, lgj.iv), C, lc.iv),
                                 s * s);
    LLVMValueRef xbase = cg_add(c, cg_mulk(c, cg_mad(c, ln.iv, C, lc.iv), H * W),
                                cg_add(c, cg_mulk(c, lgi.iv, st * W), cg_mulk(c, lgj.iv, st)));
    cg_loop lr = cg_for(c, s, "r");
    LLVMValueRef yrow = cg_mad(c, lr.iv, s, ybase), xrow = cg_mad(c, lr.iv, W, xbase);
    cg_loop lt = cg_for(c, s, "t");
    LLVMValueRef yi = cg_add(c, yrow, lt.iv), xi = cg_add(c, xrow, lt.iv);
    if (bwd) conv_accum(c, x, xi, cg_loadf(c, y, yi));
    else cg_storef(c, y, yi, cg_loadf(c, x, xi));
    cg_for_end(c, &lt);
    cg_for_end(c, &lr);
    cg_for_end(c, &lc);
    cg_for_end(c, &lgj);
    cg_for_end(c, &lgi);
    cg_for_end(c, &ln);
    return 0;
}

/* ---- pools -------------------------------------------------------------------------- */

/* Pools read windows k×k at (oh·stride, ow·stride), no padding, floor:
 *   avg: y = mean of the window;   dx[window] += dy / k²
 *   max: y = max of the window;    dx[argmax] += dy, argmax recomputed from x,
 *        the first maximum in row-major window order on ties. */
static int cg_pool(cg_ctx *c, const gim_node *n) {
    bool bwd = n->op == GIM_OP_AVGPOOL2D_BWD || n->op == GIM_OP_MAXPOOL2D_BWD;
    bool is_max = n->op == GIM_OP_MAXPOOL2D || n->op == GIM_OP_MAXPOOL2D_BWD;
    /* x's shape: the forward's input, or dx (the node itself) for the backward */
    const gim_shape *xs = bwd ? &n->shape : &n->in[0]->shape;
    if (xs->rank < 2) return cg_fail(c, n, "%s: input must be [..., H, W]", gim_op_name(n->op));
    int64_t k = gim_attr_i(n, 0), st = gim_attr_i(n, 1);
    if (st <= 0) st = k;
    int64_t H = xs->d[xs->rank - 2], W = xs->d[xs->rank - 1];
    if (k <= 0 || k > H || k > W) return cg_fail(c, n, "%s: bad window", gim_op_name(n->op));
    int64_t Ho = (H - k) / st + 1, Wo = (W - k) / st + 1, B = gim_shape_numel(xs) / (H * W);

    LLVMValueRef out = cg_buf(c, n);
    LLVMValueRef x = NULL, dy = NULL;
    if (!bwd) x = cg_buf(c, n->in[0]);
    else {
        dy = cg_buf(c, n->in[0]);
        if (is_max) x = cg_buf(c, n->in[1]);
        cg_zero(c, out, cg_i64(c, B * H * W));
    }
    LLVMValueRef acc = is_max ? NULL : cg_var(c, "sum", cg_f32(c, 0.0f));
    LLVMValueRef best = is_max ? cg_var(c, "best", cg_f32(c, 0.0f)) : NULL;
    LLVMValueRef besti = is_max ? cg_var(c, "besti", cg_i64(c, 0)) : NULL;
    float inv = 1.0f / (float)(k * k);

    cg_loop lb = cg_for(c, B, "bc");
    cg_loop lh = cg_for(c, Ho, "oh");
    cg_loop lw = cg_for(c, Wo, "ow");
    LLVMValueRef yi = cg_mad(c, cg_mad(c, lb.iv, Ho, lh.iv), Wo, lw.iv);
    LLVMValueRef x0 = cg_add(c, cg_mulk(c, lb.iv, H * W),
                             cg_add(c, cg_mulk(c, lh.iv, st * W), cg_mulk(c, lw.iv, st)));
    LLVMValueRef g = NULL;
    if (is_max) {
        cg_var_set(c, best, cg_loadf(c, x, x0));
        cg_var_set(c, besti, x0);
    } else if (bwd) {
        g = LLVMBuildFMul(c->b, cg_loadf(c, dy, yi), cg_f32(c, inv), "g");
    } else {
        cg_var_set(c, acc, cg_f32(c, 0.0f));
    }
    cg_loop li = cg_for(c, k, "i");
    cg_loop lj = cg_for(c, k, "j");
    LLVMValueRef xi = cg_add(c, cg_mad(c, li.iv, W, lj.iv), x0);
    if (is_max) {
        LLVMValueRef v = cg_loadf(c, x, xi), m = cg_var_get(c, best);
        LLVMValueRef gt = LLVMBuildFCmp(c->b, LLVMRealOGT, v, m, "gt");
        cg_var_set(c, best, cg_select(c, gt, v, m));
        cg_var_set(c, besti, cg_select(c, gt, xi, cg_var_get(c, besti)));
    } else if (bwd) {
        conv_accum(c, out, xi, g);
    } else {
        cg_var_set(c, acc, LLVMBuildFAdd(c->b, cg_var_get(c, acc), cg_loadf(c, x, xi), "s"));
    }
    cg_for_end(c, &lj);
    cg_for_end(c, &li);
    if (is_max && bwd) conv_accum(c, out, cg_var_get(c, besti), cg_loadf(c, dy, yi));
    else if (is_max) cg_storef(c, out, yi, cg_var_get(c, best));
    else if (!bwd)
        cg_storef(c, out, yi, LLVMBuildFMul(c->b, cg_var_get(c, acc), cg_f32(c, inv), "avg"));
    cg_for_end(c, &lw);
    cg_for_end(c, &lh);
    cg_for_end(c, &lb);
    return 0;
}

const cg_op_fn cg_conv_ops[GIM_OP_COUNT] = {
    [GIM_OP_CONV2D] = cg_conv,
    [GIM_OP_CONV1D] = cg_conv,
    [GIM_OP_CONV2D_BWD_DATA] = cg_conv,
    [GIM_OP_CONV2D_BWD_WEIGHT] = cg_conv,
    [GIM_OP_CONV1D_BWD_DATA] = cg_conv,
    [GIM_OP_CONV1D_BWD_WEIGHT] = cg_conv,
    [GIM_OP_LINEAR] = cg_linear,
    [GIM_OP_LINEAR_BWD_DATA] = cg_linear_bwd_data,
    [GIM_OP_LINEAR_BWD_WEIGHT] = cg_linear_bwd_weight,
    [GIM_OP_PATCHES] = cg_patches,
    [GIM_OP_PATCHES_BWD] = cg_patches,
    [GIM_OP_AVGPOOL2D] = cg_pool,
    [GIM_OP_AVGPOOL2D_BWD] = cg_pool,
    [GIM_OP_MAXPOOL2D] = cg_pool,
    [GIM_OP_MAXPOOL2D_BWD] = cg_pool,
};

const cg_scratch_fn cg_conv_scratch[GIM_OP_COUNT] = {
    [GIM_OP_CONV2D] = cg_conv_scratch_floats,
    [GIM_OP_CONV1D] = cg_conv_scratch_floats,
    [GIM_OP_CONV2D_BWD_DATA] = cg_conv_scratch_floats,
    [GIM_OP_CONV2D_BWD_WEIGHT] = cg_conv_scratch_floats,
    [GIM_OP_CONV1D_BWD_DATA] = cg_conv_scratch_floats,
    [GIM_OP_CONV1D_BWD_WEIGHT] = cg_conv_scratch_floats,
};
