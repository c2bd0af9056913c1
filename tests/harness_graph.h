/* Test helpers for the front half of the compiler: .gim text through parse,
 * train block, lowering and partition; node lookup by name. */
#ifndef GIM_HARNESS_GRAPH_H
#define GIM_HARNESS_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "gim_compiler.h"

/* Compiles `src` (registered as "test.gim"; imports resolve in stdlib/) with
 * `batch` bound, partitioned when `partition` (end to end when e2e).
 * Returns the graph, or NULL when any error was reported. *messages (if not
 * NULL) receives everything the diagnostics printed (heap; gim_free it). */
gim_graph *hg_compile(const char *src, int64_t batch, bool partition, bool e2e, char **messages);

/* hg_compile expecting success: prints the diagnostics to stderr when it
 * fails. Returns the graph or NULL. */
gim_graph *hg_ok(const char *src, int64_t batch, bool partition, bool e2e);

/* hg_compile expecting errors: asserts (CUnit) that no graph came out and
 * returns the messages (heap; gim_free them). */
char *hg_fails(const char *src, int64_t batch, bool partition, bool e2e);

/* hg_fails, and asserts (CUnit) that the messages contain `needle`
 * (printing them when they do not). */
void hg_expect_error(const char *src, int64_t batch, bool partition, bool e2e, const char *needle);

/* The node named `name`, or NULL. */
gim_node *hg_find(const gim_graph *g, const char *name);

/* Counts nodes of op `op` (forward and backward). */
int hg_count(const gim_graph *g, gim_op op);

/* Sum of the element counts of a module's parameters. */
int64_t hg_module_params(const gim_module *m);

/* Whether n is non-NULL with shape d[0..rank). */
bool hg_shape_is(const gim_node *n, int rank, const int64_t *d);
/* CU_ASSERT that node n has the shape given by the remaining arguments
 * (for test files that use CUnit). */
#define HG_SHAPE_IS(n, ...)                                                      \
    do {                                                                         \
        const int64_t want_[] = {__VA_ARGS__};                                   \
        CU_ASSERT(hg_shape_is(n, (int)(sizeof want_ / sizeof want_[0]), want_)); \
    } while (0)

#endif
