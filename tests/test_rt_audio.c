/* Audio corpora (runtime/audio.c): trees of files written here with
 * libsndfile in every sample format the reader must take (8/16/24-bit PCM,
 * float, FLAC, other rates, stereo), their exact decoded samples, speakers
 * and the seeded split, crops, the cache, and every kind of hostile file
 * (truncated, lying headers, empty, not audio, no audio at all, a speaker
 * with one utterance): a skip that names the file, or an error, never a
 * crash. */
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_data.h"
#include "gim_train.h"
#include "gim_util.h"
#include "testutil.h"

#define N 2000   /* samples per test file */

/* Sample i of utterance `seed`: a multiple of 1/64 in [-1, 1), so every
 * format here (8-bit PCM included) stores it exactly, and the mean of two
 * such values is exact too. */
static float sample(int seed, int64_t i) {
    return (float)(((i * 7 + seed * 13) % 128) - 64) / 64.0f;
}

static char *tree(const char *name) {
    char *d = gim_xmalloc(strlen(gim_tmpdir()) + strlen(name) + 2);
    sprintf(d, "%s/%s", gim_tmpdir(), name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    CU_ASSERT_FATAL(system(cmd) == 0);
    CU_ASSERT_FATAL(mkdir(d, 0755) == 0);
    return d;
}

/* mkdir -p of the file's directory, then the path. */
static const char *file_in(const char *root, const char *rel) {
    static char path[2048];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(path, 0755);
        *p = '/';
    }
    return path;
}

/* Writes `frames` frames of `channels` channels at `rate`: channel c of
 * frame i is sample(seed + c, i). */
static void write_audio(const char *root, const char *rel, int format, int rate, int channels, int64_t frames,
                        int seed) {
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *f = sf_open(file_in(root, rel), SFM_WRITE, &info);
    if (!f) fprintf(stderr, "%s: %s\n", rel, sf_strerror(NULL));
    CU_ASSERT_FATAL(f != NULL);
    /* as 32-bit integers: libsndfile scales them to every PCM width by a
     * shift, exactly (floats would be scaled by 2^15 - 1 into 16 bits,
     * and read back by 2^-15); a float file gets the floats themselves */
    int *x = gim_xmalloc(sizeof(int) * (size_t)(frames * channels + 1));
    for (int64_t i = 0; i < frames; i++)
        for (int c = 0; c < channels; c++) x[i * channels + c] = (int)(sample(seed + c, i) * 2147483648.0);
    if ((format & SF_FORMAT_SUBMASK) == SF_FORMAT_FLOAT) {
        float *xf = gim_xmalloc(sizeof(float) * (size_t)(frames * channels + 1));
        for (int64_t i = 0; i < frames * channels; i++) xf[i] = (float)(x[i] / 2147483648.0);
        CU_ASSERT_EQUAL(sf_writef_float(f, xf, frames), frames);
        gim_free(xf);
    } else {
        CU_ASSERT_EQUAL(sf_writef_int(f, x, frames), frames);
    }
    sf_close(f);
    gim_free(x);
}

static void write_bytes(const char *root, const char *rel, const void *p, size_t n) {
    FILE *f = fopen(file_in(root, rel), "wb");
    CU_ASSERT_FATAL(f != NULL);
    if (n) CU_ASSERT_EQUAL(fwrite(p, 1, n, f), n);
    fclose(f);
}

static int open_corpus(const char *dir, int64_t crop, const char *cache, uint64_t seed, gim_audio_corpus *c, char *err,
                       size_t errlen) {
    gim_audio_options o;
    gim_audio_defaults(&o);
    o.crop = crop;
    o.seed = seed;
    o.cache_dir = cache;
    err[0] = 0;
    return gim_audio_open(dir, &o, c, NULL, err, errlen);
}

static int64_t find_utt(const gim_audio_corpus *c, const char *path) {
    for (int64_t u = 0; u < c->n_utts; u++)
        if (!strcmp(c->utts[u].path, path)) return u;
    return -1;
}

/* Every format decodes to exactly the samples written; stereo is the mean
 * of its channels; the speaker is the first directory level. */
static void test_formats_exact(void) {
    char *d = tree("formats");
    static const struct { const char *rel; int format, channels; } files[] = {
        {"alice/1/u8.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_U8, 1},
        {"alice/1/s16.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1},
        {"alice/2/s24.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 1},
        {"bob/1/float.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 1},
        {"bob/1/a.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 1},
        {"bob/1/stereo.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 2},
        {"carol/x/stereo.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 2},
    };
    int nf = (int)(sizeof files / sizeof files[0]);
    for (int i = 0; i < nf; i++) write_audio(d, files[i].rel, files[i].format, 16000, files[i].channels, N, i);
    gim_audio_corpus c;
    char err[2048];
    int rc = open_corpus(d, N, NULL, 0, &c, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    CU_ASSERT_FATAL(rc == 0);
    CU_ASSERT_EQUAL(c.n_utts, nf);
    CU_ASSERT_EQUAL(c.n_speakers, 3);
    CU_ASSERT_EQUAL(c.n_bad, 0);
    CU_ASSERT(strstr(c.notes, "speaker carol has one usable utterance") && !strstr(c.notes, "skipped"));
    float *x = gim_xmalloc(sizeof(float) * N);
    for (int i = 0; i < nf; i++) {
        int64_t u = find_utt(&c, files[i].rel);
        CU_ASSERT_FATAL(u >= 0);
        CU_ASSERT_EQUAL(c.utts[u].length, N);
        CU_ASSERT_STRING_EQUAL(c.speakers[c.utts[u].speaker], i < 3 ? "alice" : i < 6 ? "bob" : "carol");
        gim_audio_crop(&c, u, 0, x);
        int bad = 0;
        for (int64_t k = 0; k < N; k++) {
            float want = files[i].channels == 2 ? (sample(i, k) + sample(i + 1, k)) / 2 : sample(i, k);
            bad += x[k] != want;
        }
        if (bad) fprintf(stderr, "%s: %d samples differ\n", files[i].rel, bad);
        CU_ASSERT_EQUAL(bad, 0);
    }
    gim_free(x);
    gim_audio_close(&c);
    gim_free(d);
}

/* Other rates become 16 kHz: a 440 Hz tone keeps its length in seconds and
 * its frequency (it matches the ideal 16 kHz tone away from the ends). */
static void test_resampling(void) {
    char *d = tree("rates");
    static const int rates[] = {8000, 22050, 44100, 48000};
    for (int r = 0; r < 4; r++) {
        char rel[64];
        snprintf(rel, sizeof rel, "spk/ch/tone%d.wav", rates[r]);
        SF_INFO info = {.samplerate = rates[r], .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
        SNDFILE *f = sf_open(file_in(d, rel), SFM_WRITE, &info);
        CU_ASSERT_FATAL(f != NULL);
        int64_t n = rates[r];   /* one second */
        float *x = gim_xmalloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) x[i] = 0.5f * (float)sin(2 * M_PI * 440.0 * (double)i / rates[r]);
        sf_writef_float(f, x, n);
        sf_close(f);
        gim_free(x);
    }
    gim_audio_corpus c;
    char err[2048];
    CU_ASSERT_FATAL(open_corpus(d, 8000, NULL, 0, &c, err, sizeof err) == 0);
    CU_ASSERT_EQUAL(c.n_utts, 4);
    for (int64_t u = 0; u < c.n_utts; u++) {
        const gim_audio_utt *t = &c.utts[u];
        CU_ASSERT(llabs(t->length - 16000) <= 2);
        double err2 = 0, ref2 = 0;
        for (int64_t i = 1000; i < 15000; i++) {
            double want = 0.5 * sin(2 * M_PI * 440.0 * (double)i / 16000);
            double e = c.samples[t->offset + i] - want;
            err2 += e * e;
            ref2 += want * want;
        }
        if (err2 > 1e-4 * ref2) fprintf(stderr, "%s: relative error %g\n", t->path, err2 / ref2);
        CU_ASSERT(err2 <= 1e-4 * ref2);
    }
    gim_audio_close(&c);
    gim_free(d);
}

/* Six speakers of five utterances: one test utterance each, the split a
 * function of the seed alone; crops a function of (seed, epoch, utterance)
 * inside the utterance, the centred one for evaluation. */
static void test_split_and_crops(void) {
    char *d = tree("split");
    for (int s = 0; s < 6; s++)
        for (int u = 0; u < 5; u++) {
            char rel[64];
            snprintf(rel, sizeof rel, "%d/c/%d.flac", 100 + s, u);
            write_audio(d, rel, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, N + 100 * u, s * 5 + u);
        }
    gim_audio_corpus a, b, e;
    char err[2048];
    CU_ASSERT_FATAL(open_corpus(d, 1000, NULL, 7, &a, err, sizeof err) == 0);
    CU_ASSERT_FATAL(open_corpus(d, 1000, NULL, 7, &b, err, sizeof err) == 0);
    CU_ASSERT_FATAL(open_corpus(d, 1000, NULL, 8, &e, err, sizeof err) == 0);
    CU_ASSERT_EQUAL(a.n_speakers, 6);
    CU_ASSERT_EQUAL(a.n_test, 6);
    CU_ASSERT_EQUAL(a.n_train, 24);
    int per_speaker[6] = {0}, same_split = 1, differs = 0;
    for (int64_t i = 0; i < a.n_test; i++) {
        per_speaker[a.utts[a.test[i]].speaker]++;
        same_split &= a.test[i] == b.test[i];
        differs |= a.test[i] != e.test[i];
    }
    for (int s = 0; s < 6; s++) CU_ASSERT_EQUAL(per_speaker[s], 1);
    CU_ASSERT(same_split);
    CU_ASSERT(differs);   /* seed 8 picks another test utterance for some speaker */
    /* train and test partition the utterances */
    int seen[30] = {0};
    for (int64_t i = 0; i < a.n_train; i++) seen[a.train[i]]++;
    for (int64_t i = 0; i < a.n_test; i++) seen[a.test[i]]++;
    int once = 0;
    for (int u = 0; u < 30; u++) once += seen[u] == 1;
    CU_ASSERT_EQUAL(once, 30);
    int moved = 0, inside = 1, same = 1;
    for (int64_t u = 0; u < a.n_utts; u++) {
        for (int64_t ep = 0; ep < 3; ep++) {
            int64_t s0 = gim_audio_crop_start(&a, u, ep);
            inside &= s0 >= 0 && s0 <= a.utts[u].length - a.crop;
            same &= s0 == gim_audio_crop_start(&b, u, ep);
            moved += ep > 0 && s0 != gim_audio_crop_start(&a, u, 0);
        }
        CU_ASSERT_EQUAL(gim_audio_crop_start(&a, u, -1), (a.utts[u].length - a.crop) / 2);
    }
    CU_ASSERT(inside);
    CU_ASSERT(same);
    CU_ASSERT(moved > 40);   /* of 60 (utterance, later epoch) pairs, nearly all move */
    /* the examples carry the crops and the speakers */
    gim_examples ex;
    float *x;
    int32_t *y;
    CU_ASSERT_FATAL(gim_audio_examples(&a, a.test, a.n_test, 2, &ex, &x, &y, err, sizeof err) == 0);
    CU_ASSERT_EQUAL(ex.n, 6);
    CU_ASSERT_EQUAL(ex.x_numel, 1000);
    CU_ASSERT_EQUAL(ex.n_classes, 6);
    int64_t u3 = a.test[3];
    CU_ASSERT_EQUAL(y[3], a.utts[u3].speaker);
    CU_ASSERT(!memcmp(x + 3 * 1000, a.samples + a.utts[u3].offset + gim_audio_crop_start(&a, u3, 2), 4000));
    gim_free(x);
    gim_free(y);
    /* the same crops made on demand, as the trainer asks for them */
    gim_audio_view view = {&a, a.train, a.n_train};
    gim_audio_source(&view, &ex);
    CU_ASSERT_EQUAL(ex.n, 24);
    CU_ASSERT(ex.source != NULL && ex.source_labels && ex.x == NULL);
    float got[1000], want[1000];
    int32_t label = -1;
    int agree = 0;
    for (int64_t ep = GIM_EPOCH_NONE; ep < 3; ep++)
        for (int64_t i = 0; i < ex.n; i++) {
            CU_ASSERT_FATAL(ex.source(ex.source_ctx, ep, i, got, &label, err, sizeof err) == 0);
            gim_audio_crop(&a, a.train[i], ep, want);
            agree += !memcmp(got, want, sizeof got) && label == a.utts[a.train[i]].speaker;
        }
    CU_ASSERT_EQUAL(agree, 4 * 24);
    CU_ASSERT_EQUAL(ex.source(ex.source_ctx, 0, 24, got, NULL, err, sizeof err), -1);
    gim_audio_close(&a);
    gim_audio_close(&b);
    gim_audio_close(&e);
    gim_free(d);
}

/* The test split can come from a list file instead; a line naming no
 * utterance is an error at its line. */
static void test_test_list(void) {
    char *d = tree("listed");
    for (int u = 0; u < 4; u++) {
        char rel[64];
        snprintf(rel, sizeof rel, "s%d/c/%d.wav", u % 2, u);
        write_audio(d, rel, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, u);
    }
    const char *list = gim_tmpfile("test-list.txt", "# held out\ns0/c/2.wav\n\n", 23);
    gim_audio_options o;
    gim_audio_defaults(&o);
    o.crop = 100;
    o.test_list = list;
    gim_audio_corpus c;
    char err[2048];
    CU_ASSERT_FATAL(gim_audio_open(d, &o, &c, NULL, err, sizeof err) == 0);
    CU_ASSERT_EQUAL(c.n_test, 1);
    CU_ASSERT_STRING_EQUAL(c.utts[c.test[0]].path, "s0/c/2.wav");
    gim_audio_close(&c);
    o.test_list = gim_tmpfile("bad-list.txt", "s0/c/2.wav\ns9/c/0.wav\n", 22);
    CU_ASSERT_EQUAL(gim_audio_open(d, &o, &c, NULL, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "bad-list.txt:2:") && strstr(err, "s9/c/0.wav"));
    gim_audio_close(&c);
    gim_free(d);
}

/* The cache: written once, then mapped; a changed file or a damaged cache
 * decodes again. */
static void test_cache(void) {
    char *d = tree("cached");
    char *cache = tree("cached-out");
    write_audio(d, "a/1/x.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, 1);
    write_audio(d, "b/1/y.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, 2);
    gim_audio_corpus c1, c2, c3;
    char err[2048];
    CU_ASSERT_FATAL(open_corpus(d, 500, cache, 0, &c1, err, sizeof err) == 0);
    CU_ASSERT(!c1.from_cache);
    CU_ASSERT_FATAL(open_corpus(d, 500, cache, 0, &c2, err, sizeof err) == 0);
    CU_ASSERT(c2.from_cache);
    CU_ASSERT_EQUAL(c2.n_utts, 2);
    CU_ASSERT(!memcmp(c1.samples, c2.samples, sizeof(float) * 2 * N));
    gim_audio_close(&c2);
    /* a file changes: decoded again, with its new length */
    write_audio(d, "b/1/y.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N + 10, 2);
    CU_ASSERT_FATAL(open_corpus(d, 500, cache, 0, &c3, err, sizeof err) == 0);
    CU_ASSERT(!c3.from_cache);
    CU_ASSERT_EQUAL(c3.utts[find_utt(&c3, "b/1/y.wav")].length, N + 10);
    gim_audio_close(&c3);
    /* a damaged cache (cut short): decoded again, not trusted */
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", cache, GIM_AUDIO_CACHE_NAME);
    CU_ASSERT_FATAL(truncate(path, 4096 + 100) == 0);
    CU_ASSERT_FATAL(open_corpus(d, 500, cache, 0, &c3, err, sizeof err) == 0);
    CU_ASSERT(!c3.from_cache);
    CU_ASSERT_EQUAL(c3.n_utts, 2);
    gim_audio_close(&c3);
    gim_audio_close(&c1);
    gim_free(d);
    gim_free(cache);
}

/* Reads a whole file into memory. */
static uint8_t *slurp(const char *path, size_t *n) {
    char *p = gim_read_file(path, n);
    CU_ASSERT_FATAL(p != NULL);
    return (uint8_t *)p;
}

/* Finds a 4-byte chunk id in a RIFF file; returns its offset or -1. */
static long chunk(const uint8_t *b, size_t n, const char *id) {
    for (size_t i = 12; i + 8 <= n; i++)
        if (!memcmp(b + i, id, 4)) return (long)i;
    return -1;
}

static void put_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Hostile files among good ones: each skipped and named with its reason,
 * or (a length header that overstates) read for what it really holds. */
static void test_hostile_files(void) {
    char *d = tree("hostile");
    write_audio(d, "good/1/a.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, 1);
    write_audio(d, "good/1/b.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, 2);
    /* a template WAV to damage */
    write_audio(d, "good/1/c.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, 3);
    size_t n;
    uint8_t *wav = slurp(file_in(d, "good/1/c.wav"), &n);
    long data = chunk(wav, n, "data"), fmt = chunk(wav, n, "fmt ");
    CU_ASSERT_FATAL(data > 0 && fmt > 0);
    /* cut in the middle of the samples: the header now overstates */
    write_bytes(d, "bad/1/cut.wav", wav, (size_t)data + 8 + N);
    /* cut inside the header */
    write_bytes(d, "bad/1/cut-header.wav", wav, 20);
    /* a sample rate of 0 and of 4 GHz */
    uint8_t *w = gim_xmalloc(n);
    memcpy(w, wav, n);
    put_le32(w + fmt + 12, 0);
    write_bytes(d, "bad/1/rate0.wav", w, n);
    put_le32(w + fmt + 12, 0xffffffffu);
    put_le32(w + fmt + 16, 0xffffffffu);
    write_bytes(d, "bad/1/rate4g.wav", w, n);
    /* a data chunk claiming 2 GB */
    memcpy(w, wav, n);
    put_le32(w + data + 4, 0x7fffff00u);
    write_bytes(d, "good/2/long-claim.wav", w, n);
    /* a speaker whose only file is good */
    write_audio(d, "solo/1/a.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, 6);
    /* no samples at all, nothing at all, not audio, NaN samples */
    write_audio(d, "bad/1/empty.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 0, 0);
    write_bytes(d, "bad/1/zero-bytes.flac", "", 0);
    write_bytes(d, "bad/1/text.wav", "this is not a sound file at all, just words\n", 44);
    write_bytes(d, "bad/1/noise.flac", wav + 44, 300);
    {
        SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
        SNDFILE *f = sf_open(file_in(d, "bad/1/nan.wav"), SFM_WRITE, &info);
        float x[N];
        for (int i = 0; i < N; i++) x[i] = i == 700 ? NAN : 0.25f;
        sf_writef_float(f, x, N);
        sf_close(f);
    }
    /* audio outside a speaker directory, and shorter than a crop */
    write_audio(d, "loose.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, N, 4);
    write_audio(d, "good/1/short.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 900, 5);
    /* a transcript beside the audio is not looked at */
    write_bytes(d, "good/1/good-1.trans.txt", "A B C\n", 6);
    gim_free(w);
    gim_free(wav);

    gim_audio_corpus c;
    char err[2048];
    int rc = open_corpus(d, 1000, NULL, 0, &c, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    CU_ASSERT_FATAL(rc == 0);
    static const char *const skipped[] = {"bad/1/cut.wav", "good/2/long-claim.wav", "bad/1/cut-header.wav", "bad/1/rate0.wav",
                                          "bad/1/rate4g.wav", "bad/1/empty.wav", "bad/1/zero-bytes.flac",
                                          "bad/1/text.wav", "bad/1/noise.flac", "bad/1/nan.wav", "loose.wav"};
    int ns = (int)(sizeof skipped / sizeof skipped[0]);
    for (int i = 0; i < ns; i++) {
        char name[1024];
        snprintf(name, sizeof name, "%s/%s: skipped: ", d, skipped[i]);
        if (!strstr(c.notes, name)) fprintf(stderr, "not named: %s\nnotes:\n%s", skipped[i], c.notes);
        CU_ASSERT(strstr(c.notes, name) != NULL);
        CU_ASSERT_EQUAL(find_utt(&c, skipped[i]), -1);
    }
    CU_ASSERT(strstr(c.notes, "rate0.wav: skipped: ") != NULL);
    CU_ASSERT(strstr(c.notes, "nan.wav: skipped: a sample that is not a finite number") != NULL);
    CU_ASSERT(strstr(c.notes, "loose.wav: skipped: not inside a speaker directory") != NULL);
    CU_ASSERT(strstr(c.notes, "1 utterance shorter than a crop") != NULL && strstr(c.notes, "good/1/short.wav"));
    CU_ASSERT_EQUAL(c.n_bad, ns);
    CU_ASSERT_EQUAL(c.n_short, 1);
    CU_ASSERT_EQUAL(c.n_files, ns + 5);   /* the transcript is not counted */
    CU_ASSERT(strstr(c.notes, "cut.wav: skipped: truncated, or its header lies about its length") != NULL);
    /* what is left: good (a, b, c) and solo (a) */
    CU_ASSERT_EQUAL(c.n_utts, 4);
    CU_ASSERT_EQUAL(c.n_speakers, 2);
    CU_ASSERT(strstr(c.notes, "speaker solo has one usable utterance") != NULL);
    gim_audio_close(&c);
    gim_free(d);
}

/* Speaker directories of one utterance each: noted, training split only. */
static void test_single_utterance_speaker(void) {
    char *d = tree("single");
    write_audio(d, "lonely/1/only.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, N, 1);
    write_audio(d, "many/1/a.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, N, 2);
    write_audio(d, "many/1/b.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, N, 3);
    gim_audio_corpus c;
    char err[2048];
    CU_ASSERT_FATAL(open_corpus(d, 1000, NULL, 0, &c, err, sizeof err) == 0);
    CU_ASSERT(strstr(c.notes, "speaker lonely has one usable utterance") != NULL && strstr(c.notes, "lonely/1/only.flac"));
    CU_ASSERT_EQUAL(c.n_test, 1);
    CU_ASSERT_EQUAL(c.utts[c.test[0]].speaker, c.utts[find_utt(&c, "many/1/a.flac")].speaker);
    gim_audio_close(&c);
    gim_free(d);
}

/* Trees with nothing usable are errors that say what was found. */
static void test_no_audio(void) {
    char err[4096];
    gim_audio_corpus c;
    char *d = tree("empty-tree");
    CU_ASSERT_EQUAL(open_corpus(d, 1000, NULL, 0, &c, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "no files at all") != NULL);
    gim_audio_close(&c);
    write_bytes(d, "spk/1/readme.md", "# not audio\n", 12);
    write_audio(d, "spk/1/tiny.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 10, 1);
    CU_ASSERT_EQUAL(open_corpus(d, 1000, NULL, 0, &c, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "no usable audio among 2 files") && strstr(err, "spk/1/readme.md: skipped: not audio") &&
              strstr(err, "spk/1/tiny.wav"));
    gim_audio_close(&c);
    CU_ASSERT_EQUAL(open_corpus(file_in(d, "spk/1/readme.md"), 1000, NULL, 0, &c, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "not a directory") != NULL);
    gim_audio_close(&c);
    CU_ASSERT(!gim_audio_is_corpus(file_in(d, "spk/1/readme.md")));
    CU_ASSERT(gim_audio_is_corpus(d));
    CU_ASSERT(!gim_audio_is_corpus(file_in(d, "spk/1")));   /* no directory in it: an IDX set */
    write_bytes(d, "train-images-idx3-ubyte.gz", "x", 1);
    CU_ASSERT(!gim_audio_is_corpus(d));   /* an IDX directory */
    gim_free(d);
}

int main(void) {
    static const gim_test tests[] = {
        {"formats decode exactly, stereo mixed down", test_formats_exact},
        {"other rates converted to 16 kHz", test_resampling},
        {"speakers, seeded split and crops", test_split_and_crops},
        {"test split from a list file", test_test_list},
        {"decoded once into a cache, then mapped", test_cache},
        {"hostile files skipped and named", test_hostile_files},
        {"a speaker with one utterance", test_single_utterance_speaker},
        {"trees with no usable audio", test_no_audio},
        {NULL, NULL},
    };
    return gim_run_suite("rt_audio", tests);
}
