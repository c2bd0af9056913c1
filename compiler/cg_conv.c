/* Code generators: conv ops. */
#include "cg.h"

const cg_op_fn cg_conv_ops[GIM_OP_COUNT] = {
    [GIM_OP_INPUT] = NULL,
};
