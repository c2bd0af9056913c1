/* The readers of a run's records (runtime/gim_records.h): JSON, metrics.csv,
 * eval.json. What they accept, and the located errors for what they refuse. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gim_records.h"
#include "gim_util.h"
#include "testutil.h"

static gim_json_doc *parse(const char *text, char *err, size_t n) {
    err[0] = 0;
    return gim_json_parse(text, strlen(text), err, n);
}

static void test_json_values(void) {
    char err[256];
    gim_json_doc *d = parse(" {\"a\": [1, -2.5e2, 0, true, false, null], \"s\": \"x\\n\\u00e9\\ud83d\\ude00\\\"\","
                            " \"o\": {}, \"a\": 7}\n",
                            err, sizeof err);
    CU_ASSERT_FATAL(d != NULL);
    const gim_json *r = gim_json_root(d);
    CU_ASSERT_EQUAL(r->kind, GIM_JSON_OBJECT);
    CU_ASSERT_EQUAL(r->n, 4);
    const gim_json *a = gim_json_get(r, "a");   /* the first of two */
    CU_ASSERT_FATAL(a && a->kind == GIM_JSON_ARRAY && a->n == 6);
    CU_ASSERT(a->items[0]->num == 1 && a->items[1]->num == -250 && a->items[2]->num == 0);
    CU_ASSERT(a->items[3]->kind == GIM_JSON_BOOL && a->items[3]->boolean);
    CU_ASSERT(a->items[4]->kind == GIM_JSON_BOOL && !a->items[4]->boolean);
    CU_ASSERT(a->items[5]->kind == GIM_JSON_NULL);
    const gim_json *s = gim_json_get(r, "s");
    CU_ASSERT_FATAL(s && s->kind == GIM_JSON_STRING);
    CU_ASSERT_STRING_EQUAL(s->str, "x\n\xc3\xa9\xf0\x9f\x98\x80\"");
    CU_ASSERT(gim_json_get(r, "o") && gim_json_get(r, "o")->n == 0);
    CU_ASSERT(gim_json_get(r, "missing") == NULL);
    CU_ASSERT(gim_json_get(a, "a") == NULL);   /* not an object */
    gim_json_free(d);
}

/* Each refusal names the line and column where the text goes wrong. */
static void test_json_errors(void) {
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"", "1:1: expected a value, found the end"},
        {"{\"a\": 1,}", "1:9: expected a key"},
        {"{\"a\" 1}", "1:6: expected ':'"},
        {"[1 2]", "1:4: expected ',' or ']'"},
        {"{\n  \"a\": tru\n}", "2:8: expected a value"},
        {"\"abc", "1:1: unterminated string"},
        {"\"a\tb\"", "control character"},
        {"\"\\x\"", "unknown escape"},
        {"\"\\ud800\"", "unpaired surrogate"},
        {"\"\\u0000\"", "\\u0000"},
        {"01", "1:2: unexpected text after the value"},
        {"1.", "expected a digit after '.'"},
        {"-", "expected a value"},
        {"1e999", "out of range"},
        {"NaN", "expected a value"},
        {"[1] x", "1:5: unexpected text"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gim_json_doc *d = parse(cases[i].text, err, sizeof err);
        CU_ASSERT(d == NULL);
        if (d || !strstr(err, cases[i].want))
            fprintf(stderr, "\n  %s: got '%s', wanted '%s'\n", cases[i].text, d ? "(parsed)" : err, cases[i].want);
        CU_ASSERT(strstr(err, cases[i].want) != NULL);
        gim_json_free(d);
    }
    /* 64 levels are fine, 65 are not */
    char deep[200];
    for (int n = 64; n <= 65; n++) {
        memset(deep, '[', (size_t)n);
        memset(deep + n, ']', (size_t)n);
        deep[2 * n] = 0;
        gim_json_doc *d = parse(deep, err, sizeof err);
        CU_ASSERT((d != NULL) == (n == 64));
        if (n == 65) CU_ASSERT(strstr(err, "nested too deeply") != NULL);
        gim_json_free(d);
    }
}

/* What the writers write reads back as the same values. */
static void test_json_round_trip(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fputs("[", f);
    gim_json_str(f, "tab\there \"q\" \\ \x01 caf\xc3\xa9");
    fputs(", ", f);
    gim_json_num(f, 0.1 + 0.2);
    fputs(", ", f);
    gim_json_num(f, NAN);
    fputs(", ", f);
    gim_json_str(f, NULL);
    fputs("]", f);
    fclose(f);
    char err[256];
    gim_json_doc *d = gim_json_parse(buf, len, err, sizeof err);
    CU_ASSERT_FATAL(d != NULL);
    const gim_json *r = gim_json_root(d);
    CU_ASSERT_FATAL(r->n == 4);
    CU_ASSERT_STRING_EQUAL(r->items[0]->str, "tab\there \"q\" \\ \x01 caf\xc3\xa9");
    CU_ASSERT(r->items[1]->num == 0.1 + 0.2);   /* every bit */
    CU_ASSERT(r->items[2]->kind == GIM_JSON_NULL);
    CU_ASSERT(r->items[3]->kind == GIM_JSON_NULL);
    gim_json_free(d);
    free(buf);
}

static int metrics(const char *text, gim_metrics *m, char *err, size_t n) {
    err[0] = 0;
    return gim_metrics_parse(text, strlen(text), "m.csv", m, err, n);
}

static void test_metrics(void) {
    gim_metrics m;
    char err[256];
    static const char head[] = "step,epoch,module,loss,examples_per_s\n";
    char text[512];
    snprintf(text, sizeof text, "%s1,1,1,2.5,100.5\n1,1,2,2.75,100.5\r\n2,1,1,nan,90\n2,1,2,2.6,9", head);
    CU_ASSERT_FATAL(metrics(text, &m, err, sizeof err) == 0);
    CU_ASSERT_EQUAL(m.n, 3);   /* the last line, without its newline, is being written */
    CU_ASSERT(m.torn);
    CU_ASSERT_EQUAL(m.n_modules, 2);
    CU_ASSERT(m.rows[1].module == 2 && m.rows[1].loss == 2.75 && m.rows[1].examples_per_s == 100.5);
    CU_ASSERT(isnan(m.rows[2].loss) && m.rows[2].step == 2);
    gim_metrics_free(&m);
    static const struct {
        const char *rows, *want;
    } bad[] = {
        {"1,1,1,2.5\n", "m.csv:2: expected 5 fields"},
        {"1,1,1,2.5,1,9\n", "m.csv:2: expected 5 fields"},
        {"1,1,1,2.5,1\n1,1,0,2.5,1\n", "m.csv:3: step, epoch and module"},
        {"x,1,1,2.5,1\n", "m.csv:2: step"},
        {"1,1,1,,1\n", "m.csv:2: loss and examples_per_s"},
        {"1,1,1,2,-1\n", "m.csv:2: loss and examples_per_s"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "%s%s", head, bad[i].rows);
        CU_ASSERT_EQUAL(metrics(text, &m, err, sizeof err), -1);
        if (!strstr(err, bad[i].want)) fprintf(stderr, "\n  %s: got '%s'\n", bad[i].rows, err);
        CU_ASSERT(strstr(err, bad[i].want) != NULL);
    }
    CU_ASSERT_EQUAL(metrics("", &m, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "empty") != NULL);
    CU_ASSERT_EQUAL(metrics("step,epoch\n", &m, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "m.csv:1: expected the header") != NULL);
    CU_ASSERT_EQUAL(metrics(head, &m, err, sizeof err), 0);   /* no step yet */
    CU_ASSERT_EQUAL(m.n, 0);
    gim_metrics_free(&m);
}

/* eval.json: written, read back the same; the schema's refusals. */
static void test_eval_round_trip(void) {
    gim_eval_module mods[2] = {
        {.module = 1, .features = 100, .trained = {true, 0.5, 0.25, 1.5}, .random = {true, 0.125, 0.0625, 2.0}},
        {.module = 2, .features = 0},
    };
    gim_eval_probe p = {.task = "classes", .features = "flattened", .classes = 10, .train_examples = 256,
                        .test_examples = 128, .epochs = 10, .batch = 256, .lr = 1e-3, .n_modules = 2, .modules = mods};
    gim_eval_results r = {.model = "tiny", .model_file = "a \"b\".gim", .weights = NULL, .data = "/d",
                          .seed = 7, .seconds = 1.5, .n_probes = 1, .probes = &p};
    const char *path = gim_tmppath("eval.json");
    char err[512];
    CU_ASSERT_FATAL(gim_eval_write(path, &r, err, sizeof err) == 0);
    gim_eval_results b;
    CU_ASSERT_FATAL(gim_eval_read(path, &b, err, sizeof err) == 0);
    CU_ASSERT_STRING_EQUAL(b.model, "tiny");
    CU_ASSERT_STRING_EQUAL(b.model_file, "a \"b\".gim");
    CU_ASSERT(b.weights == NULL);
    CU_ASSERT(b.seed == 7 && b.seconds == 1.5 && b.n_probes == 1);
    CU_ASSERT_FATAL(b.probes[0].n_modules == 2);
    const gim_eval_module *m = b.probes[0].modules;
    CU_ASSERT(m[0].trained.have && m[0].trained.train_acc == 0.5 && m[0].trained.test_acc == 0.25 &&
              m[0].trained.loss == 1.5);
    CU_ASSERT(m[0].random.have && m[0].random.test_acc == 0.0625);
    CU_ASSERT(!m[1].trained.have && !m[1].random.have && m[1].features == 0);
    CU_ASSERT(b.probes[0].lr == 1e-3 && b.probes[0].classes == 10);
    gim_eval_results_free(&b);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[]", "expected an object at the top"},
        {"{\"gim_eval\": 2}", "gim_eval: expected a whole number from 1 to 1"},
        {"{\"gim_eval\": 1, \"model\": 3}", "model: expected a string"},
        {"{\"gim_eval\": 1, \"model\": \"m\", \"model_file\": null, \"weights\": null, \"data\": null, \"seed\": 0}",
         "probes: missing"},
        {"{\"gim_eval\": 1, \"model\": \"m\", \"model_file\": null, \"weights\": null, \"data\": null, \"seed\": 0,"
         " \"probes\": [{\"task\": \"c\", \"features\": \"f\", \"classes\": 10, \"train_examples\": 1,"
         " \"test_examples\": 1, \"modules\": [{\"module\": 1, \"features\": 4, \"random\": {\"train_acc\": 1}}]}]}",
         "probes[0].modules[0].random.test_acc: missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CU_ASSERT_EQUAL(gim_eval_parse(bad[i].text, strlen(bad[i].text), "e.json", &b, err, sizeof err), -1);
        if (!strstr(err, bad[i].want)) fprintf(stderr, "\n  got '%s', wanted '%s'\n", err, bad[i].want);
        CU_ASSERT(strstr(err, bad[i].want) != NULL);
    }
}

int main(void) {
    static const gim_test tests[] = {
        {"JSON values", test_json_values},
        {"JSON errors, located", test_json_errors},
        {"JSON writers round-trip", test_json_round_trip},
        {"metrics.csv", test_metrics},
        {"eval.json round-trip and refusals", test_eval_round_trip},
        {NULL, NULL},
    };
    return gim_run_suite("records", tests);
}
