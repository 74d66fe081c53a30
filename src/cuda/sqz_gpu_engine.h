/* Internals of the GPU engine shared with the tools and tests. */
#ifndef SQZ_GPU_ENGINE_H
#define SQZ_GPU_ENGINE_H

#include <cuda_runtime_api.h>

#include "cuda/sqz_cuda_codec.h"
#include "sqz_ctx.h"
#include "transport/sqz_nccl.h"

/** Bytes of one element of a GPU-path dtype (float32 4, float16 and bfloat16 2). */
static inline size_t sqz_gpu_dtype_size(sqz_dtype_t d) { return d == SQZ_DTYPE_FLOAT32 ? 4 : 2; }

/** The NCCL type of a GPU-path dtype. */
static inline ncclDataType_t sqz_gpu_nccl_dtype(sqz_dtype_t d)
{
    return d == SQZ_DTYPE_FLOAT32 ? ncclFloat32 : d == SQZ_DTYPE_FLOAT16 ? ncclFloat16
                                                                         : ncclBfloat16;
}

/** Fills the codec parameters of ctx's method.  \return 1 when the method has device kernels: a
 *  built-in row of the codec (topk, quant, sign, qsgd, randk), or a v2 plugin's device
 *  operations when `state` is its compressor state (a communicator's; NULL: plugins are not
 *  taken); 0 otherwise. */
int sqz_gpu_params_from_ctx(const sqz_ctx_t *ctx, void *state, sqz_gpu_params_t *p);

/** The GPU engine over communicator nc of the NCCL entry points `api` (the real NCCL, or the
 *  device thread transport's): what sqz_comm_create_nccl does once NCCL is resolved. */
sqz_status_t sqz_gpu_comm_create(sqz_ctx_t *ctx, const sqz_nccl_api_t *api, ncclComm_t nc,
                                 sqz_comm_t **out);

struct sqz_gpu_moe;

/** The NCCL side of a GPU communicator (NULL for a CPU one): the real NCCL, the ncclComm_t in *nc,
 *  its device, and the slot of its token all-to-all state (created and owned by sqz_gpu_moe.c,
 *  freed with the communicator). */
const sqz_nccl_api_t *sqz_gpu_comm_nccl(sqz_comm_t *comm, void **nc, int *device,
                                        struct sqz_gpu_moe ***moe);

/** Whether `ok` holds on every rank of a GPU communicator: a one-word ncclAllReduce (MIN) on
 *  stream s, then a stream synchronization.  For the calls where one rank's allocation may fail
 *  alone (a new buffer, a new PowerSGD plan): every rank makes those calls at the same point, so
 *  they meet here in step, and all go dense together instead of some compressing.  \return the
 *  smallest `ok` (>= 0) of the ranks: 1 (all ok) or 0 (some rank not) for 0 / 1 answers; -1 when
 *  the agreement itself failed. */
int sqz_gpu_comm_agree(sqz_comm_t *comm, int ok, cudaStream_t s);

/** Tests only (NULL otherwise): when set and it returns nonzero for (rank, count), the device
 *  memory of a new buffer of count elements counts as not allocated on that rank, so that a test
 *  makes one rank run out of device memory (the ranks then agree to send the buffer dense). */
extern int (*sqz_gpu_alloc_fails)(int rank, size_t count);

/** Frees a token all-to-all state (NULL: no-op); `abandon`: host memory only (after an abort). */
void sqz_gpu_moe_free(struct sqz_gpu_moe *m, int abandon);

/**
 * One token all-to-all on the GPU (the NCCL interposer's MoE path), stream-ordered on `stream`
 * except for one host wait: peer r's block of stok[r] tokens (width elements of dtype) at sbuf[r]
 * is coded with `codec` (SQZ_MOE_DEDUP, or SQZ_MOE_LSH for float32), and the rtok[r] tokens from
 * peer r are decoded into rbuf[r].  The self block is copied exactly.  Sequence: encode every
 * block, a grouped ncclSend/ncclRecv of one uint64 size per peer, cudaStreamSynchronize (the
 * sizes reach the host), a grouped ncclSend/ncclRecv of the blocks, decode kernels.  Buffers must
 * not overlap; stok[rank] == rtok[rank].
 * \return SQZ_OK; otherwise *moved tells whether anything reached NCCL: 0 means the caller may
 * still run the original operations instead (exact passthrough), 1 that the call failed.  A
 * malformed block received leaves its tokens untouched and is reported (an error in the log) at
 * the next call.
 */
sqz_status_t sqz_gpu_moe_alltoall(sqz_comm_t *comm, int codec, sqz_dtype_t dtype, size_t width,
                                  const void *const *sbuf, const size_t *stok, void *const *rbuf,
                                  const size_t *rtok, void *stream, int *moved);

#endif
