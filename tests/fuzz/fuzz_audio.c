/* libFuzzer target for the audio reader (runtime/audio.c): the bytes are an
 * audio file in a speaker directory, beside one good file, and the tree is
 * opened as a corpus (decoding through libsndfile and, for other rates,
 * libsamplerate, then the cache written and mapped). Any bytes in: the
 * file is used or skipped with a note naming it, never a crash, a
 * sanitizer report or a leak. A result is checked against what the reader
 * promises: utterances inside the samples, at least a crop long, finite
 * samples, speakers in range, train and test partitioning the utterances.
 *
 * The first byte picks the crop (small, so short files are used too); the
 * rest is the file. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_data.h"
#include "gim_util.h"

/* The tree: ROOT/s/1/fuzz.wav (the input) and ROOT/t/1/good.wav (a fixed
 * 16-bit WAV of 64 samples, so the tree is never empty of audio). */
static const char *fuzz_root(void) {
    static char root[256];
    if (root[0]) return root;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(root, sizeof root, "%s/gim-fuzz-audio.%d", dir, (int)getpid());
    char p[512];
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/s", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/s/1", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/t", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/t/1", root), mkdir(p, 0755);
    /* RIFF header of 16-bit mono 16 kHz PCM, 128 bytes of samples */
    static const uint8_t hdr[44] = {'R', 'I', 'F', 'F', 164, 0, 0, 0, 'W', 'A', 'V', 'E', 'f', 'm', 't', ' ',
                                    16, 0, 0, 0, 1, 0, 1, 0, 0x80, 0x3e, 0, 0, 0, 0x7d, 0, 0,
                                    2, 0, 16, 0, 'd', 'a', 't', 'a', 128, 0, 0, 0};
    snprintf(p, sizeof p, "%s/t/1/good.wav", root);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    fwrite(hdr, 1, sizeof hdr, f);
    for (int i = 0; i < 64; i++) {
        int16_t s = (int16_t)(i * 300 - 9600);
        fwrite(&s, 2, 1, f);
    }
    fclose(f);
    return root;
}

void gim_fuzz_audio(const uint8_t *data, size_t size) {
    if (size < 1) return;
    const char *root = fuzz_root();
    char path[512];
    snprintf(path, sizeof path, "%s/s/1/fuzz.wav", root);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size > 1 && fwrite(data + 1, 1, size - 1, f) != size - 1) abort();
    fclose(f);

    gim_audio_options o;
    gim_audio_defaults(&o);
    o.crop = 1 + data[0] % 64;
    o.seed = data[0];
    o.test_every = 2;
    gim_audio_corpus c;
    char err[1024];
    err[0] = 0;
    if (gim_audio_open(root, &o, &c, NULL, err, sizeof err) != 0) {
        if (!err[0]) abort();   /* an error must say what is wrong */
        gim_audio_close(&c);
        unlink(path);
        return;
    }
    /* the good file is always there, so the input was used or named */
    if (c.n_utts < 1 || c.n_utts > 2 || c.n_speakers < 1 || c.n_speakers > 2) abort();
    if (c.n_utts == 1 && !strstr(c.notes, "fuzz.wav")) abort();
    if (c.n_train + c.n_test != c.n_utts) abort();
    int64_t total = 0;
    for (int64_t u = 0; u < c.n_utts; u++) {
        const gim_audio_utt *t = &c.utts[u];
        if (t->length < o.crop || t->offset < 0 || t->speaker < 0 || t->speaker >= c.n_speakers) abort();
        for (int64_t k = 0; k < t->length; k++)
            if (!isfinite(c.samples[t->offset + k])) abort();
        total += t->length;
        float *x = gim_malloc(sizeof(float) * (size_t)o.crop);
        if (!x) abort();
        for (int64_t ep = -1; ep < 2; ep++) {
            int64_t s0 = gim_audio_crop_start(&c, u, ep);
            if (s0 < 0 || s0 > t->length - o.crop) abort();
            gim_audio_crop(&c, u, ep, x);
        }
        gim_free(x);
    }
    (void)total;
    gim_audio_close(&c);
    unlink(path);
}

#ifndef GIM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gim_fuzz_audio(data, size);
    return 0;
}
#endif
