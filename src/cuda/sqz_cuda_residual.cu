/*
 * Compact residual storage on the device (SQZ_EF_STORAGE=bf16|int8), the host's forms
 * (src/core/sqz_residual.c) with the host's arithmetic:
 *  - bf16: n bfloat16, rounded to nearest even from the fp32 residual (a value that would round up
 *    to Inf is truncated instead);
 *  - int8: n int8 codes (padded to 16 bytes), then one float scale per block of 256 elements:
 *    scale = max |r| / 127 over the block, code = rint(r * (1 / scale)) (0 when scale is 0),
 *    decoded = scale * code.
 * The residual is finite (compress keeps non-finite values out of it), so no NaN handling.
 * Also damped error feedback's scaling (SQZ_EF_DECAY), residual *= decay as the host's sqz_scale.
 */
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_codec.h"
#include "sqz_cuda_common.cuh"

#define SQZ_CU_RES_INT8_BLOCK 256

static size_t sqz_cu_res_int8_codes(size_t n) { return (n + 15) / 16 * 16; }

extern "C" size_t sqz_gpu_res_compact_bytes(int storage, size_t n)
{
    if (storage == SQZ_GPU_RES_BF16) {
        return (2 * n + 15) / 16 * 16;
    }
    if (storage == SQZ_GPU_RES_INT8) {
        const size_t nb = (n + SQZ_CU_RES_INT8_BLOCK - 1) / SQZ_CU_RES_INT8_BLOCK;
        return sqz_cu_res_int8_codes(n) + 4 * nb;
    }
    return 0;
}

__device__ __forceinline__ uint16_t sqz_cu_res_to_bf16(float f)
{
    const uint32_t u = __float_as_uint(f);
    const uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(((r >> 23) & 0xffu) == 0xffu ? u >> 16 : r >> 16);
}

__global__ void __launch_bounds__(256)
    sqz_cu_res_bf16_expand(const uint16_t *__restrict__ h, float *__restrict__ r, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)gridDim.x * 256) {
        r[i] = __uint_as_float((uint32_t)h[i] << 16);
    }
}

__global__ void __launch_bounds__(256)
    sqz_cu_res_bf16_compact(const float *__restrict__ r, uint16_t *__restrict__ h, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)gridDim.x * 256) {
        h[i] = sqz_cu_res_to_bf16(r[i]);
    }
}

/* One block of 256 threads per storage block of 256 elements (grid-stride over blocks). */
__global__ void __launch_bounds__(SQZ_CU_RES_INT8_BLOCK)
    sqz_cu_res_int8_expand(const int8_t *__restrict__ q, const float *__restrict__ scale,
                           float *__restrict__ r, size_t n, size_t nb)
{
    for (size_t b = blockIdx.x; b < nb; b += gridDim.x) {
        const size_t i = b * SQZ_CU_RES_INT8_BLOCK + threadIdx.x;
        if (i < n) {
            r[i] = __fmul_rn(scale[b], (float)q[i]);
        }
    }
}

__global__ void __launch_bounds__(SQZ_CU_RES_INT8_BLOCK)
    sqz_cu_res_int8_compact(const float *__restrict__ r, int8_t *__restrict__ q,
                            float *__restrict__ scale, size_t n, size_t nb)
{
    __shared__ float warp_max[SQZ_CU_RES_INT8_BLOCK / 32];
    for (size_t b = blockIdx.x; b < nb; b += gridDim.x) {
        const size_t i = b * SQZ_CU_RES_INT8_BLOCK + threadIdx.x;
        const float  v = i < n ? r[i] : 0.0f;
        float        m = fabsf(v);
        for (int o = 16; o > 0; o /= 2) {
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        }
        if ((threadIdx.x & 31) == 0) {
            warp_max[threadIdx.x / 32] = m;
        }
        __syncthreads();
        float mx = 0.0f;
        for (int w = 0; w < SQZ_CU_RES_INT8_BLOCK / 32; w++) {
            mx = fmaxf(mx, warp_max[w]);
        }
        __syncthreads(); /* (warp_max is reused by the next block of the stride) */
        const float s   = __fdiv_rn(mx, 127.0f);
        const float inv = s > 0.0f ? __fdiv_rn(1.0f, s) : 0.0f;
        if (i < n) {
            q[i] = (int8_t)__float2int_rn(__fmul_rn(v, inv));
        }
        if (threadIdx.x == 0) {
            scale[b] = s;
        }
    }
}

extern "C" sqz_status_t sqz_gpu_res_expand(int storage, const void *compact, float *r, size_t n,
                                           void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    if (n == 0) {
        return SQZ_OK;
    }
    if (storage == SQZ_GPU_RES_BF16) {
        sqz_cu_res_bf16_expand<<<sqz_cu_grid(n, 256), 256, 0, st>>>((const uint16_t *)compact, r,
                                                                     n);
    } else if (storage == SQZ_GPU_RES_INT8) {
        const size_t nb = (n + SQZ_CU_RES_INT8_BLOCK - 1) / SQZ_CU_RES_INT8_BLOCK;
        const float *scale =
            (const float *)((const uint8_t *)compact + sqz_cu_res_int8_codes(n));
        sqz_cu_res_int8_expand<<<sqz_cu_grid(nb, 1), SQZ_CU_RES_INT8_BLOCK, 0, st>>>(
            (const int8_t *)compact, scale, r, n, nb);
    } else {
        return SQZ_ERR_INVALID_PARAM;
    }
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

extern "C" sqz_status_t sqz_gpu_res_compact(int storage, const float *r, void *compact, size_t n,
                                            void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    if (n == 0) {
        return SQZ_OK;
    }
    if (storage == SQZ_GPU_RES_BF16) {
        sqz_cu_res_bf16_compact<<<sqz_cu_grid(n, 256), 256, 0, st>>>(r, (uint16_t *)compact, n);
    } else if (storage == SQZ_GPU_RES_INT8) {
        const size_t nb    = (n + SQZ_CU_RES_INT8_BLOCK - 1) / SQZ_CU_RES_INT8_BLOCK;
        float       *scale = (float *)((uint8_t *)compact + sqz_cu_res_int8_codes(n));
        sqz_cu_res_int8_compact<<<sqz_cu_grid(nb, 1), SQZ_CU_RES_INT8_BLOCK, 0, st>>>(
            r, (int8_t *)compact, scale, n, nb);
    } else {
        return SQZ_ERR_INVALID_PARAM;
    }
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

/* Unless *bad (NULL: never bad): x[i] = x[i] * decay, rounded as the host's float multiply. */
__global__ void __launch_bounds__(256)
    sqz_cu_damp_kernel(const uint32_t *__restrict__ bad, float *__restrict__ x, size_t n,
                       float decay)
{
    if (bad != NULL && *bad != 0) {
        return;
    }
    for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)gridDim.x * 256) {
        x[i] = __fmul_rn(x[i], decay);
    }
}

extern "C" sqz_status_t sqz_gpu_damp(const uint32_t *bad, float *x, size_t n, float decay,
                                     void *stream)
{
    if (n == 0) {
        return SQZ_OK;
    }
    sqz_cu_damp_kernel<<<sqz_cu_grid(n, 256), 256, 0, (cudaStream_t)stream>>>(bad, x, n, decay);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}
