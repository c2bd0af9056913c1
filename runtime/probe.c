/* Linear probe: multinomial logistic regression by minibatch Adam.
 *
 * Forward on a batch X [B, D]: logits = X Wᵀ + b, p = softmax(logits).
 * Loss = mean over the batch of −log p[y]. Gradients: G = (p − onehot(y)) / B,
 * dW = Gᵀ X, db = Σ_rows G.
 *
 * A training batch is one pass over its rows (probe_rows): a few rows at a
 * time, read where they lie in the shuffled feature matrix, give their
 * logits, softmax and share of dW while they are in cache, a slice of
 * features at a time, in register tiles of rows by classes. The features are
 * far larger than the cache and the classes few, so the probe is bound by
 * reading the features; gathering the batch and running two SGEMMs over the
 * copy (the earlier way) read every row several times. Measured with 20,000
 * rows of 4608 features, 10 classes, 10 epochs: 1.25 s -> 0.86 s on two
 * threads, 1.58 s -> 1.21 s on one. The batch's rows are cut into
 * PROBE_PARTS parts over the pool, each with its own partial dW; the Adam
 * step sums them in part order, elementwise over the pool, so the result
 * does not depend on the thread count. The row code is compiled for AVX2
 * with FMA and for the baseline, picked by the CPU at run time. Accuracy
 * (contiguous rows, no gradient) stays an SGEMM. */
#include "gim_probe.h"

#include <math.h>
#include <string.h>

#include "gim_runtime.h"
#include "gim_util.h"
#include "rt_internal.h"

void gim_probe_defaults(gim_probe_options *o) {
    o->epochs = 10;
    o->batch = 256;
    o->lr = 1e-3;
    o->seed = 0;
    o->progress = NULL;
    o->progress_arg = NULL;
}

static void standardise(float *xtr, int64_t ntr, float *xte, int64_t nte, int64_t dim) {
    double *mean = gim_xmalloc(sizeof(double) * (size_t)dim);
    double *sq = gim_xmalloc(sizeof(double) * (size_t)dim);
    for (int64_t j = 0; j < dim; j++) mean[j] = sq[j] = 0;
    for (int64_t i = 0; i < ntr; i++) {
        const float *x = xtr + i * dim;
        for (int64_t j = 0; j < dim; j++) {
            mean[j] += x[j];
            sq[j] += (double)x[j] * x[j];
        }
    }
    float *shift = gim_xmalloc(sizeof(float) * (size_t)dim);
    float *scale = gim_xmalloc(sizeof(float) * (size_t)dim);
    for (int64_t j = 0; j < dim; j++) {
        double m = mean[j] / (double)ntr;
        double var = sq[j] / (double)ntr - m * m;
        double sd = var > 0 ? sqrt(var) : 0;
        shift[j] = (float)m;
        /* A constant feature carries nothing: map it to 0 rather than divide by 0. */
        scale[j] = sd > 1e-12 ? (float)(1.0 / sd) : 0.0f;
    }
    for (int64_t i = 0; i < ntr; i++)
        for (int64_t j = 0; j < dim; j++) xtr[i * dim + j] = (xtr[i * dim + j] - shift[j]) * scale[j];
    for (int64_t i = 0; i < nte; i++)
        for (int64_t j = 0; j < dim; j++) xte[i * dim + j] = (xte[i * dim + j] - shift[j]) * scale[j];
    gim_free(mean);
    gim_free(sq);
    gim_free(shift);
    gim_free(scale);
}

/* logits [n, classes] for rows x [n, dim] */
static void logits_of(const float *x, int64_t n, int64_t dim, int classes, const float *w, const float *b,
                      float *out) {
    for (int64_t i = 0; i < n; i++) memcpy(out + i * classes, b, sizeof(float) * (size_t)classes);
    gim_rt_sgemm(0, 1, n, classes, dim, 1.0f, x, dim, w, dim, 1.0f, out, classes);
}

static double accuracy(const float *x, const int32_t *y, int64_t n, int64_t dim, int classes, const float *w,
                       const float *b) {
    const int64_t chunk = 1024;
    float *lg = gim_xmalloc(sizeof(float) * (size_t)(chunk * classes));
    int64_t correct = 0;
    for (int64_t s = 0; s < n; s += chunk) {
        int64_t c = n - s < chunk ? n - s : chunk;
        logits_of(x + s * dim, c, dim, classes, w, b, lg);
        for (int64_t i = 0; i < c; i++) {
            int best = 0;
            for (int k = 1; k < classes; k++)
                if (lg[i * classes + k] > lg[i * classes + best]) best = k;
            correct += best == y[s + i];
        }
    }
    gim_free(lg);
    return n ? (double)correct / (double)n : 0;
}

/* ---- a training batch in one pass over its rows --------------------------------- */

/* Parts a batch's rows are cut into, each with a partial gradient of
 * classes·(dim + 1) floats. */
#define PROBE_PARTS 4
/* the pool cuts min(n, GIM_RT_PARTS) items into as many parts: one item a part */
_Static_assert(PROBE_PARTS <= GIM_RT_PARTS, "a probe part is one pool part");
/* Rows whose logits and gradient are computed together, and the features
 * taken at a time: a block's slice of its rows and of every class's weights
 * stay in L1 while all of them are used (4 rows × 256 floats, 4 KB, and
 * 1 KB a class). */
#define PROBE_BLOCK 4
#define PROBE_SLICE 256

/* Eight floats as one value (GCC's vector extension): the compiler uses the
 * widest vectors the target has. Loads and stores are unaligned (memcpy). */
typedef float probe_v8 __attribute__((vector_size(32)));
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(probe_v8))
#define STORE8(p, v) memcpy((p), &(v), sizeof(probe_v8))
#define SUM8(v) ((((v)[0] + (v)[4]) + ((v)[1] + (v)[5])) + (((v)[2] + (v)[6]) + ((v)[3] + (v)[7])))

typedef struct probe_batch {
    const float *x;           /* the feature matrix [ntr, dim] */
    const int32_t *y;
    const int64_t *rows;      /* the batch: n row indices */
    int64_t n, dim;
    int parts;                /* min(n, PROBE_PARTS): the pool's items, one a part */
    int classes;
    const float *w;           /* W [classes, dim], then b [classes] */
    float *partial;           /* per part: dW [classes, dim], then db [classes] */
    float *lg;                /* per part: PROBE_BLOCK rows of logits, then of G */
    double *loss;             /* per part: the sum of its rows' losses */
} probe_batch;

/* The register tile: PROBE_BLOCK rows by CLASS_TILE classes, 12 vector
 * accumulators; each vector of x and of W loaded once feeds 3 or 4 products. */
#define CLASS_TILE 3

/* lg[r·classes + k] += Σ_j x[r][j]·W[k][j] for j in [j0, j1), rows r < nr and
 * classes k in [k0, k0 + nk); j1 − j0 a multiple of 8 except in the last slice.
 * Inlined with nr and nk constants, the accumulators stay in registers. */
static inline __attribute__((always_inline)) void tile_dots(const float *const *x, int nr, const float *w, int64_t dim,
                                                           int classes, int k0, int nk, int64_t j0, int64_t j1,
                                                           float *lg) {
    probe_v8 acc[PROBE_BLOCK][CLASS_TILE];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 3
        for (int q = 0; q < nk; q++) acc[r][q] = (probe_v8){0};
    int64_t j = j0;
    for (; j + 8 <= j1; j += 8) {
        probe_v8 wv[CLASS_TILE];
#pragma GCC unroll 3
        for (int q = 0; q < nk; q++) LOAD8(wv[q], w + (int64_t)(k0 + q) * dim + j);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            probe_v8 xv;
            LOAD8(xv, x[r] + j);
#pragma GCC unroll 3
            for (int q = 0; q < nk; q++) acc[r][q] += xv * wv[q];
        }
    }
    for (int r = 0; r < nr; r++)
        for (int q = 0; q < nk; q++) {
            const float *wk = w + (int64_t)(k0 + q) * dim;
            float s = SUM8(acc[r][q]);
            for (int64_t t = j; t < j1; t++) s += x[r][t] * wk[t];
            lg[r * classes + k0 + q] += s;
        }
}

/* dW[k][j] += Σ_r G[r][k]·x[r][j] for the same tile */
static inline __attribute__((always_inline)) void tile_grads(const float *const *x, int nr, const float *G,
                                                            int64_t dim, int classes, int k0, int nk, int64_t j0,
                                                            int64_t j1, float *dw) {
    probe_v8 c[PROBE_BLOCK][CLASS_TILE];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 3
        for (int q = 0; q < nk; q++) c[r][q] = (probe_v8){0} + G[r * classes + k0 + q];
    int64_t j = j0;
    for (; j + 8 <= j1; j += 8) {
        probe_v8 gv[CLASS_TILE];
#pragma GCC unroll 3
        for (int q = 0; q < nk; q++) LOAD8(gv[q], dw + (int64_t)(k0 + q) * dim + j);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            probe_v8 xv;
            LOAD8(xv, x[r] + j);
#pragma GCC unroll 3
            for (int q = 0; q < nk; q++) gv[q] += c[r][q] * xv;
        }
#pragma GCC unroll 3
        for (int q = 0; q < nk; q++) STORE8(dw + (int64_t)(k0 + q) * dim + j, gv[q]);
    }
    for (; j < j1; j++)
        for (int q = 0; q < nk; q++)
            for (int r = 0; r < nr; r++) dw[(int64_t)(k0 + q) * dim + j] += G[r * classes + k0 + q] * x[r][j];
}

/* Every class for nr rows over [j0, j1): full tiles, then the last classes. */
static inline __attribute__((always_inline)) void slice_dots(const float *const *x, int nr, const float *w,
                                                            int64_t dim, int classes, int64_t j0, int64_t j1,
                                                            float *lg) {
    int k = 0;
    for (; k + CLASS_TILE <= classes; k += CLASS_TILE) tile_dots(x, nr, w, dim, classes, k, CLASS_TILE, j0, j1, lg);
    for (; k < classes; k++) tile_dots(x, nr, w, dim, classes, k, 1, j0, j1, lg);
}

static inline __attribute__((always_inline)) void slice_grads(const float *const *x, int nr, const float *G,
                                                             int64_t dim, int classes, int64_t j0, int64_t j1,
                                                             float *dw) {
    int k = 0;
    for (; k + CLASS_TILE <= classes; k += CLASS_TILE) tile_grads(x, nr, G, dim, classes, k, CLASS_TILE, j0, j1, dw);
    for (; k < classes; k++) tile_grads(x, nr, G, dim, classes, k, 1, j0, j1, dw);
}

/* nr rows: logits, softmax, loss and G = (p − onehot(y)) / n into lg, then
 * their share of dW and db. Returns the rows' summed loss. */
static inline __attribute__((always_inline)) double block_step(const probe_batch *pb, const float *const *x,
                                                              const int32_t *y, int nr, float *lg, float *dw) {
    int64_t dim = pb->dim;
    int classes = pb->classes;
    const float *b = pb->w + (int64_t)classes * dim;
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < classes; k++) lg[r * classes + k] = b[k];
    for (int64_t j0 = 0; j0 < dim; j0 += PROBE_SLICE)
        slice_dots(x, nr, pb->w, dim, classes, j0, j0 + PROBE_SLICE < dim ? j0 + PROBE_SLICE : dim, lg);
    double loss = 0;
    float *db = dw + (int64_t)classes * dim;
    for (int r = 0; r < nr; r++) {
        float *row = lg + r * classes;
        float mx = row[0];
        for (int k = 1; k < classes; k++) mx = row[k] > mx ? row[k] : mx;
        double z = 0;
        for (int k = 0; k < classes; k++) z += exp((double)(row[k] - mx));
        loss += -(double)(row[y[r]] - mx) + log(z);
        for (int k = 0; k < classes; k++) {
            float p = (float)(exp((double)(row[k] - mx)) / z);
            row[k] = (p - (k == y[r] ? 1.0f : 0.0f)) / (float)pb->n;
            db[k] += row[k];
        }
    }
    for (int64_t j0 = 0; j0 < dim; j0 += PROBE_SLICE)
        slice_grads(x, nr, lg, dim, classes, j0, j0 + PROBE_SLICE < dim ? j0 + PROBE_SLICE : dim, dw);
    return loss;
}

/* One part of a batch: its rows in blocks of PROBE_BLOCK, the rest one at a
 * time. */
static inline __attribute__((always_inline)) void probe_rows(void *env, int64_t begin, int64_t end, int part) {
    const probe_batch *pb = env;
    /* the pool's items are the parts: rows [begin·n/P, end·n/P) */
    int64_t r0 = begin * pb->n / pb->parts, r1 = end * pb->n / pb->parts;
    int64_t np = (int64_t)pb->classes * pb->dim + pb->classes;
    float *dw = pb->partial + (int64_t)part * np;
    memset(dw, 0, sizeof(float) * (size_t)np);
    float *lg = pb->lg + (int64_t)part * PROBE_BLOCK * pb->classes;
    double loss = 0;
    int64_t i = r0;
    for (; i < r1; i += PROBE_BLOCK) {
        int nr = r1 - i < PROBE_BLOCK ? (int)(r1 - i) : PROBE_BLOCK;
        const float *x[PROBE_BLOCK];
        int32_t y[PROBE_BLOCK];
        for (int r = 0; r < nr; r++) {
            x[r] = pb->x + pb->rows[i + r] * pb->dim;
            y[r] = pb->y[pb->rows[i + r]];
        }
        if (nr == PROBE_BLOCK) {
            loss += block_step(pb, x, y, PROBE_BLOCK, lg, dw);
        } else {
            for (int r = 0; r < nr; r++) loss += block_step(pb, x + r, y + r, 1, lg, dw);
        }
    }
    pb->loss[part] = loss;
}

/* The same code compiled twice: for AVX2 with FMA, and for the baseline
 * x86-64 the rest of gim is built for; probe_rows_fn picks by the CPU. */
__attribute__((target("avx2,fma"))) static void probe_rows_avx2(void *env, int64_t begin, int64_t end, int part) {
    probe_rows(env, begin, end, part);
}

static void probe_rows_base(void *env, int64_t begin, int64_t end, int part) { probe_rows(env, begin, end, part); }

static gim_rt_part_fn probe_rows_fn(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? probe_rows_avx2 : probe_rows_base;
}

/* The step for parameters [begin, end): the gradient is the parts' partials
 * summed in part order, then Adam. Elementwise, so any cut gives the same
 * bits. */
typedef struct adam_job {
    float *w, *m, *v;
    const float *partial;
    int64_t np;
    int parts;
    float b1, b2, eps, c2, step;
} adam_job;

static void adam_update(void *env, int64_t begin, int64_t end, int part) {
    (void)part;
    const adam_job *a = env;
    for (int64_t i = begin; i < end; i++) {
        float g = a->partial[i];
        for (int pt = 1; pt < a->parts; pt++) g += a->partial[(int64_t)pt * a->np + i];
        a->m[i] = a->b1 * a->m[i] + (1 - a->b1) * g;
        a->v[i] = a->b2 * a->v[i] + (1 - a->b2) * g * g;
        a->w[i] -= a->step * a->m[i] / (sqrtf(a->v[i] / a->c2) + a->eps);
    }
}

int gim_probe_run(float *xtr, const int32_t *ytr, int64_t ntr, float *xte, const int32_t *yte,
                  int64_t nte, int64_t dim, int classes, const gim_probe_options *o,
                  gim_probe_result *r) {
    standardise(xtr, ntr, xte, nte, dim);
    int64_t np = (int64_t)classes * dim + classes;
    float *w = gim_malloc(sizeof(float) * (size_t)np);
    float *m = gim_calloc((size_t)np, sizeof(float));
    float *v = gim_calloc((size_t)np, sizeof(float));
    float *partial = gim_malloc(sizeof(float) * (size_t)(PROBE_PARTS * np));
    float *lg = gim_malloc(sizeof(float) * (size_t)(PROBE_PARTS * PROBE_BLOCK * classes));
    int64_t *perm = gim_malloc(sizeof(int64_t) * (size_t)ntr);
    double part_loss[PROBE_PARTS];
    if (!w || !m || !v || !partial || !lg || !perm) {
        gim_free(w); gim_free(m); gim_free(v); gim_free(partial); gim_free(lg); gim_free(perm);
        return -1;
    }
    float *b = w + (int64_t)classes * dim;
    /* PyTorch's nn.Linear initialisation: U(−1/√dim, 1/√dim). */
    float bound = 1.0f / sqrtf((float)dim);
    for (int64_t i = 0; i < np; i++)
        w[i] = bound * (2.0f * gim_rt_rand_uniform(o->seed, GIM_RT_STREAM_INIT | 0x9e3779b9u, (uint64_t)i) - 1.0f);
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    gim_rt_part_fn rows_fn = probe_rows_fn();
    uint64_t t = 0;
    double loss_sum = 0;
    int64_t loss_n = 0;
    for (int ep = 0; ep < o->epochs; ep++) {
        for (int64_t i = 0; i < ntr; i++) perm[i] = i;
        gim_rt_shuffle_i64(perm, ntr, o->seed, GIM_RT_STREAM_DATA | (0x7072u << 16) | (uint64_t)ep);
        loss_sum = 0;
        loss_n = 0;
        for (int64_t s = 0; s < ntr; s += o->batch) {
            int64_t bn = ntr - s < o->batch ? ntr - s : o->batch;
            int parts = bn < PROBE_PARTS ? (int)bn : PROBE_PARTS;
            probe_batch pb = {.x = xtr, .y = ytr, .rows = perm + s, .n = bn, .dim = dim, .parts = parts,
                              .classes = classes, .w = w, .partial = partial, .lg = lg, .loss = part_loss};
            gim_rt_parallel_for(parts, rows_fn, &pb);
            for (int pt = 0; pt < parts; pt++) loss_sum += part_loss[pt];
            loss_n += bn;
            t++;
            adam_job aj = {.w = w, .m = m, .v = v, .partial = partial, .np = np, .parts = parts, .b1 = b1, .b2 = b2,
                           .eps = eps, .c2 = 1.0f - powf(b2, (float)t),
                           .step = (float)o->lr / (1.0f - powf(b1, (float)t))};
            gim_rt_parallel_for(np, adam_update, &aj);
            if (o->progress)
                o->progress(o->progress_arg, ep, s / o->batch + 1, (ntr + o->batch - 1) / o->batch,
                            loss_sum / (double)loss_n);
        }
    }
    r->final_loss = loss_n ? loss_sum / (double)loss_n : 0;
    r->train_acc = accuracy(xtr, ytr, ntr, dim, classes, w, b);
    r->test_acc = accuracy(xte, yte, nte, dim, classes, w, b);
    gim_free(w); gim_free(m); gim_free(v); gim_free(partial); gim_free(lg); gim_free(perm);
    return 0;
}

void gim_probe_pool_mean_to(const float *x, int64_t n, int64_t positions, int64_t c, float *out) {
    /* example i's row of out ends before its positions in x begin, or is
     * their first row, read position by position before it is written: in
     * place (out == x) is safe */
    for (int64_t i = 0; i < n; i++) {
        const float *src = x + i * positions * c;
        float *dst = out + i * c;
        for (int64_t k = 0; k < c; k++) {
            double s = 0;
            for (int64_t p = 0; p < positions; p++) s += src[p * c + k];
            dst[k] = (float)(s / (double)positions);
        }
    }
}

void gim_probe_pool_mean(float *x, int64_t n, int64_t positions, int64_t c) {
    gim_probe_pool_mean_to(x, n, positions, c, x);
}
