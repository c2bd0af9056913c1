/* The JIT and code generation infrastructure: a hand-built graph compiles,
 * runs and gives the values a plain-C loop gives. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness_jit.h"
#include "testutil.h"

/* relu of an odd-sized input, through the whole pipeline (plan, codegen,
 * optimisation, JIT, call). */
static void test_relu_runs(void) {
    hj_graph *h = hj_new(1);
    gim_node *x = hj_input(h, HJ_SHAPE(3, 37));
    gim_node *y = hj_op(h, GIM_OP_RELU, HJ_SHAPE(3, 37), HJ_IN(x), HJ_NOATTR);
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(y)) == 0);
    float xs[111], ys[111];
    gim_test_fill(xs, 111, 1, -1, 1);
    hj_run(h, (const void *[]){xs}, (float *[]){ys});
    for (int i = 0; i < 111; i++) CU_ASSERT_EQUAL(ys[i], xs[i] > 0 ? xs[i] : 0.0f);
    hj_free(h);
}

int main(void) {
    static const gim_test tests[] = {
        {"relu runs", test_relu_runs},
        {NULL, NULL},
    };
    return gim_run_suite("jit", tests);
}
