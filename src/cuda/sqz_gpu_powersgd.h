/* PowerSGD on the GPU path: one compressed all-reduce of a device buffer over NCCL, stream-ordered
 * on the caller's stream (two ncclAllReduce per power iteration, no host synchronization). */
#ifndef SQZ_GPU_POWERSGD_H
#define SQZ_GPU_POWERSGD_H

#include <cuda_runtime_api.h>

#include "sqz_ctx.h"
#include "transport/sqz_nccl.h"

/** Error feedback of the GPU path: ef14 keeps the residual, none drops it after each call, ef21
 *  keeps the estimators (sqz_cuda_powersgd.h) and returns the shared one. */
enum { SQZ_GPU_PSGD_EF_NONE = 0, SQZ_GPU_PSGD_EF14 = 1, SQZ_GPU_PSGD_EF21 = 2 };

typedef struct sqz_gpu_psgd_cfg {
    int      rank;     /* POWERSGD_RANK */
    int      iters;    /* POWERSGD_ITERS */
    double   min_rate; /* POWERSGD_MIN_RATE */
    int64_t  start;    /* POWERSGD_START_STEPS */
    int      ef;       /* SQZ_GPU_PSGD_EF14, _EF21 or _EF_NONE (SQZ_EF) */
    uint64_t seed;
    size_t   qcap;     /* warm-start columns per layer at most (sqz_psgd_qcap of the rank) */
} sqz_gpu_psgd_cfg_t;

/** Per-buffer device state (plan tables, warm-start Q, messages), created by the first call. */
struct sqz_gpu_psgd;

/** Reads the POWERSGD_* parameters of ctx.  \return 1 when the method is powersgd. */
int sqz_gpu_psgd_config(const sqz_ctx_t *ctx, sqz_gpu_psgd_cfg_t *cfg);

/** One call: out (n elements of dtype, may be in) = scale * the sum over ranks of each rank's
 *  approximation of in + m; m (n floats, the buffer's residual) holds the error afterwards.  With
 *  cfg->ef == SQZ_GPU_PSGD_EF21, out = scale * the shared estimator after its update, m is
 *  scratch, and calls with seq < cfg->start are the dense start phase (sent exactly).  The
 *  layout comes from sqz_layout_resolve(comm, key, n) (comm->lock held).  Under SQZ_ADAPT the
 *  per-layer ranks come from lv, and call `seq` may probe (sqz_adapt_begin): it sends what any
 *  call sends, measures every candidate rank on this rank's M (a second, local plan at the
 *  largest candidate: no NCCL), copies the errors to the host (one stream synchronization), and
 *  sums them over the ranks and solves.  A non-finite input on
 *  any rank gives NaN everywhere in out and m restored, decided on the device, and counted in
 *  *d_nonfinite.  A call that allocates (a new layout, new ranks) agrees with the other ranks
 *  first (sqz_gpu_comm_agree).  \return SQZ_OK, SQZ_ERR_NO_MEMORY (some rank could not allocate:
 *  every rank returns it at this call with its state freed, and nothing of the call reached the
 *  network: the caller goes dense), SQZ_ERR_CUDA or SQZ_ERR_NCCL. */
sqz_status_t sqz_gpu_psgd_call(sqz_comm_t *comm, const sqz_gpu_psgd_cfg_t *cfg,
                               const sqz_nccl_api_t *nccl, ncclComm_t nc,
                               struct sqz_gpu_psgd **state, sqz_levels_t *lv, uint64_t seq,
                               uint64_t key, float *m, const void *in,
                               void *out, size_t n, sqz_dtype_t dtype, float scale,
                               unsigned long long *d_nonfinite, cudaStream_t s,
                               sqz_call_stats_t *cs);

/** Device bytes a buffer's state holds (n: the buffer's elements): its running plan, warm
 *  starts and ef21 estimators, which are the same on every rank, and with `probe` the local
 *  plan of SQZ_ADAPT's probing calls, which is this rank's own.  0 for NULL. */
size_t sqz_gpu_psgd_bytes(const struct sqz_gpu_psgd *p, size_t n, int probe);

/** Frees the device state (the caller has synchronized the device).  Accepts NULL. */
void sqz_gpu_psgd_free(struct sqz_gpu_psgd *p);

#endif
