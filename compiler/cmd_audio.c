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

/* The speaker probe's settings. A speech corpus has hundreds of utterances
 * where an image set has tens of thousands, so the classifier reads four
 * crops of each training utterance, spread evenly over it (the paper's probe
 * sees a fresh random crop each epoch), and trains for many more steps at a
 * higher rate: with the image probe's 1,600 steps at lr 1e-3 it stopped far
 * from its optimum (training accuracy 40-60 %), further for some encoders
 * than for others, and the table compared how far each got rather than
 * what its features hold. 1000 epochs of 30 batches bring the training loss
 * close to flat for the trained and the random encoder alike. */
int64_t cmd_audio_probe_crops(void) { return 4; }

void cmd_audio_probe_options(gim_probe_options *po) {
    po->batch = 64;
    po->epochs = 1000;
    po->lr = 1e-2;
}
