/* Training: the core the schedules share (see train_internal.h) and the
 * entry points. Here: the state, batches in flight and the data binding,
 * one module's forward pass, progress and metrics.csv, checkpoints on
 * schedule, the data order, interruption; gim_train, which checks the run,
 * sets up progress and signals and hands over to a schedule (sched_*.c);
 * gim_extract_features. */
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
#include "train_internal.h"

double rt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- interruption ---------------------------------------------------------- */

int rt_stop_requested;


static void on_signal(int sig) {
    (void)sig;
    rt_set_stop(1);
}

/* The signals that stop a run with a checkpoint: Ctrl-C, SIGTERM, and
 * SIGUSR1, which mpirun passes on to every rank without killing them (it
 * kills the ranks 1 s after passing SIGTERM on; batch systems send SIGUSR1
 * ahead of a time limit for this). */
static const int stop_signals[] = {SIGINT, SIGTERM, SIGUSR1};
enum { N_STOP_SIGNALS = sizeof stop_signals / sizeof stop_signals[0] };

static void install_signals(struct sigaction old[N_STOP_SIGNALS]) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < N_STOP_SIGNALS; i++) sigaction(stop_signals[i], &sa, &old[i]);
    rt_set_stop(0);
}

static void restore_signals(const struct sigaction old[N_STOP_SIGNALS]) {
    for (int i = 0; i < N_STOP_SIGNALS; i++) sigaction(stop_signals[i], &old[i], NULL);
}

/* ---- state ------------------------------------------------------------------- */

float *rt_alloc_floats(int64_t n) {
    if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float)) return NULL;
    return gim_malloc_aligned((size_t)n * sizeof(float));
}

int64_t rt_work_floats(const gim_exec_model *m) {
    int64_t most = 0;
    for (int i = 0; i < m->n_modules; i++)
        if (m->modules[i].n_work_floats > most) most = m->modules[i].n_work_floats;
    return most;
}

int gim_train_state_init(gim_train_state *s, const gim_exec_model *m, uint64_t seed,
                         char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    int n = m->n_modules;
    int64_t work_max = rt_work_floats(m);
    s->params = gim_calloc((size_t)n, sizeof(float *));
    s->grads = gim_calloc((size_t)n, sizeof(float *));
    s->opt = gim_calloc((size_t)n, sizeof(float *));
    s->work = gim_calloc((size_t)n, sizeof(float *));
    s->module_step = gim_calloc((size_t)n, sizeof(uint64_t));
    s->owns = true;
    if (!s->params || !s->grads || !s->opt || !s->work || !s->module_step) goto oom;
    if (!(s->work_shared = rt_alloc_floats(work_max))) goto oom;
    for (int i = 0; i < n; i++) {
        const gim_exec_module *mod = &m->modules[i];
        s->params[i] = rt_alloc_floats(mod->n_param_floats);
        s->grads[i] = rt_alloc_floats(mod->n_param_floats);
        s->opt[i] = rt_alloc_floats(mod->n_opt_floats);
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

rt_item *rt_item_new(const gim_exec_model *m) {
    rt_item *it = gim_calloc(1, sizeof *it);
    if (!it) return NULL;
    it->slot = gim_calloc((size_t)m->n_slots, sizeof(float *));
    it->made_at = gim_calloc((size_t)m->n_modules, sizeof(uint64_t));
    if (!it->slot || !it->made_at) goto fail;
    for (int i = 0; i < m->n_slots; i++)
        if (!(it->slot[i] = rt_alloc_floats(m->slots[i].numel))) goto fail;
    return it;
fail:
    if (it->slot)
        for (int i = 0; i < m->n_slots; i++) gim_free(it->slot[i]);
    gim_free(it->slot);
    gim_free(it->made_at);
    gim_free(it);
    return NULL;
}

void rt_item_free(const gim_exec_model *m, rt_item *it) {
    if (!it) return;
    for (int i = 0; i < m->n_slots; i++) gim_free(it->slot[i]);
    gim_free(it->slot);
    gim_free(it->made_at);
    gim_free(it);
}

int rt_bind_data(const gim_exec_model *m, const gim_examples *d, rt_binding *b, char *err, size_t errlen) {
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
    if (b->y_slot >= 0 && !(d->source ? d->source_labels : d->labels != NULL)) {
        gim_errf(err, errlen, "the model reads labels ('%s') but the data set has none", m->slots[b->y_slot].name);
        return -1;
    }
    return 0;
}

int rt_fill_data(const gim_exec_model *m, const rt_binding *b, const gim_examples *d, int64_t epoch,
                 const int64_t *idx, rt_item *it, char *err, size_t errlen) {
    float *x = it->slot[b->x_slot];
    int32_t *y = b->y_slot >= 0 ? (int32_t *)it->slot[b->y_slot] : NULL;
    if (d->source) {
        for (int64_t i = 0; i < m->batch; i++)
            if (d->source(d->source_ctx, epoch, idx[i], x + i * d->x_numel, y ? y + i : NULL, err, errlen))
                return -1;
        return 0;
    }
    for (int64_t i = 0; i < m->batch; i++)
        memcpy(x + i * d->x_numel, d->x + idx[i] * d->x_numel, (size_t)d->x_numel * sizeof(float));
    if (y)
        for (int64_t i = 0; i < m->batch; i++) y[i] = d->labels[idx[i]];
    return 0;
}

void rt_module_forward(const gim_exec_model *m, const gim_train_state *s, int mi, rt_item *it) {
    const float *in[RT_MAX_IO];
    float *out[RT_MAX_IO];
    gim_call c = rt_make_call(m, s, mi, it, in, out, NULL);
    m->modules[mi].forward(&c);
}

/* ---- progress and metrics -------------------------------------------------- */

/* metrics.csv: continued on resume, else started afresh (a new run into an
 * old directory does not mix its rows with the old run's). */
static void progress_init(rt_progress *p, FILE *out, const gim_exec_model *m, const char *dir, bool append) {
    memset(p, 0, sizeof *p);
    gim_progress_init(&p->con, out);
    /* a log of short epochs gets a line a second, not a line per step (under
     * mpirun a flood of lines outruns mpirun's reading and fills the pty) */
    p->con.min_gap = 1.0;
    p->out = out;
    /* mpirun gives ranks a pty: plain lines there, whatever the terminal */
    if (gim_dist_size() > 1) p->con.tty = false;
    p->tty = p->con.tty;
    p->n_modules = m->n_modules;
    p->batch = m->batch;
    p->sum = gim_xmalloc(sizeof(double) * (size_t)m->n_modules);
    p->count = gim_xmalloc(sizeof(int64_t) * (size_t)m->n_modules);
    p->last = gim_xmalloc(sizeof(double) * (size_t)m->n_modules);
    for (int i = 0; i < m->n_modules; i++) p->sum[i] = 0, p->count[i] = 0, p->last[i] = NAN;
    p->t_last_save = rt_now();
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
void rt_progress_line(rt_progress *p, int64_t epoch, int64_t epochs, int64_t done, int64_t total,
                          bool final) {
    for (int i = 0; i < p->n_modules; i++)
        if (p->count[i]) {
            p->last[i] = p->sum[i] / (double)p->count[i];
            p->sum[i] = 0;
            p->count[i] = 0;
        }
    /* Once a stop is asked for, plain lines end: under mpirun the signal
     * also stops mpirun reading the ranks' output, and a line written into
     * a full pty would hold the rank there until mpirun kills it, before
     * its final checkpoint. The run's summary says where it stopped. */
    if (!p->out || (!p->tty && rt_stop_now())) return;
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

void rt_progress_record(rt_progress *p, int mi, double loss, int64_t step, int64_t epoch) {
    p->sum[mi] += loss;
    p->count[mi]++;
    if (p->csv) fprintf(p->csv, "%lld,%lld,%d,%.6g,%.1f\n", (long long)step, (long long)epoch, mi + 1, loss, p->rate);
}

void rt_progress_examples(rt_progress *p, int64_t n) {
    gim_progress_count(&p->con, n);
    p->rate = p->con.rate;
}

bool rt_progress_due(rt_progress *p, int64_t done, int64_t total) { return gim_progress_due(&p->con, done, total); }

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

int rt_save_now(const gim_exec_model *m, const gim_train_state *s, const gim_train_config *cfg,
                    rt_progress *p, char *err, size_t errlen) {
    p->t_last_save = rt_now();
    if (p->csv) fflush(p->csv);
    if (params_finite(m, s, p, err, errlen)) return -1;
    /* how the weights were trained: eval probes an end-to-end checkpoint
     * without its missing loss parameters; resume checks the schedule */
    static const char *const names[] = {"simultaneous", "sequential", "async"};
    int sched = cfg->schedule >= 0 && cfg->schedule <= 2 ? (int)cfg->schedule : 0;
    /* and every how many epochs the caches were refreshed (resume keeps it) */
    char refresh[32];
    snprintf(refresh, sizeof refresh, "%lld", (long long)cfg->refresh);
    gim_ckpt_meta meta[] = {{"training", cfg->e2e ? "e2e" : "greedy"}, {"schedule", names[sched]}, {"refresh", refresh}};
    int rc = gim_checkpoint_save_meta(m, s, cfg->out_dir, meta, cfg->refresh > 0 ? 3 : 2, err, errlen);
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
            p->shadow.params[i] = rt_alloc_floats(m->modules[i].n_param_floats);
            p->shadow.opt[i] = rt_alloc_floats(m->modules[i].n_opt_floats);
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
int rt_confirm_save(const gim_exec_model *m, const gim_train_config *cfg, rt_progress *p, char *err,
                        size_t errlen) {
    if (!p->pending) return 0;
    p->pending = false;
    return rt_save_now(m, &p->shadow, cfg, p, err, errlen);
}

int rt_maybe_save(const gim_exec_model *m, const gim_train_state *s, const gim_train_config *cfg,
                      rt_progress *p, int64_t step, bool force, char *err, size_t errlen) {
    if (!cfg->out_dir) return 0;
    bool due = force;
    if (cfg->save_every > 0) due = due || step % cfg->save_every == 0;
    else due = due || rt_now() - p->t_last_save >= 60.0;
    if (!due) return 0;
    p->t_last_save = rt_now();
    if (snapshot(m, s, p)) return 0;
    return rt_save_now(m, s, cfg, p, err, errlen);   /* no memory for a copy: now, unconfirmed */
}

int rt_diverged(const gim_exec_model *m, int mi, float loss, uint64_t step, char *err, size_t errlen) {
    if (isfinite(loss)) return 0;
    gim_errf(err, errlen,
             "module %d's loss became %s at its step %llu; stopped, the last good checkpoint is kept",
             mi + 1, isnan(loss) ? "NaN" : "infinite", (unsigned long long)step);
    (void)m;
    return -1;
}

/* ---- the data order ------------------------------------------------------------ */

const int64_t *rt_order_for(rt_order *o, uint64_t seed, int64_t epoch) {
    if (o->epoch != epoch) {
        for (int64_t i = 0; i < o->n; i++) o->perm[i] = i;
        gim_rt_shuffle_i64(o->perm, o->n, seed, GIM_RT_STREAM_DATA | (uint64_t)epoch);
        o->epoch = epoch;
    }
    return o->perm;
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
    if (rt_bind_data(m, d, &b, err, errlen)) return -1;
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
    struct sigaction old_sig[N_STOP_SIGNALS];
    install_signals(old_sig);
    double t0 = rt_now();
    int rc;
    if (gim_dist_size() > 1) rc = rt_train_mpi(m, cfg, s, d, &b, &p, rep, err, errlen);
    else if (cfg->refresh > 0 && cfg->schedule != GIM_SCHED_SIMULTANEOUS) {
        gim_errf(err, errlen, "--refresh runs every module on caches of the modules below it, one batch after "
                 "another: it takes the simultaneous schedule, not %s",
                 cfg->schedule == GIM_SCHED_SEQUENTIAL ? "sequential" : "async");
        rc = -1;
    } else if (cfg->refresh > 0) rc = rt_train_refresh(m, cfg, s, d, &b, &p, rep, err, errlen);
    else switch (cfg->schedule) {
    case GIM_SCHED_SEQUENTIAL: rc = rt_train_sequential(m, cfg, s, d, &b, &p, rep, err, errlen); break;
    case GIM_SCHED_ASYNC: rc = rt_train_async(m, cfg, s, d, &b, &p, rep, err, errlen); break;
    default: rc = rt_train_simultaneous(m, cfg, s, d, &b, &p, rep, err, errlen); break;
    }
    rep->seconds = rt_now() - t0;
    rep->examples_per_s = rep->seconds > 0 ? (double)rep->steps * (double)m->batch / rep->seconds : 0;
    rep->interrupted = rt_stop_now();
    rep->last_loss = gim_calloc((size_t)m->n_modules, sizeof(double));
    for (int i = 0; rep->last_loss && i < m->n_modules; i++)
        rep->last_loss[i] = p.count[i] ? p.sum[i] / (double)p.count[i] : p.last[i];
    /* The final checkpoint: at the end, and on interruption. Never after a
     * divergence (the last good one stays). */
    /* the end: the state now, not a pending copy of an earlier one */
    p.pending = false;
    if (rc == 0 && cfg->out_dir) rc = rt_save_now(m, s, cfg, &p, err, errlen);
    if (p.diverged) rep->diverged = true;
    restore_signals(old_sig);
    progress_free(&p, m);
    return rc;
}

