/* Code generation context and helpers shared by the per-op code generators.
 * (Private to compiler/.)
 *
 * The generator for a module walks its nodes in order and, for each, calls
 * the op's generator from the table in cg_ops.c, which emits LLVM IR that
 * computes the node's buffer from its inputs' buffers. Buffers are float
 * pointers into the work arena (or params/grads/inputs/outputs), assigned by
 * the memory planner before code generation; views (RESHAPE, GRADIENT_BLOCK,
 * SLICE) alias their source and emit nothing.
 *
 * What a generator may rely on (codegen.c): each node's code is a function of
 * its own, `void @"<node name>"(ptr call, ptr noalias out, ptr noalias in0,
 * ..., ptr noalias scratch)`, so c->fn is that function, c->buf holds only
 * the node's own and its inputs' buffers, and c->step/seed/lr/labels are
 * loaded at its entry. The output never overlaps an input or the scratch
 * (the planner frees an input only after its last reader), hence noalias: a
 * generator must never write to an input buffer, and must write every
 * element of its output (work memory is reused; tests fill it with NaN).
 *
 * Loops are built with cg_for_begin/cg_for_end, which nest like C for-loops:
 *
 *     cg_loop i = cg_for_begin(c, cg_i64(c, 0), cg_i64(c, n), "i");
 *         LLVMValueRef v = cg_loadf(c, x, i.iv);
 *         cg_storef(c, y, i.iv, LLVMBuildFMul(c->b, v, v, "sq"));
 *     cg_for_end(c, &i);
 */
#ifndef GIM_CG_H
#define GIM_CG_H

#include <llvm-c/Core.h>

#include "graph.h"

typedef struct cg_ctx {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMValueRef fn;            /* the function being emitted */
    LLVMTypeRef f32, f64, i1, i32, i64, ptr, void_t;

    /* Values loaded from the gim_call at function entry. */
    LLVMValueRef call;          /* const gim_call * */
    LLVMValueRef step;          /* i64 */
    LLVMValueRef seed;          /* i64 */
    LLVMValueRef lr;            /* float */
    LLVMValueRef labels;        /* ptr (i32 data) */

    /* Per node (indexed by node id): its buffer as a float pointer, valid once
     * the node's code is emitted (or at entry for params, grads, inputs). */
    LLVMValueRef *buf;
    const gim_graph *graph;
    const gim_module *module;
    gim_diag *diag;
    int errors;                 /* set by generators that cannot handle a case */
    /* Per node (indexed by node id): float* of the node's scratch in work
     * (see cg_scratch_floats), set before its generator runs; NULL (or a
     * NULL array) when none was planned. */
    LLVMValueRef *scratch;
} cg_ctx;

/* An op's code generator: emit code computing n into cg_buf(c, n). Returns 0,
 * or -1 after reporting through c->diag (an internal limitation). */
typedef int (*cg_op_fn)(cg_ctx *c, const gim_node *n);

/* Per-family generator tables (cg_elementwise.c, cg_conv.c, cg_loss.c), merged
 * by cg_ops.c. An entry is NULL where the family has no generator for the op. */
extern const cg_op_fn cg_elementwise_ops[GIM_OP_COUNT];
extern const cg_op_fn cg_conv_ops[GIM_OP_COUNT];
extern const cg_op_fn cg_loss_ops[GIM_OP_COUNT];
/* The generator for op, or NULL (sources and views have none). */
cg_op_fn cg_op_generator(gim_op op);

/* ---- constants and types ---- */
LLVMValueRef cg_i64(cg_ctx *c, int64_t v);
LLVMValueRef cg_i32(cg_ctx *c, int32_t v);
LLVMValueRef cg_f32(cg_ctx *c, float v);

/* ---- buffers ---- */
LLVMValueRef cg_buf(cg_ctx *c, const gim_node *n);           /* float* of n's data */
LLVMValueRef cg_gep(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx);     /* &base[idx] (float) */
LLVMValueRef cg_loadf(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx);   /* base[idx] */
void cg_storef(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v);
LLVMValueRef cg_loadi32(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx);
/* memset(dst, 0, n floats) */
void cg_zero(cg_ctx *c, LLVMValueRef dst, LLVMValueRef n);
/* memcpy(dst, src, n floats) */
void cg_copy(cg_ctx *c, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef n);

/* ---- arithmetic on i64 indices ---- */
LLVMValueRef cg_add(cg_ctx *c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_mul(cg_ctx *c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_addk(cg_ctx *c, LLVMValueRef a, int64_t k);
LLVMValueRef cg_mulk(cg_ctx *c, LLVMValueRef a, int64_t k);
/* a*k + b, the common index step */
LLVMValueRef cg_mad(cg_ctx *c, LLVMValueRef a, int64_t k, LLVMValueRef b);

/* ---- float math ---- */
LLVMValueRef cg_fmax(cg_ctx *c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_exp(cg_ctx *c, LLVMValueRef x);
LLVMValueRef cg_log(cg_ctx *c, LLVMValueRef x);
LLVMValueRef cg_tanh(cg_ctx *c, LLVMValueRef x);
LLVMValueRef cg_sqrt(cg_ctx *c, LLVMValueRef x);
LLVMValueRef cg_select(cg_ctx *c, LLVMValueRef cond, LLVMValueRef a, LLVMValueRef b);
/* keep > 0 ? v : 0, on floats or float vectors: ReLU is (x, x), its gradient
 * (y, dy). Every fused ReLU epilogue uses it too, so fused code computes the
 * same bits as the RELU / RELU_BWD nodes it replaces. */
LLVMValueRef cg_keep_positive(cg_ctx *c, LLVMValueRef keep, LLVMValueRef v);

/* ---- vectorised reductions ----
 * Σ_{k<n} x[base + k] and Σ_{k<n} a[abase + k]·b[bbase + k] (n a constant,
 * buffers contiguous). Accumulated in 16 lanes (one AVX-512 register), then
 * the lanes and a scalar tail are added: the loop vectoriser cannot reorder
 * a float sum itself (LLVM 16's C API sets no fast-math flags). */
LLVMValueRef cg_sum(cg_ctx *c, LLVMValueRef x, LLVMValueRef base, int64_t n);
LLVMValueRef cg_dot(cg_ctx *c, LLVMValueRef a, LLVMValueRef abase, LLVMValueRef b, LLVMValueRef bbase, int64_t n);
/* y[k] += alpha·x[k] for k < n (n a constant; x and y must not overlap) */
void cg_axpy(cg_ctx *c, int64_t n, LLVMValueRef alpha, LLVMValueRef x, LLVMValueRef y);

/* Several rows at once (m ≤ CG_DOTS_MAX, each row a pointer to n floats):
 * out[i] = rows[i] · b, summed exactly as cg_dot sums it; and
 * y = (zero ? 0 : y) + Σ_i alpha[i]·rows[i], the bits of m cg_axpy calls in
 * order. One pass over b or y with m accumulators or loads in flight. */
enum { CG_DOTS_MAX = 12 };
/* Prefetches the n floats at p for reading (one prefetch per cache line). */
void cg_prefetch(cg_ctx *c, LLVMValueRef p, int64_t n);
void cg_dots(cg_ctx *c, const LLVMValueRef *rows, int m, LLVMValueRef b, int64_t n, LLVMValueRef *out);
void cg_axpys(cg_ctx *c, int64_t n, const LLVMValueRef *alpha, const LLVMValueRef *rows, int m, LLVMValueRef y,
              bool zero);

/* ---- loops ---- */
typedef struct cg_loop {
    LLVMValueRef iv;                 /* the induction variable (i64) */
    LLVMValueRef phi;
    LLVMBasicBlockRef header, body, latch, exit;
    LLVMValueRef end;
} cg_loop;

/* for (iv = start; iv < end; iv++); the builder is left inside the body. */
cg_loop cg_for_begin(cg_ctx *c, LLVMValueRef start, LLVMValueRef end, const char *name);
cg_loop cg_for(cg_ctx *c, int64_t end, const char *name);     /* 0..end */
void cg_for_end(cg_ctx *c, cg_loop *l);                         /* builder after the loop */

/* A stack slot of type t in the current function's entry block (where
 * mem2reg promotes scalars and the frame holds arrays once). */
LLVMValueRef cg_entry_alloca(cg_ctx *c, LLVMTypeRef t, const char *name, unsigned align);
/* A float accumulator usable across a loop (an alloca'd slot). */
LLVMValueRef cg_var(cg_ctx *c, const char *name, LLVMValueRef init);
LLVMValueRef cg_var_get(cg_ctx *c, LLVMValueRef var);
void cg_var_set(cg_ctx *c, LLVMValueRef var, LLVMValueRef v);

/* if (cond) { ... } */
typedef struct cg_if { LLVMBasicBlockRef then, done; } cg_if;
cg_if cg_if_begin(cg_ctx *c, LLVMValueRef cond, const char *name);
void cg_if_end(cg_ctx *c, cg_if *i);

/* ---- calls into the runtime ---- */
/* C = alpha op(A) op(B) + beta C, row-major; every dimension a constant. */
void cg_sgemm(cg_ctx *c, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              LLVMValueRef A, int64_t lda, LLVMValueRef B, int64_t ldb, float beta,
              LLVMValueRef C, int64_t ldc);
/* The same with M, N and K as i64 values (a loop's last, partial chunk). */
void cg_sgemm_v(cg_ctx *c, bool ta, bool tb, LLVMValueRef M, LLVMValueRef N, LLVMValueRef K, float alpha,
                LLVMValueRef A, int64_t lda, LLVMValueRef B, int64_t ldb, float beta,
                LLVMValueRef C, int64_t ldc);
/* Calls a runtime function by name (declared on first use). */
LLVMValueRef cg_call(cg_ctx *c, const char *fn, LLVMTypeRef ret, LLVMValueRef *args, int n, LLVMTypeRef *types);
/* uniform integer in [0, n): gim_rt_rand_below(seed, stream, counter, n).
 * counter is i64, n i32 or i64; returns an i64 (ready for indexing). */
LLVMValueRef cg_rand_below(cg_ctx *c, uint64_t stream, LLVMValueRef counter, LLVMValueRef n);

/* ---- parallel loops ----
 * A loop over [0, n) whose body runs on the runtime's pool
 * (gim_rt_parallel_for, runtime/pool.c): the body is emitted into a function
 * of its own, void(ptr env, i64 begin, i64 end, i32 part), called once per
 * part of the fixed cut of [0, n) into cg_par_parts(n) parts:
 *
 *     LLVMValueRef v[2] = {x, y};                 // outer values the body uses
 *     cg_par p = cg_par_begin(c, "rows", v, 2);   // v now holds the body's copies
 *         cg_loop i = cg_for_begin(c, p.begin, p.end, "i");
 *         ... (per-part scratch: base + p.part · size) ...
 *         cg_for_end(c, &i);
 *     cg_par_end(c, &p, n);                       // builder back in the caller
 *
 * Values passed in are pointers, i64 or float; everything else the body uses
 * must be a constant or computed inside it (c->call, step, seed, lr and
 * labels are passed along and hold the body's copies inside it). Parts may
 * run concurrently: a part writes only its own range of the output and its
 * own scratch slice (allocas in the body are per call, hence per part). */
typedef struct cg_par {
    LLVMValueRef fn, env;
    LLVMValueRef begin, end, part;   /* the body's i64 range and part index */
    /* the caller's state, restored by cg_par_end */
    LLVMValueRef outer_fn, call, step, seed, lr, labels;
    LLVMBasicBlockRef outer_block;
} cg_par;
#define CG_PAR_MAX_VALUES 16
cg_par cg_par_begin(cg_ctx *c, const char *name, LLVMValueRef *vals, int nvals);
void cg_par_end(cg_ctx *c, cg_par *p, int64_t n);
/* The same over [0, n) for an i64 value n (cut at run time, by n alone). */
void cg_par_end_v(cg_ctx *c, cg_par *p, LLVMValueRef n);
/* Parts of a parallel loop over n iterations (0 for n <= 0): per-part scratch
 * is sized by it. */
int64_t cg_par_parts(int64_t n);

/* floats rounded up to whole 64-byte cache lines: scratch slices that parts
 * write side by side start on lines of their own */
static inline int64_t cg_round16(int64_t floats) { return (floats + 15) / 16 * 16; }

/* ---- per-node scratch ----
 * Some generators need temporaries beyond their output (InfoNCE's predictions,
 * GRU gate pre-activations). cg_scratch_floats(n) is how many floats; the
 * memory planner reserves that many in work for n, live only while n's code
 * runs, and the module generator stores their address in c->scratch[n->id].
 * cg_scratch(c, n) returns it, or NULL when none was planned (a generator then
 * allocates with gim_malloc at run time). Families add their own table. */
typedef int64_t (*cg_scratch_fn)(const gim_node *n);
extern const cg_scratch_fn cg_loss_scratch[GIM_OP_COUNT];
/* InfoNCE runs over chunks of positions with at most this many floats of
 * predictions each (cg_loss.c); tests lower it to cut small problems. */
extern int64_t cg_nce_chunk_floats;
extern const cg_scratch_fn cg_conv_scratch[GIM_OP_COUNT];   /* cg_conv.c */
int64_t cg_scratch_floats(const gim_node *n);      /* 0 when the op needs none */
LLVMValueRef cg_scratch(cg_ctx *c, const gim_node *n);

/* ---- a convolution's sizes (cg_conv.c) ----
 * From a conv op's attrs (out, k, stride, pad: the same slots in every conv
 * op) and the shape of its input x (the node's own shape for a data
 * gradient); conv1d has H = 1 and a one-row kernel. A generator's geometry
 * holds them as an anonymous member, `union { struct { CG_CONV_DIMS; };
 * cg_conv_dims dims; };`, so that they read as g->C, g->kh, ... */
#define CG_CONV_DIMS int64_t O, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo
typedef struct cg_conv_dims { CG_CONV_DIMS; } cg_conv_dims;
/* Fills d; false when the shapes cannot be a convolution (a size not
 * positive, x's rank too small, the kernel larger than the padded image). */
bool cg_conv_dims_of(const gim_node *n, cg_conv_dims *d);
/* The shape of a conv op's input x: x itself for the forward and weight
 * gradient, the node's own shape (dx) for the data gradient. */
const gim_shape *cg_conv_x_shape(const gim_node *n);
bool cg_conv_is_1d(gim_op op);

/* ---- Winograd convolutions (cg_winograd.c) ----
 * 3×3, stride-1, pad-1 conv2d and both its gradients on images of at most
 * 16×16 take F(4×4, 3×3) or F(2×2, 3×3) instead of im2col (cg_conv.c asks,
 * then delegates). cg_conv_winograd = 0 turns it off, cg_winograd_f4 = 0
 * keeps F(2×2) everywhere (benchmarks and tests compare). */
extern int cg_conv_winograd, cg_winograd_lanes_c, cg_winograd_f4, cg_winograd_f4_wgrad;
extern int64_t cg_winograd_chunk_cap, cg_winograd_wgrad_cap, cg_winograd_f4_cap;
bool cg_winograd_applies(const gim_node *n);
/* m of the F(m×m, 3×3) that n takes (2 or 4), 0 when none */
int cg_winograd_tile(const gim_node *n);
int64_t cg_winograd_scratch_floats(const gim_node *n);
int cg_winograd(cg_ctx *c, const gim_node *n, LLVMValueRef scratch);

/* ---- narrow convolutions by output position (cg_conv_window.c) ----
 * The forward pass of a conv2d with at most cg_conv_window_pixels outputs
 * per image: a GEMM per class of output positions over their valid taps
 * only (cg_conv.c asks after Winograd, then delegates). cg_conv_window = 0
 * turns it off; cg_conv_window_cap is a chunk's scratch in floats. */
extern int cg_conv_window;
extern int64_t cg_conv_window_pixels, cg_conv_window_cap;
bool cg_conv_window_applies(const gim_node *n);
int64_t cg_conv_window_scratch_floats(const gim_node *n);
int cg_conv_window_forward(cg_ctx *c, const gim_node *n, LLVMValueRef scratch);

/* ---- products executed (cg_products.c) ----
 * 2 × the multiply-adds of node n's matrix and dot products as the generated
 * code runs them (Winograd's, a dense layer's, InfoNCE's at every position);
 * 0 for ops without products. */
double cg_node_products(const gim_node *n);

/* ---- convolutions as dense layers (cg_conv_dense.c) ----
 * A conv2d / conv1d (forward and both gradients) in which every output's
 * kernel window covers the whole image (3×3 pad 1 on 2×2 images, 1×1
 * images): one GEMM against the weight expanded to [C·H·W, O·Ho·Wo]
 * (cg_conv.c asks before Winograd, then delegates). cg_conv_dense = 0 turns
 * it off; it takes layers whose expanded weight has at most
 * cg_conv_dense_cap floats. */
extern int cg_conv_dense;
extern int64_t cg_conv_dense_cap, cg_conv_dense_rows, cg_conv_dense_wgrad_items;
bool cg_conv_dense_applies(const gim_node *n);
int64_t cg_conv_dense_scratch_floats(const gim_node *n);
int cg_conv_dense_emit(cg_ctx *c, const gim_node *n, LLVMValueRef scratch);

/* Reports an internal limitation at n's location. Returns -1. */
int cg_fail(cg_ctx *c, const gim_node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
