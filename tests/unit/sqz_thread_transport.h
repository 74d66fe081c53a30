/* A transport over threads: N logical ranks in one process exchange bytes through shared memory
 * and a barrier, so the collective algorithms run in unit tests without MPI. */
#ifndef SQZ_THREAD_TRANSPORT_H
#define SQZ_THREAD_TRANSPORT_H

#include <squeeze.h>

typedef struct sqz_thread_group sqz_thread_group_t;

/** A group of nranks logical ranks. */
sqz_thread_group_t *sqz_thread_group_create(int nranks);
void                sqz_thread_group_destroy(sqz_thread_group_t *g);

/** Fills t for `rank` of the group. */
void sqz_thread_transport(sqz_thread_group_t *g, int rank, sqz_transport_t *t);

/** Runs fn(rank, arg) on nranks threads and joins them. */
void sqz_thread_run(int nranks, void (*fn)(int rank, void *arg), void *arg);

#endif
