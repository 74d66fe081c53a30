/*
 * DGC's corrections on the GPU path (SQZ_DGC_MOMENTUM, SQZ_DGC_NESTEROV, SQZ_DGC_MASKING,
 * SQZ_DGC_CLIP; src/core/sqz_dgc.h has the algorithm): a feature attached to one device buffer,
 * around a compressed call with classic error feedback.  begin() computes the message the
 * compressor sees (fp32) and the new momentum aside; end() commits the momentum only when no
 * rank was non-finite (the verdict word, decided on the device), with masking from the new
 * residual, so a NaN step leaves the momentum as it was, as on the host.
 */
#ifndef SQZ_GPU_DGC_H
#define SQZ_GPU_DGC_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "sqz_ctx.h"

typedef struct sqz_gpu_dgc sqz_gpu_dgc_t;

/** Device bytes of a buffer of count elements. */
size_t sqz_gpu_dgc_bytes(const sqz_core_params_t *p, size_t count);

/** Allocates the momentum (zeroed on s), the message and the scratch.  \return SQZ_OK, or
 *  SQZ_ERR_NO_MEMORY (nothing held). */
sqz_status_t sqz_gpu_dgc_create(const sqz_core_params_t *p, size_t count, cudaStream_t s,
                                sqz_gpu_dgc_t **out);

void sqz_gpu_dgc_free(sqz_gpu_dgc_t *d);

/** The momentum restarts from zero (sqz_ef_forget). */
void sqz_gpu_dgc_forget(sqz_gpu_dgc_t *d, cudaStream_t s);

/** Enqueues the message of in (count elements of dtype) for nranks ranks; *msg gets it (count
 *  floats, device).  \return SQZ_OK or SQZ_ERR_CUDA. */
sqz_status_t sqz_gpu_dgc_begin(sqz_gpu_dgc_t *d, const sqz_core_params_t *p, int nranks,
                               const void *in, sqz_dtype_t dtype, cudaStream_t s,
                               const float **msg);

/** The momentum (count floats, device), or NULL (d NULL, or clipping alone): checkpoints. */
float *sqz_gpu_dgc_momentum(sqz_gpu_dgc_t *d);

/** A device word for the call's verdict (for exchanges that do not keep one). */
uint32_t *sqz_gpu_dgc_verdict(sqz_gpu_dgc_t *d);

/** Enqueues the commit: unless *bad, the momentum becomes the new one, masked where residual
 *  (count floats, the call's new worker residual) is 0. */
sqz_status_t sqz_gpu_dgc_end(sqz_gpu_dgc_t *d, const sqz_core_params_t *p, const uint32_t *bad,
                             const float *residual, cudaStream_t s);

#endif /* SQZ_GPU_DGC_H */
