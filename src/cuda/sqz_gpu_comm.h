/* The GPU engine's communicator and its device buffers (private to src/cuda: the engine,
 * sqz_gpu_engine.c, runs calls; sqz_gpu_buffers.c keeps the buffers).
 *
 * A device buffer is the device backend's part of a state of the communicator's state store
 * (comm->store, src/core/sqz_state.h: the ext of a sqz_buf_state_t): the store names it (API key
 * or call-sequence slot, sqz_call_state), counts its calls and bytes, keeps it within
 * SQZ_STATE_MAX_BYTES and frees it, as for host buffers; the hooks here allocate its device
 * memory (with the ranks' agreement), zero, move and checkpoint its error feedback. */
#ifndef SQZ_GPU_COMM_H
#define SQZ_GPU_COMM_H

#include <cuda_runtime_api.h>

#include "cuda/sqz_cuda_codec.h"
#include "cuda/sqz_gpu_dgc.h"
#include "cuda/sqz_gpu_engine.h"
#include "cuda/sqz_gpu_hier.h"
#include "cuda/sqz_gpu_powersgd.h"
#include "cuda/sqz_gpu_reduce_scatter.h"
#include "sqz_ctx.h"
#include "sqz_gpu_efstore.h"
#include "sqz_policy.h"
#include "sqz_state.h"
#include "sqz_state_io.h"
#include "transport/sqz_nccl.h"
#include "transport/sqz_transport_nccl.h"

typedef struct sqz_gpu_buf {
    size_t      count;
    sqz_dtype_t dtype;
    float      *residual;  /* count floats, or NULL without error feedback (ef21: minus this
                              rank's estimator g_i, so that compress forms in - g_i) */
    void       *compact;   /* SQZ_EF_STORAGE bf16 / int8: the classic residual between calls;
                              residual is then the communicator's working area during a call
                              (sqz_gpu_efstore.h) and NULL between calls */
    float      *shared;    /* ef21: the shared estimator G (count floats; the output), or NULL */
    float      *decoded;   /* ef21: this call's decoded sum (count floats) and, after it, the
                              call's verdict word */
    float      *ec_err;    /* econtrol: this rank's error e_i (count floats; residual holds
                              minus its estimator h_i, shared H), or NULL */
    void       *payloads;  /* nranks * pbytes */
    void       *workspace; /* codec workspace */
    void       *full;      /* reduce-scatter: the whole decoded sum (count elements of dtype) */
    size_t      pbytes;
    size_t      bytes;     /* device memory held (PowerSGD's apart: sqz_gpu_buf_bytes) */
    struct sqz_gpu_psgd *psgd; /* powersgd: plan, warm starts, messages (sqz_gpu_powersgd.c) */
    sqz_gpu_sra_t       *sra;  /* the scatter-reduce exchange's state (then no payloads,
                                  workspace or full here: sqz_gpu_reduce_scatter.c) */
    sqz_levels_t         adapt; /* powersgd under SQZ_ADAPT: the per-layer ranks */
    sqz_gpu_dgc_t       *dgc;   /* DGC's momentum and message (sqz_gpu_dgc.c), or NULL */
    int                  dense_only; /* some rank could not allocate for it: dense everywhere */
} sqz_gpu_buf_t;

struct sqz_gpu_comm {
    const sqz_nccl_api_t *nccl;
    ncclComm_t            nc;
    sqz_nccl_transport_t *transport;
    int                   device;
    int                   enabled;   /* the selected method runs on the GPU */
    int                   ef;        /* keep a residual */
    int                   ef21;      /* SQZ_EF=ef21 for the all-gather exchange (not PowerSGD's,
                                        which has its own; sqz_ef_allreduce keeps ef14); also
                                        set for econtrol, EF21's buffers with one more */
    int                   econtrol;  /* SQZ_EF=econtrol (with ef21 set) */
    int                   psgd;      /* the method is powersgd (sqz_gpu_powersgd.c) */
    int                   dgc;       /* DGC's corrections around classic error feedback */
    int                   ef_storage; /* classic residuals compact between calls: SQZ_GPU_RES_*,
                                         0: fp32 (sqz_gpu_efstore.h) */
    sqz_gpu_efwork_t      efwork;     /* their fp32 working area */
    sqz_gpu_psgd_cfg_t    psgd_cfg;
    sqz_gpu_params_t      params;
    sqz_gpu_params_t      params_server; /* the scatter-reduce's phase 2 (the reduced chunk):
                                            params, top-k's density times TOPK_RESELECT */
    sqz_state_ext_ops_t   buf_ops;     /* comm->store's hooks for device buffers (arg: comm) */
    cudaStream_t          stream;      /* the stream of the call in progress (comm->lock held),
                                          where the store's hooks enqueue; 0 between calls */
    unsigned long long   *d_nonfinite; /* device counter written by sqz_gpu_restore */
    uint32_t             *d_agree;     /* one word for sqz_gpu_comm_agree */
    unsigned long long    nonfinite_seen;
    struct sqz_gpu_moe   *moe;         /* token all-to-all state (sqz_gpu_moe.c), or NULL */
    sqz_gpu_hier_t       *hier;        /* SQZ_HIER across hosts (sqz_gpu_hier.c), or NULL */
    /* A checkpoint's buffer records not applied yet (sqz_gpu_state_load): each is applied when
     * its buffer is next created (its device memory comes with an agreement between the ranks,
     * which a load cannot make). */
    unsigned char        *pending;
    size_t                npending;
};

/** The device word after b's payload array (nranks slots): its all-gather calls' verdict (some
 *  rank not finite), for classic error feedback's close (sqz_gpu_classic_close): the buffer's
 *  own, so that calls on other streams do not share it. */
static inline uint32_t *sqz_gpu_buf_verdict(const sqz_gpu_buf_t *b, int nranks)
{
    return (uint32_t *)((unsigned char *)b->payloads + b->pbytes * (size_t)nranks);
}

/** What a call needs of its buffer: sqz_gpu_buf_ready's argument. */
typedef struct sqz_gpu_need {
    sqz_comm_t       *comm;
    size_t            count;
    sqz_dtype_t       dtype;
    int               rs;   /* a reduce-scatter (the whole sum is decoded into `full`) */
    int               ef;   /* keeps error feedback */
    const sqz_plan_t *plan; /* the call's plan: its exchange and error feedback */
    cudaStream_t      s;
} sqz_gpu_need_t;

/** Sets comm->store's hooks for device buffers (at the communicator's creation). */
void sqz_gpu_bufs_init(sqz_comm_t *comm);

/** sqz_state_query_t's ready hook for device buffers (arg: a sqz_gpu_need_t): a state without a
 *  buffer (a new one, or one whose dtype changed) gets one, allocated on every rank at the same
 *  call, the ranks agreeing on whether all could (one word, one stream synchronization; when one
 *  could not allocate device memory, the buffer is dense on all, dense_only); a new buffer takes
 *  its layers' residuals (SQZ_LAYOUT) and its checkpoint record.  A reduce-scatter on an
 *  all-reduce's buffer adds its scratch the same way.  bs NULL (this rank could not make the
 *  state) agrees on "no state".  \return SQZ_OK; SQZ_ERR_NO_MEMORY when some rank has no state
 *  or no host memory for the buffer (every rank's sqz_call_state then drops the state);
 *  SQZ_ERR_TRANSPORT when the agreement failed. */
sqz_status_t sqz_gpu_buf_ready(void *need, sqz_buf_state_t *bs);

/** The device bytes of a buffer as every rank counts them (PowerSGD's local probing plan left
 *  out): the store's ext_bytes. */
size_t sqz_gpu_buf_bytes(const sqz_gpu_buf_t *b);

/** The device memory of every buffer, of the hierarchy's reduce-scatter column and of the
 *  compact residuals' working area, in the context's state_bytes. */
void sqz_gpu_account(sqz_comm_t *comm);

/** sqz_ef_forget: the error feedback of every buffer under key restarts from zero, and its
 *  counter (the device synchronized first: calls in flight may still write them). */
void sqz_gpu_bufs_forget(sqz_comm_t *comm, uint64_t key);

/** Checkpoints (comm->device's state_save / state_load): one record per buffer, then the
 *  hierarchy's; a load keeps the records until each buffer is next created. */
sqz_status_t sqz_gpu_state_save(sqz_comm_t *comm, sqz_wbuf_t *w);
sqz_status_t sqz_gpu_state_load(sqz_comm_t *comm, const void *buf, size_t len);

#endif
