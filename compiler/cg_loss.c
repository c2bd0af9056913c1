/* Code generators: the loss family (infonce, cross_entropy) and the GRU,
 * forward and backward.
 *
 * Matrix products go to gim_rt_sgemm (OpenBLAS); dot products and axpys over
 * feature vectors, and everything else, are generated loops. Temporaries live in the node's planned scratch (cg_scratch; sizes in
 * cg_loss_scratch below); a node the planner did not see (a hand-built
 * graph) gets a zeroed module global of its own instead.
 *
 * Layouts and formulas: docs/internals.md. Summary of each op's scratch:
 *   infonce          pred [R, K·Cz]               R positions per chunk (of P = N·T or N·G·G)
 *   infonce_bwd      pred [R, K·Cz], dpred [R, K·Cz], candidate weights [E], rows [E] (i64),
 *                    the records sorted by row [E] (i32), the rows' ends [P + 1] (i32)
 *   gru              gi [N·T, 3H], gh [N, 3H]
 *   gru_bwd          gi [N·T, 3H] (becomes dgi), gh [N, 3H] (becomes dgh), dh [N, H]
 */
#include <stdint.h>
#include <stdio.h>

#include "cg.h"

/* ---- helpers ------------------------------------------------------------------ */

static LLVMValueRef off(cg_ctx *c, LLVMValueRef base, int64_t k) {
    return k == 0 ? base : cg_gep(c, base, cg_i64(c, k));
}

/* &base[idx] for an array of i32 */
static LLVMValueRef gep_i32(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(c->b, c->i32, base, &idx, 1, "");
}

/* &base[idx] for an array of i64 */
static LLVMValueRef gep_i64(cg_ctx *c, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(c->b, c->i64, base, &idx, 1, "");
}

static LLVMValueRef fadd(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(c->b, a, b, ""); }
static LLVMValueRef fsub(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(c->b, a, b, ""); }
static LLVMValueRef fmul(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(c->b, a, b, ""); }
static LLVMValueRef fdiv(cg_ctx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(c->b, a, b, ""); }

/* σ(x) = 1 / (1 + e^{−x}) */
static LLVMValueRef sigmoid(cg_ctx *c, LLVMValueRef x) {
    LLVMValueRef e = cg_exp(c, LLVMBuildFNeg(c->b, x, ""));
    return fdiv(c, cg_f32(c, 1.0f), fadd(c, cg_f32(c, 1.0f), e));
}

/* An array of count elements of type t in the entry block. */
static LLVMValueRef entry_array(cg_ctx *c, LLVMTypeRef t, int64_t count, const char *name) {
    return cg_entry_alloca(c, LLVMArrayType(t, (unsigned)count), name, 16);
}

/* n's scratch: the planned piece, else a module global of its own. */
static LLVMValueRef loss_scratch(cg_ctx *c, const gim_node *n, int64_t floats) {
    LLVMValueRef planned = cg_scratch(c, n);
    if (planned) return planned;
    char name[64];
    snprintf(name, sizeof name, "gim_loss_scratch_n%d", n->id);
    LLVMValueRef g = LLVMGetNamedGlobal(c->mod, name);
    if (g) return g;
    LLVMTypeRef t = LLVMArrayType(c->f32, (unsigned)floats);
    g = LLVMAddGlobal(c->mod, t, name);
    LLVMSetInitializer(g, LLVMConstNull(t));
    LLVMSetLinkage(g, LLVMInternalLinkage);
    LLVMSetAlignment(g, 64);
    return g;
}

/* ---- infonce ------------------------------------------------------------------ */

/* The geometry shared by forward and backward. Context positions are the rows
 * p of z and c; at step k the positions with a target are, per sample n,
 * p = n·S + q for q < L_k, with the positive at p + k·D:
 *   sequence [N, T, C]:    S = T,   L_k = T − k,      D = 1
 *   grid [N, G, G, C]:     S = G·G, L_k = (G − k)·G,  D = G */
typedef struct nce_geo {
    int64_t N, S, D, len, P, Cz, Cc, K, neg;
} nce_geo;

static int nce_geometry(cg_ctx *c, const gim_node *n, nce_geo *g) {
    const gim_node *z = n->in[0], *cx = n->in[1], *w = n->in[2];
    const gim_shape *s = &z->shape;
    if (n->n_in < 3) return cg_fail(c, n, "internal: %s needs z, c and W", gim_op_name(n->op));
    if (s->rank == 3) {
        g->N = s->d[0], g->len = s->d[1], g->S = s->d[1], g->D = 1;
    } else if (s->rank == 4 && s->d[1] == s->d[2]) {
        g->N = s->d[0], g->len = s->d[1], g->S = s->d[1] * s->d[2], g->D = s->d[1];
    } else {
        return cg_fail(c, n, "internal: %s expects z [N, T, C] or [N, G, G, C]", gim_op_name(n->op));
    }
    g->Cz = s->d[s->rank - 1];
    g->Cc = cx->shape.d[cx->shape.rank - 1];
    g->P = g->N * g->S;
    g->K = gim_attr_i(n, 0);
    g->neg = gim_attr_i(n, 1);
    if (gim_shape_numel(&cx->shape) != g->P * g->Cc || gim_shape_numel(&w->shape) != g->K * g->Cz * g->Cc ||
        g->K < 1 || g->neg < 0 || g->Cz < 1 || g->Cc < 1)
        return cg_fail(c, n, "internal: %s: inconsistent shapes of z, c and W", gim_op_name(n->op));
    if (g->P > (int64_t)UINT32_MAX) return cg_fail(c, n, "internal: %s: too many positions", gim_op_name(n->op));
    return 0;
}

/* Positions with a target at step k (the mean's denominator). */
static int64_t nce_count(const nce_geo *g, int64_t k) {
    if (k >= g->len) return 0;
    return g->N * (g->len - k) * (g->S / g->len);
}

/* Positions per sample with a target at step k (an i64 value):
 * L_k = (len − k)·(S/len), 0 from k = len on (shapes make len > K). */
static LLVMValueRef nce_len(cg_ctx *c, const nce_geo *g, LLVMValueRef k) {
    LLVMValueRef r = LLVMBuildNSWSub(c->b, cg_i64(c, g->len), k, "");
    r = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSGT, r, cg_i64(c, 0), ""), r, cg_i64(c, 0));
    return cg_mulk(c, r, g->S / g->len);
}

/* The last step at which position p (an i64 value) has a target:
 * p = n·S + q lies in row i = q / (S/len) of its sample (its time step, or its
 * grid row), and has a target at step k iff i + k < len; so min(K, len − 1 − i),
 * which is < 1 when it has none. */
static LLVMValueRef nce_last_step(cg_ctx *c, const nce_geo *g, LLVMValueRef p) {
    LLVMValueRef q = LLVMBuildURem(c->b, p, cg_i64(c, g->S), "nce.q");
    LLVMValueRef i = LLVMBuildUDiv(c->b, q, cg_i64(c, g->S / g->len), "nce.row");
    LLVMValueRef last = LLVMBuildNSWSub(c->b, cg_i64(c, g->len - 1), i, "");
    return cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, last, cg_i64(c, g->K), ""), last, cg_i64(c, g->K));
}

/* The loss runs over chunks of consecutive context positions (rows of z and
 * c), so that the predictions (and in the backward pass their gradient) exist
 * for one chunk at a time: [R, K·Cz] instead of [P, K·Cz]. A chunk is as many
 * rows as fit in cg_nce_chunk_floats floats of predictions (at least one, at
 * most P); its products stay large enough for SGEMM's full rate (module 1 of
 * models/cpc_audio.gim: 1365 rows of 6144 predictions, ≈32 MB, where all of
 * them would be 805 MB). Every chunk costs passes over all of z and dz (its
 * negatives fall anywhere in the batch: the dz scatter reads and writes
 * nearly every row once per chunk) and one more packing of W per dc block,
 * so chunks are not made smaller than that: 2²² floats (682 rows) measured
 * 7 % more CPU time per step on module 1. Tests lower the budget to cut small
 * problems into several chunks. */
int64_t cg_nce_chunk_floats = (int64_t)1 << 23;

/* How many records ahead the dz scatter prefetches the pred row it will read. */
enum { NCE_AHEAD = 4 };

static int64_t nce_chunk_rows(int64_t P, int64_t KC) {
    int64_t r = KC > 0 ? cg_nce_chunk_floats / KC : P;
    if (r < 1) r = 1;
    return r < P ? r : P;
}

/* The backward pass's per-chunk record of every candidate: softmax weight g
 * (floats) and row (i64), E = R·K·(negatives + 1) of each, the weights padded
 * to an even count so that the rows are 8-byte aligned. */
static int64_t nce_records(int64_t R, int64_t K, int64_t neg) {
    int64_t e = R * K * (neg + 1);
    return e + (e & 1);
}

/* pred [R, K·Cz]: one chunk's predictions, row r holding pred_p,1 .. pred_p,K */
static int64_t nce_scratch_fwd(const gim_node *n) {
    const gim_shape *s = &n->in[0]->shape;
    if (!s->rank) return 0;
    int64_t KC = gim_attr_i(n, 0) * s->d[s->rank - 1];
    return nce_chunk_rows(gim_shape_numel(s) / s->d[s->rank - 1], KC) * KC;
}

/* pred and dpred [R, K·Cz], the candidates' weights [E] and rows [E] (i64),
 * then the records sorted by row: their indices [E] (i32) and the rows' ends
 * [P + 1] (i32) */
static int64_t nce_scratch_bwd(const gim_node *n) {
    const gim_shape *s = &n->in[0]->shape;
    if (!s->rank) return 0;
    int64_t K = gim_attr_i(n, 0), KC = K * s->d[s->rank - 1], P = gim_shape_numel(s) / s->d[s->rank - 1];
    int64_t R = nce_chunk_rows(P, KC), E = nce_records(R, K, gim_attr_i(n, 1));
    return 2 * R * KC + 3 * E + E + P + 1;
}

/* The candidates of position p at step k into cand[0..neg] (i64 rows of z):
 * cand[0] the positive pos, cand[j + 1] negative j,
 *   gim_rt_rand_below(seed, stream, counter, P),
 *   counter = ((step·K + (k − 1))·P + p)·negatives + j. */
static void nce_draw(cg_ctx *c, const gim_node *n, const nce_geo *g, LLVMValueRef k, LLVMValueRef p,
                     LLVMValueRef pos, LLVMValueRef cand) {
    LLVMBuildStore(c->b, pos, gep_i64(c, cand, cg_i64(c, 0)));
    if (g->neg == 0) return;
    /* base = ((step·K + k − 1)·P + p)·neg */
    LLVMValueRef base = LLVMBuildMul(c->b, c->step, cg_i64(c, g->K), "");
    base = LLVMBuildAdd(c->b, base, cg_addk(c, k, -1), "");
    base = LLVMBuildMul(c->b, base, cg_i64(c, g->P), "");
    base = LLVMBuildAdd(c->b, base, p, "");
    base = LLVMBuildMul(c->b, base, cg_i64(c, g->neg), "nce.counter");
    cg_loop j = cg_for(c, g->neg, "neg");
    LLVMValueRef row = cg_rand_below(c, n->rng_stream, LLVMBuildAdd(c->b, base, j.iv, ""),
                                     LLVMConstInt(c->i32, (unsigned long long)g->P, 0));
    LLVMBuildStore(c->b, row, gep_i64(c, cand, cg_addk(c, j.iv, 1)));
    cg_for_end(c, &j);
}

/* Candidates are drawn one step ahead (nce_next): while step k's scores run,
 * step k + 1's negatives, random rows of z, are on their way into the cache.
 * cand2 holds two sets of neg + 1 rows; step k uses set k mod 2. */
static LLVMValueRef nce_set(cg_ctx *c, const nce_geo *g, LLVMValueRef cand2, LLVMValueRef k) {
    return gep_i64(c, cand2, cg_mulk(c, LLVMBuildAnd(c->b, k, cg_i64(c, 1), ""), g->neg + 1));
}

/* Draws step k's candidates (position p, row i of its sample given by last,
 * the last step with a target) when k <= last, and prefetches the negatives. */
static void nce_next(cg_ctx *c, const gim_node *n, const nce_geo *g, LLVMValueRef k, LLVMValueRef p,
                     LLVMValueRef last, LLVMValueRef z, LLVMValueRef cand2) {
    cg_if ok = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntSLE, k, last, ""), "nce.next");
    LLVMValueRef cand = nce_set(c, g, cand2, k);
    nce_draw(c, n, g, k, p, cg_add(c, p, cg_mulk(c, k, g->D)), cand);
    for (int64_t j = 1; j <= g->neg; j++)
        cg_prefetch(c, cg_gep(c, z, cg_mulk(c, LLVMBuildLoad2(c->b, c->i64, gep_i64(c, cand, cg_i64(c, j)), ""), g->Cz)),
                    g->Cz);
    cg_if_end(c, &ok);
}

/* The scores of the candidates cand[0..neg] for pred_p,k into s[0..neg], and
 * their maximum. The dot products run CG_DOTS_MAX candidates at a time in one
 * pass over pred (cg_dots: the gathered rows' loads overlap; the bits of one
 * cg_dot per candidate). */
static LLVMValueRef nce_scores(cg_ctx *c, const nce_geo *g, LLVMValueRef z, LLVMValueRef predp, LLVMValueRef s,
                               LLVMValueRef cand) {
    LLVMTypeRef sty = LLVMArrayType(c->f32, (unsigned)(g->neg + 1));
    LLVMValueRef mx = NULL;
    for (int64_t i0 = 0; i0 <= g->neg; i0 += CG_DOTS_MAX) {
        int m = (int)(g->neg + 1 - i0 < CG_DOTS_MAX ? g->neg + 1 - i0 : CG_DOTS_MAX);
        LLVMValueRef rows[CG_DOTS_MAX], sc[CG_DOTS_MAX];
        for (int i = 0; i < m; i++) {
            LLVMValueRef row = LLVMBuildLoad2(c->b, c->i64, gep_i64(c, cand, cg_i64(c, i0 + i)), "");
            rows[i] = cg_gep(c, z, cg_mulk(c, row, g->Cz));
        }
        cg_dots(c, rows, m, predp, g->Cz, sc);
        for (int i = 0; i < m; i++) {
            LLVMValueRef ii[2] = {cg_i64(c, 0), cg_i64(c, i0 + i)};
            LLVMBuildStore(c->b, sc[i], LLVMBuildInBoundsGEP2(c->b, sty, s, ii, 2, ""));
            mx = mx ? cg_fmax(c, mx, sc[i]) : sc[i];
        }
    }
    return mx;
}

static LLVMValueRef arr_f(cg_ctx *c, LLVMValueRef arr, int64_t len, LLVMValueRef i) {
    LLVMValueRef ix[2] = {cg_i64(c, 0), i};
    return LLVMBuildInBoundsGEP2(c->b, LLVMArrayType(c->f32, (unsigned)len), arr, ix, 2, "");
}

static LLVMValueRef arr_d(cg_ctx *c, LLVMValueRef arr, int64_t len, LLVMValueRef i) {
    LLVMValueRef ix[2] = {cg_i64(c, 0), i};
    return LLVMBuildInBoundsGEP2(c->b, LLVMArrayType(c->f64, (unsigned)len), arr, ix, 2, "");
}

/* Σ_i exp(s_i − mx) over the neg + 1 candidates */
static LLVMValueRef nce_sumexp(cg_ctx *c, const nce_geo *g, LLVMValueRef s, LLVMValueRef mx) {
    LLVMValueRef se = cg_var(c, "nce.sumexp", cg_f32(c, 0.0f));
    cg_loop i = cg_for(c, g->neg + 1, "cand");
    LLVMValueRef si = LLVMBuildLoad2(c->b, c->f32, arr_f(c, s, g->neg + 1, i.iv), "");
    cg_var_set(c, se, fadd(c, cg_var_get(c, se), cg_exp(c, fsub(c, si, mx))));
    cg_for_end(c, &i);
    return cg_var_get(c, se);
}

/* The chunk loop both passes share: chunk h covers positions [p0, p0 + rows),
 * p0 = h·R, rows = min(R, P − p0), and starts with pred = c[p0 ..] Wᵀ for
 * every step at once (W [K, Cz, Cc] is [K·Cz, Cc]: one SGEMM). */
typedef struct nce_chunk { cg_loop h; LLVMValueRef p0, rows; } nce_chunk;

static nce_chunk nce_chunk_begin(cg_ctx *c, const nce_geo *g, int64_t R, LLVMValueRef cx, LLVMValueRef W,
                                 LLVMValueRef pred) {
    nce_chunk ch;
    int64_t KC = g->K * g->Cz;
    ch.h = cg_for(c, (g->P + R - 1) / R, "nce.chunk");
    ch.p0 = cg_mulk(c, ch.h.iv, R);
    LLVMValueRef left = LLVMBuildNSWSub(c->b, cg_i64(c, g->P), ch.p0, "");
    ch.rows = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, left, cg_i64(c, R), ""), left, cg_i64(c, R));
    cg_sgemm_v(c, false, true, ch.rows, cg_i64(c, KC), cg_i64(c, g->Cc), 1.0f, cg_gep(c, cx, cg_mulk(c, ch.p0, g->Cc)),
               g->Cc, W, g->Cc, 0.0f, pred, KC);
    return ch;
}

/* term = max + log Σ exp − s_0, added in double into acc[k − 1] (this part's sums) */
static void nce_add_term(cg_ctx *c, const nce_geo *g, LLVMValueRef s, LLVMValueRef mx, LLVMValueRef se,
                         LLVMValueRef acc, LLVMValueRef k) {
    LLVMValueRef s0 = LLVMBuildLoad2(c->b, c->f32, arr_f(c, s, g->neg + 1, cg_i64(c, 0)), "");
    LLVMValueRef term = LLVMBuildFPExt(c->b, fsub(c, fadd(c, mx, cg_log(c, se)), s0), c->f64, "");
    LLVMValueRef at = arr_d(c, acc, g->K, cg_addk(c, k, -1));
    LLVMBuildStore(c->b, LLVMBuildFAdd(c->b, LLVMBuildLoad2(c->b, c->f64, at, ""), term, ""), at);
}

/* At the end of a part: its per-step sums into partial[part][0 .. K) */
static void nce_part_sums(cg_ctx *c, const nce_geo *g, int64_t parts, LLVMValueRef mine, LLVMValueRef partial,
                          LLVMValueRef part) {
    cg_loop ks = cg_for(c, g->K, "k");
    LLVMValueRef sk = LLVMBuildLoad2(c->b, c->f64, arr_d(c, mine, g->K, ks.iv), "");
    LLVMBuildStore(c->b, sk, arr_d(c, partial, g->K * parts, cg_add(c, cg_mulk(c, part, g->K), ks.iv)));
    cg_for_end(c, &ks);
}

/* After a chunk: sums[k] += Σ_t partial[t][k], in part order */
static void nce_chunk_sums(cg_ctx *c, const nce_geo *g, int64_t parts, LLVMValueRef partial, LLVMValueRef sums) {
    cg_loop ka = cg_for(c, g->K, "k");
    LLVMValueRef tot = LLVMBuildLoad2(c->b, c->f64, arr_d(c, sums, g->K, ka.iv), "");
    for (int64_t t = 0; t < parts; t++)
        tot = LLVMBuildFAdd(c->b, tot, LLVMBuildLoad2(c->b, c->f64, arr_d(c, partial, g->K * parts, cg_addk(c, ka.iv, t * g->K)), ""), "");
    LLVMBuildStore(c->b, tot, arr_d(c, sums, g->K, ka.iv));
    cg_for_end(c, &ka);
}

/* L = (1/K) Σ_k sums[k]/M_k into out[0] (a float) */
static void nce_store_loss(cg_ctx *c, const nce_geo *g, LLVMValueRef sums, LLVMValueRef out) {
    LLVMValueRef loss = LLVMConstReal(c->f64, 0.0);
    for (int64_t kk = 1; kk <= g->K; kk++) {
        int64_t M = nce_count(g, kk);
        if (M == 0) continue;
        LLVMValueRef total = LLVMBuildLoad2(c->b, c->f64, arr_d(c, sums, g->K, cg_i64(c, kk - 1)), "");
        LLVMValueRef mean = LLVMBuildFMul(c->b, total, LLVMConstReal(c->f64, 1.0 / (double)M), "");
        loss = LLVMBuildFAdd(c->b, loss, mean, "");
    }
    LLVMValueRef l = LLVMBuildFMul(c->b, loss, LLVMConstReal(c->f64, 1.0 / (double)g->K), "");
    cg_storef(c, out, cg_i64(c, 0), LLVMBuildFPTrunc(c->b, l, c->f32, "infonce"));
}

/* infonce: L = (1/K) Σ_k (1/M_k) Σ_{p with a target} [ −s_0 + log Σ_i exp s_i ],
 * s_i = z_{cand_i} · pred_p,k, pred = c Wᵀ, the log-sum-exp taken with the
 * maximum subtracted. Per chunk, the positions run in parallel parts, each
 * summing its terms per step in double into partial[part][k − 1]; the
 * partials are added in part order, chunk after chunk (a cut that depends on
 * the shape alone, so the bits do not depend on the thread count). */
static int gen_infonce(cg_ctx *c, const gim_node *n) {
    nce_geo g;
    if (nce_geometry(c, n, &g)) return -1;
    LLVMValueRef z = cg_buf(c, n->in[0]), cx = cg_buf(c, n->in[1]), W = cg_buf(c, n->in[2]);
    LLVMValueRef out = cg_buf(c, n);
    int64_t KC = g.K * g.Cz, R = nce_chunk_rows(g.P, KC), parts = cg_par_parts(R);   /* the most any chunk cuts into */
    LLVMValueRef pred = loss_scratch(c, n, R * KC);
    LLVMValueRef sums = entry_array(c, c->f64, g.K, "nce.sums");
    LLVMValueRef partial = entry_array(c, c->f64, g.K * parts, "nce.partial");
    cg_zero(c, sums, cg_i64(c, 2 * g.K));                 /* doubles: two floats each */
    nce_chunk ch = nce_chunk_begin(c, &g, R, cx, W, pred);
    cg_zero(c, partial, cg_i64(c, 2 * g.K * parts));     /* parts the cut does not use stay 0 */
    LLVMValueRef v[4] = {z, pred, partial, ch.p0};
    cg_par par = cg_par_begin(c, "nce", v, 4);
    LLVMValueRef s = entry_array(c, c->f32, g.neg + 1, "nce.scores");
    LLVMValueRef cand2 = entry_array(c, c->i64, 2 * (g.neg + 1), "nce.cand");
    LLVMValueRef mine = entry_array(c, c->f64, g.K, "nce.mine");   /* this part's, per step */
    cg_zero(c, mine, cg_i64(c, 2 * g.K));
    cg_loop r = cg_for_begin(c, par.begin, par.end, "nce.r");
    LLVMValueRef p = cg_add(c, v[3], r.iv);
    LLVMValueRef last = nce_last_step(c, &g, p);
    nce_next(c, n, &g, cg_i64(c, 1), p, last, v[0], cand2);
    cg_loop lk = cg_for_begin(c, cg_i64(c, 1), cg_addk(c, last, 1), "nce.k");
    LLVMValueRef k = lk.iv;
    nce_next(c, n, &g, cg_addk(c, k, 1), p, last, v[0], cand2);
    LLVMValueRef predp = cg_gep(c, v[1], cg_add(c, cg_mulk(c, r.iv, KC), cg_mulk(c, cg_addk(c, k, -1), g.Cz)));
    LLVMValueRef mx = nce_scores(c, &g, v[0], predp, s, nce_set(c, &g, cand2, k));
    LLVMValueRef se = nce_sumexp(c, &g, s, mx);
    nce_add_term(c, &g, s, mx, se, mine, k);
    cg_for_end(c, &lk);
    cg_for_end(c, &r);
    nce_part_sums(c, &g, parts, mine, v[2], par.part);
    cg_par_end_v(c, &par, ch.rows);
    nce_chunk_sums(c, &g, parts, partial, sums);
    cg_for_end(c, &ch.h);
    nce_store_loss(c, &g, sums, out);
    return 0;
}

/* infonce_bwd, packed [dz | dc | dW | L]. With a = 1/(K·M_k) and the softmax weights
 * g_i = a (softmax(s)_i − [i = 0]) over the candidates of position p at step k
 * (the same negatives as the forward pass):
 *   dz_{cand_i} += g_i pred_p,k         (the positive and every negative)
 *   dpred_p,k    = Σ_i g_i z_{cand_i}
 *   dc           = dpred W              (dpred [P, K·Cz], W [K·Cz, Cc]: one sgemm)
 *   dW           = dpredᵀ c             (one sgemm)
 * Entries of dpred without a target are zero. When c is z (no context), the
 * caller adds dz and dc. L is the loss, summed exactly as gen_infonce sums it
 * (the same terms, parts and order: the same bits), so that a training step
 * need not run the forward loss, whose products this pass repeats.
 *
 * Per chunk of R positions: pred (one SGEMM); then, in parallel over the
 * chunk's positions, the scores, dpred's rows and a record (g_i, cand_i) of
 * every candidate; then the records sorted by row (a stable counting sort);
 * then, in parallel over the rows of dz, each part adds its rows' records in
 * record order (the scatter to random rows needs no partial copy of dz, each
 * row's sum has one order whatever the threads, and dz is walked in order:
 * a row is read and written once per chunk, not once per record); then dc's
 * rows = dpred W and dW += dpredᵀ c (two SGEMMs). */
static int gen_infonce_bwd(cg_ctx *c, const gim_node *n) {
    nce_geo g;
    if (nce_geometry(c, n, &g)) return -1;
    LLVMValueRef z = cg_buf(c, n->in[0]), cx = cg_buf(c, n->in[1]), W = cg_buf(c, n->in[2]);
    LLVMValueRef out = cg_buf(c, n);
    int64_t nz = g.P * g.Cz, nc = g.P * g.Cc, nw = g.K * g.Cz * g.Cc, KC = g.K * g.Cz;
    if (gim_shape_numel(&n->shape) != nz + nc + nw + 1)
        return cg_fail(c, n, "internal: infonce_bwd: packed output of %lld floats, want %lld",
                       (long long)gim_shape_numel(&n->shape), (long long)(nz + nc + nw + 1));
    LLVMValueRef dz = out, dc = off(c, out, nz), dW = off(c, out, nz + nc), lout = off(c, out, nz + nc + nw);
    bool any = false;
    for (int64_t k = 1; k <= g.K; k++) any |= nce_count(&g, k) > 0;
    if (!any) {   /* no target at any step: the gradient and the loss are zero */
        cg_zero(c, out, cg_i64(c, nz + nc + nw + 1));
        return 0;
    }
    int64_t R = nce_chunk_rows(g.P, KC), C1 = g.neg + 1, E = nce_records(R, g.K, g.neg), parts = cg_par_parts(R);
    if (E > INT32_MAX) return cg_fail(c, n, "internal: infonce_bwd: %lld candidates in a chunk", (long long)E);
    LLVMValueRef scratch = loss_scratch(c, n, 2 * R * KC + 3 * E + E + g.P + 1);
    LLVMValueRef pred = scratch, dpred = off(c, scratch, R * KC);
    LLVMValueRef wgt = off(c, scratch, 2 * R * KC), rec = off(c, scratch, 2 * R * KC + E);
    LLVMValueRef sorted = off(c, scratch, 2 * R * KC + 3 * E), ends = off(c, scratch, 2 * R * KC + 4 * E);
    LLVMValueRef sums = entry_array(c, c->f64, g.K, "nce.sums");
    LLVMValueRef partial = entry_array(c, c->f64, g.K * parts, "nce.partial");
    cg_zero(c, sums, cg_i64(c, 2 * g.K));
    cg_zero(c, dW, cg_i64(c, nw));
    nce_chunk ch = nce_chunk_begin(c, &g, R, cx, W, pred);
    cg_zero(c, partial, cg_i64(c, 2 * g.K * parts));

    /* 1. scores, dpred rows and records, over the chunk's positions */
    LLVMValueRef v1[7] = {z, pred, dpred, wgt, rec, ch.p0, partial};
    cg_par par = cg_par_begin(c, "nce", v1, 7);
    LLVMValueRef s = entry_array(c, c->f32, C1, "nce.scores");
    LLVMValueRef cand2 = entry_array(c, c->i64, 2 * C1, "nce.cand");
    LLVMValueRef mine = entry_array(c, c->f64, g.K, "nce.mine");
    cg_zero(c, mine, cg_i64(c, 2 * g.K));
    cg_loop r = cg_for_begin(c, par.begin, par.end, "nce.r");
    LLVMValueRef p = cg_add(c, v1[5], r.iv);
    LLVMValueRef last = nce_last_step(c, &g, p);
    nce_next(c, n, &g, cg_i64(c, 1), p, last, v1[0], cand2);
    cg_loop lk = cg_for_begin(c, cg_i64(c, 1), cg_i64(c, g.K + 1), "nce.k");
    LLVMValueRef k = lk.iv;
    nce_next(c, n, &g, cg_addk(c, k, 1), p, last, v1[0], cand2);
    LLVMValueRef cand = nce_set(c, &g, cand2, k);
    LLVMValueRef at = cg_add(c, cg_mulk(c, r.iv, KC), cg_mulk(c, cg_addk(c, k, -1), g.Cz));
    LLVMValueRef predp = cg_gep(c, v1[1], at), dpredp = cg_gep(c, v1[2], at);
    LLVMValueRef e0 = cg_mulk(c, cg_add(c, cg_mulk(c, r.iv, g.K), cg_addk(c, k, -1)), C1);
    LLVMValueRef has = LLVMBuildICmp(c->b, LLVMIntSLE, k, last, "nce.has");
    cg_if ifh = cg_if_begin(c, has, "nce.target");
    {
        /* a = 1/(K·M_k), M_k = N·L_k, in double and rounded once */
        LLVMValueRef Mk = cg_mulk(c, nce_len(c, &g, k), g.N);
        LLVMValueRef den = LLVMBuildFMul(c->b, LLVMConstReal(c->f64, (double)g.K), LLVMBuildSIToFP(c->b, Mk, c->f64, ""), "");
        LLVMValueRef a = LLVMBuildFPTrunc(c->b, LLVMBuildFDiv(c->b, LLVMConstReal(c->f64, 1.0), den, ""), c->f32, "a");
        LLVMValueRef mx = nce_scores(c, &g, v1[0], predp, s, cand);
        LLVMValueRef se = nce_sumexp(c, &g, s, mx);
        nce_add_term(c, &g, s, mx, se, mine, k);
        LLVMValueRef ase = fdiv(c, a, se);          /* a / Σ exp */
        cg_loop i = cg_for(c, C1, "cand");
        LLVMValueRef si = LLVMBuildLoad2(c->b, c->f32, arr_f(c, s, C1, i.iv), "");
        LLVMValueRef row = LLVMBuildLoad2(c->b, c->i64, gep_i64(c, cand, i.iv), "");
        LLVMValueRef gi = fmul(c, ase, cg_exp(c, fsub(c, si, mx)));
        LLVMValueRef is_pos = LLVMBuildICmp(c->b, LLVMIntEQ, i.iv, cg_i64(c, 0), "");
        gi = cg_select(c, is_pos, fsub(c, gi, a), gi);
        cg_storef(c, v1[3], cg_add(c, e0, i.iv), gi);
        LLVMBuildStore(c->b, row, gep_i64(c, v1[4], cg_add(c, e0, i.iv)));
        cg_for_end(c, &i);
        /* dpred_p,k = Σ_i g_i z_{cand_i}, in candidate order, CG_DOTS_MAX rows per pass */
        for (int64_t i0 = 0; i0 < C1; i0 += CG_DOTS_MAX) {
            int m = (int)(C1 - i0 < CG_DOTS_MAX ? C1 - i0 : CG_DOTS_MAX);
            LLVMValueRef rows[CG_DOTS_MAX], gs[CG_DOTS_MAX];
            for (int q = 0; q < m; q++) {
                LLVMValueRef e = cg_addk(c, e0, i0 + q);
                gs[q] = cg_loadf(c, v1[3], e);
                rows[q] = cg_gep(c, v1[0], cg_mulk(c, LLVMBuildLoad2(c->b, c->i64, gep_i64(c, v1[4], e), ""), g.Cz));
            }
            cg_axpys(c, g.Cz, gs, rows, m, dpredp, i0 == 0);
        }
    }
    cg_if_end(c, &ifh);
    cg_if ifn = cg_if_begin(c, LLVMBuildNot(c->b, has, ""), "nce.none");
    {   /* no target: dpred_p,k = 0, and records no row owns */
        cg_zero(c, dpredp, cg_i64(c, g.Cz));
        cg_loop i = cg_for(c, C1, "cand");
        LLVMBuildStore(c->b, cg_i64(c, -1), gep_i64(c, v1[4], cg_add(c, e0, i.iv)));
        cg_for_end(c, &i);
    }
    cg_if_end(c, &ifn);
    cg_for_end(c, &lk);
    cg_for_end(c, &r);
    nce_part_sums(c, &g, parts, mine, v1[6], par.part);
    cg_par_end_v(c, &par, ch.rows);
    nce_chunk_sums(c, &g, parts, partial, sums);

    /* 2. dz. First the chunk's records sorted by row, stably, on the calling
     * thread (a counting sort: ends[row + 1] counts, a prefix sum makes them
     * starts, the scatter turns ends[row] into the end of row's records). */
    LLVMValueRef nrec = cg_mulk(c, ch.rows, g.K * C1);
    cg_zero(c, ends, cg_i64(c, g.P + 1));
    {
        cg_loop e = cg_for_begin(c, cg_i64(c, 0), nrec, "sort.count");
        LLVMValueRef row = LLVMBuildLoad2(c->b, c->i64, gep_i64(c, rec, e.iv), "row");
        cg_if has = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntSGE, row, cg_i64(c, 0), ""), "sort.has");
        LLVMValueRef at = gep_i32(c, ends, cg_addk(c, row, 1));
        LLVMBuildStore(c->b, LLVMBuildAdd(c->b, LLVMBuildLoad2(c->b, c->i32, at, ""), cg_i32(c, 1), ""), at);
        cg_if_end(c, &has);
        cg_for_end(c, &e);
    }
    {
        cg_loop r = cg_for(c, g.P, "sort.prefix");
        LLVMValueRef at = gep_i32(c, ends, cg_addk(c, r.iv, 1));
        LLVMValueRef sum = LLVMBuildAdd(c->b, LLVMBuildLoad2(c->b, c->i32, at, ""),
                                        LLVMBuildLoad2(c->b, c->i32, gep_i32(c, ends, r.iv), ""), "");
        LLVMBuildStore(c->b, sum, at);
        cg_for_end(c, &r);
    }
    {
        cg_loop e = cg_for_begin(c, cg_i64(c, 0), nrec, "sort.place");
        LLVMValueRef row = LLVMBuildLoad2(c->b, c->i64, gep_i64(c, rec, e.iv), "row");
        cg_if has = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntSGE, row, cg_i64(c, 0), ""), "sort.has");
        LLVMValueRef at = gep_i32(c, ends, row);
        LLVMValueRef q = LLVMBuildLoad2(c->b, c->i32, at, "");
        LLVMBuildStore(c->b, LLVMBuildTrunc(c->b, e.iv, c->i32, ""), gep_i32(c, sorted, LLVMBuildZExt(c->b, q, c->i64, "")));
        LLVMBuildStore(c->b, LLVMBuildAdd(c->b, q, cg_i32(c, 1), ""), at);
        cg_if_end(c, &has);
        cg_for_end(c, &e);
    }
    /* Then part t owns rows [begin, end) of dz (zeroed at the first chunk) and
     * adds each row's records, g pred_p,k, in record order: the order the
     * records were made in, whatever the threads. A row's records follow one
     * another, so the row stays in cache, and dz is walked in order. */
    LLVMValueRef v2[7] = {dz, pred, wgt, sorted, ends, ch.p0, NULL};
    cg_par pz = cg_par_begin(c, "nce.dz", v2, 6);
    v2[6] = LLVMBuildZExt(c->b, LLVMBuildLoad2(c->b, c->i32, gep_i32(c, v2[4], cg_addk(c, pz.end, -1)), ""), c->i64,
                          "part.stop");   /* the end of this part's records */
    cg_if iz = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntEQ, v2[5], cg_i64(c, 0), ""), "nce.first");
    cg_zero(c, cg_gep(c, v2[0], cg_mulk(c, pz.begin, g.Cz)), cg_mulk(c, LLVMBuildNSWSub(c->b, pz.end, pz.begin, ""), g.Cz));
    cg_if_end(c, &iz);
    cg_loop r2 = cg_for_begin(c, pz.begin, pz.end, "dz.row");
    LLVMValueRef first = cg_select(c, LLVMBuildICmp(c->b, LLVMIntEQ, r2.iv, cg_i64(c, 0), ""), cg_i32(c, 0),
                                   LLVMBuildLoad2(c->b, c->i32, gep_i32(c, v2[4], cg_addk(c, r2.iv, -1)), ""));
    LLVMValueRef stop = LLVMBuildLoad2(c->b, c->i32, gep_i32(c, v2[4], r2.iv), "");
    LLVMValueRef dzrow = cg_gep(c, v2[0], cg_mulk(c, r2.iv, g.Cz));
    cg_loop q2 = cg_for_begin(c, LLVMBuildZExt(c->b, first, c->i64, ""), LLVMBuildZExt(c->b, stop, c->i64, ""), "dz.rec");
    /* the pred rows are random reads: fetch the row NCE_AHEAD records on
     * (within this part's records) while this one is added */
    LLVMValueRef ahead = cg_addk(c, q2.iv, NCE_AHEAD);
    ahead = cg_select(c, LLVMBuildICmp(c->b, LLVMIntULT, ahead, v2[6], ""), ahead, cg_addk(c, v2[6], -1));
    LLVMValueRef ea = LLVMBuildZExt(c->b, LLVMBuildLoad2(c->b, c->i32, gep_i32(c, v2[3], ahead), ""), c->i64, "");
    cg_prefetch(c, cg_gep(c, v2[1], cg_mulk(c, LLVMBuildUDiv(c->b, ea, cg_i64(c, C1), ""), g.Cz)), g.Cz);
    LLVMValueRef e = LLVMBuildZExt(c->b, LLVMBuildLoad2(c->b, c->i32, gep_i32(c, v2[3], q2.iv), ""), c->i64, "e");
    /* record e = (r·K + k − 1)·C1 + i belongs to pred row e / C1 */
    LLVMValueRef predrow = cg_gep(c, v2[1], cg_mulk(c, LLVMBuildUDiv(c->b, e, cg_i64(c, C1), ""), g.Cz));
    cg_axpy(c, g.Cz, cg_loadf(c, v2[2], e), predrow, dzrow);
    cg_for_end(c, &q2);
    cg_for_end(c, &r2);
    cg_par_end(c, &pz, g.P);

    /* 3. dc rows and dW */
    cg_sgemm_v(c, false, false, ch.rows, cg_i64(c, g.Cc), cg_i64(c, KC), 1.0f, dpred, KC, W, g.Cc, 0.0f,
               cg_gep(c, dc, cg_mulk(c, ch.p0, g.Cc)), g.Cc);
    cg_sgemm_v(c, true, false, cg_i64(c, KC), cg_i64(c, g.Cc), ch.rows, 1.0f, dpred, KC,
               cg_gep(c, cx, cg_mulk(c, ch.p0, g.Cc)), g.Cc, 1.0f, dW, g.Cc);
    cg_for_end(c, &ch.h);
    nce_store_loss(c, &g, sums, lout);
    return 0;
}

/* ---- cross_entropy -------------------------------------------------------------- */

/* Rows and classes of logits [..., classes]; labels hold one int32 per row. */
static int ce_geometry(cg_ctx *c, const gim_node *n, int64_t *rows, int64_t *classes) {
    const gim_shape *s = &n->in[0]->shape;
    if (s->rank < 1 || s->d[s->rank - 1] < 1) return cg_fail(c, n, "internal: cross_entropy: bad logits shape");
    *classes = s->d[s->rank - 1];
    *rows = gim_shape_numel(s) / *classes;
    if (gim_shape_numel(&n->in[1]->shape) != *rows)
        return cg_fail(c, n, "internal: cross_entropy: %lld labels for %lld rows",
                       (long long)gim_shape_numel(&n->in[1]->shape), (long long)*rows);
    return 0;
}

/* The label of row r, whether it is in [0, classes), and the label clamped
 * into range (so loads stay in bounds). The data loader validates labels; a
 * row with an out-of-range label contributes no loss and no gradient (it is
 * still counted in the mean's N). */
static LLVMValueRef ce_label(cg_ctx *c, LLVMValueRef labels, LLVMValueRef r, int64_t classes, LLVMValueRef *valid) {
    LLVMValueRef y = LLVMBuildSExt(c->b, cg_loadi32(c, labels, r), c->i64, "label");
    LLVMValueRef ge = LLVMBuildICmp(c->b, LLVMIntSGE, y, cg_i64(c, 0), "");
    LLVMValueRef lt = LLVMBuildICmp(c->b, LLVMIntSLT, y, cg_i64(c, classes), "");
    *valid = LLVMBuildAnd(c->b, ge, lt, "label.ok");
    return LLVMBuildSelect(c->b, *valid, y, cg_i64(c, 0), "");
}

/* max and Σ exp(l − max) of one row */
static void ce_lse(cg_ctx *c, LLVMValueRef row, int64_t classes, LLVMValueRef *mx, LLVMValueRef *se) {
    LLVMValueRef m = cg_var(c, "ce.max", cg_loadf(c, row, cg_i64(c, 0)));
    cg_loop j = cg_for(c, classes, "ce.j");
    cg_var_set(c, m, cg_fmax(c, cg_var_get(c, m), cg_loadf(c, row, j.iv)));
    cg_for_end(c, &j);
    *mx = cg_var_get(c, m);
    LLVMValueRef s = cg_var(c, "ce.sum", cg_f32(c, 0.0f));
    cg_loop j2 = cg_for(c, classes, "ce.j");
    cg_var_set(c, s, fadd(c, cg_var_get(c, s), cg_exp(c, fsub(c, cg_loadf(c, row, j2.iv), *mx))));
    cg_for_end(c, &j2);
    *se = cg_var_get(c, s);
}

/* L = (1/N) Σ_n [ max + log Σ_j exp(l[n, j] − max) − l[n, y_n] ] */
static int gen_cross_entropy(cg_ctx *c, const gim_node *n) {
    int64_t rows, classes;
    if (ce_geometry(c, n, &rows, &classes)) return -1;
    LLVMValueRef logits = cg_buf(c, n->in[0]), labels = cg_buf(c, n->in[1]), out = cg_buf(c, n);
    LLVMValueRef sum = cg_var(c, "ce.loss", LLVMConstReal(c->f64, 0.0));
    cg_loop r = cg_for(c, rows, "ce.n");
    LLVMValueRef valid, y = ce_label(c, labels, r.iv, classes, &valid);
    LLVMValueRef row = cg_gep(c, logits, cg_mulk(c, r.iv, classes));
    LLVMValueRef mx, se;
    ce_lse(c, row, classes, &mx, &se);
    LLVMValueRef term = fsub(c, fadd(c, mx, cg_log(c, se)), cg_loadf(c, row, y));
    term = cg_select(c, valid, LLVMBuildFPExt(c->b, term, c->f64, ""), LLVMConstReal(c->f64, 0.0));
    cg_var_set(c, sum, LLVMBuildFAdd(c->b, cg_var_get(c, sum), term, ""));
    cg_for_end(c, &r);
    LLVMValueRef l = LLVMBuildFMul(c->b, cg_var_get(c, sum), LLVMConstReal(c->f64, 1.0 / (double)rows), "");
    cg_storef(c, out, cg_i64(c, 0), LLVMBuildFPTrunc(c->b, l, c->f32, "cross_entropy"));
    return 0;
}

/* dl[n, j] = (softmax(l[n])_j − [j = y_n]) / N; 0 for a row whose label is out of range */
static int gen_cross_entropy_bwd(cg_ctx *c, const gim_node *n) {
    int64_t rows, classes;
    if (ce_geometry(c, n, &rows, &classes)) return -1;
    LLVMValueRef logits = cg_buf(c, n->in[0]), labels = cg_buf(c, n->in[1]), out = cg_buf(c, n);
    cg_loop r = cg_for(c, rows, "ce.n");
    LLVMValueRef valid, y = ce_label(c, labels, r.iv, classes, &valid);
    LLVMValueRef base = cg_mulk(c, r.iv, classes);
    LLVMValueRef row = cg_gep(c, logits, base), drow = cg_gep(c, out, base);
    LLVMValueRef mx, se;
    ce_lse(c, row, classes, &mx, &se);
    LLVMValueRef scale = fdiv(c, cg_f32(c, (float)(1.0 / (double)rows)), se);
    scale = cg_select(c, valid, scale, cg_f32(c, 0.0f));
    cg_loop j = cg_for(c, classes, "ce.j");
    cg_storef(c, drow, j.iv, fmul(c, scale, cg_exp(c, fsub(c, cg_loadf(c, row, j.iv), mx))));
    cg_for_end(c, &j);
    /* − onehot / N at the label */
    LLVMValueRef one = cg_select(c, valid, cg_f32(c, (float)(1.0 / (double)rows)), cg_f32(c, 0.0f));
    cg_storef(c, drow, y, fsub(c, cg_loadf(c, drow, y), one));
    cg_for_end(c, &r);
    return 0;
}

/* ---- gru ------------------------------------------------------------------------ */

typedef struct gru_geo { int64_t N, T, C, H; } gru_geo;

/* x [N, T, C] (leading dimensions beyond N flattened into N), hidden H. */
static int gru_geometry(cg_ctx *c, const gim_node *n, const gim_node *x, gru_geo *g) {
    const gim_shape *s = &x->shape;
    if (s->rank < 2) return cg_fail(c, n, "internal: %s expects x [N, T, C]", gim_op_name(n->op));
    g->C = s->d[s->rank - 1];
    g->T = s->d[s->rank - 2];
    g->H = gim_attr_i(n, 0);
    if (g->C < 1 || g->T < 1 || g->H < 1) return cg_fail(c, n, "internal: %s: empty dimensions", gim_op_name(n->op));
    g->N = gim_shape_numel(s) / (g->T * g->C);
    return 0;
}

static int64_t gru_scratch_fwd(const gim_node *n) {
    const gim_shape *s = &n->in[0]->shape;
    int64_t H = gim_attr_i(n, 0), C = s->rank ? s->d[s->rank - 1] : 1, T = s->rank > 1 ? s->d[s->rank - 2] : 1;
    if (C < 1 || T < 1 || H < 1) return 0;
    int64_t N = gim_shape_numel(s) / (T * C);
    return N * T * 3 * H + N * 3 * H;
}

static int64_t gru_scratch_bwd(const gim_node *n) {
    const gim_shape *s = &n->in[1]->shape;          /* x */
    int64_t H = gim_attr_i(n, 0), C = s->rank ? s->d[s->rank - 1] : 1, T = s->rank > 1 ? s->d[s->rank - 2] : 1;
    if (C < 1 || T < 1 || H < 1) return 0;
    int64_t N = gim_shape_numel(s) / (T * C);
    return N * T * 3 * H + N * 3 * H + N * H;
}

/* The gate pre-activations of sample ni, unit j at time t: gi from the
 * input projection (+ b_ih), gh from the hidden projection (+ b_hh). */
typedef struct gru_gates { LLVMValueRef r, z, nn, ghn; } gru_gates;

static gru_gates gru_cell(cg_ctx *c, const gru_geo *g, LLVMValueRef gi_row, LLVMValueRef gh_row,
                          LLVMValueRef b_ih, LLVMValueRef b_hh, LLVMValueRef j) {
    LLVMValueRef jz = cg_addk(c, j, g->H), jn = cg_addk(c, j, 2 * g->H);
    gru_gates q;
    LLVMValueRef ar = fadd(c, fadd(c, cg_loadf(c, gi_row, j), cg_loadf(c, b_ih, j)),
                           fadd(c, cg_loadf(c, gh_row, j), cg_loadf(c, b_hh, j)));
    LLVMValueRef az = fadd(c, fadd(c, cg_loadf(c, gi_row, jz), cg_loadf(c, b_ih, jz)),
                           fadd(c, cg_loadf(c, gh_row, jz), cg_loadf(c, b_hh, jz)));
    q.r = sigmoid(c, ar);
    q.z = sigmoid(c, az);
    q.ghn = fadd(c, cg_loadf(c, gh_row, jn), cg_loadf(c, b_hh, jn));
    LLVMValueRef an = fadd(c, fadd(c, cg_loadf(c, gi_row, jn), cg_loadf(c, b_ih, jn)), fmul(c, q.r, q.ghn));
    q.nn = cg_tanh(c, an);
    return q;
}

/* One time step t (an i64 value) of the forward recurrence over every sample:
 *   r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r ⊙ gh_n), h = (1 − z) n + z h_prev
 * with gh already holding h_prev W_hhᵀ (or zeros at t = 0). */
static void gru_fwd_step(cg_ctx *c, const gru_geo *g, LLVMValueRef t, bool first, LLVMValueRef gi,
                         LLVMValueRef gh, LLVMValueRef b_ih, LLVMValueRef b_hh, LLVMValueRef y) {
    int64_t H3 = 3 * g->H;
    cg_loop ni = cg_for(c, g->N, "gru.n");
    LLVMValueRef nt = cg_mad(c, ni.iv, g->T, t);
    LLVMValueRef gi_row = cg_gep(c, gi, cg_mulk(c, nt, H3)), gh_row = cg_gep(c, gh, cg_mulk(c, ni.iv, H3));
    LLVMValueRef y_row = cg_gep(c, y, cg_mulk(c, nt, g->H));
    cg_loop j = cg_for(c, g->H, "gru.j");
    gru_gates q = gru_cell(c, g, gi_row, gh_row, b_ih, b_hh, j.iv);
    LLVMValueRef h = fmul(c, fsub(c, cg_f32(c, 1.0f), q.z), q.nn);
    if (!first) {
        LLVMValueRef hp = cg_loadf(c, y_row, cg_addk(c, j.iv, -g->H));   /* y[n, t − 1, j] */
        h = fadd(c, h, fmul(c, q.z, hp));
    }
    cg_storef(c, y_row, j.iv, h);
    cg_for_end(c, &j);
    cg_for_end(c, &ni);
}

/* gru: gi = x W_ihᵀ for every step at once (one sgemm), then per step
 * gh = h_{t−1} W_hhᵀ (one sgemm, rows of y strided by T·H) and the gate loop. */
static int gen_gru(cg_ctx *c, const gim_node *n) {
    gru_geo g;
    if (gru_geometry(c, n, n->in[0], &g)) return -1;
    if (n->n_in < 5) return cg_fail(c, n, "internal: gru needs x, w_ih, w_hh, b_ih, b_hh");
    int64_t H3 = 3 * g.H;
    LLVMValueRef x = cg_buf(c, n->in[0]), w_ih = cg_buf(c, n->in[1]), w_hh = cg_buf(c, n->in[2]);
    LLVMValueRef b_ih = cg_buf(c, n->in[3]), b_hh = cg_buf(c, n->in[4]), y = cg_buf(c, n);
    LLVMValueRef scratch = loss_scratch(c, n, g.N * g.T * H3 + g.N * H3);
    LLVMValueRef gi = scratch, gh = off(c, scratch, g.N * g.T * H3);
    cg_sgemm(c, false, true, g.N * g.T, H3, g.C, 1.0f, x, g.C, w_ih, g.C, 0.0f, gi, H3);
    cg_zero(c, gh, cg_i64(c, g.N * H3));
    gru_fwd_step(c, &g, cg_i64(c, 0), true, gi, gh, b_ih, b_hh, y);
    if (g.T > 1) {
        cg_loop t = cg_for_begin(c, cg_i64(c, 1), cg_i64(c, g.T), "gru.t");
        LLVMValueRef hprev = cg_gep(c, y, cg_mulk(c, cg_addk(c, t.iv, -1), g.H));
        cg_sgemm(c, false, true, g.N, H3, g.H, 1.0f, hprev, g.T * g.H, w_hh, g.H, 0.0f, gh, H3);
        gru_fwd_step(c, &g, t.iv, false, gi, gh, b_ih, b_hh, y);
        cg_for_end(c, &t);
    }
    return 0;
}

/* db[j] += Σ_r a[r, j] over rows r < rows (row stride ld) */
static void col_sums(cg_ctx *c, LLVMValueRef a, int64_t rows, int64_t cols, int64_t ld, LLVMValueRef db) {
    cg_loop r = cg_for(c, rows, "colsum.r");
    LLVMValueRef row = cg_gep(c, a, cg_mulk(c, r.iv, ld));
    cg_loop j = cg_for(c, cols, "colsum.j");
    cg_storef(c, db, j.iv, fadd(c, cg_loadf(c, db, j.iv), cg_loadf(c, row, j.iv)));
    cg_for_end(c, &j);
    cg_for_end(c, &r);
}

/* gru_bwd: backpropagation through time, packed [dx | dw_ih | dw_hh | db_ih | db_hh].
 * The gates are recomputed from x and y (y holds every h_t). For t = T−1 .. 0,
 * with dh = dy_t + (the carry from t + 1):
 *   dn = dh (1 − z), dz = dh (h_{t−1} − n), dan = dn (1 − n²), dr = dan gh_n,
 *   dgi = [dr r(1 − r), dz z(1 − z), dan],  dgh = [dr r(1 − r), dz z(1 − z), dan r],
 *   carry = dh z + dgh W_hh,  dW_hh += dghᵀ h_{t−1},  db_hh += Σ_n dgh.
 * dgi overwrites gi in place; afterwards dx = dgi W_ih, dW_ih = dgiᵀ x,
 * db_ih = Σ dgi (one sgemm each over every step). */
static int gen_gru_bwd(cg_ctx *c, const gim_node *n) {
    gru_geo g;
    if (n->n_in < 7) return cg_fail(c, n, "internal: gru_bwd needs dy, x, y, w_ih, w_hh, b_ih, b_hh");
    if (gru_geometry(c, n, n->in[1], &g)) return -1;
    int64_t H = g.H, H3 = 3 * H, NT = g.N * g.T;
    int64_t o_wih = NT * g.C, o_whh = o_wih + H3 * g.C, o_bih = o_whh + H3 * H, o_bhh = o_bih + H3;
    if (gim_shape_numel(&n->shape) != o_bhh + H3)
        return cg_fail(c, n, "internal: gru_bwd: packed output of %lld floats, want %lld",
                       (long long)gim_shape_numel(&n->shape), (long long)(o_bhh + H3));
    LLVMValueRef dy = cg_buf(c, n->in[0]), x = cg_buf(c, n->in[1]), y = cg_buf(c, n->in[2]);
    LLVMValueRef w_ih = cg_buf(c, n->in[3]), w_hh = cg_buf(c, n->in[4]);
    LLVMValueRef b_ih = cg_buf(c, n->in[5]), b_hh = cg_buf(c, n->in[6]), out = cg_buf(c, n);
    LLVMValueRef dx = out, dw_ih = off(c, out, o_wih), dw_hh = off(c, out, o_whh);
    LLVMValueRef db_ih = off(c, out, o_bih), db_hh = off(c, out, o_bhh);
    LLVMValueRef scratch = loss_scratch(c, n, NT * H3 + g.N * H3 + g.N * H);
    LLVMValueRef gi = scratch, gh = off(c, scratch, NT * H3), dh = off(c, scratch, NT * H3 + g.N * H3);

    cg_zero(c, off(c, out, o_whh), cg_i64(c, H3 * H + 2 * H3));
    cg_zero(c, dh, cg_i64(c, g.N * H));
    cg_sgemm(c, false, true, NT, H3, g.C, 1.0f, x, g.C, w_ih, g.C, 0.0f, gi, H3);

    cg_loop u = cg_for(c, g.T, "gru.u");
    LLVMValueRef t = LLVMBuildSub(c->b, cg_i64(c, g.T - 1), u.iv, "gru.t");
    LLVMValueRef has_prev = LLVMBuildICmp(c->b, LLVMIntSGT, t, cg_i64(c, 0), "");
    LLVMValueRef tprev = LLVMBuildSelect(c->b, has_prev, cg_addk(c, t, -1), cg_i64(c, 0), "");
    LLVMValueRef hprev = cg_gep(c, y, cg_mulk(c, tprev, H));      /* y[0, t − 1], rows strided T·H */
    /* gh = h_{t−1} W_hhᵀ (zero at t = 0) */
    cg_zero(c, gh, cg_i64(c, g.N * H3));
    cg_if ifp = cg_if_begin(c, has_prev, "gru.prev");
    cg_sgemm(c, false, true, g.N, H3, H, 1.0f, hprev, g.T * H, w_hh, H, 0.0f, gh, H3);
    cg_if_end(c, &ifp);

    cg_loop ni = cg_for(c, g.N, "gru.n");
    LLVMValueRef nt = cg_mad(c, ni.iv, g.T, t);
    LLVMValueRef gi_row = cg_gep(c, gi, cg_mulk(c, nt, H3)), gh_row = cg_gep(c, gh, cg_mulk(c, ni.iv, H3));
    LLVMValueRef dy_row = cg_gep(c, dy, cg_mulk(c, nt, H)), dh_row = cg_gep(c, dh, cg_mulk(c, ni.iv, H));
    LLVMValueRef hp_row = cg_gep(c, y, cg_mulk(c, cg_mad(c, ni.iv, g.T, tprev), H));
    cg_loop j = cg_for(c, H, "gru.j");
    gru_gates q = gru_cell(c, &g, gi_row, gh_row, b_ih, b_hh, j.iv);
    LLVMValueRef hp = cg_select(c, has_prev, cg_loadf(c, hp_row, j.iv), cg_f32(c, 0.0f));
    LLVMValueRef one = cg_f32(c, 1.0f);
    LLVMValueRef dhv = fadd(c, cg_loadf(c, dy_row, j.iv), cg_loadf(c, dh_row, j.iv));
    LLVMValueRef dn = fmul(c, dhv, fsub(c, one, q.z));
    LLVMValueRef dzv = fmul(c, dhv, fsub(c, hp, q.nn));
    LLVMValueRef dan = fmul(c, dn, fsub(c, one, fmul(c, q.nn, q.nn)));
    LLVMValueRef dr = fmul(c, dan, q.ghn);
    LLVMValueRef dar = fmul(c, dr, fmul(c, q.r, fsub(c, one, q.r)));
    LLVMValueRef daz = fmul(c, dzv, fmul(c, q.z, fsub(c, one, q.z)));
    LLVMValueRef jz = cg_addk(c, j.iv, H), jn = cg_addk(c, j.iv, 2 * H);
    cg_storef(c, gi_row, j.iv, dar);
    cg_storef(c, gi_row, jz, daz);
    cg_storef(c, gi_row, jn, dan);
    cg_storef(c, gh_row, j.iv, dar);
    cg_storef(c, gh_row, jz, daz);
    cg_storef(c, gh_row, jn, fmul(c, dan, q.r));
    cg_storef(c, dh_row, j.iv, fmul(c, dhv, q.z));
    cg_for_end(c, &j);
    cg_for_end(c, &ni);

    /* carry += dgh W_hh;  dW_hh += dghᵀ h_{t−1};  db_hh += Σ_n dgh */
    cg_sgemm(c, false, false, g.N, H, H3, 1.0f, gh, H3, w_hh, H, 1.0f, dh, H);
    cg_if ifw = cg_if_begin(c, has_prev, "gru.dwhh");
    cg_sgemm(c, true, false, H3, H, g.N, 1.0f, gh, H3, hprev, g.T * H, 1.0f, dw_hh, H);
    cg_if_end(c, &ifw);
    col_sums(c, gh, g.N, H3, H3, db_hh);
    cg_for_end(c, &u);

    cg_sgemm(c, false, false, NT, g.C, H3, 1.0f, gi, H3, w_ih, g.C, 0.0f, dx, g.C);
    cg_sgemm(c, true, false, H3, g.C, NT, 1.0f, gi, H3, x, g.C, 0.0f, dw_ih, g.C);
    col_sums(c, gi, NT, H3, H3, db_ih);
    return 0;
}

const cg_op_fn cg_loss_ops[GIM_OP_COUNT] = {
    [GIM_OP_INFONCE] = gen_infonce,
    [GIM_OP_INFONCE_BWD] = gen_infonce_bwd,
    [GIM_OP_CROSS_ENTROPY] = gen_cross_entropy,
    [GIM_OP_CROSS_ENTROPY_BWD] = gen_cross_entropy_bwd,
    [GIM_OP_GRU] = gen_gru,
    [GIM_OP_GRU_BWD] = gen_gru_bwd,
};

const cg_scratch_fn cg_loss_scratch[GIM_OP_COUNT] = {
    [GIM_OP_INFONCE] = nce_scratch_fwd,
    [GIM_OP_INFONCE_BWD] = nce_scratch_bwd,
    [GIM_OP_GRU] = gru_scratch_fwd,
    [GIM_OP_GRU_BWD] = gru_scratch_bwd,
};
