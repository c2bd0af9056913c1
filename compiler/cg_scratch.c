/* Per-node scratch sizes: merges the families' tables (see cg.h). */
#include "cg.h"

int64_t cg_scratch_floats(const gim_node *n) {
    if (n->op < 0 || n->op >= GIM_OP_COUNT) return 0;
    if (cg_loss_scratch[n->op]) return cg_loss_scratch[n->op](n);
    if (cg_conv_scratch[n->op]) return cg_conv_scratch[n->op](n);
    return 0;
}

LLVMValueRef cg_scratch(cg_ctx *c, const gim_node *n) {
    if (!c->scratch) return NULL;
    return c->scratch[n->id];
}
