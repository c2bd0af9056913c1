/* gimc report and what feeds it: the page from a short real run (every
 * module named, one inlined plot per figure, the model's table as gimc check
 * prints it, the probe's numbers), refreshed by gimc train --report; broken
 * and missing inputs (a page that says so, or a clear error, never a
 * crash); gnuplot missing; gimc eval's plain progress lines off a terminal
 * and its eval.json against the table it prints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_records.h"
#include "gim_util.h"
#include "harness_train.h"
#include "testutil.h"

static const char *data12, *model2, *run;   /* a trained and evaluated run, made once */
static char *eval_out;                      /* gimc eval's stdout for it */

static void setup(void) {
    if (run) return;
    data12 = tt_dataset("d12", 12, 256, 128, false);
    model2 = tt_model("tiny2.gim", 12, 2);
    const char *dir = tt_path("run");
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 2 --report", model2, data12, dir);
    if (rc) fprintf(stderr, "\ntrain: %s%s\n", so, se);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT(tt_has(so, "report.html"));
    gim_free(so);
    gim_free(se);
    rc = tt_gimc(&eval_out, &se, "eval -O0 '%s' --data '%s' --weights '%s' --compare-random", model2, data12,
                 tt_weights(dir));
    if (rc) fprintf(stderr, "\neval: %s%s\n", eval_out, se);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    gim_free(se);
    run = dir;
}

static char *read_text(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t n;
    return gim_read_file(path, &n);
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* The text of figure `id`: from its <figure> to its </figure>. */
static char *figure_text(const char *page, const char *id) {
    char open[64];
    snprintf(open, sizeof open, "<figure id=\"%s\">", id);
    const char *a = strstr(page, open);
    const char *b = a ? strstr(a, "</figure>") : NULL;
    if (!b) return NULL;
    size_t n = (size_t)(b - a);
    char *s = gim_xmalloc(n + 1);
    memcpy(s, a, n);
    s[n] = 0;
    return s;
}

/* Copies the run directory's files that the report reads into a new one. */
static const char *copy_run(const char *name, bool metrics, bool runjson, bool evaljson) {
    const char *dir = tt_path(name);
    CU_ASSERT_FATAL(mkdir(dir, 0755) == 0);
    static const char *const files[] = {"metrics.csv", "run.json", "eval.json"};
    bool want[] = {metrics, runjson, evaljson};
    for (int i = 0; i < 3; i++) {
        if (!want[i]) continue;
        char *text = read_text(run, files[i]);
        CU_ASSERT_FATAL(text != NULL);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        FILE *f = fopen(path, "w");
        CU_ASSERT_FATAL(f != NULL);
        fputs(text, f);
        fclose(f);
        gim_free(text);
    }
    return dir;
}

static void put_file(const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* ---- the page of a real run ------------------------------------------------------------ */

/* train --report left a page; gimc report, after eval, writes one with every
 * module, a plot inlined in each figure (loss, rate, probe), the settings
 * and the model's table exactly as gimc check prints it. */
static void test_report_of_a_run(void) {
    setup();
    char *page = read_text(run, "report.html");   /* from train --report */
    CU_ASSERT_FATAL(page != NULL);
    CU_ASSERT(tt_has(page, "Not evaluated yet"));
    gim_free(page);
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "report '%s'", run);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s%s\n", so, se);
    gim_free(so);
    gim_free(se);
    page = read_text(run, "report.html");
    CU_ASSERT_FATAL(page != NULL);
    /* self-contained: nothing fetched */
    CU_ASSERT(!tt_has(page, "src=\"http"));
    CU_ASSERT(!tt_has(page, "<script"));
    /* one plot per figure, three figures */
    static const char *const figs[] = {"loss", "rate", "probe1"};
    for (int i = 0; i < 3; i++) {
        char *f = figure_text(page, figs[i]);
        CU_ASSERT(f != NULL);
        if (!f) {
            fprintf(stderr, "\nno figure '%s'\n", figs[i]);
            continue;
        }
        CU_ASSERT_EQUAL(count_of(f, "<img "), 1);
        CU_ASSERT_EQUAL(count_of(f, "src=\"data:image/svg+xml;base64,"), 1);
        gim_free(f);
    }
    CU_ASSERT_EQUAL(count_of(page, "<figure"), 3);
    /* every module: in the loss plot's legend (inside the SVG, base64) we
     * cannot look; the probe table has a row per module */
    CU_ASSERT(tt_has(page, "<tr><td>1</td><td>100</td>"));
    CU_ASSERT(tt_has(page, "<tr><td>2</td><td>200</td>"));
    CU_ASSERT(!tt_has(page, "<tr><td>3</td>"));
    /* the settings and the model's table, line by line as gimc check prints it */
    CU_ASSERT(tt_has(page, "<th>schedule</th><td>simultaneous</td>"));
    CU_ASSERT(tt_has(page, "<th>batch</th><td>16</td>"));
    char *check = NULL;
    CU_ASSERT_EQUAL(tt_gimc(&check, NULL, "check '%s'", model2), 0);
    CU_ASSERT_FATAL(check != NULL && strlen(check) > 100);
    CU_ASSERT(tt_has(page, check));
    gim_free(check);
    gim_free(page);
}

/* The loss figure's SVG names each module in its legend: decoded, the
 * plot has "module 1" and "module 2" (and no third). */
static int b64val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static char *decode_figure(const char *page, const char *id) {
    char *f = figure_text(page, id);
    if (!f) return NULL;
    const char *at = strstr(f, "base64,");
    char *out = NULL;
    if (at) {
        at += 7;
        size_t n = strcspn(at, "\"");
        out = gim_xmalloc(n + 1);
        size_t k = 0;
        unsigned acc = 0;
        int bits = 0;
        for (size_t i = 0; i < n; i++) {
            int v = b64val(at[i]);
            if (v < 0) continue;
            acc = acc << 6 | (unsigned)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                out[k++] = (char)(acc >> bits & 0xff);
            }
        }
        out[k] = 0;
    }
    gim_free(f);
    return out;
}

static void test_plots_name_modules(void) {
    setup();
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "report '%s'", run), 0);
    char *page = read_text(run, "report.html");
    CU_ASSERT_FATAL(page != NULL);
    char *svg = decode_figure(page, "loss");
    CU_ASSERT_FATAL(svg != NULL);
    CU_ASSERT(tt_has(svg, "<svg"));
    CU_ASSERT(tt_has(svg, "module 1"));
    CU_ASSERT(tt_has(svg, "module 2"));
    CU_ASSERT(!tt_has(svg, "module 3"));
    gim_free(svg);
    svg = decode_figure(page, "probe1");
    CU_ASSERT_FATAL(svg != NULL);
    CU_ASSERT(tt_has(svg, "module 1") && tt_has(svg, "module 2"));
    CU_ASSERT(tt_has(svg, "random init"));
    gim_free(svg);
    gim_free(page);
}

/* ---- missing and broken inputs --------------------------------------------------------- */

static int report_of(const char *dir, char **page, char **err) {
    int rc = tt_gimc(NULL, err, "report '%s'", dir);
    *page = read_text(dir, "report.html");
    return rc;
}

static void test_missing_inputs(void) {
    setup();
    char *page, *se;
    /* no eval.json: the page says how to make it; status 0 */
    const char *d = copy_run("no_eval", true, true, false);
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 0);
    CU_ASSERT(page && tt_has(page, "Not evaluated yet") && tt_has(page, "weights.safetensors"));
    CU_ASSERT(page && count_of(page, "<figure") == 2);
    gim_free(page);
    gim_free(se);
    /* eval.json alone: settings and curves said missing */
    d = copy_run("eval_only", false, false, true);
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 0);
    CU_ASSERT(page && tt_has(page, "No metrics.csv") && tt_has(page, "No run.json"));
    CU_ASSERT(page && count_of(page, "<figure") == 1);
    gim_free(page);
    gim_free(se);
    /* nothing of a run: an error, no page */
    d = copy_run("empty", false, false, false);
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 1);
    CU_ASSERT(page == NULL);
    CU_ASSERT(tt_has(se, "holds no run"));
    gim_free(se);
    CU_ASSERT_EQUAL(tt_gimc(NULL, &se, "report '%s'", tt_path("no_such_dir")), 1);
    CU_ASSERT(tt_has(se, "no_such_dir"));
    gim_free(se);
    /* usage */
    CU_ASSERT_EQUAL(tt_gimc(NULL, &se, "report"), 2);
    CU_ASSERT(tt_has(se, "no run directory given"));
    gim_free(se);
}

static void test_broken_inputs(void) {
    setup();
    char *page, *se;
    /* a metrics row cut in the middle of the file: status 1, the line named
     * on stderr and on the page, the rest of the page still there */
    const char *d = copy_run("bad_metrics", false, true, true);
    put_file(d, "metrics.csv", "step,epoch,module,loss,examples_per_s\n1,1,1,2.5,100\n2,1,1,oops,100\n3,1,1,2.1,100\n");
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 1);
    CU_ASSERT(tt_has(se, "metrics.csv:3"));
    CU_ASSERT(page && tt_has(page, "metrics.csv:3") && tt_has(page, "class=\"broken\""));
    CU_ASSERT(page && tt_has(page, "<figure id=\"probe1\">"));
    gim_free(page);
    gim_free(se);
    /* a torn last line (a run writing it): left out, said, status 0 */
    put_file(d, "metrics.csv", "step,epoch,module,loss,examples_per_s\n1,1,1,2.5,100\n2,1,1,2.4,100\n3,1,1,2.");
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 0);
    CU_ASSERT(page && tt_has(page, "being written") && tt_has(page, "<figure id=\"loss\">"));
    gim_free(page);
    gim_free(se);
    /* the wrong header */
    put_file(d, "metrics.csv", "a,b\n1,2\n");
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 1);
    CU_ASSERT(tt_has(se, "metrics.csv:1: expected the header"));
    gim_free(page);
    gim_free(se);
    /* eval.json cut short: the line and column */
    d = copy_run("bad_eval", true, true, false);
    char *ev = read_text(run, "eval.json");
    CU_ASSERT_FATAL(ev != NULL);
    ev[strlen(ev) / 2] = 0;
    put_file(d, "eval.json", ev);
    gim_free(ev);
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 1);
    CU_ASSERT(tt_has(se, "eval.json:"));
    CU_ASSERT(page && tt_has(page, "class=\"broken\"") && count_of(page, "<figure") == 2);
    gim_free(page);
    gim_free(se);
    /* an accuracy that is not a fraction: the value named by its path */
    put_file(d, "eval.json",
             "{\"gim_eval\": 1, \"model\": \"m\", \"model_file\": null, \"weights\": null, \"data\": null, \"seed\": 0,\n"
             " \"probes\": [{\"task\": \"classes\", \"features\": \"flattened\", \"classes\": 10, \"train_examples\": 5,\n"
             "   \"test_examples\": 5, \"modules\": [{\"module\": 1, \"features\": 4,\n"
             "   \"trained\": {\"train_acc\": 0.5, \"test_acc\": 57.5}, \"random\": null}]}]}\n");
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 1);
    CU_ASSERT(tt_has(se, "eval.json:4:") && tt_has(se, "probes[0].modules[0].trained.test_acc"));
    gim_free(page);
    gim_free(se);
    /* run.json that is not JSON */
    d = copy_run("bad_run", true, false, true);
    put_file(d, "run.json", "{\"settings\": {\"batch\": 16,}}\n");
    CU_ASSERT_EQUAL(report_of(d, &page, &se), 1);
    CU_ASSERT(tt_has(se, "run.json:1:"));
    CU_ASSERT(page && count_of(page, "<figure") == 3);
    gim_free(page);
    gim_free(se);
}

/* Without gnuplot: a clear error from report and from train --report
 * (before any training), no page. */
static void test_without_gnuplot(void) {
    setup();
    const char *d = copy_run("no_gnuplot", true, true, true);
    setenv("GIM_GNUPLOT", "/nonexistent/gnuplot", 1);
    char *page, *se;
    int rc = report_of(d, &page, &se);
    char *so = NULL, *se2 = NULL;
    int rc2 = tt_gimc(&so, &se2, "train -O0 '%s' --data '%s' --out '%s' --steps 2 --report", model2, data12,
                      tt_path("no_gnuplot_run"));
    unsetenv("GIM_GNUPLOT");
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(page == NULL);
    CU_ASSERT(tt_has(se, "gnuplot not found") && tt_has(se, "gnuplot-nox"));
    CU_ASSERT_EQUAL(rc2, 2);
    CU_ASSERT(tt_has(se2, "gnuplot not found"));
    CU_ASSERT(!tt_has(so, "epoch"));
    gim_free(page);
    gim_free(se);
    gim_free(so);
    gim_free(se2);
    /* a gnuplot that fails: its words quoted */
    static const char script[] = "#!/bin/sh\necho 'line 3: unknown terminal' >&2\nexit 1\n";
    const char *fake = gim_tmpfile("fake-gnuplot", script, sizeof script - 1);
    chmod(fake, 0755);
    setenv("GIM_GNUPLOT", fake, 1);
    rc = report_of(d, &page, &se);
    unsetenv("GIM_GNUPLOT");
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "unknown terminal"));
    gim_free(page);
    gim_free(se);
}

/* ---- eval: progress and eval.json ---------------------------------------------------------- */

/* Off a terminal: plain lines, no carriage returns or escapes; the feature
 * pass of each encoder ends at all 384 images, with a rate and time left per
 * module, each probe's 10 epochs. */
static void test_eval_plain_progress(void) {
    setup();
    CU_ASSERT_FATAL(eval_out != NULL);
    CU_ASSERT(!tt_has(eval_out, "\r"));
    CU_ASSERT(!tt_has(eval_out, "\033["));
    CU_ASSERT(tt_has(eval_out, "features (random encoder) images 384/384  "));
    CU_ASSERT(tt_has(eval_out, "features (trained encoder) images 384/384  "));
    CU_ASSERT(tt_has(eval_out, "images/s  ETA "));
    /* each module's own rate and share of the time left (tiny2 has two) */
    CU_ASSERT(tt_has(eval_out, "  per module: 1 "));
    CU_ASSERT(tt_has(eval_out, "/s 0:00, 2 "));
    for (int m = 1; m <= 2; m++)
        for (int r = 0; r < 2; r++) {
            char line[128];
            snprintf(line, sizeof line, "probe module %d (%s) epoch 10/10 batch 1/1  loss ", m, r ? "random" : "trained");
            CU_ASSERT(tt_has(eval_out, line));
            snprintf(line, sizeof line, "probe module %d (%s) epoch 1/10 batch 1/1  loss ", m, r ? "random" : "trained");
            CU_ASSERT(tt_has(eval_out, line));
        }
    /* lines as the pass goes (the plain lines come every 5% of the batches,
     * here every one of the 256 / 16 + 128 / 16), not only at its end */
    int lines = count_of(eval_out, "features (trained encoder) images ");
    CU_ASSERT(lines >= 2 && lines <= 256 / 16 + 128 / 16);
}

/* eval.json beside the weights holds the numbers of the printed table (to
 * its two decimals), the features per module, and the run's facts. */
static void test_eval_json_matches_table(void) {
    setup();
    char path[1024];
    snprintf(path, sizeof path, "%s/eval.json", run);
    gim_eval_results ev;
    char err[512];
    CU_ASSERT_FATAL(gim_eval_read(path, &ev, err, sizeof err) == 0);
    CU_ASSERT(tt_has(eval_out, "results: "));
    CU_ASSERT_EQUAL(ev.n_probes, 1);
    CU_ASSERT_STRING_EQUAL(ev.model, "tiny2");
    CU_ASSERT(ev.weights && tt_has(ev.weights, "weights.safetensors"));
    const gim_eval_probe *p = &ev.probes[0];
    CU_ASSERT_STRING_EQUAL(p->task, "classes");
    CU_ASSERT_STRING_EQUAL(p->features, "flattened");
    CU_ASSERT_EQUAL(p->classes, 10);
    CU_ASSERT_EQUAL(p->train_examples, 256);
    CU_ASSERT_EQUAL(p->test_examples, 128);
    CU_ASSERT_EQUAL_FATAL(p->n_modules, 2);
    int rows = 0;
    for (const char *line = eval_out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        int mod;
        long feats;
        double tr, te, rtr, rte;
        if (sscanf(line, "%d %ld %lf%% %lf%% %lf%% %lf%%", &mod, &feats, &tr, &te, &rtr, &rte) != 6) continue;
        CU_ASSERT_FATAL(mod >= 1 && mod <= 2);
        const gim_eval_module *m = &p->modules[mod - 1];
        rows++;
        CU_ASSERT_EQUAL(m->module, mod);
        CU_ASSERT_EQUAL(m->features, feats);
        CU_ASSERT(m->trained.have && m->random.have);
        char a[32], b[32];
        static const char *const what[] = {"train", "test", "random train", "random test"};
        double json[] = {m->trained.train_acc, m->trained.test_acc, m->random.train_acc, m->random.test_acc};
        double printed[] = {tr, te, rtr, rte};
        for (int k = 0; k < 4; k++) {
            snprintf(a, sizeof a, "%.2f", 100 * json[k]);
            snprintf(b, sizeof b, "%.2f", printed[k]);
            if (strcmp(a, b)) fprintf(stderr, "\nmodule %d %s: eval.json %s, table %s\n", mod, what[k], a, b);
            CU_ASSERT_STRING_EQUAL(a, b);
        }
        CU_ASSERT(isfinite(m->trained.loss) && m->trained.loss > 0);
    }
    CU_ASSERT_EQUAL(rows, 2);
    gim_eval_results_free(&ev);
    /* --out DIR puts it there instead */
    const char *out = tt_path("eval_out");
    char *so = NULL;
    CU_ASSERT_EQUAL(tt_gimc(&so, NULL, "eval -O0 '%s' --data '%s' --random-init --out '%s'", model2, data12, out), 0);
    snprintf(path, sizeof path, "%s/eval.json", out);
    CU_ASSERT_EQUAL_FATAL(gim_eval_read(path, &ev, err, sizeof err), 0);
    CU_ASSERT(ev.weights == NULL);
    CU_ASSERT(ev.n_probes == 1 && ev.probes[0].modules[0].random.have && !ev.probes[0].modules[0].trained.have);
    gim_eval_results_free(&ev);
    gim_free(so);
}

/* run.json: the settings of the run and the command. */
static void test_run_json(void) {
    setup();
    char *text = read_text(run, "run.json");
    CU_ASSERT_FATAL(text != NULL);
    char err[256];
    gim_json_doc *d = gim_json_parse(text, strlen(text), err, sizeof err);
    CU_ASSERT_FATAL(d != NULL);
    const gim_json *root = gim_json_root(d);
    const gim_json *s = gim_json_get(root, "settings");
    CU_ASSERT_FATAL(s != NULL);
    const gim_json *b = gim_json_get(s, "batch"), *e = gim_json_get(s, "epochs");
    CU_ASSERT(b && b->kind == GIM_JSON_NUMBER && b->num == 16);
    CU_ASSERT(e && e->kind == GIM_JSON_NUMBER && e->num == 2);
    const gim_json *c = gim_json_get(root, "command");
    CU_ASSERT(c && c->kind == GIM_JSON_STRING && tt_has(c->str, "--report") && tt_has(c->str, "--epochs 2"));
    const gim_json *m = gim_json_get(root, "model");
    CU_ASSERT(m && m->kind == GIM_JSON_STRING && !strcmp(m->str, "tiny2"));
    gim_json_free(d);
    gim_free(text);
}

int main(void) {
    static const gim_test tests[] = {
        {"report of a short real run", test_report_of_a_run},
        {"plots name every module", test_plots_name_modules},
        {"missing inputs", test_missing_inputs},
        {"broken inputs", test_broken_inputs},
        {"without gnuplot", test_without_gnuplot},
        {"eval: plain progress lines off a terminal", test_eval_plain_progress},
        {"eval.json matches the printed table", test_eval_json_matches_table},
        {"run.json", test_run_json},
        {NULL, NULL},
    };
    return tt_cleanup(gim_run_suite("report", tests));
}
