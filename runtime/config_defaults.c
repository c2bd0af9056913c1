/* The training configuration before any train block or command line. */
#include <string.h>

#include "gim_runtime.h"

/* batch 32, 1 epoch, Adam(lr 1e-3, betas 0.9 / 0.999, eps 1e-8), simultaneous,
 * seed 0, all cores, audio at 16 kHz. dataset and out_dir stay NULL: the dataset must be named,
 * and the driver makes out_dir "runs/<model>" once it knows the model. */
void gim_train_config_defaults(gim_train_config *c) {
    memset(c, 0, sizeof *c);
    c->dataset = NULL;
    c->batch = 32;
    c->epochs = 1;
    c->steps = 0;
    c->optimizer = GIM_OPT_ADAM;
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->weight_decay = 0;
    c->momentum = 0;
    c->schedule = GIM_SCHED_SIMULTANEOUS;
    c->seed = 0;
    c->threads = 0;
    c->out_dir = NULL;
    c->resume = false;
    c->e2e = false;
    c->save_every = 0;
    c->sample_rate = 16000;
    c->cache_dtype = GIM_CACHE_F32;
    c->refresh = 0;
}
