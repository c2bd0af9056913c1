/* The op table and the per-concern tables indexed by op: every table covers
 * every op it must. Each concern registers one line in optable_checks. */
#include <string.h>

#include "cg.h"
#include "cost.h"
#include "gim_compiler.h"
#include "graph.h"
#include "shape.h"
#include "testutil.h"

/* Which ops a table must cover. */
static bool every_op(gim_op op) { return true; }
static bool user_op(gim_op op) { return gim_op_info(op)->kind == GIM_OPK_USER; }
/* Everything that computes: not a source, not a view (views alias their input). */
static bool computing_op(gim_op op) {
    return gim_op_info(op)->kind != GIM_OPK_SOURCE && op != GIM_OP_RESHAPE && op != GIM_OP_GRADIENT_BLOCK &&
           op != GIM_OP_SLICE;
}
static bool has_generator(gim_op op) { return cg_op_generator(op) != NULL; }

typedef struct optable_check {
    const char *table;              /* where it lives, for the failure message */
    bool (*has_entry)(gim_op op);
    bool (*required)(gim_op op);
} optable_check;

/* One line per table: {"what (file)", has_entry, which ops must have one}. */
static const optable_check optable_checks[] = {
    {"shape rules (shape.c)", gim_shape_rule_exists, every_op},
    {"FLOP counts (cost.c)", gim_cost_rule_exists, every_op},
    {"backward rules (autodiff.c)", gim_autodiff_has_rule, user_op},
    {"code generators (cg_*.c via cg_ops.c)", has_generator, computing_op},
};

static void test_every_table_covers_its_ops(void) {
    int missing = 0;
    for (size_t t = 0; t < sizeof optable_checks / sizeof optable_checks[0]; t++) {
        const optable_check *c = &optable_checks[t];
        for (int op = 0; op < GIM_OP_COUNT; op++)
            if (c->required((gim_op)op) && !c->has_entry((gim_op)op)) {
                fprintf(stderr, "\n%s: no entry for op '%s'", c->table, gim_op_name((gim_op)op));
                missing++;
            }
    }
    CU_ASSERT_EQUAL(missing, 0);
}

/* Names are unique; user ops are found by name; signatures parse into as
 * many parameters as they declare, tensors first in in[], the rest in attr[]. */
static void test_op_table_is_consistent(void) {
    for (int a = 0; a < GIM_OP_COUNT; a++) {
        const gim_opinfo *info = gim_op_info((gim_op)a);
        CU_ASSERT_PTR_NOT_NULL_FATAL(info->name);
        for (int b = a + 1; b < GIM_OP_COUNT; b++) CU_ASSERT(strcmp(info->name, gim_op_name((gim_op)b)) != 0);
        gim_op want = info->kind == GIM_OPK_USER ? (gim_op)a : GIM_OP_COUNT;
        CU_ASSERT_EQUAL(gim_op_lookup(info->name), want);
        int colons = 0;
        for (const char *s = info->signature; *s; s++) colons += *s == ':';
        CU_ASSERT_EQUAL(info->n_params, colons);
        CU_ASSERT(info->n_tensor_params <= GIM_MAX_IN && info->n_attrs <= GIM_MAX_ATTR);
        int tensors = 0, attrs = 0;
        for (int i = 0; i < info->n_params; i++) {
            const gim_opparam *p = &info->params[i];
            bool t = p->type == GIM_PT_TENSOR || p->type == GIM_PT_OPT_TENSOR;
            CU_ASSERT_EQUAL(p->slot, t ? tensors : attrs);
            tensors += t;
            attrs += !t;
        }
    }
    /* spot checks against ops.def */
    const gim_opinfo *conv = gim_op_info(GIM_OP_CONV2D);
    CU_ASSERT_EQUAL(conv->n_params, 7);
    CU_ASSERT_STRING_EQUAL(conv->params[3].name, "stride");
    CU_ASSERT(conv->params[3].has_default && conv->params[3].default_value == 1);
    /* a choice: its strings in order, the default by index, attr slot 5 */
    const gim_opparam *mask = &conv->params[6];
    CU_ASSERT_EQUAL(mask->type, GIM_PT_CHOICE);
    CU_ASSERT_EQUAL(mask->slot, GIM_CONV2D_MASK_ATTR);
    CU_ASSERT_EQUAL_FATAL(mask->n_choices, 3);
    CU_ASSERT_STRING_EQUAL(mask->choices[GIM_MASK_NONE], "none");
    CU_ASSERT_STRING_EQUAL(mask->choices[GIM_MASK_A], "A");
    CU_ASSERT_STRING_EQUAL(mask->choices[GIM_MASK_B], "B");
    CU_ASSERT(mask->has_default && mask->default_value == GIM_MASK_NONE);
    CU_ASSERT_EQUAL(gim_op_lookup("conv2"), GIM_OP_COUNT);
}

int main(void) {
    static const gim_test tests[] = {
        {"every table covers its ops", test_every_table_covers_its_ops},
        {"op table is consistent", test_op_table_is_consistent},
        {NULL, NULL},
    };
    return gim_run_suite("optable", tests);
}
