/* The GPU scatter-reduce / all-gather exchange (see sqz_gpu_reduce_scatter.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cuda/sqz_gpu_engine.h"
#include "cuda/sqz_gpu_reduce_scatter.h"
#include "sqz_log.h"
#include "sqz_plugin_util.h"

#define SQZ_GPU_CHUNK_QUANTUM 512

struct sqz_gpu_sra {
    sqz_gpu_params_t p;         /* phase 1's codec: the ranks' own chunks */
    sqz_gpu_params_t p2;        /* phase 2's: the reduced chunk (TOPK_RESELECT's density) */
    int              nranks, rank, rs;
    sqz_dtype_t      dtype;
    size_t           count;
    size_t          *off, *len; /* chunk r: elements [off[r], off[r] + len[r]) */
    size_t           slot;      /* bytes of a phase-1 slot: payload_bytes of the largest chunk */
    size_t           slot2;     /* bytes of a phase-2 slot (p2) */
    unsigned char   *send1;     /* N slots: this rank's chunk payloads, slot r for rank r */
    unsigned char   *recv1;     /* N payloads of this rank's chunk, payload_bytes(len[rank]) apart */
    unsigned char   *gather2;   /* all-reduce: N phase-2 slots, the phase-2 payloads */
    float           *y;         /* all-reduce: this rank's reduced chunk */
    float           *server;    /* all-reduce with error feedback: the server residual of y */
    void            *workspace;
    uint32_t        *bad;       /* the call's verdict: some input was not finite */
    size_t           bytes;     /* device memory held */
};

/* The chunk size of a call's layout: a reduce-scatter's block, else ceil(count / N) rounded up
 * to 512 elements (a quantizer's buckets stay aligned with the chunks), or to 8 when that leaves
 * the last chunk empty (16-byte aligned chunks for every type).  Chunk r holds
 * [r * chunk, min((r + 1) * chunk, count)).  \return 0 when some chunk would be empty. */
static size_t sqz_gpu_sra_chunk(size_t count, int nranks, int rs)
{
    static const size_t quanta[] = {SQZ_GPU_CHUNK_QUANTUM, 8};
    const size_t        P        = (size_t)nranks;
    if (nranks < 2 || count < P || (rs && count % P)) {
        return 0;
    }
    if (rs) {
        return count / P;
    }
    for (size_t q = 0; q < 2; q++) {
        const size_t per = ((count + P - 1) / P + quanta[q] - 1) / quanta[q] * quanta[q];
        if ((P - 1) * per < count) {
            return per;
        }
    }
    return 0;
}

/* Elements of chunk r. */
static size_t sqz_gpu_sra_len(size_t count, size_t chunk, size_t r)
{
    const size_t a = r * chunk < count ? r * chunk : count;
    return (a + chunk < count ? a + chunk : count) - a;
}

int sqz_gpu_sra_applies(size_t count, int nranks, int rs)
{
    return sqz_gpu_sra_chunk(count, nranks, rs) > 0;
}

/* The sizes of the state's device arrays, in the order sqz_gpu_sra_create carves them. */
typedef struct sqz_gpu_sra_sizes {
    size_t slot, slot2, send1, recv1, gather2, y, server, workspace, bad;
} sqz_gpu_sra_sizes_t;

static size_t sqz_gpu_sra_up(size_t b) { return (b + 255) / 256 * 256; }

/* The largest workspace of the exchange's codec calls: either phase's codec, on the input's
 * dtype or on float32 (the reduced chunk). */
static size_t sqz_gpu_sra_workspace(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2,
                                    size_t per, sqz_dtype_t dtype)
{
    const size_t w[4] = {sqz_gpu_workspace_bytes(p, per, dtype),
                         sqz_gpu_workspace_bytes(p, per, SQZ_DTYPE_FLOAT32),
                         sqz_gpu_workspace_bytes(p2, per, dtype),
                         sqz_gpu_workspace_bytes(p2, per, SQZ_DTYPE_FLOAT32)};
    size_t       m    = 0;
    for (int i = 0; i < 4; i++) {
        m = w[i] > m ? w[i] : m;
    }
    return m;
}

static void sqz_gpu_sra_sizes(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2, size_t per,
                              size_t mylen, sqz_dtype_t dtype, int nranks, int rs, int ef,
                              sqz_gpu_sra_sizes_t *z)
{
    const size_t N = (size_t)nranks;
    z->slot         = sqz_gpu_payload_bytes(p, per);
    z->slot2        = sqz_gpu_payload_bytes(p2, per);
    z->send1        = sqz_gpu_sra_up(N * z->slot);
    z->recv1        = sqz_gpu_sra_up(N * sqz_gpu_payload_bytes(p, mylen));
    z->gather2      = rs ? 0 : sqz_gpu_sra_up(N * z->slot2);
    z->y            = rs ? 0 : sqz_gpu_sra_up(per * sizeof(float));
    z->server       = rs || !ef ? 0 : z->y;
    z->workspace    = sqz_gpu_sra_up(sqz_gpu_sra_workspace(p, p2, per, dtype) + 16);
    z->bad          = 256;
}

static size_t sqz_gpu_sra_total(const sqz_gpu_sra_sizes_t *z)
{
    return z->send1 + z->recv1 + z->gather2 + z->y + z->server + z->workspace + z->bad;
}

size_t sqz_gpu_sra_sent(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2, size_t count,
                        int nranks, int rs)
{
    const size_t chunk = sqz_gpu_sra_chunk(count, nranks, rs);
    size_t       sent = 0, slot = 0;
    for (size_t r = 0; r < (size_t)nranks; r++) {
        const size_t pb = sqz_gpu_payload_bytes(p, sqz_gpu_sra_len(count, chunk, r));
        sent += pb;
        slot = pb > slot ? pb : slot;
    }
    /* (phase 1: all chunk payloads but its own; counted for the rank that keeps the largest) */
    return (sent - slot) +
           (rs ? 0 : (size_t)(nranks - 1) * sqz_gpu_payload_bytes(p2, chunk));
}

size_t sqz_gpu_sra_bytes(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2, size_t count,
                         sqz_dtype_t dtype, int nranks, int rs, int ef)
{
    sqz_gpu_sra_sizes_t z;
    const size_t        per = sqz_gpu_sra_chunk(count, nranks, rs);
    sqz_gpu_sra_sizes(p, p2, per, per, dtype, nranks, rs, ef, &z);
    return sqz_gpu_sra_total(&z);
}

sqz_status_t sqz_gpu_sra_create(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2,
                                size_t count, sqz_dtype_t dtype, int nranks, int rank, int rs,
                                int ef, cudaStream_t s, sqz_gpu_sra_t **out)
{
    *out = NULL;
    if (!sqz_gpu_sra_applies(count, nranks, rs)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sqz_gpu_sra_t *x = calloc(1, sizeof(*x));
    size_t        *v = malloc(2 * (size_t)nranks * sizeof(*v));
    if (NULL == x || NULL == v) {
        free(x), free(v);
        return SQZ_ERR_NO_MEMORY;
    }
    *x = (sqz_gpu_sra_t){.p = *p, .p2 = *p2, .nranks = nranks, .rank = rank, .rs = rs,
                         .dtype = dtype, .count = count, .off = v, .len = v + nranks};
    const size_t per = sqz_gpu_sra_chunk(count, nranks, rs);
    for (int r = 0; r < nranks; r++) {
        x->off[r] = (size_t)r * per < count ? (size_t)r * per : count;
        x->len[r] = sqz_gpu_sra_len(count, per, (size_t)r);
    }
    sqz_gpu_sra_sizes_t z;
    sqz_gpu_sra_sizes(p, p2, per, x->len[rank], dtype, nranks, rs, ef, &z);
    unsigned char *base = NULL;
    x->bytes            = sqz_gpu_sra_total(&z);
    if (cudaMalloc((void **)&base, x->bytes) != cudaSuccess) {
        cudaGetLastError();
        free(x->off), free(x);
        return SQZ_ERR_NO_MEMORY;
    }
    x->slot      = z.slot;
    x->slot2     = z.slot2;
    x->send1     = base;
    x->recv1     = x->send1 + z.send1;
    x->gather2   = rs ? NULL : x->recv1 + z.recv1;
    x->y         = rs ? NULL : (float *)(x->recv1 + z.recv1 + z.gather2);
    x->server    = z.server ? (float *)((unsigned char *)x->y + z.y) : NULL;
    x->workspace = x->recv1 + z.recv1 + z.gather2 + z.y + z.server;
    x->bad       = (uint32_t *)((unsigned char *)x->workspace + z.workspace);
    if (cudaMemsetAsync(base, 0, x->bytes, s) != cudaSuccess) {
        sqz_gpu_sra_free(x);
        return SQZ_ERR_CUDA;
    }
    *out = x;
    return SQZ_OK;
}

int sqz_gpu_sra_is_rs(const sqz_gpu_sra_t *x) { return x->rs; }

const uint32_t *sqz_gpu_sra_bad(const sqz_gpu_sra_t *x) { return x->bad; }

float *sqz_gpu_sra_server(const sqz_gpu_sra_t *x, size_t *count)
{
    *count = x && x->server ? x->len[x->rank] : 0;
    return *count ? x->server : NULL;
}

void sqz_gpu_sra_free(sqz_gpu_sra_t *x)
{
    if (x) {
        cudaFree(x->send1);
        free(x->off);
        free(x);
    }
}

void sqz_gpu_sra_forget(sqz_gpu_sra_t *x, cudaStream_t s)
{
    if (x && x->server) {
        cudaMemsetAsync(x->server, 0, x->len[x->rank] * sizeof(float), s);
        cudaStreamSynchronize(s);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* One call                                                                                     */
/* ------------------------------------------------------------------------------------------- */
/* The randomness key of payload `part` (a chunk, or nranks for phase 2) of this call.  A method
 * that needs the same key on every rank (randk's positions) gets one per chunk, without the rank,
 * and the same in phase 2 for the reduced chunk (it then re-selects the positions of phase 1). */
static uint32_t sqz_gpu_sra_key(const sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c, int rank,
                                int part)
{
    if (sqz_gpu_shared_key(&x->p)) {
        return (uint32_t)sqz_pu_seed_key(c->seed, 0, c->seq, (part < x->nranks ? part : rank) + 1);
    }
    return (uint32_t)sqz_pu_seed_key(c->seed, rank, c->seq, part + 1);
}

/* Phase 1: compress each chunk into its slot, then the grouped sends and receives. */
static sqz_status_t sqz_gpu_sra_phase1(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c,
                                       sqz_call_stats_t *cst)
{
    const size_t esz = sqz_gpu_dtype_size(c->in_dtype), me = (size_t)x->rank;
    const size_t rb  = sqz_gpu_payload_bytes(&x->p, x->len[me]);
    for (int r = 0; r < x->nranks; r++) {
        const sqz_status_t st = sqz_gpu_compress(
            &x->p, (const unsigned char *)c->in + x->off[r] * esz, c->in_dtype,
            c->residual ? c->residual + x->off[r] : NULL, x->len[r],
            sqz_gpu_sra_key(x, c, x->rank, r), x->send1 + (size_t)r * x->slot, x->workspace,
            c->s);
        if (SQZ_OK != st) {
            return st;
        }
        const size_t pb = sqz_gpu_payload_bytes(&x->p, x->len[r]);
        cst->bytes_wire += pb;
        cst->bytes_sent += (size_t)r == me ? 0 : pb;
    }
    ncclResult_t res = c->nccl->GroupStart();
    for (int r = 0; res == ncclSuccess && r < x->nranks; r++) {
        res = c->nccl->Send(x->send1 + (size_t)r * x->slot,
                            sqz_gpu_payload_bytes(&x->p, x->len[r]), ncclUint8, r, c->nc, c->s);
        if (res == ncclSuccess) {
            res = c->nccl->Recv(x->recv1 + (size_t)r * rb, rb, ncclUint8, r, c->nc, c->s);
        }
    }
    const ncclResult_t end = c->nccl->GroupEnd();
    if (res != ncclSuccess || end != ncclSuccess) {
        SQZ_ERROR("scatter-reduce phase 1: %s",
                  sqz_nccl_error(res != ncclSuccess ? res : end));
        return SQZ_ERR_NCCL;
    }
    return SQZ_OK;
}

/* Phase 2: the reduced chunk compressed again (server residual), all-gathered in place. */
static sqz_status_t sqz_gpu_sra_phase2(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c,
                                       sqz_call_stats_t *cst)
{
    const size_t   me   = (size_t)x->rank;
    unsigned char *mine = x->gather2 + me * x->slot2;
    sqz_status_t   st   = sqz_gpu_decode_sum(&x->p, x->recv1, x->nranks, x->len[me], 1.0f, x->y,
                                             SQZ_DTYPE_FLOAT32, x->workspace, c->s);
    if (SQZ_OK == st) {
        st = sqz_gpu_compress(&x->p2, x->y, SQZ_DTYPE_FLOAT32, x->server, x->len[me],
                              sqz_gpu_sra_key(x, c, x->rank, x->nranks), mine, x->workspace,
                              c->s);
    }
    if (SQZ_OK != st) {
        return st;
    }
    const ncclResult_t res =
        c->nccl->AllGather(mine, x->gather2, x->slot2, ncclUint8, c->nc, c->s);
    if (res != ncclSuccess) {
        SQZ_ERROR("scatter-reduce phase 2: ncclAllGather: %s", sqz_nccl_error(res));
        return SQZ_ERR_NCCL;
    }
    cst->bytes_sent += x->slot2 * (size_t)(x->nranks - 1);
    return SQZ_OK;
}

/* The verdict on the device, then every rank's residuals back when it says so. */
static sqz_status_t sqz_gpu_sra_verdict(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c)
{
    const size_t esz = sqz_gpu_dtype_size(c->in_dtype), me = (size_t)x->rank;
    sqz_status_t st;
    if (x->rs) {
        st = sqz_gpu_flag_any(x->recv1, x->nranks, sqz_gpu_payload_bytes(&x->p, x->len[me]),
                              x->bad, NULL, c->s);
        if (SQZ_OK == st &&
            c->nccl->AllReduce(x->bad, x->bad, 1, ncclUint32, ncclMax, c->nc, c->s) !=
                ncclSuccess) {
            return SQZ_ERR_NCCL;
        }
    } else {
        st = sqz_gpu_flag_any(x->gather2, x->nranks, x->slot2, x->bad, NULL, c->s);
        if (SQZ_OK == st) {
            st = sqz_gpu_restore_if(&x->p2, x->bad, x->gather2 + me * x->slot2, x->y,
                                    SQZ_DTYPE_FLOAT32, x->server, x->len[me], c->s);
        }
    }
    for (int r = 0; SQZ_OK == st && c->residual && r < x->nranks; r++) {
        st = sqz_gpu_restore_if(&x->p, x->bad, x->send1 + (size_t)r * x->slot,
                                (const unsigned char *)c->in + x->off[r] * esz, c->in_dtype,
                                c->residual + x->off[r], x->len[r], c->s);
    }
    return st;
}

/* The output: this rank's chunk (reduce-scatter) or every chunk, NaN when the verdict says so. */
static sqz_status_t sqz_gpu_sra_decode(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c)
{
    const size_t esz = sqz_gpu_dtype_size(x->dtype), me = (size_t)x->rank;
    sqz_status_t st  = SQZ_OK;
    if (x->rs) {
        st = sqz_gpu_decode_sum(&x->p, x->recv1, x->nranks, x->len[me], c->scale, c->out,
                                x->dtype, x->workspace, c->s);
    }
    for (int r = 0; SQZ_OK == st && !x->rs && r < x->nranks; r++) {
        st = sqz_gpu_decode_sum(&x->p2, x->gather2 + (size_t)r * x->slot2, 1, x->len[r],
                                c->scale, (unsigned char *)c->out + x->off[r] * esz, x->dtype,
                                x->workspace, c->s);
    }
    if (SQZ_OK == st) {
        st = sqz_gpu_nan_if(x->bad, c->out, x->rs ? x->len[me] : x->count, x->dtype,
                            c->nonfinite_calls, c->s);
    }
    return st;
}

sqz_status_t sqz_gpu_sra_run(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c,
                             sqz_call_stats_t *cst)
{
    sqz_status_t st = sqz_gpu_sra_phase1(x, c, cst);
    if (SQZ_OK == st && !x->rs) {
        st = sqz_gpu_sra_phase2(x, c, cst);
    }
    if (SQZ_OK == st) {
        st = sqz_gpu_sra_verdict(x, c);
    }
    if (SQZ_OK == st) {
        st = sqz_gpu_sra_decode(x, c);
    }
    return st;
}

sqz_status_t sqz_gpu_sra_damp(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c, float decay)
{
    sqz_status_t st = c->residual ? sqz_gpu_damp(x->bad, c->residual, x->count, decay, c->s)
                                  : SQZ_OK;
    if (SQZ_OK == st && x->server) {
        st = sqz_gpu_damp(x->bad, x->server, x->len[x->rank], decay, c->s);
    }
    return st;
}
