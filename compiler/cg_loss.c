/* Code generators: loss ops. */
#include "cg.h"

const cg_op_fn cg_loss_ops[GIM_OP_COUNT] = {
    [GIM_OP_INPUT] = NULL,
};

const cg_scratch_fn cg_loss_scratch[GIM_OP_COUNT] = {
    [GIM_OP_INPUT] = NULL,
};
