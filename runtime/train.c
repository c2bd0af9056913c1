/* Training: the three schedules over "batches in flight".
 *
 * A batch in flight (rt_item) holds one buffer per slot of the model: the
 * model's inputs and labels, and every module's exports. A module's call
 * reads its input slots from the item and writes its export slots into it,
 * so the item carries a batch downstream. Simultaneous training moves one
 * item through every module in turn; async training gives each module a
 * thread and puts bounded queues of items between them. */
#define _GNU_SOURCE
#include "gim_train.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"
#include "rt_internal.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- interruption ---------------------------------------------------------- */

/* Set by the handler (on whichever thread takes the signal), read by the
 * training loops and the async workers: a lock-free atomic, safe in a
 * signal handler and between threads. */
static int stop_requested;

static bool stop_now(void) { return __atomic_load_n(&stop_requested, __ATOMIC_RELAXED) != 0; }
static void set_stop(int v) { __atomic_store_n(&stop_requested, v, __ATOMIC_RELAXED); }

static void on_signal(int sig) {
    (void)sig;
    set_stop(1);
}

static void install_signals(struct sigaction *old_int, struct sigaction *old_term) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
    set_stop(0);
}

static void restore_signals(const struct sigaction *old_int, const struct sigaction *old_term) {
    sigaction(SIGINT, old_int, NULL);
    sigaction(SIGTERM, old_term, NULL);
}

/* ---- state ------------------------------------------------------------------- */

static float *alloc_floats(int64_t n) {
    if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float)) return NULL;
    return gim_malloc_aligned((size_t)n * sizeof(float));
}

int gim_train_state_init(gim_train_state *s, const gim_exec_model *m, uint64_t seed,
                         char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    int n = m->n_modules;
    int64_t work_max = 0;
    s->params = gim_calloc((size_t)n, sizeof(float *));
    s->grads = gim_calloc((size_t)n, sizeof(float *));
    s->opt = gim_calloc((size_t)n, sizeof(float *));
    s->work = gim_calloc((size_t)n, sizeof(float *));
    s->module_step = gim_calloc((size_t)n, sizeof(uint64_t));
    s->owns = true;
    if (!s->params || !s->grads || !s->opt || !s->work || !s->module_step) goto oom;
    for (int i = 0; i < n; i++)
        if (m->modules[i].n_work_floats > work_max) work_max = m->modules[i].n_work_floats;
    if (!(s->work_shared = alloc_floats(work_max))) goto oom;
    for (int i = 0; i < n; i++) {
        const gim_exec_module *mod = &m->modules[i];
        s->params[i] = alloc_floats(mod->n_param_floats);
        s->grads[i] = alloc_floats(mod->n_param_floats);
        s->opt[i] = alloc_floats(mod->n_opt_floats);
        s->work[i] = s->work_shared;
        if (!s->params[i] || !s->grads[i] || !s->opt[i]) goto oom;
        gim_rt_init_params(mod, s->params[i], seed);
    }
    return 0;
oom:;
    double total = 4.0 * (double)work_max;
    for (int i = 0; i < n; i++)
        total += 4.0 * (double)(2 * m->modules[i].n_param_floats + m->modules[i].n_opt_floats);
    gim_errf(err, errlen, "out of memory: the model's buffers need %.2f GiB", total / (1 << 30));
    gim_train_state_free(s, m);
    return -1;
}

void gim_train_state_free(gim_train_state *s, const gim_exec_model *m) {
    if (!s->owns) return;
    for (int i = 0; i < m->n_modules; i++) {
        if (s->params) gim_free(s->params[i]);
        if (s->grads) gim_free(s->grads[i]);
        if (s->opt) gim_free(s->opt[i]);
    }
    gim_free(s->work_shared);
    gim_free(s->params);
    gim_free(s->grads);
    gim_free(s->opt);
    gim_free(s->work);
    gim_free(s->module_step);
    memset(s, 0, sizeof *s);
}

/* ---- batches in flight ------------------------------------------------------- */

typedef struct rt_item {
    float **slot;            /* one buffer per model slot (labels stored as int32) */
    int64_t batch_no;        /* global batch counter of the data order */
    uint64_t *made_at;       /* per module: its step count when it wrote its exports */
    struct rt_item *next;
} rt_item;

static rt_item *item_new(const gim_exec_model *m) {
    rt_item *it = gim_calloc(1, sizeof *it);
    if (!it) return NULL;
    it->slot = gim_calloc((size_t)m->n_slots, sizeof(float *));
    it->made_at = gim_calloc((size_t)m->n_modules, sizeof(uint64_t));
    if (!it->slot || !it->made_at) goto fail;
    for (int i = 0; i < m->n_slots; i++)
        if (!(it->slot[i] = alloc_floats(m->slots[i].numel))) goto fail;
    return it;
fail:
    if (it->slot)
        for (int i = 0; i < m->n_slots; i++) gim_free(it->slot[i]);
    gim_free(it->slot);
    gim_free(it->made_at);
    gim_free(it);
    return NULL;
}

static void item_free(const gim_exec_model *m, rt_item *it) {
    if (!it) return;
    for (int i = 0; i < m->n_slots; i++) gim_free(it->slot[i]);
    gim_free(it->slot);
    gim_free(it->made_at);
    gim_free(it);
}

/* The model's data slots: one float input and optional labels. */
typedef struct rt_binding {
    int x_slot, y_slot;
} rt_binding;

static int bind_data(const gim_exec_model *m, const gim_examples *d, rt_binding *b,
                     char *err, size_t errlen) {
    b->x_slot = b->y_slot = -1;
    for (int i = 0; i < m->n_slots; i++) {
        const gim_slot_info *s = &m->slots[i];
        if (s->producer >= 0) continue;
        if (s->is_labels) {
            b->y_slot = i;
            continue;
        }
        if (b->x_slot >= 0) {
            gim_errf(err, errlen, "the model has more than one input ('%s', '%s'); the data set provides one",
                     m->slots[b->x_slot].name, s->name);
            return -1;
        }
        b->x_slot = i;
    }
    if (b->x_slot < 0) {
        gim_errf(err, errlen, "the model has no input to feed the data to");
        return -1;
    }
    const gim_slot_info *x = &m->slots[b->x_slot];
    bool same = x->rank == d->x_rank + 1 && x->shape[0] == m->batch;
    for (int i = 0; same && i < d->x_rank; i++) same = x->shape[i + 1] == d->x_shape[i];
    if (!same) {
        char ms[128] = "", ds[128] = "";
        size_t at = 0;
        for (int i = 0; i < x->rank; i++)
            at += (size_t)snprintf(ms + at, sizeof ms - at, i ? ", %lld" : "[%lld", (long long)x->shape[i]);
        snprintf(ms + at, sizeof ms - at, "]");
        at = (size_t)snprintf(ds, sizeof ds, "[%lld", (long long)m->batch);
        for (int i = 0; i < d->x_rank; i++)
            at += (size_t)snprintf(ds + at, sizeof ds - at, ", %lld", (long long)d->x_shape[i]);
        snprintf(ds + at, sizeof ds - at, "]");
        gim_errf(err, errlen, "the model's input '%s' is %s but the data gives batches of %s", x->name, ms, ds);
        return -1;
    }
    if (b->y_slot >= 0 && !d->labels) {
        gim_errf(err, errlen, "the model reads labels ('%s') but the data set has none", m->slots[b->y_slot].name);
        return -1;
    }
    return 0;
}

/* Fills the item's data slots with the examples idx[0..batch). */
static void fill_data(const gim_exec_model *m, const rt_binding *b, const gim_examples *d,
                      const int64_t *idx, rt_item *it) {
    float *x = it->slot[b->x_slot];
    for (int64_t i = 0; i < m->batch; i++)
        memcpy(x + i * d->x_numel, d->x + idx[i] * d->x_numel, (size_t)d->x_numel * sizeof(float));
    if (b->y_slot >= 0) {
        int32_t *y = (int32_t *)it->slot[b->y_slot];
        for (int64_t i = 0; i < m->batch; i++) y[i] = d->labels[idx[i]];
    }
}

static gim_call make_call(const gim_exec_model *m, const gim_train_state *s, int mi, rt_item *it,
                          const float **in, float **out, const gim_train_config *cfg) {
    const gim_exec_module *mod = &m->modules[mi];
    const int32_t *labels = NULL;
    for (int i = 0; i < mod->n_inputs; i++) {
        in[i] = it->slot[mod->inputs[i]];
        if (m->slots[mod->inputs[i]].is_labels) labels = (const int32_t *)in[i];
    }
    for (int i = 0; i < mod->n_exports; i++) out[i] = it->slot[mod->exports[i]];
    gim_call c = {
        .inputs = in,
        .labels = labels,
        .params = s->params[mi],
        .grads = s->grads[mi],
        .opt = s->opt[mi],
        .work = s->work[mi],
        .outputs = out,
        .step = s->module_step[mi] + 1,
        .seed = cfg ? cfg->seed : 0,
        .lr = cfg ? (float)cfg->lr : 0.0f,
        .flags = 0,
    };
    return c;
}

#define RT_MAX_IO 64

static float module_step(const gim_exec_model *m, gim_train_state *s, int mi, rt_item *it,
                         const gim_train_config *cfg) {
    const float *in[RT_MAX_IO];
    float *out[RT_MAX_IO];
    gim_call c = make_call(m, s, mi, it, in, out, cfg);
    float loss = m->modules[mi].step(&c);
    /* atomic: under async the next module's thread reads it (staleness) */
    uint64_t done = s->module_step[mi] + 1;
    __atomic_store_n(&s->module_step[mi], done, __ATOMIC_RELAXED);
    it->made_at[mi] = done;
    return loss;
}

static void module_forward(const gim_exec_model *m, const gim_train_state *s, int mi, rt_item *it) {
    const float *in[RT_MAX_IO];
    float *out[RT_MAX_IO];
    gim_call c = make_call(m, s, mi, it, in, out, NULL);
    m->modules[mi].forward(&c);
}

/* ---- progress and metrics -------------------------------------------------- */

typedef struct rt_progress {
    gim_progress con;     /* the console: bar or lines, rate in examples/s */
    FILE *out;            /* con.out */
    bool tty;             /* con.tty */
    FILE *csv;
    int n_modules;
    double *sum;          /* loss sums since the last line, per module */
    int64_t *count;
    double *last;         /* last window's mean, per module */
    double t_last_save;
    double rate;          /* examples/s over the last window (con.rate) */
    bool diverged;        /* a save found non-finite parameters */
    int64_t batch;
    /* A checkpoint due after step k is a copy of the state taken then and
     * written once step k + 1's losses, computed from those parameters,
     * came out finite: a divergence never leaves on disk parameters that
     * were about to give a NaN (simultaneous and sequential schedules). */
    gim_train_state shadow;
    bool shadow_alloc, pending;
} rt_progress;

/* metrics.csv: continued on resume, else started afresh (a new run into an
 * old directory does not mix its rows with the old run's). */
static void progress_init(rt_progress *p, FILE *out, const gim_exec_model *m, const char *dir, bool append) {
    memset(p, 0, sizeof *p);
    gim_progress_init(&p->con, out);
    p->out = out;
    p->tty = p->con.tty;
    p->n_modules = m->n_modules;
    p->batch = m->batch;
    p->sum = gim_xmalloc(sizeof(double) * (size_t)m->n_modules);
    p->count = gim_xmalloc(sizeof(int64_t) * (size_t)m->n_modules);
    p->last = gim_xmalloc(sizeof(double) * (size_t)m->n_modules);
    for (int i = 0; i < m->n_modules; i++) p->sum[i] = 0, p->count[i] = 0, p->last[i] = NAN;
    p->t_last_save = now_s();
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/metrics.csv", dir);
        struct stat st;
        bool fresh = !append || stat(path, &st) != 0 || st.st_size == 0;
        p->csv = fopen(path, append ? "a" : "w");
        if (p->csv && fresh) fprintf(p->csv, "step,epoch,module,loss,examples_per_s\n");
    }
}

/* On resume: metrics.csv may hold rows past the checkpoint (written before
 * a crash, and to be written again now) and a torn last line. Keeps the
 * complete rows at or before the resumed position: for the sequential
 * schedule, every row of the modules already trained and the current
 * module's up to its position; otherwise every module's up to the
 * position. */
static int metrics_trim(const char *dir, const gim_train_config *cfg, const gim_train_state *s, int64_t nb,
                        char *err, size_t errlen) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    size_t len;
    char *text = gim_read_file(path, &len);
    if (!text) return 0;   /* none yet: nothing to trim */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        gim_errf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        gim_free(text);
        return -1;
    }
    int64_t pos = s->epoch * nb + s->batch_in_epoch;
    bool first = true;
    for (char *line = text; *line;) {
        char *nl = memchr(line, '\n', len - (size_t)(line - text));
        if (!nl) break;                      /* torn: dropped */
        *nl = 0;
        long long step, epoch;
        int module, used = 0;
        double loss, rate;
        bool keep;
        if (first) keep = true;              /* the header */
        else if (sscanf(line, "%lld,%lld,%d,%lf,%lf%n", &step, &epoch, &module, &loss, &rate, &used) != 5 || line[used])
            keep = false;
        else if (cfg->schedule == GIM_SCHED_SEQUENTIAL && !cfg->e2e)
            keep = module - 1 < s->sequential_module || (module - 1 == s->sequential_module && step <= pos);
        else
            keep = step <= pos;
        if (keep) fprintf(f, "%s\n", line);
        first = false;
        line = nl + 1;
    }
    gim_free(text);
    bool bad = fflush(f) != 0 || ferror(f);
    bad = fclose(f) != 0 || bad;
    if (bad || rename(tmp, path)) {
        gim_errf(err, errlen, "cannot rewrite %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void shadow_free(rt_progress *p, const gim_exec_model *m) {
    if (!p->shadow_alloc) return;
    for (int i = 0; i < m->n_modules; i++) {
        gim_free(p->shadow.params[i]);
        gim_free(p->shadow.opt[i]);
    }
    gim_free(p->shadow.params);
    gim_free(p->shadow.opt);
    gim_free(p->shadow.module_step);
    p->shadow_alloc = false;
}

static void progress_free(rt_progress *p, const gim_exec_model *m) {
    shadow_free(p, m);
    if (p->csv) fclose(p->csv);
    gim_free(p->sum);
    gim_free(p->count);
    gim_free(p->last);
}

/* One line (or a redrawn bar) with each module's mean loss since the last. */
static void progress_line(rt_progress *p, int64_t epoch, int64_t epochs, int64_t done, int64_t total,
                          bool final) {
    for (int i = 0; i < p->n_modules; i++)
        if (p->count[i]) {
            p->last[i] = p->sum[i] / (double)p->count[i];
            p->sum[i] = 0;
            p->count[i] = 0;
        }
    if (!p->out) return;
    double rate = p->rate;
    char eta[32];
    /* from the current rate: the time since the start covers other epochs
     * (and a resumed run starts mid-epoch) */
    gim_progress_eta(eta, sizeof eta, rate > 0 ? (double)(total - done) * (double)p->batch / rate : -1.0);
    char tail[600], head[64];
    size_t at = 0;
    for (int i = 0; i < p->n_modules && at < 512; i++)
        at += isnan(p->last[i]) ? (size_t)snprintf(tail + at, 512 - at, "  m%d -", i + 1)   /* none yet */
                                : (size_t)snprintf(tail + at, 512 - at, "  m%d %.4f", i + 1, p->last[i]);
    if (at > 512) at = 512;
    snprintf(tail + at, sizeof tail - at, "  %.0f ex/s  ETA %s", rate, eta);
    snprintf(head, sizeof head, "epoch %lld/%lld", (long long)epoch + 1, (long long)epochs);
    gim_progress_show(&p->con, head, "step", done, total, tail, final);
}

static void progress_record(rt_progress *p, int mi, double loss, int64_t step, int64_t epoch) {
    p->sum[mi] += loss;
    p->count[mi]++;
    if (p->csv) fprintf(p->csv, "%lld,%lld,%d,%.6g,%.1f\n", (long long)step, (long long)epoch, mi + 1, loss, p->rate);
}

static void progress_examples(rt_progress *p, int64_t n) {
    gim_progress_count(&p->con, n);
    p->rate = p->con.rate;
}

static bool progress_due(rt_progress *p, int64_t done, int64_t total) { return gim_progress_due(&p->con, done, total); }

/* ---- checkpoints on schedule ------------------------------------------------ */

/* A loss can stay finite for a step while the update that follows it
 * sends parameters to Inf or NaN; such parameters are never saved over the
 * last good checkpoint. */
static int params_finite(const gim_exec_model *m, const gim_train_state *s, rt_progress *p,
                         char *err, size_t errlen) {
    for (int i = 0; i < m->n_modules; i++) {
        const float *x = s->params[i];
        for (int64_t k = 0; k < m->modules[i].n_param_floats; k++)
            if (!isfinite(x[k])) {
                const char *name = "?";
                for (int j = 0; j < m->modules[i].n_params; j++)
                    if (k >= m->modules[i].params[j].offset &&
                        k < m->modules[i].params[j].offset + m->modules[i].params[j].numel)
                        name = m->modules[i].params[j].name;
                gim_errf(err, errlen,
                         "module %d's parameter '%s' became %s after its step %llu; stopped, the last "
                         "checkpoint is kept",
                         i + 1, name, isnan(x[k]) ? "NaN" : "infinite", (unsigned long long)s->module_step[i]);
                p->diverged = true;
                return -1;
            }
    }
    return 0;
}

static int save_now(const gim_exec_model *m, const gim_train_state *s, const gim_train_config *cfg,
                    rt_progress *p, char *err, size_t errlen) {
    p->t_last_save = now_s();
    if (p->csv) fflush(p->csv);
    if (params_finite(m, s, p, err, errlen)) return -1;
    /* how the weights were trained: eval probes an end-to-end checkpoint
     * without its missing loss parameters; resume checks the schedule */
    static const char *const names[] = {"simultaneous", "sequential", "async"};
    int sched = cfg->schedule >= 0 && cfg->schedule <= 2 ? (int)cfg->schedule : 0;
    gim_ckpt_meta meta[] = {{"training", cfg->e2e ? "e2e" : "greedy"}, {"schedule", names[sched]}};
    int rc = gim_checkpoint_save_meta(m, s, cfg->out_dir, meta, 2, err, errlen);
    if (!rc && cfg->after_save) cfg->after_save(cfg->after_save_arg);
    return rc;
}

/* Copies what a checkpoint holds (parameters, optimizer state, counters)
 * into p->shadow; false when memory for it is lacking. */
static bool snapshot(const gim_exec_model *m, const gim_train_state *s, rt_progress *p) {
    int n = m->n_modules;
    if (!p->shadow_alloc) {
        memset(&p->shadow, 0, sizeof p->shadow);
        p->shadow.params = gim_calloc((size_t)n, sizeof(float *));
        p->shadow.opt = gim_calloc((size_t)n, sizeof(float *));
        p->shadow.module_step = gim_calloc((size_t)n, sizeof(uint64_t));
        p->shadow_alloc = true;
        bool ok = p->shadow.params && p->shadow.opt && p->shadow.module_step;
        for (int i = 0; ok && i < n; i++) {
            p->shadow.params[i] = alloc_floats(m->modules[i].n_param_floats);
            p->shadow.opt[i] = alloc_floats(m->modules[i].n_opt_floats);
            ok = p->shadow.params[i] && p->shadow.opt[i];
        }
        if (!ok) {
            for (int i = 0; i < n; i++) {
                if (p->shadow.params) gim_free(p->shadow.params[i]);
                if (p->shadow.opt) gim_free(p->shadow.opt[i]);
            }
            gim_free(p->shadow.params);
            gim_free(p->shadow.opt);
            gim_free(p->shadow.module_step);
            p->shadow_alloc = false;
            return false;
        }
    }
    for (int i = 0; i < n; i++) {
        memcpy(p->shadow.params[i], s->params[i], sizeof(float) * (size_t)m->modules[i].n_param_floats);
        memcpy(p->shadow.opt[i], s->opt[i], sizeof(float) * (size_t)m->modules[i].n_opt_floats);
        p->shadow.module_step[i] = s->module_step[i];
    }
    p->shadow.epoch = s->epoch;
    p->shadow.batch_in_epoch = s->batch_in_epoch;
    p->shadow.sequential_module = s->sequential_module;
    p->pending = true;
    return true;
}

/* A step's losses were finite: the pending checkpoint is good; write it. */
static int confirm_save(const gim_exec_model *m, const gim_train_config *cfg, rt_progress *p, char *err,
                        size_t errlen) {
    if (!p->pending) return 0;
    p->pending = false;
    return save_now(m, &p->shadow, cfg, p, err, errlen);
}

static int maybe_save(const gim_exec_model *m, const gim_train_state *s, const gim_train_config *cfg,
                      rt_progress *p, int64_t step, bool force, char *err, size_t errlen) {
    if (!cfg->out_dir) return 0;
    bool due = force;
    if (cfg->save_every > 0) due = due || step % cfg->save_every == 0;
    else due = due || now_s() - p->t_last_save >= 60.0;
    if (!due) return 0;
    p->t_last_save = now_s();
    if (snapshot(m, s, p)) return 0;
    return save_now(m, s, cfg, p, err, errlen);   /* no memory for a copy: now, unconfirmed */
}

static int diverged(const gim_exec_model *m, int mi, float loss, uint64_t step, char *err, size_t errlen) {
    if (isfinite(loss)) return 0;
    gim_errf(err, errlen,
             "module %d's loss became %s at its step %llu; stopped, the last good checkpoint is kept",
             mi + 1, isnan(loss) ? "NaN" : "infinite", (unsigned long long)step);
    (void)m;
    return -1;
}

/* ---- the data order ------------------------------------------------------------ */

typedef struct rt_order {
    int64_t *perm;
    int64_t epoch;       /* epoch perm was made for; -1 none */
    int64_t n;
} rt_order;

static const int64_t *order_for(rt_order *o, uint64_t seed, int64_t epoch) {
    if (o->epoch != epoch) {
        for (int64_t i = 0; i < o->n; i++) o->perm[i] = i;
        gim_rt_shuffle_i64(o->perm, o->n, seed, GIM_RT_STREAM_DATA | (uint64_t)epoch);
        o->epoch = epoch;
    }
    return o->perm;
}

/* ---- simultaneous ---------------------------------------------------------------- */

static int train_simultaneous(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                              const gim_examples *d, const rt_binding *b, rt_progress *p,
                              gim_train_report *rep, char *err, size_t errlen) {
    int64_t nb = d->n / m->batch;
    rt_item *it = item_new(m);
    rt_order order = {.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n), .epoch = -1, .n = d->n};
    float *losses = gim_malloc(sizeof(float) * (size_t)m->n_modules);
    if (!it || !order.perm || !losses) {
        item_free(m, it);
        gim_free(order.perm);
        gim_free(losses);
        gim_errf(err, errlen, "out of memory for a batch");
        return -1;
    }
    int rc = 0;
    int64_t limit = cfg->steps > 0 ? cfg->steps : INT64_MAX;
    for (; s->epoch < cfg->epochs && rc == 0; s->epoch++, s->batch_in_epoch = 0) {
        const int64_t *perm = order_for(&order, cfg->seed, s->epoch);
        for (; s->batch_in_epoch < nb; ) {
            int64_t step = s->epoch * nb + s->batch_in_epoch;
            if (step >= limit || stop_now()) break;
            fill_data(m, b, d, perm + s->batch_in_epoch * m->batch, it);
            for (int mi = 0; mi < m->n_modules; mi++) {
                losses[mi] = module_step(m, s, mi, it, cfg);
                if ((rc = diverged(m, mi, losses[mi], s->module_step[mi], err, errlen))) {
                    rep->diverged = true;
                    break;
                }
            }
            if (rc) break;
            if ((rc = confirm_save(m, cfg, p, err, errlen))) break;
            s->batch_in_epoch++;
            rep->steps++;
            progress_examples(p, m->batch);   /* first: the rows carry this step's rate */
            for (int mi = 0; mi < m->n_modules; mi++) progress_record(p, mi, losses[mi], step + 1, s->epoch + 1);
            if (progress_due(p, s->batch_in_epoch, nb))
                progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, s->batch_in_epoch == nb);
            if (s->batch_in_epoch < nb && (rc = maybe_save(m, s, cfg, p, step + 1, false, err, errlen))) break;
        }
        if (rc || stop_now() || s->epoch * nb + s->batch_in_epoch >= limit) {
            if (!rc && s->batch_in_epoch < nb && p->tty) progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, true);
            if (!rc && s->batch_in_epoch == nb) { s->epoch++; s->batch_in_epoch = 0; }
            break;
        }
        /* end of epoch: always a checkpoint */
        if ((rc = maybe_save(m, s, cfg, p, s->epoch * nb + s->batch_in_epoch, true, err, errlen))) break;
    }
    item_free(m, it);
    gim_free(order.perm);
    gim_free(losses);
    return rc;
}

/* ---- sequential ----------------------------------------------------------------- */

/* Per-example storage of one slot for the whole training set: memory-mapped
 * from an unlinked file in the output directory, so a cache larger than
 * memory pages to disk instead of failing. */
typedef struct rt_cache {
    float *data;
    size_t bytes;
    int64_t per_example;
} rt_cache;

static int cache_open(rt_cache *c, const char *dir, int64_t n, int64_t per_example, char *err, size_t errlen) {
    c->per_example = per_example;
    c->bytes = (size_t)n * (size_t)per_example * sizeof(float);
    char path[4096];
    snprintf(path, sizeof path, "%s/.cache.XXXXXX", dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        gim_errf(err, errlen, "cannot create a cache file in %s: %s", dir ? dir : "/tmp", strerror(errno));
        return -1;
    }
    unlink(path);
    int e = posix_fallocate(fd, 0, (off_t)c->bytes);
    if (e) {
        close(fd);
        gim_errf(err, errlen, "cannot reserve %.2f GiB for the sequential schedule's cache in %s: %s",
                 (double)c->bytes / (1 << 30), dir ? dir : "/tmp", strerror(e));
        return -1;
    }
    c->data = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (c->data == MAP_FAILED) {
        c->data = NULL;
        gim_errf(err, errlen, "cannot map the cache: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void cache_close(rt_cache *c) {
    if (c->data) munmap(c->data, c->bytes);
    c->data = NULL;
}

/* Sources of each slot while module `mi` trains sequentially: data slots
 * come from the data set, earlier modules' exports from caches. */
static void fill_sequential(const gim_exec_model *m, const rt_binding *b, const gim_examples *d,
                            rt_cache *caches, int mi, const int64_t *idx, rt_item *it) {
    fill_data(m, b, d, idx, it);
    const gim_exec_module *mod = &m->modules[mi];
    for (int i = 0; i < mod->n_inputs; i++) {
        int sl = mod->inputs[i];
        if (m->slots[sl].producer < 0) continue;
        rt_cache *c = &caches[sl];
        for (int64_t e = 0; e < m->batch; e++)
            memcpy(it->slot[sl] + e * c->per_example, c->data + idx[e] * c->per_example,
                   (size_t)c->per_example * sizeof(float));
    }
}

static int train_sequential(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                            const gim_examples *d, const rt_binding *b, rt_progress *p,
                            gim_train_report *rep, char *err, size_t errlen) {
    int64_t nb = d->n / m->batch;
    for (int i = 0; i < m->n_slots; i++)
        if (m->slots[i].producer >= 0 && (m->slots[i].rank < 1 || m->slots[i].shape[0] != m->batch)) {
            gim_errf(err, errlen, "the sequential schedule caches module outputs per example, but '%s' "
                     "does not have the batch as its first dimension", m->slots[i].name);
            return -1;
        }
    rt_cache *caches = gim_calloc((size_t)m->n_slots, sizeof(rt_cache));
    rt_item *it = item_new(m);
    rt_order order = {.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n), .epoch = -1, .n = d->n};
    int64_t *seq = gim_malloc(sizeof(int64_t) * (size_t)m->batch);
    bool *need = gim_calloc((size_t)m->n_slots, sizeof(bool));
    int rc = 0;
    if (!caches || !it || !order.perm || !seq || !need) {
        gim_errf(err, errlen, "out of memory for the sequential schedule");
        rc = -1;
        goto done;
    }
    int64_t limit = cfg->steps > 0 ? cfg->steps : INT64_MAX;
    for (int mi = 0; mi < m->n_modules && rc == 0; mi++) {
        /* Caches of the slots this module reads from earlier modules: built
         * by running those modules' forward passes over the data once. On
         * resume they are rebuilt from the loaded parameters. */
        if (mi >= s->sequential_module) {
            s->sequential_module = mi;
            /* Needed: the slots module mi reads from earlier modules and,
             * going back, those their producers read (a resumed run starts
             * with no cache at all). */
            for (int i = 0; i < m->n_slots; i++) need[i] = false;
            for (int i = 0; i < m->modules[mi].n_inputs; i++)
                if (m->slots[m->modules[mi].inputs[i]].producer >= 0) need[m->modules[mi].inputs[i]] = true;
            for (int pm = mi - 1; pm >= 0; pm--) {
                const gim_exec_module *prev = &m->modules[pm];
                bool any = false;
                for (int e = 0; e < prev->n_exports; e++) any = any || need[prev->exports[e]];
                for (int i = 0; any && i < prev->n_inputs; i++)
                    if (m->slots[prev->inputs[i]].producer >= 0) need[prev->inputs[i]] = true;
            }
            for (int pm = 0; pm < mi && rc == 0; pm++) {
                const gim_exec_module *prev = &m->modules[pm];
                bool needed = false;
                for (int e = 0; e < prev->n_exports; e++) {
                    int sl = prev->exports[e];
                    if (need[sl] && !caches[sl].data) {
                        if ((rc = cache_open(&caches[sl], cfg->out_dir, d->n, m->slots[sl].numel / m->batch, err, errlen))) break;
                        needed = true;
                    }
                }
                if (rc || !needed) continue;
                double bytes = 0;
                for (int e = 0; e < prev->n_exports; e++)
                    if (caches[prev->exports[e]].data) bytes += (double)caches[prev->exports[e]].bytes;
                if (p->out) {
                    fprintf(p->out, "module %d: caching its outputs over %lld examples (%.2f GiB in %s)\n", pm + 1,
                            (long long)d->n, bytes / (1 << 30), cfg->out_dir ? cfg->out_dir : "/tmp");
                    fflush(p->out);
                }
                double t_cache = now_s(), t_drawn = t_cache;
                int64_t every = d->n / 20 > m->batch ? d->n / 20 : m->batch, next_line = every;
                /* Every example, not only the first nb * batch: the shuffled
                 * order draws its batches from all n. The final partial batch
                 * is padded by repeating its last example. */
                for (int64_t start = 0; start < d->n && !stop_now(); start += m->batch) {
                    int64_t count = d->n - start < m->batch ? d->n - start : m->batch;
                    for (int64_t e = 0; e < m->batch; e++) seq[e] = start + (e < count ? e : count - 1);
                    fill_sequential(m, b, d, caches, pm, seq, it);
                    module_forward(m, s, pm, it);
                    for (int e = 0; e < prev->n_exports; e++) {
                        int sl = prev->exports[e];
                        if (!caches[sl].data) continue;
                        memcpy(caches[sl].data + start * caches[sl].per_example, it->slot[sl],
                               (size_t)(count * caches[sl].per_example) * sizeof(float));
                    }
                    /* progress: minutes of work on a full data set */
                    int64_t done = start + count;
                    double t = now_s();
                    bool last = done == d->n;
                    if (p->out && (p->tty ? (t - t_drawn >= 0.2 || last) : (done >= next_line || last))) {
                        double rate = t > t_cache ? (double)done / (t - t_cache) : 0;
                        fprintf(p->out, p->tty ? "\r\033[Kcaching %lld/%lld examples  %.0f ex/s%s"
                                               : "caching %lld/%lld examples  %.0f ex/s%s\n",
                                (long long)done, (long long)d->n, rate, p->tty && last ? "\n" : "");
                        fflush(p->out);
                        t_drawn = t;
                        while (next_line <= done) next_line += every;
                    }
                }
            }
            /* Caches module mi does not read served only to build the ones
             * it does: give their memory and disk back. (Module 1's output
             * over Fashion-MNIST's 60000 images is 16.5 GiB.) */
            for (int i = 0; i < m->n_slots; i++) {
                bool read = false;
                for (int k = 0; k < m->modules[mi].n_inputs; k++) read = read || m->modules[mi].inputs[k] == i;
                if (!read) cache_close(&caches[i]);
            }
        }
        if (rc || mi < s->sequential_module) continue;
        if (p->out) fprintf(p->out, "module %d: training\n", mi + 1);
        for (; s->epoch < cfg->epochs && rc == 0; s->epoch++, s->batch_in_epoch = 0) {
            const int64_t *perm = order_for(&order, cfg->seed, s->epoch);
            for (; s->batch_in_epoch < nb && rc == 0;) {
                int64_t step = s->epoch * nb + s->batch_in_epoch;
                if (step >= limit || stop_now()) break;
                fill_sequential(m, b, d, caches, mi, perm + s->batch_in_epoch * m->batch, it);
                float loss = module_step(m, s, mi, it, cfg);
                if ((rc = diverged(m, mi, loss, s->module_step[mi], err, errlen))) {
                    rep->diverged = true;
                    break;
                }
                if ((rc = confirm_save(m, cfg, p, err, errlen))) break;
                s->batch_in_epoch++;
                rep->steps++;
                progress_examples(p, m->batch);
                progress_record(p, mi, loss, step + 1, s->epoch + 1);
                if (progress_due(p, s->batch_in_epoch, nb))
                    progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, s->batch_in_epoch == nb);
                if (s->batch_in_epoch < nb) rc = maybe_save(m, s, cfg, p, step + 1, false, err, errlen);
            }
            if (rc || stop_now() || s->epoch * nb + s->batch_in_epoch >= limit) {
                /* a bar cut short ends its line before what follows */
                if (!rc && s->batch_in_epoch < nb && p->tty)
                    progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, true);
                break;
            }
            rc = maybe_save(m, s, cfg, p, s->epoch * nb + nb, true, err, errlen);
        }
        if (rc || stop_now()) break;
        /* module mi is done: its pending checkpoint goes to disk before the
         * next module's caches (possibly minutes of work) are built */
        if ((rc = confirm_save(m, cfg, p, err, errlen))) break;
        /* next module starts from epoch 0 */
        s->epoch = 0;
        s->batch_in_epoch = 0;
        if (mi + 1 < m->n_modules) s->sequential_module = mi + 1;
        else s->epoch = cfg->epochs;
    }
done:
    if (caches)
        for (int i = 0; i < m->n_slots; i++) cache_close(&caches[i]);
    gim_free(caches);
    gim_free(need);
    item_free(m, it);
    gim_free(order.perm);
    gim_free(seq);
    return rc;
}

/* ---- async ----------------------------------------------------------------------- */

/* A bounded FIFO of items between two modules (or the free list). */
typedef struct rt_queue {
    rt_item *head, *tail;
    int len, cap;
    bool closed;
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
} rt_queue;

static void queue_init(rt_queue *q, int cap) {
    memset(q, 0, sizeof *q);
    q->cap = cap;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
}

static void queue_destroy(rt_queue *q) {
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
}

static void queue_push(rt_queue *q, rt_item *it) {
    pthread_mutex_lock(&q->mu);
    while (q->len >= q->cap && !q->closed) pthread_cond_wait(&q->not_full, &q->mu);
    it->next = NULL;
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
    q->len++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

/* NULL once the queue is closed and empty. */
static rt_item *queue_pop(rt_queue *q) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->closed) pthread_cond_wait(&q->not_empty, &q->mu);
    rt_item *it = q->head;
    if (it) {
        q->head = it->next;
        if (!q->head) q->tail = NULL;
        q->len--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    return it;
}

static void queue_close(rt_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

typedef struct rt_async {
    const gim_exec_model *m;
    const gim_train_config *cfg;
    gim_train_state *s;
    const gim_examples *d;
    const rt_binding *b;
    rt_queue *queues;          /* queues[i]: into module i; queues[n]: free items */
    int64_t first_batch, last_batch;   /* global batch numbers [first, last) */
    int64_t nb;
    rt_order order;
    /* held shared by a module while it steps, exclusively by a checkpoint:
     * a checkpoint sees every module between two of its steps */
    pthread_rwlock_t step_lock;
    bool abort;                /* a checkpoint failed: stop feeding batches */
    /* shared progress, under mu */
    pthread_mutex_t mu;
    double *loss_sum;
    int64_t *loss_count;
    int64_t *done;             /* batches finished per module */
    int max_stale;
    int failed_module;         /* -1: none */
    float failed_loss;
    rt_progress *p;
} rt_async;

typedef struct rt_worker {
    rt_async *a;
    int mi;
} rt_worker;

static void *async_worker(void *arg) {
    rt_worker *w = arg;
    rt_async *a = w->a;
    const gim_exec_model *m = a->m;
    int mi = w->mi, n = m->n_modules;
    for (int64_t k = a->first_batch; k < a->last_batch; k++) {
        rt_item *it;
        if (mi == 0) {
            if (stop_now() || __atomic_load_n(&a->failed_module, __ATOMIC_RELAXED) >= 0 ||
                __atomic_load_n(&a->abort, __ATOMIC_RELAXED))
                break;
            it = queue_pop(&a->queues[n]);
            if (!it) break;
            int64_t epoch = k / a->nb, in_epoch = k % a->nb;
            const int64_t *perm = order_for(&a->order, a->cfg->seed, epoch);
            fill_data(m, a->b, a->d, perm + in_epoch * m->batch, it);
            it->batch_no = k;
        } else {
            it = queue_pop(&a->queues[mi]);
            if (!it) break;
        }
        /* staleness: how many steps the producer has taken since it made this input */
        int stale = 0;
        if (mi > 0) stale = (int)(__atomic_load_n(&a->s->module_step[mi - 1], __ATOMIC_RELAXED) - it->made_at[mi - 1]);
        pthread_rwlock_rdlock(&a->step_lock);
        float loss = module_step(m, a->s, mi, it, a->cfg);
        pthread_mutex_lock(&a->mu);
        if (stale > a->max_stale) a->max_stale = stale;
        if (!isfinite(loss) && a->failed_module < 0) {
            __atomic_store_n(&a->failed_module, mi, __ATOMIC_RELAXED);
            a->failed_loss = loss;
        }
        a->loss_sum[mi] += loss;
        a->loss_count[mi]++;
        a->done[mi]++;
        if (a->p->csv) fprintf(a->p->csv, "%lld,%lld,%d,%.6g,%.1f\n", (long long)it->batch_no + 1,
                               (long long)(it->batch_no / a->nb) + 1, mi + 1, loss, a->p->rate);
        pthread_mutex_unlock(&a->mu);
        pthread_rwlock_unlock(&a->step_lock);
        queue_push(mi + 1 < n ? &a->queues[mi + 1] : &a->queues[n], it);
        if (__atomic_load_n(&a->failed_module, __ATOMIC_RELAXED) >= 0) break;
    }
    if (mi + 1 < n) queue_close(&a->queues[mi + 1]);
    if (mi == n - 1) queue_close(&a->queues[n]);
    return NULL;
}

/* Each module on its own thread, fed through a queue of at most
 * GIM_ASYNC_DEPTH batches. Staleness: when a module starts a step, its
 * input was made by its producer at most GIM_ASYNC_DEPTH + 1 producer steps
 * ago (the other batches in the queue, one more the producer has finished
 * and waits to push; a producer then blocks). Checkpoints (every
 * --save-every steps of the last module, or a minute, at each of its
 * epoch's ends, and at the end) take the step lock exclusively, so each
 * module's saved parameters, optimizer state and step count agree; the
 * saved data position is the last module's, and on resume the modules
 * before it see again the few batches they had run ahead. */
static int train_async(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                       const gim_examples *d, const rt_binding *b, rt_progress *p,
                       gim_train_report *rep, char *err, size_t errlen) {
    int n = m->n_modules;
    const int depth = GIM_ASYNC_DEPTH;
    int n_items = n * (depth + 1);
    rt_async a;
    memset(&a, 0, sizeof a);
    a.m = m;
    a.cfg = cfg;
    a.s = s;
    a.d = d;
    a.b = b;
    a.p = p;
    a.nb = d->n / m->batch;
    a.failed_module = -1;
    a.first_batch = s->epoch * a.nb + s->batch_in_epoch;
    a.last_batch = cfg->epochs * a.nb;
    if (cfg->steps > 0 && cfg->steps < a.last_batch) a.last_batch = cfg->steps;
    a.order.n = d->n;
    a.order.epoch = -1;
    a.order.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n);
    a.queues = gim_calloc((size_t)n + 1, sizeof(rt_queue));
    a.loss_sum = gim_calloc((size_t)n, sizeof(double));
    a.loss_count = gim_calloc((size_t)n, sizeof(int64_t));
    a.done = gim_calloc((size_t)n, sizeof(int64_t));
    rt_item **items = gim_calloc((size_t)n_items, sizeof(rt_item *));
    pthread_t *threads = gim_calloc((size_t)n, sizeof(pthread_t));
    rt_worker *workers = gim_calloc((size_t)n, sizeof(rt_worker));
    /* modules step at once here: each but the first gets a work arena of its
     * own for the run (the first keeps the state's shared one) */
    float **own_work = gim_calloc((size_t)n, sizeof(float *));
    int rc = 0;
    if (!a.order.perm || !a.queues || !a.loss_sum || !a.loss_count || !a.done || !items || !threads || !workers ||
        !own_work) {
        gim_errf(err, errlen, "out of memory for the async schedule");
        rc = -1;
        goto done;
    }
    for (int i = 1; i < n; i++)
        if (!(own_work[i] = alloc_floats(m->modules[i].n_work_floats))) {
            gim_errf(err, errlen, "out of memory for the async schedule: module %d's work arena needs %.1f MiB",
                     i + 1, 4.0 * (double)m->modules[i].n_work_floats / (1 << 20));
            rc = -1;
            goto done;
        }
    for (int i = 1; i < n; i++) s->work[i] = own_work[i];
    pthread_mutex_init(&a.mu, NULL);
    {
        /* writer preference: a checkpoint must not wait for the modules to
         * stop stepping of their own accord */
        pthread_rwlockattr_t ra;
        pthread_rwlockattr_init(&ra);
        pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&a.step_lock, &ra);
        pthread_rwlockattr_destroy(&ra);
    }
    for (int i = 0; i < n; i++) queue_init(&a.queues[i], depth);
    queue_init(&a.queues[n], n_items);
    for (int i = 0; i < n_items; i++) {
        if (!(items[i] = item_new(m))) {
            gim_errf(err, errlen, "out of memory for the async schedule's batches");
            rc = -1;
            goto joined;
        }
        queue_push(&a.queues[n], items[i]);
    }
    int started = 0;
    for (int i = 0; i < n; i++) {
        workers[i].a = &a;
        workers[i].mi = i;
        if (pthread_create(&threads[i], NULL, async_worker, &workers[i])) break;
        started++;
    }
    if (started < n) {
        set_stop(1);
        for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
        gim_errf(err, errlen, "cannot start a thread per module");
        rc = -1;
    }
    /* The main thread reports progress and saves checkpoints while the
     * modules run: a checkpoint takes the step lock exclusively, so no
     * module is between reading and updating its parameters while it is
     * written. */
    int64_t total = a.last_batch - a.first_batch;
    int64_t saved_g = a.first_batch;
    int64_t line_g = a.first_batch, line_epoch = a.first_batch / a.nb;   /* progress drawn up to */
    const int64_t every = a.nb / 20 > 0 ? a.nb / 20 : 1;
    while (rc == 0) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&a.mu);
        int64_t last_done = a.done[n - 1];
        for (int i = 0; i < n; i++) {
            p->sum[i] += a.loss_sum[i];
            p->count[i] += a.loss_count[i];
            a.loss_sum[i] = 0;
            a.loss_count[i] = 0;
        }
        bool failed = a.failed_module >= 0;
        bool finished = last_done >= total || failed;
        int64_t delta = last_done - rep->steps;
        rep->steps = last_done;
        progress_examples(p, delta * m->batch);   /* under mu: the workers read p->rate */
        pthread_mutex_unlock(&a.mu);
        int64_t g = a.first_batch + last_done;
        int64_t epoch = g / a.nb, in_epoch = g % a.nb;
        if (in_epoch == 0 && g > a.first_batch) { epoch--; in_epoch = a.nb; }
        /* The poll lands anywhere in an epoch: finish the bar of an epoch
         * it stepped over, and print a plain line whenever a 5% mark was
         * passed since the last one (not only when landing on one). */
        if (line_epoch >= 0 && epoch > line_epoch && line_g < (line_epoch + 1) * a.nb) {
            progress_line(p, line_epoch, cfg->epochs, a.nb, a.nb, true);
            line_g = (line_epoch + 1) * a.nb;
        }
        bool draw = finished;
        if (p->tty) draw = draw || progress_due(p, in_epoch, a.nb);
        else draw = draw || (g > line_g && (g / every != line_g / every || in_epoch == a.nb));
        if (draw) {
            progress_line(p, epoch, cfg->epochs, in_epoch, a.nb, finished || in_epoch == a.nb);
            line_g = g;
        }
        line_epoch = epoch;
        if (finished) {
            /* after a divergence, modules before the failed one may wait to
             * push into its queue, which nobody pops any more */
            if (failed)
                for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
            break;
        }
        bool due = g / a.nb > saved_g / a.nb;
        if (cfg->save_every > 0) due = due || g / cfg->save_every > saved_g / cfg->save_every;
        else due = due || now_s() - p->t_last_save >= 60.0;
        if (cfg->out_dir && due && !stop_now()) {
            pthread_rwlock_wrlock(&a.step_lock);
            int64_t gg = a.first_batch + a.done[n - 1];
            s->epoch = gg / a.nb;
            s->batch_in_epoch = gg % a.nb;
            rc = save_now(m, s, cfg, p, err, errlen);
            pthread_rwlock_unlock(&a.step_lock);
            saved_g = gg;
            if (rc) {
                __atomic_store_n(&a.abort, true, __ATOMIC_RELAXED);
                for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
                break;
            }
        }
        if (stop_now()) {
            for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
            break;
        }
    }
    for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
joined:
    rep->async_max_staleness = a.max_stale;
    if (rc == 0 && a.failed_module >= 0) {
        rep->diverged = true;
        rc = diverged(m, a.failed_module, a.failed_loss, s->module_step[a.failed_module], err, errlen);
    }
    /* The position in the data is the last module's: batches it never saw
     * are trained again on resume. */
    {
        int64_t g = a.first_batch + a.done[n - 1];
        s->epoch = g / a.nb;
        s->batch_in_epoch = g % a.nb;
    }
    for (int i = 0; i < n_items; i++) item_free(m, items[i]);
    for (int i = 0; i <= n; i++) queue_destroy(&a.queues[i]);
    pthread_mutex_destroy(&a.mu);
    pthread_rwlock_destroy(&a.step_lock);
done:
    if (own_work) {
        for (int i = 1; i < n; i++) {
            s->work[i] = s->work_shared;
            gim_free(own_work[i]);
        }
        gim_free(own_work);
    }
    gim_free(a.order.perm);
    gim_free(a.queues);
    gim_free(a.loss_sum);
    gim_free(a.loss_count);
    gim_free(a.done);
    gim_free(items);
    gim_free(threads);
    gim_free(workers);
    return rc;
}

/* ---- entry -------------------------------------------------------------------------- */

/* mkdir -p: the default output directory runs/<model> usually needs its
 * parent made too. Returns 0 when `dir` exists as a directory, else -1 with
 * errno set. */
int gim_make_dirs(const char *dir) {
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) {
        errno = n ? ENAMETOOLONG : ENOENT;
        return -1;
    }
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        char c = path[i];
        path[i] = 0;
        if (mkdir(path, 0777) && errno != EEXIST) return -1;
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st)) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

int gim_train(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
              const gim_examples *d, FILE *progress, gim_train_report *rep,
              char *err, size_t errlen) {
    memset(rep, 0, sizeof *rep);
    rt_binding b;
    if (bind_data(m, d, &b, err, errlen)) return -1;
    if (d->n < m->batch) {
        gim_errf(err, errlen, "the data set has %lld examples, fewer than one batch of %lld",
                 (long long)d->n, (long long)m->batch);
        return -1;
    }
    for (int i = 0; i < m->n_modules; i++)
        if (m->modules[i].n_inputs > RT_MAX_IO || m->modules[i].n_exports > RT_MAX_IO) {
            gim_errf(err, errlen, "module %d has more than %d inputs or outputs", i + 1, RT_MAX_IO);
            return -1;
        }
    if (cfg->out_dir && gim_make_dirs(cfg->out_dir)) {
        gim_errf(err, errlen, "cannot create the output directory %s: %s", cfg->out_dir, strerror(errno));
        return -1;
    }
    if (cfg->resume && cfg->out_dir && metrics_trim(cfg->out_dir, cfg, s, d->n / m->batch, err, errlen)) return -1;
    rt_progress p;
    progress_init(&p, progress, m, cfg->out_dir, cfg->resume);
    if (cfg->out_dir && !p.csv) {
        gim_errf(err, errlen, "cannot write %s/metrics.csv: %s", cfg->out_dir, strerror(errno));
        progress_free(&p, m);
        return -1;
    }
    struct sigaction old_int, old_term;
    install_signals(&old_int, &old_term);
    double t0 = now_s();
    int rc;
    switch (cfg->schedule) {
    case GIM_SCHED_SEQUENTIAL: rc = train_sequential(m, cfg, s, d, &b, &p, rep, err, errlen); break;
    case GIM_SCHED_ASYNC: rc = train_async(m, cfg, s, d, &b, &p, rep, err, errlen); break;
    default: rc = train_simultaneous(m, cfg, s, d, &b, &p, rep, err, errlen); break;
    }
    rep->seconds = now_s() - t0;
    rep->examples_per_s = rep->seconds > 0 ? (double)rep->steps * (double)m->batch / rep->seconds : 0;
    rep->interrupted = stop_now();
    rep->last_loss = gim_calloc((size_t)m->n_modules, sizeof(double));
    for (int i = 0; rep->last_loss && i < m->n_modules; i++)
        rep->last_loss[i] = p.count[i] ? p.sum[i] / (double)p.count[i] : p.last[i];
    /* The final checkpoint: at the end, and on interruption. Never after a
     * divergence (the last good one stays). */
    /* the end: the state now, not a pending copy of an earlier one */
    p.pending = false;
    if (rc == 0 && cfg->out_dir) rc = save_now(m, s, cfg, &p, err, errlen);
    if (p.diverged) rep->diverged = true;
    restore_signals(&old_int, &old_term);
    progress_free(&p, m);
    return rc;
}

int gim_extract_features(const gim_exec_model *m, const gim_train_state *s,
                         const gim_examples *d, float **feats, int64_t *feat_numel,
                         void (*show)(void *arg, int64_t done, int64_t total), void *arg,
                         char *err, size_t errlen) {
    rt_binding b;
    if (bind_data(m, d, &b, err, errlen)) return -1;
    for (int i = 0; i < m->n_modules; i++) feats[i] = NULL;
    rt_item *it = item_new(m);
    int64_t *idx = gim_malloc(sizeof(int64_t) * (size_t)m->batch);
    int rc = 0;
    if (!it || !idx) {
        gim_errf(err, errlen, "out of memory");
        rc = -1;
        goto done;
    }
    for (int i = 0; i < m->n_modules; i++) {
        int sl = m->modules[i].feature_slot;
        feat_numel[i] = sl >= 0 ? m->slots[sl].numel / m->batch : 0;
        if (sl < 0) continue;
        feats[i] = alloc_floats(d->n * feat_numel[i]);
        if (!feats[i]) {
            gim_errf(err, errlen, "out of memory for module %d's features (%.2f GiB)", i + 1,
                     4.0 * (double)(d->n * feat_numel[i]) / (1 << 30));
            rc = -1;
            goto done;
        }
    }
    /* The last partial batch is padded by repeating its final example; the
     * padding's features are dropped. */
    for (int64_t start = 0; start < d->n; start += m->batch) {
        int64_t count = d->n - start < m->batch ? d->n - start : m->batch;
        for (int64_t e = 0; e < m->batch; e++) idx[e] = start + (e < count ? e : count - 1);
        fill_data(m, &b, d, idx, it);
        for (int i = 0; i < m->n_modules; i++) module_forward(m, s, i, it);
        for (int i = 0; i < m->n_modules; i++) {
            int sl = m->modules[i].feature_slot;
            if (sl < 0) continue;
            memcpy(feats[i] + start * feat_numel[i], it->slot[sl], (size_t)(count * feat_numel[i]) * sizeof(float));
        }
        if (show) show(arg, start + count, d->n);
    }
done:
    if (rc)
        for (int i = 0; i < m->n_modules; i++) { gim_free(feats[i]); feats[i] = NULL; }
    item_free(m, it);
    gim_free(idx);
    return rc;
}
