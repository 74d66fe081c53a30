#include "config.h"

#include <limits.h>
#include <stdlib.h>

#include "sqz_transport_mpi.h"

/* A point-to-point request: slots of a pool that grows in blocks and is never shrunk (a request
 * handed out keeps its address), so that the steady-state path does not allocate. */
typedef struct sqz_mpi_req {
    MPI_Request         r;
    size_t             *got;
    int                 peer;
    struct sqz_mpi_req *next_free;
} sqz_mpi_req_t;

enum { SQZ_MPI_REQ_BLOCK = 256 };
typedef struct sqz_mpi_req_block {
    struct sqz_mpi_req_block *next;
    sqz_mpi_req_t             reqs[SQZ_MPI_REQ_BLOCK];
} sqz_mpi_req_block_t;

struct sqz_transport_mpi {
    MPI_Comm       comm;  /* the caller's communicator: collectives */
    MPI_Comm       p2p;   /* a private duplicate: our point-to-point messages never meet the job's */
    int            nranks;
    int           *ints;  /* 4 * nranks: send counts, send displs, recv counts, recv displs */
    sqz_mpi_req_block_t *blocks; /* the request pool */
    sqz_mpi_req_t       *free_reqs;
    /* Stall diagnosis (sqz_transport_mpi_on_stall): the last completion and the next check. */
    sqz_mpi_stall_fn stall_fn;
    double           stall_s, last_done, next_check;
};

static double sqz_mpi_now(void) { return PMPI_Wtime(); }

/* A request completed: the exchange is moving. */
static void sqz_mpi_progress(sqz_transport_mpi_t *m)
{
    if (m->stall_fn) {
        m->last_done  = sqz_mpi_now();
        m->next_check = m->last_done + m->stall_s;
    }
}

/* No completion for stall_s: let the hook look at the peer we wait for. */
static void sqz_mpi_maybe_stalled(sqz_transport_mpi_t *m, const sqz_mpi_req_t *q)
{
    if (NULL == m->stall_fn) {
        return;
    }
    const double now = sqz_mpi_now();
    if (now >= m->next_check) {
        m->next_check = now + m->stall_s;
        m->stall_fn(m->comm, q->peer, now - m->last_done);
    }
}

#define SQZ_MPI_TAG 0x5a51

static sqz_mpi_req_t *sqz_mpi_req_get(sqz_transport_mpi_t *m)
{
    if (NULL == m->free_reqs) {
        sqz_mpi_req_block_t *b = calloc(1, sizeof(*b));
        if (NULL == b) {
            return NULL;
        }
        b->next   = m->blocks;
        m->blocks = b;
        for (int i = 0; i < SQZ_MPI_REQ_BLOCK; i++) {
            b->reqs[i].next_free = m->free_reqs;
            m->free_reqs         = &b->reqs[i];
        }
    }
    sqz_mpi_req_t *q = m->free_reqs;
    m->free_reqs     = q->next_free;
    q->got           = NULL;
    return q;
}

static void sqz_mpi_req_put(sqz_transport_mpi_t *m, sqz_mpi_req_t *q)
{
    q->next_free = m->free_reqs;
    m->free_reqs = q;
}

static int sqz_mpi_isend(void *self, const void *buf, size_t bytes, int peer, void **req)
{
    sqz_transport_mpi_t *m = self;
    sqz_mpi_req_t       *q = sqz_mpi_req_get(m);
    if (NULL == q || bytes > (size_t)INT_MAX) {
        if (q) {
            sqz_mpi_req_put(m, q);
        }
        return -1;
    }
    if (MPI_SUCCESS != PMPI_Isend(buf, (int)bytes, MPI_BYTE, peer, SQZ_MPI_TAG, m->p2p, &q->r)) {
        sqz_mpi_req_put(m, q);
        return -1;
    }
    q->peer = peer;
    sqz_mpi_progress(m); /* (a new request: the clock starts now) */
    *req = q;
    return 0;
}

static int sqz_mpi_irecv(void *self, void *buf, size_t bytes, int peer, size_t *got, void **req)
{
    sqz_transport_mpi_t *m = self;
    sqz_mpi_req_t       *q = sqz_mpi_req_get(m);
    if (NULL == q || bytes > (size_t)INT_MAX) {
        if (q) {
            sqz_mpi_req_put(m, q);
        }
        return -1;
    }
    if (MPI_SUCCESS != PMPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, SQZ_MPI_TAG, m->p2p, &q->r)) {
        sqz_mpi_req_put(m, q);
        return -1;
    }
    q->got  = got;
    q->peer = peer;
    sqz_mpi_progress(m); /* (a new request: the clock starts now) */
    *req = q;
    return 0;
}

static int sqz_mpi_complete(sqz_transport_mpi_t *m, sqz_mpi_req_t *q, MPI_Status *st)
{
    if (q->got) {
        int n = 0;
        PMPI_Get_count(st, MPI_BYTE, &n);
        *q->got = (size_t)n;
    }
    sqz_mpi_req_put(m, q);
    return 0;
}

static int sqz_mpi_test(void *self, void *req, int *done)
{
    sqz_transport_mpi_t *m = self;
    sqz_mpi_req_t       *q = req;
    MPI_Status           st;
    if (MPI_SUCCESS != PMPI_Test(&q->r, done, &st)) {
        return -1;
    }
    if (!*done) {
        sqz_mpi_maybe_stalled(m, q);
        return 0;
    }
    sqz_mpi_progress(m);
    return sqz_mpi_complete(m, q, &st);
}

static int sqz_mpi_wait(void *self, void *req)
{
    sqz_transport_mpi_t *m = self;
    sqz_mpi_req_t       *q = req;
    MPI_Status           st;
    if (m->stall_fn) {
        /* Polled, so that a stall can be looked into. */
        int done = 0;
        while (!done) {
            if (MPI_SUCCESS != PMPI_Test(&q->r, &done, &st)) {
                return -1;
            }
            if (!done) {
                sqz_mpi_maybe_stalled(m, q);
            }
        }
        sqz_mpi_progress(m);
    } else if (MPI_SUCCESS != PMPI_Wait(&q->r, &st)) {
        return -1;
    }
    return sqz_mpi_complete(m, q, &st);
}

/* MPI counts are int: refuse (transport error) rather than truncate. */
static int sqz_to_ints(const size_t *in, int *out, int n)
{
    for (int i = 0; i < n; i++) {
        if (in[i] > (size_t)INT_MAX) {
            return -1;
        }
        out[i] = (int)in[i];
    }
    return 0;
}

static int sqz_mpi_allgatherv(void *self, const void *sendbuf, size_t sendbytes, void *recvbuf,
                              const size_t *recvbytes, const size_t *displs)
{
    sqz_transport_mpi_t *m = self;
    int *const           rc = m->ints + 2 * m->nranks, *const rd = m->ints + 3 * m->nranks;
    if (sendbytes > (size_t)INT_MAX || sqz_to_ints(recvbytes, rc, m->nranks) ||
        sqz_to_ints(displs, rd, m->nranks)) {
        return -1;
    }
    return MPI_SUCCESS != PMPI_Allgatherv(sendbuf, (int)sendbytes, MPI_BYTE, recvbuf, rc, rd,
                                          MPI_BYTE, m->comm);
}

static int sqz_mpi_alltoallv(void *self, const void *sendbuf, const size_t *sendbytes,
                             const size_t *sdispls, void *recvbuf, const size_t *recvbytes,
                             const size_t *rdispls)
{
    sqz_transport_mpi_t *m  = self;
    int *const           sc = m->ints, *const sd = m->ints + m->nranks;
    int *const           rc = m->ints + 2 * m->nranks, *const rd = m->ints + 3 * m->nranks;
    if (sqz_to_ints(sendbytes, sc, m->nranks) || sqz_to_ints(sdispls, sd, m->nranks) ||
        sqz_to_ints(recvbytes, rc, m->nranks) || sqz_to_ints(rdispls, rd, m->nranks)) {
        return -1;
    }
    return MPI_SUCCESS != PMPI_Alltoallv(sendbuf, sc, sd, MPI_BYTE, recvbuf, rc, rd, MPI_BYTE,
                                         m->comm);
}

static int sqz_mpi_allreduce_f32_sum(void *self, const float *in, float *out, size_t n)
{
    sqz_transport_mpi_t *m = self;
    /* Pieces of at most INT_MAX elements: the same split on every rank. */
    for (size_t off = 0; off < n;) {
        const size_t c  = (n - off) > (size_t)INT_MAX ? (size_t)INT_MAX : (n - off);
        const void  *sb = (in == out) ? MPI_IN_PLACE : (const void *)(in + off);
        if (MPI_SUCCESS != PMPI_Allreduce(sb, out + off, (int)c, MPI_FLOAT, MPI_SUM, m->comm)) {
            return -1;
        }
        off += c;
    }
    return 0;
}

sqz_status_t sqz_transport_mpi_create(MPI_Comm comm, sqz_transport_t *t)
{
    sqz_transport_mpi_t *m = calloc(1, sizeof(*m));
    if (NULL == m) {
        return SQZ_ERR_NO_MEMORY;
    }
    int rank = 0, size = 1;
    if (MPI_SUCCESS != PMPI_Comm_rank(comm, &rank) || MPI_SUCCESS != PMPI_Comm_size(comm, &size)) {
        free(m);
        return SQZ_ERR_MPI;
    }
    m->comm   = comm;
    m->nranks = size;
    m->ints   = calloc(4 * (size_t)size, sizeof(int));
    /* Collective over comm: every rank creates its transport at the same call. */
    if (NULL == m->ints || MPI_SUCCESS != PMPI_Comm_dup(comm, &m->p2p)) {
        free(m->ints);
        free(m);
        return SQZ_ERR_NO_MEMORY;
    }
    *t = (sqz_transport_t){
        .size              = sizeof(*t),
        .self              = m,
        .rank              = rank,
        .nranks            = size,
        .allgatherv        = sqz_mpi_allgatherv,
        .alltoallv         = sqz_mpi_alltoallv,
        .allreduce_f32_sum = sqz_mpi_allreduce_f32_sum,
        .isend             = sqz_mpi_isend,
        .irecv             = sqz_mpi_irecv,
        .test              = sqz_mpi_test,
        .wait              = sqz_mpi_wait,
    };
    return SQZ_OK;
}

void sqz_transport_mpi_on_stall(sqz_transport_t *t, sqz_mpi_stall_fn fn, double seconds)
{
    sqz_transport_mpi_t *m = t->self;
    if (m) {
        m->stall_fn   = fn;
        m->stall_s    = seconds;
        m->last_done  = sqz_mpi_now();
        m->next_check = m->last_done + seconds;
    }
}

void sqz_transport_mpi_destroy(sqz_transport_t *t)
{
    sqz_transport_mpi_t *m = t->self;
    if (m) {
        int finalized = 0;
        PMPI_Finalized(&finalized);
        if (!finalized && MPI_COMM_NULL != m->p2p) {
            PMPI_Comm_free(&m->p2p);
        }
        free(m->ints);
        while (m->blocks) {
            sqz_mpi_req_block_t *b = m->blocks;
            m->blocks              = b->next;
            free(b);
        }
        free(m);
    }
    t->self = NULL;
}
