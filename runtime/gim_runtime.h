/* The runtime's public interface: the calling convention of generated code,
 * a compiled model as the runtime sees it (no LLVM, no AST), and the kernels
 * generated code calls by name.
 *
 * Generated code and the runtime agree on exactly this header; the compiler
 * fills a gim_exec_model, the runtime drives it. */
#ifndef GIM_RUNTIME_H
#define GIM_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the calling convention of a module's generated functions -------------- */

enum {
    GIM_CALL_NO_UPDATE = 1,   /* step computes loss and gradients, skips the optimizer */
};

/* Field order and types are part of the ABI the code generator emits against. */
typedef struct gim_call {
    const float *const *inputs;  /* one buffer per module input slot, in module order */
    const int32_t *labels;       /* class labels [batch], or NULL when unused */
    float *params;               /* the module's parameters, packed (see gim_param_info) */
    float *grads;                /* same layout as params; step writes the gradients */
    float *opt;                  /* optimizer state (Adam: m then v, 2 x n_params) */
    float *work;                 /* scratch: activations and backward temporaries */
    float *const *outputs;       /* one buffer per export slot, in module order; both
                                    step and forward write them (step: the values of
                                    its forward pass, before the update) */
    uint64_t step;               /* optimizer steps taken, this one included (1-based) */
    uint64_t seed;               /* the run's seed (negative sampling) */
    float lr;                    /* learning rate for this step */
    int32_t flags;               /* GIM_CALL_* */
} gim_call;

/* step: forward, loss, backward, update; returns the loss.
 * forward: the forward pass alone; writes the export slots. */
typedef float (*gim_step_fn)(const gim_call *call);
typedef void (*gim_forward_fn)(const gim_call *call);

/* ---- a compiled model ------------------------------------------------------ */

#define GIM_RT_MAX_RANK 8

typedef struct gim_param_info {
    const char *name;            /* e.g. "conv_pair.1/conv2d.1/w" (checkpoint key) */
    int rank;
    int64_t shape[GIM_RT_MAX_RANK];
    int64_t offset, numel;       /* in floats, within the module's params */
    float init_bound;            /* initialised U(-bound, bound) */
} gim_param_info;

/* A tensor that crosses a module boundary: a model input, labels, or a
 * module's output read downstream. */
typedef struct gim_slot_info {
    const char *name;
    int rank;
    int64_t shape[GIM_RT_MAX_RANK];
    int64_t numel;
    bool is_labels;              /* int32 labels rather than float32 data */
    int producer;                /* module index, or -1 for a model input */
} gim_slot_info;

typedef struct gim_exec_module {
    int index;
    const char *name;            /* "module 1" */
    gim_step_fn step;
    gim_forward_fn forward;
    gim_param_info *params;
    int n_params;
    int64_t n_param_floats;
    int64_t n_opt_floats;
    int64_t n_work_floats;
    int *inputs;                 /* slot indices */
    int n_inputs;
    int *exports;                /* slot indices */
    int n_exports;
    int feature_slot;            /* the representation this module learns (the z its
                                    infonce reads, or its context c when the model
                                    outputs c; else its last export): a slot that
                                    forward writes, for the linear probe; -1 if none */
    bool has_loss;
    const char *loss_kind;       /* "infonce", "cross_entropy" */
    double fwd_flops, step_flops;   /* per call (whole batch), as the cost model counts */
    double step_products;        /* FLOPs of the products a step executes (Winograd's
                                    fewer multiplies, no data gradient behind a block) */
    int64_t n_act_floats;        /* of n_work_floats: the forward values the memory plan
                                    keeps alive for the backward pass */
} gim_exec_module;

typedef struct gim_exec_model {
    const char *name;
    int64_t batch;
    gim_exec_module *modules;
    int n_modules;
    gim_slot_info *slots;
    int n_slots;
    int output_slot;             /* the model's `output`, or -1 */
    void *owner;                 /* the JIT and its arena */
    void (*release)(struct gim_exec_model *m);
} gim_exec_model;

void gim_exec_model_free(gim_exec_model *m);

/* Fills a module's packed parameters: each parameter U(-init_bound,
 * init_bound), element i drawn with gim_rt_rand_uniform(seed,
 * GIM_RT_STREAM_INIT | hash(name), i) (runtime/rt_internal.h). Keyed by the
 * parameter's name, not its module, so a parameter starts from the same
 * values however the network is cut into modules (greedy vs --e2e). */
void gim_rt_init_params(const gim_exec_module *m, float *params, uint64_t seed);

/* ---- kernels called by generated code ------------------------------------ */

/* Counter-based random numbers: a pure function of (seed, stream, counter),
 * so a step's negatives are reproducible and the backward pass can draw the
 * same ones again. Returns a uniform integer in [0, n). */
uint32_t gim_rt_rand_below(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t n);
/* 64 random bits. */
uint64_t gim_rt_rand_u64(uint64_t seed, uint64_t stream, uint64_t counter);

/* Thin wrapper over cblas_sgemm (row-major), so generated code has one stable
 * symbol: C = alpha * op(A) op(B) + beta * C. */
void gim_rt_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                  float *C, int64_t ldc);
/* How gim_rt_sgemm cuts a product over the pool: one of at least
 * GIM_RT_SGEMM_SPLIT_FLOPS (2·M·N·K), with its larger dimension at least two
 * units, called outside a parallel loop, becomes one cblas_sgemm per part:
 * its ceil(max(M, N) / GIM_RT_SGEMM_UNIT) units of rows (M >= N) or columns
 * cut into gim_rt_sgemm_parts(M, N, K) contiguous parts, part t the units
 * [t·units/parts, (t+1)·units/parts); anything else is one cblas_sgemm. The
 * parts are min(GIM_RT_PARTS, units), but at most the largest power of two
 * (at least 2) not above max(M, N) / GIM_RT_SGEMM_WIDE when the operand every
 * part packs again (B, K·N floats, when cut by rows; A, M·K, by columns)
 * exceeds GIM_RT_SGEMM_SHARED_FLOATS.
 * An exported module (compiler/export.c) makes the same calls, in order on
 * one thread, so its sums are the same. */
#define GIM_RT_SGEMM_SPLIT_FLOPS (1 << 22)
#define GIM_RT_SGEMM_UNIT 32
#define GIM_RT_SGEMM_SHARED_FLOATS (1 << 18)
#define GIM_RT_SGEMM_WIDE 256
int64_t gim_rt_sgemm_parts(int64_t M, int64_t N, int64_t K);

/* ---- the thread pool (runtime/pool.c) ---------------------------------------
 * gim_rt_parallel_for(n, fn, env) cuts [0, n) into gim_rt_parts(n) =
 * min(GIM_RT_PARTS, n) contiguous parts, part t = [t·n/P, (t+1)·n/P), and
 * calls fn(env, begin, end, t) once per non-empty part, on the pool's
 * threads and the caller's; it returns when all have run. The cut depends on
 * n only (not on the thread count or timing), so per-part scratch and
 * partial sums reduced in part order are reproducible. A call while the pool
 * runs another thread's loop, or from inside a part, runs its parts in order
 * on the caller. */
#define GIM_RT_PARTS 8
typedef void (*gim_rt_part_fn)(void *env, int64_t begin, int64_t end, int part);
void gim_rt_parallel_for(int64_t n, gim_rt_part_fn fn, void *env);
int gim_rt_parts(int64_t n);
/* Threads the pool uses, the caller included (n <= 0: GIM_THREADS from the
 * environment, else all cores). Also sets OpenBLAS to one thread: the pool
 * does all the parallel work (gim_rt_sgemm cuts large products over it). */
void gim_rt_set_threads(int n);
int gim_rt_threads(void);
/* True inside a part of a parallel loop (on whichever thread runs it). */
bool gim_rt_in_parallel(void);
/* gim_rt_parallel_for(n, fn, env) whose parts are lanes of work, each on
 * one thread as if it were a serial caller: inside a part, loops run their
 * parts in order on that thread (the pool is busy with this loop) and
 * gim_rt_in_parallel() is false, so gim_rt_sgemm cuts its products as it
 * does outside any loop, and every sum is what a serial caller gets. */
void gim_rt_parallel_lanes(int64_t n, gim_rt_part_fn fn, void *env);

/* Registers every symbol above with a name -> address table for the JIT.
 * Returns the count; *names and *addrs point at static arrays. */
int gim_rt_symbols(const char *const **names, void *const **addrs);

/* ---- training configuration ------------------------------------------------ */

typedef enum gim_optimizer_kind { GIM_OPT_ADAM, GIM_OPT_SGD } gim_optimizer_kind;
typedef enum gim_schedule { GIM_SCHED_SIMULTANEOUS, GIM_SCHED_SEQUENTIAL, GIM_SCHED_ASYNC } gim_schedule;
/* How a cache of module outputs stores each value: float32, or bfloat16
 * (the top 16 bits, rounded to nearest even; half the disk). */
typedef enum gim_cache_dtype { GIM_CACHE_F32, GIM_CACHE_BF16 } gim_cache_dtype;

/* Everything a run is configured by: the model's train block, then the
 * command line on top. Optimizer settings are compiled into the step code. */
typedef struct gim_train_config {
    const char *dataset;         /* "fashion-mnist" or a directory of IDX files */
    int64_t batch;
    int64_t epochs;
    int64_t steps;               /* 0: whole epochs */
    gim_optimizer_kind optimizer;
    double lr, beta1, beta2, eps, weight_decay, momentum;
    gim_schedule schedule;
    uint64_t seed;
    int threads;                 /* 0: all cores */
    const char *out_dir;
    bool resume;
    bool e2e;
    int64_t save_every;          /* steps between checkpoints; 0: default */
    int sample_rate;             /* audio data sets: Hz the files are converted to (16000) */
    gim_cache_dtype cache_dtype; /* caches of module outputs (sequential, refresh) */
    int64_t refresh;             /* > 0: modules above the first train on a cache of
                                    their inputs, recomputed every `refresh` epochs */
    /* Called after each checkpoint is written (NULL: nothing), on the
     * thread that wrote it, metrics.csv flushed: gimc train --report
     * refreshes the run's page here. */
    void (*after_save)(void *arg);
    void *after_save_arg;
    /* under mpirun (docs/distributed.md) */
    const int *placement;        /* module -> rank, n_modules entries; NULL: one rank per module */
    int replay_capacity;         /* async: input batches a rank keeps (0: 4) */
    int max_reuse;               /* async: steps on one input batch at most (0: 2) */
    double peer_timeout;         /* seconds a rank waits for a peer (0: 120) */
} gim_train_config;

/* The defaults before any train block: batch 32, 1 epoch, Adam(1e-3, 0.9,
 * 0.999, 1e-8), simultaneous, seed 0, out dir "runs/<model>", 16 kHz audio. */
void gim_train_config_defaults(gim_train_config *c);

#endif
