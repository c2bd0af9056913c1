/* The report page of a run: RUN_DIR/report.html, one file with everything
 * inlined (styles, and each plot an SVG in a data: URI), from what the run
 * directory holds:
 *
 *   run.json     the settings and the model's table     (gimc train)
 *   metrics.csv  each module's loss per step, examples/s (gimc train)
 *   eval.json    the probe's accuracies per module       (gimc eval)
 *
 * A missing file leaves its section saying what is missing and how to make
 * it; a broken one says what is wrong (file and line) in its place, and the
 * page is still written. The plots are gnuplot's: the data go to files in a
 * temporary directory beside a script per figure (gnuplot.c). */
#include "report.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gim_records.h"
#include "gim_util.h"

typedef struct report {
    const char *dir;
    char tmp[4096];            /* the plots' working directory */
    gim_sb html;
    gim_sb problems;           /* broken inputs, a line each */
    int n_figures;
} report;

/* Line colours per module: a light one for the raw curve, a dark one for the
 * smoothed curve and the bars (ColorBrewer "Paired"). */
static const char *const light[] = {"#a6cee3", "#fdbf6f", "#b2df8a", "#fb9a99", "#cab2d6", "#ffff99"};
static const char *const dark[] = {"#1f78b4", "#ff7f00", "#33a02c", "#e31a1c", "#6a3d9a", "#b15928"};
#define N_COLOURS 6

static void html_text(gim_sb *sb, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': gim_sb_puts(sb, "&lt;"); break;
        case '>': gim_sb_puts(sb, "&gt;"); break;
        case '&': gim_sb_puts(sb, "&amp;"); break;
        case '"': gim_sb_puts(sb, "&quot;"); break;
        default: gim_sb_putc(sb, *s);
        }
    }
}

static void base64(gim_sb *sb, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        gim_sb_putc(sb, tab[v >> 18 & 63]);
        gim_sb_putc(sb, tab[v >> 12 & 63]);
        gim_sb_putc(sb, i + 1 < n ? tab[v >> 6 & 63] : '=');
        gim_sb_putc(sb, i + 2 < n ? tab[v & 63] : '=');
    }
}

static void problem(report *r, const char *msg) {
    gim_sb_printf(&r->problems, "%s%s", r->problems.len ? "\n" : "", msg);
    gim_sb_puts(&r->html, "<p class=\"broken\">");
    html_text(&r->html, msg);
    gim_sb_puts(&r->html, "</p>\n");
}

static void missing(report *r, const char *msg) {
    gim_sb_puts(&r->html, "<p class=\"missing\">");
    html_text(&r->html, msg);
    gim_sb_puts(&r->html, "</p>\n");
}

static FILE *tmp_open(report *r, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", r->tmp, name);
    return fopen(path, "w");
}

/* One figure: `body` (gnuplot commands after the terminal and output are
 * set) drawn into an SVG that goes into the page as a data: URI. */
static int figure(report *r, const char *name, const char *body, const char *caption, char *err, size_t errlen) {
    char script[64], svg[64], path[4200];
    snprintf(script, sizeof script, "%s.gp", name);
    snprintf(svg, sizeof svg, "%s.svg", name);
    FILE *f = tmp_open(r, script);
    if (!f) return gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
    fprintf(f, "set terminal svg size 860,380 dynamic font 'sans,12' background '#ffffff'\n"
               "set output '%s'\nset grid lc rgb '#dddddd'\nset border lc rgb '#444444'\n%s\nunset output\n",
            svg, body);
    if (fclose(f)) return gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
    if (gim_gnuplot_run(r->tmp, script, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/%s", r->tmp, svg);
    size_t len;
    char *text = gim_read_file(path, &len);
    if (!text || len == 0 || !strstr(text, "<svg")) {
        gim_free(text);
        return gim_errf(err, errlen, "gnuplot wrote no SVG for the figure '%s'", caption);
    }
    r->n_figures++;
    gim_sb_printf(&r->html, "<figure id=\"%s\"><img alt=\"", name);
    html_text(&r->html, caption);
    gim_sb_puts(&r->html, "\" src=\"data:image/svg+xml;base64,");
    base64(&r->html, (const unsigned char *)text, len);
    gim_sb_puts(&r->html, "\"><figcaption>");
    html_text(&r->html, caption);
    gim_sb_puts(&r->html, "</figcaption></figure>\n");
    gim_free(text);
    return 0;
}

static char *read_if_present(const char *dir, const char *name, char *path, size_t n, size_t *len, bool *present) {
    snprintf(path, n, "%s/%s", dir, name);
    char *text = gim_read_file(path, len);
    *present = text != NULL || errno != ENOENT;
    return text;
}

/* ---- settings and the model's table (run.json) ------------------------------------------ */

static void json_value_text(gim_sb *sb, const gim_json *v) {
    switch (v->kind) {
    case GIM_JSON_STRING: html_text(sb, v->str); break;
    case GIM_JSON_NUMBER: gim_sb_printf(sb, "%.10g", v->num); break;
    case GIM_JSON_BOOL: gim_sb_puts(sb, v->boolean ? "yes" : "no"); break;
    case GIM_JSON_NULL: gim_sb_puts(sb, "-"); break;
    default: gim_sb_puts(sb, "(nested)"); break;
    }
}

static const gim_json *section_run(report *r, const gim_json_doc **doc_out) {
    char path[4200], err[512];
    size_t len;
    bool present;
    char *text = read_if_present(r->dir, "run.json", path, sizeof path, &len, &present);
    *doc_out = NULL;
    gim_sb_puts(&r->html, "<h2>Settings</h2>\n");
    if (!text) {
        if (present) {
            char msg[4400];
            snprintf(msg, sizeof msg, "cannot read %s: %s", path, strerror(errno));
            problem(r, msg);
        } else {
            missing(r, "No run.json: the settings are recorded by gimc train when it starts (runs trained "
                       "before it did so have none).");
        }
        gim_sb_puts(&r->html, "<h2>Model</h2>\n");
        missing(r, "The model's table comes from run.json.");
        return NULL;
    }
    gim_json_doc *doc = gim_json_parse(text, len, err, sizeof err);
    gim_free(text);
    const gim_json *root = doc ? gim_json_root(doc) : NULL;
    const gim_json *settings = gim_json_get(root, "settings");
    if (!root || root->kind != GIM_JSON_OBJECT || !settings || settings->kind != GIM_JSON_OBJECT) {
        char msg[4800];
        if (!doc) snprintf(msg, sizeof msg, "%s:%s", path, err);
        else snprintf(msg, sizeof msg, "%s: expected an object with \"settings\" (an object)", path);
        problem(r, msg);
        gim_json_free(doc);
        gim_sb_puts(&r->html, "<h2>Model</h2>\n");
        missing(r, "The model's table comes from run.json.");
        return NULL;
    }
    gim_sb_puts(&r->html, "<table class=\"settings\">\n");
    static const char *const top[] = {"model", "model_file", "command", "started", "gimc"};
    static const char *const shown[] = {"model", "model file", "command", "started (UTC)", "gimc"};
    for (int i = 0; i < 5; i++) {
        const gim_json *v = gim_json_get(root, top[i]);
        if (!v) continue;
        gim_sb_printf(&r->html, "<tr><th>%s</th><td>", shown[i]);
        json_value_text(&r->html, v);
        gim_sb_puts(&r->html, "</td></tr>\n");
    }
    for (int i = 0; i < settings->n; i++) {
        gim_sb_puts(&r->html, "<tr><th>");
        html_text(&r->html, settings->keys[i]);
        gim_sb_puts(&r->html, "</th><td>");
        json_value_text(&r->html, settings->items[i]);
        gim_sb_puts(&r->html, "</td></tr>\n");
    }
    gim_sb_puts(&r->html, "</table>\n<h2>Model</h2>\n");
    const gim_json *table = gim_json_get(root, "check_table");
    if (table && table->kind == GIM_JSON_STRING) {
        gim_sb_puts(&r->html, "<pre class=\"table\">");
        html_text(&r->html, table->str);
        gim_sb_puts(&r->html, "</pre>\n");
    } else {
        missing(r, "run.json holds no model table (check_table).");
    }
    *doc_out = doc;
    return root;
}

/* ---- training curves (metrics.csv) -------------------------------------------------------- */

/* Raw points kept per module: beyond this every k-th is drawn (the
 * smoothed curve still sees every step). */
#define RAW_POINTS 4000

static int section_training(report *r, char *err, size_t errlen) {
    char path[4200], msg[1400];
    snprintf(path, sizeof path, "%s/metrics.csv", r->dir);
    gim_sb_puts(&r->html, "<h2>Training</h2>\n");
    gim_metrics mt;
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        missing(r, "No metrics.csv yet: gimc train writes a row per module per step into it.");
        return 0;
    }
    if (gim_metrics_read(path, &mt, msg, sizeof msg)) {
        problem(r, msg);
        return 0;
    }
    if (mt.n == 0) {
        missing(r, "metrics.csv has no rows yet: no step has finished.");
        gim_metrics_free(&mt);
        return 0;
    }
    int nm = mt.n_modules;
    int64_t *count = gim_calloc((size_t)nm + 1, sizeof(int64_t));
    if (!count) {
        gim_metrics_free(&mt);
        return gim_errf(err, errlen, "out of memory");
    }
    for (int64_t i = 0; i < mt.n; i++) count[mt.rows[i].module]++;
    /* loss: a data file per module, "step raw smoothed" */
    gim_sb body = {0};
    gim_sb_puts(&body, "set xlabel 'step'\nset ylabel 'loss'\nset key outside right top\nset datafile missing '?'\nplot");
    bool any = false;
    gim_sb notes = {0};
    int64_t span_shown = 0;
    for (int mo = 1; mo <= nm; mo++) {
        if (!count[mo]) continue;
        char name[64];
        snprintf(name, sizeof name, "loss_m%d.dat", mo);
        FILE *f = tmp_open(r, name);
        if (!f) {
            gim_sb_free(&body);
            gim_sb_free(&notes);
            gim_free(count);
            gim_metrics_free(&mt);
            return gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
        }
        /* smoothed: an exponential moving average over about 1/30 of the
         * module's steps (at least 1, at most 200), debiased at the start */
        int64_t span = count[mo] / 30;
        if (span < 1) span = 1;
        if (span > 200) span = 200;
        if (span > span_shown) span_shown = span;
        double beta = 1.0 - 2.0 / ((double)span + 1.0), ema = 0, weight = 0;
        int64_t every = (count[mo] + RAW_POINTS - 1) / RAW_POINTS, k = 0;
        bool stopped = false;
        for (int64_t i = 0; i < mt.n; i++) {
            const gim_metrics_row *row = &mt.rows[i];
            if (row->module != mo) continue;
            if (!isfinite(row->loss)) {
                if (!stopped)
                    gim_sb_printf(&notes, "module %d's loss was %s at step %lld. ", mo,
                                  isnan(row->loss) ? "NaN" : "infinite", (long long)row->step);
                stopped = true;
                continue;
            }
            ema = beta * ema + (1 - beta) * row->loss;
            weight = beta * weight + (1 - beta);
            if (k++ % every == 0 || i == mt.n - 1) fprintf(f, "%lld %.6g %.6g\n", (long long)row->step, row->loss, ema / weight);
        }
        if (fclose(f)) {
            gim_sb_free(&body);
            gim_sb_free(&notes);
            gim_free(count);
            gim_metrics_free(&mt);
            return gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
        }
        int c = (mo - 1) % N_COLOURS;
        gim_sb_printf(&body,
                      "%s '%s' using 1:2 with lines lc rgb '%s' lw 1 notitle, '%s' using 1:3 with lines lc rgb '%s' lw 2.5 "
                      "title 'module %d'",
                      any ? "," : "", name, light[c], name, dark[c], mo);
        any = true;
    }
    gim_sb_putc(&body, '\n');
    char caption[512];
    snprintf(caption, sizeof caption,
             "Each module's training loss against steps: raw (light) and smoothed (dark: an exponential moving "
             "average over about %lld steps).",
             (long long)span_shown);
    int rc = figure(r, "loss", body.buf, caption, err, errlen);
    if (!rc && notes.len) missing(r, notes.buf);
    if (!rc && mt.torn) missing(r, "metrics.csv ends in a line being written; it is left out.");
    /* examples/s: one curve when every module's row of a step says the same
     * (simultaneous and async runs write the run's rate), else one per module */
    bool same = true;
    for (int64_t i = 1; i < mt.n && same; i++)
        if (mt.rows[i].step == mt.rows[i - 1].step && mt.rows[i].examples_per_s != mt.rows[i - 1].examples_per_s)
            same = false;
    gim_sb_free(&body);
    gim_sb_puts(&body, "set xlabel 'step'\nset ylabel 'examples/s'\nset yrange [0:*]\nset key outside right top\nplot");
    any = false;
    for (int mo = 1; !rc && mo <= nm; mo++) {
        if (!count[mo] || (same && any)) continue;
        char name[64];
        snprintf(name, sizeof name, "rate_m%d.dat", mo);
        FILE *f = tmp_open(r, name);
        if (!f) {
            rc = gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
            break;
        }
        int64_t every = (count[mo] + RAW_POINTS - 1) / RAW_POINTS, k = 0;
        for (int64_t i = 0; i < mt.n; i++)
            if (mt.rows[i].module == mo && k++ % every == 0)
                fprintf(f, "%lld %.6g\n", (long long)mt.rows[i].step, mt.rows[i].examples_per_s);
        if (fclose(f)) {
            rc = gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
            break;
        }
        int c = (mo - 1) % N_COLOURS;
        if (same) gim_sb_printf(&body, " '%s' using 1:2 with lines lc rgb '%s' lw 2 title 'the run'", name, dark[c]);
        else gim_sb_printf(&body, "%s '%s' using 1:2 with lines lc rgb '%s' lw 2 title 'module %d'", any ? "," : "",
                           name, dark[c], mo);
        any = true;
    }
    gim_sb_putc(&body, '\n');
    if (!rc)
        rc = figure(r, "rate", body.buf,
                    "Examples per second over the run (each row of metrics.csv: the rate over the second before it).",
                    err, errlen);
    gim_sb_free(&body);
    gim_sb_free(&notes);
    gim_free(count);
    gim_metrics_free(&mt);
    return rc;
}

/* ---- the probe (eval.json) ------------------------------------------------------------------ */

static void pct_cell(gim_sb *sb, const gim_probe_score *s, bool test) {
    if (!s->have) gim_sb_puts(sb, "<td>-</td>");
    else gim_sb_printf(sb, "<td>%.2f%%</td>", 100 * (test ? s->test_acc : s->train_acc));
}

static int section_eval(report *r, char *err, size_t errlen) {
    char path[4200], msg[1400];
    snprintf(path, sizeof path, "%s/eval.json", r->dir);
    gim_sb_puts(&r->html, "<h2>Linear probe</h2>\n");
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        char m[4600];
        snprintf(m, sizeof m,
                 "Not evaluated yet: gimc eval MODEL.gim --weights %s/weights.safetensors --compare-random writes "
                 "eval.json here.",
                 r->dir);
        missing(r, m);
        return 0;
    }
    gim_eval_results ev;
    if (gim_eval_read(path, &ev, msg, sizeof msg)) {
        problem(r, msg);
        return 0;
    }
    gim_sb_puts(&r->html, "<p>");
    if (ev.weights) {
        gim_sb_puts(&r->html, "Weights ");
        html_text(&r->html, ev.weights);
    } else {
        gim_sb_puts(&r->html, "The encoder at its random initialisation");
    }
    gim_sb_puts(&r->html, ", data ");
    html_text(&r->html, ev.data ? ev.data : "?");
    gim_sb_printf(&r->html, ", seed %llu", (unsigned long long)ev.seed);
    if (isfinite(ev.seconds)) gim_sb_printf(&r->html, "; evaluated in %.0f s", ev.seconds);
    gim_sb_puts(&r->html, ".</p>\n");
    int rc = 0;
    for (int p = 0; p < ev.n_probes && !rc; p++) {
        const gim_eval_probe *pr = &ev.probes[p];
        bool have_t = false, have_r = false;
        for (int i = 0; i < pr->n_modules; i++) {
            have_t = have_t || pr->modules[i].trained.have;
            have_r = have_r || pr->modules[i].random.have;
        }
        char name[64];
        snprintf(name, sizeof name, "probe%d.dat", p + 1);
        FILE *f = tmp_open(r, name);
        if (!f) {
            rc = gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
            break;
        }
        double lo = 100;
        for (int i = 0; i < pr->n_modules; i++) {
            const gim_eval_module *mo = &pr->modules[i];
            fprintf(f, "\"module %d\"", mo->module);
            if (mo->trained.have) fprintf(f, " %.4f", 100 * mo->trained.test_acc), lo = fmin(lo, 100 * mo->trained.test_acc);
            else fprintf(f, " ?");
            if (mo->random.have) fprintf(f, " %.4f", 100 * mo->random.test_acc), lo = fmin(lo, 100 * mo->random.test_acc);
            else fprintf(f, " ?");
            fputc('\n', f);
        }
        if (fclose(f)) {
            rc = gim_errf(err, errlen, "cannot write in %s: %s", r->tmp, strerror(errno));
            break;
        }
        gim_sb body = {0};
        /* the axis from a little under the lowest bar: differences of a
         * point or two are what there is to see */
        double ymin = floor((lo - 5) / 5) * 5;
        if (ymin < 0) ymin = 0;
        gim_sb_printf(&body,
                      "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.85 "
                      "border -1\nset boxwidth 0.9\nset datafile missing '?'\nset ylabel 'test accuracy (%%)'\n"
                      "set yrange [%g:100]\nset key outside right top\nset grid noxtics ytics\nplot",
                      ymin);
        bool any = false;
        if (have_t) {
            gim_sb_printf(&body, " '%s' using 2:xtic(1) lc rgb '%s' title 'trained'", name, dark[0]);
            any = true;
        }
        if (have_r)
            gim_sb_printf(&body, "%s '%s' using 3%s lc rgb '%s' title 'random init'", any ? "," : "", name,
                          any ? "" : ":xtic(1)", light[0]);
        gim_sb_putc(&body, '\n');
        char caption[600], fig[32];
        snprintf(caption, sizeof caption,
                 "Test accuracy of a linear probe (%s: %d classes) on each module's %s features, %s.", pr->task,
                 pr->classes, pr->features, have_t && have_r ? "trained beside random initialisation" :
                 have_t ? "trained encoder" : "random initialisation");
        snprintf(fig, sizeof fig, "probe%d", p + 1);
        if (have_t || have_r) rc = figure(r, fig, body.buf, caption, err, errlen);
        gim_sb_free(&body);
        if (rc) break;
        gim_sb_printf(&r->html,
                      "<table class=\"probe\"><tr><th>module</th><th>features</th><th>train acc</th><th>test "
                      "acc</th><th>random train</th><th>random test</th><th>trained &minus; random (test)</th></tr>\n");
        for (int i = 0; i < pr->n_modules; i++) {
            const gim_eval_module *mo = &pr->modules[i];
            gim_sb_printf(&r->html, "<tr><td>%d</td><td>%lld</td>", mo->module, (long long)mo->features);
            pct_cell(&r->html, &mo->trained, false);
            pct_cell(&r->html, &mo->trained, true);
            pct_cell(&r->html, &mo->random, false);
            pct_cell(&r->html, &mo->random, true);
            if (mo->trained.have && mo->random.have)
                gim_sb_printf(&r->html, "<td>%+.2f</td>", 100 * (mo->trained.test_acc - mo->random.test_acc));
            else
                gim_sb_puts(&r->html, "<td>-</td>");
            gim_sb_puts(&r->html, "</tr>\n");
        }
        gim_sb_printf(&r->html, "</table>\n<p class=\"note\">%lld training and %lld test examples; the probe: a "
                                "softmax classifier, Adam lr %g, %d epochs, batch %d, standardised features.</p>\n",
                      (long long)pr->train_examples, (long long)pr->test_examples, pr->lr, pr->epochs, pr->batch);
    }
    gim_eval_results_free(&ev);
    return rc;
}

/* ---- the page ------------------------------------------------------------------------------ */

static const char page_style[] =
    "body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
    "h1{font-size:1.5em;margin-bottom:0.2em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:0.5em 0}th,td{padding:0.25em 0.8em;border-bottom:1px solid #eee;"
    "text-align:left}table.probe td{text-align:right;font-variant-numeric:tabular-nums}"
    "pre.table{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.85em}"
    "figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:0.9em;color:#555}"
    ".missing{color:#666;font-style:italic}.broken{color:#a00;font-weight:bold}.note{font-size:0.9em;color:#555}"
    ".sub{color:#666}";

static void remove_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4400];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int gim_report_write(const char *run_dir, const char *out_path, char *err, size_t errlen) {
    struct stat st;
    if (stat(run_dir, &st)) return gim_errf(err, errlen, "cannot read %s: %s", run_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return gim_errf(err, errlen, "%s is not a directory (a run's output directory)", run_dir);
    static const char *const inputs[] = {"metrics.csv", "run.json", "eval.json"};
    bool any = false;
    for (int i = 0; i < 3; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", run_dir, inputs[i]);
        any = any || access(p, F_OK) == 0;
    }
    if (!any)
        return gim_errf(err, errlen, "%s holds no run: no metrics.csv, run.json or eval.json (gimc train --out %s writes them)",
                        run_dir, run_dir);
    if (gim_gnuplot_check(err, errlen)) return -1;
    report r = {.dir = run_dir};
    const char *tmpdir = getenv("TMPDIR");
    snprintf(r.tmp, sizeof r.tmp, "%s/gim-report.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(r.tmp)) return gim_errf(err, errlen, "cannot make a temporary directory %s: %s", r.tmp, strerror(errno));
    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    gim_sb body = {0};
    r.html = body;
    const gim_json_doc *run_doc = NULL;
    /* the sections go to r.html; the page is assembled around them */
    const gim_json *run = section_run(&r, &run_doc);
    int rc = section_training(&r, err, errlen);
    if (!rc) rc = section_eval(&r, err, errlen);
    remove_tmp(r.tmp);
    if (rc) {
        gim_json_free((gim_json_doc *)run_doc);
        gim_sb_free(&r.html);
        gim_sb_free(&r.problems);
        return -1;
    }
    const gim_json *model = gim_json_get(run, "model");
    gim_sb page = {0};
    gim_sb_puts(&page, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>gim run ");
    html_text(&page, model && model->kind == GIM_JSON_STRING ? model->str : run_dir);
    gim_sb_printf(&page, "</title>\n<style>%s</style></head>\n<body>\n<h1>", page_style);
    if (model && model->kind == GIM_JSON_STRING) {
        html_text(&page, model->str);
        gim_sb_puts(&page, " <span class=\"sub\">");
        html_text(&page, run_dir);
        gim_sb_puts(&page, "</span>");
    } else {
        html_text(&page, run_dir);
    }
    gim_sb_printf(&page, "</h1>\n<p class=\"note\">gimc report, %s.</p>\n", when);
    gim_sb_puts(&page, r.html.buf ? r.html.buf : "");
    gim_sb_puts(&page, "</body></html>\n");
    gim_json_free((gim_json_doc *)run_doc);
    gim_sb_free(&r.html);
    /* written whole or not at all: a browser reloading during a run sees the
     * previous page or this one */
    char path[4200], tmp[4300];
    if (out_path) snprintf(path, sizeof path, "%s", out_path);
    else snprintf(path, sizeof path, "%s/report.html", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    bool bad = !f;
    if (f) {
        bad = fwrite(page.buf, 1, page.len, f) != page.len;
        bad = fclose(f) != 0 || bad;
    }
    gim_sb_free(&page);
    if (bad || rename(tmp, path)) {
        gim_errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        gim_sb_free(&r.problems);
        return -1;
    }
    rc = 0;
    if (r.problems.len) {
        gim_errf(err, errlen, "%s", r.problems.buf);
        rc = 1;
    }
    gim_sb_free(&r.problems);
    return rc;
}
