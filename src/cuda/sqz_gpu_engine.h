/* Internals of the GPU engine shared with the tools and tests. */
#ifndef SQZ_GPU_ENGINE_H
#define SQZ_GPU_ENGINE_H

#include "cuda/sqz_cuda_codec.h"
#include "sqz_ctx.h"

/** Fills the codec parameters of ctx's method.  \return 1 when the method has a GPU kernel
 *  (topk, quant, sign), 0 otherwise. */
int sqz_gpu_params_from_ctx(const sqz_ctx_t *ctx, sqz_gpu_params_t *p);

#endif
