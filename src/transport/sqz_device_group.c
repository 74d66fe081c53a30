/* The device thread transport (see sqz_device_group.h).
 *
 * Everything is built on one primitive, a grouped set of sends and receives:
 *   1. each send is posted, with an event `ready` recorded on the sender's stream, at the tail of
 *      the queue of its ordered pair (sender, receiver);
 *   2. the receiving thread takes, for each of its receives in order, the head of its pair's queue
 *      (waiting until the sender has posted it), makes its own stream wait for `ready`, copies on
 *      its own stream and records `done` there;
 *   3. the sending thread waits until each of its sends has been copied and makes its stream wait
 *      for `done`: nothing it enqueues after the call can overwrite the data before the copy read
 *      it.
 * A group posts all its sends before it waits for any receive (NCCL's group semantics), so
 * exchanges where every rank sends and receives cannot deadlock.  Collectives are groups: an
 * all-gather receives each rank's block into its slot; an all-reduce and a reduce-scatter gather
 * the N contributions into the rank's scratch and sum them in rank order with one kernel.
 *
 * A peer that never posts would hang its partners: a wait longer than SQZ_DG_WAIT_S marks the
 * group broken, and every later operation on it fails (a test then fails instead of hanging).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqz_ctx.h"
#include "sqz_log.h"
#include "cuda/sqz_gpu_engine.h"
#include "transport/sqz_device_group.h"

#define SQZ_DG_MAGIC  0x53514447u /* "SQDG" */
#define SQZ_DG_WAIT_S 120

typedef struct sqz_dg_send {
    struct sqz_dg_send *next;
    const void         *buf;
    size_t              bytes;
    cudaEvent_t         ready, done;
    int                 copied;   /* the receiver has enqueued the copy and recorded `done` */
    int                 mismatch; /* the receiver expected another size */
} sqz_dg_send_t;

/* What an ncclComm_t of this transport points to. */
typedef struct sqz_dg_rank {
    uint32_t            magic;
    sqz_device_group_t *group;
    int                 rank;
    void               *scratch; /* reductions: the N gathered contributions (device, grow-only) */
    size_t              scap;
} sqz_dg_rank_t;

/* An ncclCommSplit in progress on a group: each rank's (color, key), then the result. */
typedef struct sqz_dg_split {
    int                  *color, *key;
    int                   arrived;
    uint64_t              generation;  /* completed splits */
    sqz_device_group_t  **result;      /* each rank's new group (NULL: no color) */
    int                  *result_rank; /* and its rank there */
} sqz_dg_split_t;

struct sqz_device_group {
    int                  nranks, device;
    int                  broken; /* some wait timed out: every operation fails from now on */
    pthread_mutex_t      lock;
    pthread_cond_t       cond;
    sqz_dg_send_t      **head, **tail; /* [sender * nranks + receiver]: posted, not matched yet */
    sqz_dg_rank_t       *ranks;
    sqz_dg_split_t       split;
    sqz_device_group_t **children; /* groups made by splits of this one (freed with it) */
    size_t               nchildren;
};

/* One operation of the calling thread's open group. */
typedef struct sqz_dg_op {
    sqz_dg_rank_t *me;
    int            peer, is_send;
    void          *buf;
    size_t         bytes;
    cudaStream_t   s;
    sqz_dg_send_t *posted; /* a send, once posted */
} sqz_dg_op_t;

static __thread struct {
    int          depth;
    sqz_dg_op_t *ops;
    size_t       n, cap;
    int          failed; /* an operation could not be recorded: the group end fails */
} tl_group;

/* ------------------------------------------------------------------------------------------- */
/* The primitive                                                                                */
/* ------------------------------------------------------------------------------------------- */
static sqz_dg_rank_t *sqz_dg_rank_of(ncclComm_t c)
{
    sqz_dg_rank_t *r = (sqz_dg_rank_t *)c;
    return r && r->magic == SQZ_DG_MAGIC ? r : NULL;
}

/* Waits on g->cond (g->lock held) with the group's deadline.  \return 0, or -1 (group broken). */
static int sqz_dg_wait(sqz_device_group_t *g, const char *what, int rank, int peer)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SQZ_DG_WAIT_S;
    while (!g->broken) {
        const int rc = pthread_cond_timedwait(&g->cond, &g->lock, &until);
        if (0 == rc) {
            return 0;
        }
        if (ETIMEDOUT == rc) {
            SQZ_ERROR("device group: rank %d waited %d s for rank %d to %s: the group is broken",
                      rank, SQZ_DG_WAIT_S, peer, what);
            g->broken = 1;
            pthread_cond_broadcast(&g->cond);
        }
    }
    return -1;
}

static int sqz_dg_post_send(sqz_dg_op_t *op)
{
    sqz_device_group_t *g = op->me->group;
    sqz_dg_send_t      *x = calloc(1, sizeof(*x));
    if (NULL == x) {
        return -1;
    }
    x->buf   = op->buf;
    x->bytes = op->bytes;
    if (cudaEventCreateWithFlags(&x->ready, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&x->done, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventRecord(x->ready, op->s) != cudaSuccess) {
        cudaGetLastError();
        free(x); /* (an event created before the failure is leaked: the device is unusable) */
        return -1;
    }
    const size_t q = (size_t)op->me->rank * (size_t)g->nranks + (size_t)op->peer;
    pthread_mutex_lock(&g->lock);
    if (g->tail[q]) {
        g->tail[q]->next = x;
    } else {
        g->head[q] = x;
    }
    g->tail[q] = x;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    op->posted = x;
    return 0;
}

/* The receiver's side: take the pair's oldest send, copy it on this rank's stream. */
static int sqz_dg_receive(sqz_dg_op_t *op)
{
    sqz_device_group_t *g = op->me->group;
    const size_t        q = (size_t)op->peer * (size_t)g->nranks + (size_t)op->me->rank;
    pthread_mutex_lock(&g->lock);
    while (NULL == g->head[q]) {
        if (sqz_dg_wait(g, "send", op->me->rank, op->peer) < 0) {
            pthread_mutex_unlock(&g->lock);
            return -1;
        }
    }
    sqz_dg_send_t *x = g->head[q];
    g->head[q]       = x->next;
    if (NULL == g->head[q]) {
        g->tail[q] = NULL;
    }
    pthread_mutex_unlock(&g->lock);
    /* x belongs to the sender, which frees it once `copied` is set: read what this side needs
     * before (a read after the unlock raced with that free and reported garbage sizes). */
    const size_t sent  = x->bytes;
    const size_t bytes = sent < op->bytes ? sent : op->bytes;
    int          rc    = cudaStreamWaitEvent(op->s, x->ready, 0) != cudaSuccess;
    if (0 == rc && bytes > 0 && x->buf != op->buf) {
        rc = cudaMemcpyAsync(op->buf, x->buf, bytes, cudaMemcpyDeviceToDevice, op->s) !=
             cudaSuccess;
    }
    rc |= cudaEventRecord(x->done, op->s) != cudaSuccess;
    pthread_mutex_lock(&g->lock);
    x->copied   = 1;
    x->mismatch = sent != op->bytes;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    if (sent != op->bytes) {
        SQZ_ERROR("device group: rank %d sent %zu bytes, rank %d expected %zu", op->peer, sent,
                  op->me->rank, op->bytes);
        rc = -1;
    }
    return rc ? -1 : 0;
}

/* The sender's side, after its receives: its stream waits for the copy of its data. */
static int sqz_dg_complete_send(sqz_dg_op_t *op)
{
    sqz_device_group_t *g = op->me->group;
    sqz_dg_send_t      *x = op->posted;
    pthread_mutex_lock(&g->lock);
    while (!x->copied) {
        if (sqz_dg_wait(g, "receive", op->me->rank, op->peer) < 0) {
            /* (x stays in its queue, or with a receiver that never finishes: not freed) */
            pthread_mutex_unlock(&g->lock);
            return -1;
        }
    }
    pthread_mutex_unlock(&g->lock);
    int rc = cudaStreamWaitEvent(op->s, x->done, 0) != cudaSuccess || x->mismatch;
    cudaEventDestroy(x->ready); /* (released once the pending work that uses them is done) */
    cudaEventDestroy(x->done);
    free(x);
    return rc ? -1 : 0;
}

/* Runs the calling thread's group: every send posted, every receive copied, every send done. */
static ncclResult_t sqz_dg_run_group(void)
{
    int rc = tl_group.failed;
    for (size_t i = 0; i < tl_group.n; i++) {
        sqz_dg_op_t *op = &tl_group.ops[i];
        if (op->me->group->broken) {
            rc = -1;
        }
    }
    for (size_t i = 0; 0 == rc && i < tl_group.n; i++) {
        if (tl_group.ops[i].is_send) {
            rc = sqz_dg_post_send(&tl_group.ops[i]);
        }
    }
    for (size_t i = 0; 0 == rc && i < tl_group.n; i++) {
        if (!tl_group.ops[i].is_send) {
            rc = sqz_dg_receive(&tl_group.ops[i]);
        }
    }
    for (size_t i = 0; i < tl_group.n; i++) {
        if (tl_group.ops[i].is_send && tl_group.ops[i].posted) {
            rc |= sqz_dg_complete_send(&tl_group.ops[i]);
        }
    }
    /* (freed, not kept: the array is thread-local, and a thread that ends would leak it) */
    free(tl_group.ops);
    tl_group.ops    = NULL;
    tl_group.n      = 0;
    tl_group.cap    = 0;
    tl_group.failed = 0;
    return 0 == rc ? ncclSuccess : ncclSystemError;
}

static ncclResult_t sqz_dg_group_start(void)
{
    tl_group.depth++;
    return ncclSuccess;
}

static ncclResult_t sqz_dg_group_end(void)
{
    if (tl_group.depth <= 0) {
        return ncclInvalidUsage;
    }
    return --tl_group.depth > 0 ? ncclSuccess : sqz_dg_run_group();
}

/* Adds one send or receive to the calling thread's group (a group of its own outside one). */
static ncclResult_t sqz_dg_p2p(int is_send, const void *buf, size_t count, ncclDataType_t dt,
                               int peer, ncclComm_t c, cudaStream_t s)
{
    sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    const size_t   es = sqz_device_group_type_size(dt);
    if (NULL == me || peer < 0 || peer >= me->group->nranks || 0 == es ||
        (count > 0 && NULL == buf)) {
        return ncclInvalidArgument;
    }
    sqz_dg_group_start();
    if (tl_group.n == tl_group.cap) {
        const size_t cap   = tl_group.cap ? 2 * tl_group.cap : 64;
        sqz_dg_op_t *grown = realloc(tl_group.ops, cap * sizeof(*grown));
        if (NULL == grown) {
            tl_group.failed = 1;
            sqz_dg_group_end();
            return ncclSystemError;
        }
        tl_group.ops = grown;
        tl_group.cap = cap;
    }
    tl_group.ops[tl_group.n++] = (sqz_dg_op_t){.me = me, .peer = peer, .is_send = is_send,
                                               .buf = (void *)buf, .bytes = count * es, .s = s};
    return sqz_dg_group_end();
}

static ncclResult_t sqz_dg_send(const void *buf, size_t count, ncclDataType_t dt, int peer,
                                ncclComm_t c, cudaStream_t s)
{
    return sqz_dg_p2p(1, buf, count, dt, peer, c, s);
}

static ncclResult_t sqz_dg_recv(void *buf, size_t count, ncclDataType_t dt, int peer,
                                ncclComm_t c, cudaStream_t s)
{
    return sqz_dg_p2p(0, buf, count, dt, peer, c, s);
}

/* ------------------------------------------------------------------------------------------- */
/* Collectives: groups of sends and receives                                                    */
/* ------------------------------------------------------------------------------------------- */
/* Every rank sends block p of `send` (stride sstride bytes; 0: the same block to all) to rank p
 * and receives rank p's into `recv` + p * rstride.  A collective is not allowed inside an open
 * group (the engine never does it; NCCL would fuse it). */
static ncclResult_t sqz_dg_exchange(sqz_dg_rank_t *me, const void *send, size_t sstride,
                                    void *recv, size_t rstride, size_t count, ncclDataType_t dt,
                                    cudaStream_t s)
{
    if (tl_group.depth > 0) {
        SQZ_ERROR("device group: a collective inside ncclGroupStart/End is not supported");
        return ncclInvalidUsage;
    }
    sqz_dg_group_start();
    for (int p = 0; p < me->group->nranks; p++) {
        sqz_dg_p2p(1, (const unsigned char *)send + (size_t)p * sstride, count, dt, p,
                   (ncclComm_t)me, s);
        sqz_dg_p2p(0, (unsigned char *)recv + (size_t)p * rstride, count, dt, p, (ncclComm_t)me,
                   s);
    }
    return sqz_dg_group_end();
}

/* The rank's scratch, at least `bytes` (grown with the device idle: cudaFree synchronizes). */
static void *sqz_dg_scratch(sqz_dg_rank_t *me, size_t bytes)
{
    if (bytes > me->scap) {
        cudaFree(me->scratch);
        me->scratch = NULL, me->scap = 0;
        if (cudaMalloc(&me->scratch, bytes) != cudaSuccess) {
            cudaGetLastError();
            me->scratch = NULL;
            return NULL;
        }
        me->scap = bytes;
    }
    return me->scratch;
}

/* Gathers every rank's block for this rank into scratch, then reduces it into recv. */
static ncclResult_t sqz_dg_reduce_into(sqz_dg_rank_t *me, const void *send, size_t sstride,
                                       void *recv, size_t count, ncclDataType_t dt, ncclRedOp_t op,
                                       cudaStream_t s)
{
    const size_t es = sqz_device_group_type_size(dt);
    if (0 == es) {
        return ncclInvalidArgument;
    }
    void *slots = sqz_dg_scratch(me, count * es * (size_t)me->group->nranks + 1);
    if (NULL == slots) {
        return ncclSystemError;
    }
    ncclResult_t r = sqz_dg_exchange(me, send, sstride, slots, count * es, count, dt, s);
    if (r == ncclSuccess && count > 0 &&
        sqz_device_group_reduce(slots, me->group->nranks, count, dt, op, recv, s) != 0) {
        r = ncclInvalidArgument;
    }
    return r;
}

static ncclResult_t sqz_dg_allreduce(const void *send, void *recv, size_t count,
                                     ncclDataType_t dt, ncclRedOp_t op, ncclComm_t c,
                                     cudaStream_t s)
{
    sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    return me ? sqz_dg_reduce_into(me, send, 0, recv, count, dt, op, s) : ncclInvalidArgument;
}

static ncclResult_t sqz_dg_reduce_scatter(const void *send, void *recv, size_t count,
                                          ncclDataType_t dt, ncclRedOp_t op, ncclComm_t c,
                                          cudaStream_t s)
{
    sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    return me ? sqz_dg_reduce_into(me, send, count * sqz_device_group_type_size(dt), recv, count,
                                   dt, op, s)
              : ncclInvalidArgument;
}

static ncclResult_t sqz_dg_allgather(const void *send, void *recv, size_t count,
                                     ncclDataType_t dt, ncclComm_t c, cudaStream_t s)
{
    sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    return me ? sqz_dg_exchange(me, send, 0, recv, count * sqz_device_group_type_size(dt), count,
                                dt, s)
              : ncclInvalidArgument;
}

static ncclResult_t sqz_dg_alltoall(const void *send, void *recv, size_t count, ncclDataType_t dt,
                                    ncclComm_t c, cudaStream_t s)
{
    sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    const size_t   b  = count * sqz_device_group_type_size(dt);
    return me ? sqz_dg_exchange(me, send, b, recv, b, count, dt, s) : ncclInvalidArgument;
}

/* ------------------------------------------------------------------------------------------- */
/* Communicator queries, and what a group's communicators cannot do                             */
/* ------------------------------------------------------------------------------------------- */
static ncclResult_t sqz_dg_count(const ncclComm_t c, int *n)
{
    const sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    return me ? (*n = me->group->nranks, ncclSuccess) : ncclInvalidArgument;
}

static ncclResult_t sqz_dg_user_rank(const ncclComm_t c, int *r)
{
    const sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    return me ? (*r = me->rank, ncclSuccess) : ncclInvalidArgument;
}

static ncclResult_t sqz_dg_cu_device(const ncclComm_t c, int *d)
{
    const sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    return me ? (*d = me->group->device, ncclSuccess) : ncclInvalidArgument;
}

static ncclResult_t sqz_dg_unique_id(ncclUniqueId *id)
{
    (void)id;
    return ncclInvalidUsage;
}

static ncclResult_t sqz_dg_init_rank(ncclComm_t *c, int n, ncclUniqueId id, int rank)
{
    (void)c, (void)n, (void)id, (void)rank;
    return ncclInvalidUsage;
}

static ncclResult_t sqz_dg_init_config(ncclComm_t *c, int n, ncclUniqueId id, int rank,
                                       ncclConfig_t *cfg)
{
    (void)cfg;
    return sqz_dg_init_rank(c, n, id, rank);
}

static ncclResult_t sqz_dg_init_all(ncclComm_t *c, int n, const int *devs)
{
    (void)c, (void)n, (void)devs;
    return ncclInvalidUsage;
}

/* The new groups of a split whose every rank has arrived (g->lock held): one per color, ranks
 * ordered by (key, rank in g).  \return 0, or -1 (memory). */
static int sqz_dg_split_build(sqz_device_group_t *g)
{
    sqz_dg_split_t *sp = &g->split;
    for (int r = 0; r < g->nranks; r++) {
        sp->result[r] = NULL;
    }
    for (int r = 0; r < g->nranks; r++) {
        if (sp->color[r] < 0 || sp->result[r]) {
            continue; /* NCCL_SPLIT_NOCOLOR, or its group is made */
        }
        int n = 0;
        for (int q = 0; q < g->nranks; q++) {
            n += sp->color[q] == sp->color[r];
        }
        sqz_device_group_t  *child = NULL;
        sqz_device_group_t **grown = realloc(g->children, (g->nchildren + 1) * sizeof(*grown));
        if (NULL == grown || SQZ_OK != sqz_device_group_create(n, g->device, &child)) {
            if (grown) {
                g->children = grown;
            }
            return -1;
        }
        g->children                 = grown;
        g->children[g->nchildren++] = child;
        for (int q = 0; q < g->nranks; q++) {
            if (sp->color[q] != sp->color[r]) {
                continue;
            }
            int below = 0; /* members ordered before q */
            for (int t = 0; t < g->nranks; t++) {
                below += sp->color[t] == sp->color[r] &&
                         (sp->key[t] < sp->key[q] || (sp->key[t] == sp->key[q] && t < q));
            }
            sp->result[q]      = child;
            sp->result_rank[q] = below;
        }
    }
    return 0;
}

/* Collective over c's group: every rank passes its color (or NCCL_SPLIT_NOCOLOR) and key. */
static ncclResult_t sqz_dg_split(ncclComm_t c, int color, int key, ncclComm_t *out,
                                 ncclConfig_t *cfg)
{
    (void)cfg;
    sqz_dg_rank_t *me = sqz_dg_rank_of(c);
    if (NULL == me || NULL == out) {
        return ncclInvalidArgument;
    }
    sqz_device_group_t *g  = me->group;
    sqz_dg_split_t     *sp = &g->split;
    int                 rc = 0;
    pthread_mutex_lock(&g->lock);
    const uint64_t gen   = sp->generation;
    sp->color[me->rank] = color < 0 ? -1 : color;
    sp->key[me->rank]   = key;
    if (++sp->arrived == g->nranks) {
        rc            = sqz_dg_split_build(g);
        g->broken    |= rc != 0;
        sp->arrived   = 0;
        sp->generation++;
        pthread_cond_broadcast(&g->cond);
    }
    while (0 == rc && sp->generation == gen) {
        rc = sqz_dg_wait(g, "split", me->rank, -1);
    }
    rc |= g->broken;
    *out = 0 == rc && sp->result[me->rank]
               ? sqz_device_group_handle(sp->result[me->rank], sp->result_rank[me->rank])
               : NULL;
    pthread_mutex_unlock(&g->lock);
    return 0 == rc ? ncclSuccess : ncclSystemError;
}

/* A group's communicators live as long as the group. */
static ncclResult_t sqz_dg_destroy(ncclComm_t c)
{
    return sqz_dg_rank_of(c) ? ncclSuccess : ncclInvalidArgument;
}

static ncclResult_t sqz_dg_version(int *v)
{
    *v = NCCL_VERSION_CODE;
    return ncclSuccess;
}

static const char *sqz_dg_error_string(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument (device group)";
    case ncclInvalidUsage: return "invalid usage (device group)";
    default: return "device copy or rendezvous failed (device group)";
    }
}

const sqz_nccl_api_t sqz_device_group_nccl = {
    .AllReduce          = sqz_dg_allreduce,
    .ReduceScatter      = sqz_dg_reduce_scatter,
    .AllGather          = sqz_dg_allgather,
    .Send               = sqz_dg_send,
    .Recv               = sqz_dg_recv,
    .AlltoAll           = sqz_dg_alltoall,
    .GroupStart         = sqz_dg_group_start,
    .GroupEnd           = sqz_dg_group_end,
    .GetUniqueId        = sqz_dg_unique_id,
    .CommInitRank       = sqz_dg_init_rank,
    .CommInitRankConfig = sqz_dg_init_config,
    .CommInitAll        = sqz_dg_init_all,
    .CommSplit          = sqz_dg_split,
    .CommDestroy        = sqz_dg_destroy,
    .CommAbort          = sqz_dg_destroy,
    .CommCount          = sqz_dg_count,
    .CommUserRank       = sqz_dg_user_rank,
    .CommCuDevice       = sqz_dg_cu_device,
    .GetVersion         = sqz_dg_version,
    .GetErrorString     = sqz_dg_error_string,
    .version            = NCCL_VERSION_CODE,
};

/* ------------------------------------------------------------------------------------------- */
/* Public API                                                                                   */
/* ------------------------------------------------------------------------------------------- */
sqz_status_t sqz_device_group_create(int nranks, int device, sqz_device_group_t **out)
{
    int ndev = 0;
    if (NULL == out || nranks < 1 || nranks > 4096) {
        return SQZ_ERR_INVALID_PARAM;
    }
    *out = NULL;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || device < 0 || device >= ndev) {
        cudaGetLastError();
        SQZ_ERROR("device group: no CUDA device %d", device);
        return SQZ_ERR_NOT_SUPPORTED;
    }
    sqz_device_group_t *g = calloc(1, sizeof(*g));
    const size_t        q = (size_t)nranks * (size_t)nranks;
    if (g) {
        g->head                 = calloc(q, sizeof(*g->head));
        g->tail                 = calloc(q, sizeof(*g->tail));
        g->ranks                = calloc((size_t)nranks, sizeof(*g->ranks));
        g->split.color          = calloc((size_t)nranks, sizeof(int));
        g->split.key            = calloc((size_t)nranks, sizeof(int));
        g->split.result_rank    = calloc((size_t)nranks, sizeof(int));
        g->split.result         = calloc((size_t)nranks, sizeof(*g->split.result));
    }
    if (NULL == g || NULL == g->head || NULL == g->tail || NULL == g->ranks ||
        NULL == g->split.color || NULL == g->split.key || NULL == g->split.result_rank ||
        NULL == g->split.result) {
        sqz_device_group_destroy(g);
        return SQZ_ERR_NO_MEMORY;
    }
    g->nranks = nranks;
    g->device = device;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    for (int r = 0; r < nranks; r++) {
        g->ranks[r] = (sqz_dg_rank_t){.magic = SQZ_DG_MAGIC, .group = g, .rank = r};
    }
    *out = g;
    return SQZ_OK;
}

void sqz_device_group_destroy(sqz_device_group_t *g)
{
    if (NULL == g) {
        return;
    }
    if (g->ranks) {
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->cond);
        for (int r = 0; r < g->nranks; r++) {
            cudaFree(g->ranks[r].scratch);
        }
    }
    for (size_t i = 0; i < g->nchildren; i++) {
        sqz_device_group_destroy(g->children[i]);
    }
    free(g->children);
    free(g->split.color), free(g->split.key), free(g->split.result_rank), free(g->split.result);
    free(g->head), free(g->tail), free(g->ranks);
    free(g);
}

ncclComm_t sqz_device_group_handle(sqz_device_group_t *g, int rank)
{
    return (ncclComm_t)&g->ranks[rank];
}

sqz_status_t sqz_comm_create_device_group(sqz_ctx_t *ctx, sqz_device_group_t *g, int rank,
                                          sqz_comm_t **out)
{
    if (NULL == out) {
        return SQZ_ERR_INVALID_PARAM;
    }
    *out = NULL;
    if (NULL == ctx || NULL == g || rank < 0 || rank >= g->nranks) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_gpu_comm_create(ctx, &sqz_device_group_nccl, sqz_device_group_handle(g, rank),
                               out);
}
