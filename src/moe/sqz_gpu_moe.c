/*
 * The token all-to-all of LSH-MoE on NCCL (sqz_gpu_engine.h: sqz_gpu_moe_alltoall), for the NCCL
 * interposer.
 *
 * Block sizes depend on the data and a receiver cannot know them, while ncclRecv needs its exact
 * count.  So the sizes travel first: one uint64 per peer in a grouped ncclSend/ncclRecv, then the
 * host waits for the stream (cudaStreamSynchronize) to read them, then the blocks travel in a
 * second group, sized exactly, and are decoded on the stream into the caller's buffers.  The wait
 * is the price of this first version (it also keeps the call out of CUDA graphs: a capturing
 * stream passes through); a one-round form would post receives at the RAW bound, which NCCL's
 * exact-count matching does not allow.
 *
 * Per communicator, grow-only device buffers: the encode workspace, the send and receive slots
 * (one per peer, of its RAW bound, 8-byte aligned), and a small metadata array (sizes out, rows
 * out, sizes in, the corrupt-block counter).  Allocation happens before anything reaches NCCL, so
 * a failure there leaves the call to the caller's exact passthrough.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "moe/sqz_cuda_moe.h"
#include "cuda/sqz_gpu_engine.h"
#include "sqz_ctx.h"
#include "sqz_log.h"
#include "sqz_lsh.h"

struct sqz_gpu_moe {
    int                nranks;
    sqz_lsh_t         *lsh;    /* the CPU codec (projections from the seed) of the last width */
    sqz_gpu_lsh_t     *glsh;   /* its device copy */
    void              *ws, *sslots, *rslots;
    size_t             wscap, scap, rcap;
    uint64_t          *meta;   /* device: 3 P + 1 (sizes out, rows out, sizes in, corrupt) */
    uint32_t          *status; /* device: P */
    uint64_t          *hmeta;  /* host copy of meta */
    sqz_gpu_tok_blk_t *blks;   /* host: P encode + P decode descriptors */
    size_t            *off;    /* host: 4 P offsets: send slots, receive slots, then the sizes
                                  sent and received in meta (bytes) */
    size_t             plan;   /* bytes of the encode workspace; the decode's follows */
    uint64_t           corrupt_seen;
};

void sqz_gpu_moe_free(struct sqz_gpu_moe *m, int abandon)
{
    if (NULL == m) {
        return;
    }
    if (!abandon) {
        sqz_gpu_lsh_destroy(m->glsh);
        cudaFree(m->ws);
        cudaFree(m->sslots);
        cudaFree(m->rslots);
        cudaFree(m->meta);
        cudaFree(m->status);
    }
    sqz_lsh_destroy(m->lsh);
    free(m->hmeta);
    free(m->blks);
    free(m->off);
    free(m);
}

/* Grows a device buffer to `need` bytes (its contents are not kept).  cudaFree waits for the
 * device, so earlier calls' work on the old buffer has finished. */
static sqz_status_t sqz_gpu_moe_grow(void **p, size_t *cap, size_t need)
{
    if (need <= *cap && *p) {
        return SQZ_OK;
    }
    cudaFree(*p);
    *p   = NULL;
    *cap = 0;
    need = need < 256 ? 256 : need + need / 4;
    if (cudaMalloc(p, need) != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return SQZ_ERR_CUDA;
    }
    *cap = need;
    return SQZ_OK;
}

static struct sqz_gpu_moe *sqz_gpu_moe_get(struct sqz_gpu_moe **slot, int P)
{
    if (*slot) {
        return *slot;
    }
    struct sqz_gpu_moe *m = calloc(1, sizeof(*m));
    if (NULL == m) {
        return NULL;
    }
    m->nranks = P;
    m->hmeta  = calloc(3 * (size_t)P + 1, sizeof(uint64_t));
    m->blks   = calloc(2 * (size_t)P, sizeof(sqz_gpu_tok_blk_t));
    m->off    = calloc(4 * (size_t)P, sizeof(size_t));
    if (NULL == m->hmeta || NULL == m->blks || NULL == m->off ||
        cudaMalloc((void **)&m->meta, (3 * (size_t)P + 1) * sizeof(uint64_t)) != cudaSuccess ||
        cudaMalloc((void **)&m->status, (size_t)P * sizeof(uint32_t)) != cudaSuccess ||
        cudaMemset(m->meta, 0, (3 * (size_t)P + 1) * sizeof(uint64_t)) != cudaSuccess) {
        cudaGetLastError();
        sqz_gpu_moe_free(m, 0);
        return NULL;
    }
    for (int r = 0; r < P; r++) {
        m->off[2 * P + r] = (size_t)r * sizeof(uint64_t);
        m->off[3 * P + r] = (size_t)(2 * P + r) * sizeof(uint64_t);
    }
    *slot = m;
    return m;
}

/* The LSH hash of `width` on host and device, drawn from the seed as the CPU path does
 * (sqz_moe.c): identical projections on every rank and on both paths. */
static sqz_status_t sqz_gpu_moe_lsh(struct sqz_gpu_moe *m, const sqz_ctx_t *ctx, size_t width)
{
    if (m->glsh && sqz_gpu_lsh_width(m->glsh) == width) {
        return SQZ_OK;
    }
    sqz_gpu_lsh_destroy(m->glsh);
    sqz_lsh_destroy(m->lsh);
    m->glsh                  = NULL;
    m->lsh                   = NULL;
    const sqz_core_params_t *p = &ctx->p;
    SQZ_CHECK(sqz_lsh_create(width, (int)p->lsh_dim, (int)p->lsh_hashes, (size_t)p->lsh_sample,
                             (uint64_t)p->seed, &m->lsh));
    return sqz_gpu_lsh_create(m->lsh, &m->glsh);
}

static size_t sqz_gpu_moe_round8(size_t x)
{
    return (x + 7) / 8 * 8;
}

/* Everything up to the first NCCL call: buffers, descriptors, encode kernels, the self copy. */
static sqz_status_t sqz_gpu_moe_prepare(sqz_comm_t *comm, struct sqz_gpu_moe *m, int codec,
                                        sqz_dtype_t dtype, size_t width, const void *const *sbuf,
                                        const size_t *stok, void *const *rbuf, const size_t *rtok,
                                        cudaStream_t s)
{
    const int    P = comm->nranks, me = comm->rank;
    const size_t rowbytes = width * sqz_tok_esize((int)dtype);
    size_t       stotal = 0, rtotal = 0;
    for (int r = 0; r < P; r++) {
        const size_t ns = r == me ? 0 : stok[r], nr = r == me ? 0 : rtok[r];
        m->off[r]       = stotal;
        m->off[P + r]   = rtotal;
        stotal += ns ? sqz_gpu_moe_round8(sqz_tok_raw_bytes(ns, width, (int)dtype)) : 0;
        rtotal += nr ? sqz_gpu_moe_round8(sqz_tok_raw_bytes(nr, width, (int)dtype)) : 0;
    }
    if (SQZ_MOE_LSH == codec) {
        SQZ_CHECK(sqz_gpu_moe_lsh(m, comm->ctx, width));
    }
    SQZ_CHECK(sqz_gpu_moe_grow(&m->sslots, &m->scap, stotal));
    SQZ_CHECK(sqz_gpu_moe_grow(&m->rslots, &m->rcap, rtotal));
    sqz_gpu_tok_blk_t *const e = m->blks;
    for (int r = 0; r < P; r++) {
        memset(&e[r], 0, sizeof(e[r]));
        e[r].tokens = r == me ? 0 : stok[r];
        e[r].src    = sbuf[r];
        e[r].dst    = (unsigned char *)m->sslots + m->off[r];
    }
    m->plan = sqz_gpu_tok_plan(e, P, width); /* a multiple of 256 */
    SQZ_CHECK(sqz_gpu_moe_grow(&m->ws, &m->wscap, m->plan + sqz_gpu_tok_decode_ws(P)));
    SQZ_CHECK(sqz_gpu_tok_encode(SQZ_MOE_LSH == codec ? m->glsh : NULL, dtype, width, e, P, m->ws,
                                 m->meta, NULL, s));
    if (stok[me] && cudaMemcpyAsync(rbuf[me], sbuf[me], stok[me] * rowbytes,
                                    cudaMemcpyDeviceToDevice, s) != cudaSuccess) {
        cudaGetLastError();
        return SQZ_ERR_CUDA;
    }
    return SQZ_OK;
}

/* One group of ncclSend/ncclRecv on the real NCCL: to peer r `sbytes[r]` bytes (or one uint64 when
 * sbytes is NULL) from sb + soff[r], from peer r into rb + roff[r]; zero sizes are skipped. */
static sqz_status_t sqz_gpu_moe_exchange(const sqz_nccl_api_t *api, ncclComm_t nc, int P, int me,
                                         const void *sb, const size_t *soff, const uint64_t *sbytes,
                                         void *rb, const size_t *roff, const uint64_t *rbytes,
                                         ncclDataType_t dt, cudaStream_t s)
{
    ncclResult_t r = api->GroupStart();
    for (int p = 0; r == ncclSuccess && p < P; p++) {
        if (p != me && sbytes[p]) {
            r = api->Send((const unsigned char *)sb + soff[p],
                          ncclUint64 == dt ? 1 : (size_t)sbytes[p], dt, p, nc, s);
        }
        if (r == ncclSuccess && p != me && rbytes[p]) {
            r = api->Recv((unsigned char *)rb + roff[p], ncclUint64 == dt ? 1 : (size_t)rbytes[p],
                          dt, p, nc, s);
        }
    }
    const ncclResult_t e = api->GroupEnd();
    if (r != ncclSuccess || e != ncclSuccess) {
        SQZ_ERROR("MoE all-to-all: NCCL: %s", sqz_nccl_error(r != ncclSuccess ? r : e));
        return SQZ_ERR_NCCL;
    }
    return SQZ_OK;
}

sqz_status_t sqz_gpu_moe_alltoall(sqz_comm_t *comm, int codec, sqz_dtype_t dtype, size_t width,
                                  const void *const *sbuf, const size_t *stok, void *const *rbuf,
                                  const size_t *rtok, void *stream, int *moved)
{
    *moved                       = 0;
    void                *ncv     = NULL;
    int                  dev     = -1;
    struct sqz_gpu_moe **slot    = NULL;
    const sqz_nccl_api_t *api    = comm ? sqz_gpu_comm_nccl(comm, &ncv, &dev, &slot) : NULL;
    const cudaStream_t    s      = (cudaStream_t)stream;
    if (NULL == api || NULL == api->Send || NULL == api->Recv || 0 == width ||
        0 == sqz_tok_esize((int)dtype) || (SQZ_MOE_LSH == codec && SQZ_DTYPE_FLOAT32 != dtype) ||
        (SQZ_MOE_LSH != codec && SQZ_MOE_DEDUP != codec) ||
        stok[comm->rank] != rtok[comm->rank]) {
        return SQZ_ERR_INVALID_PARAM;
    }
    /* The host wait below is illegal while the stream is captured into a graph. */
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(s, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
        cudaGetLastError();
        return SQZ_ERR_NOT_SUPPORTED;
    }
    const ncclComm_t nc = (ncclComm_t)ncv;
    const int        P  = comm->nranks, me = comm->rank;
    const size_t     rowbytes = width * sqz_tok_esize((int)dtype);
    pthread_mutex_lock(&comm->lock);
    int saved = -1;
    cudaGetDevice(&saved);
    if (saved != dev) {
        cudaSetDevice(dev);
    }
    sqz_moe_stats_t     cst = {0};
    const double        t0  = sqz_time_now();
    struct sqz_gpu_moe *m   = sqz_gpu_moe_get(slot, P);
    sqz_status_t        st  = NULL == m ? SQZ_ERR_NO_MEMORY
                                        : sqz_gpu_moe_prepare(comm, m, codec, dtype, width, sbuf, stok,
                                                              rbuf, rtok, s);
    if (SQZ_OK != st) {
        goto out; /* nothing has reached NCCL: the caller passes the call through */
    }
    *moved = 1;
    /* Round 1: the sizes.  A peer is skipped where the tokens say there is no block (both sides
     * know the counts of a correct all-to-all). */
    uint64_t *const h = m->hmeta;
    for (int r = 0; r < P; r++) {
        h[r]         = r != me && stok[r];
        h[2 * P + r] = r != me && rtok[r];
    }
    st = sqz_gpu_moe_exchange(api, nc, P, me, m->meta, m->off + 2 * P, h, m->meta, m->off + 3 * P,
                              h + 2 * P, ncclUint64, s);
    if (SQZ_OK != st) {
        goto out;
    }
    if (cudaMemcpyAsync(h, m->meta, (3 * (size_t)P + 1) * sizeof(uint64_t),
                        cudaMemcpyDeviceToHost, s) != cudaSuccess ||
        cudaStreamSynchronize(s) != cudaSuccess) {
        SQZ_ERROR("MoE all-to-all: %s", cudaGetErrorString(cudaGetLastError()));
        st = SQZ_ERR_CUDA;
        goto out;
    }
    if (h[3 * P] != m->corrupt_seen) {
        SQZ_ERROR("MoE all-to-all: %llu malformed block(s) received (their tokens were left "
                  "unwritten)",
                  (unsigned long long)(h[3 * P] - m->corrupt_seen));
        m->corrupt_seen = h[3 * P];
    }
    for (int r = 0; r < P; r++) {
        if (r == me) {
            h[2 * P + r] = 0;
            continue;
        }
        if (0 == rtok[r]) {
            h[2 * P + r] = 0;
        } else if (h[2 * P + r] < SQZ_TOKFRAME_HEADER ||
                   h[2 * P + r] > sqz_tok_raw_bytes(rtok[r], width, (int)dtype)) {
            SQZ_ERROR("MoE all-to-all: rank %d announces a block of %llu bytes for %zu tokens", r,
                      (unsigned long long)h[2 * P + r], rtok[r]);
            st = SQZ_ERR_MISMATCH;
            goto out;
        }
    }
    const double t1 = sqz_time_now();
    /* Round 2: the blocks, sized exactly. */
    st = sqz_gpu_moe_exchange(api, nc, P, me, m->sslots, m->off, h, m->rslots, m->off + P,
                              h + 2 * P, ncclUint8, s);
    if (SQZ_OK != st) {
        goto out;
    }
    sqz_gpu_tok_blk_t *const d = m->blks + P;
    for (int r = 0; r < P; r++) {
        memset(&d[r], 0, sizeof(d[r]));
        d[r].src    = (unsigned char *)m->rslots + m->off[P + r];
        d[r].dst    = rbuf[r];
        d[r].tokens = r == me ? 0 : rtok[r];
        d[r].bytes  = h[2 * P + r];
    }
    st = sqz_gpu_tok_decode(dtype, width, d, P, (unsigned char *)m->ws + m->plan,
                            m->status, (unsigned long long *)(m->meta + 3 * P), s);
    for (int r = 0; SQZ_OK == st && r < P; r++) {
        if (r != me) {
            cst.tokens += stok[r];
            cst.rows += h[P + r];
            cst.bytes_in += stok[r] * rowbytes;
            cst.bytes_wire += h[r];
        }
    }
    cst.seconds_compress = t1 - t0;
    cst.seconds_comm     = sqz_time_now() - t1;
    if (SQZ_OK == st) {
        sqz_moe_stats_record(comm->ctx, codec, &cst);
    }
out:
    if (saved >= 0 && saved != dev) {
        cudaSetDevice(saved);
    }
    pthread_mutex_unlock(&comm->lock);
    return st;
}
