/* N logical ranks in one process for the unit tests: the library's in-process group
 * (sqz_local_group_*) under the tests' short names, and a helper that runs one thread per rank. */
#ifndef SQZ_THREAD_TRANSPORT_H
#define SQZ_THREAD_TRANSPORT_H

#include <stdio.h>
#include <stdlib.h>

#include <squeeze.h>

typedef sqz_local_group_t sqz_thread_group_t;

/** A group of nranks logical ranks (exits the test on failure). */
static inline sqz_thread_group_t *sqz_thread_group_create(int nranks)
{
    sqz_local_group_t *g = NULL;
    if (SQZ_OK != sqz_local_group_create(nranks, &g)) {
        fprintf(stderr, "sqz_local_group_create(%d) failed\n", nranks);
        exit(1);
    }
    return g;
}

static inline void sqz_thread_group_destroy(sqz_thread_group_t *g) { sqz_local_group_destroy(g); }

/** Fills t for `rank` of the group. */
static inline void sqz_thread_transport(sqz_thread_group_t *g, int rank, sqz_transport_t *t)
{
    if (SQZ_OK != sqz_local_group_transport(g, rank, t)) {
        fprintf(stderr, "sqz_local_group_transport(rank %d) failed\n", rank);
        exit(1);
    }
}

/** Runs fn(rank, arg) on nranks threads (at most 64) and joins them. */
void sqz_thread_run(int nranks, void (*fn)(int rank, void *arg), void *arg);

#endif
