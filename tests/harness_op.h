/* A bare JIT for op-family tests: one function running chosen nodes'
 * generators straight from a family's table (cg_conv_ops, cg_loss_ops),
 * without the module code generator or the memory planner (each node's
 * scratch is the generator's own fallback).
 *
 * The compiled function is `void f(float **bufs, u64 step, u64 seed)`;
 * node i's buffer is bufs[i]. With rng false the generators see no step or
 * seed (c->step, c->seed NULL) and the two arguments go unused. */
#ifndef GIM_HARNESS_OP_H
#define GIM_HARNESS_OP_H

#include <stdbool.h>
#include <stdint.h>

#include <llvm-c/LLJIT.h>

#include "cg.h"
#include "graph.h"

typedef struct hop_jit {
    LLVMOrcLLJITRef jit;
    void (*fn)(float **bufs, uint64_t step, uint64_t seed);
} hop_jit;

/* Compiles the generators table[targets[t]->op] of targets[0..nt), in
 * order, for the host, running the pass pipeline `passes` (e.g.
 * "default<O2>"). Returns 0, or -1 (reported on stderr) with out->jit NULL. */
int hop_build(const gim_graph *g, gim_node *const *targets, int nt, const cg_op_fn *table, const char *passes,
              bool rng, hop_jit *out);
void hop_free(hop_jit *j);
/* hop_build, one call f(bufs, step, seed), hop_free. Returns 0, or -1
 * (reported) when it did not compile. */
int hop_run(const gim_graph *g, gim_node *const *targets, int nt, const cg_op_fn *table, const char *passes,
            bool rng, float **bufs, uint64_t step, uint64_t seed);

/* A function of some doubles (reached through ctx), for finite differences. */
typedef double (*hop_fd_fn)(void *ctx);
/* The central difference (f(x + h e_i) - f(x - h e_i)) / 2h of f with respect
 * to x[i]; x[i] is restored. */
double hop_fd(hop_fd_fn f, void *ctx, double *x, int64_t i, double h);

#endif
