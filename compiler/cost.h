/* Cost model details (private to compiler/); gim_module_cost is in gim_compiler.h. */
#ifndef GIM_COST_H
#define GIM_COST_H

#include <stdbool.h>

#include "graph.h"

/* Forward FLOPs of one call of n (the whole batch). */
double gim_node_fwd_flops(const gim_node *n);
/* True if op is covered by the cost table (internal ops are costed through
 * the forward op they belong to). */
bool gim_cost_rule_exists(gim_op op);

/* Human-readable numbers for tables: "12,640"; "1.2 MFLOP" style with the
 * given unit ("FLOP", "B"). Return buf. */
char *gim_fmt_count(int64_t v, char *buf, size_t n);
char *gim_fmt_si(double v, const char *unit, char *buf, size_t n);

#endif
