/* Shape inference (private to compiler/): one rule per op, in shape.c.
 *
 * A rule reads a node's inputs and attributes, checks them against the op's
 * contract and sets node->shape. On a violation it writes a message of the
 * form "<op> expects <rule>; got <shape>" and returns -1; the caller (lowering,
 * autodiff) reports it at the node's source location. Rules may normalise
 * attributes (negative axes, pool stride 0 -> k), so they are idempotent.
 *
 * Learned parameter inputs (conv weights, GRU weights, the InfoNCE maps) are
 * checked when present; lowering runs the rule once on a scratch node holding
 * only the data inputs (to learn the channels it needs to create parameters)
 * and again on the finished node. */
#ifndef GIM_SHAPE_H
#define GIM_SHAPE_H

#include <stdbool.h>
#include <stddef.h>

#include "graph.h"

/* A tensor may hold at most this many elements (2^40). */
#define GIM_MAX_NUMEL ((int64_t)1 << 40)

/* Runs op's rule on n; 0 on success, -1 with msg filled. Also refuses any
 * result whose element count exceeds GIM_MAX_NUMEL ("tensor too large"). */
int gim_infer_shape(gim_node *n, char *msg, size_t msg_len);

/* True if op has a shape rule (tests/test_optable.c checks every op does). */
bool gim_shape_rule_exists(gim_op op);

/* Element count with overflow and size checks: -1 if any dimension is < 0 or
 * the product exceeds GIM_MAX_NUMEL. */
int64_t gim_shape_numel_checked(const gim_shape *s);

#endif
