/* The op -> code generator table: the union of the per-family tables
 * (cg_elementwise.c, cg_conv.c, cg_loss.c). Each op belongs to at most one
 * family; an op claimed twice is a bug caught by cg_ops_check (and by the
 * first lookup, which asserts). */
#include "cg.h"

#include <assert.h>
#include <stdio.h>

/* Number of families with a generator for op. */
static int claims(gim_op op) {
    return (cg_elementwise_ops[op] != NULL) + (cg_conv_ops[op] != NULL) + (cg_loss_ops[op] != NULL);
}

cg_op_fn cg_op_generator(gim_op op) {
    if ((int)op < 0 || op >= GIM_OP_COUNT) return NULL;
    assert(claims(op) <= 1 && "an op has generators in two families");
    if (cg_elementwise_ops[op]) return cg_elementwise_ops[op];
    if (cg_conv_ops[op]) return cg_conv_ops[op];
    return cg_loss_ops[op];
}

/* Ops whose generator is missing or claimed twice, printed one per line;
 * returns how many are claimed twice. Sources and views need none. */
int cg_ops_check(FILE *out) {
    int twice = 0;
    for (int op = 0; op < GIM_OP_COUNT; op++) {
        int k = claims((gim_op)op);
        if (k > 1) {
            twice++;
            if (out) fprintf(out, "op %s has %d code generators\n", gim_op_name((gim_op)op), k);
        }
    }
    return twice;
}
