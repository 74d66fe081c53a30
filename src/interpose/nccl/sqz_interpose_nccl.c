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
 * Configuration is read at the first communicator: a bad value makes every communicator creation
 * fail with ncclInvalidUsage after a message naming the variable; settings that differ between
 * ranks make it fail on every rank (the check is collective over the new communicator).
 * Statistics (SQZ_STATS) are written at exit. */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

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

static int sqz_config_ok(void)
{
    pthread_once(&sqz_nccl_once, sqz_nccl_init_once);
    return !sqz_nccl_bad_config;
}

SQZ_NCCL_API ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank)
{
    const sqz_nccl_api_t *api = sqz_real();
    if (!sqz_config_ok()) {
        return ncclInvalidUsage;
    }
    const ncclResult_t r = api->CommInitRank(comm, nranks, id, rank);
    return r == ncclSuccess ? sqz_attach(api, comm, 1) : r;
}

SQZ_NCCL_API ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id,
                                                 int rank, ncclConfig_t *config)
{
    const sqz_nccl_api_t *api = sqz_real();
    if (!sqz_config_ok()) {
        return ncclInvalidUsage;
    }
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
    if (!sqz_config_ok()) {
        return ncclInvalidUsage;
    }
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
    const ncclResult_t    r   = api->GroupEnd();
    if (sqz_group_depth > 0) {
        sqz_group_depth--;
    }
    if (sqz_group_depth > 0 || 0 == sqz_ndeferred) {
        return r;
    }
    /* The outermost group has been launched: run what it deferred, in the order it was called.
     * (On a failed group the deferred calls still run: their ranks all reach this point.) */
    ncclResult_t res = r;
    const int    n   = sqz_ndeferred;
    sqz_ndeferred    = 0;
    for (int i = 0; i < n; i++) {
        const sqz_status_t st = sqz_run(&sqz_deferred_calls[i]);
        if (res == ncclSuccess && SQZ_OK != st) {
            res = sqz_result(st);
        }
    }
    return res;
}
