/* IDX files (LeCun's MNIST format), data sets of them, and batches.
 *
 * Every file is read whole (through zlib, which reads gzip and plain files
 * alike) into a buffer sized by the bytes actually read, then its header is
 * checked against that size; nothing is allocated from a header's claims. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "gim_data.h"
#include "gim_train.h"
#include "gim_util.h"
#include "rt_internal.h"

#define IDX_MAX_BYTES ((int64_t)1 << 30)
#define IDX_CHUNK (1 << 22)

/* Reads up to n bytes; returns the count (short only at end of file), or -1
 * on a read or decompression error (message in err). */
static int64_t gz_read_full(gzFile f, const char *path, uint8_t *buf, int64_t n, char *err,
                            size_t errlen) {
    int64_t got = 0;
    while (got < n) {
        int64_t want = n - got > IDX_CHUNK ? IDX_CHUNK : n - got;
        int r = gzread(f, buf + got, (unsigned)want);
        int code = Z_OK;
        const char *msg = gzerror(f, &code);
        if (r < 0 || (code != Z_OK && code != Z_STREAM_END)) {
            /* zlib reports a gzip stream cut short as Z_BUF_ERROR */
            gim_errf(err, errlen, "%s: corrupt or truncated gzip data: %s", path,
                     code == Z_ERRNO ? strerror(errno) : msg);
            return -1;
        }
        if (r == 0) break;
        got += r;
    }
    return got;
}

/* Opens `path` (gzip or plain) after checking it is a regular file. */
static gzFile idx_open(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) {
        gim_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        gim_errf(err, errlen, "%s: not a regular file", path);
        return NULL;
    }
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        gim_errf(err, errlen, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    gzbuffer(f, 1 << 17);
    return f;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The header is read and checked first; the data buffer then grows by
 * doubling as bytes actually arrive, up to the size the header declares, so
 * neither a lying header nor a gzip bomb makes us allocate more than twice
 * what the file really holds (and never over IDX_MAX_BYTES). */
int gim_idx_read(const char *path, int ndims, gim_idx *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (ndims < 1 || ndims > 3) return gim_errf(err, errlen, "%s: bad dimension count %d", path, ndims);
    gzFile f = idx_open(path, err, errlen);
    if (!f) return -1;
    uint8_t hdr[16], *buf = NULL;
    const uint32_t want = 0x0800u | (uint32_t)ndims;
    const int64_t hsize = 4 + 4 * (int64_t)ndims;
    int64_t n = gz_read_full(f, path, hdr, hsize, err, errlen);
    if (n < 0) goto bad;
    if (n < 4) {
        gim_errf(err, errlen, "%s: truncated: %lld bytes, an IDX header needs %lld", path, (long long)n,
                 (long long)hsize);
        goto bad;
    }
    uint32_t magic = be32(hdr);
    if (magic != want) {
        gim_errf(err, errlen, "%s: bad magic 0x%08x: expected 0x%08x (idx%d-ubyte: unsigned bytes, %d "
                 "dimension%s)", path, magic, want, ndims, ndims, ndims > 1 ? "s" : "");
        goto bad;
    }
    if (n < hsize) {
        gim_errf(err, errlen, "%s: truncated header: %lld bytes, the header needs %lld", path,
                 (long long)n, (long long)hsize);
        goto bad;
    }
    int64_t total = 1;
    char shape[96];
    int k = 0;
    for (int i = 0; i < ndims; i++) {
        out->dims[i] = be32(hdr + 4 + 4 * i);
        k += snprintf(shape + k, sizeof shape - (size_t)k, "%s%lld", i ? " x " : "",
                      (long long)out->dims[i]);
        if (out->dims[i] == 0) {
            gim_errf(err, errlen, "%s: dimension %d is 0", path, i);
            goto bad;
        }
        if (gim_mul_overflows(total, out->dims[i], &total)) total = INT64_MAX;
    }
    size_t cap = 0;
    int64_t have = 0;
    for (;;) {
        int64_t step = total - have < IDX_CHUNK ? total - have : IDX_CHUNK;
        if (step <= 0) break;
        if ((size_t)(have + step) > cap) {
            if (have + step > IDX_MAX_BYTES) {
                gim_errf(err, errlen, "%s: over %lld bytes of data; not an IDX data set this reader "
                         "takes", path, (long long)IDX_MAX_BYTES);
                goto bad;
            }
            size_t nc = cap ? cap * 2 : (size_t)1 << 20;
            while (nc < (size_t)(have + step)) nc *= 2;
            if ((int64_t)nc > total) nc = (size_t)total;
            uint8_t *nb = gim_realloc(buf, nc);
            if (!nb) {
                gim_errf(err, errlen, "%s: out of memory", path);
                goto bad;
            }
            buf = nb;
            cap = nc;
        }
        int64_t got = gz_read_full(f, path, buf + have, step, err, errlen);
        if (got < 0) goto bad;
        have += got;
        if (got < step) break;
    }
    if (have < total) {
        gim_errf(err, errlen, "%s: truncated: the header says %s = %lld bytes of data, the file has "
                 "%lld", path, shape, (long long)total, (long long)have);
        goto bad;
    }
    uint8_t extra[1];
    int64_t more = gz_read_full(f, path, extra, 1, err, errlen);
    if (more < 0) goto bad;
    if (more > 0) {
        gim_errf(err, errlen, "%s: size mismatch: the header says %s = %lld bytes of data, the file "
                 "has more", path, shape, (long long)total);
        goto bad;
    }
    gzclose(f);
    out->ndims = ndims;
    out->data = buf;
    out->n_bytes = total;
    return 0;
bad:
    gzclose(f);
    gim_free(buf);
    memset(out, 0, sizeof *out);
    return -1;
}

/* ---- data sets -------------------------------------------------------------- */

void gim_dataset_set_norm(gim_dataset *d, float mean, float std) {
    d->mean = mean;
    d->std = std;
    for (int p = 0; p < 256; p++) d->lut[p] = ((float)p / 255.0f - mean) / std;
}

/* The first of `dir`/base.gz, `dir`/base that exists, else the .gz name (for
 * the message). */
static void find_file(const char *dir, const char *base, char *path, size_t n) {
    struct stat st;
    snprintf(path, n, "%s/%s.gz", dir, base);
    if (stat(path, &st) == 0) return;
    snprintf(path, n, "%s/%s", dir, base);
    if (stat(path, &st) == 0) return;
    snprintf(path, n, "%s/%s.gz", dir, base);
}

static void split_free(gim_split *s) {
    gim_free(s->pixels);
    gim_free(s->labels);
    memset(s, 0, sizeof *s);
}

static int load_split(const char *dir, const char *prefix, gim_split *s, char *err, size_t errlen) {
    char ipath[640], lpath[640], base[64];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    find_file(dir, base, ipath, sizeof ipath);
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    find_file(dir, base, lpath, sizeof lpath);
    gim_idx im, lb;
    if (gim_idx_read(ipath, 3, &im, err, errlen)) return -1;
    if (im.dims[1] > 4096 || im.dims[2] > 4096) {
        gim_free(im.data);
        return gim_errf(err, errlen, "%s: images of %lld x %lld pixels; at most 4096 x 4096", ipath,
                        (long long)im.dims[1], (long long)im.dims[2]);
    }
    if (gim_idx_read(lpath, 1, &lb, err, errlen)) {
        gim_free(im.data);
        return -1;
    }
    if (lb.dims[0] != im.dims[0]) {
        gim_errf(err, errlen, "%s: %lld labels, but %s holds %lld images", lpath, (long long)lb.dims[0],
                 ipath, (long long)im.dims[0]);
        goto bad;
    }
    for (int64_t i = 0; i < lb.dims[0]; i++)
        if (lb.data[i] >= GIM_DATA_CLASSES) {
            gim_errf(err, errlen, "%s: label %d of example %lld is out of range [0, %d)", lpath,
                     lb.data[i], (long long)i, GIM_DATA_CLASSES);
            goto bad;
        }
    s->labels = gim_malloc(sizeof(int32_t) * (size_t)lb.dims[0]);
    if (!s->labels) {
        gim_errf(err, errlen, "%s: out of memory", lpath);
        goto bad;
    }
    for (int64_t i = 0; i < lb.dims[0]; i++) s->labels[i] = lb.data[i];
    s->n = im.dims[0];
    s->rows = (int)im.dims[1];
    s->cols = (int)im.dims[2];
    s->pixels = im.data;
    gim_free(lb.data);
    return 0;
bad:
    gim_free(im.data);
    gim_free(lb.data);
    return -1;
}

int gim_dataset_load(const char *name_or_dir, gim_dataset *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->n_classes = GIM_DATA_CLASSES;
    gim_dataset_set_norm(out, GIM_DATA_DEFAULT_MEAN, GIM_DATA_DEFAULT_STD);
    if (!strcmp(name_or_dir, "fashion-mnist") || !strcmp(name_or_dir, "mnist"))
        snprintf(out->dir, sizeof out->dir, "%s/%s", GIM_DATA_DIR, name_or_dir);
    else if (strlen(name_or_dir) >= sizeof out->dir)
        return gim_errf(err, errlen, "data set path too long: %.60s...", name_or_dir);
    else
        snprintf(out->dir, sizeof out->dir, "%s", name_or_dir);
    struct stat st;
    if (stat(out->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return gim_errf(err, errlen, "data set '%s': %s is not a directory (a data set is "
                        "'fashion-mnist', 'mnist' or a directory of IDX files)", name_or_dir, out->dir);
    if (load_split(out->dir, "train", &out->train, err, errlen)) return -1;
    if (load_split(out->dir, "t10k", &out->test, err, errlen)) {
        split_free(&out->train);
        return -1;
    }
    if (out->test.rows != out->train.rows || out->test.cols != out->train.cols) {
        gim_errf(err, errlen, "%s: test images are %d x %d but training images are %d x %d", out->dir,
                 out->test.rows, out->test.cols, out->train.rows, out->train.cols);
        gim_dataset_free(out);
        return -1;
    }
    return 0;
}

void gim_dataset_free(gim_dataset *d) {
    split_free(&d->train);
    split_free(&d->test);
}

static void normalise(const float *lut, const uint8_t *src, float *dst, int64_t n) {
    for (int64_t k = 0; k < n; k++) dst[k] = lut[src[k]];
}

void gim_dataset_images(const gim_dataset *d, const gim_split *s, int64_t first, int64_t count,
                        float *out) {
    int64_t sz = (int64_t)s->rows * s->cols;
    normalise(d->lut, s->pixels + first * sz, out, count * sz);
}

int gim_dataset_examples(const gim_dataset *d, const gim_split *s, gim_examples *ex,
                         float **storage, char *err, size_t errlen) {
    memset(ex, 0, sizeof *ex);
    *storage = NULL;
    int64_t sz = (int64_t)s->rows * s->cols, total;
    if (gim_mul_overflows(s->n, sz, &total) || total > ((int64_t)1 << 40))
        return gim_errf(err, errlen, "%s: data set too large", d->dir);
    float *x = gim_malloc_aligned(sizeof(float) * (size_t)(total ? total : 1));
    if (!x)
        return gim_errf(err, errlen, "%s: out of memory for %lld images as float32", d->dir,
                        (long long)s->n);
    gim_dataset_images(d, s, 0, s->n, x);
    ex->n = s->n;
    ex->x_rank = 3;
    ex->x_shape[0] = 1;
    ex->x_shape[1] = s->rows;
    ex->x_shape[2] = s->cols;
    ex->x_numel = sz;
    ex->x = x;
    ex->labels = s->labels;
    ex->n_classes = d->n_classes;
    *storage = x;
    return 0;
}

/* ---- batches ---------------------------------------------------------------- */

int gim_batch_iter_init(gim_batch_iter *it, const gim_dataset *ds, const gim_split *split,
                        int64_t batch, uint64_t seed, bool shuffle, bool drop_last, char *err,
                        size_t errlen) {
    memset(it, 0, sizeof *it);
    if (batch < 1) return gim_errf(err, errlen, "batch size %lld: must be at least 1", (long long)batch);
    it->ds = ds;
    it->split = split;
    it->batch = batch;
    it->seed = seed;
    it->shuffle = shuffle;
    it->drop_last = drop_last;
    it->order = gim_malloc(sizeof(int64_t) * (size_t)(split->n ? split->n : 1));
    if (!it->order) return gim_errf(err, errlen, "out of memory for the order of %lld examples",
                                    (long long)split->n);
    gim_batch_iter_seek(it, 0, 0);
    return 0;
}

int64_t gim_batch_iter_batches(const gim_batch_iter *it) {
    int64_t n = it->split->n;
    return it->drop_last ? n / it->batch : (n + it->batch - 1) / it->batch;
}

void gim_batch_iter_seek(gim_batch_iter *it, int64_t epoch, int64_t index) {
    int64_t n = it->split->n;
    for (int64_t i = 0; i < n; i++) it->order[i] = i;
    if (it->shuffle) gim_rt_shuffle_i64(it->order, n, it->seed, GIM_RT_STREAM_DATA | (uint64_t)epoch);
    it->epoch = epoch;
    int64_t nb = gim_batch_iter_batches(it);
    it->pos = (index < 0 ? 0 : index > nb ? nb : index) * it->batch;
    if (it->pos > n) it->pos = n;
}

int64_t gim_batch_iter_next(gim_batch_iter *it, float *x, int32_t *labels) {
    const gim_split *s = it->split;
    int64_t left = s->n - it->pos;
    if (left <= 0 || (it->drop_last && left < it->batch)) return 0;
    int64_t count = left < it->batch ? left : it->batch;
    int64_t sz = (int64_t)s->rows * s->cols;
    for (int64_t i = 0; i < count; i++) {
        int64_t e = it->order[it->pos + i];
        normalise(it->ds->lut, s->pixels + e * sz, x + i * sz, sz);
        if (labels) labels[i] = s->labels[e];
    }
    if (count < it->batch) {
        memset(x + count * sz, 0, sizeof(float) * (size_t)((it->batch - count) * sz));
        if (labels) memset(labels + count, 0, sizeof(int32_t) * (size_t)(it->batch - count));
    }
    it->pos += count;
    return count;
}

void gim_batch_iter_free(gim_batch_iter *it) {
    gim_free(it->order);
    it->order = NULL;
}
