/* Feature extraction: every module's representation of every example of a
 * data set, for the linear probe (gimc eval, gimc train --probe).
 *
 * Batches are independent, so they run side by side, one per thread: each
 * lane holds its own batch in flight (an rt_item) and its own work arena,
 * and claims the next batch not yet taken until none is left. Inside a lane
 * the generated code runs on that one thread (gim_rt_parallel_lanes: the
 * loops of a lane run their parts in order on it). Measured on
 * Fashion-MNIST through fashion_gim, two lanes of one thread each extract
 * faster than one batch at a time over two threads: the small convolutions'
 * parallel loops and products scale 1.5× on two threads, whole batches
 * nearly 2× (see docs/internals.md).
 *
 * The bits do not depend on the lanes: each batch runs the same code on the
 * same inputs, its loops' parts and its products cut as a serial caller's
 * (the cuts depend on the shapes alone).
 *
 * Each batch's features go to a sink, module by module, from the lane that
 * made them: gim_extract_features keeps them all; the speaker probe
 * (audio.c) averages each crop's frames as they come, since the frames of a
 * whole split would not fit. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gim_util.h"
#include "rt_internal.h"
#include "train_internal.h"

/* Lanes at most: each holds a batch's buffers and a work arena. */
#define FEAT_MAX_LANES 8

typedef struct feat_lane {
    rt_item *it;
    int64_t *idx;
    gim_train_state s;      /* the shared state, with this lane's work arena */
    float **work;           /* s.work: every module's arena is `arena` */
    float *arena;
    double *module_s;       /* this lane's seconds per module since it last reported */
} feat_lane;

typedef struct feat_job {
    const gim_exec_model *m;
    const gim_examples *d;
    rt_binding b;
    gim_feature_sink sink;  /* takes each batch's features, module by module */
    void *sink_arg;
    int64_t batches;
    int lanes;
    feat_lane lane[FEAT_MAX_LANES];
    _Atomic int64_t next;   /* the next batch to claim */
    atomic_int failed;      /* a lane failed: the others stop claiming */
    /* under mu: progress, module seconds, the first error */
    pthread_mutex_t mu;
    int64_t done;
    void (*show)(void *arg, int64_t done, int64_t total);
    void *arg;
    double *module_s;
    char *err;
    size_t errlen;
} feat_job;

/* Part t of the pool loop: lane t's batches. */
static void feat_lane_run(void *env, int64_t begin, int64_t end, int part) {
    (void)begin, (void)end;
    feat_job *j = env;
    feat_lane *l = &j->lane[part];
    const gim_exec_model *m = j->m;
    const gim_examples *d = j->d;
    char err[512];
    for (int64_t k; !atomic_load(&j->failed) && (k = atomic_fetch_add(&j->next, 1)) < j->batches;) {
        /* the last partial batch is padded by repeating its final example;
         * the padding's features are dropped */
        int64_t start = k * m->batch, count = d->n - start < m->batch ? d->n - start : m->batch;
        for (int64_t e = 0; e < m->batch; e++) l->idx[e] = start + (e < count ? e : count - 1);
        if (rt_fill_data(m, &j->b, d, GIM_EPOCH_NONE, l->idx, l->it, err, sizeof err)) {
            pthread_mutex_lock(&j->mu);
            if (!atomic_exchange(&j->failed, 1)) gim_errf(j->err, j->errlen, "%s", err);
            pthread_mutex_unlock(&j->mu);
            return;
        }
        for (int i = 0; i < m->n_modules; i++) {
            double t0 = j->module_s ? rt_now() : 0;
            rt_module_forward(m, &l->s, i, l->it);
            if (j->module_s) l->module_s[i] += rt_now() - t0;
        }
        for (int i = 0; i < m->n_modules; i++) {
            int sl = m->modules[i].feature_slot;
            if (sl < 0) continue;
            if (j->sink(j->sink_arg, i, start, count, l->it->slot[sl], err, sizeof err)) {
                pthread_mutex_lock(&j->mu);
                if (!atomic_exchange(&j->failed, 1)) gim_errf(j->err, j->errlen, "%s", err);
                pthread_mutex_unlock(&j->mu);
                return;
            }
        }
        pthread_mutex_lock(&j->mu);
        j->done += count;
        /* seconds of the lanes' work per module, shared out over the lanes:
         * what a module's passes cost in wall time */
        for (int i = 0; j->module_s && i < m->n_modules; i++) {
            j->module_s[i] += l->module_s[i] / j->lanes;
            l->module_s[i] = 0;
        }
        if (j->show) j->show(j->arg, j->done, d->n);
        pthread_mutex_unlock(&j->mu);
    }
}

static void feat_lane_free(feat_job *j, int t) {
    feat_lane *l = &j->lane[t];
    rt_item_free(j->m, l->it);
    gim_free(l->idx);
    gim_free(l->work);
    gim_free(l->arena);
    gim_free(l->module_s);
    memset(l, 0, sizeof *l);
}

/* Lane t's buffers; lane 0 uses the state's own work arena. */
static int feat_lane_init(feat_job *j, const gim_train_state *s, int t) {
    const gim_exec_model *m = j->m;
    feat_lane *l = &j->lane[t];
    l->it = rt_item_new(m);
    l->idx = gim_malloc(sizeof(int64_t) * (size_t)m->batch);
    l->module_s = gim_calloc((size_t)m->n_modules, sizeof(double));
    l->s = *s;
    l->s.owns = false;
    if (!l->it || !l->idx || !l->module_s) return -1;
    if (t == 0) return 0;
    int64_t work = rt_work_floats(m);
    l->arena = rt_alloc_floats(work > 0 ? work : 1);
    l->work = gim_calloc((size_t)m->n_modules, sizeof(float *));
    if (!l->arena || !l->work) return -1;
    for (int i = 0; i < m->n_modules; i++) l->work[i] = l->arena;
    l->s.work = l->work;
    return 0;
}

int gim_extract_features(const gim_exec_model *m, const gim_train_state *s,
                         const gim_examples *d, float **feats, int64_t *feat_numel,
                         void (*show)(void *arg, int64_t done, int64_t total), void *arg,
                         char *err, size_t errlen) {
    return gim_extract_features_timed(m, s, d, feats, feat_numel, show, arg, NULL, err, errlen);
}

int64_t gim_feature_numel(const gim_exec_model *m, int module) {
    int sl = m->modules[module].feature_slot;
    return sl >= 0 ? m->slots[sl].numel / m->batch : 0;
}

/* The default sink: every example's features kept, in example order. */
typedef struct feat_store {
    float **feats;
    const int64_t *feat_numel;
} feat_store;

static int feat_store_batch(void *arg, int module, int64_t start, int64_t count, const float *features, char *err,
                            size_t errlen) {
    (void)err, (void)errlen;
    const feat_store *st = arg;
    memcpy(st->feats[module] + start * st->feat_numel[module], features,
           (size_t)(count * st->feat_numel[module]) * sizeof(float));
    return 0;
}

int gim_extract_features_timed(const gim_exec_model *m, const gim_train_state *s,
                               const gim_examples *d, float **feats, int64_t *feat_numel,
                               void (*show)(void *arg, int64_t done, int64_t total), void *arg,
                               double *module_s, char *err, size_t errlen) {
    for (int i = 0; i < m->n_modules; i++) feats[i] = NULL;
    for (int i = 0; i < m->n_modules; i++) {
        feat_numel[i] = gim_feature_numel(m, i);
        if (m->modules[i].feature_slot < 0) continue;
        /* every row is written: no zeroing (2.3 GB for Fashion-MNIST's
         * 70,000 images through fashion_gim was a serial pass before any work) */
        feats[i] = (uint64_t)(d->n * feat_numel[i]) <= SIZE_MAX / sizeof(float)
                       ? gim_malloc(sizeof(float) * (size_t)(d->n * feat_numel[i]))
                       : NULL;
        if (!feats[i]) {
            gim_errf(err, errlen, "out of memory for module %d's features (%.2f GiB)", i + 1,
                     4.0 * (double)(d->n * feat_numel[i]) / (1 << 30));
            for (int k = 0; k <= i; k++) { gim_free(feats[k]); feats[k] = NULL; }
            return -1;
        }
    }
    feat_store st = {feats, feat_numel};
    int rc = gim_extract_features_each(m, s, d, feat_store_batch, &st, show, arg, module_s, err, errlen);
    if (rc)
        for (int i = 0; i < m->n_modules; i++) { gim_free(feats[i]); feats[i] = NULL; }
    return rc;
}

int gim_extract_features_each(const gim_exec_model *m, const gim_train_state *s, const gim_examples *d,
                              gim_feature_sink sink, void *sink_arg,
                              void (*show)(void *arg, int64_t done, int64_t total), void *arg,
                              double *module_s, char *err, size_t errlen) {
    feat_job *j = gim_calloc(1, sizeof *j);
    if (!j) return gim_errf(err, errlen, "out of memory");
    int rc = -1;
    pthread_mutex_init(&j->mu, NULL);
    j->m = m;
    j->d = d;
    j->sink = sink;
    j->sink_arg = sink_arg;
    j->batches = (d->n + m->batch - 1) / m->batch;
    j->show = show;
    j->arg = arg;
    j->module_s = module_s;
    j->err = err;
    j->errlen = errlen;
    if (rt_bind_data(m, d, &j->b, err, errlen)) goto done;
    int threads = gim_rt_threads();
    j->lanes = threads < FEAT_MAX_LANES ? threads : FEAT_MAX_LANES;
    if (j->lanes > j->batches) j->lanes = j->batches > 0 ? (int)j->batches : 1;
    for (int t = 0; t < j->lanes; t++)
        if (feat_lane_init(j, s, t)) {
            /* fewer lanes when memory is short; none is an error */
            feat_lane_free(j, t);
            j->lanes = t;
            if (t == 0) {
                gim_errf(err, errlen, "out of memory for a batch in flight");
                goto done;
            }
            break;
        }
    /* one lane: a batch at a time, each over the whole pool */
    if (j->lanes == 1) feat_lane_run(j, 0, 1, 0);
    else gim_rt_parallel_lanes(j->lanes, feat_lane_run, j);
    rc = atomic_load(&j->failed) ? -1 : 0;
done:
    for (int t = 0; t < j->lanes; t++) feat_lane_free(j, t);
    pthread_mutex_destroy(&j->mu);
    gim_free(j);
    return rc;
}
