/* "did you mean": the nearest candidate by edit distance, if plausible. */
#include "suggest.h"

#include <string.h>

#include "gim_util.h"

void gim_suggest_init(gim_suggest *s, const char *wrong) {
    s->wrong = wrong;
    s->best = NULL;
    s->best_dist = 1 << 30;
}

void gim_suggest_add(gim_suggest *s, const char *candidate) {
    if (!candidate || !strcmp(candidate, s->wrong)) return;
    int d = gim_edit_distance(s->wrong, candidate);
    /* One name extending the other (batchsize / batch, lin / linear) is as
     * plausible as a one-letter typo. */
    size_t lw = strlen(s->wrong), lc = strlen(candidate), shorter = lw < lc ? lw : lc;
    if (shorter >= 3 && !strncmp(s->wrong, candidate, shorter) && d > 1) d = 1;
    if (d < s->best_dist) {
        s->best_dist = d;
        s->best = candidate;
    }
}

/* A typo changes a few characters: accept up to a third of the longer name
 * (at least 1, 2 from four characters on, at most 3) — `conv2` -> `conv2d`, `negatves` -> `negatives`,
 * but not `x` -> `relu`. */
const char *gim_suggest_best(const gim_suggest *s) {
    if (!s->best) return NULL;
    size_t la = strlen(s->wrong), lb = strlen(s->best);
    size_t longer = la > lb ? la : lb;
    int limit = (int)(longer / 3);
    if (limit < 1) limit = 1;
    if (limit < 2 && longer >= 4) limit = 2;   /* a swapped pair: bais -> bias */
    if (limit > 3) limit = 3;
    return s->best_dist <= limit ? s->best : NULL;
}
