/* Runtime helpers that generated code does not call but the runtime's own
 * parts (data order, parameter initialisation) and tests share.
 *
 * Random streams: every random draw in a run is a pure function of
 * (seed, stream, counter). Streams are partitioned by their top bits so two
 * uses never draw the same numbers:
 *   0 .. 2^62-1            loss ops (lowering numbers the infonce losses 1, 2, ...)
 *   GIM_RT_STREAM_INIT|h   parameter initialisation, h from the parameter's name
 *   GIM_RT_STREAM_DATA|e   data order of epoch e
 *   GIM_RT_STREAM_CROP|e   audio: where each utterance's crop starts in epoch e (e < 2^61)
 *   GIM_RT_STREAM_SPLIT|h  audio: the train/test split of a speaker, h from its name */
#ifndef GIM_RT_INTERNAL_H
#define GIM_RT_INTERNAL_H

#include <stdint.h>

#define GIM_RT_STREAM_INIT (UINT64_C(2) << 62)
#define GIM_RT_STREAM_DATA (UINT64_C(3) << 62)
#define GIM_RT_STREAM_CROP (UINT64_C(1) << 62)
#define GIM_RT_STREAM_SPLIT (UINT64_C(1) << 62 | UINT64_C(1) << 61)
#define GIM_RT_STREAM_TAG_MASK (UINT64_C(3) << 62)

/* Philox4x32-10 (Salmon et al., SC 2011): the block function itself, exposed
 * for the known-answer test. */
void gim_rt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Uniform float in [0, 1): the top 24 bits of gim_rt_rand_u64, so every value
 * is exactly representable and 1.0 is never returned. */
float gim_rt_rand_uniform(uint64_t seed, uint64_t stream, uint64_t counter);

/* Uniform integer in [0, n) for 64-bit n (n >= 1); same method as
 * gim_rt_rand_below. */
uint64_t gim_rt_rand_below64(uint64_t seed, uint64_t stream, uint64_t counter, uint64_t n);

/* Fisher-Yates shuffle of a[0..n): a[i] is swapped with a[j], j drawn from
 * [0, i] with counter i, for i = n-1 down to 1. A pure function of
 * (a, seed, stream). */
void gim_rt_shuffle_i64(int64_t *a, int64_t n, uint64_t seed, uint64_t stream);

/* FNV-1a, 64 bits: the stream of a parameter's initialisation comes from its
 * name, so the same parameter starts equal however the network is cut. */
uint64_t gim_rt_hash_name(const char *s);

#endif
