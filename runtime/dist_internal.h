/* The MPI transport (mpi_transport.c) as the MPI schedules (sched_mpi.c)
 * use it: messages of bytes between ranks, sent without blocking through a
 * bounded outbox, received by polling so that every wait is bounded (a peer
 * silent for cfg->peer_timeout seconds ends the run) and notices a stop
 * request. Nothing here exists in a build without MPI. */
#ifndef GIM_DIST_INTERNAL_H
#define GIM_DIST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tags: the data stream flows from rank r to r + 1; losses, states and
 * reports flow to rank 0; a stop request from any rank to rank 0. */
enum { RT_TAG_DATA = 1, RT_TAG_LOSS = 2, RT_TAG_STATE = 3, RT_TAG_STOP = 4 };

/* Kinds of messages on the data stream: a batch (with its payload), a
 * checkpoint marker, the end; under --refresh a refresh batch (examples
 * [batch_no, batch_no + batch) for the caches, with its payload) and a tick
 * (train on batch batch_no from the caches: no payload). */
enum { RT_MSG_BATCH = 1, RT_MSG_SAVE = 2, RT_MSG_END = 3, RT_MSG_REFRESH = 4, RT_MSG_TICK = 5 };

/* Non-blocking sends: at most `slots` in flight, each from a buffer the
 * outbox owns (the caller's data is copied in, so it may change at once). */
typedef struct rt_outbox rt_outbox;
rt_outbox *rt_outbox_new(int slots);
/* Sends the concatenation of parts[0..n) to `dst` with `tag`; waits (bounded
 * by timeout) while every slot is still in flight. -1 with err on timeout. */
int rt_outbox_send(rt_outbox *o, int dst, int tag, const void *const *parts, const size_t *sizes, int n,
                   double timeout, const char *peer, char *err, size_t errlen);
/* Waits until every send completed (bounded). */
int rt_outbox_flush(rt_outbox *o, double timeout, const char *peer, char *err, size_t errlen);
void rt_outbox_free(rt_outbox *o);
/* Bytes sent through the outbox so far. */
double rt_outbox_bytes(const rt_outbox *o);

/* Whether a message from src (-1: any) with tag (-1: any) is waiting; its
 * source, tag and size. */
bool rt_dist_poll(int src, int tag, int *src_out, int *tag_out, size_t *bytes);
/* Waits for such a message, at most timeout seconds: 0, or -1 with err
 * naming `peer`. */
int rt_dist_wait(int src, int tag, double timeout, const char *peer, int *src_out, int *tag_out, size_t *bytes,
                 char *err, size_t errlen);
/* Receives the message rt_dist_poll/rt_dist_wait found into buf. */
void rt_dist_recv(int src, int tag, void *buf, size_t bytes);

#endif
