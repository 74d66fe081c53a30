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

/** A context of the settings kv (NAME, value, ..., NULL) and a communicator over rank `rank` of
 *  g (exits the test, naming the cause, when either cannot be made). */
static inline sqz_comm_t *sqz_thread_comm(sqz_thread_group_t *g, int rank,
                                          const char *const *kv, sqz_ctx_t **ctx)
{
    sqz_config_t *cfg;
    char          err[512] = "";
    if (SQZ_OK != sqz_config_create(&cfg)) {
        fprintf(stderr, "sqz_config_create failed\n");
        exit(1);
    }
    for (size_t i = 0; kv[i]; i += 2) {
        if (SQZ_OK != sqz_config_set(cfg, kv[i], kv[i + 1])) {
            fprintf(stderr, "sqz_config_set(%s, %s) failed\n", kv[i], kv[i + 1]);
            exit(1);
        }
    }
    const sqz_status_t st = sqz_ctx_create(cfg, ctx, err, sizeof(err));
    sqz_config_destroy(cfg);
    if (SQZ_OK != st) {
        fprintf(stderr, "sqz_ctx_create: %s\n", err);
        exit(1);
    }
    sqz_transport_t t;
    sqz_thread_transport(g, rank, &t);
    sqz_comm_t *comm = NULL;
    if (SQZ_OK != sqz_comm_create(*ctx, &t, &comm)) {
        fprintf(stderr, "sqz_comm_create(rank %d) failed\n", rank);
        exit(1);
    }
    return comm;
}

/** Runs fn(rank, arg) on nranks threads (at most 64) and joins them. */
void sqz_thread_run(int nranks, void (*fn)(int rank, void *arg), void *arg);

#endif
