/* Whole-model test harness: compile .gim source through the real pipeline
 * (parse, lower, partition, autodiff, JIT) and run its modules through the
 * gim_call ABI with buffers the harness owns; plus a finite-difference check
 * of a module's step gradients against its own loss. */
#ifndef GIM_HARNESS_MODEL_H
#define GIM_HARNESS_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gim_runtime.h"

/* Compiles `src` (registered as "<name>.gim") with the batch bound; NULL
 * after printing diagnostics to stderr. Adam with the default settings. */
gim_exec_model *gim_hm_compile(const char *name, const char *src, int64_t batch, bool e2e);
/* Whether gim_hm_compile fuses ReLUs into convolutions as gimc does (gim_fuse;
 * default true), and how many it fused last time. */
extern bool gim_hm_fuse;
extern int gim_hm_fused;

/* Every buffer of a run: one per slot, and per module params (initialised by
 * gim_rt_init_params from seed), grads, optimizer state, work. */
typedef struct gim_hm_run {
    gim_exec_model *em;
    void **slots;
    float **params, **grads, **opt, **work;
    const float ***ins;           /* per module: its input slot buffers */
    float ***outs;                /* per module: its export slot buffers */
    const int32_t **labels;       /* per module: its labels slot, or NULL */
} gim_hm_run;

gim_hm_run *gim_hm_run_new(gim_exec_model *em, uint64_t seed);
void gim_hm_run_free(gim_hm_run *r);

/* The buffer of the model input named `name` (float or int32 labels), or NULL. */
void *gim_hm_input(gim_hm_run *r, const char *name);

/* One step of module m; returns its loss. */
float gim_hm_step(gim_hm_run *r, int m, uint64_t step, uint64_t seed, float lr, int flags);
/* Every module in order on the same batch (the simultaneous schedule);
 * losses[m] when losses is not NULL. */
void gim_hm_step_all(gim_hm_run *r, uint64_t step, uint64_t seed, float lr, int flags, float *losses);

/* The parameter whose name ends in `suffix` and its module (-1 and NULL if none). */
const gim_param_info *gim_hm_find_param(const gim_hm_run *r, const char *suffix, int *module);
/* Multiplies every parameter of every module by s. */
void gim_hm_scale_params(gim_hm_run *r, float s);

double gim_hm_norm2(const float *x, int64_t n);

/* Checks module m's step gradients against central finite differences of its
 * loss (step `step`, seed `seed`, GIM_CALL_NO_UPDATE), along the gradient,
 * random directions, one direction per parameter, and a few coordinates per
 * parameter; restricted to floats [lo, lo + n) of the module's parameters
 * when n > 0. Asserts with CUnit; prints what failed. Returns the number of
 * failed comparisons. */
int gim_hm_grad_check(gim_hm_run *r, int m, uint64_t step, uint64_t seed, int64_t lo, int64_t n);

#endif
