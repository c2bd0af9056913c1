/* "did you mean" suggestions (private to compiler/). */
#ifndef GIM_SUGGEST_H
#define GIM_SUGGEST_H

/* Collects candidate names and picks the nearest to a misspelt one. */
typedef struct gim_suggest {
    const char *wrong;
    const char *best;
    int best_dist;
} gim_suggest;

void gim_suggest_init(gim_suggest *s, const char *wrong);
void gim_suggest_add(gim_suggest *s, const char *candidate);
/* The nearest candidate if close enough to be a plausible typo, else NULL. */
const char *gim_suggest_best(const gim_suggest *s);

#endif
