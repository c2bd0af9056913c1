/* Audio corpora: a directory tree of audio files, decoded once into a
 * memory-mapped cache, cut into one random crop per utterance and epoch.
 *
 *   walk (sorted relative paths, fingerprint of names, sizes, mtimes)
 *     -> cache: map DIR/audio-cache.bin if its fingerprint and rate match,
 *        else decode every file (libsndfile), mix down, convert the rate
 *        (libsamplerate) and write the cache (temporary file, renamed)
 *     -> usable utterances (>= one crop), speakers, train/test split
 *
 * Why a cache and not a decoding thread: every epoch reads every utterance
 * once, but only a crop of it, so the work per epoch is small next to a
 * decode; decoding once and mapping the result makes epochs, resumed runs
 * and the probe free of decoding, and the samples live in the page cache
 * (shared with the probe run that follows) instead of the heap.
 *
 * Nothing a file claims sizes an allocation: samples are read in chunks
 * into a buffer that grows with what actually arrives, up to an hour of
 * audio per file. A file libsndfile cannot read, or one that is damaged, is
 * skipped and named in the notes; only a tree with no usable audio at all is
 * an error. The cache is checked against its own size before any of its
 * offsets is used. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <samplerate.h>
#include <sndfile.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_data.h"
#include "gim_probe.h"
#include "gim_train.h"
#include "gim_util.h"
#include "rt_internal.h"

#define AUD_MAGIC "GIMAUDC1"
#define AUD_HEADER 4096          /* the samples start here, page aligned */
#define AUD_MAX_DEPTH 8          /* directory levels walked below the root */
#define AUD_MAX_SECONDS 3600     /* longer files are skipped */
#define AUD_MAX_CHANNELS 64
#define AUD_MIN_RATE 1000
#define AUD_MAX_RATE 768000
#define AUD_CHUNK 8192           /* frames read at a time */
#define AUD_NOTE_LINES 12        /* skipped files named one by one; the rest counted */

void gim_audio_defaults(gim_audio_options *o) {
    memset(o, 0, sizeof *o);
    o->rate = GIM_AUDIO_DEFAULT_RATE;
    o->crop = 20480;
    o->test_every = 5;
}

/* ---- the walk -------------------------------------------------------------------- */

typedef struct aud_list {
    char **rel;
    int64_t n, cap;
    uint64_t fingerprint;
} aud_list;

static void list_free(aud_list *l) {
    for (int64_t i = 0; i < l->n; i++) gim_free(l->rel[i]);
    gim_free(l->rel);
    memset(l, 0, sizeof *l);
}

static int list_push(aud_list *l, const char *rel) {
    if (l->n == l->cap) {
        int64_t nc = l->cap ? 2 * l->cap : 256;
        char **p = gim_realloc(l->rel, (size_t)nc * sizeof *p);
        if (!p) return -1;
        l->rel = p;
        l->cap = nc;
    }
    size_t n = strlen(rel) + 1;
    char *s = gim_malloc(n);
    if (!s) return -1;
    memcpy(s, rel, n);
    l->rel[l->n++] = s;
    return 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file under root/rel (names starting with '.' and ending in
 * ".txt" left out),
 * depth-first; symbolic links are followed, the depth bound stops loops. */
static int walk(const char *root, const char *rel, int depth, aud_list *l, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) return gim_errf(err, errlen, "%s: cannot read the directory: %s", path, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        /* hidden files, and text beside the audio (LibriSpeech's transcripts) */
        if (e->d_name[0] == '.' || (len > 4 && !strcmp(e->d_name + len - 4, ".txt"))) continue;
        char sub[4096], full[4096];
        int k = snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        if (k < 0 || (size_t)k >= sizeof sub || snprintf(full, sizeof full, "%s/%s", root, sub) >= (int)sizeof full) {
            rc = gim_errf(err, errlen, "%s/%s: path too long", path, e->d_name);
            break;
        }
        struct stat st;
        if (stat(full, &st) != 0) continue;   /* a dangling link: nothing to read */
        if (S_ISDIR(st.st_mode)) {
            if (depth < AUD_MAX_DEPTH) rc = walk(root, sub, depth + 1, l, err, errlen);
        } else if (S_ISREG(st.st_mode)) {
            if (list_push(l, sub)) rc = gim_errf(err, errlen, "out of memory listing %s", root);
        }
    }
    closedir(d);
    return rc;
}

/* The sorted list and its fingerprint: names, sizes, modification times and
 * the target rate, so a changed tree or rate makes a new cache. */
static int list_files(const char *root, int rate, aud_list *l, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    if (walk(root, "", 0, l, err, errlen)) return -1;
    if (l->n) qsort(l->rel, (size_t)l->n, sizeof *l->rel, cmp_str);
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    h = fnv(h, AUD_MAGIC, 8);
    h = fnv(h, &rate, sizeof rate);
    for (int64_t i = 0; i < l->n; i++) {
        char full[8192];
        snprintf(full, sizeof full, "%s/%s", root, l->rel[i]);
        struct stat st;
        int64_t meta[3] = {0, 0, 0};
        if (stat(full, &st) == 0) {
            meta[0] = (int64_t)st.st_size;
            meta[1] = (int64_t)st.st_mtim.tv_sec;
            meta[2] = (int64_t)st.st_mtim.tv_nsec;
        }
        h = fnv(h, l->rel[i], strlen(l->rel[i]) + 1);
        h = fnv(h, meta, sizeof meta);
    }
    l->fingerprint = h;
    return 0;
}

/* ---- decoding one file -------------------------------------------------------------- */

typedef struct aud_buf {
    float *p;
    int64_t n, cap;
} aud_buf;

static int buf_reserve(aud_buf *b, int64_t more) {
    if (b->n + more <= b->cap) return 0;
    int64_t nc = b->cap ? b->cap : 1 << 16;
    while (nc < b->n + more) nc *= 2;
    float *p = gim_realloc(b->p, (size_t)nc * sizeof(float));
    if (!p) return -1;
    b->p = p;
    b->cap = nc;
    return 0;
}

/* Decodes `path` into out (mono, `rate` Hz). Returns 0; 1 when the file is
 * to be skipped (the reason in why); -1 when out of memory. */
static int decode(const char *path, int rate, aud_buf *out, char *why, size_t whylen) {
    out->n = 0;
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *f = sf_open(path, SFM_READ, &info);
    if (!f) {
        snprintf(why, whylen, "not audio that libsndfile reads (%s)", sf_strerror(NULL));
        return 1;
    }
    int rc = 1;
    float *in = NULL, *mono = NULL, *res = NULL;
    SRC_STATE *src = NULL;
    if (info.channels < 1 || info.channels > AUD_MAX_CHANNELS) {
        snprintf(why, whylen, "%d channels (1 to %d are read)", info.channels, AUD_MAX_CHANNELS);
        goto done;
    }
    if (info.samplerate < AUD_MIN_RATE || info.samplerate > AUD_MAX_RATE) {
        snprintf(why, whylen, "a sample rate of %d Hz (%d to %d are read)", info.samplerate, AUD_MIN_RATE,
                 AUD_MAX_RATE);
        goto done;
    }
    if (info.frames <= 0) {
        snprintf(why, whylen, "no samples");
        goto done;
    }
    /* libsndfile reads a WAV whose header claims more than the file holds
     * for what it holds, and logs "(should be N)": such a file was cut short
     * or lies, and is not trusted */
    char log[2048] = "";
    sf_command(f, SFC_GET_LOG_INFO, log, sizeof log);
    const char *lie = strstr(log, "(should be");
    if (lie) {
        const char *line = lie;
        while (line > log && line[-1] != '\n') line--;
        const char *end = strchr(lie, ')');
        snprintf(why, whylen, "truncated, or its header lies about its length (%.*s)",
                 (int)((end ? end + 1 : lie + strlen(lie)) - line), line);
        goto done;
    }
    const int64_t max_frames = (int64_t)info.samplerate * AUD_MAX_SECONDS;
    if (info.frames > max_frames) {
        snprintf(why, whylen, "longer than %d s (%lld frames at %d Hz)", AUD_MAX_SECONDS, (long long)info.frames,
                 info.samplerate);
        goto done;
    }
    const double ratio = (double)rate / info.samplerate;
    const int64_t res_cap = (int64_t)ceil(AUD_CHUNK * ratio) + 64;
    in = gim_malloc(sizeof(float) * AUD_CHUNK * (size_t)info.channels);
    mono = gim_malloc(sizeof(float) * AUD_CHUNK);
    res = gim_malloc(sizeof(float) * (size_t)res_cap);
    if (!in || !mono || !res) {
        rc = -1;
        goto done;
    }
    int src_err = 0;
    if (info.samplerate != rate && !(src = src_new(SRC_SINC_MEDIUM_QUALITY, 1, &src_err))) {
        snprintf(why, whylen, "cannot convert its rate: %s", src_strerror(src_err));
        goto done;
    }
    int64_t frames = 0;
    for (bool eof = false; !eof;) {
        sf_count_t got = sf_readf_float(f, in, AUD_CHUNK);
        if (got < 0) got = 0;
        if (frames + got > max_frames) got = max_frames - frames;
        eof = got < AUD_CHUNK;
        frames += got;
        for (sf_count_t i = 0; i < got; i++) {
            float s = 0;
            for (int ch = 0; ch < info.channels; ch++) s += in[i * info.channels + ch];
            s /= (float)info.channels;
            if (!isfinite(s)) {
                snprintf(why, whylen, "a sample that is not a finite number (frame %lld)", (long long)(frames - got + i));
                goto done;
            }
            mono[i] = s;
        }
        if (!src) {
            if (got == 0) continue;   /* nothing to copy (and out->p may still be NULL) */
            if (buf_reserve(out, got)) {
                rc = -1;
                goto done;
            }
            memcpy(out->p + out->n, mono, (size_t)got * sizeof(float));
            out->n += got;
            continue;
        }
        /* feed the chunk; at the end, drain the converter's delay line */
        SRC_DATA d = {.data_in = mono, .input_frames = (long)got, .data_out = res, .output_frames = (long)res_cap,
                      .src_ratio = ratio, .end_of_input = eof};
        for (;;) {
            int e = src_process(src, &d);
            if (e) {
                snprintf(why, whylen, "cannot convert its rate: %s", src_strerror(e));
                goto done;
            }
            if (buf_reserve(out, d.output_frames_gen)) {
                rc = -1;
                goto done;
            }
            if (d.output_frames_gen > 0) {
                memcpy(out->p + out->n, res, (size_t)d.output_frames_gen * sizeof(float));
                out->n += d.output_frames_gen;
            }
            d.data_in += d.input_frames_used;
            d.input_frames -= d.input_frames_used;
            if (d.input_frames == 0 && (!eof || d.output_frames_gen == 0)) break;
        }
    }
    if (frames < info.frames) {
        snprintf(why, whylen, "truncated or damaged: the header says %lld frames, %lld could be read",
                 (long long)info.frames, (long long)frames);
        goto done;
    }
    if (out->n == 0) {
        snprintf(why, whylen, "no samples");
        goto done;
    }
    rc = 0;
done:
    if (src) src_delete(src);
    sf_close(f);
    gim_free(in);
    gim_free(mono);
    gim_free(res);
    return rc;
}

/* ---- the cache ------------------------------------------------------------------------ */

/* The file: header (AUD_HEADER bytes, the fields below little-endian as
 * this machine writes them), samples (float32), the utterance table
 * (aud_entry each), the path strings (NUL-terminated), the notes text. */
typedef struct aud_header {
    char magic[8];
    uint64_t fingerprint;
    int64_t rate;
    int64_t n_files, n_bad;
    int64_t n_utts, n_samples;
    int64_t table_off, strings_off, strings_len, notes_off, notes_len;
} aud_header;

typedef struct aud_entry {
    int64_t offset, length, path_off;
} aud_entry;

/* Bytes the samples take in the file, padded to 8 so the table after them
 * is aligned. */
static int64_t aud_samples_bytes(int64_t n_samples) { return (n_samples * (int64_t)sizeof(float) + 7) & ~(int64_t)7; }

static int write_all(int fd, const void *p, size_t n) {
    const char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Notes about skipped files: the first AUD_NOTE_LINES by name, then a count. */
typedef struct aud_notes {
    gim_sb sb;
    int64_t named, unnamed;
} aud_notes;

static void note(aud_notes *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(aud_notes *n, const char *fmt, ...) {
    if (n->named >= AUD_NOTE_LINES) {
        n->unnamed++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    gim_sb_vprintf(&n->sb, fmt, ap);
    va_end(ap);
    gim_sb_putc(&n->sb, '\n');
    n->named++;
}

static void notes_end(aud_notes *n, const char *what) {
    if (n->unnamed) gim_sb_printf(&n->sb, "... and %lld more %s\n", (long long)n->unnamed, what);
    if (!n->sb.buf) gim_sb_puts(&n->sb, "");
}

/* Decodes the listed files into a new cache file at `path` (or, path NULL,
 * an unlinked temporary file) and returns its descriptor, or -1 with err. */
static int build_cache(const char *root, const aud_list *l, int rate, const char *path, FILE *progress, char *err,
                       size_t errlen) {
    char tmp[4400];
    int fd;
    if (path) {
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    } else {
        const char *td = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/gim-audio-XXXXXX", td && td[0] ? td : "/tmp");
        fd = mkstemp(tmp);
    }
    if (fd < 0) return gim_errf(err, errlen, "%s: cannot create the audio cache: %s", tmp, strerror(errno));
    if (!path) unlink(tmp);
    aud_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, AUD_MAGIC, 8);
    h.fingerprint = l->fingerprint;
    h.rate = rate;
    h.n_files = l->n;
    aud_entry *table = gim_calloc((size_t)(l->n ? l->n : 1), sizeof *table);
    gim_sb strings = {0};
    aud_notes notes = {0};
    aud_buf buf = {0};
    char zero[AUD_HEADER] = {0};
    int rc = -1;
    if (!table) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (write_all(fd, zero, AUD_HEADER)) goto io;
    for (int64_t i = 0; i < l->n; i++) {
        char full[8192], why[512];
        snprintf(full, sizeof full, "%s/%s", root, l->rel[i]);
        int d = decode(full, rate, &buf, why, sizeof why);
        if (d < 0) {
            gim_errf(err, errlen, "%s: out of memory decoding it", full);
            goto done;
        }
        if (d == 0 && !strchr(l->rel[i], '/')) {
            snprintf(why, sizeof why, "not inside a speaker directory (the first level under %s names the speaker)",
                     root);
            d = 1;
        }
        if (d) {
            h.n_bad++;
            note(&notes, "%s: skipped: %s", full, why);
        } else {
            table[h.n_utts].offset = h.n_samples;
            table[h.n_utts].length = buf.n;
            table[h.n_utts].path_off = (int64_t)strings.len;
            gim_sb_puts(&strings, l->rel[i]);
            gim_sb_putc(&strings, '\0');
            h.n_utts++;
            if (write_all(fd, buf.p, (size_t)buf.n * sizeof(float))) goto io;
            h.n_samples += buf.n;
        }
        if (progress && ((i + 1) % 100 == 0 || i + 1 == l->n)) {
            fprintf(progress, "decoding %s: %lld/%lld files\n", root, (long long)(i + 1), (long long)l->n);
            fflush(progress);
        }
    }
    notes_end(&notes, "files skipped");
    /* The table holds int64s: pad the samples to a multiple of 8 bytes so
     * it is aligned in the mapping. */
    if (h.n_samples % 2 && write_all(fd, &(float){0}, sizeof(float))) goto io;
    h.table_off = AUD_HEADER + aud_samples_bytes(h.n_samples);
    h.strings_off = h.table_off + h.n_utts * (int64_t)sizeof(aud_entry);
    h.strings_len = (int64_t)strings.len;
    h.notes_off = h.strings_off + h.strings_len;
    h.notes_len = (int64_t)notes.sb.len + 1;
    if (write_all(fd, table, (size_t)h.n_utts * sizeof *table) ||
        (strings.len && write_all(fd, strings.buf, strings.len)) || write_all(fd, notes.sb.buf, notes.sb.len + 1))
        goto io;
    if (pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) goto io;
    if (path && rename(tmp, path) != 0) {
        gim_errf(err, errlen, "%s: cannot write the audio cache: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = fd;
    goto done;
io:
    gim_errf(err, errlen, "%s: cannot write the audio cache: %s", path ? tmp : "a temporary file",
             errno ? strerror(errno) : "short write");
    if (path) unlink(tmp);
done:
    if (rc < 0) close(fd);
    gim_free(table);
    gim_free(buf.p);
    gim_sb_free(&strings);
    gim_sb_free(&notes.sb);
    return rc;
}

/* Maps the cache behind fd and checks it: the magic, the fingerprint and
 * rate (when want_fp), then every offset against the file's size. Returns
 * the header or NULL (err set, unless it merely belongs to other files). */
static const aud_header *map_cache(int fd, const char *what, uint64_t fingerprint, int rate, gim_audio_corpus *c,
                                   char *err, size_t errlen) {
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < AUD_HEADER) {
        gim_errf(err, errlen, "%s: not an audio cache (too short)", what);
        return NULL;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        gim_errf(err, errlen, "%s: cannot map the audio cache: %s", what, strerror(errno));
        return NULL;
    }
    const aud_header *h = p;
    const int64_t size = (int64_t)st.st_size;
    bool ok = !memcmp(h->magic, AUD_MAGIC, 8) && h->fingerprint == fingerprint && h->rate == rate;
    err[0] = 0;
    int64_t bytes;
    if (ok && !(h->n_utts >= 0 && h->n_utts <= size / (int64_t)sizeof(aud_entry) && h->n_samples >= 0 &&
                h->n_samples <= size / 4 && !gim_mul_overflows(h->n_samples, 4, &bytes) &&
                h->table_off == AUD_HEADER + aud_samples_bytes(h->n_samples) && !gim_mul_overflows(h->n_utts, sizeof(aud_entry), &bytes) &&
                h->strings_off == h->table_off + bytes && h->strings_len >= 0 && h->strings_len <= size &&
                h->notes_off == h->strings_off + h->strings_len && h->notes_len >= 1 && h->notes_len <= size &&
                h->notes_off + h->notes_len == size)) {
        ok = false;
        gim_errf(err, errlen, "%s: a damaged audio cache (its tables do not fit its size)", what);
    }
    const char *strings = (const char *)p + (ok ? h->strings_off : 0);
    if (ok && ((h->strings_len && strings[h->strings_len - 1]) || ((const char *)p)[size - 1])) {
        ok = false;
        gim_errf(err, errlen, "%s: a damaged audio cache (unterminated strings)", what);
    }
    const aud_entry *t = (const aud_entry *)((const char *)p + (ok ? h->table_off : 0));
    for (int64_t i = 0; ok && i < h->n_utts; i++) {
        if (t[i].offset < 0 || t[i].length < 1 || t[i].offset > h->n_samples - t[i].length || t[i].path_off < 0 ||
            t[i].path_off >= h->strings_len) {
            ok = false;
            gim_errf(err, errlen, "%s: a damaged audio cache (utterance %lld lies outside it)", what, (long long)i);
        }
    }
    if (!ok) {
        munmap(p, (size_t)st.st_size);
        return NULL;
    }
    c->map = p;
    c->map_len = (size_t)st.st_size;
    c->samples = (const float *)((const char *)p + AUD_HEADER);
    return h;
}

/* mkdir -p */
static int make_dirs(const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p) continue;
        char was = *p;
        *p = 0;
        if (mkdir(path, 0777) && errno != EEXIST) return -1;
        if (!was) return 0;
        *p = was;
    }
}

/* ---- the corpus ---------------------------------------------------------------------- */

bool gim_audio_is_corpus(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    static const char *const idx[] = {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"};
    for (int i = 0; i < 2; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, idx[i]);
        if (access(p, F_OK) == 0) return false;
    }
    /* and holds a directory: an empty or flat directory is a broken IDX set,
     * reported as such */
    DIR *d = opendir(dir);
    if (!d) return false;
    bool sub = false;
    struct dirent *e;
    while (!sub && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        struct stat es;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        sub = stat(p, &es) == 0 && S_ISDIR(es.st_mode);
    }
    closedir(d);
    return sub;
}

/* Marks the test utterances from a list of relative paths, one a line
 * (blank lines and lines starting with '#' ignored). */
static int read_test_list(const char *list, gim_audio_corpus *c, bool *is_test, char *err, size_t errlen) {
    size_t len;
    char *text = gim_read_file(list, &len);
    if (!text) return gim_errf(err, errlen, "%s: cannot read the test list: %s", list, strerror(errno));
    int rc = 0, line = 0;
    for (char *s = text, *next; s && *s && !rc; s = next) {
        line++;
        next = strchr(s, '\n');
        if (next) *next++ = 0;
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') continue;
        int64_t lo = 0, hi = c->n_utts;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (strcmp(c->utts[mid].path, s) < 0) lo = mid + 1;
            else hi = mid;
        }
        if (lo < c->n_utts && !strcmp(c->utts[lo].path, s)) is_test[lo] = true;
        else rc = gim_errf(err, errlen, "%s:%d: '%s' is not a usable utterance under %s", list, line, s, c->dir);
    }
    gim_free(text);
    return rc;
}

/* Speakers (in path order), then the split: each speaker's utterances in an
 * order shuffled by (seed, its name); the first 1 in test_every (at least
 * one when it has two or more) are test ones. */
static int split(gim_audio_corpus *c, const gim_audio_options *o, gim_sb *notes, char *err, size_t errlen) {
    size_t names = 0;
    for (int64_t u = 0; u < c->n_utts; u++) names += strlen(c->utts[u].path) + 1;
    c->strings = gim_malloc(names + 1);
    c->speakers = gim_calloc((size_t)c->n_utts + 1, sizeof *c->speakers);
    c->train = gim_malloc(sizeof(int64_t) * (size_t)(c->n_utts + 1));
    c->test = gim_malloc(sizeof(int64_t) * (size_t)(c->n_utts + 1));
    bool *is_test = gim_calloc((size_t)c->n_utts + 1, sizeof *is_test);
    int64_t *order = gim_malloc(sizeof(int64_t) * (size_t)(c->n_utts + 1));
    int rc = -1;
    if (!c->strings || !c->speakers || !c->train || !c->test || !is_test || !order) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    size_t at = 0;
    for (int64_t u = 0, first = 0; u < c->n_utts; u = first) {
        const char *p = c->utts[u].path;
        size_t k = (size_t)(strchr(p, '/') - p);
        char *name = c->strings + at;
        memcpy(name, p, k);
        name[k] = 0;
        at += k + 1;
        /* the speaker's utterances are contiguous: paths sharing a prefix are, in sorted order */
        for (first = u; first < c->n_utts && !strncmp(c->utts[first].path, p, k + 1); first++)
            c->utts[first].speaker = c->n_speakers;
        int64_t n = first - u;
        if (!o->test_list) {
            for (int64_t i = 0; i < n; i++) order[i] = u + i;
            gim_rt_shuffle_i64(order, n, o->seed, GIM_RT_STREAM_SPLIT | (gim_rt_hash_name(name) >> 3));
            int64_t n_test = n / (o->test_every > 0 ? o->test_every : 5);
            if (n_test == 0 && n >= 2) n_test = 1;
            for (int64_t i = 0; i < n_test; i++) is_test[order[i]] = true;
        }
        if (n == 1)
            gim_sb_printf(notes, "speaker %s has one usable utterance (%s/%s): it is in the training split only\n", name,
                          c->dir, p);
        c->speakers[c->n_speakers++] = name;
    }
    if (o->test_list && read_test_list(o->test_list, c, is_test, err, errlen)) goto done;
    for (int64_t u = 0; u < c->n_utts; u++) {
        if (is_test[u]) c->test[c->n_test++] = u;
        else c->train[c->n_train++] = u;
    }
    rc = 0;
done:
    gim_free(is_test);
    gim_free(order);
    return rc;
}

int gim_audio_open(const char *dir, const gim_audio_options *o, gim_audio_corpus *c, FILE *progress, char *err,
                   size_t errlen) {
    memset(c, 0, sizeof *c);
    if (strlen(dir) >= sizeof c->dir) return gim_errf(err, errlen, "audio directory path too long: %.60s...", dir);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    c->rate = o->rate;
    c->crop = o->crop;
    c->seed = o->seed;
    if (o->rate < AUD_MIN_RATE || o->rate > AUD_MAX_RATE)
        return gim_errf(err, errlen, "sample rate %d Hz: expected %d to %d", o->rate, AUD_MIN_RATE, AUD_MAX_RATE);
    if (o->crop < 1) return gim_errf(err, errlen, "a crop of %lld samples: expected at least 1", (long long)o->crop);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return gim_errf(err, errlen, "%s: not a directory", dir);
    aud_list l;
    if (list_files(dir, o->rate, &l, err, errlen)) {
        list_free(&l);
        return -1;
    }
    if (l.n == 0) {
        list_free(&l);
        return gim_errf(err, errlen, "%s: no files at all: an audio data set is a directory of speaker "
                        "directories holding audio files (SPEAKER/.../NAME.flac)", dir);
    }
    char cache[4200];
    if (o->cache_dir) {
        snprintf(cache, sizeof cache, "%s/%s", o->cache_dir, GIM_AUDIO_CACHE_NAME);
        if (make_dirs(o->cache_dir)) {
            gim_errf(err, errlen, "%s: cannot create the directory for the audio cache: %s", o->cache_dir,
                     strerror(errno));
            list_free(&l);
            return -1;
        }
    }
    const aud_header *h = NULL;
    int fd = o->cache_dir ? open(cache, O_RDONLY) : -1;
    if (fd >= 0) {
        h = map_cache(fd, cache, l.fingerprint, o->rate, c, err, errlen);
        close(fd);
        if (!h && err[0] && progress) fprintf(progress, "note: %s; decoding again\n", err);
        c->from_cache = h != NULL;
    }
    if (!h) {
        fd = build_cache(dir, &l, o->rate, o->cache_dir ? cache : NULL, progress, err, errlen);
        if (fd < 0) {
            list_free(&l);
            return -1;
        }
        h = map_cache(fd, o->cache_dir ? cache : "the audio cache", l.fingerprint, o->rate, c, err, errlen);
        close(fd);
        if (!h) {
            list_free(&l);
            if (!err[0]) gim_errf(err, errlen, "the audio cache just written does not read back");
            return -1;
        }
    }
    list_free(&l);
    c->n_files = h->n_files;
    c->n_bad = h->n_bad;
    const aud_entry *t = (const aud_entry *)((const char *)c->map + h->table_off);
    const char *strings = (const char *)c->map + h->strings_off;
    gim_sb notes = {0};
    gim_sb_puts(&notes, (const char *)c->map + h->notes_off);
    c->utts = gim_calloc((size_t)h->n_utts + 1, sizeof *c->utts);
    if (!c->utts) {
        gim_sb_free(&notes);
        return gim_errf(err, errlen, "out of memory");
    }
    const char *short_example = NULL;
    int64_t short_len = 0;
    for (int64_t i = 0; i < h->n_utts; i++) {
        if (t[i].length < o->crop) {
            if (!c->n_short++) short_example = strings + t[i].path_off, short_len = t[i].length;
            continue;
        }
        gim_audio_utt *u = &c->utts[c->n_utts++];
        u->offset = t[i].offset;
        u->length = t[i].length;
        u->path = strings + t[i].path_off;
    }
    if (c->n_short)
        gim_sb_printf(&notes, "%lld utterance%s shorter than a crop (%lld samples = %.2f s at %d Hz) skipped, e.g. %s/%s "
                      "(%.2f s)\n", (long long)c->n_short, c->n_short == 1 ? "" : "s", (long long)o->crop,
                      (double)o->crop / o->rate, o->rate, dir, short_example, (double)short_len / o->rate);
    if (c->n_utts == 0) {
        gim_errf(err, errlen, "%s: no usable audio among %lld files (an utterance needs at least %lld samples at %d "
                 "Hz, in a speaker directory)\n%s", dir, (long long)c->n_files, (long long)o->crop, o->rate,
                 notes.buf ? notes.buf : "");
        size_t n = strlen(err);
        if (n && err[n - 1] == '\n') err[n - 1] = 0;
        gim_sb_free(&notes);
        return -1;
    }
    int rc = split(c, o, &notes, err, errlen);
    c->notes = notes.buf ? notes.buf : gim_xstrdup("");
    return rc;
}

void gim_audio_close(gim_audio_corpus *c) {
    if (c->map) munmap(c->map, c->map_len);
    gim_free(c->utts);
    gim_free(c->speakers);
    gim_free(c->strings);
    gim_free(c->train);
    gim_free(c->test);
    gim_free(c->notes);
    memset(c, 0, sizeof *c);
}

int64_t gim_audio_crop_start(const gim_audio_corpus *c, int64_t u, int64_t epoch) {
    if (epoch < 0) return (c->utts[u].length - c->crop) / 2;
    uint64_t positions = (uint64_t)(c->utts[u].length - c->crop + 1);
    return (int64_t)gim_rt_rand_below64(c->seed, GIM_RT_STREAM_CROP | ((uint64_t)epoch & ((UINT64_C(1) << 61) - 1)),
                                        (uint64_t)u, positions);
}

void gim_audio_crop(const gim_audio_corpus *c, int64_t u, int64_t epoch, float *out) {
    const float *s = c->samples + c->utts[u].offset + gim_audio_crop_start(c, u, epoch);
    memcpy(out, s, (size_t)c->crop * sizeof(float));
}

int gim_audio_examples(const gim_audio_corpus *c, const int64_t *idx, int64_t n, int64_t epoch, gim_examples *ex,
                       float **storage, int32_t **labels, char *err, size_t errlen) {
    memset(ex, 0, sizeof *ex);
    int64_t total;
    *storage = NULL;
    *labels = NULL;
    if (gim_mul_overflows(n > 0 ? n : 1, c->crop, &total) || total > ((int64_t)1 << 40))
        return gim_errf(err, errlen, "%lld crops of %lld samples do not fit in memory", (long long)n, (long long)c->crop);
    float *x = gim_malloc_aligned((size_t)total * sizeof(float));
    int32_t *y = gim_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!x || !y) {
        gim_free(x);
        gim_free(y);
        return gim_errf(err, errlen, "out of memory for %lld crops of audio (%.2f GiB)", (long long)n,
                        4.0 * (double)total / (1 << 30));
    }
    for (int64_t i = 0; i < n; i++) {
        gim_audio_crop(c, idx[i], epoch, x + i * c->crop);
        y[i] = c->utts[idx[i]].speaker;
    }
    ex->n = n;
    ex->x_rank = 2;
    ex->x_shape[0] = 1;
    ex->x_shape[1] = c->crop;
    ex->x_numel = c->crop;
    ex->x = x;
    ex->labels = y;
    ex->n_classes = c->n_speakers;
    *storage = x;
    *labels = y;
    return 0;
}

/* gim_example_fn over a gim_audio_view. */
static int audio_example(void *ctx, int64_t epoch, int64_t i, float *x, int32_t *label, char *err, size_t errlen) {
    const gim_audio_view *v = ctx;
    if (i < 0 || i >= v->n) return gim_errf(err, errlen, "audio example %lld of %lld asked for", (long long)i, (long long)v->n);
    gim_audio_crop(v->c, v->idx[i], epoch < 0 ? -1 : epoch, x);
    if (label) *label = v->c->utts[v->idx[i]].speaker;
    return 0;
}

void gim_audio_source(const gim_audio_view *v, gim_examples *ex) {
    memset(ex, 0, sizeof *ex);
    ex->n = v->n;
    ex->x_rank = 2;
    ex->x_shape[0] = 1;
    ex->x_shape[1] = v->c->crop;
    ex->x_numel = v->c->crop;
    ex->n_classes = v->c->n_speakers;
    ex->source = audio_example;
    ex->source_ctx = (void *)v;
    ex->source_labels = true;
}

/* First sample of crop k of `crops` spread evenly over utterance u: the
 * first at its start, the last at its end; one crop is the centred one. */
static int64_t spread_crop_start(const gim_audio_corpus *c, int64_t u, int64_t k, int64_t crops) {
    int64_t room = c->utts[u].length - c->crop;
    return crops > 1 ? room * k / (crops - 1) : room / 2;
}

/* The speaker probe's examples: row r is crop r mod crops of utterance
 * idx[r / crops], the crops spread over the utterance. */
typedef struct audio_spread {
    const gim_audio_corpus *c;
    const int64_t *idx;
    int64_t crops;
    float **feats;          /* per module: rows × dims[module], the crops' frames averaged */
    const int64_t *dims;
    const gim_exec_model *m;
} audio_spread;

static int audio_spread_example(void *ctx, int64_t epoch, int64_t r, float *x, int32_t *label, char *err,
                                size_t errlen) {
    (void)epoch, (void)err, (void)errlen;
    const audio_spread *a = ctx;
    int64_t u = a->idx[r / a->crops];
    memcpy(x, a->c->samples + a->c->utts[u].offset + spread_crop_start(a->c, u, r % a->crops, a->crops),
           sizeof(float) * (size_t)a->c->crop);
    if (label) *label = a->c->utts[u].speaker;
    return 0;
}

/* A batch's per-frame features [count, frames, dims] averaged over the
 * frames into its rows. */
static int audio_spread_pool(void *arg, int module, int64_t start, int64_t count, const float *features, char *err,
                             size_t errlen) {
    (void)err, (void)errlen;
    const audio_spread *a = arg;
    int64_t c = a->dims[module];
    gim_probe_pool_mean_to(features, count, gim_feature_numel(a->m, module) / c, c, a->feats[module] + start * c);
    return 0;
}

int gim_audio_features(const gim_exec_model *m, const gim_train_state *s, const gim_audio_corpus *c,
                       const int64_t *idx, int64_t n, int64_t crops, float **feats, int64_t *dims,
                       void (*show)(void *arg, int64_t done, int64_t total), void *arg, char *err, size_t errlen) {
    int nm = m->n_modules, rc = -1;
    int64_t rows = 0;
    for (int i = 0; i < nm; i++) feats[i] = NULL, dims[i] = 0;
    if (crops < 1 || gim_mul_overflows(n, crops, &rows)) {
        gim_errf(err, errlen, "%lld utterances of %lld crops each: too many", (long long)n, (long long)crops);
        goto done;
    }
    for (int i = 0; i < nm; i++) {
        int sl = m->modules[i].feature_slot;
        if (sl < 0) continue;
        dims[i] = m->slots[sl].shape[m->slots[sl].rank - 1];
        if (!(feats[i] = gim_malloc(sizeof(float) * (size_t)(rows * dims[i] + 1)))) {
            gim_errf(err, errlen, "out of memory");
            goto done;
        }
    }
    /* batches side by side (runtime/features.c), each averaged as it comes:
     * the per-frame features of a whole split would not fit */
    audio_spread a = {.c = c, .idx = idx, .crops = crops, .feats = feats, .dims = dims, .m = m};
    gim_examples ex = {.n = rows, .x_rank = 2, .x_shape = {1, c->crop}, .x_numel = c->crop,
                       .n_classes = c->n_speakers, .source = audio_spread_example, .source_ctx = &a,
                       .source_labels = true};
    if (gim_extract_features_each(m, s, &ex, audio_spread_pool, &a, show, arg, NULL, err, errlen)) goto done;
    rc = 0;
done:
    if (rc)
        for (int i = 0; i < nm; i++) gim_free(feats[i]), feats[i] = NULL;
    return rc;
}
