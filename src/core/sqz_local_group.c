/* The in-process group (sqz_local_group_*): ranks are threads of one process that exchange
 * bytes through shared memory.  Collectives publish a pointer in their rank's slot, meet at a
 * barrier, copy, and meet again (so that no sender's buffer is released before every receiver has
 * copied it); point-to-point messages are copied at send into a FIFO per (source, destination)
 * pair, and posted receives wait in a FIFO per pair too, so that, as in MPI, the n-th message
 * from a rank fills the n-th receive posted for it, whichever request is tested first. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

typedef struct {
    const void   *buf;
    const size_t *counts; /* per destination (alltoallv) */
    const size_t *displs;
    size_t        bytes;  /* allgatherv */
} sqz_tt_slot_t;

/* A message in flight between two ranks (point-to-point): copied at send, FIFO per pair. */
typedef struct sqz_tt_msg {
    struct sqz_tt_msg *next;
    size_t             bytes;
    unsigned char      data[];
} sqz_tt_msg_t;

typedef struct sqz_tt_req {
    int                is_recv, peer, done, bad;
    void              *buf;
    size_t             bytes, *got;
    struct sqz_tt_req *next; /* the pair's next posted receive */
} sqz_tt_req_t;

typedef struct sqz_local_group sqz_thread_group_t;

typedef struct {
    sqz_thread_group_t *g;
    int                 rank;
} sqz_tt_self_t;

struct sqz_local_group {
    int                nranks;
    sqz_tt_self_t     *selves;   /* the `self` of each rank's transport */
    pthread_barrier_t  barrier;
    sqz_tt_slot_t     *slots;
    pthread_mutex_t    lock;
    pthread_cond_t     arrived;
    sqz_tt_msg_t     **head, **tail; /* [src * nranks + dst] */
    sqz_tt_req_t     **rhead, **rtail; /* posted receives not yet matched, same index */
};

sqz_status_t sqz_local_group_create(int nranks, sqz_local_group_t **group)
{
    if (NULL == group || nranks < 1 || nranks > 4096) {
        return SQZ_ERR_INVALID_PARAM;
    }
    *group                = NULL;
    sqz_thread_group_t *g = calloc(1, sizeof(*g));
    if (NULL == g) {
        return SQZ_ERR_NO_MEMORY;
    }
    const size_t n = (size_t)nranks;
    g->nranks      = nranks;
    g->slots       = calloc(n, sizeof(*g->slots));
    g->selves      = calloc(n, sizeof(*g->selves));
    g->head        = calloc(n * n, sizeof(*g->head));
    g->tail        = calloc(n * n, sizeof(*g->tail));
    g->rhead       = calloc(n * n, sizeof(*g->rhead));
    g->rtail       = calloc(n * n, sizeof(*g->rtail));
    if (NULL == g->slots || NULL == g->selves || NULL == g->head || NULL == g->tail ||
        NULL == g->rhead || NULL == g->rtail) {
        free(g->slots);
        free(g->selves);
        free(g->head);
        free(g->tail);
        free(g->rhead);
        free(g->rtail);
        free(g);
        return SQZ_ERR_NO_MEMORY;
    }
    for (int r = 0; r < nranks; r++) {
        g->selves[r] = (sqz_tt_self_t){.g = g, .rank = r};
    }
    pthread_barrier_init(&g->barrier, NULL, (unsigned)nranks);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->arrived, NULL);
    *group = g;
    return SQZ_OK;
}

void sqz_local_group_destroy(sqz_local_group_t *g)
{
    if (g) {
        for (int i = 0; i < g->nranks * g->nranks; i++) {
            while (g->head[i]) {
                sqz_tt_msg_t *m = g->head[i];
                g->head[i]      = m->next;
                free(m);
            }
        }
        pthread_barrier_destroy(&g->barrier);
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->arrived);
        free(g->head);
        free(g->tail);
        free(g->rhead);
        free(g->rtail);
        free(g->slots);
        free(g->selves);
        free(g);
    }
}

/* 1 when some v[0..n-1] exceeds INT_MAX: counts and displacements that the MPI transport refuses
 * are refused here too (after the barriers, so that no thread waits), so that a test in threads
 * fails where an MPI job would. */
static int sqz_tt_beyond_int(const size_t *v, int n)
{
    for (int i = 0; i < n; i++) {
        if (v[i] > (size_t)INT_MAX) {
            return 1;
        }
    }
    return 0;
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
    int bad = sqz_tt_beyond_int(recvbytes, g->nranks) || sqz_tt_beyond_int(displs, g->nranks);
    for (int r = 0; r < g->nranks && !bad; r++) {
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
    int bad = sqz_tt_beyond_int(sendbytes, g->nranks) || sqz_tt_beyond_int(sdispls, g->nranks) ||
              sqz_tt_beyond_int(recvbytes, g->nranks) || sqz_tt_beyond_int(rdispls, g->nranks);
    for (int r = 0; r < g->nranks && !bad; r++) {
        const sqz_tt_slot_t *src = &g->slots[r];
        if (src->counts[s->rank] != recvbytes[r] || src->displs[s->rank] > (size_t)INT_MAX) {
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
    if (copy) {
        memcpy(copy, in, n * sizeof(float));
    }
    g->slots[s->rank] = (sqz_tt_slot_t){.buf = copy, .bytes = n};
    pthread_barrier_wait(&g->barrier);
    int bad = 0;
    for (int r = 0; r < g->nranks; r++) {
        bad |= NULL == g->slots[r].buf; /* every rank sees it: all fail together */
    }
    for (size_t i = 0; i < n && !bad; i++) {
        float acc = 0;
        for (int r = 0; r < g->nranks; r++) {
            acc += ((const float *)g->slots[r].buf)[i];
        }
        out[i] = acc;
    }
    pthread_barrier_wait(&g->barrier);
    free(copy);
    return bad;
}

static int sqz_tt_isend(void *self, const void *buf, size_t bytes, int peer, void **req)
{
    sqz_tt_self_t      *s = self;
    sqz_thread_group_t *g = s->g;
    sqz_tt_msg_t       *m = malloc(sizeof(*m) + bytes);
    sqz_tt_req_t       *q = calloc(1, sizeof(*q));
    if (NULL == m || NULL == q) {
        free(m);
        free(q);
        return 1;
    }
    memcpy(m->data, buf, bytes);
    m->bytes   = bytes;
    m->next    = NULL;
    const int k = s->rank * g->nranks + peer;
    pthread_mutex_lock(&g->lock);
    if (g->tail[k]) {
        g->tail[k]->next = m;
    } else {
        g->head[k] = m;
    }
    g->tail[k] = m;
    pthread_cond_broadcast(&g->arrived);
    pthread_mutex_unlock(&g->lock);
    q->done = 1; /* buffered: the send completes at once */
    *req    = q;
    return 0;
}

static int sqz_tt_irecv(void *self, void *buf, size_t bytes, int peer, size_t *got, void **req)
{
    sqz_tt_self_t      *s = self;
    sqz_thread_group_t *g = s->g;
    sqz_tt_req_t       *q = calloc(1, sizeof(*q));
    if (NULL == q) {
        return 1;
    }
    *q          = (sqz_tt_req_t){.is_recv = 1, .peer = peer, .buf = buf, .bytes = bytes, .got = got};
    const int k = peer * g->nranks + s->rank;
    pthread_mutex_lock(&g->lock);
    if (g->rtail[k]) {
        g->rtail[k]->next = q;
    } else {
        g->rhead[k] = q;
    }
    g->rtail[k] = q;
    pthread_mutex_unlock(&g->lock);
    *req = q;
    return 0;
}

/* Under g->lock: matches the pair's posted receives with its arrived messages, oldest with
 * oldest, up to q (MPI's order: the n-th message fills the n-th receive).  \return -1 when q's
 * message was longer than q (truncated). */
static int sqz_tt_try(sqz_tt_self_t *s, sqz_tt_req_t *q)
{
    sqz_thread_group_t *g = s->g;
    const int           k = q->peer * g->nranks + s->rank;
    while (!q->done && g->rhead[k] && g->head[k]) {
        sqz_tt_req_t *r = g->rhead[k];
        sqz_tt_msg_t *m = g->head[k];
        g->rhead[k]     = r->next;
        g->head[k]      = m->next;
        if (NULL == g->rhead[k]) {
            g->rtail[k] = NULL;
        }
        if (NULL == g->head[k]) {
            g->tail[k] = NULL;
        }
        r->bad = m->bytes > r->bytes;
        memcpy(r->buf, m->data, r->bad ? r->bytes : m->bytes);
        if (r->got) {
            *r->got = r->bad ? r->bytes : m->bytes; /* (the bytes written) */
        }
        free(m);
        r->done = 1;
    }
    return q->bad ? -1 : 0;
}

static int sqz_tt_test(void *self, void *req, int *done)
{
    sqz_tt_self_t *s = self;
    sqz_tt_req_t  *q = req;
    pthread_mutex_lock(&s->g->lock);
    const int rc = q->is_recv ? sqz_tt_try(s, q) : 0;
    pthread_mutex_unlock(&s->g->lock);
    *done = q->done;
    if (q->done) {
        free(q);
    }
    return rc;
}

static int sqz_tt_wait(void *self, void *req)
{
    sqz_tt_self_t *s = self;
    sqz_tt_req_t  *q = req;
    int            rc = 0;
    pthread_mutex_lock(&s->g->lock);
    while (q->is_recv && !q->done) {
        (void)sqz_tt_try(s, q);
        if (!q->done) {
            pthread_cond_wait(&s->g->arrived, &s->g->lock);
        }
    }
    /* (q may have been matched while the caller waited on another request: its truncation is
     * reported here all the same) */
    rc = q->bad ? -1 : 0;
    pthread_mutex_unlock(&s->g->lock);
    free(q);
    return rc;
}

sqz_status_t sqz_local_group_transport(sqz_local_group_t *g, int rank, sqz_transport_t *t)
{
    if (NULL == g || NULL == t || rank < 0 || rank >= g->nranks) {
        return SQZ_ERR_INVALID_PARAM;
    }
    *t = (sqz_transport_t){
        .size              = sizeof(*t),
        .self              = &g->selves[rank],
        .rank              = rank,
        .nranks            = g->nranks,
        .allgatherv        = sqz_tt_allgatherv,
        .alltoallv         = sqz_tt_alltoallv,
        .allreduce_f32_sum = sqz_tt_allreduce,
        .isend             = sqz_tt_isend,
        .irecv             = sqz_tt_irecv,
        .test              = sqz_tt_test,
        .wait              = sqz_tt_wait,
    };
    return SQZ_OK;
}
