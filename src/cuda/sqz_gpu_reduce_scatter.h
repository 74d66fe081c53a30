/* The GPU path's scatter-reduce / all-gather exchange with re-compression (the device form of
 * src/coll/sqz_coll_reduce_scatter.c), for the methods whose payloads are fixed-size summaries of
 * contiguous elements (quant, sign).
 *
 * Phase 1: the vector is cut into one chunk per rank; chunk r is compressed with this rank's
 * residual and sent to rank r (grouped ncclSend/ncclRecv: fixed sizes, no size round), which
 * decodes and sums the N payloads of its chunk in rank order.
 * Phase 2 (all-reduce only): each rank compresses its reduced chunk again, with the server residual
 * of that chunk (top-k: at TOPK_RESELECT times its density), and the payloads are all-gathered in
 * place; every rank decodes every chunk from
 * the same bytes, so outputs are bit-identical.
 * Traffic per rank: (N-1)/N of a payload in each phase, against N-1 payloads for the all-gather
 * exchange.  A reduce-scatter stops after phase 1: it moves (N-1)/N of a payload in all.
 *
 * Non-finite input on any rank: the all-reduce sees it in the phase-2 flags (a flagged chunk sum
 * is flagged again), a reduce-scatter in a one-word ncclAllReduce(MAX) of each rank's phase-1
 * verdict; then, decided on the device, every rank restores its residuals (worker and server) and
 * writes NaN over its whole output.  Nothing waits on the host.
 */
#ifndef SQZ_GPU_REDUCE_SCATTER_H
#define SQZ_GPU_REDUCE_SCATTER_H

#include <cuda_runtime_api.h>

#include "cuda/sqz_cuda_codec.h"
#include "sqz_ctx.h"
#include "transport/sqz_nccl.h"

typedef struct sqz_gpu_sra sqz_gpu_sra_t;

/** Whether the exchange applies to a call of count elements on nranks ranks: every chunk of its
 *  layout (a reduce-scatter's blocks, or ceil(count / nranks) elements rounded up to 512, or to 8
 *  when 512 would leave a chunk empty) holds elements. */
int sqz_gpu_sra_applies(size_t count, int nranks, int rs);

/* Every function below that takes codec parameters takes two: p, phase 1's (the ranks' own
 * chunks), and p2, phase 2's (the reduced chunk: the same as p, or top-k at TOPK_RESELECT times
 * its density, sqz_gpu_server_params). */

/** Bytes each rank sends in one call (phase 1 to the N-1 peers, and for an all-reduce the
 *  phase-2 all-gather of one slot to each): the policy's cost of this exchange. */
size_t sqz_gpu_sra_sent(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2, size_t count,
                        int nranks, int rs);

/** Device bytes the exchange's state of such a buffer holds (its workspace included). */
size_t sqz_gpu_sra_bytes(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2, size_t count,
                         sqz_dtype_t dtype, int nranks, int rs, int ef);

/** Allocates the state (the device current).  \return SQZ_OK, SQZ_ERR_NO_MEMORY, or
 *  SQZ_ERR_INVALID_PARAM when the exchange does not apply. */
sqz_status_t sqz_gpu_sra_create(const sqz_gpu_params_t *p, const sqz_gpu_params_t *p2,
                                size_t count, sqz_dtype_t dtype, int nranks, int rank, int rs,
                                int ef, cudaStream_t s, sqz_gpu_sra_t **out);

/** \return 1 for a reduce-scatter's state, 0 for an all-reduce's. */
int sqz_gpu_sra_is_rs(const sqz_gpu_sra_t *x);

/** The device word of the last call's verdict (nonzero: some rank was not finite, the call's
 *  output is NaN and the residuals were restored), the same on every rank once that call ran. */
const uint32_t *sqz_gpu_sra_bad(const sqz_gpu_sra_t *x);

/** The server residual of this rank's reduced chunk (NULL without error feedback, or for a
 *  reduce-scatter), its elements in *count. */
float *sqz_gpu_sra_server(const sqz_gpu_sra_t *x, size_t *count);

/** Frees the state (NULL: no-op).  The device must be done with it. */
void sqz_gpu_sra_free(sqz_gpu_sra_t *x);

/** Resets the server residuals to zero (on stream s, then waits for it): a restored checkpoint
 *  holds the worker residuals only, and a forgotten buffer restarts from zero.  NULL: no-op. */
void sqz_gpu_sra_forget(sqz_gpu_sra_t *x, cudaStream_t s);

/** One call's facts. */
typedef struct sqz_gpu_sra_call {
    const sqz_nccl_api_t *nccl;
    ncclComm_t            nc;
    const void           *in;       /* count elements of in_dtype */
    sqz_dtype_t           in_dtype; /* the state's dtype, or float32 (DGC's message) */
    float                *residual; /* count floats, or NULL without error feedback */
    void                 *out;      /* all-reduce: count elements; reduce-scatter: this rank's block */
    float                 scale;    /* 1, or 1/N for an average */
    uint64_t              seed;     /* randomness: (seed, rank, seq, payload) gives each */
    uint64_t              seq;      /*   payload its key (seed: SQZ_SEED ^ the buffer's key) */
    unsigned long long   *nonfinite_calls; /* device counter */
    cudaStream_t          s;
} sqz_gpu_sra_call_t;

/** Enqueues one call on c->s.  Fills cst's byte counts.  \return SQZ_OK; SQZ_ERR_NCCL (the
 *  transport failed: the ranks may be out of step, as for any failed NCCL call); SQZ_ERR_CUDA (a
 *  launch failed). */
sqz_status_t sqz_gpu_sra_run(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c,
                             sqz_call_stats_t *cst);

/** Damped error feedback after call c ran (SQZ_EF_DECAY): unless its verdict says some rank was
 *  not finite, the worker residual (c->residual, when not NULL) and the server residual keep
 *  `decay` of themselves (sqz_gpu_damp), as the host damps both. */
sqz_status_t sqz_gpu_sra_damp(sqz_gpu_sra_t *x, const sqz_gpu_sra_call_t *c, float decay);

#endif
