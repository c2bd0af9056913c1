/* Shape rules (compiler/shape.c): every user op on good shapes (expected
 * shapes worked out by hand from the op's definition) and on bad ones (the
 * message names the op, the rule and the shape it got). */
#include <stdarg.h>
#include <string.h>

#include "harness_graph.h"
#include "shape.h"
#include "testutil.h"

/* A source node of the given shape (stack storage; nothing is allocated). */
static gim_node src(int rank, ...) {
    gim_node n = {.op = GIM_OP_INPUT, .shape = {.rank = rank}};
    va_list ap;
    va_start(ap, rank);
    for (int i = 0; i < rank; i++) n.shape.d[i] = va_arg(ap, int64_t);
    va_end(ap);
    return n;
}
#define S(...) src(__VA_ARGS__)
#define L(x) ((int64_t)(x))

static char msg[600];

/* Runs op on inputs with attrs (in signature order of the attributes). */
static int run(gim_node *n, gim_op op, int n_in, gim_node **in, int n_attr, const double *attr) {
    memset(n, 0, sizeof *n);
    n->op = op;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    for (int i = 0; i < n_attr; i++) n->attr[i] = attr[i];
    return gim_infer_shape(n, msg, sizeof msg);
}

static void test_patches(void) {
    gim_node x = S(4, L(2), L(1), L(28), L(28)), n;
    gim_node *in[] = {&x};
    /* G = (28 - 8)/4 + 1 = 6 */
    CU_ASSERT_EQUAL(run(&n, GIM_OP_PATCHES, 1, in, 2, (double[]){8, 4}), 0);
    HG_SHAPE_IS(&n, 2, 6, 6, 1, 8, 8);
    /* non-square image: H 20 -> (20-8)/4+1 = 4, W 28 -> 6 */
    gim_node y = S(4, L(3), L(2), L(20), L(28));
    in[0] = &y;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_PATCHES, 1, in, 2, (double[]){8, 4}), 0);
    HG_SHAPE_IS(&n, 3, 4, 6, 2, 8, 8);
    gim_node small = S(4, L(2), L(1), L(4), L(4));
    in[0] = &small;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_PATCHES, 1, in, 2, (double[]){8, 4}), -1);
    CU_ASSERT(strstr(msg, "patches expects [N, C, H, W]") && strstr(msg, "got [2, 1, 4, 4]"));
    gim_node r3 = S(3, L(1), L(28), L(28));
    in[0] = &r3;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_PATCHES, 1, in, 2, (double[]){8, 4}), -1);
    in[0] = &x;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_PATCHES, 1, in, 2, (double[]){8, 0}), -1);
    CU_ASSERT(strstr(msg, "stride >= 1") != NULL);
}

static void test_conv2d(void) {
    gim_node x = S(6, L(32), L(6), L(6), L(1), L(8), L(8)), n;
    gim_node *in[3] = {&x};
    /* out k stride pad bias: 8 + 2 - 3 + 1 = 8 */
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 1, in, 5, (double[]){32, 3, 1, 1, 1}), 0);
    HG_SHAPE_IS(&n, 32, 6, 6, 32, 8, 8);
    /* stride 2: (8 + 2 - 3)/2 + 1 = 4 */
    gim_node h = S(6, L(32), L(6), L(6), L(32), L(8), L(8));
    in[0] = &h;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 1, in, 5, (double[]){64, 3, 2, 1, 1}), 0);
    HG_SHAPE_IS(&n, 32, 6, 6, 64, 4, 4);
    /* weights and bias checked when present */
    gim_node w = S(4, L(64), L(32), L(3), L(3)), b = S(1, L(64)), wbad = S(4, L(64), L(31), L(3), L(3));
    in[1] = &w;
    in[2] = &b;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 3, in, 5, (double[]){64, 3, 2, 1, 1}), 0);
    in[1] = &wbad;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 3, in, 5, (double[]){64, 3, 2, 1, 1}), -1);
    CU_ASSERT(strstr(msg, "weights of shape [64, 32, 3, 3]") && strstr(msg, "got [64, 31, 3, 3]"));
    /* the language spec's example */
    gim_node tiny = S(6, L(32), L(6), L(6), L(1), L(2), L(2));
    in[0] = &tiny;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 1, in, 5, (double[]){4, 3, 1, 0, 1}), -1);
    CU_ASSERT(strstr(msg, "conv2d expects [..., C, H, W] with H >= k after padding") != NULL);
    CU_ASSERT(strstr(msg, "; got [32, 6, 6, 1, 2, 2]") != NULL);
    /* the same input is fine with padding 1: 2 + 2 - 3 + 1 = 2 */
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 1, in, 5, (double[]){4, 3, 1, 1, 1}), 0);
    HG_SHAPE_IS(&n, 32, 6, 6, 4, 2, 2);
    gim_node r2 = S(2, L(8), L(8));
    in[0] = &r2;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 1, in, 5, (double[]){4, 3, 1, 1, 1}), -1);
    CU_ASSERT(strstr(msg, "rank >= 3") != NULL);
    in[0] = &x;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 1, in, 5, (double[]){4, 0, 1, 1, 1}), -1);
    CU_ASSERT(strstr(msg, "k >= 1") != NULL);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D, 1, in, 5, (double[]){4, 3, 1, -1, 1}), -1);
    CU_ASSERT(strstr(msg, "pad >= 0") != NULL);
}

static void test_conv1d(void) {
    gim_node x = S(3, L(8), L(1), L(20480)), n;
    gim_node *in[3] = {&x};
    /* (20480 + 4 - 10)/5 + 1 = 4095 */
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV1D, 1, in, 5, (double[]){512, 10, 5, 2, 1}), 0);
    HG_SHAPE_IS(&n, 8, 512, 4095);
    gim_node w = S(3, L(512), L(1), L(10));
    in[1] = &w;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV1D, 2, in, 5, (double[]){512, 10, 5, 2, 0}), 0);
    gim_node t = S(1, L(5));
    in[0] = &t;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV1D, 1, in, 5, (double[]){4, 3, 1, 0, 1}), -1);
    CU_ASSERT(strstr(msg, "conv1d expects [..., C, T]") != NULL);
    gim_node shortt = S(2, L(3), L(2));
    in[0] = &shortt;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV1D, 1, in, 5, (double[]){4, 3, 1, 0, 1}), -1);
    CU_ASSERT(strstr(msg, "T >= k") && strstr(msg, "got [3, 2]"));
}

static void test_linear(void) {
    gim_node x = S(3, L(4), L(7), L(10)), n;
    gim_node *in[3] = {&x};
    CU_ASSERT_EQUAL(run(&n, GIM_OP_LINEAR, 1, in, 2, (double[]){3, 1}), 0);
    HG_SHAPE_IS(&n, 4, 7, 3);
    gim_node w = S(2, L(3), L(10)), b = S(1, L(3)), bbad = S(1, L(4));
    in[1] = &w;
    in[2] = &bbad;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_LINEAR, 3, in, 2, (double[]){3, 1}), -1);
    CU_ASSERT(strstr(msg, "bias") != NULL);
    in[2] = &b;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_LINEAR, 3, in, 2, (double[]){3, 1}), 0);
    gim_node scalar = S(0);
    in[0] = &scalar;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_LINEAR, 1, in, 2, (double[]){3, 1}), -1);
    in[0] = &x;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_LINEAR, 1, in, 2, (double[]){0, 1}), -1);
}

static void test_elementwise(void) {
    gim_op ops[] = {GIM_OP_RELU, GIM_OP_TANH, GIM_OP_SIGMOID, GIM_OP_LEAKY_RELU, GIM_OP_SCALE, GIM_OP_SHIFT,
                    GIM_OP_GRADIENT_BLOCK};
    gim_node x = S(3, L(2), L(3), L(5)), n;
    gim_node *in[] = {&x};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        CU_ASSERT_EQUAL(run(&n, ops[i], 1, in, 1, (double[]){0.5}), 0);
        HG_SHAPE_IS(&n, 2, 3, 5);
    }
}

static void test_binary(void) {
    gim_node a = S(2, L(4), L(6)), b = S(2, L(4), L(6)), c = S(2, L(6), L(4)), n;
    gim_op ops[] = {GIM_OP_ADD, GIM_OP_SUB, GIM_OP_MUL};
    for (int i = 0; i < 3; i++) {
        gim_node *in[] = {&a, &b};
        CU_ASSERT_EQUAL(run(&n, ops[i], 2, in, 0, NULL), 0);
        HG_SHAPE_IS(&n, 4, 6);
        gim_node *bad[] = {&a, &c};
        CU_ASSERT_EQUAL(run(&n, ops[i], 2, bad, 0, NULL), -1);
        CU_ASSERT(strstr(msg, "same shape; got [4, 6] and [6, 4]") != NULL);
        CU_ASSERT(strncmp(msg, gim_op_name(ops[i]), strlen(gim_op_name(ops[i]))) == 0);
    }
}

static void test_pools(void) {
    gim_node x = S(4, L(1), L(3), L(7), L(7)), n;
    gim_node *in[] = {&x};
    /* stride 0 -> k = 2: (7 - 2)/2 + 1 = 3, and the attr is normalised */
    CU_ASSERT_EQUAL(run(&n, GIM_OP_AVGPOOL2D, 1, in, 2, (double[]){2, 0}), 0);
    HG_SHAPE_IS(&n, 1, 3, 3, 3);
    CU_ASSERT_EQUAL(gim_attr_i(&n, 1), 2);
    /* k 3 stride 1: 7 - 3 + 1 = 5 */
    CU_ASSERT_EQUAL(run(&n, GIM_OP_MAXPOOL2D, 1, in, 2, (double[]){3, 1}), 0);
    HG_SHAPE_IS(&n, 1, 3, 5, 5);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_MAXPOOL2D, 1, in, 2, (double[]){8, 1}), -1);
    CU_ASSERT(strstr(msg, "maxpool2d expects [..., C, H, W] with H, W >= k") && strstr(msg, "got [1, 3, 7, 7]"));
}

static void test_means(void) {
    gim_node x = S(6, L(2), L(6), L(6), L(32), L(8), L(8)), n;
    gim_node *in[] = {&x};
    CU_ASSERT_EQUAL(run(&n, GIM_OP_SPATIAL_MEAN, 1, in, 0, NULL), 0);
    HG_SHAPE_IS(&n, 2, 6, 6, 32);
    gim_node r2 = S(2, L(8), L(8));
    in[0] = &r2;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_SPATIAL_MEAN, 1, in, 0, NULL), -1);
    gim_node y = S(3, L(2), L(3), L(4));
    in[0] = &y;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_MEAN, 1, in, 1, (double[]){-1}), 0);
    HG_SHAPE_IS(&n, 2, 3);
    CU_ASSERT_EQUAL(gim_attr_i(&n, 0), 2);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_MEAN, 1, in, 1, (double[]){0}), 0);
    HG_SHAPE_IS(&n, 3, 4);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_MEAN, 1, in, 1, (double[]){3}), -1);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_MEAN, 1, in, 1, (double[]){-4}), -1);
}

static void test_reshape_transpose(void) {
    gim_node x = S(3, L(2), L(3), L(4)), n;
    gim_node *in[] = {&x};
    memset(&n, 0, sizeof n);
    n.op = GIM_OP_RESHAPE;
    n.n_in = 1;
    n.in[0] = &x;
    n.shape = (gim_shape){.rank = 2, .d = {-1, 4}};
    CU_ASSERT_EQUAL(gim_infer_shape(&n, msg, sizeof msg), 0);
    HG_SHAPE_IS(&n, 6, 4);
    n.shape = (gim_shape){.rank = 2, .d = {5, -1}};
    CU_ASSERT_EQUAL(gim_infer_shape(&n, msg, sizeof msg), -1);
    n.shape = (gim_shape){.rank = 2, .d = {7, 4}};
    CU_ASSERT_EQUAL(gim_infer_shape(&n, msg, sizeof msg), -1);
    CU_ASSERT(strstr(msg, "same number of elements") != NULL);
    n.shape = (gim_shape){.rank = 3, .d = {-1, -1, 4}};
    CU_ASSERT_EQUAL(gim_infer_shape(&n, msg, sizeof msg), -1);

    CU_ASSERT_EQUAL(run(&n, GIM_OP_TRANSPOSE, 1, in, 2, (double[]){1, -1}), 0);
    HG_SHAPE_IS(&n, 2, 4, 3);
    CU_ASSERT_EQUAL(gim_attr_i(&n, 1), 2);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_TRANSPOSE, 1, in, 2, (double[]){0, 3}), -1);
}

static void test_gru(void) {
    gim_node x = S(3, L(2), L(10), L(5)), n;
    gim_node *in[5] = {&x};
    CU_ASSERT_EQUAL(run(&n, GIM_OP_GRU, 1, in, 1, (double[]){7}), 0);
    HG_SHAPE_IS(&n, 2, 10, 7);
    gim_node wih = S(2, L(21), L(5)), whh = S(2, L(21), L(7)), b = S(1, L(21));
    in[1] = &wih;
    in[2] = &whh;
    in[3] = &b;
    in[4] = &b;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_GRU, 5, in, 1, (double[]){7}), 0);
    in[2] = &wih;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_GRU, 5, in, 1, (double[]){7}), -1);
    CU_ASSERT(strstr(msg, "w_hh") != NULL);
    gim_node r2 = S(2, L(10), L(5));
    in[0] = &r2;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_GRU, 1, in, 1, (double[]){7}), -1);
    CU_ASSERT(strstr(msg, "gru expects [N, T, C]") && strstr(msg, "got [10, 5]"));
}

static void test_infonce(void) {
    gim_node z = S(3, L(4), L(10), L(8)), n;
    gim_node *in[3] = {&z, &z};
    /* steps negatives */
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){3, 16}), 0);
    CU_ASSERT_EQUAL(n.shape.rank, 0);
    gim_node w = S(3, L(3), L(8), L(8));
    in[2] = &w;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 3, in, 2, (double[]){3, 16}), 0);
    /* a context with another width: W is [K, Cz, Cc] */
    gim_node c = S(3, L(4), L(10), L(6)), wc = S(3, L(3), L(8), L(6));
    in[1] = &c;
    in[2] = &wc;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 3, in, 2, (double[]){3, 16}), 0);
    in[2] = &w;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 3, in, 2, (double[]){3, 16}), -1);
    gim_node cbad = S(3, L(4), L(9), L(6));
    in[1] = &cbad;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){3, 16}), -1);
    CU_ASSERT(strstr(msg, "context") && strstr(msg, "[4, 9, 6]"));
    /* the grid form */
    gim_node g = S(4, L(32), L(6), L(6), L(32)), gr = S(4, L(32), L(6), L(5), L(32));
    in[0] = in[1] = &g;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){3, 16}), 0);
    in[0] = in[1] = &gr;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){3, 16}), -1);
    /* steps must leave a target: K < T */
    in[0] = in[1] = &z;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){10, 16}), -1);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){9, 16}), 0);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){3, 0}), -1);
    gim_node flat = S(2, L(4), L(8));
    in[0] = in[1] = &flat;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_INFONCE, 2, in, 2, (double[]){1, 16}), -1);
}

static void test_cross_entropy(void) {
    gim_node logits = S(2, L(4), L(10)), y = S(1, L(4)), y3 = S(1, L(3)), n;
    y.op = GIM_OP_LABELS;
    y.is_int = true;
    y3.is_int = true;
    gim_node *in[] = {&logits, &y};
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CROSS_ENTROPY, 2, in, 0, NULL), 0);
    CU_ASSERT_EQUAL(n.shape.rank, 0);
    in[1] = &y3;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CROSS_ENTROPY, 2, in, 0, NULL), -1);
    gim_node f = S(1, L(4));
    in[1] = &f;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CROSS_ENTROPY, 2, in, 0, NULL), -1);
    CU_ASSERT(strstr(msg, "labels") != NULL);
    gim_node l3 = S(3, L(4), L(10), L(2));
    in[0] = &l3;
    in[1] = &y;
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CROSS_ENTROPY, 2, in, 0, NULL), -1);
}

static void test_too_large(void) {
    /* [2^30, 4] -> linear out 2^12: 2^42 elements */
    gim_node x = S(2, L(1) << 30, L(4)), n;
    gim_node *in[] = {&x};
    CU_ASSERT_EQUAL(run(&n, GIM_OP_LINEAR, 1, in, 2, (double[]){4096, 1}), -1);
    CU_ASSERT(strstr(msg, "tensor too large") != NULL);
    /* a product that overflows int64 is refused, not wrapped */
    gim_shape s = {.rank = 4, .d = {L(1) << 40, L(1) << 40, L(1) << 40, 2}};
    CU_ASSERT_EQUAL(gim_shape_numel_checked(&s), -1);
    gim_shape ok = {.rank = 2, .d = {L(1) << 20, L(1) << 20}};
    CU_ASSERT_EQUAL(gim_shape_numel_checked(&ok), L(1) << 40);
    /* an empty dimension */
    gim_node e = S(2, L(0), L(3));
    CU_ASSERT_EQUAL(gim_infer_shape(&e, msg, sizeof msg), -1);
}

static void test_backward_rules(void) {
    gim_node dy = S(4, L(2), L(8), L(4), L(4)), x = S(4, L(2), L(3), L(8), L(8)), n;
    gim_node *in[7] = {&dy, &x};
    CU_ASSERT_EQUAL(run(&n, GIM_OP_CONV2D_BWD_WEIGHT, 2, in, 4, (double[]){8, 3, 2, 1}), 0);
    HG_SHAPE_IS(&n, 8, 3, 3, 3);
    CU_ASSERT_EQUAL(run(&n, GIM_OP_BIAS_BWD, 1, in, 1, (double[]){1}), 0);
    HG_SHAPE_IS(&n, 8);
    /* gru_bwd packs dx | dw_ih | dw_hh | db_ih | db_hh: 2*10*5 + 21*5 + 21*7 + 21 + 21 */
    gim_node gx = S(3, L(2), L(10), L(5)), gy = S(3, L(2), L(10), L(7)), wih = S(2, L(21), L(5)),
             whh = S(2, L(21), L(7)), b = S(1, L(21));
    gim_node *gin[] = {&gy, &gx, &gy, &wih, &whh, &b, &b};
    CU_ASSERT_EQUAL(run(&n, GIM_OP_GRU_BWD, 7, gin, 1, (double[]){7}), 0);
    HG_SHAPE_IS(&n, 100 + 105 + 147 + 21 + 21);
}

int main(void) {
    static const gim_test tests[] = {
        {"patches", test_patches},
        {"conv2d", test_conv2d},
        {"conv1d", test_conv1d},
        {"linear", test_linear},
        {"elementwise and views", test_elementwise},
        {"add sub mul", test_binary},
        {"pools", test_pools},
        {"spatial_mean and mean", test_means},
        {"reshape and transpose", test_reshape_transpose},
        {"gru", test_gru},
        {"infonce", test_infonce},
        {"cross_entropy", test_cross_entropy},
        {"too large", test_too_large},
        {"backward rules", test_backward_rules},
        {NULL, NULL},
    };
    return gim_run_suite("shapes", tests);
}
