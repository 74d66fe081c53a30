/*
 * The device buffers of a GPU communicator: the device backend of its state store (see
 * sqz_gpu_comm.h).  The store decides which buffers exist, the same on every rank (names from
 * keys or the call sequence, eviction from counts every rank shares); here each buffer's device
 * memory is allocated at its first compressed call on every rank, with one agreement, and its
 * error feedback is zeroed, taken over from an heir (a slot that last used the same address on
 * this rank), carried between layouts and checkpointed.
 *
 * Stream order: what the hooks enqueue goes on the stream of the call in progress (g->stream),
 * as the call's own kernels do; freeing memory first waits for the device (a call in flight on
 * another stream may still use it).
 */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/sqz_gpu_comm.h"
#include "sqz_log.h"

/* One device buffer in a checkpoint: count floats of residual follow when bit 0 of has_residual
 * is set, then count floats of the ef21 shared estimator when bit 1 is, then count floats of
 * DGC's momentum when bit 2 is, then count floats of EControl's error when bit 3 is. */
typedef struct sqz_gpu_saved {
    uint64_t key, count, calls;
    int32_t  dtype, has_residual;
} sqz_gpu_saved_t;

int (*sqz_gpu_alloc_fails)(int rank, size_t count);

int sqz_gpu_comm_agree(sqz_comm_t *comm, int ok, cudaStream_t s)
{
    struct sqz_gpu_comm *g = comm->gpu;
    uint32_t             v = ok > 0 ? (uint32_t)ok : 0u;
    if (cudaMemcpyAsync(g->d_agree, &v, sizeof v, cudaMemcpyHostToDevice, s) != cudaSuccess ||
        g->nccl->AllReduce(g->d_agree, g->d_agree, 1, ncclUint32, ncclMin, g->nc, s) !=
            ncclSuccess ||
        cudaMemcpyAsync(&v, g->d_agree, sizeof v, cudaMemcpyDeviceToHost, s) != cudaSuccess ||
        cudaStreamSynchronize(s) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return (int)v;
}

/* ------------------------------------------------------------------------------------------- */
/* Memory                                                                                       */
/* ------------------------------------------------------------------------------------------- */
/* Frees b's device memory (b itself stays). */
static void sqz_gpu_buf_free(sqz_gpu_buf_t *b)
{
    sqz_gpu_psgd_free(b->psgd);
    sqz_gpu_sra_free(b->sra);
    free(b->adapt.levels);
    if (NULL == b->compact) {
        cudaFree(b->residual); /* (else it is the communicator's working area) */
    }
    cudaFree(b->compact);
    cudaFree(b->payloads);
    cudaFree(b->workspace);
    cudaFree(b->full);
    cudaFree(b->shared);
    cudaFree(b->decoded);
    cudaFree(b->ec_err);
    sqz_gpu_dgc_free(b->dgc);
    const sqz_gpu_buf_t empty = {.count = b->count, .dtype = b->dtype,
                                 .dense_only = b->dense_only};
    *b = empty;
}

size_t sqz_gpu_buf_bytes(const sqz_gpu_buf_t *b)
{
    return b->bytes + sqz_gpu_psgd_bytes(b->psgd, b->count, 0);
}

/* The exchange's memory of a new buffer: the scatter-reduce's state, or the payload array (N
 * slots), the codec's workspace and a reduce-scatter's whole sum. */
static cudaError_t sqz_gpu_buf_alloc_exchange(sqz_comm_t *comm, sqz_gpu_buf_t *b,
                                              const sqz_gpu_need_t *nd)
{
    const struct sqz_gpu_comm *g    = comm->gpu;
    const size_t               n    = nd->count;
    const size_t               full = nd->rs ? n * sqz_gpu_dtype_size(nd->dtype) : 0;
    if (SQZ_ALGO_REDUCE_SCATTER == nd->plan->algo) {
        b->bytes = sqz_gpu_sra_bytes(&g->params, &g->params_server, n, nd->dtype, comm->nranks,
                                     nd->rs, nd->ef);
        return sqz_gpu_sra_create(&g->params, &g->params_server, n, nd->dtype, comm->nranks,
                                  comm->rank, nd->rs, nd->ef, nd->s, &b->sra) == SQZ_OK
                   ? cudaSuccess
                   : cudaErrorMemoryAllocation;
    }
    /* (the payload array, then 16 bytes: the call's verdict word, sqz_gpu_buf_verdict) */
    const size_t wb = sqz_gpu_workspace_bytes(&g->params, n, nd->dtype);
    b->pbytes       = sqz_gpu_payload_bytes(&g->params, n);
    b->bytes        = b->pbytes * (size_t)comm->nranks + 16 + wb + full;
    cudaError_t ce  = cudaMalloc(&b->payloads, b->pbytes * (size_t)comm->nranks + 16);
    if (ce == cudaSuccess) {
        ce = cudaMalloc(&b->workspace, wb ? wb : 16);
    }
    return ce == cudaSuccess && full ? cudaMalloc(&b->full, full) : ce;
}

/* count floats at *p, zeroed on stream s. */
static cudaError_t sqz_gpu_zeroed(float **p, size_t count, cudaStream_t s)
{
    const cudaError_t ce = cudaMalloc((void **)p, count * sizeof(float));
    return ce == cudaSuccess ? cudaMemsetAsync(*p, 0, count * sizeof(float), s) : ce;
}

/* Error feedback's memory of a new buffer: the classic residual (fp32, or compact with the
 * communicator's working area), ef21's estimators (EControl's error too), DGC's momentum. */
static cudaError_t sqz_gpu_buf_alloc_ef(sqz_comm_t *comm, sqz_gpu_buf_t *b,
                                        const sqz_gpu_need_t *nd)
{
    struct sqz_gpu_comm *g    = comm->gpu;
    const size_t         n    = nd->count;
    const int            ef21 = !g->psgd && nd->plan->transform;
    cudaError_t          ce   = cudaSuccess;
    if (nd->ef && !ef21 && g->ef_storage != 0) {
        const size_t cb = sqz_gpu_res_compact_bytes(g->ef_storage, n);
        b->bytes += cb;
        ce = cudaMalloc(&b->compact, cb);
        ce = ce == cudaSuccess ? cudaMemsetAsync(b->compact, 0, cb, nd->s) : ce;
        ce = ce == cudaSuccess ? sqz_gpu_efwork_reserve(&g->efwork, n) : ce;
    } else if (nd->ef) {
        b->bytes += n * sizeof(float);
        ce = sqz_gpu_zeroed(&b->residual, n, nd->s);
    }
    if (ce == cudaSuccess && ef21) {
        b->bytes += (g->econtrol ? 3 : 2) * n * sizeof(float) + 16;
        ce = sqz_gpu_zeroed(&b->shared, n, nd->s);
        ce = ce == cudaSuccess ? cudaMalloc((void **)&b->decoded, n * sizeof(float) + 16) : ce;
        ce = ce == cudaSuccess && g->econtrol ? sqz_gpu_zeroed(&b->ec_err, n, nd->s) : ce;
    }
    if (ce == cudaSuccess && g->dgc && nd->ef && !ef21) {
        b->bytes += sqz_gpu_dgc_bytes(&comm->ctx->p, n);
        ce = SQZ_OK == sqz_gpu_dgc_create(&comm->ctx->p, n, nd->s, &b->dgc)
                 ? cudaSuccess
                 : cudaErrorMemoryAllocation;
    }
    return ce;
}

/* b goes dense-only: its memory freed, the buffer kept so that no rank tries again alone. */
static void sqz_gpu_buf_dense_only(sqz_gpu_buf_t *b)
{
    SQZ_LOG_ONCE(SQZ_LOG_WARN, "a rank could not allocate device memory for a %zu-element "
                               "buffer: that buffer goes dense on every rank",
                 b->count);
    sqz_gpu_buf_free(b);
    b->dense_only = 1;
}

/* After an allocation event of b (every rank has one at the same call): 1 when every rank
 * allocated, else 0 and b dense-only on every rank; -1 when the agreement itself failed. */
static int sqz_gpu_buf_agree(sqz_comm_t *comm, sqz_gpu_buf_t *b, int ok, cudaStream_t s)
{
    const int all = sqz_gpu_comm_agree(comm, ok, s);
    if (0 == all) {
        sqz_gpu_buf_dense_only(b);
    }
    return all;
}

/* ------------------------------------------------------------------------------------------- */
/* The store's hooks                                                                            */
/* ------------------------------------------------------------------------------------------- */
static void sqz_gpu_buf_release(void *arg, void *ext)
{
    const sqz_comm_t *comm = arg;
    if (!comm->gpu_abandon) { /* (after an abort the device is not touched: host memory only) */
        cudaSetDevice(comm->gpu->device);
        cudaDeviceSynchronize(); /* (calls in flight may still use its memory) */
        sqz_gpu_buf_free(ext);
    }
    free(ext);
}

/* b's classic residual back to zero (stream s; fp32 or compact: zero bits are zero in both). */
static void sqz_gpu_zero_residual(const struct sqz_gpu_comm *g, sqz_gpu_buf_t *b, cudaStream_t s)
{
    if (b->compact) {
        cudaMemsetAsync(b->compact, 0, sqz_gpu_res_compact_bytes(g->ef_storage, b->count), s);
    } else if (b->residual) {
        cudaMemsetAsync(b->residual, 0, b->count * sizeof(float), s);
    }
}

static int sqz_gpu_buf_forget_local(void *arg, void *ext)
{
    const struct sqz_gpu_comm *g   = ((const sqz_comm_t *)arg)->gpu;
    sqz_gpu_buf_t *const       b   = ext;
    const int                  had = NULL != b->residual || NULL != b->compact;
    if (NULL != b->shared) {
        return 0; /* (ef21's residual holds -g_i, whose sum over the ranks is the shared G) */
    }
    sqz_gpu_zero_residual(g, b, g->stream);
    sqz_gpu_dgc_forget(b->dgc, g->stream);
    return had;
}

/* n bytes from `from` to `to`, then zero in `from` (stream s). */
static void sqz_gpu_move(void *to, void *from, size_t n, cudaStream_t s)
{
    cudaMemcpyAsync(to, from, n, cudaMemcpyDeviceToDevice, s);
    cudaMemsetAsync(from, 0, n, s);
}

/* An heir's takeover: the classic residual, DGC's momentum and the scatter-reduce's server
 * residual move, as on host buffers (sqz_state_inherit).  Called for buffers without state shared
 * by the ranks (sqz_state_query_t). */
static int sqz_gpu_buf_inherit(void *arg, void *to_ext, void *from_ext)
{
    const struct sqz_gpu_comm *g    = ((const sqz_comm_t *)arg)->gpu;
    sqz_gpu_buf_t *const       to   = to_ext;
    sqz_gpu_buf_t *const       from = from_ext;
    if (to->dense_only || from->dense_only || to->dtype != from->dtype) {
        return 0;
    }
    int moved = 0;
    if (to->compact && from->compact) {
        sqz_gpu_move(to->compact, from->compact,
                     sqz_gpu_res_compact_bytes(g->ef_storage, to->count), g->stream);
        moved = 1;
    } else if (to->residual && from->residual) {
        sqz_gpu_move(to->residual, from->residual, to->count * sizeof(float), g->stream);
        moved = 1;
    }
    float *const u_to = sqz_gpu_dgc_momentum(to->dgc), *const u_from = sqz_gpu_dgc_momentum(from->dgc);
    if (u_to && u_from) {
        sqz_gpu_move(u_to, u_from, to->count * sizeof(float), g->stream);
    }
    /* The scatter-reduce's server residual: this rank's reduced chunk, the same chunk of the
     * same count in both. */
    size_t       n_to, n_from;
    float *const s_to = sqz_gpu_sra_server(to->sra, &n_to);
    float *const s_from = sqz_gpu_sra_server(from->sra, &n_from);
    if (s_to && s_from && n_to == n_from) {
        sqz_gpu_move(s_to, s_from, n_to * sizeof(float), g->stream);
        moved = 1;
    }
    return moved;
}

void sqz_gpu_bufs_init(sqz_comm_t *comm)
{
    struct sqz_gpu_comm *g = comm->gpu;
    g->buf_ops             = (sqz_state_ext_ops_t){.free         = sqz_gpu_buf_release,
                                                   .forget_local = sqz_gpu_buf_forget_local,
                                                   .inherit      = sqz_gpu_buf_inherit,
                                                   .arg          = comm};
    comm->store.ext_ops    = &g->buf_ops;
}

/* ------------------------------------------------------------------------------------------- */
/* A new buffer                                                                                 */
/* ------------------------------------------------------------------------------------------- */
typedef struct sqz_gpu_carry {
    const sqz_comm_t *comm;
    sqz_gpu_buf_t    *dst;
    cudaStream_t      s;
} sqz_gpu_carry_t;

/* sqz_carry_fn of the GPU engine: stream-ordered device copies of a layer's residual (and ef21's
 * estimator, EControl's error: the same layers on every rank, so G stays shared). */
static void sqz_gpu_carry_residual(void *arg, uint64_t src_key, size_t src_count,
                                   size_t src_offset, size_t dst_offset, size_t len)
{
    const sqz_gpu_carry_t *c  = arg;
    const sqz_buf_state_t *bs = sqz_state_find(&c->comm->store, src_key, src_count);
    const sqz_gpu_buf_t   *b  = bs ? bs->ext : NULL;
    if (NULL == b || NULL == b->residual) {
        return;
    }
    float *const to[3]   = {c->dst->residual, c->dst->shared, c->dst->ec_err};
    float *const from[3] = {b->residual, b->shared, b->ec_err};
    for (int a = 0; a < 3; a++) {
        if (to[a] && from[a]) {
            sqz_gpu_move(to[a] + dst_offset, from[a] + src_offset, len * sizeof(float), c->s);
        }
    }
}

/* A buffer's arrays in a checkpoint record's order (has_residual's bits 0 to 3): the classic
 * residual (NULL when compact: its form is read and written through efstore), ef21's shared
 * estimator, DGC's momentum, EControl's error. */
static void sqz_gpu_record_arrays(const sqz_gpu_buf_t *b, float *a[4])
{
    a[0] = b->residual, a[1] = b->shared, a[2] = sqz_gpu_dgc_momentum(b->dgc), a[3] = b->ec_err;
}

/* One record of a pending checkpoint: where it starts (at) and ends in g->pending, its arrays
 * (NULL where the record has none: residual, ef21's shared estimator, DGC's momentum,
 * EControl's error). */
typedef struct sqz_gpu_record {
    sqz_gpu_saved_t rec;
    size_t          at, end;
    const float    *arrays[4];
} sqz_gpu_record_t;

/* The record at r's offset, r moved past it.  \return 0 at the end (or a truncated record). */
static int sqz_gpu_record_next(sqz_rbuf_t *r, sqz_gpu_record_t *x)
{
    x->at = r->off;
    if (r->off >= r->len || !sqz_rbuf_get(r, &x->rec, sizeof(x->rec))) {
        return 0;
    }
    const size_t bytes = (size_t)x->rec.count * sizeof(float);
    for (int a = 0; a < 4; a++) {
        x->arrays[a] = x->rec.has_residual & (1 << a) ? sqz_rbuf_take(r, bytes) : NULL;
    }
    x->end = r->off;
    return 1;
}

/* A record's dtype once it was applied: a buffer made again later (after an eviction, a sweep
 * or sqz_ef_forget) starts empty. */
#define SQZ_GPU_RECORD_TAKEN (-1)

static void sqz_gpu_record_take(struct sqz_gpu_comm *g, const sqz_gpu_record_t *x)
{
    const int32_t taken = SQZ_GPU_RECORD_TAKEN;
    memcpy(g->pending + x->at + offsetof(sqz_gpu_saved_t, dtype), &taken, sizeof(taken));
}

/* Gives bs's buffer its saved residual and counter, if the pending checkpoint holds them
 * (stream order), once. */
static void sqz_gpu_apply_pending(struct sqz_gpu_comm *g, sqz_buf_state_t *bs, cudaStream_t s)
{
    sqz_gpu_buf_t *const b = bs->ext;
    sqz_rbuf_t           r = {g->pending, g->npending, 0, 0};
    sqz_gpu_record_t     x;
    while (g->pending && sqz_gpu_record_next(&r, &x)) {
        if (x.rec.key != bs->key || x.rec.count != b->count ||
            (sqz_dtype_t)x.rec.dtype != b->dtype) {
            continue;
        }
        const size_t bytes = (size_t)x.rec.count * sizeof(float);
        bs->calls          = x.rec.calls;
        sqz_gpu_sra_forget(b->sra, s); /* (checkpoints hold the worker residuals only) */
        if (x.arrays[0] && b->compact) {
            sqz_gpu_efstore_write(&g->efwork, g->ef_storage, b->compact, b->count, x.arrays[0],
                                  s);
        }
        float *to[4];
        sqz_gpu_record_arrays(b, to);
        for (int a = 0; a < 4; a++) {
            if (to[a] && x.arrays[a]) {
                cudaMemcpyAsync(to[a], x.arrays[a], bytes, cudaMemcpyHostToDevice, s);
            }
        }
        cudaStreamSynchronize(s); /* (the host copies may go with the next load) */
        sqz_gpu_record_take(g, &x);
        return;
    }
}

/* A new buffer for bs (NULL: this rank has no state; it still agrees, on "no state"). */
static sqz_status_t sqz_gpu_buf_make(sqz_buf_state_t *bs, const sqz_gpu_need_t *nd)
{
    sqz_comm_t *const    comm = nd->comm;
    struct sqz_gpu_comm *g    = comm->gpu;
    sqz_gpu_buf_t       *b    = calloc(1, sizeof(*b));
    cudaError_t          ce   = bs && b ? cudaSuccess : cudaErrorMemoryAllocation;
    if (b) {
        b->count = nd->count, b->dtype = nd->dtype;
    }
    ce = ce == cudaSuccess ? sqz_gpu_buf_alloc_exchange(comm, b, nd) : ce;
    ce = ce == cudaSuccess ? sqz_gpu_buf_alloc_ef(comm, b, nd) : ce;
    if (ce == cudaSuccess && sqz_gpu_alloc_fails && sqz_gpu_alloc_fails(comm->rank, nd->count)) {
        ce = cudaErrorMemoryAllocation; /* (a test's: what is allocated is freed below) */
    }
    if (ce != cudaSuccess) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "device memory for a %zu-element buffer: %s", nd->count,
                     cudaGetErrorString(ce));
        cudaGetLastError(); /* clear the sticky-free error state of the failed allocation */
    }
    /* Agreed: 2 every rank allocated; 1 some rank's device memory failed (a dense-only buffer on
     * every rank, so that no rank tries again alone); 0 some rank has no state or no host memory
     * for the buffer (every rank drops the state: the stores stay the same on every rank, and a
     * keyed buffer's counter restarts everywhere). */
    const int level = NULL == bs || NULL == b ? 0 : ce == cudaSuccess ? 2 : 1;
    const int all   = sqz_gpu_comm_agree(comm, level, nd->s);
    if (1 == all) {
        sqz_gpu_buf_dense_only(b);
    }
    if (all <= 0) {
        if (b) {
            sqz_gpu_buf_free(b);
            free(b);
        }
        if (0 == all) {
            SQZ_LOG_ONCE(SQZ_LOG_WARN, "a rank had no host memory for a buffer's state: its "
                                       "call goes dense on every rank");
        }
        return all < 0 ? SQZ_ERR_TRANSPORT : SQZ_ERR_NO_MEMORY;
    }
    sqz_state_set_ext(&comm->store, bs, b, sqz_gpu_buf_bytes(b));
    if (b->residual) {
        /* A new buffer (a rebuilt DDP bucket): take over its layers' residuals. */
        const sqz_gpu_carry_t carry = {comm, b, nd->s};
        sqz_layout_carry(comm, bs->key, nd->count, sqz_gpu_carry_residual, (void *)&carry);
    }
    if (!b->dense_only) {
        sqz_gpu_apply_pending(g, bs, nd->s);
    }
    return SQZ_OK;
}

/* A reduce-scatter on a buffer an all-reduce made: its whole sum's scratch, agreed likewise. */
static sqz_status_t sqz_gpu_buf_add_full(sqz_buf_state_t *bs, const sqz_gpu_need_t *nd)
{
    sqz_gpu_buf_t *const b    = bs->ext;
    const size_t         full = nd->count * sqz_gpu_dtype_size(nd->dtype);
    if (!nd->rs || b->full || b->sra || b->dense_only) {
        return SQZ_OK;
    }
    const int ok = cudaMalloc(&b->full, full) == cudaSuccess;
    if (!ok) {
        cudaGetLastError();
        b->full = NULL;
    }
    const int all = sqz_gpu_buf_agree(nd->comm, b, ok, nd->s);
    b->bytes += b->full ? full : 0;
    sqz_state_set_ext(&nd->comm->store, bs, b, sqz_gpu_buf_bytes(b));
    return all < 0 ? SQZ_ERR_TRANSPORT : SQZ_OK;
}

sqz_status_t sqz_gpu_buf_ready(void *need, sqz_buf_state_t *bs)
{
    const sqz_gpu_need_t *nd = need;
    sqz_gpu_buf_t        *b  = bs ? bs->ext : NULL;
    if (b && b->dtype != nd->dtype) {
        /* The same key and size in another dtype: the buffer restarts, as for a new size. */
        sqz_gpu_buf_release(nd->comm, b);
        sqz_state_set_ext(&nd->comm->store, bs, NULL, 0);
        b = NULL;
    }
    return b ? sqz_gpu_buf_add_full(bs, nd) : sqz_gpu_buf_make(bs, nd);
}

/* ------------------------------------------------------------------------------------------- */
/* Accounting, sqz_ef_forget                                                                    */
/* ------------------------------------------------------------------------------------------- */
void sqz_gpu_account(sqz_comm_t *comm)
{
    const struct sqz_gpu_comm *g     = comm->gpu;
    size_t                     bytes = comm->store.bytes + sqz_gpu_hier_scratch_bytes(g->hier) +
                                       sqz_gpu_efwork_bytes(&g->efwork);
    for (const sqz_buf_state_t *bs = comm->store.newest; g->psgd && bs; bs = bs->older) {
        const sqz_gpu_buf_t *b = bs->ext;
        if (b) { /* (PowerSGD's local probing plan: this rank's alone) */
            bytes += sqz_gpu_psgd_bytes(b->psgd, b->count, 1) -
                     sqz_gpu_psgd_bytes(b->psgd, b->count, 0);
        }
    }
    sqz_comm_account_state(comm, bytes);
}

void sqz_gpu_bufs_forget(sqz_comm_t *comm, uint64_t key)
{
    struct sqz_gpu_comm *g = comm->gpu;
    cudaSetDevice(g->device);
    cudaDeviceSynchronize();
    for (sqz_buf_state_t *bs = comm->store.newest; bs; bs = bs->older) {
        sqz_gpu_buf_t *b = bs->ext;
        if (bs->key != key || NULL == b || !(b->residual || b->compact)) {
            continue;
        }
        sqz_gpu_zero_residual(g, b, NULL);
        if (b->shared) {
            cudaMemset(b->shared, 0, b->count * sizeof(float));
        }
        if (b->ec_err) {
            cudaMemset(b->ec_err, 0, b->count * sizeof(float));
        }
        sqz_gpu_sra_forget(b->sra, NULL);
        sqz_gpu_dgc_forget(b->dgc, NULL);
        bs->calls = 0;
    }
    /* (a loaded record of the key, not applied yet, would bring the residual back) */
    sqz_rbuf_t       r = {g->pending, g->npending, 0, 0};
    sqz_gpu_record_t x;
    while (g->pending && sqz_gpu_record_next(&r, &x)) {
        if (x.rec.key == key) {
            sqz_gpu_record_take(g, &x);
        }
    }
    cudaDeviceSynchronize(); /* (the zeroing ran on the legacy stream) */
}

/* ------------------------------------------------------------------------------------------- */
/* Checkpoints                                                                                  */
/* ------------------------------------------------------------------------------------------- */
/* Buffer b's record into w, its arrays read back from the device when w is not a sizing pass
 * (host: a scratch of count floats). */
static sqz_status_t sqz_gpu_save_buf(struct sqz_gpu_comm *g, const sqz_buf_state_t *bs,
                                     sqz_wbuf_t *w, float **host)
{
    const sqz_gpu_buf_t  *b = bs->ext;
    float                *arrays[4];
    sqz_gpu_record_arrays(b, arrays);
    const int             res = NULL != arrays[0] || NULL != b->compact;
    const sqz_gpu_saved_t rec = {bs->key, b->count, bs->calls, (int32_t)b->dtype,
                                 res | (NULL != arrays[1]) << 1 | (NULL != arrays[2]) << 2 |
                                     (NULL != arrays[3]) << 3};
    sqz_status_t          st  = SQZ_OK;
    sqz_wbuf_put(w, &rec, sizeof(rec));
    for (int a = 0; a < 4 && SQZ_OK == st; a++) {
        if (NULL == arrays[a] && !(0 == a && b->compact)) {
            continue;
        }
        if (w->base) {
            float *h = realloc(*host, b->count * sizeof(float));
            st       = h ? SQZ_OK : SQZ_ERR_NO_MEMORY;
            *host    = h ? h : *host;
            if (h && 0 == a && b->compact) {
                st = sqz_gpu_efstore_read(&g->efwork, g->ef_storage, b->compact, b->count, h);
            } else if (h && cudaSuccess != cudaMemcpy(h, arrays[a], b->count * sizeof(float),
                                                      cudaMemcpyDeviceToHost)) {
                st = SQZ_ERR_CUDA;
            }
        }
        sqz_wbuf_put(w, *host, b->count * sizeof(float));
    }
    return st;
}

sqz_status_t sqz_gpu_state_save(sqz_comm_t *comm, sqz_wbuf_t *w)
{
    struct sqz_gpu_comm *g = comm->gpu;
    for (const sqz_buf_state_t *bs = comm->store.newest; g->psgd && bs; bs = bs->older) {
        if (bs->ext) {
            SQZ_ERROR("sqz_state_save: GPU PowerSGD's device state (warm starts, ef21 "
                      "estimators) cannot be checkpointed yet");
            return SQZ_ERR_NOT_SUPPORTED;
        }
    }
    if (w->base) {
        cudaSetDevice(g->device);
        cudaDeviceSynchronize(); /* every call that may still write a residual */
    }
    float       *host = NULL;
    sqz_status_t st   = SQZ_OK;
    for (const sqz_buf_state_t *bs = comm->store.oldest; SQZ_OK == st && bs; bs = bs->newer) {
        st = bs->ext ? sqz_gpu_save_buf(g, bs, w, &host) : SQZ_OK;
    }
    free(host);
    /* The inter-host engine's buffers follow, in the same records (a load gives both the whole
     * stream: each takes the records of its own buffers). */
    return SQZ_OK == st && g->hier ? sqz_gpu_hier_state_save(g->hier, w) : st;
}

sqz_status_t sqz_gpu_state_load(sqz_comm_t *comm, const void *buf, size_t len)
{
    struct sqz_gpu_comm *g    = comm->gpu;
    unsigned char       *copy = malloc(len ? len : 1);
    if (NULL == copy) {
        return SQZ_ERR_NO_MEMORY;
    }
    memcpy(copy, buf, len);
    const sqz_status_t st = g->hier ? sqz_gpu_hier_state_load(g->hier, buf, len) : SQZ_OK;
    if (SQZ_OK != st) {
        free(copy);
        return st;
    }
    free(g->pending);
    g->pending  = copy;
    g->npending = len;
    /* A buffer that exists takes its record now; the others when they are made (their device
     * memory comes with an agreement between the ranks, which a load cannot make).
     * (sqz_state_load then moves each buffer to its state in the loaded store.) */
    cudaSetDevice(g->device);
    for (sqz_buf_state_t *bs = comm->store.newest; bs; bs = bs->older) {
        const sqz_gpu_buf_t *b = bs->ext;
        if (b && !b->dense_only) {
            sqz_gpu_apply_pending(g, bs, NULL);
        }
    }
    return SQZ_OK;
}
