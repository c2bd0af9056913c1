/* Code generators: elementwise ops, reductions (means, bias gradients),
 * transpose and the conv2d weight mask. Views (reshape, gradient_block, slice) have no generator: their
 * buffer is their source's (codegen.c, plan.c).
 *
 * Elementwise ops are one counted loop over numel with independent
 * iterations and noalias buffers (see codegen.c), the form the loop
 * vectoriser turns into vector code. */
#include "cg.h"

typedef LLVMValueRef (*unary_fn)(cg_ctx *c, const gim_node *n, LLVMValueRef x);
typedef LLVMValueRef (*binary_fn)(cg_ctx *c, const gim_node *n, LLVMValueRef a, LLVMValueRef b);

static int64_t numel(const gim_node *n) { return gim_shape_numel(&n->shape); }

/* Elementwise loops over at least EW_PAR_MIN elements run over the runtime's
 * pool in blocks of EW_BLOCK (each element is computed alone: the same bits
 * whichever thread runs it). */
#define EW_PAR_MIN ((int64_t)1 << 16)
#define EW_BLOCK ((int64_t)1 << 12)

/* y[i] = f(x[i]) or f(a[i], b[i]) for i < numel(y) (b NULL for unary f) */
static void ew_loop(cg_ctx *c, const gim_node *n, unary_fn fu, binary_fn fb, LLVMValueRef a, LLVMValueRef b,
                    LLVMValueRef y) {
    int64_t total = numel(n);
    if (total < EW_PAR_MIN) {
        cg_loop i = cg_for(c, total, "i");
        LLVMValueRef v = fb ? fb(c, n, cg_loadf(c, a, i.iv), cg_loadf(c, b, i.iv)) : fu(c, n, cg_loadf(c, a, i.iv));
        cg_storef(c, y, i.iv, v);
        cg_for_end(c, &i);
        return;
    }
    LLVMValueRef v[3] = {a, y, fb ? b : a};
    cg_par p = cg_par_begin(c, "ew", v, 3);
    LLVMValueRef hi = cg_mulk(c, p.end, EW_BLOCK);
    hi = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, hi, cg_i64(c, total), ""), hi, cg_i64(c, total));
    cg_loop i = cg_for_begin(c, cg_mulk(c, p.begin, EW_BLOCK), hi, "i");
    LLVMValueRef r = fb ? fb(c, n, cg_loadf(c, v[0], i.iv), cg_loadf(c, v[2], i.iv)) : fu(c, n, cg_loadf(c, v[0], i.iv));
    cg_storef(c, v[1], i.iv, r);
    cg_for_end(c, &i);
    cg_par_end(c, &p, (total + EW_BLOCK - 1) / EW_BLOCK);
}

/* y[i] = f(x[i]) for i < numel(y) */
static int unary(cg_ctx *c, const gim_node *n, unary_fn f) {
    ew_loop(c, n, f, NULL, cg_buf(c, n->in[0]), NULL, cg_buf(c, n));
    return 0;
}

/* y[i] = f(a[i], b[i]) */
static int binary(cg_ctx *c, const gim_node *n, binary_fn f) {
    LLVMValueRef a = cg_buf(c, n->in[0]), b = cg_buf(c, n->in[1]), y = cg_buf(c, n);
    if (numel(n->in[0]) != numel(n) || numel(n->in[1]) != numel(n))
        return cg_fail(c, n, "internal: %s of tensors of different sizes", gim_op_name(n->op));
    ew_loop(c, n, NULL, f, a, b, y);
    return 0;
}

static LLVMValueRef gt0(cg_ctx *c, LLVMValueRef x) {
    return LLVMBuildFCmp(c->b, LLVMRealOGT, x, cg_f32(c, 0.0f), "pos");
}

/* relu(x) = x > 0 ? x : 0 */
static LLVMValueRef f_relu(cg_ctx *c, const gim_node *n, LLVMValueRef x) {
    return cg_keep_positive(c, x, x);
}
static LLVMValueRef f_tanh(cg_ctx *c, const gim_node *n, LLVMValueRef x) { return cg_tanh(c, x); }
/* σ(x) = 1 / (1 + e^{−x}) */
static LLVMValueRef f_sigmoid(cg_ctx *c, const gim_node *n, LLVMValueRef x) {
    LLVMValueRef e = cg_exp(c, LLVMBuildFNeg(c->b, x, ""));
    return LLVMBuildFDiv(c->b, cg_f32(c, 1.0f), LLVMBuildFAdd(c->b, cg_f32(c, 1.0f), e, ""), "sigmoid");
}
/* leaky_relu(x) = x > 0 ? x : slope·x */
static LLVMValueRef f_leaky(cg_ctx *c, const gim_node *n, LLVMValueRef x) {
    return cg_select(c, gt0(c, x), x, LLVMBuildFMul(c->b, x, cg_f32(c, (float)n->attr[0]), ""));
}
static LLVMValueRef f_scale(cg_ctx *c, const gim_node *n, LLVMValueRef x) {
    return LLVMBuildFMul(c->b, x, cg_f32(c, (float)n->attr[0]), "scaled");
}
static LLVMValueRef f_shift(cg_ctx *c, const gim_node *n, LLVMValueRef x) {
    return LLVMBuildFAdd(c->b, x, cg_f32(c, (float)n->attr[0]), "shifted");
}
static LLVMValueRef f_add(cg_ctx *c, const gim_node *n, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildFAdd(c->b, a, b, "sum");
}
static LLVMValueRef f_sub(cg_ctx *c, const gim_node *n, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildFSub(c->b, a, b, "diff");
}
static LLVMValueRef f_mul(cg_ctx *c, const gim_node *n, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildFMul(c->b, a, b, "prod");
}
/* relu: dx = y > 0 ? dy : 0 */
static LLVMValueRef f_relu_bwd(cg_ctx *c, const gim_node *n, LLVMValueRef dy, LLVMValueRef y) {
    return cg_keep_positive(c, y, dy);
}
/* tanh: dx = dy (1 − y²) */
static LLVMValueRef f_tanh_bwd(cg_ctx *c, const gim_node *n, LLVMValueRef dy, LLVMValueRef y) {
    LLVMValueRef d = LLVMBuildFSub(c->b, cg_f32(c, 1.0f), LLVMBuildFMul(c->b, y, y, ""), "");
    return LLVMBuildFMul(c->b, dy, d, "dx");
}
/* sigmoid: dx = dy y (1 − y) */
static LLVMValueRef f_sigmoid_bwd(cg_ctx *c, const gim_node *n, LLVMValueRef dy, LLVMValueRef y) {
    LLVMValueRef d = LLVMBuildFMul(c->b, y, LLVMBuildFSub(c->b, cg_f32(c, 1.0f), y, ""), "");
    return LLVMBuildFMul(c->b, dy, d, "dx");
}
/* leaky_relu: dx = x > 0 ? dy : slope·dy */
static LLVMValueRef f_leaky_bwd(cg_ctx *c, const gim_node *n, LLVMValueRef dy, LLVMValueRef x) {
    return cg_select(c, gt0(c, x), dy, LLVMBuildFMul(c->b, dy, cg_f32(c, (float)n->attr[0]), ""));
}

static int g_relu(cg_ctx *c, const gim_node *n) { return unary(c, n, f_relu); }
static int g_tanh(cg_ctx *c, const gim_node *n) { return unary(c, n, f_tanh); }
static int g_sigmoid(cg_ctx *c, const gim_node *n) { return unary(c, n, f_sigmoid); }
static int g_leaky(cg_ctx *c, const gim_node *n) { return unary(c, n, f_leaky); }
static int g_scale(cg_ctx *c, const gim_node *n) { return unary(c, n, f_scale); }
static int g_shift(cg_ctx *c, const gim_node *n) { return unary(c, n, f_shift); }
static int g_add(cg_ctx *c, const gim_node *n) { return binary(c, n, f_add); }
static int g_sub(cg_ctx *c, const gim_node *n) { return binary(c, n, f_sub); }
static int g_mul(cg_ctx *c, const gim_node *n) { return binary(c, n, f_mul); }
static int g_relu_bwd(cg_ctx *c, const gim_node *n) { return binary(c, n, f_relu_bwd); }
static int g_tanh_bwd(cg_ctx *c, const gim_node *n) { return binary(c, n, f_tanh_bwd); }
static int g_sigmoid_bwd(cg_ctx *c, const gim_node *n) { return binary(c, n, f_sigmoid_bwd); }
static int g_leaky_bwd(cg_ctx *c, const gim_node *n) { return binary(c, n, f_leaky_bwd); }

/* ---- reductions ---- */

/* Splits shape s around axis: outer = Π d[<axis], len = d[axis], inner = Π d[>axis]. */
static void split_axis(const gim_shape *s, int axis, int64_t *outer, int64_t *len, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++) *outer *= s->d[i];
    *len = s->d[axis];
    for (int i = axis + 1; i < s->rank; i++) *inner *= s->d[i];
}

/* Sum of x[base + k] for k < len (vectorised, see cg_sum). */
static LLVMValueRef sum_row(cg_ctx *c, LLVMValueRef x, LLVMValueRef base, int64_t len) {
    return cg_sum(c, x, base, len);
}

/* The reductions below loop over `count` units of work (rows, channels,
 * blocks of a row), each unit writing its own output elements and reading
 * about `width` floats. From EW_PAR_MIN floats in all they run over the pool,
 * units grouped into blocks of about EW_BLOCK floats; a unit computes its
 * elements in the same order either way, so the bits do not depend on the
 * threads. Between units_begin and units_end the caller emits units
 * [u.lo, u.hi) with vals (the body's copies when parallel). */
typedef struct units {
    LLVMValueRef lo, hi;
    bool par;
    int64_t blocks;
    cg_par p;
} units;

static units units_begin(cg_ctx *c, const char *name, int64_t count, int64_t width, LLVMValueRef *vals, int nvals) {
    units u = {0};
    int64_t per = width > 0 && width < EW_BLOCK ? EW_BLOCK / width : 1;   /* units per block */
    u.blocks = (count + per - 1) / per;
    if (count * width < EW_PAR_MIN || u.blocks < 2) {
        u.lo = cg_i64(c, 0);
        u.hi = cg_i64(c, count);
        return u;
    }
    u.par = true;
    u.p = cg_par_begin(c, name, vals, nvals);
    u.lo = cg_mulk(c, u.p.begin, per);
    LLVMValueRef hi = cg_mulk(c, u.p.end, per);
    u.hi = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, hi, cg_i64(c, count), ""), hi, cg_i64(c, count));
    return u;
}

static void units_end(cg_ctx *c, units *u) {
    if (u->par) cg_par_end(c, &u->p, u->blocks);
}

/* Unit u of outer × ⌈len/blk⌉ blocks along a dimension of length len: its
 * outer index *o and its block [*j0, *j1). Constants when one block covers len. */
static void unit_block(cg_ctx *c, LLVMValueRef u, int64_t len, int64_t blk, LLVMValueRef *o, LLVMValueRef *j0,
                       LLVMValueRef *j1) {
    if (blk >= len) {
        *o = u;
        *j0 = cg_i64(c, 0);
        *j1 = cg_i64(c, len);
        return;
    }
    int64_t nb = (len + blk - 1) / blk;
    *o = LLVMBuildUDiv(c->b, u, cg_i64(c, nb), "o");
    *j0 = cg_mulk(c, LLVMBuildURem(c->b, u, cg_i64(c, nb), ""), blk);
    LLVMValueRef e = cg_addk(c, *j0, blk);
    *j1 = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, e, cg_i64(c, len), ""), e, cg_i64(c, len));
}

/* y[o, i] = (1/len) Σ_k x[o, k, i], x viewed as [outer, len, inner].
 * inner 1: one vectorised sum per row, units of rows. Otherwise accumulated
 * row by row (k outer, i inner) so the inner loop is contiguous and
 * vectorises, units of (o, block of EW_BLOCK i). */
static void emit_mean(cg_ctx *c, LLVMValueRef x, LLVMValueRef y, int64_t outer, int64_t len, int64_t inner) {
    LLVMValueRef scale = cg_f32(c, (float)(1.0 / (double)len));
    LLVMValueRef v[2] = {x, y};
    if (inner == 1) {
        units u = units_begin(c, "mean", outer, len, v, 2);
        cg_loop o = cg_for_begin(c, u.lo, u.hi, "o");
        LLVMValueRef s = sum_row(c, v[0], cg_mulk(c, o.iv, len), len);
        cg_storef(c, v[1], o.iv, LLVMBuildFMul(c->b, s, scale, "mean"));
        cg_for_end(c, &o);
        units_end(c, &u);
        return;
    }
    int64_t blk = inner < EW_BLOCK ? inner : EW_BLOCK, nb = (inner + blk - 1) / blk;
    units u = units_begin(c, "mean", outer * nb, len * blk, v, 2);
    cg_loop r = cg_for_begin(c, u.lo, u.hi, "u");
    LLVMValueRef o, i0, i1;
    unit_block(c, r.iv, inner, blk, &o, &i0, &i1);
    LLVMValueRef ybase = cg_mulk(c, o, inner);
    cg_loop iz = cg_for_begin(c, i0, i1, "i");
    cg_storef(c, v[1], cg_add(c, ybase, iz.iv), cg_f32(c, 0.0f));
    cg_for_end(c, &iz);
    cg_loop k = cg_for(c, len, "k");
    LLVMValueRef xbase = cg_mulk(c, cg_mad(c, o, len, k.iv), inner);
    cg_loop i = cg_for_begin(c, i0, i1, "i");
    LLVMValueRef yi = cg_add(c, ybase, i.iv);
    LLVMValueRef xv = LLVMBuildFMul(c->b, cg_loadf(c, v[0], cg_add(c, xbase, i.iv)), scale, "");
    cg_storef(c, v[1], yi, LLVMBuildFAdd(c->b, cg_loadf(c, v[1], yi), xv, ""));
    cg_for_end(c, &i);
    cg_for_end(c, &k);
    cg_for_end(c, &r);
    units_end(c, &u);
}

/* dst[base + j] = v for j < n (n a constant) as whole vector stores of 16,
 * then 8 and 4 floats, then single floats. (Left to the loop vectoriser, a
 * short run inside a loop over rows became scattered stores across rows.) */
static void fill_run(cg_ctx *c, LLVMValueRef dst, LLVMValueRef base, int64_t n, LLVMValueRef v) {
    int64_t done = 0;
    for (int w = 16; w >= 4; w /= 2) {
        int64_t chunks = (n - done) / w;
        if (chunks == 0) continue;
        LLVMTypeRef vt = LLVMVectorType(c->f32, (unsigned)w);
        LLVMValueRef one = LLVMBuildInsertElement(c->b, LLVMGetPoison(vt), v, cg_i32(c, 0), "");
        LLVMValueRef zeros[16];
        for (int i = 0; i < w; i++) zeros[i] = cg_i32(c, 0);
        LLVMValueRef vv = LLVMBuildShuffleVector(c->b, one, LLVMGetPoison(vt), LLVMConstVector(zeros, (unsigned)w), "");
        cg_loop j = cg_for_begin(c, cg_i64(c, 0), cg_i64(c, chunks), "fill");
        LLVMValueRef at = cg_gep(c, dst, cg_add(c, base, cg_addk(c, cg_mulk(c, j.iv, w), done)));
        LLVMValueRef st = LLVMBuildStore(c->b, vv, at);
        LLVMSetAlignment(st, 4);
        cg_for_end(c, &j);
        done += chunks * w;
    }
    for (; done < n; done++) cg_storef(c, dst, cg_addk(c, base, done), v);
}

/* dx[o, k, i] = dy[o, i] / len, dx viewed as [outer, len, inner]; units of
 * (o, block of k) covering about EW_BLOCK floats of dx. mask (dx's shape, or
 * NULL): a fused ReLU gradient keeps dx only where mask > 0. */
static void emit_mean_bwd(cg_ctx *c, LLVMValueRef dy, LLVMValueRef dx, LLVMValueRef mask, int64_t outer,
                          int64_t len, int64_t inner) {
    LLVMValueRef scale = cg_f32(c, (float)(1.0 / (double)len));
    int64_t blk = inner < EW_BLOCK ? EW_BLOCK / inner : 1;
    if (blk > len) blk = len;
    int64_t nb = (len + blk - 1) / blk;
    LLVMValueRef v[3] = {dy, dx, mask ? mask : dx};
    units u = units_begin(c, "mean_bwd", outer * nb, blk * inner, v, 3);
    if (mask) mask = v[2];
    cg_loop r = cg_for_begin(c, u.lo, u.hi, "u");
    LLVMValueRef o, k0, k1;
    unit_block(c, r.iv, len, blk, &o, &k0, &k1);
    if (mask) {
        LLVMValueRef ybase = cg_mulk(c, o, inner);
        cg_loop k = cg_for_begin(c, k0, k1, "k");
        LLVMValueRef xbase = cg_mulk(c, cg_mad(c, o, len, k.iv), inner);
        cg_loop i = cg_for(c, inner, "i");
        LLVMValueRef xi = cg_add(c, xbase, i.iv);
        LLVMValueRef val = LLVMBuildFMul(c->b, cg_loadf(c, v[0], cg_add(c, ybase, i.iv)), scale, "");
        cg_storef(c, v[1], xi, cg_keep_positive(c, cg_loadf(c, mask, xi), val));
        cg_for_end(c, &i);
        cg_for_end(c, &k);
        cg_for_end(c, &r);
        units_end(c, &u);
        return;
    }
    if (inner == 1 && nb == 1) {
        /* a row dx[o, 0..len) of one value */
        LLVMValueRef val = LLVMBuildFMul(c->b, cg_loadf(c, v[0], o), scale, "");
        fill_run(c, v[1], cg_mulk(c, o, len), len, val);
        cg_for_end(c, &r);
        units_end(c, &u);
        return;
    }
    LLVMValueRef ybase = cg_mulk(c, o, inner);
    cg_loop k = cg_for_begin(c, k0, k1, "k");
    LLVMValueRef xbase = cg_mulk(c, cg_mad(c, o, len, k.iv), inner);
    if (inner == 1) {
        LLVMValueRef val = LLVMBuildFMul(c->b, cg_loadf(c, v[0], o), scale, "");
        cg_storef(c, v[1], xbase, val);
    } else {
        cg_loop i = cg_for(c, inner, "i");
        LLVMValueRef val = LLVMBuildFMul(c->b, cg_loadf(c, v[0], cg_add(c, ybase, i.iv)), scale, "");
        cg_storef(c, v[1], cg_add(c, xbase, i.iv), val);
        cg_for_end(c, &i);
    }
    cg_for_end(c, &k);
    cg_for_end(c, &r);
    units_end(c, &u);
}

/* spatial_mean: x [..., C, H, W] -> y [..., C], y[o] = (1/HW) Σ_k x[o·HW + k] */
static int g_spatial_mean(cg_ctx *c, const gim_node *n) {
    int64_t no = numel(n), hw = numel(n->in[0]) / (no ? no : 1);
    emit_mean(c, cg_buf(c, n->in[0]), cg_buf(c, n), no, hw, 1);
    return 0;
}

/* spatial_mean_bwd: dx[o·HW + k] = dy[o] / HW */
static int g_spatial_mean_bwd(cg_ctx *c, const gim_node *n) {
    int64_t no = numel(n->in[0]), hw = numel(n) / (no ? no : 1);
    LLVMValueRef mask = n->attr[GIM_FUSED_RELU] != 0 && n->n_in > 1 ? cg_buf(c, n->in[1]) : NULL;
    emit_mean_bwd(c, cg_buf(c, n->in[0]), cg_buf(c, n), mask, no, hw, 1);
    return 0;
}

/* mean over axis a: y[o, i] = (1/len) Σ_k x[o, k, i] with x viewed as
 * [outer, len, inner] */
static int g_mean(cg_ctx *c, const gim_node *n) {
    const gim_node *xn = n->in[0];
    int axis = (int)gim_attr_i(n, 0);
    if (axis < 0 || axis >= xn->shape.rank) return cg_fail(c, n, "internal: mean axis %d out of range", axis);
    int64_t outer, len, inner;
    split_axis(&xn->shape, axis, &outer, &len, &inner);
    emit_mean(c, cg_buf(c, xn), cg_buf(c, n), outer, len, inner);
    return 0;
}

/* mean_bwd: dx[o, k, i] = dy[o, i] / len, dx (this node) viewed as [outer, len, inner] */
static int g_mean_bwd(cg_ctx *c, const gim_node *n) {
    int axis = (int)gim_attr_i(n, 0);
    if (axis < 0 || axis >= n->shape.rank) return cg_fail(c, n, "internal: mean_bwd axis %d out of range", axis);
    int64_t outer, len, inner;
    split_axis(&n->shape, axis, &outer, &len, &inner);
    emit_mean_bwd(c, cg_buf(c, n->in[0]), cg_buf(c, n), NULL, outer, len, inner);
    return 0;
}

/* Floats of dy a part of a parallel bias_bwd reads in one piece per o: at
 * least BIAS_RUN (whole channels of inner floats each). A part reads its
 * channels' rows only, so with a few short channels it would read dy in
 * short strided pieces: 32 channels of 64 floats cut in two parts were
 * measured slower than the serial sweep, even on two threads. */
#define BIAS_RUN 4096
/* Most channels a part of a parallel bias_bwd sums on its stack. */
#define BIAS_PART_MAX 16384

/* db[k0 + j] = Σ_o s(o, k0 + j) for j < k1 − k0, in o order from 0,
 * accumulated in acc[j] (acc = db and k0 = 0 in a serial loop), then copied
 * to db. s(o, k) = dy[o, k] when inner is 1 (the loop over k vectorises),
 * else the vectorised sum of the row dy[o, k, 0..inner). Rows are read in
 * memory order (o outer, k inner). */
static void bias_sums(cg_ctx *c, LLVMValueRef dy, LLVMValueRef db, LLVMValueRef acc, LLVMValueRef k0, LLVMValueRef k1,
                      int64_t outer, int64_t len, int64_t inner) {
    LLVMValueRef nk = LLVMBuildNSWSub(c->b, k1, k0, "channels");
    cg_loop jz = cg_for_begin(c, cg_i64(c, 0), nk, "j");
    cg_storef(c, acc, jz.iv, cg_f32(c, 0.0f));
    cg_for_end(c, &jz);
    cg_loop o = cg_for(c, outer, "o");
    LLVMValueRef base = cg_mad(c, o.iv, len, k0);
    cg_loop j = cg_for_begin(c, cg_i64(c, 0), nk, "j");
    LLVMValueRef row = cg_add(c, base, j.iv);
    LLVMValueRef s = inner == 1 ? cg_loadf(c, dy, row) : sum_row(c, dy, cg_mulk(c, row, inner), inner);
    cg_storef(c, acc, j.iv, LLVMBuildFAdd(c->b, cg_loadf(c, acc, j.iv), s, ""));
    cg_for_end(c, &j);
    cg_for_end(c, &o);
    if (acc == db) return;
    cg_loop jc = cg_for_begin(c, cg_i64(c, 0), nk, "j");
    cg_storef(c, db, cg_add(c, k0, jc.iv), cg_loadf(c, acc, jc.iv));
    cg_for_end(c, &jc);
}

/* bias_bwd: db[k] = Σ_{o, i} dy[o, k, i], dy viewed as [outer, len, inner]
 * around `axis`. Over the pool, a part takes a range of channels (blocks of
 * at least BIAS_RUN floats per o) and sums them on its own stack, so parts
 * never write to the same cache line while they run; each db[k] is summed
 * over o in the same order as the serial loop, whatever the threads. */
static int g_bias_bwd(cg_ctx *c, const gim_node *n) {
    const gim_node *dyn = n->in[0];
    int axis = (int)gim_attr_i(n, 0);
    if (axis < 0 || axis >= dyn->shape.rank) return cg_fail(c, n, "internal: bias_bwd axis %d out of range", axis);
    int64_t outer, len, inner;
    split_axis(&dyn->shape, axis, &outer, &len, &inner);
    if (numel(n) != len) return cg_fail(c, n, "internal: bias_bwd output has %lld floats, expected %lld",
                                        (long long)numel(n), (long long)len);
    LLVMValueRef v[2] = {cg_buf(c, dyn), cg_buf(c, n)};
    int64_t blk = (BIAS_RUN + inner - 1) / inner, nb = (len + blk - 1) / blk;
    /* channels of the largest part */
    int64_t parts = cg_par_parts(nb), most = ((nb + parts - 1) / parts) * blk;
    units u = {0};
    if (most <= BIAS_PART_MAX) u = units_begin(c, "bias_bwd", nb, outer * inner * blk, v, 2);
    if (!u.par) {
        bias_sums(c, v[0], v[1], v[1], cg_i64(c, 0), cg_i64(c, len), outer, len, inner);
        return 0;
    }
    LLVMValueRef k0 = cg_mulk(c, u.lo, blk), k1 = cg_mulk(c, u.hi, blk);
    k1 = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, k1, cg_i64(c, len), ""), k1, cg_i64(c, len));
    LLVMValueRef acc = cg_entry_alloca(c, LLVMArrayType(c->f32, (unsigned)most), "db.part", 64);
    bias_sums(c, v[0], v[1], acc, k0, k1, outer, len, inner);
    units_end(c, &u);
    return 0;
}

/* transpose(a, b), a < b: x viewed as [pre, A, mid, B, post] ->
 * y [pre, B, mid, A, post], y[p, j, m, i, q] = x[p, i, m, j, q]. */
static int g_transpose(cg_ctx *c, const gim_node *n) {
    const gim_node *xn = n->in[0];
    int a = (int)gim_attr_i(n, 0), b = (int)gim_attr_i(n, 1), r = xn->shape.rank;
    if (a > b) { int t = a; a = b; b = t; }
    if (a < 0 || b >= r) return cg_fail(c, n, "internal: transpose axes %d, %d out of range", a, b);
    LLVMValueRef x = cg_buf(c, xn), y = cg_buf(c, n);
    if (a == b) {
        cg_copy(c, y, x, cg_i64(c, numel(n)));
        return 0;
    }
    int64_t pre = 1, mid = 1, post = 1, A = xn->shape.d[a], B = xn->shape.d[b];
    for (int i = 0; i < a; i++) pre *= xn->shape.d[i];
    for (int i = a + 1; i < b; i++) mid *= xn->shape.d[i];
    for (int i = b + 1; i < r; i++) post *= xn->shape.d[i];
    cg_loop p = cg_for(c, pre, "p");
    cg_loop j = cg_for(c, B, "j");
    cg_loop m = cg_for(c, mid, "m");
    cg_loop i = cg_for(c, A, "i");
    /* y offset ((((p·B + j)·mid + m)·A + i)·post; x offset ((((p·A + i)·mid + m)·B + j)·post */
    LLVMValueRef yo = cg_mulk(c, cg_mad(c, cg_mad(c, cg_mad(c, p.iv, B, j.iv), mid, m.iv), A, i.iv), post);
    LLVMValueRef xo = cg_mulk(c, cg_mad(c, cg_mad(c, cg_mad(c, p.iv, A, i.iv), mid, m.iv), B, j.iv), post);
    if (post == 1) {
        cg_storef(c, y, yo, cg_loadf(c, x, xo));
    } else {
        cg_loop q = cg_for(c, post, "q");
        cg_storef(c, y, cg_add(c, yo, q.iv), cg_loadf(c, x, cg_add(c, xo, q.iv)));
        cg_for_end(c, &q);
    }
    cg_for_end(c, &i);
    cg_for_end(c, &m);
    cg_for_end(c, &j);
    cg_for_end(c, &p);
    return 0;
}

/* conv2d_mask: w [out, C, k, k] -> y, every k×k kernel keeping its first
 * `keep` raster positions (gim_mask_keep) and zero after; a select, not a
 * product, so the masked entries are exact zeros whatever w holds there. The
 * same code masks the weight gradient. */
static int g_conv2d_mask(cg_ctx *c, const gim_node *n) {
    int64_t k = n->shape.d[3], kk = k * k, keep = gim_mask_keep((int)gim_attr_i(n, 0), k);
    LLVMValueRef w = cg_buf(c, n->in[0]), y = cg_buf(c, n);
    cg_loop r = cg_for(c, numel(n) / kk, "kernel");
    LLVMValueRef base = cg_mulk(c, r.iv, kk);
    cg_loop p = cg_for(c, kk, "pos");
    LLVMValueRef i = cg_add(c, base, p.iv);
    LLVMValueRef kept = LLVMBuildICmp(c->b, LLVMIntSLT, p.iv, cg_i64(c, keep), "kept");
    cg_storef(c, y, i, cg_select(c, kept, cg_loadf(c, w, i), cg_f32(c, 0.0f)));
    cg_for_end(c, &p);
    cg_for_end(c, &r);
    return 0;
}

const cg_op_fn cg_elementwise_ops[GIM_OP_COUNT] = {
    [GIM_OP_CONV2D_MASK] = g_conv2d_mask,
    [GIM_OP_RELU] = g_relu,
    [GIM_OP_TANH] = g_tanh,
    [GIM_OP_SIGMOID] = g_sigmoid,
    [GIM_OP_LEAKY_RELU] = g_leaky,
    [GIM_OP_ADD] = g_add,
    [GIM_OP_SUB] = g_sub,
    [GIM_OP_MUL] = g_mul,
    [GIM_OP_SCALE] = g_scale,
    [GIM_OP_SHIFT] = g_shift,
    [GIM_OP_RELU_BWD] = g_relu_bwd,
    [GIM_OP_TANH_BWD] = g_tanh_bwd,
    [GIM_OP_SIGMOID_BWD] = g_sigmoid_bwd,
    [GIM_OP_LEAKY_RELU_BWD] = g_leaky_bwd,
    [GIM_OP_SPATIAL_MEAN] = g_spatial_mean,
    [GIM_OP_SPATIAL_MEAN_BWD] = g_spatial_mean_bwd,
    [GIM_OP_MEAN] = g_mean,
    [GIM_OP_MEAN_BWD] = g_mean_bwd,
    [GIM_OP_TRANSPOSE] = g_transpose,
    [GIM_OP_BIAS_BWD] = g_bias_bwd,
};
