#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_thread_transport.h"

typedef struct {
    const void   *buf;
    const size_t *counts; /* per destination (alltoallv) */
    const size_t *displs;
    size_t        bytes;  /* allgatherv */
} sqz_tt_slot_t;

struct sqz_thread_group {
    int                nranks;
    pthread_barrier_t  barrier;
    sqz_tt_slot_t     *slots;
};

typedef struct {
    sqz_thread_group_t *g;
    int                 rank;
} sqz_tt_self_t;

static sqz_tt_self_t sqz_tt_selves[64];

sqz_thread_group_t *sqz_thread_group_create(int nranks)
{
    sqz_thread_group_t *g = calloc(1, sizeof(*g));
    g->nranks             = nranks;
    g->slots              = calloc((size_t)nranks, sizeof(*g->slots));
    pthread_barrier_init(&g->barrier, NULL, (unsigned)nranks);
    return g;
}

void sqz_thread_group_destroy(sqz_thread_group_t *g)
{
    if (g) {
        pthread_barrier_destroy(&g->barrier);
        free(g->slots);
        free(g);
    }
}

/* Publish, barrier, copy, barrier: the second barrier keeps senders' buffers alive until every
 * receiver has copied. */
static int sqz_tt_allgatherv(void *self, const void *sendbuf, size_t sendbytes, void *recvbuf,
                             const size_t *recvbytes, const size_t *displs)
{
    sqz_tt_self_t      *s = self;
    sqz_thread_group_t *g = s->g;
    g->slots[s->rank]     = (sqz_tt_slot_t){.buf = sendbuf, .bytes = sendbytes};
    pthread_barrier_wait(&g->barrier);
    int bad = 0;
    for (int r = 0; r < g->nranks; r++) {
        if (g->slots[r].bytes != recvbytes[r]) {
            bad = 1;
            continue;
        }
        memcpy((char *)recvbuf + displs[r], g->slots[r].buf, recvbytes[r]);
    }
    pthread_barrier_wait(&g->barrier);
    return bad;
}

static int sqz_tt_alltoallv(void *self, const void *sendbuf, const size_t *sendbytes,
                            const size_t *sdispls, void *recvbuf, const size_t *recvbytes,
                            const size_t *rdispls)
{
    sqz_tt_self_t      *s = self;
    sqz_thread_group_t *g = s->g;
    g->slots[s->rank] = (sqz_tt_slot_t){.buf = sendbuf, .counts = sendbytes, .displs = sdispls};
    pthread_barrier_wait(&g->barrier);
    int bad = 0;
    for (int r = 0; r < g->nranks; r++) {
        const sqz_tt_slot_t *src = &g->slots[r];
        if (src->counts[s->rank] != recvbytes[r]) {
            bad = 1;
            continue;
        }
        memcpy((char *)recvbuf + rdispls[r], (const char *)src->buf + src->displs[s->rank],
               recvbytes[r]);
    }
    pthread_barrier_wait(&g->barrier);
    return bad;
}

/* Sums in rank order, so that every rank gets the same bits (as MPI implementations do). */
static int sqz_tt_allreduce(void *self, const float *in, float *out, size_t n)
{
    sqz_tt_self_t      *s = self;
    sqz_thread_group_t *g = s->g;
    float              *copy = malloc(n * sizeof(float) + 1);
    memcpy(copy, in, n * sizeof(float));
    g->slots[s->rank] = (sqz_tt_slot_t){.buf = copy, .bytes = n};
    pthread_barrier_wait(&g->barrier);
    for (size_t i = 0; i < n; i++) {
        float acc = 0;
        for (int r = 0; r < g->nranks; r++) {
            acc += ((const float *)g->slots[r].buf)[i];
        }
        out[i] = acc;
    }
    pthread_barrier_wait(&g->barrier);
    free(copy);
    return 0;
}

void sqz_thread_transport(sqz_thread_group_t *g, int rank, sqz_transport_t *t)
{
    /* One self per (group, rank): tests run one group at a time. */
    sqz_tt_selves[rank] = (sqz_tt_self_t){.g = g, .rank = rank};
    *t = (sqz_transport_t){
        .size              = sizeof(*t),
        .self              = &sqz_tt_selves[rank],
        .rank              = rank,
        .nranks            = g->nranks,
        .allgatherv        = sqz_tt_allgatherv,
        .alltoallv         = sqz_tt_alltoallv,
        .allreduce_f32_sum = sqz_tt_allreduce,
    };
}

typedef struct {
    void (*fn)(int, void *);
    void *arg;
    int   rank;
} sqz_tt_job_t;

static void *sqz_tt_main(void *p)
{
    sqz_tt_job_t *j = p;
    j->fn(j->rank, j->arg);
    return NULL;
}

void sqz_thread_run(int nranks, void (*fn)(int rank, void *arg), void *arg)
{
    pthread_t    th[64];
    sqz_tt_job_t jobs[64];
    for (int r = 0; r < nranks; r++) {
        jobs[r] = (sqz_tt_job_t){.fn = fn, .arg = arg, .rank = r};
        pthread_create(&th[r], NULL, sqz_tt_main, &jobs[r]);
    }
    for (int r = 0; r < nranks; r++) {
        pthread_join(th[r], NULL);
    }
}
