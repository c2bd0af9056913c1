/* What gimc train and gimc eval do differently on audio: open the tree of
 * audio files (runtime/audio.c) with the model's input length as the crop,
 * and probe speakers on time-averaged features. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "gim_data.h"
#include "gim_probe.h"
#include "gim_train.h"

bool cmd_audio_data(const gim_train_config *cfg) {
    return cfg->dataset && gim_audio_is_corpus(cfg->dataset);
}

/* The model's one float input must be [batch, 1, L]: L samples of mono audio. */
static int64_t audio_input_length(const gim_exec_model *m, char *err, size_t errlen) {
    for (int i = 0; i < m->n_slots; i++) {
        const gim_slot_info *s = &m->slots[i];
        if (s->producer >= 0 || s->is_labels) continue;
        if (s->rank == 3 && s->shape[1] == 1) return s->shape[2];
        char shape[128] = "";
        size_t at = 0;
        for (int k = 0; k < s->rank && at < sizeof shape; k++)
            at += (size_t)snprintf(shape + at, sizeof shape - at, k ? ", %" PRId64 : "[%" PRId64, s->shape[k]);
        if (at < sizeof shape) snprintf(shape + at, sizeof shape - at, "]");
        gim_errf(err, errlen, "the model's input '%s' is %s, but an audio data set gives [batch, 1, samples]", s->name,
                 shape);
        return -1;
    }
    gim_errf(err, errlen, "the model has no input to feed the audio to");
    return -1;
}

int cmd_audio_open(const char *cmd, const gim_train_config *cfg, const gim_exec_model *m, const char *cache_dir,
                   gim_audio_corpus *c) {
    char err[4096];
    memset(c, 0, sizeof *c);
    gim_audio_options o;
    gim_audio_defaults(&o);
    o.rate = cfg->sample_rate;
    o.seed = cfg->seed;
    o.cache_dir = cache_dir;
    if ((o.crop = audio_input_length(m, err, sizeof err)) < 0 || gim_audio_open(cfg->dataset, &o, c, stdout, err, sizeof err)) {
        fprintf(stderr, "gimc %s: error: %s\n", cmd, err);
        return GIMC_BAD_INPUT;
    }
    for (const char *p = c->notes; *p;) {
        const char *e = strchr(p, '\n');
        int n = e ? (int)(e - p) : (int)strlen(p);
        printf("note: %.*s\n", n, p);
        p += n + (e ? 1 : 0);
    }
    printf("audio: %" PRId64 " utterances of %d speakers (%" PRId64 " train, %" PRId64 " test) at %d Hz, crops of %" PRId64
           " samples; %" PRId64 " files skipped, %" PRId64 " too short; %s %s\n",
           c->n_utts, c->n_speakers, c->n_train, c->n_test, c->rate, c->crop, c->n_bad, c->n_short,
           c->from_cache ? "mapped from" : "decoded into", cache_dir ? cache_dir : "a temporary cache");
    fflush(stdout);
    return GIMC_OK;
}

int cmd_audio_probe(const gim_exec_model *m, const gim_train_state *st, const gim_audio_corpus *c, uint64_t seed,
                    gim_probe_result *res, int64_t *dims, char *err, size_t errlen) {
    int n = m->n_modules, rc = -1;
    float **ftr = gim_calloc((size_t)n, sizeof(float *)), **fte = gim_calloc((size_t)n, sizeof(float *));
    int64_t *dte = gim_calloc((size_t)n, sizeof(int64_t));
    int32_t *ytr = gim_malloc(sizeof(int32_t) * (size_t)(c->n_train + 1));
    int32_t *yte = gim_malloc(sizeof(int32_t) * (size_t)(c->n_test + 1));
    if (!ftr || !fte || !dte || !ytr || !yte) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (c->n_test == 0) {
        gim_errf(err, errlen, "%s: no test utterances to probe on (every speaker has a single usable one)", c->dir);
        goto done;
    }
    for (int64_t i = 0; i < c->n_train; i++) ytr[i] = c->utts[c->train[i]].speaker;
    for (int64_t i = 0; i < c->n_test; i++) yte[i] = c->utts[c->test[i]].speaker;
    if (gim_audio_features(m, st, c, c->train, c->n_train, ftr, dims, err, errlen) ||
        gim_audio_features(m, st, c, c->test, c->n_test, fte, dte, err, errlen))
        goto done;
    gim_probe_options po;
    gim_probe_defaults(&po);
    po.seed = seed;
    /* a speech corpus has hundreds of utterances, not tens of thousands of
     * images: smaller batches and more epochs give the classifier a similar
     * number of steps (200 epochs of 480 utterances: 1,600) */
    po.batch = 64;
    po.epochs = 200;
    for (int i = 0; i < n; i++) {
        if (!ftr[i]) continue;
        if (gim_probe_run(ftr[i], ytr, c->n_train, fte[i], yte, c->n_test, dims[i], c->n_speakers, &po, &res[i])) {
            gim_errf(err, errlen, "out of memory in the probe of module %d", i + 1);
            goto done;
        }
    }
    rc = 0;
done:
    for (int i = 0; ftr && fte && i < n; i++) {
        gim_free(ftr[i]);
        gim_free(fte[i]);
    }
    gim_free(ftr);
    gim_free(fte);
    gim_free(dte);
    gim_free(ytr);
    gim_free(yte);
    return rc;
}
