/* A test harness that JIT-compiles a small hand-built graph and runs it, so
 * one op's generated code can be tested alone: feed input arrays, read
 * output arrays.
 *
 * The graph is one module with no loss and no parameters; every node is a
 * plain (forward) node, so a backward op is tested like any other op by
 * giving it its inputs. hj_run calls the module's forward function: the
 * outputs are its exports, in the order given to hj_compile. The work arena
 * is filled with NaN before each run, so reading memory a generator never
 * wrote shows up as NaN in the outputs.
 *
 *     hj_graph *h = hj_new(4);                                 // batch 4 (g->batch)
 *     gim_node *x = hj_input(h, HJ_SHAPE(4, 10));
 *     gim_node *y = hj_op(h, GIM_OP_LEAKY_RELU, HJ_SHAPE(4, 10), HJ_IN(x), HJ_ATTR(0.1));
 *     CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(y)) == 0);          // prints diagnostics on failure
 *     float xs[40], ys[40];
 *     ...
 *     hj_run(h, (const void *[]){xs}, (float *[]){ys});
 *     hj_free(h);
 *
 * Attributes are given in signature order (ops.def); omitted trailing ones
 * keep their defaults. Inputs are weights too: a conv's w is just another
 * hj_input. Labels (int32) come from hj_labels and are passed in the same
 * input array (as a const int32_t *). For ops that draw random numbers,
 * hj_run_ex sets call->step and call->seed; node->rng_stream can be set on
 * the returned node before hj_compile. */
#ifndef GIM_HARNESS_JIT_H
#define GIM_HARNESS_JIT_H

#include <stdint.h>
#include <stdio.h>

#include "graph.h"

typedef struct hj_graph hj_graph;

gim_shape hj_shape(int rank, const int64_t *d);
#define HJ_SHAPE(...) hj_shape((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
#define HJ_SCALAR hj_shape(0, NULL)
#define HJ_IN(...) (int)(sizeof((gim_node *[]){__VA_ARGS__}) / sizeof(gim_node *)), (gim_node *[]){__VA_ARGS__}
#define HJ_ATTR(...) (int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)), (double[]){__VA_ARGS__}
#define HJ_NOATTR 0, NULL
#define HJ_OUT(...) (int)(sizeof((gim_node *[]){__VA_ARGS__}) / sizeof(gim_node *)), (gim_node *[]){__VA_ARGS__}

hj_graph *hj_new(int64_t batch);
void hj_free(hj_graph *h);
/* The graph being built (e.g. to set fields on nodes). */
gim_graph *hj_graph_of(hj_graph *h);
/* Optimisation level for hj_compile (default 2). */
void hj_set_opt(hj_graph *h, int opt_level);

/* A float input of the given shape; inputs are numbered in creation order. */
gim_node *hj_input(hj_graph *h, gim_shape s);
/* An int32 labels input [n]. */
gim_node *hj_labels(hj_graph *h, int64_t n);
/* A node op(in...) with output shape out and attributes attr[0..n_attr). */
gim_node *hj_op(hj_graph *h, gim_op op, gim_shape out, int n_in, gim_node *const *in, int n_attr,
                const double *attr);

/* Compiles the graph with the given nodes as outputs. Returns 0, or -1 after
 * printing diagnostics to stderr. */
int hj_compile(hj_graph *h, int n_out, gim_node *const *out);
/* Runs the forward function: in[i] is the data of input i, out[j] receives
 * output j. Returns 0 (or -1 if not compiled). */
int hj_run(hj_graph *h, const void *const *in, float *const *out);
int hj_run_ex(hj_graph *h, const void *const *in, float *const *out, uint64_t step, uint64_t seed);
/* Runs the step function instead (every node, not only those the outputs
 * need; no parameters, so no update); returns its loss value (0: no loss). */
float hj_run_step(hj_graph *h, const void *const *in, float *const *out);

/* Floats of the work arena the plan needs (after hj_compile). */
int64_t hj_work_floats(hj_graph *h);
/* Prints the LLVM IR (opt_level as given) of the graph; 0 or -1. */
int hj_print_ir(hj_graph *h, int opt_level, FILE *out);
/* Diagnostics of the last hj_compile, as text (empty when none). */
const char *hj_errors(hj_graph *h);

#endif
