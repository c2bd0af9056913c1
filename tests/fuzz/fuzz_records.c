/* libFuzzer target for the readers of a run's records (runtime/gim_records.h):
 * metrics.csv, eval.json, and the JSON reader under both (run.json is read
 * by it alone). Any bytes in, a result or an error message out: no crash,
 * no sanitizer report, no leak.
 *
 * The first byte picks the reader (% 3: 0 metrics.csv, 1 eval.json, 2 bare
 * JSON); the rest is the file's text. A result is checked against what the
 * reader promises: metrics rows have modules in range and finite rates;
 * eval scores are fractions; a JSON tree's containers hold what they say. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gim_records.h"
#include "gim_util.h"

static int fuzz_json_walk(const gim_json *j, int depth) {
    if (depth > 64) abort();
    switch (j->kind) {
    case GIM_JSON_STRING:
        if (!j->str) abort();
        return (int)strlen(j->str) & 1;
    case GIM_JSON_NUMBER:
        if (!isfinite(j->num)) abort();
        return 0;
    case GIM_JSON_ARRAY:
    case GIM_JSON_OBJECT: {
        int x = 0;
        for (int i = 0; i < j->n; i++) {
            if (!j->items[i]) abort();
            if (j->kind == GIM_JSON_OBJECT && !j->keys[i]) abort();
            x ^= fuzz_json_walk(j->items[i], depth + 1);
        }
        return x;
    }
    default:
        return 0;
    }
}

/* Also compiled into tests/test_regress.c (with GIM_FUZZ_NO_MAIN), which
 * replays tests/regress/records/ through it. */
void gim_fuzz_records(const uint8_t *data, size_t size) {
    if (size < 1) return;
    char err[512];
    err[0] = 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0: {
        gim_metrics m;
        if (gim_metrics_parse(text, len, "metrics.csv", &m, err, sizeof err)) {
            if (!err[0]) abort();
            return;
        }
        for (int64_t i = 0; i < m.n; i++) {
            const gim_metrics_row *r = &m.rows[i];
            if (r->module < 1 || r->module > m.n_modules || !isfinite(r->examples_per_s) || r->examples_per_s < 0)
                abort();
        }
        gim_metrics_free(&m);
        return;
    }
    case 1: {
        gim_eval_results r;
        if (gim_eval_parse(text, len, "eval.json", &r, err, sizeof err)) {
            if (!err[0]) abort();
            return;
        }
        if (!r.model) abort();
        for (int p = 0; p < r.n_probes; p++)
            for (int i = 0; i < r.probes[p].n_modules; i++) {
                const gim_eval_module *mo = &r.probes[p].modules[i];
                const gim_probe_score *s[2] = {&mo->trained, &mo->random};
                for (int k = 0; k < 2; k++)
                    if (s[k]->have && !(s[k]->train_acc >= 0 && s[k]->train_acc <= 1 && s[k]->test_acc >= 0 &&
                                        s[k]->test_acc <= 1))
                        abort();
            }
        gim_eval_results_free(&r);
        return;
    }
    default: {
        gim_json_doc *d = gim_json_parse(text, len, err, sizeof err);
        if (!d) {
            if (!err[0]) abort();
            return;
        }
        volatile int sink = fuzz_json_walk(gim_json_root(d), 0);
        (void)sink;
        gim_json_free(d);
        return;
    }
    }
}

#ifndef GIM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gim_fuzz_records(data, size);
    return 0;
}
#endif
