/* Caches of module outputs over the training set (see train_internal.h):
 * sizing and the free-space check, the memory-mapped unlinked file,
 * float32 or bfloat16 storage, and one module's pass that fills them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "gim_util.h"
#include "train_internal.h"

/* ---- bfloat16 --------------------------------------------------------------------- */

uint16_t rt_bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    /* NaN: truncating could clear every mantissa bit left and make an
     * infinity; set the quiet bit instead */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    /* Adding 0x7fff rounds up exactly when the dropped half is above one
     * half; the kept part's lowest bit adds one more on a tie, so a tie
     * rounds up only from an odd value: ties to even. A carry out of the
     * mantissa moves to the next binade (or to infinity), as it should. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float rt_f32_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

const char *rt_cache_dtype_name(gim_cache_dtype t) { return t == GIM_CACHE_BF16 ? "bf16" : "f32"; }

static size_t dtype_size(gim_cache_dtype t) { return t == GIM_CACHE_BF16 ? sizeof(uint16_t) : sizeof(float); }

uint64_t rt_cache_bytes(int64_t n, int64_t per_example, gim_cache_dtype t) {
    return (uint64_t)n * (uint64_t)per_example * dtype_size(t);
}

/* ---- which slots, how much room ----------------------------------------------------- */

int rt_cache_slots(const gim_exec_model *m, bool *cached, const char *who, char *err, size_t errlen) {
    for (int i = 0; i < m->n_slots; i++) cached[i] = false;
    for (int mi = 0; mi < m->n_modules; mi++)
        for (int k = 0; k < m->modules[mi].n_inputs; k++) {
            int sl = m->modules[mi].inputs[k];
            if (m->slots[sl].producer < 0 || m->slots[sl].producer == mi) continue;
            if (m->slots[sl].rank < 1 || m->slots[sl].shape[0] != m->batch) {
                gim_errf(err, errlen, "%s caches module outputs per example, but '%s' does not have the batch as "
                         "its first dimension", who, m->slots[sl].name);
                return -1;
            }
            cached[sl] = true;
        }
    return 0;
}

static double gib(uint64_t b) { return (double)b / (double)(1u << 30); }

const char *rt_cache_size_text(char *buf, size_t n, uint64_t bytes) {
    double b = (double)bytes;
    if (b >= (double)(1u << 30)) snprintf(buf, n, "%.2f GiB", b / (double)(1u << 30));
    else if (b >= (double)(1u << 20)) snprintf(buf, n, "%.1f MiB", b / (double)(1u << 20));
    else snprintf(buf, n, "%.1f KiB", b / 1024.0);
    return buf;
}

int rt_cache_check_room(const char *dir, uint64_t need, const char *what, gim_cache_dtype t, char *err,
                        size_t errlen) {
    const char *where = dir ? dir : "/tmp";
    struct statvfs sv;
    if (statvfs(where, &sv)) {
        gim_errf(err, errlen, "cannot see the free space in %s for %s: %s", where, what, strerror(errno));
        return -1;
    }
    /* f_bavail: what an unprivileged writer may still take */
    uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    if (need <= avail) return 0;
    /* say whether bf16 would do */
    char way[160];
    if (t == GIM_CACHE_F32 && need / 2 <= avail)
        snprintf(way, sizeof way, "use --cache-dtype bf16 (half the size: %.2f GiB, which fits) or ", gib(need / 2));
    else if (t == GIM_CACHE_F32)
        snprintf(way, sizeof way, "--cache-dtype bf16 would halve it to %.2f GiB, still too much; use ", gib(need / 2));
    else
        snprintf(way, sizeof way, "use ");
    gim_errf(err, errlen,
             "not enough disk for %s: it needs %.2f GiB (%" PRIu64 " bytes) in %s, whose file system has %.2f GiB "
             "(%" PRIu64 " bytes) free; %s--out on a larger disk",
             what, gib(need), need, where, gib(avail), avail, way);
    return -1;
}

/* ---- the file ------------------------------------------------------------------------- */

static int cache_open(rt_cache *c, const char *dir, int64_t n, int64_t per_example, gim_cache_dtype t,
                      char *err, size_t errlen) {
    const char *where = dir ? dir : "/tmp";
    memset(c, 0, sizeof *c);
    c->n = n;
    c->per_example = per_example;
    c->dtype = t;
    c->bytes = (size_t)rt_cache_bytes(n, per_example, t);
    char path[4096];
    snprintf(path, sizeof path, "%s/.cache.XXXXXX", where);
    int fd = mkstemp(path);
    if (fd < 0) {
        gim_errf(err, errlen, "cannot create a cache file in %s: %s", where, strerror(errno));
        return -1;
    }
    /* gone from the directory at once: the blocks live while mapped */
    unlink(path);
    int e = posix_fallocate(fd, 0, (off_t)c->bytes);
    if (e) {
        close(fd);
        gim_errf(err, errlen, "cannot reserve %.2f GiB for a cache in %s: %s", gib(c->bytes), where, strerror(e));
        return -1;
    }
    c->data = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (c->data == MAP_FAILED) {
        c->data = NULL;
        gim_errf(err, errlen, "cannot map a cache of %.2f GiB: %s", gib(c->bytes), strerror(errno));
        return -1;
    }
    return 0;
}

void rt_cache_close(rt_cache *c) {
    if (c->data) munmap(c->data, c->bytes);
    c->data = NULL;
}

int rt_cache_open_slots(rt_cache *caches, const bool *want, const gim_exec_model *m, const char *dir, int64_t n,
                        gim_cache_dtype t, FILE *out, const char *what, char *err, size_t errlen) {
    uint64_t need = 0;
    for (int i = 0; i < m->n_slots; i++)
        if (want[i] && !caches[i].data) need += rt_cache_bytes(n, m->slots[i].numel / m->batch, t);
    if (need == 0) return 0;
    if (out) {
        char size[32];
        fprintf(out, "%s: %s (%" PRIu64 " bytes, %s) in %s/.cache.* (deleted at once: freed when the run ends)\n",
                what, rt_cache_size_text(size, sizeof size, need), need, rt_cache_dtype_name(t), dir ? dir : "/tmp");
        fflush(out);
    }
    if (rt_cache_check_room(dir, need, what, t, err, errlen)) return -1;
    bool *opened = gim_calloc((size_t)m->n_slots, sizeof(bool));
    if (!opened) {
        gim_errf(err, errlen, "out of memory for the caches");
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < m->n_slots && rc == 0; i++) {
        if (!want[i] || caches[i].data) continue;
        if ((rc = cache_open(&caches[i], dir, n, m->slots[i].numel / m->batch, t, err, errlen)) == 0) opened[i] = true;
    }
    if (rc)
        for (int i = 0; i < m->n_slots; i++)
            if (opened[i]) rt_cache_close(&caches[i]);
    gim_free(opened);
    return rc;
}

/* ---- reading and writing ------------------------------------------------------------- */

void rt_cache_put(rt_cache *c, int64_t first, int64_t count, const float *src) {
    size_t k = (size_t)(count * c->per_example);
    if (c->dtype == GIM_CACHE_F32) {
        memcpy((float *)c->data + first * c->per_example, src, k * sizeof(float));
        return;
    }
    uint16_t *dst = (uint16_t *)c->data + first * c->per_example;
    for (size_t i = 0; i < k; i++) dst[i] = rt_bf16_from_f32(src[i]);
}

void rt_cache_get(const rt_cache *c, const int64_t *idx, int64_t count, float *dst) {
    size_t k = (size_t)c->per_example;
    for (int64_t e = 0; e < count; e++, dst += k) {
        if (c->dtype == GIM_CACHE_F32) {
            memcpy(dst, (const float *)c->data + idx[e] * c->per_example, k * sizeof(float));
            continue;
        }
        const uint16_t *src = (const uint16_t *)c->data + idx[e] * c->per_example;
        for (size_t i = 0; i < k; i++) dst[i] = rt_f32_from_bf16(src[i]);
    }
}

void rt_cache_fill_inputs(const gim_exec_model *m, const rt_cache *caches, int mi, const int64_t *idx, rt_item *it) {
    const gim_exec_module *mod = &m->modules[mi];
    for (int i = 0; i < mod->n_inputs; i++) {
        int sl = mod->inputs[i];
        if (m->slots[sl].producer < 0 || m->slots[sl].producer == mi) continue;
        rt_cache_get(&caches[sl], idx, m->batch, it->slot[sl]);
    }
}

/* ---- one module's pass ----------------------------------------------------------------- */

int rt_cache_build(const gim_exec_model *m, const gim_train_state *s, const gim_examples *d, const rt_binding *b,
                   int64_t epoch, rt_cache *caches, int mi, rt_progress *p, char *err, size_t errlen) {
    const gim_exec_module *mod = &m->modules[mi];
    rt_item *it = rt_item_new(m);
    int64_t *seq = gim_malloc(sizeof(int64_t) * (size_t)m->batch);
    int rc = 0;
    if (!it || !seq) {
        gim_errf(err, errlen, "out of memory for a batch");
        rc = -1;
        goto done;
    }
    double t_cache = rt_now(), t_drawn = t_cache;
    int64_t every = d->n / 20 > m->batch ? d->n / 20 : m->batch, next_line = every;
    /* Every example, not only the first nb * batch: the shuffled order
     * draws its batches from all n. */
    for (int64_t start = 0; start < d->n; start += m->batch) {
        if (rt_stop_now()) {
            rc = 1;
            break;
        }
        int64_t count = d->n - start < m->batch ? d->n - start : m->batch;
        for (int64_t e = 0; e < m->batch; e++) seq[e] = start + (e < count ? e : count - 1);
        if ((rc = rt_fill_data(m, b, d, epoch, seq, it, err, errlen))) break;
        rt_cache_fill_inputs(m, caches, mi, seq, it);
        rt_module_forward(m, s, mi, it);
        for (int e = 0; e < mod->n_exports; e++) {
            int sl = mod->exports[e];
            if (caches[sl].data) rt_cache_put(&caches[sl], start, count, it->slot[sl]);
        }
        /* progress: minutes of work on a full data set */
        int64_t done = start + count;
        double t = rt_now();
        bool last = done == d->n;
        if (p->out && (p->tty ? (t - t_drawn >= 0.2 || last) : (done >= next_line || last))) {
            double rate = t > t_cache ? (double)done / (t - t_cache) : 0;
            fprintf(p->out, p->tty ? "\r\033[Kcaching %lld/%lld examples  %.0f ex/s%s"
                                   : "caching %lld/%lld examples  %.0f ex/s%s\n",
                    (long long)done, (long long)d->n, rate, p->tty && last ? "\n" : "");
            fflush(p->out);
            t_drawn = t;
            while (next_line <= done) next_line += every;
        }
    }
done:
    rt_item_free(m, it);
    gim_free(seq);
    return rc;
}
