/* No input crashes or hangs the front end, and every error is located:
 * empty and garbage input, huge lines and literals, deep nesting, every
 * prefix of a real model, many errors. Each case must finish fast. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gim_lang.h"
#include "testutil.h"

/* CPU seconds a case may take (sanitizer builds run several times slower). */
#if defined(__SANITIZE_ADDRESS__)
#define MAX_SECONDS 20.0
#else
#define MAX_SECONDS 2.0
#endif

typedef struct parsed {
    gim_program *prog;
    int n_errors;
    char *out;          /* diagnostics (heap) */
    size_t out_len;
    double seconds;
} parsed;

static gim_arena *arena;

/* Each parse gets a fresh arena (big inputs make big ASTs). */
static parsed parse_n(const char *text, size_t len) {
    parsed r = {0};
    gim_arena_free(arena);
    arena = gim_arena_new();
    FILE *out = open_memstream(&r.out, &r.out_len);
    gim_diag d;
    gim_diag_init(&d, out);
    clock_t t0 = clock();
    r.prog = gim_parse_program_text(&d, arena, "r.gim", text, len, "/nonexistent");
    r.seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;
    r.n_errors = d.n_errors;
    gim_diag_release(&d);
    fclose(out);
    return r;
}

static parsed parse(const char *text) { return parse_n(text, strlen(text)); }

/* Every line the diagnostics printed is short, and every message is located. */
static void check_output_sane(const parsed *r, size_t max_line) {
    size_t line = 0;
    for (size_t i = 0; i < r->out_len; i++) {
        if (r->out[i] == '\n') line = 0;
        else if (++line > max_line) {
            CU_FAIL("a diagnostics line is too long");
            return;
        }
    }
    /* "r.gim:L:C: error:" or the one "too many errors" line */
    for (const char *s = r->out; (s = strstr(s, "error: ")); s++) {
        const char *bol = s;
        while (bol > r->out && bol[-1] != '\n') bol--;
        bool located = !strncmp(bol, "r.gim:", 6) || !strncmp(bol, "error: too many errors", 22);
        CU_ASSERT(located);
        if (!located) return;
    }
}

/* ---- building big inputs ---------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = gim_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void puts_n(buf *b, const char *s, size_t times) {
    size_t n = strlen(s);
    for (size_t i = 0; i < times; i++) put(b, s, n);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_empty(void) {
    parsed r = parse("");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.prog);
    CU_ASSERT_EQUAL(r.n_errors, 0);
    CU_ASSERT_PTR_NULL(r.prog->model);
    CU_ASSERT_EQUAL(r.prog->n_defs, 0);
    CU_ASSERT(!r.prog->has_train);
    free(r.out);
    r = parse("\n\n   \n# nothing\n;;\n");
    CU_ASSERT_EQUAL(r.n_errors, 0);
    free(r.out);
}

static void test_binary_garbage(void) {
    size_t n = 1 << 16;
    char *junk = gim_xmalloc(n);
    for (unsigned seed = 1; seed <= 8; seed++) {
        unsigned s = seed * 2654435761u;
        for (size_t i = 0; i < n; i++) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            junk[i] = (char)(s >> 11);
        }
        junk[7] = 0;    /* at least one NUL early */
        parsed r = parse_n(junk, n);
        CU_ASSERT_PTR_NOT_NULL(r.prog);
        CU_ASSERT(r.n_errors > 0);
        CU_ASSERT(r.seconds < MAX_SECONDS);
        check_output_sane(&r, 400);
        free(r.out);
    }
    gim_free(junk);
}

/* Random bytes inside an otherwise good model: never a crash. */
static const char *model_src =
    "import \"nothere.gim\"\n"
    "def conv_pair(x, channels, stride=1) {\n"
    "    h = relu(conv2d(x, channels, k=3, stride=stride, pad=1))\n"
    "    return relu(conv2d(h, channels, k=3, pad=1))\n"
    "}\n"
    "model fashion_gim {\n"
    "    input x: [batch, 1, 28, 28]\n"
    "    input y: labels[batch]\n"
    "    p  = patches(x, size=8, stride=4)\n"
    "    h1 = conv_pair(p, 32)\n"
    "    infonce(spatial_mean(h1), steps=3, negatives=16)\n"
    "    h2 = conv_pair(gradient_block(h1), 64, stride=2); z = reshape(h2, [batch, -1])\n"
    "    output spatial_mean(h2) * 0.5 - -(h1 + 1e-3) / 2\n"
    "}\n"
    "train {\n"
    "    dataset   \"fashion-mnist\\n\"\n"
    "    optimizer adam(lr=1e-3, beta1=0.9)\n"
    "    schedule  simultaneous\n"
    "}\n";

static void test_every_prefix(void) {
    size_t n = strlen(model_src);
    int clean = 0;
    for (size_t i = 0; i <= n; i++) {
        parsed r = parse_n(model_src, i);
        CU_ASSERT_PTR_NOT_NULL(r.prog);
        check_output_sane(&r, 200);
        if (r.n_errors == 1) clean++;   /* only the missing import */
        free(r.out);
    }
    CU_ASSERT(clean > 0);
}

static void test_byte_substitutions(void) {
    size_t n = strlen(model_src);
    char *text = gim_xmalloc(n + 1);
    const unsigned char bytes[] = {0, 1, '\n', '(', ')', '[', ']', '{', '}', '"', '\\', '#', ';', ',', '=',
                                   '-', ':', '.', '9', 'x', 0x7f, 0x80, 0xff};
    for (size_t b = 0; b < sizeof bytes; b++) {
        for (size_t i = 0; i < n; i += 3) {
            memcpy(text, model_src, n + 1);
            text[i] = (char)bytes[b];
            parsed r = parse_n(text, n);
            CU_ASSERT_PTR_NOT_NULL(r.prog);
            check_output_sane(&r, 200);
            free(r.out);
        }
    }
    gim_free(text);
}

static void test_ten_megabyte_lines(void) {
    size_t mb10 = 10u << 20;
    /* many statements' worth of names on one line: one error, cut to a window */
    buf b = {0};
    put(&b, "model m {\n\tx = ", 15);
    puts_n(&b, "a ", mb10 / 2);
    put(&b, "\n}\n", 3);
    parsed r = parse_n(b.p, b.len);
    CU_ASSERT_EQUAL(r.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:2:8: error: expected newline or '}' before name 'a'"));
    CU_ASSERT(r.out_len < 600);
    CU_ASSERT(r.seconds < MAX_SECONDS);
    check_output_sane(&r, 200);
    free(r.out);

    /* an error far into a 2 MB line: the window is around the column */
    b.len = 0;
    put(&b, "model m {\n  x = ", 16);
    puts_n(&b, "a + ", (2u << 20) / 4);
    put(&b, "$\n}\n", 4);
    r = parse_n(b.p, b.len);
    CU_ASSERT_EQUAL(r.n_errors, 2);     /* too deep, then the '$' */
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "error: expression nested too deeply"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "error: unexpected character '$'\n...a + a + "));
    CU_ASSERT(r.seconds < MAX_SECONDS);
    check_output_sane(&r, 200);
    free(r.out);

    /* one 10 MB name, one 10 MB string, one 10 MB comment, one 10 MB number */
    const char *forms[] = {"x = %s\n", "x = \"%s\"\n", "# %s\n", "x = 1%s\n"};
    const char *fill[] = {"a", "s", "c", "0"};
    for (int f = 0; f < 4; f++) {
        b.len = 0;
        put(&b, "model m {\n", 10);
        const char *pct = strstr(forms[f], "%s");
        put(&b, forms[f], (size_t)(pct - forms[f]));
        puts_n(&b, fill[f], mb10);
        put(&b, pct + 2, strlen(pct + 2));
        put(&b, "}\n", 2);
        r = parse_n(b.p, b.len);
        CU_ASSERT_EQUAL(r.n_errors, f == 3 ? 1 : 0);
        if (f == 3) CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:2:5: error: integer literal 1000"));
        CU_ASSERT(r.seconds < MAX_SECONDS);
        check_output_sane(&r, 200);
        free(r.out);
    }
    gim_free(b.p);
}

static void test_deep_nesting(void) {
    buf b = {0};
    put(&b, "model m {\n  x = ", 16);
    puts_n(&b, "(", 10000);
    put(&b, "1", 1);
    puts_n(&b, ")", 10000);
    put(&b, "\n  y = 2\n}\n", 11);
    parsed r = parse_n(b.p, b.len);
    CU_ASSERT_EQUAL(r.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:2:262: error: brackets nested too deeply (more than 256 levels)"));
    /* the parser resynced after the nest: y = 2 is there */
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.prog->model);
    CU_ASSERT_EQUAL(r.prog->model->n_body, 1);
    CU_ASSERT_STRING_EQUAL(r.prog->model->body[0].name, "y");
    free(r.out);

    /* 256 levels (the model's '{' is one) are fine */
    b.len = 0;
    put(&b, "model m {\n  x = ", 16);
    puts_n(&b, "f(", 255);
    put(&b, "1", 1);
    puts_n(&b, ")", 255);
    put(&b, "\n}\n", 3);
    r = parse_n(b.p, b.len);
    CU_ASSERT_EQUAL(r.n_errors, 0);
    free(r.out);

    /* never closed; lists; unary minus; a long + chain */
    const char *opens[] = {"(", "[", "{", "-", "-(", "1 + "};
    for (int i = 0; i < 6; i++) {
        b.len = 0;
        put(&b, "model m {\n  x = ", 16);
        puts_n(&b, opens[i], 10000);
        put(&b, "y\n}\n", 4);
        r = parse_n(b.p, b.len);
        CU_ASSERT(r.n_errors >= 1 && r.n_errors <= 2);
        CU_ASSERT(strstr(r.out, "nested too deeply") != NULL);
        CU_ASSERT(r.seconds < MAX_SECONDS);
        check_output_sane(&r, 200);
        free(r.out);
    }
    gim_free(b.p);
}

static void test_unterminated(void) {
    parsed r = parse("model m {\n  x = \"abc");
    CU_ASSERT(r.n_errors >= 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:2:7: error: unterminated string"));
    free(r.out);
    r = parse("model m {\n  x = f(1,\n");
    CU_ASSERT_EQUAL(r.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:2:11: error: expected ')' before end of file"));
    free(r.out);
    r = parse("def");
    CU_ASSERT_EQUAL(r.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:1:4: error: expected name before end of file"));
    free(r.out);
}

static void test_huge_literals(void) {
    buf b = {0};
    put(&b, "train {\n  steps ", 16);
    puts_n(&b, "9", 5000);
    put(&b, "\n  lr 1", 7);
    puts_n(&b, "0", 400);
    put(&b, ".0\n  eps 1e-400\n}\n", 17);
    parsed r = parse_n(b.p, b.len);
    CU_ASSERT_EQUAL(r.n_errors, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:2:9: error: integer literal 9999999999999999999999999999999999999999... is too large"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "r.gim:3:6: error: number 1000000000000000000000000000000000000000... is too large"));
    /* the entries are still there, with value 0 */
    CU_ASSERT_EQUAL(r.prog->n_train, 3);
    check_output_sane(&r, 200);
    free(r.out);
    gim_free(b.p);
}

static void test_many_errors_and_lines(void) {
    buf b = {0};
    put(&b, "model m {\n", 10);
    puts_n(&b, "  x = $\n", 10000);
    put(&b, "}\n", 2);
    parsed r = parse_n(b.p, b.len);
    CU_ASSERT_EQUAL(r.n_errors, 10000);
    CU_ASSERT(r.out_len < 4000);    /* 20 shown */
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "error: too many errors (20); the rest are not shown"));
    CU_ASSERT(r.seconds < MAX_SECONDS);
    free(r.out);

    b.len = 0;
    put(&b, "model m {\n", 10);
    puts_n(&b, "  x = relu(conv2d(x, 8, k=3)) + 1\n", 100000);
    put(&b, "}\n", 2);
    r = parse_n(b.p, b.len);
    CU_ASSERT_EQUAL(r.n_errors, 0);
    CU_ASSERT_EQUAL(r.prog->model->n_body, 100000);
    CU_ASSERT(r.seconds < MAX_SECONDS);
    free(r.out);
    gim_free(b.p);
}

/* A chain of imports longer than the limit: an error, not a stack overflow. */
static void test_deep_imports(void) {
    char name[64], text[128];
    for (int i = 0; i < 80; i++) {
        snprintf(name, sizeof name, "chain%d.gim", i);
        snprintf(text, sizeof text, "import \"chain%d.gim\"\ndef f%d(x) { return x }\n", i + 1, i);
        gim_tmpfile(name, text, strlen(text));
    }
    gim_tmpfile("chain80.gim", "def last(x) { return x }\n", 25);
    char path[600];
    snprintf(path, sizeof path, "%s/chain0.gim", gim_tmpdir());
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    gim_diag d;
    gim_diag_init(&d, f);
    gim_program *p = gim_parse_program(&d, arena, path, "/nonexistent");
    CU_ASSERT_PTR_NOT_NULL(p);
    CU_ASSERT_EQUAL(d.n_errors, 1);
    gim_diag_release(&d);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "error: imports nested too deeply (more than 64 files)"));
    free(out);
}

int main(void) {
    arena = gim_arena_new();
    static const gim_test tests[] = {
        {"empty file", test_empty},
        {"binary garbage", test_binary_garbage},
        {"every prefix of a model", test_every_prefix},
        {"byte substitutions", test_byte_substitutions},
        {"10 MB lines", test_ten_megabyte_lines},
        {"10,000 nested brackets", test_deep_nesting},
        {"unterminated input", test_unterminated},
        {"huge literals", test_huge_literals},
        {"many errors, many lines", test_many_errors_and_lines},
        {"deep imports", test_deep_imports},
        {NULL, NULL},
    };
    int rc = gim_run_suite("parser_robust", tests);
    gim_arena_free(arena);
    return rc;
}
