/* The code generation helpers of cg.h: constants, buffer access, index
 * arithmetic, float math through LLVM intrinsics, loops, accumulators,
 * conditionals and calls into the runtime.
 *
 * Invariants the generators rely on: float loads and stores are 4-byte
 * aligned; index arithmetic is i64 with no signed wrap (every index is
 * within a buffer whose size the planner checked); loops are counted
 * (for iv in [start, end)) with the induction variable a phi in the header,
 * the shape the loop vectoriser recognises. */
#include "cg.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "gim_runtime.h"

/* ---- constants ---- */

LLVMValueRef cg_i64(cg_ctx *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }
LLVMValueRef cg_i32(cg_ctx *c, int32_t v) { return LLVMConstInt(c->i32, (unsigned long long)(int64_t)v, 1); }
LLVMValueRef cg_f32(cg_ctx *c, float v) { return LLVMConstReal(c->f32, v); }

/* ---- buffers ---- */

LLVMValueRef cg_buf(cg_ctx *c, const gim_node *n) {
    LLVMValueRef p = c->buf ? c->buf[n->id] : NULL;
    if (!p) {
        /* A generator asked for a buffer the module generator did not bind:
         * an internal error; keep emitting valid IR and report once. */
        cg_fail(c, n, "internal: no buffer bound for %s node %%%d", gim_op_name(n->op), n->id);
        return LLVMConstPointerNull(c->ptr);
    }
    return p;
}

LLVMValueRef cg_gep(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(c->b, c->f32, base, &idx, 1, "");
}

LLVMValueRef cg_loadf(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->f32, cg_gep(c, base, idx), "");
    LLVMSetAlignment(v, 4);
    return v;
}

void cg_storef(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v) {
    LLVMValueRef s = LLVMBuildStore(c->b, v, cg_gep(c, base, idx));
    LLVMSetAlignment(s, 4);
}

LLVMValueRef cg_loadi32(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx) {
    LLVMValueRef p = LLVMBuildInBoundsGEP2(c->b, c->i32, base, &idx, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->i32, p, "");
    LLVMSetAlignment(v, 4);
    return v;
}

/* Bytes of n floats (n an i64 value). */
static LLVMValueRef float_bytes(cg_ctx *c, LLVMValueRef n) {
    return LLVMBuildNUWMul(c->b, n, cg_i64(c, 4), "bytes");
}

void cg_zero(cg_ctx *c, LLVMValueRef dst, LLVMValueRef n) {
    LLVMValueRef s = LLVMBuildMemSet(c->b, dst, LLVMConstInt(LLVMInt8TypeInContext(c->ctx), 0, 0),
                                     float_bytes(c, n), 4);
    (void)s;
}

void cg_copy(cg_ctx *c, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef n) {
    LLVMBuildMemCpy(c->b, dst, 4, src, 4, float_bytes(c, n));
}

/* ---- index arithmetic ---- */

LLVMValueRef cg_add(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(c->b, a, b, ""); }
LLVMValueRef cg_mul(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(c->b, a, b, ""); }

LLVMValueRef cg_addk(cg_ctx *c, LLVMValueRef a, int64_t k) {
    return k == 0 ? a : LLVMBuildNSWAdd(c->b, a, cg_i64(c, k), "");
}

LLVMValueRef cg_mulk(cg_ctx *c, LLVMValueRef a, int64_t k) {
    if (k == 1) return a;
    if (k == 0) return cg_i64(c, 0);
    return LLVMBuildNSWMul(c->b, a, cg_i64(c, k), "");
}

LLVMValueRef cg_mad(cg_ctx *c, LLVMValueRef a, int64_t k, LLVMValueRef b) {
    return cg_add(c, cg_mulk(c, a, k), b);
}

/* ---- float math ---- */

/* Declares (once) an overloaded intrinsic on float or on x's vector type. */
static LLVMValueRef intrinsic(cg_ctx *c, const char *name, LLVMTypeRef ty, LLVMTypeRef *fty) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, &ty, 1);
    *fty = LLVMIntrinsicGetType(c->ctx, id, &ty, 1);
    return f;
}

static LLVMValueRef call_intrinsic1(cg_ctx *c, const char *name, LLVMValueRef x, const char *vname) {
    LLVMTypeRef fty;
    LLVMValueRef f = intrinsic(c, name, LLVMTypeOf(x), &fty);
    return LLVMBuildCall2(c->b, fty, f, &x, 1, vname);
}

/* A read prefetch of the n floats at p into every cache level, one per 64-byte
 * line. A prefetch never faults and changes no value. */
void cg_prefetch(cg_ctx *c, LLVMValueRef p, int64_t n) {
    LLVMTypeRef fty;
    LLVMValueRef f = intrinsic(c, "llvm.prefetch", c->ptr, &fty);
    for (int64_t k = 0; k < n; k += 16) {
        LLVMValueRef a[4] = {cg_gep(c, p, cg_i64(c, k)), cg_i32(c, 0), cg_i32(c, 3), cg_i32(c, 1)};
        LLVMBuildCall2(c->b, fty, f, a, 4, "");
    }
}

/* maxnum: the larger of a and b (the non-NaN one if one is NaN). */
LLVMValueRef cg_fmax(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) {
    LLVMTypeRef fty;
    LLVMValueRef f = intrinsic(c, "llvm.maxnum", LLVMTypeOf(a), &fty);
    LLVMValueRef args[2] = {a, b};
    return LLVMBuildCall2(c->b, fty, f, args, 2, "max");
}

/* e^x as straight-line float code, so loops calling it vectorise (llvm.exp
 * would become one expf call per lane): x = n·ln2 + r with n = rint(x/ln2),
 * |r| <= ln2/2 (ln2 in two parts, so n·ln2_hi is exact); e^r = 1 + r +
 * r²·P(r) with Cephes' expf coefficients (about 1 ulp); times 2^n applied as
 * two powers of two 2^⌊n/2⌋·2^(n−⌊n/2⌋), so results that are subnormal or
 * overflow come out as such (x > 88.73 gives +inf, x < −103.9 gives 0). NaN
 * gives NaN. */
LLVMValueRef cg_exp(cg_ctx *c, LLVMValueRef x) {
    if (LLVMTypeOf(x) != c->f32) return call_intrinsic1(c, "llvm.exp", x, "exp");
    LLVMBuilderRef b = c->b;
    LLVMValueRef is_num = LLVMBuildFCmp(b, LLVMRealORD, x, x, "");
    LLVMValueRef xc = LLVMBuildSelect(b, is_num, x, cg_f32(c, 0.0f), "");
    xc = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, xc, cg_f32(c, 89.0f), ""), cg_f32(c, 89.0f), xc, "");
    xc = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, xc, cg_f32(c, -104.0f), ""), cg_f32(c, -104.0f), xc, "");
    LLVMValueRef nf = call_intrinsic1(c, "llvm.rint", LLVMBuildFMul(b, xc, cg_f32(c, 1.44269504088896341f), ""), "n");
    LLVMValueRef r = LLVMBuildFSub(b, xc, LLVMBuildFMul(b, nf, cg_f32(c, 0.693359375f), ""), "");
    r = LLVMBuildFSub(b, r, LLVMBuildFMul(b, nf, cg_f32(c, -2.12194440e-4f), ""), "r");
    static const float P[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                              4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
    LLVMValueRef p = cg_f32(c, P[0]);
    for (int i = 1; i < 6; i++) p = LLVMBuildFAdd(b, LLVMBuildFMul(b, p, r, ""), cg_f32(c, P[i]), "");
    LLVMValueRef r2 = LLVMBuildFMul(b, r, r, "");
    LLVMValueRef er = LLVMBuildFAdd(b, LLVMBuildFAdd(b, LLVMBuildFMul(b, p, r2, ""), r, ""), cg_f32(c, 1.0f), "");
    /* 2^n1 · 2^n2, n1 = n >> 1, n2 = n − n1, each a normal float's exponent */
    LLVMValueRef n = LLVMBuildFPToSI(b, nf, c->i32, "");
    LLVMValueRef n1 = LLVMBuildAShr(b, n, cg_i32(c, 1), "");
    LLVMValueRef n2 = LLVMBuildSub(b, n, n1, "");
    LLVMValueRef s1 = LLVMBuildBitCast(b, LLVMBuildShl(b, LLVMBuildAdd(b, n1, cg_i32(c, 127), ""), cg_i32(c, 23), ""),
                                       c->f32, "");
    LLVMValueRef s2 = LLVMBuildBitCast(b, LLVMBuildShl(b, LLVMBuildAdd(b, n2, cg_i32(c, 127), ""), cg_i32(c, 23), ""),
                                       c->f32, "");
    LLVMValueRef v = LLVMBuildFMul(b, LLVMBuildFMul(b, er, s1, ""), s2, "");
    return LLVMBuildSelect(b, is_num, v, x, "exp");
}
LLVMValueRef cg_log(cg_ctx *c, LLVMValueRef x) { return call_intrinsic1(c, "llvm.log", x, "log"); }
LLVMValueRef cg_sqrt(cg_ctx *c, LLVMValueRef x) { return call_intrinsic1(c, "llvm.sqrt", x, "sqrt"); }

/* tanh has no LLVM intrinsic. For |x| < 0.4 an odd minimax-style Taylor
 * polynomial (truncation < 1e-7 relative there), otherwise 1 - 2/(e^{2|x|} + 1)
 * with the sign restored; both branches are straight-line code, so a loop
 * applying it still vectorises (exp through llvm.exp). e^{2|x|} overflows to
 * inf for large |x|, giving exactly ±1. */
LLVMValueRef cg_tanh(cg_ctx *c, LLVMValueRef x) {
    LLVMTypeRef fty;
    LLVMValueRef fabs_f = intrinsic(c, "llvm.fabs", LLVMTypeOf(x), &fty);
    LLVMValueRef ax = LLVMBuildCall2(c->b, fty, fabs_f, &x, 1, "abs");
    /* large: 1 - 2 / (exp(2|x|) + 1) */
    LLVMValueRef e = cg_exp(c, LLVMBuildFMul(c->b, ax, cg_f32(c, 2.0f), ""));
    LLVMValueRef den = LLVMBuildFAdd(c->b, e, cg_f32(c, 1.0f), "");
    LLVMValueRef big = LLVMBuildFSub(c->b, cg_f32(c, 1.0f), LLVMBuildFDiv(c->b, cg_f32(c, 2.0f), den, ""), "");
    /* small: x (1 + x² (-1/3 + x² (2/15 + x² (-17/315 + x² (62/2835 + x² (-1382/155925)))))) */
    LLVMValueRef x2 = LLVMBuildFMul(c->b, x, x, "x2");
    static const float k[] = {-1382.0f / 155925.0f, 62.0f / 2835.0f, -17.0f / 315.0f, 2.0f / 15.0f,
                              -1.0f / 3.0f, 1.0f};
    LLVMValueRef p = cg_f32(c, k[0]);
    for (int i = 1; i < 6; i++) p = LLVMBuildFAdd(c->b, LLVMBuildFMul(c->b, p, x2, ""), cg_f32(c, k[i]), "");
    LLVMValueRef small = LLVMBuildFMul(c->b, x, p, "");
    /* copysign(big, x) */
    LLVMValueRef cs_f = intrinsic(c, "llvm.copysign", LLVMTypeOf(x), &fty);
    LLVMValueRef args[2] = {big, x};
    LLVMValueRef sbig = LLVMBuildCall2(c->b, fty, cs_f, args, 2, "");
    LLVMValueRef is_small = LLVMBuildFCmp(c->b, LLVMRealOLT, ax, cg_f32(c, 0.4f), "");
    return LLVMBuildSelect(c->b, is_small, small, sbig, "tanh");
}

LLVMValueRef cg_select(cg_ctx *c, LLVMValueRef cond, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildSelect(c->b, cond, a, b, "");
}

LLVMValueRef cg_keep_positive(cg_ctx *c, LLVMValueRef keep, LLVMValueRef v) {
    LLVMValueRef pos = LLVMBuildFCmp(c->b, LLVMRealOGT, keep, LLVMConstNull(LLVMTypeOf(keep)), "pos");
    return LLVMBuildSelect(c->b, pos, v, LLVMConstNull(LLVMTypeOf(v)), "");
}

/* ---- loops ---- */

static LLVMBasicBlockRef new_block(cg_ctx *c, const char *name, const char *suffix) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s.%s", name ? name : "loop", suffix);
    return LLVMAppendBasicBlockInContext(c->ctx, c->fn, buf);
}

/* preheader -> header: iv = phi [start, pre] [iv+1, latch]; iv < end ? body : exit
 * The latch and exit blocks are placed after the body when the loop closes,
 * so the printed IR reads in source order. */
cg_loop cg_for_begin(cg_ctx *c, LLVMValueRef start, LLVMValueRef end, const char *name) {
    cg_loop l = {0};
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
    l.header = new_block(c, name, "head");
    l.body = new_block(c, name, "body");
    l.exit = new_block(c, name, "exit");
    l.end = end;
    LLVMBuildBr(c->b, l.header);
    LLVMPositionBuilderAtEnd(c->b, l.header);
    l.phi = LLVMBuildPhi(c->b, c->i64, name ? name : "i");
    LLVMAddIncoming(l.phi, &start, &pre, 1);
    l.iv = l.phi;
    LLVMValueRef more = LLVMBuildICmp(c->b, LLVMIntSLT, l.phi, end, "");
    LLVMBuildCondBr(c->b, more, l.body, l.exit);
    LLVMPositionBuilderAtEnd(c->b, l.body);
    return l;
}

cg_loop cg_for(cg_ctx *c, int64_t end, const char *name) {
    return cg_for_begin(c, cg_i64(c, 0), cg_i64(c, end), name);
}

void cg_for_end(cg_ctx *c, cg_loop *l) {
    const char *name = LLVMGetValueName(l->phi);
    l->latch = new_block(c, name && *name ? name : "i", "latch");
    LLVMBuildBr(c->b, l->latch);
    LLVMPositionBuilderAtEnd(c->b, l->latch);
    LLVMValueRef next = LLVMBuildNSWAdd(c->b, l->phi, cg_i64(c, 1), "");
    LLVMBuildBr(c->b, l->header);
    LLVMAddIncoming(l->phi, &next, &l->latch, 1);
    LLVMMoveBasicBlockAfter(l->exit, l->latch);
    LLVMPositionBuilderAtEnd(c->b, l->exit);
}

/* ---- vectorised reductions ---- */

enum { LANES = 16 };

/* The sum of a vector's LANES lanes, added pairwise: 16 -> 8 -> 4 -> 2 -> 1
 * (a fixed order, so every caller gets the same bits). */
static LLVMValueRef sum_lanes(cg_ctx *c, LLVMValueRef v) {
    for (int w = LANES / 2; w >= 1; w /= 2) {
        LLVMValueRef lo[LANES / 2], hi[LANES / 2];
        for (int i = 0; i < w; i++) {
            lo[i] = cg_i32(c, i);
            hi[i] = cg_i32(c, w + i);
        }
        LLVMValueRef poison = LLVMGetPoison(LLVMTypeOf(v));
        LLVMValueRef a = LLVMBuildShuffleVector(c->b, v, poison, LLVMConstVector(lo, (unsigned)w), "");
        LLVMValueRef h = LLVMBuildShuffleVector(c->b, v, poison, LLVMConstVector(hi, (unsigned)w), "");
        v = LLVMBuildFAdd(c->b, a, h, "");
    }
    return LLVMBuildExtractElement(c->b, v, cg_i32(c, 0), "lanes");
}

static LLVMValueRef load_vec(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx, LLVMTypeRef vt) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, vt, cg_gep(c, base, idx), "");
    LLVMSetAlignment(v, 4);
    return v;
}

/* Σ_k a[abase + k] (· b[bbase + k] when b is given). */
static LLVMValueRef reduce(cg_ctx *c, LLVMValueRef a, LLVMValueRef abase, LLVMValueRef b, LLVMValueRef bbase,
                           int64_t n) {
    LLVMValueRef total = cg_f32(c, 0.0f);
    int64_t nv = n / LANES;
    if (nv > 0) {
        LLVMTypeRef vt = LLVMVectorType(c->f32, LANES);
        LLVMValueRef acc = cg_var(c, "vacc", LLVMConstNull(vt));
        cg_loop lv = cg_for(c, nv, "v");
        LLVMValueRef off = cg_mulk(c, lv.iv, LANES);
        LLVMValueRef x = load_vec(c, a, cg_add(c, abase, off), vt);
        if (b) x = LLVMBuildFMul(c->b, x, load_vec(c, b, cg_add(c, bbase, off), vt), "");
        cg_var_set(c, acc, LLVMBuildFAdd(c->b, cg_var_get(c, acc), x, ""));
        cg_for_end(c, &lv);
        total = sum_lanes(c, cg_var_get(c, acc));
    }
    if (n % LANES) {
        LLVMValueRef acc = cg_var(c, "tail", total);
        cg_loop k = cg_for_begin(c, cg_i64(c, nv * LANES), cg_i64(c, n), "t");
        LLVMValueRef x = cg_loadf(c, a, cg_add(c, abase, k.iv));
        if (b) x = LLVMBuildFMul(c->b, x, cg_loadf(c, b, cg_add(c, bbase, k.iv)), "");
        cg_var_set(c, acc, LLVMBuildFAdd(c->b, cg_var_get(c, acc), x, ""));
        cg_for_end(c, &k);
        total = cg_var_get(c, acc);
    }
    return total;
}

LLVMValueRef cg_sum(cg_ctx *c, LLVMValueRef x, LLVMValueRef base, int64_t n) {
    return reduce(c, x, base, NULL, NULL, n);
}

LLVMValueRef cg_dot(cg_ctx *c, LLVMValueRef a, LLVMValueRef abase, LLVMValueRef b, LLVMValueRef bbase, int64_t n) {
    return reduce(c, a, abase, b, bbase, n);
}

void cg_axpy(cg_ctx *c, int64_t n, LLVMValueRef alpha, LLVMValueRef x, LLVMValueRef y) {
    int64_t nv = n / LANES;
    if (nv > 0) {
        LLVMTypeRef vt = LLVMVectorType(c->f32, LANES);
        LLVMValueRef zeros[LANES];
        for (int i = 0; i < LANES; i++) zeros[i] = cg_i32(c, 0);
        LLVMValueRef one = LLVMBuildInsertElement(c->b, LLVMGetPoison(vt), alpha, cg_i32(c, 0), "");
        LLVMValueRef av = LLVMBuildShuffleVector(c->b, one, LLVMGetPoison(vt), LLVMConstVector(zeros, LANES), "alpha");
        cg_loop lv = cg_for(c, nv, "v");
        LLVMValueRef off = cg_mulk(c, lv.iv, LANES);
        LLVMValueRef xv = load_vec(c, x, off, vt), yv = load_vec(c, y, off, vt);
        LLVMValueRef r = LLVMBuildFAdd(c->b, yv, LLVMBuildFMul(c->b, av, xv, ""), "");
        LLVMValueRef st = LLVMBuildStore(c->b, r, cg_gep(c, y, off));
        LLVMSetAlignment(st, 4);
        cg_for_end(c, &lv);
    }
    if (n % LANES) {
        cg_loop k = cg_for_begin(c, cg_i64(c, nv * LANES), cg_i64(c, n), "t");
        LLVMValueRef r = LLVMBuildFAdd(c->b, cg_loadf(c, y, k.iv), LLVMBuildFMul(c->b, alpha, cg_loadf(c, x, k.iv), ""), "");
        cg_storef(c, y, k.iv, r);
        cg_for_end(c, &k);
    }
}

/* The m dot products rows[i] · b (i < m, m ≤ CG_DOTS_MAX) in one pass over
 * b: m independent 16-lane accumulators, so the loads of the m rows (often
 * gathered from random places) are in flight at once and no add waits for
 * the one before it, where m calls of cg_dot would each wait n/16 add
 * latencies. Each product is summed in cg_dot's order (lane-wise, the lanes
 * pairwise, then the scalar tail): the same bits. */
void cg_dots(cg_ctx *c, const LLVMValueRef *rows, int m, LLVMValueRef b, int64_t n, LLVMValueRef *out) {
    for (int i = 0; i < m; i++) out[i] = cg_f32(c, 0.0f);
    int64_t nv = n / LANES;
    if (nv > 0) {
        LLVMTypeRef vt = LLVMVectorType(c->f32, LANES);
        LLVMValueRef acc[CG_DOTS_MAX];
        for (int i = 0; i < m; i++) acc[i] = cg_var(c, "vacc", LLVMConstNull(vt));
        cg_loop lv = cg_for(c, nv, "v");
        LLVMValueRef off = cg_mulk(c, lv.iv, LANES);
        LLVMValueRef bv = load_vec(c, b, off, vt);
        for (int i = 0; i < m; i++) {
            LLVMValueRef x = LLVMBuildFMul(c->b, load_vec(c, rows[i], off, vt), bv, "");
            cg_var_set(c, acc[i], LLVMBuildFAdd(c->b, cg_var_get(c, acc[i]), x, ""));
        }
        cg_for_end(c, &lv);
        for (int i = 0; i < m; i++) out[i] = sum_lanes(c, cg_var_get(c, acc[i]));
    }
    for (int64_t k = nv * LANES; k < n; k++)   /* the tail, unrolled (fewer than 16) */
        for (int i = 0; i < m; i++)
            out[i] = LLVMBuildFAdd(c->b, out[i],
                                   LLVMBuildFMul(c->b, cg_loadf(c, rows[i], cg_i64(c, k)),
                                                 cg_loadf(c, b, cg_i64(c, k)), ""), "");
}

/* y = (zero ? 0 : y) + Σ_{i<m} alpha[i]·rows[i] (m ≤ CG_DOTS_MAX), the terms
 * added in order i = 0, 1, ...: the bits of m cg_axpy calls (after zeroing y
 * when zero), with y read and written once rather than m times. */
void cg_axpys(cg_ctx *c, int64_t n, const LLVMValueRef *alpha, const LLVMValueRef *rows, int m, LLVMValueRef y,
              bool zero) {
    int64_t nv = n / LANES;
    if (nv > 0) {
        LLVMTypeRef vt = LLVMVectorType(c->f32, LANES);
        LLVMValueRef zeros[LANES], av[CG_DOTS_MAX];
        for (int i = 0; i < LANES; i++) zeros[i] = cg_i32(c, 0);
        for (int i = 0; i < m; i++) {
            LLVMValueRef one = LLVMBuildInsertElement(c->b, LLVMGetPoison(vt), alpha[i], cg_i32(c, 0), "");
            av[i] = LLVMBuildShuffleVector(c->b, one, LLVMGetPoison(vt), LLVMConstVector(zeros, LANES), "alpha");
        }
        cg_loop lv = cg_for(c, nv, "v");
        LLVMValueRef off = cg_mulk(c, lv.iv, LANES);
        LLVMValueRef r = zero ? LLVMConstNull(vt) : load_vec(c, y, off, vt);
        for (int i = 0; i < m; i++)
            r = LLVMBuildFAdd(c->b, r, LLVMBuildFMul(c->b, av[i], load_vec(c, rows[i], off, vt), ""), "");
        LLVMValueRef st = LLVMBuildStore(c->b, r, cg_gep(c, y, off));
        LLVMSetAlignment(st, 4);
        cg_for_end(c, &lv);
    }
    for (int64_t k = nv * LANES; k < n; k++) {
        LLVMValueRef ki = cg_i64(c, k);
        LLVMValueRef r = zero ? cg_f32(c, 0.0f) : cg_loadf(c, y, ki);
        for (int i = 0; i < m; i++)
            r = LLVMBuildFAdd(c->b, r, LLVMBuildFMul(c->b, alpha[i], cg_loadf(c, rows[i], ki), ""), "");
        cg_storef(c, y, ki, r);
    }
}

/* ---- accumulators ---- */

LLVMValueRef cg_entry_alloca(cg_ctx *c, LLVMTypeRef t, const char *name, unsigned align) {
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(c->fn);
    LLVMBuilderRef eb = LLVMCreateBuilderInContext(c->ctx);
    LLVMValueRef first = LLVMGetFirstInstruction(entry);
    if (first) LLVMPositionBuilderBefore(eb, first);
    else LLVMPositionBuilderAtEnd(eb, entry);
    LLVMValueRef a = LLVMBuildAlloca(eb, t, name);
    LLVMSetAlignment(a, align);
    LLVMDisposeBuilder(eb);
    return a;
}

LLVMValueRef cg_var(cg_ctx *c, const char *name, LLVMValueRef init) {
    LLVMValueRef slot = cg_entry_alloca(c, LLVMTypeOf(init), name ? name : "var", 4);
    cg_var_set(c, slot, init);
    return slot;
}

LLVMValueRef cg_var_get(cg_ctx *c, LLVMValueRef var) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, LLVMGetAllocatedType(var), var, "");
    LLVMSetAlignment(v, 4);
    return v;
}

void cg_var_set(cg_ctx *c, LLVMValueRef var, LLVMValueRef v) {
    LLVMValueRef s = LLVMBuildStore(c->b, v, var);
    LLVMSetAlignment(s, 4);
}

/* ---- conditionals ---- */

cg_if cg_if_begin(cg_ctx *c, LLVMValueRef cond, const char *name) {
    cg_if i;
    i.then = new_block(c, name ? name : "if", "then");
    i.done = new_block(c, name ? name : "if", "done");
    LLVMBuildCondBr(c->b, cond, i.then, i.done);
    LLVMPositionBuilderAtEnd(c->b, i.then);
    return i;
}

void cg_if_end(cg_ctx *c, cg_if *i) {
    LLVMBasicBlockRef cur = LLVMGetInsertBlock(c->b);
    LLVMBuildBr(c->b, i->done);
    LLVMMoveBasicBlockAfter(i->done, cur);
    LLVMPositionBuilderAtEnd(c->b, i->done);
}

/* ---- calls ---- */

LLVMValueRef cg_call(cg_ctx *c, const char *fn, LLVMTypeRef ret, LLVMValueRef *args, int n, LLVMTypeRef *types) {
    LLVMTypeRef fty = LLVMFunctionType(ret, types, (unsigned)n, 0);
    LLVMValueRef f = LLVMGetNamedFunction(c->mod, fn);
    if (!f) {
        f = LLVMAddFunction(c->mod, fn, fty);
        LLVMSetLinkage(f, LLVMExternalLinkage);
    }
    return LLVMBuildCall2(c->b, fty, f, args, (unsigned)n, "");
}

void cg_sgemm_v(cg_ctx *c, bool ta, bool tb, LLVMValueRef M, LLVMValueRef N, LLVMValueRef K, float alpha,
                LLVMValueRef A, int64_t lda, LLVMValueRef B, int64_t ldb, float beta,
                LLVMValueRef C, int64_t ldc) {
    LLVMTypeRef t[13] = {c->i32, c->i32, c->i64, c->i64, c->i64, c->f32, c->ptr, c->i64,
                         c->ptr, c->i64, c->f32, c->ptr, c->i64};
    LLVMValueRef a[13] = {cg_i32(c, ta), cg_i32(c, tb), M, N, K,
                          cg_f32(c, alpha), A, cg_i64(c, lda), B, cg_i64(c, ldb), cg_f32(c, beta),
                          C, cg_i64(c, ldc)};
    cg_call(c, "gim_rt_sgemm", c->void_t, a, 13, t);
}

void cg_sgemm(cg_ctx *c, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              LLVMValueRef A, int64_t lda, LLVMValueRef B, int64_t ldb, float beta,
              LLVMValueRef C, int64_t ldc) {
    cg_sgemm_v(c, ta, tb, cg_i64(c, M), cg_i64(c, N), cg_i64(c, K), alpha, A, lda, B, ldb, beta, C, ldc);
}

LLVMValueRef cg_rand_below(cg_ctx *c, uint64_t stream, LLVMValueRef counter, LLVMValueRef n) {
    if (LLVMTypeOf(n) != c->i32) n = LLVMBuildTrunc(c->b, n, c->i32, "");
    if (LLVMTypeOf(counter) != c->i64) counter = LLVMBuildZExt(c->b, counter, c->i64, "");
    LLVMTypeRef t[4] = {c->i64, c->i64, c->i64, c->i32};
    LLVMValueRef a[4] = {c->seed, LLVMConstInt(c->i64, stream, 0), counter, n};
    LLVMValueRef r = cg_call(c, "gim_rt_rand_below", c->i32, a, 4, t);
    return LLVMBuildZExt(c->b, r, c->i64, "rand");
}

/* ---- parallel loops ---- */

int64_t cg_par_parts(int64_t n) {
    return gim_rt_parts(n);
}

cg_par cg_par_begin(cg_ctx *c, const char *name, LLVMValueRef *vals, int nvals) {
    cg_par p = {0};
    p.outer_fn = c->fn;
    p.outer_block = LLVMGetInsertBlock(c->b);
    p.call = c->call, p.step = c->step, p.seed = c->seed, p.lr = c->lr, p.labels = c->labels;
    if (nvals > CG_PAR_MAX_VALUES) nvals = CG_PAR_MAX_VALUES;
    /* the call's values loaded at entry travel too, after the caller's */
    LLVMValueRef all[CG_PAR_MAX_VALUES + 5];
    LLVMValueRef *state[5] = {&c->call, &c->step, &c->seed, &c->lr, &c->labels};
    int nall = 0;
    for (int i = 0; i < nvals; i++) all[nall++] = vals[i];
    for (int i = 0; i < 5; i++)
        if (*state[i]) all[nall++] = *state[i];

    /* env: an array of the values, in the caller's entry block */
    LLVMTypeRef envt = LLVMArrayType(c->i64, (unsigned)(nall > 0 ? nall : 1));
    p.env = cg_entry_alloca(c, envt, "par.env", 8);
    for (int i = 0; i < nall; i++) {
        LLVMValueRef at = LLVMBuildInBoundsGEP2(c->b, c->i64, p.env, (LLVMValueRef[]){cg_i64(c, i)}, 1, "");
        LLVMBuildStore(c->b, all[i], at);
    }

    /* the body function */
    size_t len = 0;
    const char *outer = LLVMGetValueName2(c->fn, &len);
    char fname[512];
    static int counter;
    snprintf(fname, sizeof fname, "%.*s.par.%s.%d", (int)(len < 400 ? len : 400), outer, name ? name : "loop",
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    LLVMTypeRef params[4] = {c->ptr, c->i64, c->i64, c->i32};
    LLVMTypeRef fty = LLVMFunctionType(c->void_t, params, 4, 0);
    p.fn = LLVMAddFunction(c->mod, fname, fty);
    LLVMSetLinkage(p.fn, LLVMInternalLinkage);
    unsigned kind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(p.fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(c->ctx, kind, 0));
    c->fn = p.fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, p.fn, "entry"));
    LLVMValueRef env = LLVMGetParam(p.fn, 0);
    for (int i = 0; i < nall; i++) {
        LLVMValueRef at = LLVMBuildInBoundsGEP2(c->b, c->i64, env, (LLVMValueRef[]){cg_i64(c, i)}, 1, "");
        all[i] = LLVMBuildLoad2(c->b, LLVMTypeOf(all[i]), at, "par.v");
    }
    nall = 0;
    for (int i = 0; i < nvals; i++) vals[i] = all[nall++];
    for (int i = 0; i < 5; i++)
        if (*state[i]) *state[i] = all[nall++];
    p.begin = LLVMGetParam(p.fn, 1);
    p.end = LLVMGetParam(p.fn, 2);
    p.part = LLVMBuildSExt(c->b, LLVMGetParam(p.fn, 3), c->i64, "part");
    return p;
}

void cg_par_end_v(cg_ctx *c, cg_par *p, LLVMValueRef n) {
    LLVMBuildRetVoid(c->b);
    c->fn = p->outer_fn;
    c->call = p->call, c->step = p->step, c->seed = p->seed, c->lr = p->lr, c->labels = p->labels;
    LLVMPositionBuilderAtEnd(c->b, p->outer_block);
    LLVMTypeRef t[3] = {c->i64, c->ptr, c->ptr};
    LLVMValueRef a[3] = {n, p->fn, p->env};
    cg_call(c, "gim_rt_parallel_for", c->void_t, a, 3, t);
}

void cg_par_end(cg_ctx *c, cg_par *p, int64_t n) {
    cg_par_end_v(c, p, cg_i64(c, n));
}

/* ---- errors ---- */

int cg_fail(cg_ctx *c, const gim_node *n, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->errors++;
    if (c->diag) {
        gim_loc loc = n ? n->loc : (gim_loc){0};
        if (n && n->name) gim_error(c->diag, loc, "%s (in %s)", msg, n->name);
        else gim_error(c->diag, loc, "%s", msg);
    }
    return -1;
}
