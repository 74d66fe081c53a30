/*
 * The example plugin's device operations (compressor ABI v2), and its exported descriptor in a
 * build with CUDA.  Same method and wire format as the host codec (sqz_example.c): bfloat16 bits
 * of a = in + residual, 2 bytes an element, little-endian, rounded to nearest even
 * (EXAMPLE_ROUND=1) or truncated, never rounded up to infinity; residual = a - decoded.  The
 * arithmetic is the host's (integer bit operations, one float add and one float subtract per
 * element, --fmad=false), so host and device payloads of the same input are the same bytes.
 *
 * float32 elements only: the host table's query declines 16-bit buffers, where bfloat16 saves
 * nothing.  The kernels only enqueue on the caller's stream; the plugin allocates nothing.
 */
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#include "sqz_example.h"

#define EXAMPLE_THREADS 256

__device__ __forceinline__ uint16_t example_dev_encode(float a, int round)
{
    const uint32_t u     = __float_as_uint(a);
    const uint32_t trunc = u >> 16;
    if (!round) {
        return (uint16_t)trunc;
    }
    const uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(((rne & 0x7f80u) == 0x7f80u) ? trunc : rne);
}

__device__ __forceinline__ float example_dev_decode(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

__device__ __forceinline__ int example_dev_finite(float a)
{
    return (__float_as_uint(a) & 0x7f800000u) != 0x7f800000u;
}

/* One element a thread: payload bits, the residual update, the non-finite flag.  A non-finite
 * a keeps its residual (restore relies on it) and is coded as 0. */
__global__ void __launch_bounds__(EXAMPLE_THREADS)
    example_compress_kernel(const float *__restrict__ in, float *__restrict__ residual, size_t n,
                            int round, uint16_t *__restrict__ body, uint32_t *flags)
{
    int bad = 0;
    for (size_t i = (size_t)blockIdx.x * EXAMPLE_THREADS + threadIdx.x; i < n;
         i += (size_t)gridDim.x * EXAMPLE_THREADS) {
        /* (+ 0 without a residual, as the host codec: -0 becomes +0 there too) */
        const float a = __fadd_rn(in[i], residual != NULL ? residual[i] : 0.0f);
        if (!example_dev_finite(a)) {
            body[i] = 0;
            bad     = 1;
            continue;
        }
        const uint16_t h = example_dev_encode(a, round);
        body[i]          = h;
        if (residual != NULL) {
            residual[i] = __fsub_rn(a, example_dev_decode(h));
        }
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0) {
        atomicOr(flags, SQZ_DEVICE_FLAG_NONFINITE);
    }
}

/* out[i] = scale * (decoded of rank 0 + rank 1 + ...), summed in rank order from 0. */
__global__ void __launch_bounds__(EXAMPLE_THREADS)
    example_decode_kernel(const uint8_t *__restrict__ bodies, size_t stride, int nranks, size_t n,
                          float scale, float *out)
{
    for (size_t i = (size_t)blockIdx.x * EXAMPLE_THREADS + threadIdx.x; i < n;
         i += (size_t)gridDim.x * EXAMPLE_THREADS) {
        float s = 0.0f;
        for (int r = 0; r < nranks; r++) {
            const uint16_t *b = (const uint16_t *)(bodies + (size_t)r * stride);
            s                 = __fadd_rn(s, example_dev_decode(b[i]));
        }
        out[i] = scale == 1.0f ? s : __fmul_rn(s, scale);
    }
}

/* When *bad: residual = residual + decoded(own) - in where in + residual is finite. */
__global__ void __launch_bounds__(EXAMPLE_THREADS)
    example_restore_kernel(const uint32_t *__restrict__ bad, const uint16_t *__restrict__ own,
                           const float *__restrict__ in, float *__restrict__ residual, size_t n)
{
    if (*bad == 0) {
        return;
    }
    for (size_t i = (size_t)blockIdx.x * EXAMPLE_THREADS + threadIdx.x; i < n;
         i += (size_t)gridDim.x * EXAMPLE_THREADS) {
        if (example_dev_finite(__fadd_rn(in[i], residual[i]))) {
            residual[i] = __fsub_rn(__fadd_rn(residual[i], example_dev_decode(own[i])), in[i]);
        }
    }
}

static unsigned example_grid(size_t n)
{
    const size_t blocks = (n + EXAMPLE_THREADS - 1) / EXAMPLE_THREADS;
    return (unsigned)(blocks < 65535 * 4 ? blocks : 65535 * 4);
}

static sqz_status_t example_launched(void)
{
    return cudaGetLastError() == cudaSuccess ? SQZ_OK : SQZ_ERR_CUDA;
}

static size_t example_dev_payload_bytes(void *state, size_t n)
{
    (void)state;
    return n > SIZE_MAX / 2 ? 0 : 2 * n;
}

static size_t example_dev_workspace_bytes(void *state, size_t n, int dtype)
{
    (void)state, (void)n, (void)dtype;
    return 0;
}

static sqz_status_t example_dev_compress(void *state, const sqz_device_compress_args_v2_t *a)
{
    if (a->dtype != 1 || a->n == 0) {
        return a->n == 0 ? SQZ_OK : SQZ_ERR_INVALID_PARAM;
    }
    example_compress_kernel<<<example_grid(a->n), EXAMPLE_THREADS, 0, (cudaStream_t)a->stream>>>(
        (const float *)a->in, a->residual, a->n, example_round(state), (uint16_t *)a->body,
        a->flags);
    return example_launched();
}

static sqz_status_t example_dev_decode_sum(void *state, const sqz_device_decode_args_v2_t *a)
{
    (void)state;
    if (a->dtype != 1 || a->n == 0) {
        return a->n == 0 ? SQZ_OK : SQZ_ERR_INVALID_PARAM;
    }
    example_decode_kernel<<<example_grid(a->n), EXAMPLE_THREADS, 0, (cudaStream_t)a->stream>>>(
        (const uint8_t *)a->bodies, a->stride, a->nranks, a->n, a->scale, (float *)a->out);
    return example_launched();
}

static sqz_status_t example_dev_restore(void *state, const sqz_device_restore_args_v2_t *a)
{
    (void)state;
    if (a->dtype != 1 || a->n == 0 || a->residual == NULL) {
        return a->dtype != 1 && a->n > 0 ? SQZ_ERR_INVALID_PARAM : SQZ_OK;
    }
    example_restore_kernel<<<example_grid(a->n), EXAMPLE_THREADS, 0, (cudaStream_t)a->stream>>>(
        a->bad, (const uint16_t *)a->own, (const float *)a->in, a->residual, a->n);
    return example_launched();
}

static const sqz_device_ops_v2_t example_device_ops = {
    sizeof(sqz_device_ops_v2_t),
    0, /* flags: the key is unused (no randomness) */
    example_dev_payload_bytes,
    example_dev_workspace_bytes,
    example_dev_compress,
    example_dev_decode_sum,
    example_dev_restore,
};

extern "C" __attribute__((visibility("default"))) const sqz_compressor_v2_t sqz_compressor_v2 = {
    SQZ_COMPRESSOR_ABI_V2,
    sizeof(sqz_compressor_v2_t),
    &example_host_ops,
    &example_device_ops,
};
