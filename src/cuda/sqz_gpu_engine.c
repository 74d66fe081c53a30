/*
 * The GPU path: compressed all-reduce of device buffers over an NCCL communicator, stream-ordered
 * on the caller's stream.
 *
 * One call, every step enqueued on the caller's stream, no host synchronization:
 *   1. compress  in (+ residual) -> this rank's slot of the payload array    (one fused pass)
 *   2. ncclAllGather of the fixed-size payloads, in place
 *   3. restore   when some rank flagged a non-finite input, bring the residual back (device-side
 *                decision: a no-op kernel otherwise)
 *   4. decode    sum of every rank's decoded payload, in rank order, times 1 or 1/N, into out
 * Every rank decodes the same payloads in the same order, so outputs are bit-identical.  The fall
 * back for what the GPU path does not handle (methods or options without a GPU kernel, CUDA graph
 * capture, a buffer whose workspace cannot be allocated) is the dense ncclAllReduce on the same
 * stream, decided on the host from facts every rank shares, so ranks never disagree.
 *
 * Per buffer: the residual (fp32), the payload array (nranks slots) and the codec workspace are
 * allocated by its first compressed call (with the communicator's device current), and kept: no
 * allocation afterwards.  Buffers are states of the communicator's state store, as host buffers
 * are (named by key or call sequence, counted, bounded by SQZ_STATE_MAX_BYTES, freed): the store
 * is core's, their device memory this backend's (sqz_gpu_buffers.c).
 */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cuda/sqz_gpu_comm.h"
#include "sqz_device_support.h"
#include "sqz_dgc.h"
#include "sqz_identity.h"
#include "sqz_log.h"
#include "sqz_plugin_util.h"
#include "sqz_policy.h"
#include "sqz_residual.h"
#include "sqz_runner.h"
#include "transport/sqz_nccl.h"
#include "transport/sqz_transport_nccl.h"

const sqz_nccl_api_t *sqz_gpu_comm_nccl(sqz_comm_t *comm, void **nc, int *device,
                                        struct sqz_gpu_moe ***moe)
{
    struct sqz_gpu_comm *g = comm->gpu;
    if (NULL == g) {
        return NULL;
    }
    *nc     = g->nc;
    *device = g->device;
    *moe    = &g->moe;
    return g->nccl;
}

int sqz_gpu_built(void) { return 1; }

/* ------------------------------------------------------------------------------------------- */
/* Parameters of the selected method, read from the context by name.                           */
/* ------------------------------------------------------------------------------------------- */
/* One reader per device method: its parameters from the context (the CPU plugin's table). */
static void sqz_gpu_read_topk(const sqz_ctx_t *ctx, sqz_gpu_params_t *p)
{
    p->density = sqz_ctx_param_num(ctx, "TOPK_DENSITY", 0.01);
}

/* The codec of the scatter-reduce's reduced chunk (its phase 2): the method's, except top-k's
 * second selection, at TOPK_RESELECT times the density (at most 1), as the host plugin's stage 1
 * (plugins/topk/sqz_topk.c). */
static sqz_gpu_params_t sqz_gpu_server_params(const sqz_ctx_t *ctx, const sqz_gpu_params_t *p)
{
    sqz_gpu_params_t p2 = *p;
    if (SQZ_GPU_TOPK == p->method) {
        p2.density = fmin(1.0, p->density * sqz_ctx_param_num(ctx, "TOPK_RESELECT", 1.0));
    }
    return p2;
}

static void sqz_gpu_read_quant(const sqz_ctx_t *ctx, sqz_gpu_params_t *p)
{
    p->bits       = (int)sqz_ctx_param_num(ctx, "QUANT_BITS", 4);
    p->bucket     = (size_t)sqz_ctx_param_num(ctx, "QUANT_BUCKET", 512);
    p->stochastic = sqz_ctx_param_is(ctx, "QUANT_ROUNDING", "stochastic");
}

static void sqz_gpu_read_sign(const sqz_ctx_t *ctx, sqz_gpu_params_t *p)
{
    p->bucket  = (size_t)sqz_ctx_param_num(ctx, "SIGN_BUCKET", 4096);
    p->sign_l2 = sqz_ctx_param_is(ctx, "SIGN_SCALE", "l2");
}

static void sqz_gpu_read_qsgd(const sqz_ctx_t *ctx, sqz_gpu_params_t *p)
{
    p->levels   = (int)sqz_ctx_param_num(ctx, "QSGD_LEVELS", 15);
    p->bucket   = (size_t)sqz_ctx_param_num(ctx, "QSGD_BUCKET", 512);
    p->qsgd_max = sqz_ctx_param_is(ctx, "QSGD_NORM", "max");
}

static void sqz_gpu_read_randk(const sqz_ctx_t *ctx, sqz_gpu_params_t *p)
{
    p->density        = sqz_ctx_param_num(ctx, "RANDK_DENSITY", 0.01);
    p->randk_unbiased = sqz_ctx_param_is(ctx, "RANDK_SCALE", "unbiased");
}

static void sqz_gpu_read_terngrad(const sqz_ctx_t *ctx, sqz_gpu_params_t *p)
{
    p->bucket = (size_t)sqz_ctx_param_num(ctx, "TERNGRAD_BUCKET", 2048);
    p->clip   = sqz_ctx_param_num(ctx, "TERNGRAD_CLIP", 1.5);
}

/* The methods with device kernels (the codec's table names them, sqz_gpu_method_name). */
static const struct {
    sqz_gpu_method_t id;
    void (*read)(const sqz_ctx_t *ctx, sqz_gpu_params_t *p);
} sqz_gpu_readers[] = {
    {SQZ_GPU_TOPK, sqz_gpu_read_topk},
    {SQZ_GPU_QUANT, sqz_gpu_read_quant},
    {SQZ_GPU_SIGN, sqz_gpu_read_sign},
    {SQZ_GPU_QSGD, sqz_gpu_read_qsgd},
    {SQZ_GPU_RANDK, sqz_gpu_read_randk},
    {SQZ_GPU_TERNGRAD, sqz_gpu_read_terngrad},
};

int sqz_gpu_params_from_ctx(const sqz_ctx_t *ctx, void *state, sqz_gpu_params_t *p)
{
    memset(p, 0, sizeof(*p));
    if (NULL != ctx->method_device && NULL != state) {
        p->method       = SQZ_GPU_PLUGIN;
        p->plugin       = ctx->method_device;
        p->plugin_state = state;
        return 1;
    }
    for (size_t i = 0; i < sizeof(sqz_gpu_readers) / sizeof(sqz_gpu_readers[0]); i++) {
        const char *name = sqz_gpu_method_name(sqz_gpu_readers[i].id);
        if (NULL != name && 0 == strcmp(name, ctx->method->name)) {
            p->method = sqz_gpu_readers[i].id;
            sqz_gpu_readers[i].read(ctx, p);
            return 1;
        }
    }
    return 0;
}

/* Decides whether the selected method and options run on the GPU; says why not, once. */
static void sqz_gpu_configure(sqz_comm_t *comm)
{
    struct sqz_gpu_comm *g      = comm->gpu;
    const sqz_ctx_t     *ctx    = comm->ctx;
    const char          *method = ctx->method->name;
    g->enabled                  = sqz_gpu_params_from_ctx(ctx, comm->cstate, &g->params);
    g->params_server            = sqz_gpu_server_params(ctx, &g->params);
    /* The context's error feedback, SQZ_EF resolved for the method as on the host (under auto:
     * ef21 for top-k, none for the methods whose default it is, else ef14, damped by the plan);
     * each call's is sqz_policy_ef's.  PowerSGD reads SQZ_EF
     * itself (sqz_gpu_psgd_config; the context refuses econtrol with it). */
    const int ef = ctx->ef;
    g->ef      = ef == SQZ_EF_EF14;
    g->psgd    = sqz_gpu_psgd_config(ctx, &g->psgd_cfg);
    g->econtrol = ef == SQZ_EF_ECONTROL && !g->psgd;
    g->ef21     = (ef == SQZ_EF_EF21 || g->econtrol) && !g->psgd;
    g->ef |= g->ef21;
    if (g->psgd) {
        /* PowerSGD forms a = in + residual in the residual buffer: it always has one. */
        g->enabled = 1;
        g->ef      = 1;
    }
    const char *why = sqz_device_decline(ctx);
    if (NULL != why) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "SQZ_METHOD=%s on device buffers: %s. Device all-reduces pass "
                                   "through to NCCL uncompressed (stats: device_declined)",
                     method, why);
        g->enabled = 0;
        __atomic_store_n(&comm->ctx->device_declined, why, __ATOMIC_RELAXED);
    } else if (!g->enabled && 0 != strcmp(method, "none")) {
        /* (the table of sqz_device_support.c promises a kernel that the codec does not have:
         * tests/cuda checks that they agree) */
        SQZ_LOG_ONCE(SQZ_LOG_ERROR, "SQZ_METHOD=%s: no device kernel, against the device "
                                    "support table: device all-reduces pass through", method);
    }
    /* DGC wraps classic error feedback (the plan's dgc, sqz_policy_plan: this sets up the
     * buffers' DGC state, each call asks the plan). */
    g->dgc = g->enabled && !g->psgd && g->ef && !g->ef21 && sqz_dgc_active(&ctx->p);
    if (g->enabled && !g->dgc && sqz_dgc_active(&ctx->p)) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "SQZ_DGC_MOMENTUM / SQZ_DGC_CLIP correct classic error feedback "
                                   "(SQZ_EF=ef14), not SQZ_METHOD=%s with its error feedback here: "
                                   "ignored, as on the host", method);
    }
    if (g->enabled && !g->psgd && ctx->p.adapt) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "SQZ_ADAPT on the GPU path adapts powersgd only: SQZ_METHOD=%s "
                                   "runs at its uniform setting on device buffers",
                     method);
    }
    /* The scatter-reduce on device buffers runs classic error feedback only (ef21's estimator
     * is updated from the all-gather's payloads): under ef21 a sparsifier keeps the all-gather
     * (sqz_policy_exchange), said here, once. */
    if (g->enabled && g->ef21 && SQZ_SPARSE_SCATTER == ctx->p.sparse_algo &&
        SQZ_EXCHANGE_ALLGATHER == ctx->method->exchange) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "SQZ_SPARSE_ALGO=scatter with SQZ_EF=%s (SQZ_METHOD=%s): "
                                   "device all-reduces keep the all-gather (the device's "
                                   "scatter-reduce runs SQZ_EF=ef14 or none); host buffers take "
                                   "the scatter", g->econtrol ? "econtrol" : "ef21", method);
    }
    /* SQZ_EF_STORAGE compacts classic residuals, as on the host; PowerSGD's device state and
     * ef21's estimators stay fp32. */
    g->ef_storage = g->psgd ? 0 : ctx->p.ef_storage;
    if (g->enabled && g->ef && (g->psgd || g->ef21) &&
        ctx->p.ef_storage != SQZ_EF_STORAGE_FP32) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "SQZ_EF_STORAGE: %s keeps fp32 state on the GPU path",
                     g->psgd ? "powersgd" : "SQZ_EF=ef21");
    }
}

/* ------------------------------------------------------------------------------------------- */
/* Lifecycle                                                                                    */
/* ------------------------------------------------------------------------------------------- */
static void sqz_gpu_flush_stats(sqz_comm_t *comm)
{
    struct sqz_gpu_comm *g = comm->gpu;
    unsigned long long   n = 0;
    int                  saved = -1;
    if (NULL == g || NULL == g->d_nonfinite) {
        return;
    }
    cudaGetDevice(&saved);
    cudaSetDevice(g->device);
    /* cudaMemcpy waits for the legacy stream only; the counter may lag calls still in flight on
     * other streams, which the next read picks up. */
    if (cudaMemcpy(&n, g->d_nonfinite, sizeof(n), cudaMemcpyDeviceToHost) == cudaSuccess &&
        n > g->nonfinite_seen) {
        sqz_stats_nonfinite_found(comm->ctx, comm->ctx->method_index, n - g->nonfinite_seen);
        g->nonfinite_seen = n;
    }
    if (saved >= 0) {
        cudaSetDevice(saved);
    }
}

/* The compressed all-reduce of count elements from `in`; with rs_out, only this rank's block of
 * count / nranks elements is kept (reduce-scatter): the sum is decoded into the buffer's scratch
 * and the block copied to rs_out.  Flags of one call: the optimizer-side collective
 * (sqz_ef_allreduce) always keeps a residual and has neither a size threshold nor a warm-up. */
enum { SQZ_GPU_OPTIMIZER = 1 };

static sqz_status_t sqz_gpu_run(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                size_t count, sqz_dtype_t dtype, sqz_op_t op, uint64_t key,
                                void *stream, void *rs_out, unsigned flags);

static void sqz_gpu_destroy(sqz_comm_t *comm)
{
    struct sqz_gpu_comm *g = comm->gpu;
    if (NULL == g) {
        return;
    }
    sqz_ctx_t *ctx = comm->ctx;
    pthread_mutex_lock(&ctx->lock);
    for (size_t i = 0; i < ctx->ngpu_comms; i++) {
        if (ctx->gpu_comms[i] == comm) {
            ctx->gpu_comms[i] = ctx->gpu_comms[--ctx->ngpu_comms];
            break;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    sqz_gpu_hier_free(g->hier, comm->gpu_abandon);
    if (comm->gpu_abandon) {
        sqz_gpu_moe_free(g->moe, 1);
        sqz_state_store_fini(&comm->store); /* (the buffers' host memory: sqz_gpu_buffers.c) */
        free(g->pending);
        free(g);
        comm->gpu = NULL;
        return;
    }
    sqz_gpu_flush_stats(comm);
    int saved = -1;
    cudaGetDevice(&saved);
    cudaSetDevice(g->device);
    /* The buffers may still be in use by work enqueued on the callers' streams. */
    cudaDeviceSynchronize();
    sqz_state_store_fini(&comm->store); /* (while the hooks can reach comm->gpu) */
    cudaFree(g->d_nonfinite);
    cudaFree(g->d_agree);
    sqz_gpu_efwork_free(&g->efwork);
    sqz_gpu_moe_free(g->moe, 0);
    if (saved >= 0) {
        cudaSetDevice(saved);
    }
    free(g->pending);
    sqz_nccl_transport_destroy(g->transport);
    free(g);
    comm->gpu = NULL;
}

/* sqz_ef_allreduce on device buffers (PowerSGD has no such call: it compresses gradients). */
static sqz_status_t sqz_gpu_ef_allreduce(sqz_comm_t *comm, void *buf, size_t count,
                                         sqz_dtype_t dtype, sqz_op_t op, uint64_t key,
                                         void *stream)
{
    if (comm->gpu->psgd) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    return sqz_gpu_run(comm, NULL, buf, count, dtype, op, key, stream, NULL, SQZ_GPU_OPTIMIZER);
}

/* sqz_ef_forget on device buffers: the residuals under key restart from zero (the device is
 * synchronized first: calls in flight may still write them). */
static void sqz_gpu_ef_forget(sqz_comm_t *comm, uint64_t key)
{
    sqz_gpu_bufs_forget(comm, key);
}

sqz_status_t sqz_comm_create_nccl(sqz_ctx_t *ctx, void *nccl_comm, sqz_comm_t **out)
{
    if (NULL == out) {
        return SQZ_ERR_INVALID_PARAM;
    }
    *out = NULL;
    if (NULL == ctx || NULL == nccl_comm) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const sqz_nccl_api_t *api = sqz_nccl_resolve(1);
    if (NULL == api) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    return sqz_gpu_comm_create(ctx, api, (ncclComm_t)nccl_comm, out);
}

sqz_status_t sqz_gpu_comm_create(sqz_ctx_t *ctx, const sqz_nccl_api_t *api, ncclComm_t nc,
                                 sqz_comm_t **out)
{
    *out                   = NULL;
    struct sqz_gpu_comm *g = calloc(1, sizeof(*g));
    if (NULL == g) {
        return SQZ_ERR_NO_MEMORY;
    }
    g->nccl = api;
    g->nc   = nc;
    sqz_transport_t t;
    sqz_status_t    st = sqz_nccl_transport_create(api, g->nc, &t, &g->transport);
    if (SQZ_OK != st) {
        free(g);
        return st;
    }
    sqz_comm_t *comm = NULL;
    st               = sqz_comm_create(ctx, &t, &comm);
    if (SQZ_OK != st) {
        sqz_nccl_transport_destroy(g->transport);
        free(g);
        return st;
    }
    static const sqz_device_ops_t ops = {
        .destroy      = sqz_gpu_destroy,
        .state_save   = sqz_gpu_state_save,
        .state_load   = sqz_gpu_state_load,
        .ef_allreduce = sqz_gpu_ef_allreduce,
        .ef_forget    = sqz_gpu_ef_forget,
        .flush_stats  = sqz_gpu_flush_stats,
    };
    comm->gpu    = g;
    comm->device = &ops;
    sqz_gpu_bufs_init(comm);
    api->CommCuDevice(g->nc, &g->device);
    int saved = -1;
    cudaGetDevice(&saved);
    cudaSetDevice(g->device);
    cudaError_t ce = cudaMalloc((void **)&g->d_nonfinite, sizeof(*g->d_nonfinite));
    if (ce == cudaSuccess) {
        ce = cudaMemset(g->d_nonfinite, 0, sizeof(*g->d_nonfinite));
    }
    if (ce == cudaSuccess) {
        ce = cudaMalloc((void **)&g->d_agree, sizeof(*g->d_agree));
    }
    if (saved >= 0) {
        cudaSetDevice(saved);
    }
    if (ce != cudaSuccess) {
        SQZ_ERROR("device %d: %s", g->device, cudaGetErrorString(ce));
        sqz_comm_destroy(comm);
        return SQZ_ERR_CUDA;
    }
    pthread_mutex_lock(&ctx->lock);
    sqz_comm_t **grown = realloc(ctx->gpu_comms, (ctx->ngpu_comms + 1) * sizeof(*grown));
    if (grown) {
        ctx->gpu_comms                    = grown;
        ctx->gpu_comms[ctx->ngpu_comms++] = comm;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (NULL == grown) {
        sqz_comm_destroy(comm);
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_gpu_configure(comm);
    st = sqz_comm_check_settings(comm);
    if (SQZ_OK == st && g->enabled && !g->psgd) {
        st = sqz_gpu_hier_create(comm, api, nc, &g->hier);
    }
    if (SQZ_OK != st) {
        sqz_comm_destroy(comm);
        return st;
    }
    *out = comm;
    return SQZ_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* The compressed all-reduce                                                                    */
/* ------------------------------------------------------------------------------------------- */
static sqz_status_t sqz_gpu_dense(struct sqz_gpu_comm *g, const void *in, void *out, size_t count,
                                  sqz_dtype_t dtype, sqz_op_t op, cudaStream_t s)
{
    const ncclResult_t r = g->nccl->AllReduce(in, out, count, sqz_gpu_nccl_dtype(dtype),
                                              op == SQZ_OP_AVG ? ncclAvg : ncclSum, g->nc, s);
    if (r != ncclSuccess) {
        SQZ_ERROR("ncclAllReduce: %s", sqz_nccl_error(r));
        return SQZ_ERR_NCCL;
    }
    return SQZ_OK;
}

static sqz_status_t sqz_gpu_dense_rs(struct sqz_gpu_comm *g, const void *in, void *out,
                                     size_t recvcount, sqz_dtype_t dtype, sqz_op_t op,
                                     cudaStream_t s)
{
    const ncclResult_t r = g->nccl->ReduceScatter(in, out, recvcount, sqz_gpu_nccl_dtype(dtype),
                                                  op == SQZ_OP_AVG ? ncclAvg : ncclSum, g->nc, s);
    if (r != ncclSuccess) {
        SQZ_ERROR("ncclReduceScatter: %s", sqz_nccl_error(r));
        return SQZ_ERR_NCCL;
    }
    return SQZ_OK;
}

/* The dense collective a call falls back to: ncclReduceScatter into rs_out, else ncclAllReduce. */
static sqz_status_t sqz_gpu_dense_call(sqz_comm_t *comm, const void *in, void *recvbuf,
                                       void *rs_out, size_t count, sqz_dtype_t dtype, sqz_op_t op,
                                       cudaStream_t s)
{
    return rs_out ? sqz_gpu_dense_rs(comm->gpu, in, rs_out, count / (size_t)comm->nranks, dtype,
                                     op, s)
                  : sqz_gpu_dense(comm->gpu, in, recvbuf, count, dtype, op, s);
}

/* The facts of a call, what every rank knows of it (rs: a reduce-scatter; opt: the optimizer's
 * collective), for the policy's admission and plan, with this engine's codec's sizes in *d: the
 * scatter-reduce exchange (sqz_gpu_reduce_scatter.c) can carry a call when every chunk holds
 * elements and the method is not powersgd (the policy adds: nor does ef21 run it). */
static sqz_call_facts_t sqz_gpu_facts(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype,
                                      sqz_op_t op, int rs, int opt, uint64_t key,
                                      sqz_device_call_t *d)
{
    const struct sqz_gpu_comm *g = comm->gpu;
    *d = (sqz_device_call_t){.bytes = count * sqz_gpu_dtype_size(dtype), .rs = rs};
    if (g->enabled && !g->psgd) {
        d->sra_ok   = sqz_gpu_sra_applies(count, comm->nranks, rs);
        d->sra_sent = d->sra_ok ? (double)sqz_gpu_sra_sent(&g->params, &g->params_server, count,
                                                           comm->nranks, rs)
                                : 0.0;
        d->ag_sent = (double)(comm->nranks - 1) * (double)sqz_gpu_payload_bytes(&g->params, count);
    }
    return (sqz_call_facts_t){.count = count, .block = rs ? count / (size_t)comm->nranks : 0,
                              .dtype = dtype, .op = op, .memory = SQZ_MEMORY_DEVICE, .opt = opt,
                              .key = key, .device = d};
}

sqz_status_t sqz_allreduce_async(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                 size_t count, sqz_dtype_t dtype, sqz_op_t op, uint64_t key,
                                 void *stream)
{
    return sqz_gpu_run(comm, sendbuf, recvbuf, count, dtype, op, key, stream, NULL, 0);
}

sqz_status_t sqz_reduce_scatter_async(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                      size_t recvcount, sqz_dtype_t dtype, sqz_op_t op,
                                      uint64_t key, void *stream)
{
    if (NULL == comm || NULL == sendbuf || NULL == recvbuf) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_gpu_run(comm, sendbuf, NULL, recvcount * (size_t)comm->nranks, dtype, op, key,
                       stream, recvbuf, 0);
}

/* A reduce-scatter keeps this rank's block of the whole sum decoded into b->full. */
static sqz_status_t sqz_gpu_keep_block(const sqz_comm_t *comm, const sqz_gpu_buf_t *b,
                                       void *rs_out, size_t count, size_t esz, cudaStream_t s)
{
    const size_t blk = count / (size_t)comm->nranks * esz;
    return cudaMemcpyAsync(rs_out, (unsigned char *)b->full + (size_t)comm->rank * blk, blk,
                           cudaMemcpyDeviceToDevice, s) == cudaSuccess
               ? SQZ_OK
               : SQZ_ERR_CUDA;
}

/* One compressed call's facts (sqz_gpu_run, once its buffer state b is known); out is where the
 * sum is decoded (the output, or a reduce-scatter's scratch b->full). */
typedef struct sqz_gpu_call {
    sqz_comm_t      *comm;
    sqz_buf_state_t *bs;       /* the buffer's state in the store, b its device memory (ext) */
    sqz_gpu_buf_t   *b;
    const void      *in;       /* what the compressor reads: the caller's data, or DGC's message */
    sqz_dtype_t      in_dtype; /* dtype, or float32 for DGC's message */
    const void      *data;     /* the caller's data (the dense fallback sends it) */
    int              dgc;      /* in is DGC's message: commit the momentum after the exchange */
    int              damp;     /* classic residuals keep SQZ_EF_DECAY of themselves after it */
    void            *recvbuf, *rs_out, *out;
    size_t           count;
    sqz_dtype_t      dtype;
    sqz_op_t         op;
    uint64_t         key;      /* the buffer's: the API key or its call-sequence slot */
    uint64_t         seq;      /* the buffer's call counter (sqz_call_state) */
    cudaStream_t     s;
} sqz_gpu_call_t;

/* The call on the dense path, counted as `kind` ('w' warm-up, 'f' fallback). */
static sqz_status_t sqz_gpu_call_dense(const sqz_gpu_call_t *c, char kind, sqz_call_stats_t *cst)
{
    sqz_ctx_t *const ctx = c->comm->ctx;
    sqz_stats_record(ctx, ctx->method_index, kind, c->count * sqz_gpu_dtype_size(c->dtype), cst);
    return sqz_gpu_dense_call(c->comm, c->data, c->recvbuf, c->rs_out, c->count, c->dtype, c->op,
                              c->s);
}

/* PowerSGD: its dense start phase, then two native all-reduces per power iteration. */
static sqz_status_t sqz_gpu_run_psgd(const sqz_gpu_call_t *c, sqz_call_stats_t *cst)
{
    sqz_comm_t *const          comm  = c->comm;
    struct sqz_gpu_comm *const g     = comm->gpu;
    sqz_ctx_t *const           ctx   = comm->ctx;
    sqz_gpu_buf_t *const       b     = c->b;
    const size_t               esz   = sqz_gpu_dtype_size(c->dtype);
    const double               t0    = sqz_time_now();
    const float                scale = c->op == SQZ_OP_AVG ? 1.0f / (float)comm->nranks : 1.0f;
    const uint64_t             seq   = c->seq;
    if ((int64_t)seq < g->psgd_cfg.start && SQZ_GPU_PSGD_EF21 != g->psgd_cfg.ef) {
        return sqz_gpu_call_dense(c, 'w', cst);
    }
    sqz_status_t st = sqz_gpu_psgd_call(comm, &g->psgd_cfg, g->nccl, g->nc, &b->psgd, &b->adapt,
                                        seq, c->key, b->residual, c->in, c->out, c->count,
                                        c->dtype, scale, g->d_nonfinite, c->s, cst);
    if (SQZ_ERR_NO_MEMORY == st) {
        /* Agreed between the ranks (sqz_gpu_psgd_call): every rank is here. */
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "PowerSGD device memory for a %zu-element buffer (on "
                                   "some rank): such buffers go dense on every rank", c->count);
        sqz_gpu_psgd_free(b->psgd);
        b->psgd       = NULL;
        b->dense_only = 1;
        return sqz_gpu_call_dense(c, 'f', cst);
    }
    if (SQZ_OK == st && c->rs_out) {
        st = sqz_gpu_keep_block(comm, b, c->rs_out, c->count, esz, c->s);
    }
    if (SQZ_OK != st) {
        SQZ_ERROR("GPU PowerSGD failed: %s", sqz_status_string(st));
        return st;
    }
    cst->t_compress = sqz_time_now() - t0;
    /* (ef21's start phase ran through the same call, every layer exact: warm-up.) */
    sqz_stats_record(ctx, ctx->method_index, (int64_t)seq < g->psgd_cfg.start ? 'w' : 'c',
                     c->count * esz, cst);
    return SQZ_OK;
}

/* EF21 (the buffer's residual holds -g_i, so compress sent C(in - g_i) and left in - g_i - d_i):
 * the decoded messages' sum goes into b->decoded, then, unless some rank was not finite,
 * g_i += d_i (residual -= in), G += the sum, out = G; else out = NaN and nothing changes (the
 * restore before this put the residual back).  EControl the same way, with its error term
 * (b->ec_err). */
static sqz_status_t sqz_gpu_ef21_update(const sqz_gpu_call_t *c, float scale)
{
    struct sqz_gpu_comm *const g   = c->comm->gpu;
    sqz_gpu_buf_t *const       b   = c->b;
    uint32_t *const            bad = (uint32_t *)(b->decoded + c->count);
    sqz_status_t st = sqz_gpu_flag_any(b->payloads, c->comm->nranks, b->pbytes, bad, NULL, c->s);
    if (SQZ_OK == st) {
        st = sqz_gpu_decode_sum(&g->params, b->payloads, c->comm->nranks, c->count, scale,
                                b->decoded, SQZ_DTYPE_FLOAT32, b->workspace, c->s);
    }
    if (SQZ_OK == st) {
        st = sqz_gpu_ef21_finish(bad, b->residual, b->ec_err, (float)c->comm->ctx->p.econtrol_eta,
                                 c->in, b->shared, b->decoded, c->out, c->count, c->dtype, c->s);
    }
    return st;
}

/* Classic error feedback after the all-gather exchange, as the host's ef_close: the call's
 * verdict on the device (some rank not finite: the restore gave every residual back and nothing
 * else changes), DGC's commit of the momentum, then the damping (SQZ_EF_DECAY). */
static sqz_status_t sqz_gpu_classic_close(const sqz_gpu_call_t *c)
{
    const sqz_ctx_t *const ctx = c->comm->ctx;
    sqz_gpu_buf_t *const   b   = c->b;
    uint32_t *const bad = c->dgc ? sqz_gpu_dgc_verdict(b->dgc)
                                 : sqz_gpu_buf_verdict(b, c->comm->nranks);
    sqz_status_t st = sqz_gpu_flag_any(b->payloads, c->comm->nranks, b->pbytes, bad, NULL, c->s);
    if (SQZ_OK == st && c->dgc) {
        st = sqz_gpu_dgc_end(b->dgc, &ctx->p, bad, b->residual, c->s);
    }
    if (SQZ_OK == st && c->damp) {
        st = sqz_gpu_damp(bad, b->residual, c->count, ctx->ef_decay, c->s);
    }
    return st;
}

/* The other methods: compress with the residual, all-gather the payloads, restore what needs it,
 * decode and sum every payload. */
static sqz_status_t sqz_gpu_run_exchange(const sqz_gpu_call_t *c, sqz_call_stats_t *cst)
{
    sqz_comm_t *const          comm = c->comm;
    struct sqz_gpu_comm *const g    = comm->gpu;
    sqz_ctx_t *const           ctx  = comm->ctx;
    sqz_gpu_buf_t *const       b    = c->b;
    const size_t               esz  = sqz_gpu_dtype_size(c->dtype);
    const double               t0   = sqz_time_now();
    /* (randk draws its positions from the key: the same on every rank) */
    const int      who  = sqz_gpu_shared_key(&g->params) ? 0 : comm->rank;
    const uint32_t rkey = (uint32_t)sqz_pu_seed_key((uint64_t)ctx->p.seed ^ c->key, who, c->seq, 0);
    unsigned char *mine = (unsigned char *)b->payloads + (size_t)comm->rank * b->pbytes;
    sqz_status_t st = b->ec_err ? sqz_gpu_econtrol_begin(b->residual, b->ec_err,
                                                         (float)ctx->p.econtrol_eta, c->count, c->s)
                                : SQZ_OK;
    if (SQZ_OK == st) {
        st = sqz_gpu_compress(&g->params, c->in, c->in_dtype, b->residual, c->count, rkey, mine,
                              b->workspace, c->s);
    }
    if (SQZ_OK != st) {
        /* Nothing of this call reached the network: the dense all-reduce is still exact (a failed
         * launch leaves the residual as it was, or the device is lost and everything fails). */
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "GPU compress failed (%s): dense fallback",
                     sqz_status_string(st));
        return sqz_gpu_call_dense(c, 'f', cst);
    }
    const ncclResult_t r = g->nccl->AllGather(mine, b->payloads, b->pbytes, ncclUint8, g->nc,
                                              c->s);
    if (r != ncclSuccess) {
        SQZ_ERROR("ncclAllGather: %s", sqz_nccl_error(r));
        return SQZ_ERR_NCCL;
    }
    const float scale = c->op == SQZ_OP_AVG ? 1.0f / (float)comm->nranks : 1.0f;
    st = sqz_gpu_restore(&g->params, b->payloads, comm->nranks, comm->rank, c->in, c->in_dtype,
                         b->residual, c->count, g->d_nonfinite, b->workspace, c->s);
    if (SQZ_OK == st && b->shared) {
        st = sqz_gpu_ef21_update(c, scale);
    } else if (SQZ_OK == st) {
        st = sqz_gpu_decode_sum(&g->params, b->payloads, comm->nranks, c->count, scale, c->out,
                                c->dtype, b->workspace, c->s);
    }
    if (SQZ_OK == st && c->rs_out) {
        st = sqz_gpu_keep_block(comm, b, c->rs_out, c->count, esz, c->s);
    }
    if (SQZ_OK == st && (c->dgc || c->damp)) {
        st = sqz_gpu_classic_close(c);
    }
    if (SQZ_OK != st) {
        SQZ_ERROR("GPU decode failed: %s", sqz_status_string(st));
        return st;
    }
    cst->bytes_wire = b->pbytes;
    cst->bytes_sent = b->pbytes * (size_t)(comm->nranks - 1);
    cst->t_compress = sqz_time_now() - t0; /* host time to enqueue: the device time is async */
    sqz_stats_record(ctx, ctx->method_index, 'c', c->count * esz, cst);
    return SQZ_OK;
}

/* The scatter-reduce exchange (sqz_gpu_reduce_scatter.c). */
static sqz_status_t sqz_gpu_run_sra(const sqz_gpu_call_t *c, sqz_call_stats_t *cst)
{
    sqz_comm_t *const          comm = c->comm;
    struct sqz_gpu_comm *const g    = comm->gpu;
    sqz_ctx_t *const           ctx  = comm->ctx;
    const double               t0   = sqz_time_now();
    const sqz_gpu_sra_call_t   x    = {
             .nccl            = g->nccl,
             .nc              = g->nc,
             .in              = c->in,
             .in_dtype        = c->in_dtype,
             .residual        = c->b->residual,
             .out             = c->rs_out ? c->rs_out : c->recvbuf,
             .scale           = c->op == SQZ_OP_AVG ? 1.0f / (float)comm->nranks : 1.0f,
             .seed            = (uint64_t)ctx->p.seed ^ c->key,
             .seq             = c->seq,
             .nonfinite_calls = g->d_nonfinite,
             .s               = c->s,
    };
    cst->algo       = SQZ_ALGO_REDUCE_SCATTER;
    sqz_status_t st = sqz_gpu_sra_run(c->b->sra, &x, cst);
    if (SQZ_OK == st && c->dgc) {
        st = sqz_gpu_dgc_end(c->b->dgc, &ctx->p, sqz_gpu_sra_bad(c->b->sra), c->b->residual,
                             c->s);
    }
    if (SQZ_OK == st && c->damp) {
        st = sqz_gpu_sra_damp(c->b->sra, &x, ctx->ef_decay);
    }
    if (SQZ_OK != st) {
        SQZ_ERROR("GPU scatter-reduce exchange failed: %s", sqz_status_string(st));
        return st;
    }
    cst->t_compress = sqz_time_now() - t0; /* host time to enqueue */
    sqz_stats_record(ctx, ctx->method_index, 'c', c->count * sqz_gpu_dtype_size(c->dtype), cst);
    return SQZ_OK;
}

/* Whether the call is compressed at all: the policy's answer (sqz_policy_admit; rs: a
 * reduce-scatter; opt: the optimizer-side collective, which ignores SQZ_MIN_BYTES), and what only
 * this engine knows, the same on every rank: CUDA graph capture, its codec's sizes. */
static int sqz_gpu_eligible(sqz_comm_t *comm, const sqz_call_facts_t *f, cudaStream_t s)
{
    const struct sqz_gpu_comm *g = comm->gpu;
    if (!g->enabled || !sqz_policy_admit(comm, f)) {
        return 0;
    }
    /* (a plugin's device operations decline a size with payload_bytes 0: compressor_v2.h) */
    if (!g->psgd && 0 == sqz_gpu_payload_bytes(&g->params, f->count)) {
        return 0;
    }
    /* Under CUDA graph capture the workspace cannot be allocated and the call could not be
     * replayed with fresh randomness: pass through (every rank captures the same calls). */
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(s, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

/* A call through the hierarchy (SQZ_HIER): its inter-host engine counts the compressed part; a
 * reduce-scatter whose column scratch some rank could not allocate goes dense on every rank. */
static sqz_status_t sqz_gpu_run_hier(sqz_comm_t *comm, const void *in, void *recvbuf,
                                     void *rs_out, size_t count, sqz_dtype_t dtype, sqz_op_t op,
                                     uint64_t key, cudaStream_t s)
{
    sqz_gpu_hier_t *const h = comm->gpu->hier;
    if (NULL == rs_out) {
        return sqz_gpu_hier_allreduce(h, in, recvbuf, count, dtype, op, key, s);
    }
    sqz_status_t st = sqz_gpu_hier_reduce_scatter(h, comm, in, rs_out,
                                                  count / (size_t)comm->nranks, dtype, op, key, s);
    if (SQZ_ERR_NOT_SUPPORTED == st) {
        sqz_ctx_t *const ctx = comm->ctx;
        sqz_call_stats_t cst = {.algo = SQZ_ALGO_NCCL_ALLGATHER};
        sqz_stats_record(ctx, ctx->method_index, 'f', count * sqz_gpu_dtype_size(dtype), &cst);
        st = sqz_gpu_dense_call(comm, in, recvbuf, rs_out, count, dtype, op, s);
    }
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * The device memory backend of the runner (sqz_runner.h), comm->lock held, the device current
 * ------------------------------------------------------------------------------------------- */

/* The buffer's state from the communicator's store (sqz_call_state: by key or call sequence; a
 * new one allocated on every rank through sqz_gpu_buf_ready).  No device memory: no state. */
static sqz_status_t sqz_gpu_step_state(void *arg, const sqz_plan_t *plan, sqz_buf_state_t **bs,
                                       uint64_t *seq)
{
    sqz_gpu_call_t *const      call = arg;
    sqz_comm_t *const          comm = call->comm;
    struct sqz_gpu_comm *const g    = comm->gpu;
    const int                  rs   = NULL != call->rs_out;
    const sqz_gpu_need_t       need = {.comm = comm, .count = call->count, .dtype = call->dtype,
                                       .rs = rs, .ef = g->psgd ? g->ef : SQZ_EF_NONE != plan->ef,
                                       .plan = plan, .s = call->s};
    /* (PowerSGD's device state and ef21's estimators are the same on every rank: nothing of
     * them follows an address) */
    const sqz_state_query_t q = {.key = call->key, .count = call->count,
                                 .sig = sqz_identity_sig(call->count, call->dtype, rs),
                                 .addr = rs ? call->rs_out : call->recvbuf,
                                 .shared = g->psgd || g->ef21, .ready = sqz_gpu_buf_ready,
                                 .ready_arg = (void *)&need};
    g->stream             = call->s;
    const sqz_status_t st = sqz_call_state(comm, &q, bs, &call->seq);
    g->stream             = 0;
    if (SQZ_OK != st) {
        SQZ_ERROR("the ranks could not agree on a buffer's identity or device memory");
        return st;
    }
    call->bs  = *bs;
    call->b   = *bs ? (*bs)->ext : NULL;
    call->key = *bs ? (*bs)->key : call->key;
    *seq      = call->seq;
    *bs       = call->b ? *bs : NULL;
    return SQZ_OK;
}

/* The warm-up (PowerSGD's ef21 runs its own: those calls set its estimators), then the buffer's
 * reasons to go dense, the same on every rank: some rank could not allocate it, or it keeps the
 * exchange and error feedback of its first compressed call and this call is of the other kind
 * (a scatter-reduce buffer's other collective; ef21's shared estimator met by a call of classic
 * error feedback, or the reverse). */
static int sqz_gpu_step_path(void *arg, const sqz_plan_t *plan)
{
    const sqz_gpu_call_t *const      call = arg;
    const struct sqz_gpu_comm *const g    = call->comm->gpu;
    const sqz_gpu_buf_t *const       b    = call->b;
    if (plan->warm && !(g->psgd && SQZ_GPU_PSGD_EF21 == g->psgd_cfg.ef)) {
        return SQZ_RUN_WARMUP;
    }
    const int ef21  = !g->psgd && plan->transform;
    const int other = (b->sra && sqz_gpu_sra_is_rs(b->sra) != (NULL != call->rs_out)) ||
                      (!g->psgd && (NULL != b->shared) != ef21);
    return b->dense_only || other ? SQZ_RUN_FALLBACK : SQZ_RUN_COMPRESS;
}

static sqz_status_t sqz_gpu_step_dense(void *arg, const sqz_plan_t *plan, int path)
{
    sqz_call_stats_t cst = {.algo = SQZ_ALGO_NCCL_ALLGATHER};
    (void)plan;
    return sqz_gpu_call_dense(arg, SQZ_RUN_WARMUP == path ? 'w' : 'f', &cst);
}

/* Where the sum is decoded; DGC's message (the compressor sees it, fp32; the momentum is
 * committed after the exchange, unless some rank was not finite) and the damping, where the plan
 * and the buffer have them; a compact residual (SQZ_EF_STORAGE) expanded for the call.  (A
 * failure here is the device's, never this rank's memory alone.) */
static sqz_status_t sqz_gpu_step_open(void *arg, const sqz_plan_t *plan)
{
    sqz_gpu_call_t *const      call = arg;
    sqz_comm_t *const          comm = call->comm;
    struct sqz_gpu_comm *const g    = comm->gpu;
    sqz_gpu_buf_t *const       b    = call->b;
    call->out                       = call->rs_out ? b->full : call->recvbuf;
    if (b->dgc && plan->dgc) {
        const float       *msg = NULL;
        const sqz_status_t st  = sqz_gpu_dgc_begin(b->dgc, &comm->ctx->p, comm->nranks, call->in,
                                                   call->dtype, call->s, &msg);
        if (SQZ_OK != st) {
            SQZ_ERROR("GPU DGC message: %s", sqz_status_string(st));
            return SQZ_ERR_NO_MEMORY == st ? SQZ_ERR_CUDA : st;
        }
        call->in = msg, call->in_dtype = SQZ_DTYPE_FLOAT32, call->dgc = 1;
    }
    call->damp = plan->damp && !g->psgd && (b->residual || b->compact);
    if (b->compact) {
        b->residual = sqz_gpu_efstore_open(&g->efwork, g->ef_storage, b->compact, call->count,
                                           call->s);
        if (NULL == b->residual) {
            SQZ_ERROR("GPU residual storage: the expand kernel failed");
            return SQZ_ERR_CUDA;
        }
    }
    return SQZ_OK;
}

/* The buffer's exchange: PowerSGD's, the scatter-reduce or the all-gather (the plan's at the
 * buffer's first call). */
static sqz_status_t sqz_gpu_step_exchange(void *arg, const sqz_plan_t *plan)
{
    const sqz_gpu_call_t *const call = arg;
    sqz_call_stats_t            cst  = {.algo = SQZ_ALGO_NCCL_ALLGATHER};
    (void)plan;
    return call->comm->gpu->psgd ? sqz_gpu_run_psgd(call, &cst)
           : call->b->sra        ? sqz_gpu_run_sra(call, &cst)
                                 : sqz_gpu_run_exchange(call, &cst);
}

/* The exchanges close their error feedback on the device (the verdict decides there); here a
 * compact residual is stored back and the store counts the buffer's bytes (PowerSGD's plan grows
 * at its first calls). */
static sqz_status_t sqz_gpu_step_close(void *arg, const sqz_plan_t *plan, sqz_status_t st)
{
    sqz_gpu_call_t *const      call = arg;
    struct sqz_gpu_comm *const g    = call->comm->gpu;
    sqz_gpu_buf_t *const       b    = call->b;
    (void)plan;
    if (b->compact) {
        const sqz_status_t cs =
            sqz_gpu_efstore_close(&g->efwork, g->ef_storage, b->compact, call->count, call->s);
        b->residual = NULL;
        st          = SQZ_OK == st ? cs : st;
    }
    sqz_state_set_ext(&call->comm->store, call->bs, b, sqz_gpu_buf_bytes(b));
    return st;
}

static const sqz_run_backend_t sqz_gpu_backend = {
    .state = sqz_gpu_step_state, .path = sqz_gpu_step_path, .dense = sqz_gpu_step_dense,
    .open = sqz_gpu_step_open, .exchange = sqz_gpu_step_exchange, .close = sqz_gpu_step_close,
};

static sqz_status_t sqz_gpu_run(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                size_t count, sqz_dtype_t dtype, sqz_op_t op, uint64_t key,
                                void *stream, void *rs_out, unsigned flags)
{
    if (NULL == comm || NULL == comm->gpu || (NULL == recvbuf && NULL == rs_out) ||
        (dtype != SQZ_DTYPE_FLOAT32 && dtype != SQZ_DTYPE_FLOAT16 &&
         dtype != SQZ_DTYPE_BFLOAT16) ||
        (op != SQZ_OP_SUM && op != SQZ_OP_AVG)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    struct sqz_gpu_comm *g   = comm->gpu;
    sqz_ctx_t           *ctx = comm->ctx;
    cudaStream_t         s   = (cudaStream_t)stream;
    const void          *in  = sendbuf ? sendbuf : recvbuf;
    const size_t         esz = sqz_gpu_dtype_size(dtype);
    if (count == 0) {
        return SQZ_OK;
    }
    const int opt = 0 != (flags & SQZ_GPU_OPTIMIZER);
    sqz_device_call_t      dev;
    const sqz_call_facts_t facts =
        sqz_gpu_facts(comm, count, dtype, op, NULL != rs_out, opt, key, &dev);
    if (!sqz_gpu_eligible(comm, &facts, s)) {
        sqz_comm_count_passthrough(comm);
        if (NULL != ctx->device_declined && !g->enabled) {
            __atomic_fetch_add(&ctx->calls_declined, 1, __ATOMIC_RELAXED);
        }
        return sqz_gpu_dense_call(comm, in, recvbuf, rs_out, count, dtype, op, s);
    }
    const int hier = g->hier && !opt &&
                     (NULL == rs_out || sqz_gpu_hier_takes_reduce_scatter(g->hier));
    /* This call's plan, the policy's as on the host: EF21 (and econtrol) transform all-reduces
     * only, a reduce-scatter and the optimizer's collective keep classic error feedback (and
     * with it the scatter-reduce's first phase).  (PowerSGD: its own error feedback.) */
    sqz_plan_t plan = sqz_policy_plan(comm, &facts);
    if (!hier && SQZ_ALGO_DENSE_SWITCH == plan.algo) {
        /* (the residual, if any, waits for the next compressed call) */
        /* (no prediction in the stats: the call is enqueued, its exchange time is not seen
         * here to set beside it) */
        sqz_call_stats_t cst = {.algo = SQZ_ALGO_DENSE_SWITCH, .bytes_wire = count * esz};
        cst.bytes_sent =
            (size_t)sqz_policy_dense_bytes(comm, (double)(count * esz), rs_out != NULL);
        sqz_stats_record(ctx, ctx->method_index, 'c', count * esz, &cst);
        return sqz_gpu_dense_call(comm, in, recvbuf, rs_out, count, dtype, op, s);
    }
    pthread_mutex_lock(&comm->lock);
    int saved = -1;
    cudaGetDevice(&saved);
    if (saved != g->device) {
        cudaSetDevice(g->device);
    }
    sqz_status_t st;
    if (hier) {
        st = sqz_gpu_run_hier(comm, in, recvbuf, rs_out, count, dtype, op, key, s);
    } else {
        sqz_gpu_call_t call = {.comm = comm, .in = in, .in_dtype = dtype, .data = in,
                               .recvbuf = recvbuf, .rs_out = rs_out, .count = count,
                               .dtype = dtype, .op = op, .key = key, .s = s};
        st = sqz_run_call(comm, &sqz_gpu_backend, &call, &plan, opt);
    }
    sqz_gpu_account(comm);
    if (saved >= 0 && saved != g->device) {
        cudaSetDevice(saved);
    }
    pthread_mutex_unlock(&comm->lock);
    return st;
}

/* ------------------------------------------------------------------------------------------- */
/* NCCL communicators for bindings                                                              */
/* ------------------------------------------------------------------------------------------- */
sqz_status_t sqz_nccl_get_unique_id(void *id, size_t len)
{
    const sqz_nccl_api_t *api = sqz_nccl_resolve(1);
    if (NULL == id || len < sizeof(ncclUniqueId)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (NULL == api || NULL == api->GetUniqueId) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    const ncclResult_t r = api->GetUniqueId((ncclUniqueId *)id);
    if (r != ncclSuccess) {
        SQZ_ERROR("ncclGetUniqueId: %s", sqz_nccl_error(r));
        return SQZ_ERR_NCCL;
    }
    return SQZ_OK;
}

sqz_status_t sqz_nccl_comm_init(int nranks, const void *id, size_t len, int rank, void **out)
{
    const sqz_nccl_api_t *api = sqz_nccl_resolve(1);
    if (NULL == out || NULL == id || len < sizeof(ncclUniqueId) || nranks < 1 || rank < 0 ||
        rank >= nranks) {
        return SQZ_ERR_INVALID_PARAM;
    }
    *out = NULL;
    if (NULL == api || NULL == api->CommInitRank) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof(uid));
    ncclComm_t         c = NULL;
    const ncclResult_t r = api->CommInitRank(&c, nranks, uid, rank);
    if (r != ncclSuccess) {
        SQZ_ERROR("ncclCommInitRank: %s", sqz_nccl_error(r));
        return SQZ_ERR_NCCL;
    }
    *out = c;
    return SQZ_OK;
}

void sqz_nccl_comm_destroy(void *nccl_comm)
{
    const sqz_nccl_api_t *api = sqz_nccl_resolve(0);
    if (nccl_comm && api && api->CommDestroy) {
        api->CommDestroy((ncclComm_t)nccl_comm);
    }
}
