/* The reader of metrics.csv, the per-step record gim_train writes (train.c,
 * progress_record): a header line, then `step,epoch,module,loss,examples_per_s`
 * per module per step. A run writes it as it goes, so a reader may meet a
 * last line cut short: that line is left out and said so (torn). */
#include "gim_records.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gim_util.h"

static const char metrics_header[] = "step,epoch,module,loss,examples_per_s";

/* A whole field as an integer in [lo, hi]. */
static bool metrics_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* A whole field as a number; "nan" and "inf" are what printf writes for a
 * loss that stopped a run. */
static bool metrics_num(const char *s, double *out) {
    char *end;
    if (!*s) return false;
    double v = strtod(s, &end);
    if (end == s || *end) return false;
    *out = v;
    return true;
}

int gim_metrics_parse(const char *text, size_t len, const char *name, gim_metrics *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    int64_t cap = 0;
    size_t at = 0;
    int64_t line_no = 0;
    char line[256];
    while (at < len) {
        const char *nl = memchr(text + at, '\n', len - at);
        line_no++;
        if (!nl) {
            m->torn = true;   /* being written */
            break;
        }
        size_t n = (size_t)(nl - (text + at));
        if (n && text[at + n - 1] == '\r') n--;
        if (n >= sizeof line || memchr(text + at, 0, n)) {
            gim_errf(err, errlen, "%s:%lld: not a metrics row (step,epoch,module,loss,examples_per_s)", name,
                     (long long)line_no);
            goto fail;
        }
        memcpy(line, text + at, n);
        line[n] = 0;
        at = (size_t)(nl - text) + 1;
        if (line_no == 1) {
            if (strcmp(line, metrics_header)) {
                gim_errf(err, errlen, "%s:1: expected the header '%s'", name, metrics_header);
                goto fail;
            }
            continue;
        }
        char *field[6];
        int k = 0;
        char *s = line;
        field[k++] = s;
        for (; *s; s++)
            if (*s == ',') {
                *s = 0;
                if (k == 6) break;
                field[k++] = s + 1;
            }
        long long step, epoch, module;
        gim_metrics_row r;
        if (k != 5) {
            gim_errf(err, errlen, "%s:%lld: expected 5 fields (step,epoch,module,loss,examples_per_s); got %d", name,
                     (long long)line_no, k);
            goto fail;
        }
        if (!metrics_int(field[0], 0, INT64_C(1) << 50, &step) || !metrics_int(field[1], 0, INT64_C(1) << 50, &epoch) ||
            !metrics_int(field[2], 1, 4096, &module)) {
            gim_errf(err, errlen, "%s:%lld: step, epoch and module must be whole numbers (module 1 to 4096)", name,
                     (long long)line_no);
            goto fail;
        }
        if (!metrics_num(field[3], &r.loss) || !metrics_num(field[4], &r.examples_per_s) ||
            !isfinite(r.examples_per_s) || r.examples_per_s < 0) {
            gim_errf(err, errlen, "%s:%lld: loss and examples_per_s must be numbers (examples_per_s finite, >= 0)",
                     name, (long long)line_no);
            goto fail;
        }
        r.step = step;
        r.epoch = epoch;
        r.module = (int)module;
        if (m->n == cap) {
            cap = cap ? 2 * cap : 1024;
            gim_metrics_row *grown = gim_realloc(m->rows, sizeof *grown * (size_t)cap);
            if (!grown) {
                gim_errf(err, errlen, "%s: out of memory", name);
                goto fail;
            }
            m->rows = grown;
        }
        m->rows[m->n++] = r;
        if (r.module > m->n_modules) m->n_modules = r.module;
    }
    if (line_no == 0 || (line_no == 1 && m->torn)) {
        gim_errf(err, errlen, "%s: empty (no header line)", name);
        goto fail;
    }
    return 0;
fail:
    gim_metrics_free(m);
    return -1;
}

int gim_metrics_read(const char *path, gim_metrics *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    size_t len;
    char *text = gim_read_file(path, &len);
    if (!text) return gim_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    int rc = gim_metrics_parse(text, len, path, m, err, errlen);
    gim_free(text);
    return rc;
}

void gim_metrics_free(gim_metrics *m) {
    gim_free(m->rows);
    memset(m, 0, sizeof *m);
}
