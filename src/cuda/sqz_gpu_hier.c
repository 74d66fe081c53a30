/* Hierarchy on the GPU path (see sqz_gpu_hier.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cuda/sqz_gpu_engine.h"
#include "cuda/sqz_gpu_hier.h"
#include "sqz_log.h"
#include "topo/sqz_hosts.h"

struct sqz_gpu_hier {
    const sqz_nccl_api_t *api;
    ncclComm_t            nc;       /* the whole communicator (step 4) */
    ncclComm_t            intra;    /* this host's ranks, by rank */
    ncclComm_t            inter_nc; /* the ranks with this local index, by host */
    sqz_comm_t           *inter;    /* the compressed engine over inter_nc */
    int                   local_rank, local_size, hosts;
    int                   host_major; /* every rank is host x L + local rank: reduce-scatters
                                         can be hierarchical */
    void                 *column;     /* a reduce-scatter's column of host sums (device) */
    size_t                column_bytes;
};

/* Every rank's host key (collective over comm's host transport).  \return 0, or -1. */
static int sqz_gpu_gather_hosts(sqz_comm_t *comm, uint64_t *keys)
{
    const size_t P   = (size_t)comm->nranks;
    size_t      *len = malloc(2 * P * sizeof(*len));
    if (NULL == len) {
        return -1; /* (the peers then wait in their gather: as any allocation failure here) */
    }
    for (size_t r = 0; r < P; r++) {
        len[r]     = sizeof(uint64_t);
        len[P + r] = r * sizeof(uint64_t);
    }
    const uint64_t mine = sqz_host_key(comm->ctx->p.host_id);
    const int      rc   = comm->t.allgatherv(comm->t.self, &mine, sizeof(mine), keys, len, len + P);
    free(len);
    return rc ? -1 : 0;
}

sqz_status_t sqz_gpu_hier_create(sqz_comm_t *comm, const sqz_nccl_api_t *api, ncclComm_t nc,
                                 sqz_gpu_hier_t **out)
{
    *out           = NULL;
    const int mode = comm->ctx->p.hier;
    if (SQZ_HIER_OFF == mode || comm->nranks < 4 || NULL == api->CommSplit) {
        return SQZ_OK;
    }
    uint64_t *keys = malloc((size_t)comm->nranks * sizeof(*keys));
    if (NULL == keys || sqz_gpu_gather_hosts(comm, keys) != 0) {
        free(keys);
        return SQZ_ERR_TRANSPORT;
    }
    sqz_host_layout_t lay;
    sqz_host_layout(keys, comm->nranks, comm->rank, &lay);
    free(keys);
    const int host = lay.host, lrank = lay.local_rank, lsize = lay.local_size, hosts = lay.hosts;
    const int uniform = lay.uniform;
    comm->cost.hosts = hosts, comm->cost.per_host = lay.most; /* (the cost model's topology) */
    if (hosts < 2 || lsize < 2 || !uniform) {
        if (SQZ_HIER_ON == mode) {
            SQZ_LOG_ONCE(SQZ_LOG_WARN, "SQZ_HIER=on: %d host(s) of %s rank(s): the GPU path stays "
                                       "flat (it needs several hosts of the same number of ranks)",
                         hosts, uniform ? "several" : "different numbers of");
        }
        return SQZ_OK;
    }
    sqz_gpu_hier_t *h = calloc(1, sizeof(*h));
    if (NULL == h) {
        return SQZ_ERR_NO_MEMORY; /* (the peers' splits then wait: as NCCL's would) */
    }
    *h = (sqz_gpu_hier_t){.api = api, .nc = nc, .local_rank = lrank, .local_size = lsize,
                          .hosts = hosts, .host_major = lay.host_major};
    sqz_status_t st = SQZ_OK;
    if (api->CommSplit(nc, host, comm->rank, &h->intra, NULL) != ncclSuccess ||
        api->CommSplit(nc, lrank, host, &h->inter_nc, NULL) != ncclSuccess) {
        st = SQZ_ERR_NCCL;
    }
    if (SQZ_OK == st) {
        st = sqz_gpu_comm_create(comm->ctx, api, h->inter_nc, &h->inter);
    }
    if (SQZ_OK == st) {
        /* One rank per host, and the host's L exchanges share its link. */
        sqz_comm_cost_t *const c = &h->inter->cost;
        c->hosts = hosts, c->per_host = 1, c->link_share = lsize;
    }
    if (SQZ_OK != st) {
        SQZ_ERROR("hierarchical GPU communicator: %s", sqz_status_string(st));
        sqz_gpu_hier_free(h, 0);
        return st;
    }
    SQZ_INFO("hierarchical GPU all-reduce: %d hosts of %d ranks (local rank %d)", hosts, lsize,
             lrank);
    *out = h;
    return SQZ_OK;
}

void sqz_gpu_hier_free(sqz_gpu_hier_t *h, int abandon)
{
    if (NULL == h) {
        return;
    }
    if (h->inter) {
        h->inter->gpu_abandon = abandon;
        sqz_comm_destroy(h->inter);
    }
    if (h->column && !abandon) {
        cudaFree(h->column);
    }
    ncclResult_t (*const close)(ncclComm_t) = abandon ? h->api->CommAbort : h->api->CommDestroy;
    if (h->intra) {
        close(h->intra);
    }
    if (h->inter_nc) {
        close(h->inter_nc);
    }
    free(h);
}

sqz_status_t sqz_gpu_hier_state_save(sqz_gpu_hier_t *h, sqz_wbuf_t *w)
{
    return h->inter->device->state_save(h->inter, w);
}

sqz_status_t sqz_gpu_hier_state_load(sqz_gpu_hier_t *h, const void *buf, size_t len)
{
    return h->inter->device->state_load(h->inter, buf, len);
}

sqz_status_t sqz_gpu_hier_allreduce(sqz_gpu_hier_t *h, const void *in, void *out, size_t count,
                                    sqz_dtype_t dtype, sqz_op_t op, uint64_t key, cudaStream_t s)
{
    const size_t         esz   = sqz_gpu_dtype_size(dtype);
    const size_t         L     = (size_t)h->local_size;
    const size_t         shard = count / L, body = shard * L, tail = count - body;
    const ncclDataType_t t     = sqz_gpu_nccl_dtype(dtype);
    const ncclRedOp_t    rop   = op == SQZ_OP_AVG ? ncclAvg : ncclSum;
    unsigned char       *mine  = (unsigned char *)out + (size_t)h->local_rank * shard * esz;
    sqz_status_t         st    = SQZ_OK;
    if (shard > 0) {
        /* (AVG: the host's average, then the hosts' average: equal hosts make it the mean) */
        if (h->api->ReduceScatter(in, mine, shard, t, rop, h->intra, s) != ncclSuccess) {
            return SQZ_ERR_NCCL;
        }
        st = sqz_allreduce_async(h->inter, NULL, mine, shard, dtype, op, key, s);
        if (SQZ_OK != st) {
            return st;
        }
        if (h->api->AllGather(mine, out, shard, t, h->intra, s) != ncclSuccess) {
            return SQZ_ERR_NCCL;
        }
    }
    if (tail > 0 && h->api->AllReduce((const unsigned char *)in + body * esz,
                                      (unsigned char *)out + body * esz, tail, t, rop, h->nc,
                                      s) != ncclSuccess) {
        return SQZ_ERR_NCCL;
    }
    return SQZ_OK;
}

size_t sqz_gpu_hier_scratch_bytes(const sqz_gpu_hier_t *h)
{
    return h ? h->column_bytes : 0;
}

int sqz_gpu_hier_takes_reduce_scatter(const sqz_gpu_hier_t *h)
{
    return h != NULL && h->host_major;
}

/* The column scratch of at least `bytes`, grown at a call every rank makes alike, with the ranks'
 * agreement (comm: the whole communicator).  \return SQZ_OK; SQZ_ERR_NOT_SUPPORTED when some
 * rank could not allocate (on every rank: the call goes dense); SQZ_ERR_NCCL when the agreement
 * failed. */
static sqz_status_t sqz_gpu_hier_column(sqz_gpu_hier_t *h, sqz_comm_t *comm, size_t bytes,
                                        cudaStream_t s)
{
    if (bytes <= h->column_bytes) {
        return SQZ_OK;
    }
    if (h->column) {
        cudaStreamSynchronize(s); /* (its last reduce-scatter may still read it) */
        cudaFree(h->column);
    }
    h->column       = NULL;
    h->column_bytes = 0;
    const int ok    = cudaMalloc(&h->column, bytes) == cudaSuccess;
    if (!ok) {
        cudaGetLastError();
        h->column = NULL;
    }
    const int all = sqz_gpu_comm_agree(comm, ok, s);
    if (all < 0) {
        return SQZ_ERR_NCCL;
    }
    if (0 == all) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "a rank could not allocate the %zu-byte column of a "
                                   "hierarchical reduce-scatter: such calls go dense on every "
                                   "rank", bytes);
        cudaFree(h->column);
        h->column = NULL;
        return SQZ_ERR_NOT_SUPPORTED;
    }
    h->column_bytes = bytes;
    return SQZ_OK;
}

sqz_status_t sqz_gpu_hier_reduce_scatter(sqz_gpu_hier_t *h, sqz_comm_t *comm, const void *in,
                                         void *out, size_t recvcount, sqz_dtype_t dtype,
                                         sqz_op_t op, uint64_t key, cudaStream_t s)
{
    const size_t         esz  = sqz_gpu_dtype_size(dtype);
    const size_t         H    = (size_t)h->hosts, L = (size_t)h->local_size;
    const size_t         blk  = recvcount * esz;
    const ncclDataType_t t    = sqz_gpu_nccl_dtype(dtype);
    const ncclRedOp_t    rop  = op == SQZ_OP_AVG ? ncclAvg : ncclSum;
    sqz_status_t         st   = sqz_gpu_hier_column(h, comm, H * blk, s);
    if (SQZ_OK != st) {
        return st;
    }
    /* 1. Host h''s row of L blocks (global ranks h' L .. h' L + L - 1): local rank l gets the
     *    host's sum of block h' L + l, at column[h'].  (One collective per row, not grouped:
     *    the device thread transport of the tests runs no collective inside a group.) */
    for (size_t row = 0; row < H; row++) {
        if (h->api->ReduceScatter((const unsigned char *)in + row * L * blk,
                                  (unsigned char *)h->column + row * blk, recvcount, t, rop,
                                  h->intra, s) != ncclSuccess) {
            return SQZ_ERR_NCCL;
        }
    }
    /* 2. The column among the ranks of local index l, by host: host h gets block h L + l, this
     *    rank's own (AVG: the host's mean above, the hosts' mean here). */
    return sqz_reduce_scatter_async(h->inter, h->column, out, recvcount, dtype, op, key, s);
}
