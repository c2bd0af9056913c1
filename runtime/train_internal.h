/* What the training core (train.c) shares with the schedule files
 * (sched_*.c): batches in flight, the data binding and order, one module's
 * step, progress and metrics, checkpoints on schedule, interruption.
 *
 * A batch in flight (rt_item) holds one buffer per slot of the model: the
 * model's inputs and labels, and every module's exports. A module's call
 * reads its input slots from the item and writes its export slots into it,
 * so the item carries a batch downstream. A schedule decides who moves
 * items: simultaneous moves one item through every module in turn,
 * sequential trains one module at a time on cached outputs, async gives
 * each module a thread and puts bounded queues of items between them. */
#ifndef GIM_TRAIN_INTERNAL_H
#define GIM_TRAIN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gim_train.h"

double rt_now(void);
float *rt_alloc_floats(int64_t n);
/* The largest work arena of the model's modules, in floats: the one arena
 * the modules share when they run one at a time. */
int64_t rt_work_floats(const gim_exec_model *m);

/* ---- interruption ------------------------------------------------------------
 * Set by the SIGINT/SIGTERM handler (on whichever thread takes the signal),
 * read by the training loops and the async workers: a lock-free atomic,
 * safe in a signal handler and between threads. */
extern int rt_stop_requested;

static inline bool rt_stop_now(void) { return __atomic_load_n(&rt_stop_requested, __ATOMIC_RELAXED) != 0; }
static inline void rt_set_stop(int v) { __atomic_store_n(&rt_stop_requested, v, __ATOMIC_RELAXED); }

/* ---- batches in flight ------------------------------------------------------- */

typedef struct rt_item {
    float **slot;            /* one buffer per model slot (labels stored as int32) */
    int64_t batch_no;        /* global batch counter of the data order */
    uint64_t *made_at;       /* per module: its step count when it wrote its exports */
    struct rt_item *next;
} rt_item;

rt_item *rt_item_new(const gim_exec_model *m);
void rt_item_free(const gim_exec_model *m, rt_item *it);

/* The model's data slots: one float input and optional labels. */
typedef struct rt_binding {
    int x_slot, y_slot;
} rt_binding;

/* Finds the model's input (and labels) slot and checks that the data set's
 * examples fit it. Returns 0, or -1 with err set. */
int rt_bind_data(const gim_exec_model *m, const gim_examples *d, rt_binding *b, char *err, size_t errlen);

/* Fills the item's data slots with the examples idx[0..batch) of `epoch`
 * (GIM_EPOCH_NONE outside training): copied from a fixed array, or asked of
 * the data set's source. Returns 0, or -1 with err set (a source failed). */
int rt_fill_data(const gim_exec_model *m, const rt_binding *b, const gim_examples *d, int64_t epoch,
                 const int64_t *idx, rt_item *it, char *err, size_t errlen);

/* ---- one module's step ----------------------------------------------------- */

#define RT_MAX_IO 64

static inline gim_call rt_make_call(const gim_exec_model *m, const gim_train_state *s, int mi, rt_item *it,
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

/* One optimizer step of module mi on the item: reads its inputs, writes its
 * exports, updates its parameters; returns its loss. */
static inline float rt_module_step(const gim_exec_model *m, gim_train_state *s, int mi, rt_item *it,
                                   const gim_train_config *cfg) {
    const float *in[RT_MAX_IO];
    float *out[RT_MAX_IO];
    gim_call c = rt_make_call(m, s, mi, it, in, out, cfg);
    float loss = m->modules[mi].step(&c);
    /* atomic: under async the next module's thread reads it (staleness) */
    uint64_t done = s->module_step[mi] + 1;
    __atomic_store_n(&s->module_step[mi], done, __ATOMIC_RELAXED);
    it->made_at[mi] = done;
    return loss;
}

/* Module mi's forward pass only (its exports), parameters unchanged. */
void rt_module_forward(const gim_exec_model *m, const gim_train_state *s, int mi, rt_item *it);

/* ---- progress and metrics -------------------------------------------------- */

typedef struct rt_progress {
    gim_progress con;     /* the console (progress.c): bar or lines, rate in examples/s */
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

/* One line (or a redrawn bar) with each module's mean loss since the last. */
void rt_progress_line(rt_progress *p, int64_t epoch, int64_t epochs, int64_t done, int64_t total, bool final);
/* A module's loss at a step: into the running mean and a metrics.csv row. */
void rt_progress_record(rt_progress *p, int mi, double loss, int64_t step, int64_t epoch);
/* n more examples done: updates the rate. */
void rt_progress_examples(rt_progress *p, int64_t n);
/* Whether to draw now: a terminal gets ~5 redraws a second, a log a line
 * every 5% of the epoch. */
bool rt_progress_due(rt_progress *p, int64_t done, int64_t total);

/* ---- checkpoints on schedule ------------------------------------------------ */

/* Writes s now (refusing non-finite parameters). */
int rt_save_now(const gim_exec_model *m, const gim_train_state *s, const gim_train_config *cfg, rt_progress *p,
                char *err, size_t errlen);
/* A step's losses were finite: the pending checkpoint is good; write it. */
int rt_confirm_save(const gim_exec_model *m, const gim_train_config *cfg, rt_progress *p, char *err,
                    size_t errlen);
/* A checkpoint if one is due after `step` (or `force`): a copy of s now,
 * written by the next rt_confirm_save. */
int rt_maybe_save(const gim_exec_model *m, const gim_train_state *s, const gim_train_config *cfg, rt_progress *p,
                  int64_t step, bool force, char *err, size_t errlen);
/* -1 with err set when loss is NaN or infinite, else 0. */
int rt_diverged(const gim_exec_model *m, int mi, float loss, uint64_t step, char *err, size_t errlen);

/* ---- the data order ------------------------------------------------------------ */

typedef struct rt_order {
    int64_t *perm;
    int64_t epoch;       /* epoch perm was made for; -1 none */
    int64_t n;
} rt_order;

/* The permutation of the n examples for `epoch`: a pure function of (seed,
 * epoch), remade only when the epoch changes. */
const int64_t *rt_order_for(rt_order *o, uint64_t seed, int64_t epoch);

/* ---- caches of module outputs (cache.c) --------------------------------------
 * One slot's values for every example of the training set, stored as
 * float32 or bfloat16, in a file of the output directory mapped into
 * memory (a cache larger than memory pages to disk instead of failing).
 * The file is unlinked as soon as it is created and its blocks reserved
 * before anything is written: however the run ends, nothing is left on
 * disk, and a full disk is an error up front, never a SIGBUS mid-write.
 * The sequential schedule builds each once; --refresh rebuilds them every
 * N epochs (sched_refresh.c). */

typedef struct rt_cache {
    void *data;              /* n * per_example values of dtype; NULL: not open */
    size_t bytes;
    int64_t n, per_example;
    gim_cache_dtype dtype;
} rt_cache;

/* float32 -> bfloat16, rounded to nearest, ties to even; NaN stays NaN
 * (quiet, sign kept), infinities and zeros keep their sign; a finite value
 * beyond bf16's largest rounds to infinity, as IEEE rounding does. */
uint16_t rt_bf16_from_f32(float x);
/* bfloat16 -> float32: exact (the low 16 bits are zero). */
float rt_f32_from_bf16(uint16_t h);
const char *rt_cache_dtype_name(gim_cache_dtype t);
/* Bytes of a cache of n examples of per_example values. */
uint64_t rt_cache_bytes(int64_t n, int64_t per_example, gim_cache_dtype t);
/* "16.48 GiB", "3.0 MiB", "512.0 KiB" into buf; returns buf. */
const char *rt_cache_size_text(char *buf, size_t n, uint64_t bytes);

/* The slots a cache can hold: exported by one module and read by a later
 * one. -1 with err set when such a slot does not have the batch as its
 * first dimension (its values cannot be stored per example). */
int rt_cache_slots(const gim_exec_model *m, bool *cached, const char *who, char *err, size_t errlen);

/* 0 when dir's file system has room for `need` more bytes; else -1 with
 * err naming the directory, the bytes needed and free, and the ways out
 * (--cache-dtype bf16, another --out). `what` says what needs them. */
int rt_cache_check_room(const char *dir, uint64_t need, const char *what, gim_cache_dtype t, char *err,
                        size_t errlen);

/* Opens a cache for every slot with want[sl] set that is not open yet:
 * states on `out` their total size and where they go ("<what>: 1.25 GiB
 * (f32) in DIR"), checks the room, reserves the blocks. On failure closes
 * those it opened and returns -1 with err set. */
int rt_cache_open_slots(rt_cache *caches, const bool *want, const gim_exec_model *m, const char *dir, int64_t n,
                        gim_cache_dtype t, FILE *out, const char *what, char *err, size_t errlen);
void rt_cache_close(rt_cache *c);

/* Examples [first, first + count) from src (count * per_example floats). */
void rt_cache_put(rt_cache *c, int64_t first, int64_t count, const float *src);
/* Examples idx[0..count) into dst, widened to float32. */
void rt_cache_get(const rt_cache *c, const int64_t *idx, int64_t count, float *dst);

/* Module mi's inputs made by earlier modules: from the caches, examples idx
 * (the batch). */
void rt_cache_fill_inputs(const gim_exec_model *m, const rt_cache *caches, int mi, const int64_t *idx, rt_item *it);

/* Module mi's forward pass over every example (data of `epoch`, its other
 * inputs from the caches) into the open caches of its exports, with
 * progress lines on p->out. The last partial batch is padded by repeating
 * its last example. Returns 0, -1 with err set (the data's source failed),
 * or 1 when a stop was requested. */
int rt_cache_build(const gim_exec_model *m, const gim_train_state *s, const gim_examples *d, const rt_binding *b,
                   int64_t epoch, rt_cache *caches, int mi, rt_progress *p, char *err, size_t errlen);

/* ---- the schedules ------------------------------------------------------------- */

typedef int rt_schedule_fn(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                           const gim_examples *d, const rt_binding *b, rt_progress *p, gim_train_report *rep,
                           char *err, size_t errlen);

rt_schedule_fn rt_train_simultaneous;   /* sched_simultaneous.c */
rt_schedule_fn rt_train_sequential;     /* sched_sequential.c */
rt_schedule_fn rt_train_async;          /* sched_async.c */
rt_schedule_fn rt_train_refresh;        /* sched_refresh.c: cfg->refresh > 0 */
rt_schedule_fn rt_train_mpi;            /* sched_mpi.c: under mpirun, lockstep or async */

/* One batch of the simultaneous schedule (shared with --refresh): batch
 * s->batch_in_epoch of epoch s->epoch, examples idx; every module steps on
 * it in order, reading its inputs from `caches` when given (else from the
 * modules below); then the progress, metrics and a checkpoint when due.
 * losses: n_modules floats of scratch. */
int rt_simultaneous_batch(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                          const gim_examples *d, const rt_binding *b, const rt_cache *caches, const int64_t *idx,
                          rt_item *it, float *losses, rt_progress *p, gim_train_report *rep, char *err,
                          size_t errlen);

#endif
