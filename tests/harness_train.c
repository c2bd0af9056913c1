#include "harness_train.h"

#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "gim_util.h"
#include "testutil.h"

const char *tt_path(const char *name) {
    return gim_tmppath(name);   /* kept reachable until exit: no leak under LeakSanitizer */
}

const char *tt_weights(const char *dir) {
    static char **kept;   /* reachable until exit, like tt_path's paths */
    static int n_kept, cap_kept;
    size_t n = strlen(dir) + sizeof "/weights.safetensors";
    char *p = gim_xmalloc(n);
    snprintf(p, n, "%s/weights.safetensors", dir);
    if (n_kept == cap_kept) {
        cap_kept = cap_kept ? 2 * cap_kept : 32;
        kept = gim_xrealloc(kept, sizeof *kept * (size_t)cap_kept);
    }
    kept[n_kept++] = p;
    return p;
}

int tt_gimc(char **out, char **err, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *o = NULL, *e = NULL;
    int rc = gim_run_gimc(args, &o, &e);
    if (out) *out = o;
    else gim_free(o);
    if (err) *err = e;
    else gim_free(e);
    return rc;
}

/* ---- the data set ----------------------------------------------------------- */

typedef struct tt_bytes {
    uint8_t *p;
    size_t n, cap;
} tt_bytes;

static void put8(tt_bytes *b, uint8_t v) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = gim_xrealloc(b->p, b->cap);
    }
    b->p[b->n++] = v;
}

static void put32(tt_bytes *b, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) put8(b, (uint8_t)(v >> s));
}

static uint32_t tt_rng = 12345;
static double uniform(void) {
    tt_rng ^= tt_rng << 13;
    tt_rng ^= tt_rng >> 17;
    tt_rng ^= tt_rng << 5;
    return (tt_rng >> 8) * (1.0 / 16777216.0);
}

static void write_bytes(const char *dir, const char *name, const tt_bytes *b, bool gz) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, gz ? ".gz" : "");
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f || gzwrite(f, b->p, (unsigned)b->n) != (int)b->n) {
            perror(path);
            exit(2);
        }
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b->p, 1, b->n, f) != b->n) {
            perror(path);
            exit(2);
        }
        fclose(f);
    }
}

static void write_split(const char *dir, const char *prefix, int side, int n, bool gz) {
    tt_bytes img = {0}, lab = {0};
    put32(&img, 0x803);
    put32(&img, (uint32_t)n);
    put32(&img, (uint32_t)side);
    put32(&img, (uint32_t)side);
    put32(&lab, 0x801);
    put32(&lab, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        int c = i % 10;
        double period = 2.0 + 0.6 * c, phase = uniform() * period;
        for (int r = 0; r < side; r++)
            for (int k = 0; k < side; k++) {
                double v = 128 + 90 * sin(2 * M_PI * (k + phase) / period) + 40 * (uniform() - 0.5);
                put8(&img, (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v));
            }
        put8(&lab, (uint8_t)c);
    }
    char name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    write_bytes(dir, name, &img, gz);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    write_bytes(dir, name, &lab, false);
    gim_free(img.p);
    gim_free(lab.p);
}

const char *tt_dataset(const char *name, int side, int n_train, int n_test, bool gz) {
    const char *dir = tt_path(name);
    mkdir(dir, 0755);
    tt_rng = 12345;
    write_split(dir, "train", side, n_train, gz);
    write_split(dir, "t10k", side, n_test, false);
    return dir;
}

/* ---- models ------------------------------------------------------------------- */

const char *tt_model(const char *name, int side, int modules) {
    char text[2048];
    int at = snprintf(text, sizeof text,
                      "model tiny%d {\n"
                      "    input x: [batch, 1, %d, %d]\n"
                      "    p = patches(x, size=4, stride=2)\n"
                      "    h1 = relu(conv2d(p, 4, k=3, pad=1))\n"
                      "    infonce(spatial_mean(h1), steps=2, negatives=4)\n",
                      modules, side, side);
    if (modules >= 2)
        at += snprintf(text + at, sizeof text - (size_t)at,
                       "    h2 = relu(conv2d(gradient_block(h1), 8, k=3, stride=2, pad=1))\n"
                       "    infonce(spatial_mean(h2), steps=2, negatives=4)\n");
    if (modules >= 3)
        at += snprintf(text + at, sizeof text - (size_t)at,
                       "    h3 = relu(conv2d(gradient_block(h2), 8, k=3, pad=1))\n"
                       "    infonce(spatial_mean(h3), steps=2, negatives=4)\n");
    at += snprintf(text + at, sizeof text - (size_t)at,
                   "    output spatial_mean(h%d)\n"
                   "}\n"
                   "train {\n"
                   "    batch 16\n"
                   "    epochs 1\n"
                   "    optimizer adam(lr=1e-2)\n"
                   "    seed 0\n"
                   "}\n",
                   modules);
    return gim_tmpfile(name, text, (size_t)at);
}

/* ---- metrics ------------------------------------------------------------------ */

int tt_metrics(const char *dir, tt_row **rows) {
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    *rows = NULL;
    size_t len;
    char *text = gim_read_file(path, &len);
    if (!text) return -1;
    const char *header = "step,epoch,module,loss,examples_per_s\n";
    if (strncmp(text, header, strlen(header))) {
        gim_free(text);
        return -1;
    }
    int n = 0, cap = 0;
    tt_row *r = NULL;
    char *line = text + strlen(header);
    while (*line) {
        char *nl = strchr(line, '\n');
        if (!nl) {   /* a line without its newline: a torn write */
            n = -1;
            break;
        }
        *nl = 0;
        tt_row x;
        long long step, epoch;
        int used = 0;
        if (sscanf(line, "%lld,%lld,%d,%lf,%lf%n", &step, &epoch, &x.module, &x.loss, &x.rate, &used) != 5 ||
            line[used]) {
            n = -1;
            break;
        }
        x.step = step;
        x.epoch = epoch;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            r = gim_xrealloc(r, sizeof *r * (size_t)cap);
        }
        r[n++] = x;
        line = nl + 1;
    }
    gim_free(text);
    if (n < 0) {
        gim_free(r);
        return -1;
    }
    *rows = r;
    return n;
}

int tt_count(const tt_row *rows, int n, int module) {
    int c = 0;
    for (int i = 0; i < n; i++) c += rows[i].module == module;
    return c;
}

double tt_mean_loss(const tt_row *rows, int n, int module, int k, bool from_end) {
    double sum = 0;
    int got = 0;
    if (from_end) {
        for (int i = n - 1; i >= 0 && got < k; i--)
            if (rows[i].module == module) sum += rows[i].loss, got++;
    } else {
        for (int i = 0; i < n && got < k; i++)
            if (rows[i].module == module) sum += rows[i].loss, got++;
    }
    return got == k && k > 0 ? sum / k : NAN;
}

/* ---- files and processes -------------------------------------------------------- */

bool tt_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = gim_read_file(a, &na), *y = gim_read_file(b, &nb);
    bool same = x && y && na == nb && memcmp(x, y, na) == 0;
    gim_free(x);
    gim_free(y);
    return same;
}

bool tt_has(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

int tt_spawn_gimc(const char *args, const char **out_path) {
    static int count;
    static char out[1024];
    snprintf(out, sizeof out, "%s/bg.%d.out", gim_tmpdir(), count);
    if (out_path) *out_path = out;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec '%s' %s >'%s/bg.%d.out' 2>'%s/bg.%d.err' </dev/null", GIMC_PATH, args,
             gim_tmpdir(), count, gim_tmpdir(), count);
    count++;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return (int)pid;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int tt_cleanup(int status) {
    if (status == 0) nftw(gim_tmpdir(), remove_one, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}
