/*
 * Deep Gradient Compression's corrections on the device (sqz_cuda_codec.h: sqz_gpu_dgc_input,
 * sqz_gpu_dgc_commit), element for element the host's (src/core/sqz_dgc.c): the same float
 * operations in the same order (--fmad=false), so a message differs from the host's only through
 * the clipping scale, whose double sum of squares runs in another order here.
 *
 * The norm: a fixed grid of at most DGC_NORM_BLOCKS blocks sums x^2 in double (each block in a
 * fixed tree order), then one block adds the block sums in order: the same bits at every call
 * for the same x.  The scale is then computed by every thread of the message kernel from that
 * one device double: no host synchronization.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_codec.h"
#include "sqz_cuda_common.cuh"

#define DGC_THREADS 256
#define DGC_NORM_BLOCKS 1024

/* Sums v over the block in a fixed tree order; thread 0 gets the total. */
__device__ __forceinline__ double dgc_block_sum(double v, double *smem)
{
    smem[threadIdx.x] = v;
    __syncthreads();
    for (int w = DGC_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) {
            smem[threadIdx.x] = __dadd_rn(smem[threadIdx.x], smem[threadIdx.x + w]);
        }
        __syncthreads();
    }
    return smem[0];
}

template <typename T>
__global__ void __launch_bounds__(DGC_THREADS)
    dgc_norm_kernel(const T *__restrict__ x, size_t n, double *__restrict__ part)
{
    __shared__ double smem[DGC_THREADS];
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * DGC_THREADS + threadIdx.x; i < n;
         i += (size_t)gridDim.x * DGC_THREADS) {
        const double v = (double)sqz_cu_to_f32(x[i]);
        acc = __dadd_rn(acc, __dmul_rn(v, v));
    }
    const double t = dgc_block_sum(acc, smem);
    if (threadIdx.x == 0) {
        part[1 + blockIdx.x] = t;
    }
}

__global__ void __launch_bounds__(DGC_THREADS)
    dgc_norm_finish_kernel(double *__restrict__ part, int nparts)
{
    __shared__ double smem[DGC_THREADS];
    double acc = 0.0;
    for (int q = (int)threadIdx.x; q < nparts; q += DGC_THREADS) {
        acc = __dadd_rn(acc, part[1 + q]);
    }
    const double t = dgc_block_sum(acc, smem);
    if (threadIdx.x == 0) {
        part[0] = t;
    }
}

/* msg (and unew) from x, u and the clipping scale (from *sq when limit > 0). */
template <typename T>
__global__ void __launch_bounds__(DGC_THREADS)
    dgc_input_kernel(const T *__restrict__ x, const float *__restrict__ u, float *msg,
                     float *unew, size_t n, float m, int nesterov, double limit,
                     const double *__restrict__ sq)
{
    float scale = 1.0f;
    if (limit > 0.0) {
        const double norm = __dsqrt_rn(*sq);
        if (norm > limit) { /* (a NaN norm is left to the compressor's finiteness check) */
            scale = __double2float_rn(__ddiv_rn(limit, norm));
        }
    }
    for (size_t i = (size_t)blockIdx.x * DGC_THREADS + threadIdx.x; i < n;
         i += (size_t)gridDim.x * DGC_THREADS) {
        const float g = __fmul_rn(sqz_cu_to_f32(x[i]), scale);
        if (u == NULL) {
            msg[i] = g;
        } else if (nesterov) {
            const float un = __fmul_rn(m, __fadd_rn(u[i], g));
            unew[i] = un;
            msg[i] = __fadd_rn(un, g);
        } else {
            msg[i] = __fadd_rn(__fmul_rn(m, u[i]), g);
        }
    }
}

__global__ void __launch_bounds__(DGC_THREADS)
    dgc_commit_kernel(const uint32_t *__restrict__ bad, float *__restrict__ u,
                      const float *__restrict__ unew, const float *__restrict__ v, size_t n,
                      int masking)
{
    if (*bad != 0) {
        return;
    }
    for (size_t i = (size_t)blockIdx.x * DGC_THREADS + threadIdx.x; i < n;
         i += (size_t)gridDim.x * DGC_THREADS) {
        u[i] = masking && v[i] == 0.0f ? 0.0f : unew[i];
    }
}

extern "C" size_t sqz_gpu_dgc_scratch_bytes(void)
{
    return (1 + DGC_NORM_BLOCKS) * sizeof(double);
}

extern "C" sqz_status_t sqz_gpu_dgc_input(const void *x, sqz_dtype_t dtype, const float *u,
                                          float *msg, float *unew, size_t n, float m,
                                          int nesterov, double limit, double *scratch,
                                          void *stream)
{
    if (x == NULL || msg == NULL || (u != NULL && nesterov && unew == NULL) ||
        (limit > 0.0 && scratch == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return SQZ_OK;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const unsigned g = sqz_cu_grid(n, DGC_THREADS * 8);
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        const SQZ_CU_ELEM(t) *xt = (const SQZ_CU_ELEM(t) *)x;
        if (limit > 0.0) {
            const unsigned nb = g < DGC_NORM_BLOCKS ? g : DGC_NORM_BLOCKS;
            dgc_norm_kernel<<<nb, DGC_THREADS, 0, st>>>(xt, n, scratch);
            SQZ_CU_CHECK_LAUNCH();
            dgc_norm_finish_kernel<<<1, DGC_THREADS, 0, st>>>(scratch, (int)nb);
            SQZ_CU_CHECK_LAUNCH();
        }
        dgc_input_kernel<<<g, DGC_THREADS, 0, st>>>(xt, u, msg, unew, n, m, nesterov, limit,
                                                     scratch);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

extern "C" sqz_status_t sqz_gpu_dgc_commit(const uint32_t *bad, float *u, const float *unew,
                                           const float *v, size_t n, int masking, void *stream)
{
    if (bad == NULL || u == NULL || unew == NULL || (masking && v == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return SQZ_OK;
    }
    dgc_commit_kernel<<<sqz_cu_grid(n, DGC_THREADS * 8), DGC_THREADS, 0, (cudaStream_t)stream>>>(
        bad, u, unew, v, n, masking);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}
