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

/* The node named `name`, or NULL. */
gim_node *hg_find(const gim_graph *g, const char *name);

/* Counts nodes of op `op` (forward and backward). */
int hg_count(const gim_graph *g, gim_op op);

/* Sum of the element counts of a module's parameters. */
int64_t hg_module_params(const gim_module *m);

#endif
