/* The NCCL interposer (libsqueeze_nccl.so, under LD_PRELOAD): `LD_PRELOAD=libsqueeze_nccl.so
 * torchrun ...` compresses the job's gradient all-reduces on the GPU with nothing changed in it.
 *
 * It defines ncclAllReduce, ncclReduceScatter, ncclGroupStart/ncclGroupEnd and the communicator
 * life cycle (ncclCommInitRank, ncclCommInitRankConfig, ncclCommInitAll, ncclCommSplit,
 * ncclCommDestroy, ncclCommAbort); the real functions come from the NCCL already loaded in the
 * process (sqz_nccl.h: PyTorch loads it privately, so RTLD_NEXT alone would fail).  NCCL is never
 * linked, and the CUDA runtime is static: the library loads anywhere.
 *
 * Policy: an all-reduce (or reduce-scatter) is compressed when it is float32, float16 or bfloat16,
 * SUM or AVG, at or above SQZ_MIN_BYTES, on a blocking communicator that the interposer knows, and
 * the method has a GPU kernel; everything else goes to the real NCCL function untouched.
 *
 * Groups: NCCL runs the operations of a group at ncclGroupEnd.  A compressed all-reduce is several
 * stream operations (kernels around an all-gather), which cannot run inside the caller's group:
 * an eligible call made inside a group is recorded and run right after the outermost ncclGroupEnd
 * has launched the rest of the group (operations of one group carry no order among themselves, and
 * every rank defers the same calls, so every rank runs the same sequence).  Nesting is per thread,
 * as in NCCL.  A group too large for the record passes its extra calls through.
 *
 * MoE token all-to-alls (SQZ_MOE): ncclAlltoAll outside a group, and the all-to-all that
 * PyTorch builds from grouped ncclSend/ncclRecv.  Under SQZ_MOE, a send or receive made inside a
 * group on a known communicator is recorded instead of issued; at the outermost ncclGroupEnd the
 * record is recognized as a token all-to-all or not (sqz_moe_recognize).  If not, every recorded
 * call is issued into the still open NCCL group in its original order, so the group runs as the
 * user made it; if so, the rest of the group is launched first and the coded all-to-all runs
 * after it (sqz_gpu_moe_alltoall; every rank makes the same decision from the same calls).  Our
 * own sends and receives go to the real NCCL (sqz_nccl.h), never through these entry points.
 *
 * Configuration is read at the first communicator.  Every new blocking communicator is created
 * first, then its ranks agree (one word) on whether each could read its configuration: a bad value
 * on any rank makes the creation fail with ncclInvalidUsage on every rank (the faulty one names
 * the variable), and settings that differ make it fail on every rank too (the check is collective
 * over the new communicator), instead of leaving the good ranks waiting for the faulty one.
 * Statistics (SQZ_STATS) are written at exit. */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "cuda/sqz_gpu_engine.h"
#include "sqz_ctx.h"
#include "sqz_log.h"
#include "transport/sqz_nccl.h"

#define SQZ_NCCL_API __attribute__((visibility("default")))

static pthread_once_t sqz_nccl_once = PTHREAD_ONCE_INIT;
static sqz_ctx_t     *sqz_nccl_ctx;  /* NULL: configuration failed (or not read yet) */
static int            sqz_nccl_bad_config;
static int            sqz_nccl_rank = -1;

/* Known communicators. */
typedef struct sqz_nccl_entry {
    ncclComm_t  nc;
    sqz_comm_t *engine; /* NULL: pass everything through (non-blocking, ncclCommInitAll, error) */
} sqz_nccl_entry_t;

static pthread_mutex_t   sqz_nccl_map_lock = PTHREAD_MUTEX_INITIALIZER;
static sqz_nccl_entry_t *sqz_nccl_map;
static size_t            sqz_nccl_map_n, sqz_nccl_map_cap;

/* Group nesting and the calls deferred to the outermost ncclGroupEnd, per thread. */
typedef struct sqz_deferred {
    sqz_comm_t  *engine;
    const void  *sendbuf;
    void        *recvbuf;
    size_t       count;
    sqz_dtype_t  dtype;
    sqz_op_t     op;
    cudaStream_t stream;
    int          reduce_scatter;
} sqz_deferred_t;

enum { SQZ_MAX_DEFERRED = 256 };
static __thread int             sqz_group_depth;
static __thread int             sqz_ndeferred;
/* The record lives on the heap (allocated by a thread's first deferral, freed never: one per
 * thread that opens groups): static TLS must stay tiny for the library to be dlopen-able. */
static __thread sqz_deferred_t *sqz_deferred_calls;

/* ncclSend/ncclRecv recorded inside a group under SQZ_MOE (per thread, heap, grow-only).  When the
 * record cannot grow, what it holds is issued at once and the rest of the group passes through
 * (`spilled`). */
typedef struct sqz_p2p {
    const void    *sendbuf; /* NULL for a receive */
    void          *recvbuf;
    size_t         count;
    ncclDataType_t dtype;
    int            peer;
    ncclComm_t     comm;
    cudaStream_t   stream;
} sqz_p2p_t;

enum { SQZ_MAX_P2P = 1 << 16 };
static __thread sqz_p2p_t *sqz_p2p_calls;
static __thread int        sqz_np2p, sqz_p2p_cap, sqz_p2p_spilled;

static void sqz_nccl_at_exit(void)
{
    sqz_ctx_t *ctx = sqz_nccl_ctx;
    if (NULL == ctx) {
        return;
    }
    /* The CUDA runtime may already be gone: stop reading device counters (the destroyed
     * communicators have been read already). */
    pthread_mutex_lock(&ctx->lock);
    ctx->ngpu_comms = 0;
    pthread_mutex_unlock(&ctx->lock);
    const char *stats = ctx->p.stats;
    const int   rank  = sqz_nccl_rank >= 0 ? sqz_nccl_rank : 0;
    if (stats && 0 == strncmp(stats, "json:", 5)) {
        sqz_stats_write_json(ctx, stats + 5, rank);
    } else if (stats && 0 == strcmp(stats, "summary")) {
        const size_t n   = sqz_stats_export_len(ctx);
        double      *buf = malloc(n * sizeof(double));
        if (buf) {
            sqz_stats_export(ctx, buf);
            fprintf(stderr, "squeeze[rank %d] statistics of this process:\n", rank);
            sqz_stats_print_summary(ctx, stderr, buf, 1);
            free(buf);
        }
    }
}

static void sqz_nccl_init_once(void)
{
    sqz_config_t *cfg = NULL;
    char          err[1024] = "";
    sqz_status_t  st        = sqz_config_create(&cfg);
    if (SQZ_OK == st) {
        st = sqz_config_load_env(cfg);
    }
    if (SQZ_OK == st) {
        st = sqz_ctx_create(cfg, &sqz_nccl_ctx, err, sizeof(err));
    }
    sqz_config_destroy(cfg);
    if (SQZ_OK != st) {
        fprintf(stderr, "squeeze: configuration error: %s (%s); NCCL communicators cannot be "
                        "created until it is fixed\n",
                err[0] ? err : "see above", sqz_status_string(st));
        sqz_nccl_bad_config = 1;
        sqz_nccl_ctx        = NULL;
        return;
    }
    atexit(sqz_nccl_at_exit);
}

static const sqz_nccl_api_t *sqz_real(void)
{
    const sqz_nccl_api_t *api = sqz_nccl_resolve(0);
    if (NULL == api) {
        /* Nothing can be forwarded: the process called an NCCL function without an NCCL. */
        fprintf(stderr, "squeeze: libsqueeze_nccl.so cannot find the real NCCL library\n");
        abort();
    }
    return api;
}

/* ------------------------------------------------------------------------------------------- */
/* Communicator map                                                                             */
/* ------------------------------------------------------------------------------------------- */
static sqz_nccl_entry_t *sqz_map_find(ncclComm_t nc)
{
    for (size_t i = 0; i < sqz_nccl_map_n; i++) {
        if (sqz_nccl_map[i].nc == nc) {
            return &sqz_nccl_map[i];
        }
    }
    return NULL;
}

static void sqz_map_put(ncclComm_t nc, sqz_comm_t *engine)
{
    pthread_mutex_lock(&sqz_nccl_map_lock);
    sqz_nccl_entry_t *e = sqz_map_find(nc);
    if (NULL == e && sqz_nccl_map_n == sqz_nccl_map_cap) {
        const size_t      cap   = sqz_nccl_map_cap ? 2 * sqz_nccl_map_cap : 16;
        sqz_nccl_entry_t *grown = realloc(sqz_nccl_map, cap * sizeof(*grown));
        if (grown) {
            sqz_nccl_map     = grown;
            sqz_nccl_map_cap = cap;
        }
    }
    if (NULL == e && sqz_nccl_map_n < sqz_nccl_map_cap) {
        e = &sqz_nccl_map[sqz_nccl_map_n++];
    }
    if (e) {
        e->nc     = nc;
        e->engine = engine;
    } else {
        sqz_comm_destroy(engine); /* out of memory: this communicator passes through */
    }
    pthread_mutex_unlock(&sqz_nccl_map_lock);
}

static sqz_comm_t *sqz_map_engine(ncclComm_t nc)
{
    pthread_mutex_lock(&sqz_nccl_map_lock);
    sqz_nccl_entry_t *e      = sqz_map_find(nc);
    sqz_comm_t       *engine = e ? e->engine : NULL;
    pthread_mutex_unlock(&sqz_nccl_map_lock);
    return engine;
}

static sqz_comm_t *sqz_map_take(ncclComm_t nc)
{
    pthread_mutex_lock(&sqz_nccl_map_lock);
    sqz_nccl_entry_t *e      = sqz_map_find(nc);
    sqz_comm_t       *engine = NULL;
    if (e) {
        engine = e->engine;
        *e     = sqz_nccl_map[--sqz_nccl_map_n];
    }
    pthread_mutex_unlock(&sqz_nccl_map_lock);
    return engine;
}

/* Creates the engine of a new blocking communicator (collective over it).  \return ncclSuccess,
 * or ncclInvalidUsage after destroying the communicator when the configuration is bad or differs
 * between ranks. */
static ncclResult_t sqz_attach(const sqz_nccl_api_t *api, ncclComm_t *nc, int blocking)
{
    if (NULL == *nc) {
        return ncclSuccess;
    }
    /* Every rank learns whether every rank could read its configuration before anything else
     * (a rank that failed alone would otherwise leave the others in the settings check). */
    const int all_ok = blocking ? sqz_nccl_agree_ok(api, *nc, !sqz_nccl_bad_config) : 1;
    if (1 != all_ok) {
        if (!sqz_nccl_bad_config) {
            SQZ_ERROR("a rank of this NCCL communicator has a Squeeze configuration error (its "
                      "message says which variable): the communicator cannot be created");
        }
        api->CommDestroy(*nc);
        *nc = NULL;
        return ncclInvalidUsage;
    }
    if (NULL == sqz_nccl_ctx || !blocking) {
        if (!blocking) {
            SQZ_LOG_ONCE(SQZ_LOG_INFO, "non-blocking NCCL communicators pass through uncompressed");
        }
        sqz_map_put(*nc, NULL);
        return ncclSuccess;
    }
    int rank = 0;
    if (api->CommUserRank(*nc, &rank) == ncclSuccess && sqz_nccl_rank < 0) {
        const char *env = getenv("RANK"); /* torchrun's global rank, for logs and stats files */
        sqz_nccl_rank   = env ? atoi(env) : rank;
        sqz_ctx_set_log_rank(sqz_nccl_ctx, sqz_nccl_rank);
    }
    sqz_comm_t        *engine = NULL;
    const sqz_status_t st     = sqz_comm_create_nccl(sqz_nccl_ctx, *nc, &engine);
    if (SQZ_ERR_MISMATCH == st) {
        api->CommDestroy(*nc);
        *nc = NULL;
        return ncclInvalidUsage;
    }
    if (SQZ_OK != st) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "communicator setup failed (%s): it passes through",
                     sqz_status_string(st));
    }
    sqz_map_put(*nc, engine);
    return ncclSuccess;
}

/* Reads the configuration once (sqz_nccl_bad_config tells how it went). */
static void sqz_config_ok(void) { pthread_once(&sqz_nccl_once, sqz_nccl_init_once); }

SQZ_NCCL_API ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank)
{
    const sqz_nccl_api_t *api = sqz_real();
    sqz_config_ok(); /* (a bad one is agreed on in sqz_attach, with every rank) */
    const ncclResult_t r = api->CommInitRank(comm, nranks, id, rank);
    return r == ncclSuccess ? sqz_attach(api, comm, 1) : r;
}

SQZ_NCCL_API ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id,
                                                 int rank, ncclConfig_t *config)
{
    const sqz_nccl_api_t *api = sqz_real();
    sqz_config_ok(); /* (a bad one is agreed on in sqz_attach, with every rank) */
    if (NULL == api->CommInitRankConfig) {
        return ncclInvalidUsage;
    }
    const ncclResult_t r = api->CommInitRankConfig(comm, nranks, id, rank, config);
    /* blocking == 0 asks for a non-blocking communicator (NCCL_CONFIG_UNDEF_INT: default, 1) */
    const int blocking = NULL == config || config->blocking != 0;
    return r == ncclSuccess ? sqz_attach(api, comm, blocking) : r;
}

SQZ_NCCL_API ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist)
{
    const sqz_nccl_api_t *api = sqz_real();
    if (NULL == api->CommInitAll) {
        return ncclInvalidUsage;
    }
    const ncclResult_t r = api->CommInitAll(comms, ndev, devlist);
    /* One thread drives every device: a collective setup would deadlock.  Pass through. */
    for (int i = 0; r == ncclSuccess && i < ndev; i++) {
        sqz_map_put(comms[i], NULL);
    }
    return r;
}

SQZ_NCCL_API ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm,
                                        ncclConfig_t *config)
{
    const sqz_nccl_api_t *api = sqz_real();
    sqz_config_ok(); /* (a bad one is agreed on in sqz_attach, with every rank) */
    if (NULL == api->CommSplit) {
        return ncclInvalidUsage;
    }
    const ncclResult_t r = api->CommSplit(comm, color, key, newcomm, config);
    /* NCCL_CONFIG_UNDEF_INT (the default) inherits the parent's mode */
    const int blocking = NULL == config || config->blocking != 0;
    return r == ncclSuccess ? sqz_attach(api, newcomm, blocking) : r;
}

SQZ_NCCL_API ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    const sqz_nccl_api_t *api = sqz_real();
    sqz_comm_destroy(sqz_map_take(comm));
    return api->CommDestroy(comm);
}

SQZ_NCCL_API ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    const sqz_nccl_api_t *api = sqz_real();
    sqz_comm_t           *e   = sqz_map_take(comm);
    /* The device may hold work that never completes (that is why one aborts): free host state
     * only, and leave the device buffers rather than synchronize with a broken stream. */
    if (e) {
        e->gpu_abandon = 1;
        sqz_comm_destroy(e);
    }
    return api->CommAbort(comm);
}

/* ------------------------------------------------------------------------------------------- */
/* Collectives                                                                                  */
/* ------------------------------------------------------------------------------------------- */
static int sqz_map_dtype(ncclDataType_t t, sqz_dtype_t *out)
{
    switch (t) {
    case ncclFloat32: *out = SQZ_DTYPE_FLOAT32; return 1;
    case ncclFloat16: *out = SQZ_DTYPE_FLOAT16; return 1;
    case ncclBfloat16: *out = SQZ_DTYPE_BFLOAT16; return 1;
    default: return 0;
    }
}

static int sqz_map_op(ncclRedOp_t op, sqz_op_t *out)
{
    if (op == ncclSum) {
        *out = SQZ_OP_SUM;
        return 1;
    }
    if (op == ncclAvg) {
        *out = SQZ_OP_AVG;
        return 1;
    }
    return 0; /* MIN/MAX/PROD and custom (PreMulSum) operations pass through */
}

/* \return the engine when the call may be compressed (the engine makes the size decision). */
static sqz_comm_t *sqz_candidate(ncclComm_t comm, ncclDataType_t t, ncclRedOp_t op,
                                 sqz_dtype_t *dt, sqz_op_t *sop)
{
    if (NULL == sqz_nccl_ctx || !sqz_map_dtype(t, dt) || !sqz_map_op(op, sop)) {
        return NULL;
    }
    return sqz_map_engine(comm);
}

static int sqz_defer(const sqz_deferred_t *d)
{
    if (NULL == sqz_deferred_calls) {
        sqz_deferred_calls = calloc(SQZ_MAX_DEFERRED, sizeof(*sqz_deferred_calls));
    }
    if (NULL == sqz_deferred_calls || sqz_ndeferred >= SQZ_MAX_DEFERRED) {
        return 0;
    }
    sqz_deferred_calls[sqz_ndeferred++] = *d;
    return 1;
}

static ncclResult_t sqz_result(sqz_status_t st)
{
    return SQZ_OK == st ? ncclSuccess : SQZ_ERR_NCCL == st ? ncclSystemError : ncclInternalError;
}

/* The compressed path of one call, run at once or at the end of its group. */
static sqz_status_t sqz_run(const sqz_deferred_t *d)
{
    return d->reduce_scatter
               ? sqz_reduce_scatter_async(d->engine, d->sendbuf, d->recvbuf, d->count, d->dtype,
                                          d->op, 0, d->stream)
               : sqz_allreduce_async(d->engine, d->sendbuf == d->recvbuf ? NULL : d->sendbuf,
                                     d->recvbuf, d->count, d->dtype, d->op, 0, d->stream);
}

/* ncclAllReduce (rs = 0) and ncclReduceScatter (rs = 1, count per rank): passed through to the
 * real function, deferred to the end of the caller's group, or compressed now. */
static ncclResult_t sqz_reduction(const void *sendbuff, void *recvbuff, size_t count,
                                  ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                  cudaStream_t stream, int rs)
{
    const sqz_nccl_api_t *api = sqz_real();
    ncclResult_t (*const real)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                               ncclComm_t, cudaStream_t) = rs ? api->ReduceScatter : api->AllReduce;
    if (NULL == real) {
        return ncclInvalidUsage;
    }
    sqz_deferred_t d = {.sendbuf = sendbuff, .recvbuf = recvbuff, .count = count,
                        .stream = stream, .reduce_scatter = rs};
    d.engine         = sqz_candidate(comm, datatype, op, &d.dtype, &d.op);
    if (NULL == d.engine) {
        if (sqz_nccl_ctx) {
            __atomic_fetch_add(&sqz_nccl_ctx->calls_passthrough, 1, __ATOMIC_RELAXED);
        }
        return real(sendbuff, recvbuff, count, datatype, op, comm, stream);
    }
    if (sqz_group_depth > 0) {
        if (sqz_defer(&d)) {
            return ncclSuccess;
        }
        sqz_comm_count_passthrough(d.engine);
        return real(sendbuff, recvbuff, count, datatype, op, comm, stream);
    }
    return sqz_result(sqz_run(&d));
}

SQZ_NCCL_API ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                                        ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                        cudaStream_t stream)
{
    return sqz_reduction(sendbuff, recvbuff, count, datatype, op, comm, stream, 0);
}

SQZ_NCCL_API ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                                            ncclDataType_t datatype, ncclRedOp_t op,
                                            ncclComm_t comm, cudaStream_t stream)
{
    return sqz_reduction(sendbuff, recvbuff, recvcount, datatype, op, comm, stream, 1);
}

/* ------------------------------------------------------------------------------------------- */
/* MoE token all-to-alls                                                                        */
/* ------------------------------------------------------------------------------------------- */
static size_t sqz_nccl_esize(ncclDataType_t t)
{
    sqz_dtype_t d;
    return sqz_map_dtype(t, &d) ? sqz_tok_esize((int)d) : 0;
}

/* Issues recorded calls on the real NCCL, in their order. */
static ncclResult_t sqz_p2p_issue(const sqz_nccl_api_t *api, const sqz_p2p_t *c, int n)
{
    ncclResult_t res = ncclSuccess;
    for (int i = 0; i < n; i++) {
        const ncclResult_t r = c[i].sendbuf ? api->Send(c[i].sendbuf, c[i].count, c[i].dtype,
                                                        c[i].peer, c[i].comm, c[i].stream)
                                            : api->Recv(c[i].recvbuf, c[i].count, c[i].dtype,
                                                        c[i].peer, c[i].comm, c[i].stream);
        res = res == ncclSuccess ? r : res;
    }
    return res;
}

/* One token all-to-all: per peer, the tokens and where they are. */
typedef struct sqz_moe_a2a {
    sqz_comm_t  *engine;
    ncclComm_t   comm;
    cudaStream_t stream;
    sqz_dtype_t  dtype;
    size_t       width;
    const void **sbuf;
    void       **rbuf;
    size_t      *stok, *rtok; /* tokens */
} sqz_moe_a2a_t;

static void sqz_moe_a2a_free(sqz_moe_a2a_t *a)
{
    free(a->sbuf);
    free(a->rbuf);
    free(a->stok);
    a->sbuf = NULL;
    a->rbuf = NULL;
    a->stok = NULL;
}

/* Allocates the per-peer arrays of a (zeroed). \return 0 when out of memory. */
static int sqz_moe_a2a_alloc(sqz_moe_a2a_t *a, int P)
{
    a->sbuf = calloc((size_t)P, sizeof(*a->sbuf));
    a->rbuf = calloc((size_t)P, sizeof(*a->rbuf));
    a->stok = calloc(2 * (size_t)P, sizeof(size_t));
    a->rtok = a->stok ? a->stok + P : NULL;
    if (NULL == a->sbuf || NULL == a->rbuf || NULL == a->stok) {
        sqz_moe_a2a_free(a);
        return 0;
    }
    return 1;
}

/* The checks every token all-to-all passes, once per-peer buffers and tokens are known: the self
 * block matches, some token moves, and no receive region overlaps a send region (in place). */
static int sqz_moe_a2a_valid(const sqz_moe_a2a_t *a)
{
    const int    P = a->engine->nranks, me = a->engine->rank;
    const size_t rowbytes = a->width * sqz_tok_esize((int)a->dtype);
    size_t       total    = 0;
    if (a->stok[me] != a->rtok[me]) {
        return 0;
    }
    for (int r = 0; r < P; r++) {
        total += a->stok[r] + a->rtok[r];
        if (a->stok[r] > UINT32_MAX || a->rtok[r] > UINT32_MAX) {
            return 0;
        }
    }
    for (int r = 0; r < P; r++) {
        const uintptr_t r0 = (uintptr_t)a->rbuf[r], r1 = r0 + a->rtok[r] * rowbytes;
        for (int q = 0; a->rtok[r] && q < P; q++) {
            const uintptr_t s0 = (uintptr_t)a->sbuf[q], s1 = s0 + a->stok[q] * rowbytes;
            if (a->stok[q] && r0 < s1 && s0 < r1) {
                return 0;
            }
        }
    }
    return total > 0;
}

/* Recognizes the recorded calls of a group as a token all-to-all: one communicator the engine
 * knows, one stream, one float dtype, at most one send and one receive per peer (a missing one
 * moves 0 tokens: PyTorch skips empty transfers), every count a multiple of SQZ_MOE_DIM.
 * \return 1 with *a filled (free it with sqz_moe_a2a_free), 0 otherwise. */
static int sqz_moe_recognize(const sqz_p2p_t *c, int n, sqz_moe_a2a_t *a)
{
    memset(a, 0, sizeof(*a));
    if (n < 1 || NULL == sqz_nccl_ctx || sqz_nccl_ctx->p.moe_dim <= 0 ||
        !sqz_map_dtype(c[0].dtype, &a->dtype)) {
        return 0;
    }
    a->comm   = c[0].comm;
    a->stream = c[0].stream;
    a->width  = (size_t)sqz_nccl_ctx->p.moe_dim;
    a->engine = sqz_map_engine(a->comm);
    if (NULL == a->engine || !sqz_moe_a2a_alloc(a, a->engine->nranks)) {
        return 0;
    }
    const int P = a->engine->nranks;
    for (int i = 0; i < n; i++) {
        const sqz_p2p_t *p    = &c[i];
        const int        send = NULL != p->sendbuf;
        if (p->comm != a->comm || p->stream != a->stream || p->dtype != c[0].dtype ||
            p->peer < 0 || p->peer >= P || p->count % a->width != 0 ||
            (send ? NULL != a->sbuf[p->peer] : NULL != a->rbuf[p->peer])) {
            sqz_moe_a2a_free(a);
            return 0;
        }
        if (send) {
            a->sbuf[p->peer] = p->sendbuf;
            a->stok[p->peer] = p->count / a->width;
        } else {
            a->rbuf[p->peer] = p->recvbuf;
            a->rtok[p->peer] = p->count / a->width;
        }
    }
    if (!sqz_moe_a2a_valid(a)) {
        sqz_moe_a2a_free(a);
        return 0;
    }
    return 1;
}

/* The codec of a token all-to-all (SQZ_MOE, SQZ_MOE_CYCLE; LSH needs float32: a half-precision
 * call that the cycle designates for LSH is de-duplicated instead, losslessly). */
static int sqz_moe_codec_for(const sqz_moe_a2a_t *a)
{
    const int codec = sqz_moe_next_codec(a->engine);
    return SQZ_MOE_LSH == codec && SQZ_DTYPE_FLOAT32 != a->dtype ? SQZ_MOE_DEDUP : codec;
}

/* Runs a recognized all-to-all coded.  \return 1 when done (*res its result), 0 when nothing
 * reached NCCL and the caller must run the original calls (counted as a passthrough). */
static int sqz_moe_run(sqz_moe_a2a_t *a, int codec, ncclResult_t *res)
{
    int                moved = 0;
    const sqz_status_t st    = SQZ_MOE_NONE == codec
                                   ? SQZ_ERR_NOT_SUPPORTED
                                   : sqz_gpu_moe_alltoall(a->engine, codec, a->dtype, a->width,
                                                          a->sbuf, a->stok, a->rbuf, a->rtok,
                                                          a->stream, &moved);
    if (SQZ_OK != st && !moved) {
        if (SQZ_MOE_NONE != codec) {
            SQZ_LOG_ONCE(SQZ_LOG_WARN, "MoE all-to-all on the GPU failed before any transfer "
                                       "(%s): it passes through",
                         sqz_status_string(st));
        }
        sqz_moe_count_passthrough(a->engine);
        return 0;
    }
    *res = sqz_result(st);
    return 1;
}

/* Whether a send or receive on comm is recorded (inside a group, SQZ_MOE on, float dtype, a
 * known communicator). */
static int sqz_p2p_recordable(ncclComm_t comm, ncclDataType_t dt)
{
    return sqz_group_depth > 0 && !sqz_p2p_spilled && NULL != sqz_nccl_ctx &&
           SQZ_MOE_OFF != sqz_nccl_ctx->p.moe && 0 != sqz_nccl_esize(dt) &&
           NULL != sqz_map_engine(comm);
}

/* Records one call; when the record cannot grow, issues it and everything recorded before. */
static ncclResult_t sqz_p2p_record(const sqz_p2p_t *c)
{
    if (sqz_np2p == sqz_p2p_cap && sqz_p2p_cap < SQZ_MAX_P2P) {
        const int  cap   = sqz_p2p_cap ? 2 * sqz_p2p_cap : 64;
        sqz_p2p_t *grown = realloc(sqz_p2p_calls, (size_t)cap * sizeof(*grown));
        if (grown) {
            sqz_p2p_calls = grown;
            sqz_p2p_cap   = cap;
        }
    }
    if (sqz_np2p < sqz_p2p_cap) {
        sqz_p2p_calls[sqz_np2p++] = *c;
        return ncclSuccess;
    }
    const sqz_nccl_api_t *api = sqz_real();
    const ncclResult_t    r   = sqz_p2p_issue(api, sqz_p2p_calls, sqz_np2p);
    sqz_np2p                  = 0;
    sqz_p2p_spilled           = 1;
    const ncclResult_t r2     = sqz_p2p_issue(api, c, 1);
    return r == ncclSuccess ? r2 : r;
}

SQZ_NCCL_API ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype,
                                   int peer, ncclComm_t comm, cudaStream_t stream)
{
    const sqz_nccl_api_t *api = sqz_real();
    if (NULL == api->Send) {
        return ncclInvalidUsage;
    }
    if (NULL == sendbuff || !sqz_p2p_recordable(comm, datatype)) {
        return api->Send(sendbuff, count, datatype, peer, comm, stream);
    }
    const sqz_p2p_t c = {.sendbuf = sendbuff, .count = count, .dtype = datatype, .peer = peer,
                         .comm = comm, .stream = stream};
    return sqz_p2p_record(&c);
}

SQZ_NCCL_API ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
                                   ncclComm_t comm, cudaStream_t stream)
{
    const sqz_nccl_api_t *api = sqz_real();
    if (NULL == api->Recv) {
        return ncclInvalidUsage;
    }
    if (!sqz_p2p_recordable(comm, datatype)) {
        return api->Recv(recvbuff, count, datatype, peer, comm, stream);
    }
    const sqz_p2p_t c = {.recvbuf = recvbuff, .count = count, .dtype = datatype, .peer = peer,
                         .comm = comm, .stream = stream};
    return sqz_p2p_record(&c);
}

#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0)
/* ncclAlltoAll: count elements to and from every rank.  Coded outside a group when it is token
 * traffic; inside a group (the coded form is several NCCL groups and a host wait) and otherwise
 * it goes to the real function. */
SQZ_NCCL_API ncclResult_t ncclAlltoAll(const void *sendbuff, void *recvbuff, size_t count,
                                       ncclDataType_t datatype, ncclComm_t comm,
                                       cudaStream_t stream)
{
    const sqz_nccl_api_t *api = sqz_real();
    if (NULL == api->AlltoAll) {
        return ncclInvalidUsage;
    }
    if (NULL == sqz_nccl_ctx || SQZ_MOE_OFF == sqz_nccl_ctx->p.moe) {
        return api->AlltoAll(sendbuff, recvbuff, count, datatype, comm, stream);
    }
    sqz_moe_a2a_t a      = {0};
    const size_t  es     = sqz_nccl_esize(datatype);
    a.engine             = sqz_map_engine(comm);
    const size_t  width  = (size_t)sqz_nccl_ctx->p.moe_dim;
    int           token  = NULL != a.engine && es && width && 0 == count % width &&
                           sqz_map_dtype(datatype, &a.dtype) && 0 == sqz_group_depth &&
                           sqz_moe_a2a_alloc(&a, a.engine->nranks);
    if (token) {
        a.comm   = comm;
        a.stream = stream;
        a.width  = width;
        for (int r = 0; r < a.engine->nranks; r++) {
            a.sbuf[r] = (const unsigned char *)sendbuff + (size_t)r * count * es;
            a.rbuf[r] = (unsigned char *)recvbuff + (size_t)r * count * es;
            a.stok[r] = a.rtok[r] = count / width;
        }
        token = sqz_moe_a2a_valid(&a);
    }
    ncclResult_t res = ncclSuccess;
    const int    done = token && sqz_moe_run(&a, sqz_moe_codec_for(&a), &res);
    if (!token && a.engine) {
        sqz_moe_count_passthrough(a.engine);
    }
    sqz_moe_a2a_free(&a);
    return done ? res : api->AlltoAll(sendbuff, recvbuff, count, datatype, comm, stream);
}
#endif

/* nccl.h declares these two without a prototype. */
SQZ_NCCL_API ncclResult_t ncclGroupStart(void);
SQZ_NCCL_API ncclResult_t ncclGroupEnd(void);

SQZ_NCCL_API ncclResult_t ncclGroupStart(void)
{
    const sqz_nccl_api_t *api = sqz_real();
    const ncclResult_t    r   = api->GroupStart();
    if (r == ncclSuccess) {
        sqz_group_depth++;
    }
    return r;
}

SQZ_NCCL_API ncclResult_t ncclGroupEnd(void)
{
    const sqz_nccl_api_t *api = sqz_real();
    /* The outermost end: decide on the recorded sends and receives while the NCCL group is still
     * open, so that a group that is not a token all-to-all runs exactly as the user made it. */
    sqz_moe_a2a_t a      = {0};
    int           coded  = 0, codec = SQZ_MOE_NONE;
    ncclResult_t  res    = ncclSuccess;
    const int     np2p   = 1 == sqz_group_depth ? sqz_np2p : 0;
    if (np2p > 0) {
        coded = sqz_moe_recognize(sqz_p2p_calls, np2p, &a);
        codec = coded ? sqz_moe_codec_for(&a) : SQZ_MOE_NONE;
        if (SQZ_MOE_NONE == codec) {
            /* not token traffic, or the cycle's "none" */
            sqz_comm_t *e = coded ? a.engine : sqz_map_engine(sqz_p2p_calls[0].comm);
            if (e) {
                sqz_moe_count_passthrough(e);
            }
            coded = 0;
            res   = sqz_p2p_issue(api, sqz_p2p_calls, np2p);
            sqz_moe_a2a_free(&a);
        }
    }
    if (1 == sqz_group_depth) {
        sqz_np2p        = 0;
        sqz_p2p_spilled = 0;
    }
    const ncclResult_t r = api->GroupEnd();
    res                  = res == ncclSuccess ? r : res;
    if (sqz_group_depth > 0) {
        sqz_group_depth--;
    }
    if (sqz_group_depth > 0) {
        return res;
    }
    /* The outermost group has been launched: run what it deferred, in the order it was called.
     * (On a failed group the deferred calls still run: their ranks all reach this point.) */
    const int n   = sqz_ndeferred;
    sqz_ndeferred = 0;
    for (int i = 0; i < n; i++) {
        const sqz_status_t st = sqz_run(&sqz_deferred_calls[i]);
        if (res == ncclSuccess && SQZ_OK != st) {
            res = sqz_result(st);
        }
    }
    if (coded) {
        ncclResult_t mr = ncclSuccess;
        if (!sqz_moe_run(&a, codec, &mr)) {
            /* Nothing moved: the original calls, as one group of their own.  (The record is
             * still intact: nothing in between records.) */
            const ncclResult_t g0 = api->GroupStart();
            const ncclResult_t g1 = sqz_p2p_issue(api, sqz_p2p_calls, np2p);
            const ncclResult_t g2 = api->GroupEnd();
            mr = g0 != ncclSuccess ? g0 : g1 != ncclSuccess ? g1 : g2;
        }
        res = res == ncclSuccess ? mr : res;
        sqz_moe_a2a_free(&a);
    }
    return res;
}
