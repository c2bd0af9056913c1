/* `gimc export`: one module's features as a C function in an object file.
 *
 * The object holds, in one LLVM module compiled for the host CPU:
 *
 *   - the forward function of every module the chosen one depends on (the
 *     code gimc runs, node functions and all), internal;
 *   - their parameters, as read from a checkpoint, in constant data laid out
 *     as the forward functions read them (gim_exec_module.params);
 *   - the two runtime functions generated code calls besides OpenBLAS and
 *     libm, gim_rt_parallel_for and gim_rt_sgemm, as internal serial
 *     versions that make the same calls in the same order (so the same sums)
 *     as the runtime's pool: parts in order on the calling thread, products
 *     cut as GIM_RT_SGEMM_SPLIT_FLOPS / GIM_RT_SGEMM_UNIT say;
 *   - one external function, <prefix>_features(x, n, features), that runs
 *     the forward passes over n examples a compiled batch at a time. A last
 *     partial batch is padded by repeating its final example, as
 *     gim_extract_features does; only real examples' features are written.
 *     It sets OpenBLAS to one thread for the call and restores its count
 *     after: gim runs OpenBLAS single-threaded (its pool cuts the work), and
 *     OpenBLAS's threaded products add in another order (measured: other
 *     last bits).
 *
 * What holds: the object's undefined symbols are OpenBLAS's (cblas_*,
 * openblas_get/set_num_threads), libm's and libc's (memcpy, memset, aligned_alloc, free) and nothing of gim or
 * LLVM; every other symbol is internal but <prefix>_features. The features
 * are the bits gim_extract_features computes for the same input and batch
 * (tests/test_export.c checks, through examples/). */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/TargetMachine.h>

#include "codegen.h"

/* cblas.h's enums (CBLAS_ORDER, CBLAS_TRANSPOSE), passed as int. */
enum { XP_CBLAS_ROW_MAJOR = 101, XP_CBLAS_NO_TRANS = 111, XP_CBLAS_TRANS = 112 };

static void fn_attr(cg_ctx *c, LLVMValueRef fn, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

/* Turns the declaration of `name` (made by cg_call where generated code
 * calls it) into an internal definition, the builder in its entry block.
 * NULL when nothing calls it. */
static LLVMValueRef define_declared(cg_ctx *c, const char *name) {
    LLVMValueRef f = LLVMGetNamedFunction(c->mod, name);
    if (!f || !LLVMIsDeclaration(f)) return NULL;
    LLVMSetLinkage(f, LLVMInternalLinkage);
    fn_attr(c, f, "nounwind");
    fn_attr(c, f, "noinline");
    c->fn = f;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, f, "entry"));
    return f;
}

/* a·t / p for 0 <= t <= p: the pool's part bounds (runtime/pool.c). The pool
 * multiplies in 128 bits; here 64 suffice, t being at most GIM_RT_PARTS and a
 * a count of items in memory, far below 2^60; and 128-bit division would be
 * a call into libgcc (__divti3), which an exported object must not need. */
static LLVMValueRef part_bound(cg_ctx *c, LLVMValueRef a, LLVMValueRef t, LLVMValueRef p) {
    return LLVMBuildSDiv(c->b, LLVMBuildNSWMul(c->b, a, t, ""), p, "");
}

static LLVMValueRef min_i64(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) {
    return cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, a, b, ""), a, b);
}

/* gim_rt_parallel_for(n, fn, env), serial: the pool's cut of [0, n) into
 * min(GIM_RT_PARTS, n) parts, each part called in order with the in-part
 * flag set (gim_rt_sgemm reads it, as gim_rt_in_parallel). */
static void define_parallel_for(cg_ctx *c, LLVMValueRef in_part) {
    LLVMValueRef f = define_declared(c, "gim_rt_parallel_for");
    if (!f) return;
    LLVMValueRef n = LLVMGetParam(f, 0), body = LLVMGetParam(f, 1), env = LLVMGetParam(f, 2);
    LLVMValueRef parts = min_i64(c, n, cg_i64(c, GIM_RT_PARTS));
    LLVMTypeRef i1 = c->i1;
    LLVMValueRef was = LLVMBuildLoad2(c->b, i1, in_part, "was_in_part");
    LLVMBuildStore(c->b, LLVMConstInt(i1, 1, 0), in_part);
    cg_loop t = cg_for_begin(c, cg_i64(c, 0), parts, "part");
    LLVMValueRef b = part_bound(c, n, t.iv, parts), e = part_bound(c, n, cg_addk(c, t.iv, 1), parts);
    cg_if ne = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntSLT, b, e, ""), "nonempty");
    LLVMTypeRef pt[4] = {c->ptr, c->i64, c->i64, c->i32};
    LLVMValueRef args[4] = {env, b, e, LLVMBuildTrunc(c->b, t.iv, c->i32, "")};
    LLVMBuildCall2(c->b, LLVMFunctionType(c->void_t, pt, 4, 0), body, args, 4, "");
    cg_if_end(c, &ne);
    cg_for_end(c, &t);
    LLVMBuildStore(c->b, was, in_part);
    LLVMBuildRetVoid(c->b);
}

/* One cblas_sgemm (row-major), dimensions and strides as i64. */
static void call_cblas(cg_ctx *c, LLVMValueRef ta, LLVMValueRef tb, LLVMValueRef M, LLVMValueRef N, LLVMValueRef K,
                       LLVMValueRef alpha, LLVMValueRef A, LLVMValueRef lda, LLVMValueRef B, LLVMValueRef ldb,
                       LLVMValueRef beta, LLVMValueRef C, LLVMValueRef ldc) {
    LLVMTypeRef i32 = c->i32;
    LLVMValueRef trans[2];
    LLVMValueRef flags[2] = {ta, tb};
    for (int i = 0; i < 2; i++)
        trans[i] = cg_select(c, LLVMBuildICmp(c->b, LLVMIntNE, flags[i], cg_i32(c, 0), ""),
                             cg_i32(c, XP_CBLAS_TRANS), cg_i32(c, XP_CBLAS_NO_TRANS));
#define I32(v) LLVMBuildTrunc(c->b, (v), i32, "")
    LLVMTypeRef t[14] = {i32, i32, i32, i32, i32, i32, c->f32, c->ptr, i32, c->ptr, i32, c->f32, c->ptr, i32};
    LLVMValueRef a[14] = {cg_i32(c, XP_CBLAS_ROW_MAJOR), trans[0], trans[1], I32(M), I32(N), I32(K), alpha, A, I32(lda),
                          B, I32(ldb), beta, C, I32(ldc)};
#undef I32
    cg_call(c, "cblas_sgemm", c->void_t, a, 14, t);
}

/* gim_rt_sgemm, serial: kernels.c's cut (see GIM_RT_SGEMM_SPLIT_FLOPS), its
 * parts in order. */
static void define_sgemm(cg_ctx *c, LLVMValueRef in_part) {
    LLVMValueRef f = define_declared(c, "gim_rt_sgemm");
    if (!f) return;
    LLVMValueRef ta = LLVMGetParam(f, 0), tb = LLVMGetParam(f, 1), M = LLVMGetParam(f, 2), N = LLVMGetParam(f, 3),
                 K = LLVMGetParam(f, 4), alpha = LLVMGetParam(f, 5), A = LLVMGetParam(f, 6), lda = LLVMGetParam(f, 7),
                 B = LLVMGetParam(f, 8), ldb = LLVMGetParam(f, 9), beta = LLVMGetParam(f, 10),
                 C = LLVMGetParam(f, 11), ldc = LLVMGetParam(f, 12);
    /* 2.0 · M · N · K in double, left to right as in C */
    LLVMValueRef flops = LLVMConstReal(c->f64, 2.0);
    LLVMValueRef dims[3] = {M, N, K};
    for (int i = 0; i < 3; i++) flops = LLVMBuildFMul(c->b, flops, LLVMBuildSIToFP(c->b, dims[i], c->f64, ""), "");
    LLVMValueRef by_rows = LLVMBuildICmp(c->b, LLVMIntSGE, M, N, "by_rows");
    LLVMValueRef big = cg_select(c, by_rows, M, N);
    LLVMValueRef whole = LLVMBuildFCmp(c->b, LLVMRealOLT, flops, LLVMConstReal(c->f64, GIM_RT_SGEMM_SPLIT_FLOPS), "");
    whole = LLVMBuildOr(c->b, whole, LLVMBuildICmp(c->b, LLVMIntSLT, big, cg_i64(c, 2 * GIM_RT_SGEMM_UNIT), ""), "");
    whole = LLVMBuildOr(c->b, whole, LLVMBuildLoad2(c->b, c->i1, in_part, "in_part"), "whole");
    cg_if one = cg_if_begin(c, whole, "whole");
    call_cblas(c, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    LLVMBuildRetVoid(c->b);
    /* cg_if_end branches to its done block: start a dead block for it */
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, f, "unreachable"));
    cg_if_end(c, &one);

    LLVMValueRef blocks = LLVMBuildSDiv(c->b, cg_addk(c, big, GIM_RT_SGEMM_UNIT - 1), cg_i64(c, GIM_RT_SGEMM_UNIT), "");
    LLVMValueRef parts = min_i64(c, blocks, cg_i64(c, GIM_RT_PARTS));
    /* fewer, wider parts when the operand each part packs is large
     * (gim_rt_sgemm_parts) */
    LLVMValueRef shared = cg_select(c, by_rows, cg_mul(c, K, N), cg_mul(c, M, K));
    LLVMValueRef q = LLVMBuildSDiv(c->b, big, cg_i64(c, GIM_RT_SGEMM_WIDE), ""), cap = cg_i64(c, 2);
    for (int64_t v = 4; v <= GIM_RT_PARTS; v *= 2)
        cap = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSGE, q, cg_i64(c, v), ""), cg_i64(c, v), cap);
    LLVMValueRef wide = LLVMBuildICmp(c->b, LLVMIntSGT, shared, cg_i64(c, GIM_RT_SGEMM_SHARED_FLOATS), "wide");
    parts = cg_select(c, wide, min_i64(c, parts, cap), parts);
    cg_loop t = cg_for_begin(c, cg_i64(c, 0), parts, "part");
    LLVMValueRef b = cg_mulk(c, part_bound(c, blocks, t.iv, parts), GIM_RT_SGEMM_UNIT);
    LLVMValueRef e = cg_mulk(c, part_bound(c, blocks, cg_addk(c, t.iv, 1), parts), GIM_RT_SGEMM_UNIT);
    e = min_i64(c, e, big);
    LLVMValueRef len = LLVMBuildNSWSub(c->b, e, b, "len");
    LLVMValueRef zero = cg_i32(c, 0);
    LLVMValueRef a_t = LLVMBuildICmp(c->b, LLVMIntNE, ta, zero, ""), b_t = LLVMBuildICmp(c->b, LLVMIntNE, tb, zero, "");
    /* rows b..e of C: A advances by rows (or columns when transposed);
     * columns b..e: B advances by columns (or rows when transposed) */
    LLVMValueRef a_rows = cg_gep(c, A, cg_select(c, a_t, b, cg_mul(c, b, lda)));
    LLVMValueRef b_cols = cg_gep(c, B, cg_select(c, b_t, cg_mul(c, b, ldb), b));
    LLVMValueRef Ap = cg_select(c, by_rows, a_rows, A);
    LLVMValueRef Bp = cg_select(c, by_rows, B, b_cols);
    LLVMValueRef Cp = cg_gep(c, C, cg_select(c, by_rows, cg_mul(c, b, ldc), b));
    call_cblas(c, ta, tb, cg_select(c, by_rows, len, M), cg_select(c, by_rows, N, len), K, alpha, Ap, lda, Bp, ldb,
               beta, Cp, ldc);
    cg_for_end(c, &t);
    LLVMBuildRetVoid(c->b);
}

/* aligned_alloc(64, floats·4 rounded up to 64 bytes) */
static LLVMValueRef alloc_floats(cg_ctx *c, int64_t floats) {
    int64_t bytes = (floats * 4 + 63) / 64 * 64;
    if (bytes == 0) bytes = 64;
    LLVMTypeRef t[2] = {c->i64, c->i64};
    LLVMValueRef a[2] = {cg_i64(c, 64), cg_i64(c, bytes)};
    return cg_call(c, "aligned_alloc", c->ptr, a, 2, t);
}

/* Which modules module k needs (itself and, through its inputs, its
 * producers). */
static bool *needed_modules(const gim_exec_model *em, int k, gim_arena *a) {
    bool *need = gim_arena_alloc(a, (size_t)em->n_modules + 1);
    need[k] = true;
    for (int m = k; m >= 0; m--) {
        if (!need[m]) continue;
        for (int i = 0; i < em->modules[m].n_inputs; i++) {
            int p = em->slots[em->modules[m].inputs[i]].producer;
            if (p >= 0) need[p] = true;
        }
    }
    return need;
}

/* The model input the exported modules read (exactly one float input; a
 * label input is passed as NULL: only a loss reads it, and no forward pass
 * computes a loss). Returns its slot, or -1 after reporting. */
static int input_slot(gim_diag *d, const gim_exec_model *em, const bool *need, int k) {
    int slot = -1;
    for (int m = 0; m <= k; m++) {
        if (!need[m]) continue;
        for (int i = 0; i < em->modules[m].n_inputs; i++) {
            int s = em->modules[m].inputs[i];
            if (em->slots[s].producer >= 0 || em->slots[s].is_labels) continue;
            if (slot >= 0 && slot != s) {
                gim_error(d, (gim_loc){0}, "module %d reads two model inputs (%s and %s); export takes models with one",
                          k + 1, em->slots[slot].name, em->slots[s].name);
                return -1;
            }
            slot = s;
        }
    }
    if (slot < 0) gim_error(d, (gim_loc){0}, "module %d reads no model input: there is nothing to compute features from", k + 1);
    return slot;
}

/* <prefix>_features(const float *x, i64 n, float *features) -> i32. */
static void define_features(cg_ctx *c, const gim_exec_model *em, const cg_module_fns *fns, const bool *need, int k,
                            int in_slot, LLVMValueRef *params, const char *prefix, gim_arena *a) {
    int64_t B = em->batch;
    int64_t in_numel = em->slots[in_slot].numel / B;
    int fslot = em->modules[k].feature_slot;
    int64_t f_numel = em->slots[fslot].numel / B;
    LLVMTypeRef pt[3] = {c->ptr, c->i64, c->ptr};
    LLVMTypeRef fty = LLVMFunctionType(c->i32, pt, 3, 0);
    LLVMValueRef f = LLVMAddFunction(c->mod, gim_arena_printf(a, "%s_features", prefix), fty);
    fn_attr(c, f, "nounwind");
    c->fn = f;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, f, "entry"));
    LLVMValueRef x = LLVMGetParam(f, 0), n = LLVMGetParam(f, 1), out = LLVMGetParam(f, 2);
    LLVMSetValueName2(x, "x", 1);
    LLVMSetValueName2(n, "n", 1);
    LLVMSetValueName2(out, "features", 8);

    cg_if neg = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntSLT, n, cg_i64(c, 0), ""), "negative");
    LLVMBuildRet(c->b, cg_i32(c, -1));
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, f, "unreachable"));
    cg_if_end(c, &neg);

    /* OpenBLAS on one thread for the call, as gim runs it: its threaded
     * products add in another order (other last bits) */
    LLVMValueRef blas_threads = cg_call(c, "openblas_get_num_threads", c->i32, NULL, 0, NULL);
    LLVMValueRef blas_multi = LLVMBuildICmp(c->b, LLVMIntNE, blas_threads, cg_i32(c, 1), "blas_multi");
    LLVMTypeRef i32t = c->i32;
    LLVMValueRef one = cg_i32(c, 1);
    cg_if set1 = cg_if_begin(c, blas_multi, "blas_one");
    cg_call(c, "openblas_set_num_threads", c->void_t, &one, 1, &i32t);
    cg_if_end(c, &set1);

    /* buffers: one work arena for the modules in turn (each forward's high
     * water mark), the padded input batch, every export of the modules run */
    int64_t work = 1;
    for (int m = 0; m <= k; m++)
        if (need[m] && fns[m].plan.peak_fwd_floats > work) work = fns[m].plan.peak_fwd_floats;
    LLVMValueRef *slot = gim_arena_alloc(a, (size_t)em->n_slots * sizeof *slot);
    int nbufs = 0;
    LLVMValueRef *bufs = gim_arena_alloc(a, (size_t)(em->n_slots + 1) * sizeof *bufs);
    LLVMValueRef work_p = bufs[nbufs++] = alloc_floats(c, work);
    slot[in_slot] = bufs[nbufs++] = alloc_floats(c, em->slots[in_slot].numel);
    for (int m = 0; m <= k; m++) {
        if (!need[m]) continue;
        for (int i = 0; i < em->modules[m].n_exports; i++) {
            int s = em->modules[m].exports[i];
            slot[s] = bufs[nbufs++] = alloc_floats(c, em->slots[s].numel);
        }
    }
    LLVMValueRef failed = LLVMConstInt(c->i1, 0, 0);
    for (int i = 0; i < nbufs; i++) failed = LLVMBuildOr(c->b, failed, LLVMBuildIsNull(c->b, bufs[i], ""), "");
    LLVMBasicBlockRef cleanup = LLVMAppendBasicBlockInContext(c->ctx, f, "cleanup");
    LLVMValueRef status = cg_entry_alloca(c, c->i32, "status", 4);
    LLVMBuildStore(c->b, cg_i32(c, -1), status);
    LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(c->ctx, f, "run");
    LLVMBuildCondBr(c->b, failed, cleanup, run);
    LLVMPositionBuilderAtEnd(c->b, run);

    /* one gim_call per module, made once: only the data changes per batch */
    LLVMTypeRef fields[] = {c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->i64, c->i64, c->f32, c->i32};
    LLVMTypeRef call_t = LLVMStructTypeInContext(c->ctx, fields, 11, 0);
    LLVMValueRef *calls = gim_arena_alloc(a, (size_t)(k + 1) * sizeof *calls);
    LLVMValueRef null = LLVMConstPointerNull(c->ptr);
    for (int m = 0; m <= k; m++) {
        if (!need[m]) continue;
        const gim_exec_module *xm = &em->modules[m];
        LLVMValueRef ins = cg_entry_alloca(c, LLVMArrayType(c->ptr, (unsigned)(xm->n_inputs + 1)), "inputs", 8);
        LLVMValueRef outs = cg_entry_alloca(c, LLVMArrayType(c->ptr, (unsigned)(xm->n_exports + 1)), "outputs", 8);
        for (int i = 0; i < xm->n_inputs; i++) {
            int s = xm->inputs[i];
            LLVMValueRef at = LLVMBuildInBoundsGEP2(c->b, c->ptr, ins, (LLVMValueRef[]){cg_i64(c, i)}, 1, "");
            LLVMBuildStore(c->b, em->slots[s].is_labels ? null : slot[s], at);
        }
        for (int i = 0; i < xm->n_exports; i++) {
            LLVMValueRef at = LLVMBuildInBoundsGEP2(c->b, c->ptr, outs, (LLVMValueRef[]){cg_i64(c, i)}, 1, "");
            LLVMBuildStore(c->b, slot[xm->exports[i]], at);
        }
        LLVMValueRef call = calls[m] = cg_entry_alloca(c, call_t, gim_arena_printf(a, "call.m%d", m + 1), 8);
        LLVMValueRef vals[11] = {ins, null, params[m] ? params[m] : null, null, null, work_p, outs,
                                 cg_i64(c, 1), cg_i64(c, 0), cg_f32(c, 0.0f), cg_i32(c, 0)};
        for (unsigned i = 0; i < 11; i++) LLVMBuildStore(c->b, vals[i], LLVMBuildStructGEP2(c->b, call_t, call, i, ""));
    }

    /* for each batch: copy in (padding with the last example), forward passes, copy out */
    LLVMValueRef batches = LLVMBuildSDiv(c->b, cg_addk(c, n, B - 1), cg_i64(c, B), "batches");
    cg_loop bi = cg_for_begin(c, cg_i64(c, 0), batches, "batch");
    LLVMValueRef start = cg_mulk(c, bi.iv, B);
    LLVMValueRef count = min_i64(c, LLVMBuildNSWSub(c->b, n, start, ""), cg_i64(c, B));
    LLVMValueRef xin = slot[in_slot];
    cg_copy(c, xin, cg_gep(c, x, cg_mulk(c, start, in_numel)), cg_mulk(c, count, in_numel));
    LLVMValueRef last = cg_gep(c, x, cg_mulk(c, cg_addk(c, cg_add(c, start, count), -1), in_numel));
    cg_loop pad = cg_for_begin(c, count, cg_i64(c, B), "pad");
    cg_copy(c, cg_gep(c, xin, cg_mulk(c, pad.iv, in_numel)), last, cg_i64(c, in_numel));
    cg_for_end(c, &pad);
    LLVMTypeRef fwd_t = LLVMFunctionType(c->void_t, &c->ptr, 1, 0);
    for (int m = 0; m <= k; m++) {
        if (!need[m]) continue;
        LLVMValueRef fwd = LLVMGetNamedFunction(c->mod, fns[m].forward_name);
        LLVMBuildCall2(c->b, fwd_t, fwd, &calls[m], 1, "");
    }
    cg_copy(c, cg_gep(c, out, cg_mulk(c, start, f_numel)), slot[fslot], cg_mulk(c, count, f_numel));
    cg_for_end(c, &bi);
    LLVMBuildStore(c->b, cg_i32(c, 0), status);
    LLVMBuildBr(c->b, cleanup);

    LLVMPositionBuilderAtEnd(c->b, cleanup);
    LLVMTypeRef free_t = c->ptr;
    for (int i = 0; i < nbufs; i++) cg_call(c, "free", c->void_t, &bufs[i], 1, &free_t);
    cg_if restore = cg_if_begin(c, blas_multi, "blas_restore");
    cg_call(c, "openblas_set_num_threads", c->void_t, &blas_threads, 1, &i32t);
    cg_if_end(c, &restore);
    LLVMBuildRet(c->b, LLVMBuildLoad2(c->b, c->i32, status, "status"));
}

static void shape_text(char *buf, size_t size, const gim_slot_info *s, int from) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = from; i < s->rank && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i > from ? ", " : "", (long long)s->shape[i]);
}

static void write_header(FILE *h, const gim_exec_model *em, int k, int in_slot, const char *prefix,
                         const char *model_file) {
    char up[256];
    size_t i;
    for (i = 0; prefix[i] && i + 1 < sizeof up; i++) up[i] = (char)toupper((unsigned char)prefix[i]);
    up[i] = 0;
    int64_t B = em->batch;
    const gim_slot_info *in = &em->slots[in_slot], *fs = &em->slots[em->modules[k].feature_slot];
    char in_shape[256], f_shape[256];
    shape_text(in_shape, sizeof in_shape, in, 1);
    shape_text(f_shape, sizeof f_shape, fs, 1);
    char *cpu = LLVMGetHostCPUName();
    fprintf(h,
            "/* %s.h: the features of module %d of model %s (%s), exported by gimc.\n"
            " *\n"
            " * Link %s.o with OpenBLAS and libm:  cc prog.c %s.o -lopenblas -lm\n"
            " * The weights are inside the object; it needs nothing else at run time.\n"
            " * Its code uses the instruction set of the machine that exported it\n"
            " * (LLVM CPU '%s' with that machine's features).\n"
            " */\n"
            "#ifndef %s_H\n#define %s_H\n\n#include <stdint.h>\n\n"
            "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
            "/* Examples the code computes at once; any n works (see below). */\n"
            "#define %s_BATCH %lld\n"
            "/* Floats per input example: the model input '%s', [%s]. */\n"
            "#define %s_INPUT_SIZE %lld\n"
            "/* Floats per example of features: module %d's '%s', [%s], row-major. */\n"
            "#define %s_FEATURES %lld\n\n"
            "/* Computes the features of n examples: x holds n * %s_INPUT_SIZE floats\n"
            " * (as gimc feeds the model: for the IDX image data sets, pixel p becomes\n"
            " * (p / 255 - 0.2860) / 0.3530 in float), features receives\n"
            " * n * %s_FEATURES floats. The examples go through in batches of\n"
            " * %s_BATCH; a last partial batch is padded internally. The same bits\n"
            " * as `gimc eval` computes: the call runs on the calling thread with\n"
            " * OpenBLAS set to one thread, as gim runs it, and restores OpenBLAS's\n"
            " * thread count when it returns. It may be called from several threads\n"
            " * at once; for the exact bits then, set OpenBLAS to one thread for the\n"
            " * whole program (openblas_set_num_threads(1)). Returns 0, or -1 when\n"
            " * n < 0 or memory ran out. */\n"
            "int %s_features(const float *x, int64_t n, float *features);\n\n"
            "#ifdef __cplusplus\n}\n#endif\n\n#endif\n",
            prefix, k + 1, em->name, model_file, prefix, prefix, cpu, up, up, up, (long long)B, in->name, in_shape, up,
            (long long)(in->numel / B), k + 1, fs->name, f_shape, up, (long long)(fs->numel / B), up, up, up, prefix);
    LLVMDisposeMessage(cpu);
}

int gim_export(gim_diag *d, const gim_graph *g, const gim_cg_options *o, const gim_export_options *x, FILE *obj,
               FILE *header) {
    const gim_exec_model *em = x->layout;
    int k = x->module;
    if (k < 0 || k >= em->n_modules) {
        gim_error(d, (gim_loc){0}, "module %d does not exist (the model has %d)", k + 1, em->n_modules);
        return -1;
    }
    if (em->modules[k].feature_slot < 0) {
        gim_error(d, (gim_loc){0}, "module %d has no features to export (no loss reads a representation of it)", k + 1);
        return -1;
    }
    int opt = o ? o->opt_level : 2;
    gim_arena *a = gim_arena_new();
    bool *need = needed_modules(em, k, a);
    int in_slot = input_slot(d, em, need, k);
    if (in_slot < 0) {
        gim_arena_free(a);
        return -1;
    }
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(x->prefix, ctx);
    LLVMTargetMachineRef tm = NULL;
    int rc = -1;
    cg_module_fns *fns = gim_arena_alloc(a, (size_t)(k + 1) * sizeof *fns);
    for (int m = 0; m <= k; m++) {
        if (!need[m]) continue;
        if (cg_emit_module(d, g, &g->modules[m], o, mod, a, 2, &fns[m]) != 0) goto done;
        LLVMSetLinkage(LLVMGetNamedFunction(mod, fns[m].forward_name), LLVMInternalLinkage);
    }

    cg_ctx c = {0};
    c.ctx = ctx;
    c.mod = mod;
    c.b = LLVMCreateBuilderInContext(ctx);
    c.f32 = LLVMFloatTypeInContext(ctx);
    c.f64 = LLVMDoubleTypeInContext(ctx);
    c.i1 = LLVMInt1TypeInContext(ctx);
    c.i32 = LLVMInt32TypeInContext(ctx);
    c.i64 = LLVMInt64TypeInContext(ctx);
    c.ptr = LLVMPointerTypeInContext(ctx, 0);
    c.void_t = LLVMVoidTypeInContext(ctx);
    c.graph = g;
    c.diag = d;

    /* the parameters, bytes as the runtime holds them (the host's floats) */
    LLVMValueRef *params = gim_arena_alloc(a, (size_t)(k + 1) * sizeof *params);
    for (int m = 0; m <= k; m++) {
        int64_t nf = em->modules[m].n_param_floats;
        if (!need[m] || nf == 0) continue;
        if (nf > (int64_t)(UINT32_MAX / 4)) {
            gim_error(d, (gim_loc){0}, "module %d has too many parameters to embed (%lld floats)", m + 1, (long long)nf);
            goto done;
        }
        LLVMValueRef init = LLVMConstStringInContext(ctx, (const char *)x->params[m], (unsigned)(nf * 4), 1);
        LLVMValueRef gv = LLVMAddGlobal(mod, LLVMTypeOf(init), gim_arena_printf(a, "%s.params.m%d", x->prefix, m + 1));
        LLVMSetInitializer(gv, init);
        LLVMSetGlobalConstant(gv, 1);
        LLVMSetLinkage(gv, LLVMInternalLinkage);
        LLVMSetAlignment(gv, 64);
        params[m] = gv;
    }
    /* gim_rt_in_parallel's flag, per thread */
    LLVMValueRef in_part = LLVMAddGlobal(mod, c.i1, "gim_rt.in_part");
    LLVMSetInitializer(in_part, LLVMConstInt(c.i1, 0, 0));
    LLVMSetLinkage(in_part, LLVMInternalLinkage);
    LLVMSetThreadLocal(in_part, 1);
    define_parallel_for(&c, in_part);
    define_sgemm(&c, in_part);
    define_features(&c, em, fns, need, k, in_slot, params, x->prefix, a);
    LLVMDisposeBuilder(c.b);

    /* nothing of gim's may be left for the linker to find */
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
        size_t len;
        const char *name = LLVMGetValueName2(f, &len);
        if (LLVMIsDeclaration(f) && !strncmp(name, "gim_", 4)) {
            gim_error(d, (gim_loc){0}, "module %d's forward pass calls %s, which an export cannot provide", k + 1, name);
            goto done;
        }
    }
    char *msg = NULL;
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
        gim_error(d, (gim_loc){0}, "internal: the exported code does not verify:\n%s", msg ? msg : "");
        LLVMDisposeMessage(msg);
        goto done;
    }
    LLVMDisposeMessage(msg);
    if (!(tm = cg_host_target(d, opt))) goto done;
    cg_set_target(mod, tm);
    if (cg_optimize(d, mod, tm, opt) != 0) goto done;
    LLVMMemoryBufferRef buf = NULL;
    char *err = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &err, &buf)) {
        gim_error(d, (gim_loc){0}, "cannot emit an object file: %s", err ? err : "");
        LLVMDisposeMessage(err);
        goto done;
    }
    fwrite(LLVMGetBufferStart(buf), 1, LLVMGetBufferSize(buf), obj);
    LLVMDisposeMemoryBuffer(buf);
    write_header(header, em, k, in_slot, x->prefix, x->model_file);
    rc = 0;
done:
    if (tm) LLVMDisposeTargetMachine(tm);
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    gim_arena_free(a);
    return rc;
}
