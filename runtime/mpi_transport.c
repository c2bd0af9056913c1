/* MPI underneath the distributed schedules: start and end, the agreement
 * between ranks before training, sharing rank 0's data shape and state, and
 * messages with bounded waits (see dist_internal.h).
 *
 * MPI is initialised only when the environment says mpirun started this
 * process: a plain `gimc train` never touches it. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist_internal.h"
#include "gim_train.h"
#include "gim_util.h"
#include "rt_internal.h"
#include "train_internal.h"

bool gim_dist_requested(void) {
    /* Open MPI's launcher, and PMI/PMIx launchers (srun, hydra) */
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

#ifdef GIM_HAVE_MPI
#include <mpi.h>

static bool dist_started;
static int dist_rank_, dist_size_ = 1, dist_local_ = 1;

int gim_dist_start(int *argc, char ***argv, char *err, size_t errlen) {
    int provided;
    /* only the main thread calls MPI (the pool's threads never do) */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        gim_errf(err, errlen, "MPI_Init failed");
        return -1;
    }
    dist_started = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_size_);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &dist_local_);
    MPI_Comm_free(&local);
    return 0;
}

int gim_dist_rank(void) { return dist_rank_; }
int gim_dist_size(void) { return dist_size_; }
int gim_dist_local_size(void) { return dist_local_; }

void gim_dist_finish(void) {
    if (dist_started) MPI_Finalize();
    dist_started = false;
}

_Noreturn void gim_dist_abort(int status) {
    fflush(stdout);
    fflush(stderr);
    if (dist_started) MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}

int gim_dist_agree(int status) {
    int ok = status == 0, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    return all ? 0 : -1;
}

/* ---- the agreement before training ------------------------------------------- */

/* What every rank must share with rank 0, field by field. */
typedef struct dist_ident {
    char version[32];
    char model[64];
    uint64_t structure;      /* slots, parameters and modules */
    uint64_t optimizer;      /* optimizer settings */
    uint64_t placement;
    int64_t batch, epochs, steps;
    uint64_t seed;
    int32_t schedule, e2e;
    int64_t refresh;
    int32_t cache_dtype;
} dist_ident;

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

static uint64_t mix_str(uint64_t h, const char *s) { return mix(h, s ? s : "", s ? strlen(s) + 1 : 1); }

static void ident_of(dist_ident *id, const gim_exec_model *m, const gim_train_config *cfg, const char *version) {
    memset(id, 0, sizeof *id);
    snprintf(id->version, sizeof id->version, "%s", version ? version : "");
    snprintf(id->model, sizeof id->model, "%s", m->name ? m->name : "");
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    h = mix(h, &m->n_modules, sizeof m->n_modules);
    for (int i = 0; i < m->n_slots; i++) {
        h = mix_str(h, m->slots[i].name);
        h = mix(h, &m->slots[i].numel, sizeof m->slots[i].numel);
    }
    for (int i = 0; i < m->n_modules; i++)
        for (int j = 0; j < m->modules[i].n_params; j++) {
            h = mix_str(h, m->modules[i].params[j].name);
            h = mix(h, &m->modules[i].params[j].numel, sizeof m->modules[i].params[j].numel);
        }
    id->structure = h;
    h = UINT64_C(0xcbf29ce484222325);
    double o[6] = {cfg->lr, cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay, cfg->momentum};
    h = mix(h, o, sizeof o);
    h = mix(h, &cfg->optimizer, sizeof cfg->optimizer);
    id->optimizer = h;
    h = UINT64_C(0xcbf29ce484222325);
    if (cfg->placement) h = mix(h, cfg->placement, sizeof(int) * (size_t)m->n_modules);
    id->placement = h;
    id->batch = m->batch;
    id->epochs = cfg->epochs;
    id->steps = cfg->steps;
    id->seed = cfg->seed;
    id->schedule = (int32_t)cfg->schedule;
    id->e2e = cfg->e2e;
    id->refresh = cfg->refresh;
    id->cache_dtype = (int32_t)cfg->cache_dtype;
}

/* The first field in which b differs from a, described; false when none. */
static bool ident_diff(const dist_ident *a, const dist_ident *b, char *what, size_t n) {
    static const char *const sched[] = {"simultaneous", "sequential", "async"};
    if (strcmp(a->version, b->version))
        snprintf(what, n, "gim version %s, rank 0 %s", b->version, a->version);
    else if (strcmp(a->model, b->model))
        snprintf(what, n, "model '%s', rank 0 model '%s'", b->model, a->model);
    else if (a->batch != b->batch)   /* before the shapes, which the batch changes */
        snprintf(what, n, "--batch %" PRId64 ", rank 0 --batch %" PRId64, b->batch, a->batch);
    else if (a->structure != b->structure)
        snprintf(what, n, "a model file whose modules, parameters or shapes differ from rank 0's");
    else if (a->seed != b->seed)
        snprintf(what, n, "--seed %" PRIu64 ", rank 0 --seed %" PRIu64, b->seed, a->seed);
    else if (a->schedule != b->schedule)
        snprintf(what, n, "--schedule %s, rank 0 --schedule %s", sched[b->schedule % 3], sched[a->schedule % 3]);
    else if (a->epochs != b->epochs || a->steps != b->steps)
        snprintf(what, n, "--epochs %" PRId64 " --steps %" PRId64 ", rank 0 --epochs %" PRId64 " --steps %" PRId64,
                 b->epochs, b->steps, a->epochs, a->steps);
    else if (a->e2e != b->e2e)
        snprintf(what, n, "%s, rank 0 %s", b->e2e ? "--e2e" : "greedy training", a->e2e ? "--e2e" : "greedy training");
    else if (a->refresh != b->refresh || a->cache_dtype != b->cache_dtype)
        snprintf(what, n, "--refresh %" PRId64 " --cache-dtype %s, rank 0 --refresh %" PRId64 " --cache-dtype %s",
                 b->refresh, b->cache_dtype ? "bf16" : "f32", a->refresh, a->cache_dtype ? "bf16" : "f32");
    else if (a->optimizer != b->optimizer)
        snprintf(what, n, "other optimizer settings (--lr or the train block) than rank 0");
    else if (a->placement != b->placement)
        snprintf(what, n, "another --placement than rank 0");
    else
        return false;
    return true;
}

int gim_dist_handshake(const gim_exec_model *m, const gim_train_config *cfg, const char *version, char *err,
                       size_t errlen) {
    dist_ident mine;
    ident_of(&mine, m, cfg, version);
    dist_ident *all = gim_calloc((size_t)dist_size_, sizeof *all);
    if (!all) {
        gim_errf(err, errlen, "out of memory");
        gim_dist_abort(1);
    }
    MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
    int rc = 0;
    for (int r = 1; r < dist_size_ && rc == 0; r++) {
        char what[256];
        if (ident_diff(&all[0], &all[r], what, sizeof what)) {
            gim_errf(err, errlen, "rank %d was started with %s; every rank must run the same model and options", r,
                     what);
            rc = -1;
        }
    }
    gim_free(all);
    return rc;
}

/* ---- rank 0's data shape and state to every rank --------------------------------- */

static int no_examples(void *ctx, int64_t epoch, int64_t i, float *x, int32_t *label, char *err, size_t errlen) {
    gim_errf(err, errlen, "rank %d reads no data: only rank 0 does", dist_rank_);
    return -1;
}

int gim_dist_share_data(gim_examples *d, int status, char *err, size_t errlen) {
    int64_t desc[4 + GIM_RT_MAX_RANK] = {status, d->n, d->x_rank, d->labels || d->source_labels};
    for (int i = 0; i < GIM_RT_MAX_RANK; i++) desc[4 + i] = d->x_shape[i];
    int64_t n_classes = d->n_classes;
    MPI_Bcast(desc, 4 + GIM_RT_MAX_RANK, MPI_INT64_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(&n_classes, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (desc[0]) {
        gim_errf(err, errlen, "rank 0 could not load the data");
        return -1;
    }
    if (dist_rank_ == 0) return 0;
    memset(d, 0, sizeof *d);
    d->n = desc[1];
    d->x_rank = (int)desc[2];
    d->x_numel = 1;
    for (int i = 0; i < d->x_rank && i < GIM_RT_MAX_RANK; i++) {
        d->x_shape[i] = desc[4 + i];
        d->x_numel *= d->x_shape[i];
    }
    d->n_classes = (int)n_classes;
    d->source = no_examples;
    d->source_labels = desc[3] != 0;
    return 0;
}

int gim_dist_share_state(const gim_exec_model *m, gim_train_state *s, int status, char *err, size_t errlen) {
    int st = status;
    MPI_Bcast(&st, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (st) {
        gim_errf(err, errlen, "rank 0 could not load the checkpoint");
        return -1;
    }
    for (int i = 0; i < m->n_modules; i++) {
        MPI_Bcast(s->params[i], (int)m->modules[i].n_param_floats, MPI_FLOAT, 0, MPI_COMM_WORLD);
        MPI_Bcast(s->opt[i], (int)m->modules[i].n_opt_floats, MPI_FLOAT, 0, MPI_COMM_WORLD);
    }
    MPI_Bcast(s->module_step, m->n_modules, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int64_t pos[3] = {s->epoch, s->batch_in_epoch, s->sequential_module};
    MPI_Bcast(pos, 3, MPI_INT64_T, 0, MPI_COMM_WORLD);
    s->epoch = pos[0];
    s->batch_in_epoch = pos[1];
    s->sequential_module = (int)pos[2];
    return 0;
}

/* ---- messages with bounded waits --------------------------------------------------- */

/* Between polls: short naps, so that a waiting rank leaves the cores to
 * the ranks that compute (several ranks may share a machine). */
static void nap(int *round) {
    struct timespec ts = {0, *round < 20 ? 20 * 1000 : 500 * 1000};
    (*round)++;
    nanosleep(&ts, NULL);
}

struct rt_outbox {
    int n;
    MPI_Request *req;
    void **buf;
    size_t *cap;
    double bytes;
};

rt_outbox *rt_outbox_new(int slots) {
    rt_outbox *o = gim_calloc(1, sizeof *o);
    if (!o) return NULL;
    o->n = slots;
    o->req = gim_calloc((size_t)slots, sizeof(MPI_Request));
    o->buf = gim_calloc((size_t)slots, sizeof(void *));
    o->cap = gim_calloc((size_t)slots, sizeof(size_t));
    if (!o->req || !o->buf || !o->cap) {
        rt_outbox_free(o);
        return NULL;
    }
    for (int i = 0; i < slots; i++) o->req[i] = MPI_REQUEST_NULL;
    return o;
}

void rt_outbox_free(rt_outbox *o) {
    if (!o) return;
    for (int i = 0; o->buf && i < o->n; i++) {
        if (o->req[i] != MPI_REQUEST_NULL) {
            /* a peer that never took it: the run is failing anyway */
            MPI_Cancel(&o->req[i]);
            MPI_Request_free(&o->req[i]);
        }
        gim_free(o->buf[i]);
    }
    gim_free(o->req);
    gim_free(o->buf);
    gim_free(o->cap);
    gim_free(o);
}

double rt_outbox_bytes(const rt_outbox *o) { return o->bytes; }

int rt_outbox_send(rt_outbox *o, int dst, int tag, const void *const *parts, const size_t *sizes, int n,
                   double timeout, const char *peer, char *err, size_t errlen) {
    double t0 = rt_now();
    int round = 0, slot = -1;
    for (;;) {
        for (int i = 0; i < o->n && slot < 0; i++) {
            int done = 1;
            if (o->req[i] != MPI_REQUEST_NULL) MPI_Test(&o->req[i], &done, MPI_STATUS_IGNORE);
            if (done) slot = i;
        }
        if (slot >= 0) break;
        if (rt_now() - t0 > timeout) {
            gim_errf(err, errlen, "%s took nothing for %.0f s; stopping", peer, timeout);
            return -1;
        }
        nap(&round);
    }
    size_t total = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    if (total > (size_t)INT32_MAX) {
        gim_errf(err, errlen, "a message of %zu bytes is larger than MPI sends at once", total);
        return -1;
    }
    if (o->cap[slot] < total) {
        gim_free(o->buf[slot]);
        o->buf[slot] = gim_malloc(total ? total : 1);
        o->cap[slot] = o->buf[slot] ? total : 0;
        if (!o->buf[slot]) {
            gim_errf(err, errlen, "out of memory for a message of %zu bytes", total);
            return -1;
        }
    }
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        memcpy((char *)o->buf[slot] + at, parts[i], sizes[i]);
        at += sizes[i];
    }
    MPI_Isend(o->buf[slot], (int)total, MPI_BYTE, dst, tag, MPI_COMM_WORLD, &o->req[slot]);
    o->bytes += (double)total;
    return 0;
}

int rt_outbox_flush(rt_outbox *o, double timeout, const char *peer, char *err, size_t errlen) {
    double t0 = rt_now();
    int round = 0;
    for (;;) {
        bool all = true;
        for (int i = 0; i < o->n; i++) {
            int done = 1;
            if (o->req[i] != MPI_REQUEST_NULL) MPI_Test(&o->req[i], &done, MPI_STATUS_IGNORE);
            all = all && done;
        }
        if (all) return 0;
        if (rt_now() - t0 > timeout) {
            gim_errf(err, errlen, "%s took nothing for %.0f s; stopping", peer, timeout);
            return -1;
        }
        nap(&round);
    }
}

bool rt_dist_poll(int src, int tag, int *src_out, int *tag_out, size_t *bytes) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(src < 0 ? MPI_ANY_SOURCE : src, tag < 0 ? MPI_ANY_TAG : tag, MPI_COMM_WORLD, &flag, &st);
    if (!flag) return false;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    if (src_out) *src_out = st.MPI_SOURCE;
    if (tag_out) *tag_out = st.MPI_TAG;
    if (bytes) *bytes = (size_t)count;
    return true;
}

int rt_dist_wait(int src, int tag, double timeout, const char *peer, int *src_out, int *tag_out, size_t *bytes,
                 char *err, size_t errlen) {
    double t0 = rt_now();
    int round = 0;
    while (!rt_dist_poll(src, tag, src_out, tag_out, bytes)) {
        if (rt_now() - t0 > timeout) {
            gim_errf(err, errlen, "%s sent nothing for %.0f s; stopping", peer, timeout);
            return -1;
        }
        nap(&round);
    }
    return 0;
}

void rt_dist_recv(int src, int tag, void *buf, size_t bytes) {
    MPI_Recv(buf, (int)bytes, MPI_BYTE, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

#else /* built without MPI: a run under mpirun is refused */

int gim_dist_start(int *argc, char ***argv, char *err, size_t errlen) {
    gim_errf(err, errlen, "this gimc was built without MPI (install libopenmpi-dev and rebuild) but was started by "
             "mpirun");
    return -1;
}
int gim_dist_rank(void) { return 0; }
int gim_dist_size(void) { return 1; }
int gim_dist_local_size(void) { return 1; }
void gim_dist_finish(void) {}
_Noreturn void gim_dist_abort(int status) { exit(status); }
int gim_dist_agree(int status) { return status ? -1 : 0; }
int gim_dist_handshake(const gim_exec_model *m, const gim_train_config *cfg, const char *version, char *err,
                       size_t errlen) {
    return 0;
}
int gim_dist_share_data(gim_examples *d, int status, char *err, size_t errlen) { return status ? -1 : 0; }
int gim_dist_share_state(const gim_exec_model *m, gim_train_state *s, int status, char *err, size_t errlen) {
    return status ? -1 : 0;
}

#endif
