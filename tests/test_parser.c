/* The parser: the AST of every construct, imports, and the checks made on
 * whole files and programs. */
#include <stdlib.h>
#include <string.h>

#include "gim_lang.h"
#include "testutil.h"

static gim_arena *arena;
static gim_diag diag;
static char *diag_buf;
static size_t diag_size;
static FILE *diag_out;

/* Each parse starts with fresh diagnostics, captured in diag_buf. */
static void reset_diag(void) {
    if (diag_out) {
        gim_diag_release(&diag);
        fclose(diag_out);
        free(diag_buf);
    }
    diag_buf = NULL;
    diag_out = open_memstream(&diag_buf, &diag_size);
    gim_diag_init(&diag, diag_out);
}

static const char *diag_text(void) {
    fflush(diag_out);
    return diag_buf ? diag_buf : "";
}

static gim_program *parse(const char *text) {
    reset_diag();
    return gim_parse_program_text(&diag, arena, "t.gim", text, strlen(text), "/nonexistent");
}

/* A program that must parse without errors. */
static gim_program *parse_ok(const char *text) {
    gim_program *p = parse(text);
    if (diag.n_errors) fprintf(stderr, "\nunexpected errors:\n%s", diag_text());
    CU_ASSERT_EQUAL(diag.n_errors, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static char *print_program(const gim_program *p) {
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    gim_ast_print(out, p);
    fclose(out);
    return buf;
}

/* The first statement of the model, which must exist. */
static gim_stmt *model_stmt(gim_program *p, int i) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(p->model);
    CU_ASSERT_FATAL(i < p->model->n_body);
    return &p->model->body[i];
}

static const char *fashion =
    "# models/fashion_gim.gim\n"
    "import \"conv.gim\"                    # found next to the file, then in stdlib/\n"
    "\n"
    "model fashion_gim {\n"
    "    input x: [batch, 1, 28, 28]      # `batch` is bound at compile time\n"
    "\n"
    "    p  = patches(x, size=8, stride=4)\n"
    "\n"
    "    h1 = conv_pair(p, 32)                    # module 1\n"
    "    infonce(spatial_mean(h1), steps=3, negatives=16)\n"
    "\n"
    "    h2 = conv_pair(gradient_block(h1), 64, stride=2)    # module 2\n"
    "    infonce(spatial_mean(h2), steps=3, negatives=16)\n"
    "\n"
    "    h3 = conv_pair(gradient_block(h2), 128, stride=2)   # module 3\n"
    "    infonce(spatial_mean(h3), steps=3, negatives=16)\n"
    "\n"
    "    output spatial_mean(h3)\n"
    "}\n"
    "\n"
    "train {\n"
    "    dataset   \"fashion-mnist\"        # a name the runtime knows, or a path\n"
    "    batch     32\n"
    "    epochs    1\n"
    "    optimizer adam(lr=1e-3)\n"
    "    schedule  simultaneous           # simultaneous | sequential | async\n"
    "    seed      0\n"
    "}\n";

static const char *conv =
    "# stdlib/conv.gim\n"
    "# Two 3x3 convolutions with ReLU; the first may downsample.\n"
    "def conv_pair(x, channels, stride=1) {\n"
    "    h = relu(conv2d(x, channels, k=3, stride=stride, pad=1))\n"
    "    return relu(conv2d(h, channels, k=3, pad=1))\n"
    "}\n";

/* The two files of the language spec, on disk, the import found next to
 * the model. */
static void test_spec_example(void) {
    gim_tmpfile("conv.gim", conv, strlen(conv));
    const char *path = gim_tmpfile("fashion_gim.gim", fashion, strlen(fashion));
    reset_diag();
    gim_program *p = gim_parse_program(&diag, arena, path, "/nonexistent");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(diag.n_errors, 0);
    CU_ASSERT_EQUAL_FATAL(p->n_defs, 1);
    gim_def *d = p->defs[0];
    CU_ASSERT_STRING_EQUAL(d->name, "conv_pair");
    CU_ASSERT_EQUAL(d->loc.line, 3);
    CU_ASSERT_EQUAL(d->loc.col, 5);
    CU_ASSERT_PTR_NOT_NULL(strstr(d->loc.src->path, "conv.gim"));
    CU_ASSERT_EQUAL(d->n_body, 2);
    CU_ASSERT_EQUAL(d->body[1].kind, GIM_STMT_RETURN);

    CU_ASSERT_PTR_NOT_NULL_FATAL(p->model);
    CU_ASSERT_STRING_EQUAL(p->model->name, "fashion_gim");
    CU_ASSERT_EQUAL(p->model->n_body, 9);
    gim_stmt_kind kinds[] = {GIM_STMT_INPUT, GIM_STMT_ASSIGN, GIM_STMT_ASSIGN, GIM_STMT_EXPR, GIM_STMT_ASSIGN,
                             GIM_STMT_EXPR, GIM_STMT_ASSIGN, GIM_STMT_EXPR, GIM_STMT_OUTPUT};
    for (int i = 0; i < 9; i++) CU_ASSERT_EQUAL(p->model->body[i].kind, kinds[i]);

    /* h2 = conv_pair(gradient_block(h1), 64, stride=2) on line 12 */
    gim_stmt *s = &p->model->body[4];
    CU_ASSERT_STRING_EQUAL(s->name, "h2");
    CU_ASSERT_EQUAL(s->loc.line, 12);
    CU_ASSERT_EQUAL(s->loc.col, 5);
    gim_expr *call = s->value;
    CU_ASSERT_EQUAL_FATAL(call->kind, GIM_EXPR_CALL);
    CU_ASSERT_STRING_EQUAL(call->name, "conv_pair");
    CU_ASSERT_EQUAL(call->loc.col, 10);
    CU_ASSERT_EQUAL_FATAL(call->n_args, 3);
    CU_ASSERT_PTR_NULL(call->args[0].name);
    CU_ASSERT_EQUAL(call->args[0].value->kind, GIM_EXPR_CALL);
    CU_ASSERT_STRING_EQUAL(call->args[0].value->name, "gradient_block");
    CU_ASSERT_EQUAL(call->args[1].value->kind, GIM_EXPR_INT);
    CU_ASSERT_EQUAL(call->args[1].value->ival, 64);
    CU_ASSERT_STRING_EQUAL(call->args[2].name, "stride");
    CU_ASSERT_EQUAL(call->args[2].name_loc.col, 44);
    CU_ASSERT_EQUAL(call->args[2].value->ival, 2);

    CU_ASSERT(p->has_train);
    CU_ASSERT_EQUAL(p->train_loc.line, 21);
    CU_ASSERT_EQUAL_FATAL(p->n_train, 6);
    const char *keys[] = {"dataset", "batch", "epochs", "optimizer", "schedule", "seed"};
    for (int i = 0; i < 6; i++) CU_ASSERT_STRING_EQUAL(p->train[i].key, keys[i]);
    CU_ASSERT_EQUAL(p->train[0].value->kind, GIM_EXPR_STRING);
    CU_ASSERT_STRING_EQUAL(p->train[0].value->sval, "fashion-mnist");
    CU_ASSERT_EQUAL(p->train[1].value->ival, 32);
    gim_expr *adam = p->train[3].value;
    CU_ASSERT_EQUAL_FATAL(adam->kind, GIM_EXPR_CALL);
    CU_ASSERT_STRING_EQUAL(adam->name, "adam");
    CU_ASSERT_EQUAL_FATAL(adam->n_args, 1);
    CU_ASSERT_STRING_EQUAL(adam->args[0].name, "lr");
    CU_ASSERT_EQUAL(adam->args[0].value->kind, GIM_EXPR_FLOAT);
    CU_ASSERT_DOUBLE_EQUAL(adam->args[0].value->fval, 1e-3, 1e-18);
    CU_ASSERT_EQUAL(p->train[4].value->kind, GIM_EXPR_NAME);
    CU_ASSERT_STRING_EQUAL(p->train[4].value->name, "simultaneous");
}

static void test_def_defaults(void) {
    gim_program *p = parse_ok("def f(a, b=2, c=-0.5, d=true, e=\"s\",) {\n  return a\n}\n");
    CU_ASSERT_EQUAL_FATAL(p->n_defs, 1);
    gim_def *d = p->defs[0];
    CU_ASSERT_EQUAL_FATAL(d->n_params, 5);
    CU_ASSERT_STRING_EQUAL(d->params[0].name, "a");
    CU_ASSERT_PTR_NULL(d->params[0].default_value);
    CU_ASSERT_EQUAL(d->params[1].default_value->kind, GIM_EXPR_INT);
    CU_ASSERT_EQUAL(d->params[1].default_value->ival, 2);
    CU_ASSERT_EQUAL(d->params[2].default_value->kind, GIM_EXPR_FLOAT);
    CU_ASSERT_DOUBLE_EQUAL(d->params[2].default_value->fval, -0.5, 0);
    CU_ASSERT_EQUAL(d->params[3].default_value->kind, GIM_EXPR_BOOL);
    CU_ASSERT_EQUAL(d->params[3].default_value->ival, 1);
    CU_ASSERT_STRING_EQUAL(d->params[4].default_value->sval, "s");
    CU_ASSERT_EQUAL(d->params[4].loc.col, 31);

    p = parse_ok("def g() { return 1 }");
    CU_ASSERT_EQUAL(p->defs[0]->n_params, 0);
    CU_ASSERT_EQUAL(p->defs[0]->n_body, 1);
}

static void test_call_arguments(void) {
    gim_program *p = parse_ok("model m {\n  y = conv2d(x, 32, k=3, stride=2)\n  z = f()\n}");
    gim_expr *c = model_stmt(p, 0)->value;
    CU_ASSERT_EQUAL_FATAL(c->n_args, 4);
    CU_ASSERT_PTR_NULL(c->args[0].name);
    CU_ASSERT_EQUAL(c->args[0].value->kind, GIM_EXPR_NAME);
    CU_ASSERT_STRING_EQUAL(c->args[0].value->name, "x");
    CU_ASSERT_PTR_NULL(c->args[1].name);
    CU_ASSERT_STRING_EQUAL(c->args[2].name, "k");
    CU_ASSERT_STRING_EQUAL(c->args[3].name, "stride");
    CU_ASSERT_EQUAL(c->args[3].value->ival, 2);
    CU_ASSERT_EQUAL(model_stmt(p, 1)->value->kind, GIM_EXPR_CALL);
    CU_ASSERT_EQUAL(model_stmt(p, 1)->value->n_args, 0);

    /* Keywords once each, after every positional argument. */
    parse("model m {\n  y = f(a, k=1, k=2)\n  z = g(k=1, x)\n}");
    CU_ASSERT_EQUAL(diag.n_errors, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:2:17: error: keyword argument 'k' given twice in call to 'f'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:2:12: note: first given here"));
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:3:14: error: positional argument after a keyword argument"));
}

/* Checks e is BINARY op with the given operand kinds. */
static void check_binary(const gim_expr *e, char op, gim_expr_kind l, gim_expr_kind r) {
    CU_ASSERT_EQUAL_FATAL(e->kind, GIM_EXPR_BINARY);
    CU_ASSERT_EQUAL(e->op, op);
    CU_ASSERT_EQUAL(e->lhs->kind, l);
    CU_ASSERT_EQUAL(e->rhs->kind, r);
}

static void test_precedence(void) {
    /* a + b * c - -d / e  ==  (a + (b * c)) - ((-d) / e) */
    gim_program *p = parse_ok("model m { y = a + b * c - -d / e }");
    gim_expr *e = model_stmt(p, 0)->value;
    check_binary(e, '-', GIM_EXPR_BINARY, GIM_EXPR_BINARY);
    check_binary(e->lhs, '+', GIM_EXPR_NAME, GIM_EXPR_BINARY);
    check_binary(e->lhs->rhs, '*', GIM_EXPR_NAME, GIM_EXPR_NAME);
    check_binary(e->rhs, '/', GIM_EXPR_NEG, GIM_EXPR_NAME);
    CU_ASSERT_STRING_EQUAL(e->rhs->lhs->lhs->name, "d");
    CU_ASSERT_EQUAL(e->depth, 4);

    /* Left associativity: a - b - c == (a - b) - c; parentheses win. */
    p = parse_ok("model m { y = a - b - c; z = a - (b - c); w = (a + b) * 0.5 }");
    check_binary(model_stmt(p, 0)->value, '-', GIM_EXPR_BINARY, GIM_EXPR_NAME);
    check_binary(model_stmt(p, 1)->value, '-', GIM_EXPR_NAME, GIM_EXPR_BINARY);
    check_binary(model_stmt(p, 2)->value, '*', GIM_EXPR_BINARY, GIM_EXPR_FLOAT);

    /* A negated literal is a literal; a negated name is NEG. */
    p = parse_ok("model m { y = -x * -2 }");
    check_binary(model_stmt(p, 0)->value, '*', GIM_EXPR_NEG, GIM_EXPR_INT);
    CU_ASSERT_EQUAL(model_stmt(p, 0)->value->rhs->ival, -2);
}

static void test_lists(void) {
    gim_program *p = parse_ok("model m {\n  y = reshape(x, [batch, -1, 4,])\n  z = [ ]\n}");
    gim_expr *l = model_stmt(p, 0)->value->args[1].value;
    CU_ASSERT_EQUAL_FATAL(l->kind, GIM_EXPR_LIST);
    CU_ASSERT_EQUAL_FATAL(l->n_args, 3);
    CU_ASSERT_EQUAL(l->args[0].value->kind, GIM_EXPR_NAME);
    CU_ASSERT_EQUAL(l->args[1].value->kind, GIM_EXPR_INT);
    CU_ASSERT_EQUAL(l->args[1].value->ival, -1);
    CU_ASSERT_EQUAL(l->args[1].value->loc.col, 26);
    CU_ASSERT_EQUAL(l->args[2].value->ival, 4);
    CU_ASSERT_EQUAL(l->loc.col, 18);
    CU_ASSERT_EQUAL(model_stmt(p, 1)->value->kind, GIM_EXPR_LIST);
    CU_ASSERT_EQUAL(model_stmt(p, 1)->value->n_args, 0);
}

static void test_inputs(void) {
    gim_program *p = parse_ok("model m {\n  input x: [batch, 1, 28, 28]\n  input y: labels[batch]\n  output x\n}");
    gim_stmt *x = model_stmt(p, 0), *y = model_stmt(p, 1);
    CU_ASSERT_EQUAL(x->kind, GIM_STMT_INPUT);
    CU_ASSERT_STRING_EQUAL(x->name, "x");
    CU_ASSERT_EQUAL(x->name_loc.col, 9);
    CU_ASSERT_EQUAL_FATAL(x->value->kind, GIM_EXPR_LIST);
    CU_ASSERT_EQUAL(x->value->n_args, 4);
    CU_ASSERT_STRING_EQUAL(x->value->args[0].value->name, "batch");
    CU_ASSERT_EQUAL(x->value->args[3].value->ival, 28);
    CU_ASSERT_EQUAL(y->kind, GIM_STMT_INPUT);
    CU_ASSERT_EQUAL_FATAL(y->value->kind, GIM_EXPR_INDEX);
    CU_ASSERT_STRING_EQUAL(y->value->name, "labels");
    CU_ASSERT_EQUAL_FATAL(y->value->n_args, 1);
    CU_ASSERT_STRING_EQUAL(y->value->args[0].value->name, "batch");
    CU_ASSERT_EQUAL(model_stmt(p, 2)->kind, GIM_STMT_OUTPUT);

    parse("model m {\n  input y: tokens[batch]\n}");
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:2:12: error: expected a shape [dims] or labels[batch], not 'tokens'"));
}

static void test_train_block(void) {
    gim_program *p = parse_ok("train {\n  optimizer sgd(lr=0.1, momentum=0.9)\n  lr = 2e-4\n  steps -1\n"
                              "  schedule sequential; threads 2\n  dataset \"data/x\"\n}");
    CU_ASSERT(p->has_train);
    CU_ASSERT_PTR_NULL(p->model);
    CU_ASSERT_EQUAL_FATAL(p->n_train, 6);
    CU_ASSERT_STRING_EQUAL(p->train[0].key, "optimizer");
    CU_ASSERT_EQUAL(p->train[0].loc.line, 2);
    CU_ASSERT_EQUAL(p->train[0].value->n_args, 2);
    CU_ASSERT_STRING_EQUAL(p->train[0].value->args[1].name, "momentum");
    CU_ASSERT_DOUBLE_EQUAL(p->train[1].value->fval, 2e-4, 1e-19);
    CU_ASSERT_EQUAL(p->train[2].value->ival, -1);
    CU_ASSERT_STRING_EQUAL(p->train[3].value->name, "sequential");
    CU_ASSERT_STRING_EQUAL(p->train[4].key, "threads");
    CU_ASSERT_STRING_EQUAL(p->train[5].value->sval, "data/x");

    p = parse_ok("train {}");
    CU_ASSERT(p->has_train);
    CU_ASSERT_EQUAL(p->n_train, 0);
    p = parse_ok("model m {}");
    CU_ASSERT(!p->has_train);

    /* Keys are the train configuration's business (compiler/config.c), a
     * second block is the parser's. */
    parse("train { batch 1 }\ntrain {\n  batch 2\n  batch 3\n}");
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:2:1: error: more than one train block"));
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:1:1: note: the first train block is here"));
}

static void test_statement_separators(void) {
    gim_program *p = parse_ok("\n\nmodel m {\n\n  a = 1; b = 2\n\n\n  c = f(a,\n        b)\n\n}\n\n");
    CU_ASSERT_EQUAL(p->model->n_body, 3);
    CU_ASSERT_EQUAL(model_stmt(p, 2)->loc.line, 8);
    p = parse_ok("model m { a = 1; }");
    CU_ASSERT_EQUAL(p->model->n_body, 1);
    /* Two statements on one line without ';' are an error. */
    parse("model m { a = 1 b = 2 }");
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:1:17: error: expected newline or '}' before name 'b'"));
}

static void test_context_checks(void) {
    parse("model m {\n  return 1\n}\n"
          "def f(x) {\n  input y: [1]\n  output x\n}\n"
          "def g(a, a) {\n  return a\n  b = 1\n}\n"
          "def h(a=1, b) {\n  return a\n}\n");
    const char *t = diag_text();
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:2:3: error: 'return' is only allowed in a def"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:5:3: error: 'input' is only allowed in a model"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:6:3: error: 'output' is only allowed in a model"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:4:5: error: def 'f' has no 'return'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:8:10: error: parameter 'a' appears twice"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:10:3: error: statement after 'return'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:12:12: error: parameter 'b' without a default follows one with a default"));
    CU_ASSERT_EQUAL(diag.n_errors, 7);

    parse("model m {\n  output a\n  output b\n}");
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:3:3: error: a model has one 'output'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "t.gim:2:3: note: the first 'output' is here"));
}

/* Independent errors are all reported, each once. */
static void test_error_recovery(void) {
    parse("model m {\n  a = (1 +)\n  b = 2\n  c = [1 2]\n  d = f(,)\n  output d\n}\n"
          "def g(x y) {\n  return x\n}\n"
          "train {\n  batch\n  seed 1\n}\n");
    const char *t = diag_text();
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:2:11: error: expected expression before ')'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:4:10: error: expected ',' or ']' before number '2'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:5:9: error: expected ')' or expression before ','") ||
                           strstr(t, "t.gim:5:9: error: expected expression or ')' before ','"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:8:9: error: expected ')', ',' or '=' before name 'y'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:12:8: error: expected expression or '=' before newline") ||
                           strstr(t, "t.gim:12:8: error: expected '=' or expression before newline"));
    if (diag.n_errors != 5 || getenv("SHOW")) fprintf(stderr, "\n%s", t);
    CU_ASSERT_EQUAL(diag.n_errors, 5);

    /* An open bracket that is not what is missing is still pointed at. */
    parse("model m {\n  x = ");
    CU_ASSERT_STRING_EQUAL(diag_text(),
                           "t.gim:2:6: error: expected expression before end of file\n"
                           "  x = \n"
                           "     ^\n"
                           "t.gim:1:9: note: this '{' is not closed\n"
                           "model m {\n"
                           "        ^\n");
}

/* At the top level only import, def, model and train may start a line; a
 * near miss of one is suggested. */
static void test_top_level(void) {
    parse("modle m {\n}\ndeff f() { return 1 }\nx = 1\nmodel m { output 1 }\n");
    const char *t = diag_text();
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:1:1: error: unexpected name 'modle' at the top level; did you mean 'model'?"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:3:1: error: unexpected name 'deff' at the top level; did you mean 'def'?"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "t.gim:4:1: error: unexpected name 'x' at the top level (expected import, def, model or train)"));
    CU_ASSERT_EQUAL(diag.n_errors, 3);
}

/* gim_ast_print's output parses back to the same printout. */
static void test_print_round_trip(void) {
    const char *src =
        "def f(x, k=3, s=-0.25, on=false, name=\"a\\\"b\\n\") {\n"
        "    y = (x + 1) * 2 - -x / (3 - x - (2 - x))\n"
        "    infonce(y, steps=2, negatives=8, context=x)\n"
        "    return y\n"
        "}\n"
        "\n"
        "model m {\n"
        "    input x: [batch, 1, 28, 28]\n"
        "    input y: labels[batch]\n"
        "    z = reshape(f(x), [batch, -1])\n"
        "    output z * 0.1\n"
        "}\n"
        "\n"
        "train {\n"
        "    optimizer adam(lr=0.0002, beta1=0.9)\n"
        "    schedule async\n"
        "    dataset \"d\"\n"
        "}\n";
    gim_program *p = parse_ok(src);
    char *once = print_program(p);
    CU_ASSERT_STRING_EQUAL(once, src);
    gim_program *q = parse_ok(once);
    char *twice = print_program(q);
    CU_ASSERT_STRING_EQUAL(once, twice);
    free(once);
    free(twice);
}

/* Imports: next to the file first, then the stdlib; each file once. */
static void test_imports(void) {
    char dir[600], lib[600], path[700];
    snprintf(dir, sizeof dir, "%s/imp", gim_tmpdir());
    snprintf(lib, sizeof lib, "%s/imp/lib", gim_tmpdir());
    CU_ASSERT_EQUAL_FATAL(system("true"), 0);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", lib);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    const char *base = "def base(x) { return x }\n";
    const char *left = "import \"base.gim\"\ndef left(x) { return base(x) }\n";
    /* right.gim lives next to the model and names base.gim by another path */
    const char *right = "import \"lib/../lib/base.gim\"\ndef right(x) { return x }\n";
    gim_tmpfile("imp/lib/base.gim", base, strlen(base));
    gim_tmpfile("imp/lib/left.gim", left, strlen(left));
    gim_tmpfile("imp/right.gim", right, strlen(right));
    const char *main_src = "import \"left.gim\"\nimport \"right.gim\"\nimport \"left.gim\"\nmodel m { output x }\n";
    const char *main_path = gim_tmpfile("imp/main.gim", main_src, strlen(main_src));
    reset_diag();
    gim_program *p = gim_parse_program(&diag, arena, main_path, lib);
    if (diag.n_errors) fprintf(stderr, "\n%s", diag_text());
    CU_ASSERT_EQUAL(diag.n_errors, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(p->n_defs, 3);   /* base, left, right: base once */
    CU_ASSERT_PTR_NOT_NULL(p->model);

    /* Without the stdlib directory left.gim is not found; the message says where it looked. */
    reset_diag();
    p = gim_parse_program(&diag, arena, main_path, "/nonexistent/lib");
    CU_ASSERT_PTR_NOT_NULL(p);
    CU_ASSERT_EQUAL(diag.n_errors, 2);
    snprintf(path, sizeof path, "1:8: error: cannot find imported file 'left.gim' (looked in '%s' and in the stdlib '/nonexistent/lib')", dir);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), path));

    /* $GIM_STDLIB is the default stdlib directory. */
    setenv("GIM_STDLIB", lib, 1);
    CU_ASSERT_STRING_EQUAL(gim_stdlib_dir(), lib);
    reset_diag();
    p = gim_parse_program(&diag, arena, main_path, NULL);
    CU_ASSERT_EQUAL(diag.n_errors, 0);
    unsetenv("GIM_STDLIB");
    CU_ASSERT_STRING_NOT_EQUAL(gim_stdlib_dir(), lib);

    /* A file imports itself: a cycle of one. */
    const char *self = gim_tmpfile("imp/self.gim", "import \"self.gim\"\n", 18);
    reset_diag();
    gim_parse_program(&diag, arena, self, NULL);
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "self.gim:1:8: error: import cycle: "));

    /* A file named like a stdlib file imports that name: the stdlib file,
     * not itself; with no stdlib file of that name, still a cycle. */
    const char *libbase = "import \"base.gim\"\nmodel m { output x }\n";
    const char *same = gim_tmpfile("imp/base.gim", libbase, strlen(libbase));
    reset_diag();
    p = gim_parse_program(&diag, arena, same, lib);
    if (diag.n_errors) fprintf(stderr, "\n%s", diag_text());
    CU_ASSERT_EQUAL(diag.n_errors, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(p->n_defs, 1);   /* lib/base.gim's def base */
    reset_diag();
    gim_parse_program(&diag, arena, same, "/nonexistent/lib");
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "base.gim:1:8: error: import cycle: "));

    /* An unreadable main file: NULL and an error. */
    reset_diag();
    CU_ASSERT_PTR_NULL(gim_parse_program(&diag, arena, "/nonexistent/x.gim", NULL));
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(diag_text(), "error: cannot read '/nonexistent/x.gim'"));
}

static void test_diagnostics_format(void) {
    reset_diag();
    const gim_source *src = gim_diag_add_source(&diag, "f.gim", "a\n\tb = x\n", 9);
    gim_error(&diag, (gim_loc){src, 2, 6}, "bad %s", "x");
    gim_note(&diag, (gim_loc){src, 1, 1}, "see here");
    gim_warning(&diag, (gim_loc){NULL, 0, 0}, "no place");
    CU_ASSERT_STRING_EQUAL(diag_text(),
                           "f.gim:2:6: error: bad x\n"
                           "\tb = x\n"
                           "\t    ^\n"
                           "f.gim:1:1: note: see here\n"
                           "a\n"
                           "^\n"
                           "warning: no place\n");
    CU_ASSERT_EQUAL(diag.n_errors, 1);
    CU_ASSERT_EQUAL(diag.n_warnings, 1);

    /* After max_errors, errors (and their notes) are counted, not shown. */
    reset_diag();
    src = gim_diag_add_source(&diag, "f.gim", "a\n\tb = x\n", 9);
    diag.max_errors = 2;
    for (int i = 0; i < 5; i++) {
        gim_error(&diag, (gim_loc){src, 1, 1}, "error %d", i);
        gim_note(&diag, (gim_loc){src, 1, 1}, "note %d", i);
    }
    const char *t = diag_text();
    CU_ASSERT_EQUAL(diag.n_errors, 5);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "note 1"));
    CU_ASSERT_PTR_NULL(strstr(t, "error 2"));
    CU_ASSERT_PTR_NULL(strstr(t, "note 2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "error: too many errors (2); the rest are not shown\n"));

    /* gim_diag_load keeps the file's text. */
    const char *path = gim_tmpfile("load.gim", "x\0y", 3);
    const gim_source *s = gim_diag_load(&diag, path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(s->len, 3);
    CU_ASSERT_EQUAL(memcmp(s->text, "x\0y", 4), 0);
    CU_ASSERT_PTR_NULL(gim_diag_load(&diag, "/nonexistent/file"));
}

int main(void) {
    arena = gim_arena_new();
    static const gim_test tests[] = {
        {"spec example (two files)", test_spec_example},
        {"def parameters and defaults", test_def_defaults},
        {"call arguments", test_call_arguments},
        {"precedence", test_precedence},
        {"lists", test_lists},
        {"inputs", test_inputs},
        {"train block", test_train_block},
        {"statement separators", test_statement_separators},
        {"context checks", test_context_checks},
        {"error recovery", test_error_recovery},
        {"top level", test_top_level},
        {"print round trip", test_print_round_trip},
        {"imports", test_imports},
        {"diagnostics format", test_diagnostics_format},
        {NULL, NULL},
    };
    int rc = gim_run_suite("parser", tests);
    reset_diag();
    gim_diag_release(&diag);
    fclose(diag_out);
    free(diag_buf);
    gim_arena_free(arena);
    return rc;
}
