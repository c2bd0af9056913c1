/* Training a compiled model: schedules, progress, metrics, checkpoints.
 *
 * The trainer owns every buffer of a run: each module's parameters,
 * gradients, optimizer state and work arena, and the "batches in flight"
 * (a full set of slot buffers each) that carry a batch from module to
 * module. The three schedules differ only in who moves batches:
 *   simultaneous  one batch in flight; every module steps on it in order
 *   sequential    module 1 for all its epochs; then its outputs over the
 *                 whole training set are computed once into a cache that is
 *                 module 2's data set; and so on
 *   async         a thread per module; bounded queues between them; a module
 *                 never waits for gradients, only for its input batch */
#ifndef GIM_TRAIN_H
#define GIM_TRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gim_runtime.h"

/* A source fills example i of epoch e on demand, into x (x_numel floats)
 * and, when label is not NULL, *label. epoch is the training epoch
 * (0-based), or GIM_EPOCH_NONE outside training (feature extraction: a
 * source gives its fixed view, e.g. a centred crop). The trainer calls it
 * from one thread at a time, in the data order, for every example of every
 * batch it trains on (an example may be asked for more than once).
 * Returns 0, or -1 with err set: training stops with that message. */
#define GIM_EPOCH_NONE (-1)
typedef int gim_example_fn(void *ctx, int64_t epoch, int64_t i, float *x, int32_t *label, char *err,
                           size_t errlen);

/* A labelled data set of n examples of x_shape each: a fixed array in
 * memory (or mapped), or, when `source` is set, examples made on demand
 * (e.g. a fresh random crop of each utterance every epoch). */
typedef struct gim_examples {
    int64_t n;
    int x_rank;
    int64_t x_shape[GIM_RT_MAX_RANK];   /* per example, e.g. [1, 28, 28] */
    int64_t x_numel;
    const float *x;                     /* n * x_numel; NULL with a source */
    const int32_t *labels;              /* n, or NULL (with a source: source_labels) */
    int n_classes;
    gim_example_fn *source;             /* NULL: the arrays above */
    void *source_ctx;
    bool source_labels;                 /* the source gives labels */
} gim_examples;

typedef struct gim_train_state {
    float **params, **grads, **opt, **work;   /* per module */
    /* The modules' work arenas are one: the schedules that run one module at
     * a time share the largest module's arena among all of them (greedy
     * training's memory is the largest module's, not the sum); the async
     * schedule gives each module thread its own for the run. */
    float *work_shared;
    uint64_t *module_step;                    /* optimizer steps taken, per module */
    int64_t epoch;                            /* next epoch to run (0-based) */
    int64_t batch_in_epoch;                   /* next batch within it */
    int sequential_module;                    /* sequential: module now training */
    bool owns;
} gim_train_state;

/* Allocates and initialises (from cfg->seed) the state for m; work[i] all
 * point into one arena of the largest module's n_work_floats. */
int gim_train_state_init(gim_train_state *s, const gim_exec_model *m, uint64_t seed,
                         char *err, size_t errlen);
void gim_train_state_free(gim_train_state *s, const gim_exec_model *m);

/* Checkpoints: DIR/weights.safetensors (parameters, by name) and
 * DIR/optimizer.safetensors (optimizer state and counters). Both are written
 * to a temporary file and renamed, weights last... (see train.c). */
int gim_checkpoint_save(const gim_exec_model *m, const gim_train_state *s, const char *dir,
                        char *err, size_t errlen);
/* Loads parameters (and, when opt is true, optimizer state and counters)
 * into s; refuses a checkpoint that does not match m, naming the first
 * mismatch. */
int gim_checkpoint_load(const gim_exec_model *m, gim_train_state *s, const char *dir, bool opt,
                        char *err, size_t errlen);
int gim_weights_load(const gim_exec_model *m, gim_train_state *s, const char *path,
                     char *err, size_t errlen);

/* gim_checkpoint_save with extra metadata in the weights file; gim_train
 * records "training" (greedy | e2e) and "schedule". */
struct gim_ckpt_meta;
int gim_checkpoint_save_meta(const gim_exec_model *m, const gim_train_state *s, const char *dir,
                             const struct gim_ckpt_meta *extra, int n_extra, char *err, size_t errlen);
/* Every module's parameters as the tensors of weights.safetensors (names,
 * shapes; data pointing into s), *n of them: heap (gim_free), NULL when out
 * of memory. */
struct gim_ckpt_tensor;
struct gim_ckpt_tensor *gim_checkpoint_weight_tensors(const gim_exec_model *m, const gim_train_state *s, int *n);

/* gim_weights_load for probing: a file saved by an end-to-end run (metadata
 * "training": "e2e") lacks the intermediate modules' loss parameters (their
 * InfoNCE maps), which no feature depends on; those stay at their initial
 * values and are listed in `note` (empty when none). Every other mismatch
 * is refused as by gim_weights_load. */
int gim_weights_load_probe(const gim_exec_model *m, gim_train_state *s, const char *path,
                           char *note, size_t notelen, char *err, size_t errlen);

/* Async: batches each queue between two modules holds. A module's input is
 * then at most GIM_ASYNC_DEPTH + 1 of its producer's steps old when the
 * module steps on it (see sched_async.c). */
#define GIM_ASYNC_DEPTH 2

/* Under mpirun, per module: what its rank received and did (async). */
#define GIM_DIST_MAX_REUSE 16
typedef struct gim_dist_stats {
    int rank;
    int64_t received;               /* input batches received from the rank below */
    int64_t steps;                  /* optimizer steps taken */
    double stale_sum;               /* staleness summed over steps, in producer steps */
    int64_t stale_max;
    int64_t reuse[GIM_DIST_MAX_REUSE + 1];   /* batches used k times (0: dropped unused) */
    double bytes_sent;              /* by the module's rank downstream, per step of the rank */
} gim_dist_stats;

typedef struct gim_train_report {
    double seconds;
    int64_t steps;                  /* batches seen by the last module */
    double *last_loss;              /* per module: mean loss over the last epoch's final 10% */
    double examples_per_s;
    bool interrupted;               /* SIGINT/SIGTERM: checkpoint written, stopped early */
    bool diverged;                  /* NaN/Inf loss: stopped, last good checkpoint kept */
    int async_max_staleness;        /* async: the largest lag seen, in steps */
    gim_dist_stats *dist;           /* under mpirun, rank 0: per module (heap, gim_free); else NULL */
} gim_train_report;

/* Trains m on data per cfg, writing progress to `progress` (a bar when it is
 * a terminal, else plain lines), metrics to cfg->out_dir/metrics.csv and
 * checkpoints to cfg->out_dir. Returns 0, or -1 with err set. */
int gim_train(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
              const gim_examples *data, FILE *progress, gim_train_report *rep,
              char *err, size_t errlen);

/* Makes dir and its missing parents (mkdir -p); 0, or -1 with errno. */
int gim_make_dirs(const char *dir);

/* ---- progress on the console (progress.c) ---------------------------------- */

/* What training, feature extraction and the probe show while they work: on
 * a terminal a bar redrawn in place,
 *     HEAD [#########...............] DONE/TOTAL TAIL
 * otherwise plain lines, HEAD STEP DONE/TOTAL TAIL, every 5% of the work
 * and at its end. */
typedef struct gim_progress {
    FILE *out;                 /* NULL: silent */
    bool tty;                  /* out is a terminal: draw a bar */
    double t_start, t_window, t_last_draw;
    int64_t window_n;          /* items counted since t_window */
    double rate;               /* items/s over the last window of about a second */
    double min_gap;            /* plain lines: at least this many seconds apart (0 after init) */
} gim_progress;

void gim_progress_init(gim_progress *p, FILE *out);
/* n more items done: updates the rate once a second (and at the first call). */
void gim_progress_count(gim_progress *p, int64_t n);
/* Whether to draw now: a terminal gets about five redraws a second, a log a
 * line every 5% of total (at most one every min_gap s); always at done == total. */
bool gim_progress_due(gim_progress *p, int64_t done, int64_t total);
/* Seconds since gim_progress_init. */
double gim_progress_elapsed(const gim_progress *p);
/* "m:ss" or "h:mm:ss"; "--:--" when unknown (negative or NaN) or absurd. */
char *gim_progress_eta(char *buf, size_t n, double seconds);
/* Draws one bar (ending the line when final) or prints one plain line. */
void gim_progress_show(const gim_progress *p, const char *head, const char *step, int64_t done, int64_t total,
                       const char *tail, bool final);

/* Runs every module's forward pass over data and returns each module's
 * features (its feature slot) per example: feats[m] is n * feat_numel[m]
 * floats (heap; caller frees with gim_free). When show is not NULL, each
 * batch calls show(arg, images done, data->n). */
int gim_extract_features(const gim_exec_model *m, const gim_train_state *s,
                         const gim_examples *data, float **feats, int64_t *feat_numel,
                         void (*show)(void *arg, int64_t done, int64_t total), void *arg,
                         char *err, size_t errlen);
/* gim_extract_features, and when module_s is not NULL it adds the seconds
 * (wall) of module i's forward passes to module_s[i] before each show. */
int gim_extract_features_timed(const gim_exec_model *m, const gim_train_state *s,
                               const gim_examples *data, float **feats, int64_t *feat_numel,
                               void (*show)(void *arg, int64_t done, int64_t total), void *arg,
                               double *module_s, char *err, size_t errlen);
/* Module `module`'s features per example, floats (0 when it has none). */
int64_t gim_feature_numel(const gim_exec_model *m, int module);
/* Takes the features of examples [start, start + count) of module `module`
 * (count × gim_feature_numel floats, valid during the call); nonzero after
 * writing err stops the pass. Batches run side by side, so calls for
 * different batches may overlap in time: a sink must only write what its
 * (module, start) owns. */
typedef int (*gim_feature_sink)(void *arg, int module, int64_t start, int64_t count, const float *features,
                                char *err, size_t errlen);
/* The pass of gim_extract_features_timed with each batch's features handed
 * to sink instead of kept. */
int gim_extract_features_each(const gim_exec_model *m, const gim_train_state *s, const gim_examples *data,
                              gim_feature_sink sink, void *sink_arg,
                              void (*show)(void *arg, int64_t done, int64_t total), void *arg,
                              double *module_s, char *err, size_t errlen);

/* ---- distribution over MPI (mpi_transport.c, sched_mpi.c, placement.c) ----
 *
 * Under `mpirun -np R gimc train ...` each rank runs a contiguous group of
 * modules (cfg->placement); rank 0 reads the data, writes progress, metrics
 * and the one checkpoint of the whole model. Without mpirun none of this
 * runs: MPI is not even initialised. */

/* Whether this process was started by mpirun (its environment says so). */
bool gim_dist_requested(void);
/* Initialises MPI. Returns 0, or -1 with err set (e.g. built without MPI). */
int gim_dist_start(int *argc, char ***argv, char *err, size_t errlen);
int gim_dist_rank(void);            /* 0 when not started */
int gim_dist_size(void);            /* 1 when not started */
int gim_dist_local_size(void);      /* ranks on this machine; 1 when not started */
void gim_dist_finish(void);         /* MPI_Finalize, when started */
/* Ends every rank at once with `status` (a rank that cannot go on). */
_Noreturn void gim_dist_abort(int status);

/* Collective: every rank's model, batch, seed, schedule, epochs, optimizer
 * and gim version against rank 0's; -1 on every rank, naming the first
 * difference, when one differs. */
int gim_dist_handshake(const gim_exec_model *m, const gim_train_config *cfg, const char *version,
                       char *err, size_t errlen);
/* Collective: ranks other than 0 learn the data set's size and shapes
 * (they never read its examples). `status` is rank 0's (0: loaded); -1 on
 * every rank when rank 0 failed. */
int gim_dist_share_data(gim_examples *d, int status, char *err, size_t errlen);
/* Collective: rank 0's state (a loaded checkpoint) to every rank; -1 on
 * every rank when rank 0's `status` is not 0. */
int gim_dist_share_state(const gim_exec_model *m, gim_train_state *s, int status, char *err, size_t errlen);
/* Collective: 0 when every rank's status is 0. */
int gim_dist_agree(int status);

/* Placement: module -> rank for R ranks, contiguous groups in module order,
 * rank 0 first. Balanced: the split whose largest group cost (e.g. step
 * FLOPs) is least. -1 with err when R exceeds the modules. */
int gim_placement_balance(const double *cost, int n_modules, int ranks, int *rank_of, char *err, size_t errlen);
/* "0,0,1": module i's rank (MPI's numbering, from 0); checks
 * contiguity, that every rank gets a module and that there are R of them. */
int gim_placement_parse(const char *text, int n_modules, int ranks, int *rank_of, char *err, size_t errlen);

#endif
