/* Lowering (compiler/lower.c): parameter naming and shapes, each call its own
 * parameters, defaults and keyword arguments, scalar arithmetic, losses, and
 * the errors lowering reports. */
#include <math.h>
#include <string.h>

#include "harness_graph.h"
#include "testutil.h"

static const char *fashion =
    "import \"conv.gim\"\n"
    "model fashion_gim {\n"
    "    input x: [batch, 1, 28, 28]\n"
    "    p  = patches(x, size=8, stride=4)\n"
    "    h1 = conv_pair(p, 32)\n"
    "    infonce(spatial_mean(h1), steps=3, negatives=16)\n"
    "    h2 = conv_pair(gradient_block(h1), 64, stride=2)\n"
    "    infonce(spatial_mean(h2), steps=3, negatives=16)\n"
    "    h3 = conv_pair(gradient_block(h2), 128, stride=2)\n"
    "    infonce(spatial_mean(h3), steps=3, negatives=16)\n"
    "    output spatial_mean(h3)\n"
    "}\n";

/* Compiles src expecting success (prints the diagnostics otherwise). */
static gim_graph *ok(const char *src, int64_t batch) { return hg_ok(src, batch, false, false); }

/* Compiles src expecting errors; returns the messages (heap). */
static char *fails(const char *src) { return hg_fails(src, 4, true, false); }

/* Compiles src expecting errors, one of them containing needle. */
static void fails_with(const char *src, const char *needle) { hg_expect_error(src, 4, true, false, needle); }

static void test_param_names_and_shapes(void) {
    gim_graph *g = ok(fashion, 32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    /* conv_pair.N/conv2d.M/{w,b}: n counts conv_pair calls in the model,
     * m conv2d calls inside that call */
    gim_node *w = hg_find(g, "conv_pair.1/conv2d.1/w");
    HG_SHAPE_IS(w, 32, 1, 3, 3);
    CU_ASSERT_EQUAL(w->op, GIM_OP_PARAM);
    CU_ASSERT_DOUBLE_EQUAL(w->attr[0], 1.0 / 3.0, 1e-12);   /* 1/sqrt(1*3*3) */
    HG_SHAPE_IS(hg_find(g, "conv_pair.1/conv2d.2/w"), 32, 32, 3, 3);
    CU_ASSERT_DOUBLE_EQUAL(hg_find(g, "conv_pair.1/conv2d.2/b")->attr[0], 1.0 / sqrt(288.0), 1e-12);
    HG_SHAPE_IS(hg_find(g, "conv_pair.2/conv2d.1/w"), 64, 32, 3, 3);
    HG_SHAPE_IS(hg_find(g, "conv_pair.3/conv2d.2/w"), 128, 128, 3, 3);
    HG_SHAPE_IS(hg_find(g, "conv_pair.3/conv2d.2/b"), 128);
    /* InfoNCE maps: W [K, C, C], bound 1/sqrt(C) */
    gim_node *W3 = hg_find(g, "infonce.3/w");
    HG_SHAPE_IS(W3, 3, 128, 128);
    CU_ASSERT_DOUBLE_EQUAL(W3->attr[0], 1.0 / sqrt(128.0), 1e-12);
    /* node names and shapes along the way */
    HG_SHAPE_IS(hg_find(g, "patches.1"), 32, 6, 6, 1, 8, 8);
    HG_SHAPE_IS(hg_find(g, "conv_pair.2/conv2d.1"), 32, 6, 6, 64, 4, 4);
    HG_SHAPE_IS(hg_find(g, "conv_pair.3/relu.2"), 32, 6, 6, 128, 2, 2);
    HG_SHAPE_IS(g->output, 32, 6, 6, 128);
    CU_ASSERT_EQUAL(hg_count(g, GIM_OP_PARAM), 15);   /* 3 x (2 convs x 2 + W) */
    /* every node's inputs come earlier (graph order is topological) */
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        CU_ASSERT_EQUAL(n->id, i);
        for (int j = 0; j < n->n_in; j++) CU_ASSERT(n->in[j]->id < n->id);
    }
    gim_graph_free(g);
}

static void test_each_call_its_own_params(void) {
    gim_graph *g = ok("def block(x, c) {\n"
                      "    return relu(linear(x, c))\n"
                      "}\n"
                      "def twice(x) {\n"
                      "    return block(block(x, 4), 4)\n"
                      "}\n"
                      "model m {\n"
                      "    input x: [batch, 4]\n"
                      "    a = twice(x)\n"
                      "    b = twice(a)\n"
                      "    output b\n"
                      "}\n",
                      2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(hg_count(g, GIM_OP_LINEAR), 4);
    CU_ASSERT_EQUAL(hg_count(g, GIM_OP_PARAM), 8);
    const char *names[] = {"twice.1/block.1/linear.1/w", "twice.1/block.2/linear.1/w", "twice.2/block.1/linear.1/w",
                           "twice.2/block.2/linear.1/b"};
    for (int i = 0; i < 4; i++) {
        gim_node *p = hg_find(g, names[i]);
        CU_ASSERT_PTR_NOT_NULL(p);
        for (int j = 0; j < i; j++) CU_ASSERT(p != hg_find(g, names[j]));
    }
    /* the inner call's output feeds the outer call */
    gim_node *outer = hg_find(g, "twice.1/block.2/linear.1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(outer);
    CU_ASSERT_PTR_EQUAL(outer->in[0], hg_find(g, "twice.1/block.1/relu.1"));
    gim_graph_free(g);
}

static void test_defaults_and_kwargs(void) {
    gim_graph *g = ok("def f(x, c, k=3, wide=c * 2) {\n"
                      "    return conv2d(x, wide, k, pad=k / 2 - 0.5)\n"
                      "}\n"
                      "model m {\n"
                      "    input x: [batch, 2, 9, 9]\n"
                      "    a = f(x, 4)\n"
                      "    b = f(x, c=1, k=5)\n"
                      "    c = conv2d(k=1, out=6, x=x, bias=false)\n"
                      "    output a\n"
                      "}\n",
                      1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    gim_node *a = hg_find(g, "f.1/conv2d.1"), *b = hg_find(g, "f.2/conv2d.1"), *c = hg_find(g, "conv2d.1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    /* a: out = 4*2, k 3, pad 3/2 - 0.5 = 1 -> 9x9 kept */
    CU_ASSERT_EQUAL(gim_attr_i(a, 0), 8);
    CU_ASSERT_EQUAL(gim_attr_i(a, 1), 3);
    CU_ASSERT_EQUAL(gim_attr_i(a, 3), 1);
    HG_SHAPE_IS(a, 1, 8, 9, 9);
    /* b: out 2, k 5, pad 2 */
    HG_SHAPE_IS(b, 1, 2, 9, 9);
    /* c: keywords in any order; no bias -> two inputs; default stride 1 */
    CU_ASSERT_EQUAL(c->n_in, 2);
    CU_ASSERT_EQUAL(gim_attr_i(c, 2), 1);
    HG_SHAPE_IS(c, 1, 6, 9, 9);
    CU_ASSERT_PTR_NULL(hg_find(g, "conv2d.1/b"));
    gim_graph_free(g);
}

static void test_scalar_ops(void) {
    gim_graph *g = ok("model m {\n"
                      "    input x: [batch, 3]\n"
                      "    a = x * 0.5\n"
                      "    b = 2 * x\n"
                      "    c = x + 1\n"
                      "    d = x - 2\n"
                      "    e = x / 4\n"
                      "    f = 1 - x\n"
                      "    n = -x\n"
                      "    s = a + b - c * d\n"
                      "    k = 3 * 2 - 1\n"
                      "    output linear(s, k)\n"
                      "}\n",
                      2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    gim_node *n;
    CU_ASSERT((n = hg_find(g, "scale.1")) && n->attr[0] == 0.5);
    CU_ASSERT((n = hg_find(g, "scale.2")) && n->attr[0] == 2.0);
    CU_ASSERT((n = hg_find(g, "shift.1")) && n->attr[0] == 1.0);
    CU_ASSERT((n = hg_find(g, "shift.2")) && n->attr[0] == -2.0);
    CU_ASSERT((n = hg_find(g, "scale.3")) && n->attr[0] == 0.25);
    /* 1 - x = shift(scale(x, -1), 1) */
    gim_node *neg = hg_find(g, "scale.4"), *one = hg_find(g, "shift.3");
    CU_ASSERT(neg && neg->attr[0] == -1.0 && one && one->attr[0] == 1.0 && one->in[0] == neg);
    CU_ASSERT((n = hg_find(g, "scale.5")) && n->attr[0] == -1.0);
    /* tensor with tensor: add, mul, sub in precedence order */
    CU_ASSERT_EQUAL(hg_count(g, GIM_OP_ADD), 1);
    CU_ASSERT_EQUAL(hg_count(g, GIM_OP_SUB), 1);
    CU_ASSERT_EQUAL(hg_count(g, GIM_OP_MUL), 1);
    gim_node *sub = hg_find(g, "sub.1");
    CU_ASSERT(sub && sub->in[0]->op == GIM_OP_ADD && sub->in[1]->op == GIM_OP_MUL);
    /* compile-time arithmetic: linear(s, 5) */
    HG_SHAPE_IS(g->output, 2, 5);
    gim_graph_free(g);
}

static void test_losses_and_inputs(void) {
    gim_graph *g = ok("model m {\n"
           "    input x: [batch, 2, 16]\n"
           "    input y: labels[batch]\n"
           "    h = relu(conv1d(x, 8, k=3, pad=1))\n"
           "    z = transpose(h, 1, -1)\n"
           "    infonce(z, steps=2, negatives=5)\n"
           "    c = gru(gradient_block(z), 6)\n"
           "    infonce(gradient_block(z), steps=4, context=c)\n"
           "    r = reshape(c, [batch, -1])\n"
           "    cross_entropy(linear(r, 3), y)\n"
           "    output c\n"
           "}\n",
           4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    gim_node *y = hg_find(g, "y");
    CU_ASSERT(y && y->op == GIM_OP_LABELS && y->is_int);
    HG_SHAPE_IS(y, 4);
    CU_ASSERT_EQUAL(g->inputs.len, 2);
    CU_ASSERT_EQUAL(g->losses.len, 3);
    gim_node *l1 = hg_find(g, "infonce.1"), *l2 = hg_find(g, "infonce.2");
    CU_ASSERT_PTR_NOT_NULL_FATAL(l1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l2);
    /* without context= z is its own context; W [K, Cz, Cc] is the third input */
    CU_ASSERT_PTR_EQUAL(l1->in[1], l1->in[0]);
    CU_ASSERT_EQUAL(l1->n_in, 3);
    HG_SHAPE_IS(l1->in[2], 2, 8, 8);
    CU_ASSERT_EQUAL(gim_attr_i(l1, 1), 5);
    CU_ASSERT_PTR_EQUAL(l2->in[1], hg_find(g, "gru.1"));
    HG_SHAPE_IS(l2->in[2], 4, 8, 6);
    CU_ASSERT_DOUBLE_EQUAL(l2->in[2]->attr[0], 1.0 / sqrt(6.0), 1e-12);
    /* random streams 1, 2, ... per infonce in source order */
    CU_ASSERT_EQUAL(l1->rng_stream, 1);
    CU_ASSERT_EQUAL(l2->rng_stream, 2);
    /* transpose axis -1 normalised to 2 */
    gim_node *t = hg_find(g, "transpose.1");
    CU_ASSERT(t && gim_attr_i(t, 1) == 2);
    HG_SHAPE_IS(t, 4, 16, 8);
    /* gru parameters */
    HG_SHAPE_IS(hg_find(g, "gru.1/w_ih"), 18, 8);
    HG_SHAPE_IS(hg_find(g, "gru.1/w_hh"), 18, 6);
    HG_SHAPE_IS(hg_find(g, "gru.1/b_ih"), 18);
    HG_SHAPE_IS(hg_find(g, "gru.1/b_hh"), 18);
    /* reshape with batch and -1: [4, 16*6] */
    HG_SHAPE_IS(hg_find(g, "reshape.1"), 4, 96);
    gim_node *ce = hg_find(g, "cross_entropy.1");
    CU_ASSERT(ce && ce->in[1] == y && ce->shape.rank == 0);
    CU_ASSERT(ce && ce->rng_stream == 3);
    gim_graph_free(g);
}

static void test_rebinding_and_normalised_attrs(void) {
    gim_graph *g = ok("model m {\n"
                      "    input x: [batch, 3, 9, 9]\n"
                      "    h = avgpool2d(x, 3)\n"
                      "    h = maxpool2d(h, 2, stride=1)\n"
                      "    h = mean(h, -3)\n"
                      "    output h\n"
                      "}\n",
                      2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    gim_node *a = hg_find(g, "avgpool2d.1"), *m = hg_find(g, "mean.1");
    CU_ASSERT(a && gim_attr_i(a, 1) == 3);   /* stride 0 -> k */
    HG_SHAPE_IS(a, 2, 3, 3, 3);
    CU_ASSERT(m && gim_attr_i(m, 0) == 1);   /* -3 of rank 4 -> 1 */
    HG_SHAPE_IS(g->output, 2, 2, 2);
    gim_graph_free(g);
}

static void test_errors(void) {
    char *m;
    fails_with("def f(x) {\n    return f(relu(x))\n}\nmodel m {\n    input x: [batch, 3]\n    output f(x)\n}\n",
               "test.gim:2:12: error: 'f' calls itself; recursion is not supported");
    fails_with("model m {\n    input x: [batch, 3]\n    output linear(x, 2, bais=false)\n}\n",
               "linear has no argument 'bais'; did you mean 'bias'?");
    fails_with("model m {\n    input x: [batch, 3]\n    output linear(x, 2, out=3)\n}\n",
               "argument 'out' of linear given twice");
    fails_with("model m {\n    input x: [batch, 3]\n    output linear(x)\n}\n", "linear: missing argument 'out'");
    fails_with("model m {\n    input x: [batch, 3]\n    h = infonce(x)\n    output x\n}\n",
               "infonce is a loss; it must stand alone as a statement");
    fails_with("model m {\n    input x: [batch, 3]\n    relu(x)\n    output x\n}\n",
               "3:5: error: expression result unused; only a loss may stand alone");
    fails_with("def f(x) {\n    return 3\n}\nmodel m {\n    input x: [batch, 3, 4]\n    output f(x)\n}\n",
               "output expects a tensor; got an integer");
    fails_with("model m {\n    input x: [batch, 3]\n    output relu(h)\n}\n", "unknown name 'h'");
    fails_with("model m {\n    input x: [batch, 3]\n    output lineer(x, 2) + relu(x) * \"s\"\n}\n",
               "unknown function 'lineer'; did you mean 'linear'?");
    /* independent errors are all reported; consequences of one are not */
    m = fails("model m {\n    input x: [batch, 3]\n    a = relu(y)\n    b = a + a\n    c = tanh(x, 1)\n"
              "    d = linear(x, 1.5)\n    output c\n}\n");
    CU_ASSERT(strstr(m, "unknown name 'y'") && strstr(m, "tanh takes at most 1 argument") &&
              strstr(m, "argument 'out' of linear expects an integer; got a float"));
    CU_ASSERT(strstr(m, "add") == NULL);
    gim_free(m);
    fails_with("model m {\n    input y: labels[batch]\n    output relu(y)\n}\n",
               "labels (int32) can only be the labels of cross_entropy");
    /* calls expanding past the node budget stop with one error, quickly */
    m = fails("def f0(x) {\n    return relu(x)\n}\n"
              "def f1(x) {\n    return f0(f0(f0(f0(f0(f0(f0(f0(x))))))))\n}\n"
              "def f2(x) {\n    return f1(f1(f1(f1(f1(f1(f1(f1(x))))))))\n}\n"
              "def f3(x) {\n    return f2(f2(f2(f2(f2(f2(f2(f2(x))))))))\n}\n"
              "def f4(x) {\n    return f3(f3(f3(f3(f3(f3(f3(f3(x))))))))\n}\n"
              "def f5(x) {\n    return f4(f4(f4(f4(f4(f4(f4(f4(x))))))))\n}\n"
              "def f6(x) {\n    return f5(f5(f5(f5(f5(f5(f5(f5(x))))))))\n}\n"
              "def f7(x) {\n    return f6(f6(f6(f6(f6(f6(f6(f6(x))))))))\n}\n"
              "model m {\n    input x: [batch, 3]\n    output f7(f7(f7(x)))\n}\n");
    CU_ASSERT(strstr(m, "ops after inlining calls") != NULL);
    int n_errors = 0;
    for (const char *q = m; (q = strstr(q, "error:")); q++) n_errors++;
    CU_ASSERT_EQUAL(n_errors, 1);
    gim_free(m);
    /* expressions nested deeply through many inlined calls stop with an
     * error, not a stack overflow: 60 defs each 200 calls deep */
    {
        gim_sb sb = {0};
        for (int i = 0; i < 60; i++) {
            gim_sb_printf(&sb, "def f%d(x) {\n    return ", i);
            for (int k = 0; k < 200; k++) gim_sb_puts(&sb, "relu(");
            if (i) gim_sb_printf(&sb, "f%d(x)", i - 1);
            else gim_sb_puts(&sb, "x");
            for (int k = 0; k < 200; k++) gim_sb_putc(&sb, ')');
            gim_sb_puts(&sb, "\n}\n");
        }
        gim_sb_puts(&sb, "model m {\n    input x: [batch, 3]\n    output f59(x)\n}\n");
        fails_with(sb.buf, "expressions nested more than 1500 deep after inlining calls");
        gim_sb_free(&sb);
    }
    fails_with("def relu(x) {\n    return x * 2\n}\nmodel m {\n    input x: [batch, 3]\n    output relu(x)\n}\n",
               "def 'relu' has the name of a built-in op");
    fails_with("model m {\n    input x: [0, 3]\n    output x\n}\n", "a dimension must be a positive integer");
    fails_with("model m {\n    input x: [batch, 1048576, 1048576]\n    output relu(x)\n}\n", "tensor too large");
}

static void test_unused_values_warn(void) {
    char *m;
    gim_graph *g = hg_compile("model m {\n    input x: [batch, 3]\n    input y: labels[batch]\n"
                              "    a = relu(linear(x, 4))\n    b = tanh(x)\n    output a\n}\n",
                              2, false, false, &m);
    CU_ASSERT_PTR_NOT_NULL(g);
    /* one warning per dead end: tanh (not the chain behind it), and y */
    CU_ASSERT(strstr(m, "test.gim:5:9: warning: the result of tanh is never used") != NULL);
    CU_ASSERT(strstr(m, "test.gim:3:11: warning: input 'y' is never used") != NULL);
    CU_ASSERT(strstr(m, "relu") == NULL && strstr(m, "linear") == NULL);
    gim_graph_free(g);
    gim_free(m);
}

/* Every def of stdlib/ lowers to the shapes its comments promise. */
static void test_stdlib_defs(void) {
    gim_graph *g = ok("import \"resnet.gim\"\n"
                      "import \"cpc_audio.gim\"\n"
                      "import \"conv.gim\"\n"
                      "model m {\n"
                      "    input x: [batch, 64, 8, 8]\n"
                      "    input a: [batch, 1, 20480]\n"
                      "    b1 = bottleneck(x, 16)\n"
                      "    b2 = bottleneck_proj(x, 8, stride=2)\n"
                      "    b3 = res_stage(x, 32, stride=2)\n"
                      "    c = conv_pair(x, 16, stride=2)\n"
                      "    e = cpc_encoder(a)\n"
                      "    f = frames(e)\n"
                      "    z = cpc_context(f)\n"
                      "    output relu(b1)\n"
                      "}\n",
                      2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    HG_SHAPE_IS(hg_find(g, "bottleneck.1/add.1"), 2, 64, 8, 8);
    HG_SHAPE_IS(hg_find(g, "bottleneck_proj.1/add.1"), 2, 32, 4, 4);
    /* the projection: a 1x1 conv with the block's stride, no bias */
    gim_node *proj = hg_find(g, "bottleneck_proj.1/conv2d.4");
    CU_ASSERT(proj && gim_attr_i(proj, 1) == 1 && gim_attr_i(proj, 2) == 2 && proj->n_in == 2);
    HG_SHAPE_IS(hg_find(g, "res_stage.1/bottleneck.1/add.1"), 2, 128, 4, 4);
    HG_SHAPE_IS(hg_find(g, "conv_pair.1/relu.2"), 2, 16, 4, 4);
    /* CPC: 20480 samples -> 4095, 1023, 512, 257, 128 frames of 512 */
    HG_SHAPE_IS(hg_find(g, "cpc_encoder.1/cpc_conv.1/relu.1"), 2, 512, 4095);
    HG_SHAPE_IS(hg_find(g, "cpc_encoder.1/cpc_conv.2/relu.1"), 2, 512, 1023);
    HG_SHAPE_IS(hg_find(g, "cpc_encoder.1/cpc_conv.3/relu.1"), 2, 512, 512);
    HG_SHAPE_IS(hg_find(g, "cpc_encoder.1/cpc_conv.4/relu.1"), 2, 512, 257);
    HG_SHAPE_IS(hg_find(g, "cpc_encoder.1/cpc_conv.5/relu.1"), 2, 512, 128);
    HG_SHAPE_IS(hg_find(g, "frames.1/transpose.1"), 2, 128, 512);
    HG_SHAPE_IS(hg_find(g, "cpc_context.1/gru.1"), 2, 128, 256);
    HG_SHAPE_IS(hg_find(g, "cpc_encoder.1/cpc_conv.1/conv1d.1/w"), 512, 1, 10);
    gim_graph_free(g);
}

/* conv2d(..., mask="A"|"B") reads its weight parameter through one
 * conv2d_mask node (attr: the mask), which partition puts in the module of
 * the convolution, not in the first; no mask, no such node. The stdlib's
 * pixelcnn_context keeps the grid's shape. */
static void test_masked_conv(void) {
    const char *src = "import \"pixelcnn.gim\"\n"
                      "import \"conv.gim\"\n"
                      "model m {\n"
                      "    input x: [batch, 1, 16, 16]\n"
                      "    h = conv_pair(patches(x, size=6, stride=2), 8)\n"
                      "    infonce(spatial_mean(h), steps=2)\n"
                      "    z = spatial_mean(conv_pair(gradient_block(h), 8))\n"
                      "    a = conv2d(transpose(z, 1, 3), 4, k=5, pad=2, mask=\"A\")\n"
                      "    c = pixelcnn_context(z, 6)\n"
                      "    infonce(z, steps=2, context=c)\n"
                      "    output a\n"
                      "}\n";
    gim_graph *g = hg_ok(src, 2, true, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(hg_count(g, GIM_OP_CONV2D_MASK), 4);   /* a, and three in pixelcnn_context */
    gim_node *a = hg_find(g, "conv2d.1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(gim_attr_i(a, GIM_CONV2D_MASK_ATTR), GIM_MASK_A);
    gim_node *m = a->in[1];
    CU_ASSERT_EQUAL(m->op, GIM_OP_CONV2D_MASK);
    CU_ASSERT_EQUAL(gim_attr_i(m, 0), GIM_MASK_A);
    CU_ASSERT_STRING_EQUAL(m->name, "conv2d.1/w_masked");
    CU_ASSERT_EQUAL(m->in[0], hg_find(g, "conv2d.1/w"));
    HG_SHAPE_IS(m, 4, 8, 5, 5);
    CU_ASSERT_EQUAL(m->module, 1);
    CU_ASSERT_EQUAL(m->in[0]->module, 1);
    gim_node *b = hg_find(g, "pixelcnn_context.1/conv2d.2");
    CU_ASSERT(b && b->in[1]->op == GIM_OP_CONV2D_MASK && gim_attr_i(b->in[1], 0) == GIM_MASK_B);
    HG_SHAPE_IS(hg_find(g, "pixelcnn_context.1/transpose.4"), 2, 6, 6, 6);
    /* unmasked convolutions read their parameter directly */
    CU_ASSERT_EQUAL(hg_find(g, "conv_pair.1/conv2d.1")->in[1]->op, GIM_OP_PARAM);
    gim_graph_free(g);
}

int main(void) {
    static const gim_test tests[] = {
        {"param names and shapes", test_param_names_and_shapes},
        {"each call its own params", test_each_call_its_own_params},
        {"defaults and kwargs", test_defaults_and_kwargs},
        {"scalar ops", test_scalar_ops},
        {"losses and inputs", test_losses_and_inputs},
        {"rebinding and normalised attrs", test_rebinding_and_normalised_attrs},
        {"errors", test_errors},
        {"unused values warn", test_unused_values_warn},
        {"stdlib defs", test_stdlib_defs},
        {"masked conv2d", test_masked_conv},
        {NULL, NULL},
    };
    return gim_run_suite("lower", tests);
}
