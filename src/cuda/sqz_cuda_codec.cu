/*
 * The GPU codec entry points (sqz_cuda_codec.h): argument checks shared by every method, then the
 * method's row of the table below (sqz_cuda_methods.h; plugins/<name>/sqz_<name>.cu).
 * Also the two small launches every method uses: the payload header init and the "some payload
 * is bad" flag kernel.
 *
 * Argument rules (beyond the header's): payloads and the workspace must be 16-byte aligned
 * (cudaMalloc gives 256; payload sizes are multiples of 16, so payloads + r * payload_bytes stays
 * aligned), in and out aligned to their element size, residual to 4 bytes.  16-byte alignment of
 * in, residual and out is not required: kernels then use scalar accesses.  n == 0 is a no-op.
 * A parameter set a method does not support gives payload_bytes() == 0 and SQZ_ERR_INVALID_PARAM
 * from the other calls.
 */
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_codec.h"
#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

/* ---------------------------------------------------------------------------------------------
 * Shared launches.
 * ------------------------------------------------------------------------------------------- */

__global__ void __launch_bounds__(32) sqz_cu_header_kernel(uint8_t *payload, size_t body,
                                                           size_t total)
{
    sqz_cu_header_init(payload, body, total);
}

__global__ void __launch_bounds__(256)
    sqz_cu_flags_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t pbytes,
                        uint32_t *__restrict__ bad_out, unsigned long long *counter)
{
    const int bad = sqz_cu_block_any_bad(payloads, nranks, pbytes);
    if (threadIdx.x == 0) {
        *bad_out = (uint32_t)bad;
        if (bad && counter != NULL) {
            atomicAdd(counter, 1ull);
        }
    }
}

extern "C" sqz_status_t sqz_cu_launch_header_init(void *payload, size_t body, size_t total,
                                                  void *stream)
{
    sqz_cu_header_kernel<<<1, 32, 0, (cudaStream_t)stream>>>((uint8_t *)payload, body, total);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

extern "C" sqz_status_t sqz_cu_launch_flags(const void *payloads, int nranks, size_t pbytes,
                                            uint32_t *bad_out, unsigned long long *counter,
                                            void *stream)
{
    sqz_cu_flags_kernel<<<1, 256, 0, (cudaStream_t)stream>>>((const uint8_t *)payloads, nranks,
                                                             pbytes, bad_out, counter);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Entry points.
 * ------------------------------------------------------------------------------------------- */

/* \return the element size of dtype, 0 for an unknown one. */
static size_t sqz_cu_dtype_size(sqz_dtype_t dtype)
{
    switch (dtype) {
    case SQZ_DTYPE_FLOAT32:
        return 4;
    case SQZ_DTYPE_FLOAT16:
    case SQZ_DTYPE_BFLOAT16:
        return 2;
    }
    return 0;
}

/* The method table, indexed by sqz_gpu_method_t. */
static const sqz_cu_method_t *const sqz_cu_methods[] = {
    NULL,
    &sqz_cu_topk_method,
    &sqz_cu_quant_method,
    &sqz_cu_sign_method,
    &sqz_cu_qsgd_method,
    &sqz_cu_randk_method,
    &sqz_cu_plugin_method,
    &sqz_cu_terngrad_method,
};

/* \return the row of p's method, or NULL for an unknown one. */
static const sqz_cu_method_t *sqz_cu_method(const sqz_gpu_params_t *p)
{
    const size_t rows = sizeof sqz_cu_methods / sizeof sqz_cu_methods[0];
    if (p == NULL || (unsigned)p->method >= rows) {
        return NULL;
    }
    return sqz_cu_methods[p->method];
}

extern "C" const char *sqz_gpu_method_name(sqz_gpu_method_t method)
{
    sqz_gpu_params_t p = {};
    p.method = method;
    const sqz_cu_method_t *m = sqz_cu_method(&p);
    return m != NULL ? m->name : NULL;
}

extern "C" int sqz_gpu_shared_key(const sqz_gpu_params_t *p)
{
    const sqz_cu_method_t *m = sqz_cu_method(p);
    if (m == &sqz_cu_plugin_method) {
        return p->plugin != NULL && (p->plugin->flags & SQZ_DEVICE_SHARED_KEY) != 0;
    }
    return m != NULL && m->shared_key;
}

size_t sqz_gpu_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    const sqz_cu_method_t *m = sqz_cu_method(p);
    return m != NULL ? m->payload_bytes(p, n) : 0;
}

size_t sqz_gpu_workspace_bytes(const sqz_gpu_params_t *p, size_t n, sqz_dtype_t dtype)
{
    const sqz_cu_method_t *m = sqz_cu_method(p);
    return m != NULL ? m->workspace_bytes(p, n, dtype) : 0;
}

/* \return 1 when p names a method and parameters it supports for n elements (n == 0 is checked
 *  as n == 1, so that bad parameters are reported even for empty buffers). */
static int sqz_cu_params_ok(const sqz_gpu_params_t *p, size_t n)
{
    return sqz_gpu_payload_bytes(p, n > 0 ? n : 1) != 0;
}

sqz_status_t sqz_gpu_compress(const sqz_gpu_params_t *p, const void *in, sqz_dtype_t dtype,
                              float *residual, size_t n, uint32_t key, void *payload,
                              void *workspace, void *stream)
{
    const size_t es = sqz_cu_dtype_size(dtype);
    if (es == 0 || !sqz_cu_params_ok(p, n)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return SQZ_OK;
    }
    if (in == NULL || payload == NULL || workspace == NULL || !sqz_cu_aligned(in, es) ||
        !sqz_cu_aligned(residual, 4) || !sqz_cu_aligned(payload, 16) ||
        !sqz_cu_aligned(workspace, 16)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_cu_method(p)->compress(p, in, dtype, residual, n, key, payload, workspace, stream);
}

sqz_status_t sqz_gpu_decode_sum(const sqz_gpu_params_t *p, const void *payloads, int nranks,
                                size_t n, float scale, void *out, sqz_dtype_t dtype,
                                void *workspace, void *stream)
{
    const size_t es = sqz_cu_dtype_size(dtype);
    if (es == 0 || !sqz_cu_params_ok(p, n) || nranks < 1) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return SQZ_OK;
    }
    if (payloads == NULL || out == NULL || workspace == NULL || !sqz_cu_aligned(out, es) ||
        !sqz_cu_aligned(payloads, 16) || !sqz_cu_aligned(workspace, 16)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_cu_method(p)->decode_sum(p, payloads, nranks, n, scale, out, dtype, workspace,
                                        stream);
}

sqz_status_t sqz_gpu_restore(const sqz_gpu_params_t *p, const void *payloads, int nranks, int self,
                             const void *in, sqz_dtype_t dtype, float *residual, size_t n,
                             unsigned long long *nonfinite_calls, void *workspace, void *stream)
{
    if (!sqz_cu_params_ok(p, n) || nranks < 1 || self < 0 || self >= nranks) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return SQZ_OK; /* no payload bytes, hence no header to look at */
    }
    if (workspace == NULL || !sqz_cu_aligned(workspace, 16)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    uint32_t *bad = &((sqz_cu_ctrl_t *)workspace)->bad;
    const size_t pb = sqz_gpu_payload_bytes(p, n);
    sqz_status_t st = sqz_gpu_flag_any(payloads, nranks, pb, bad, nonfinite_calls, stream);
    if (st == SQZ_OK && residual != NULL) {
        st = sqz_gpu_restore_if(p, bad, (const uint8_t *)payloads + (size_t)self * pb, in, dtype,
                                residual, n, stream);
    }
    return st;
}

sqz_status_t sqz_gpu_flag_any(const void *payloads, int npayloads, size_t stride, uint32_t *bad,
                              unsigned long long *nonfinite_calls, void *stream)
{
    if (payloads == NULL || bad == NULL || npayloads < 1 || stride % 16 != 0 ||
        !sqz_cu_aligned(payloads, 16) || !sqz_cu_aligned(bad, 4) ||
        !sqz_cu_aligned(nonfinite_calls, 8)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_cu_launch_flags(payloads, npayloads, stride, bad, nonfinite_calls, stream);
}

sqz_status_t sqz_gpu_restore_if(const sqz_gpu_params_t *p, const uint32_t *bad, const void *own,
                                const void *in, sqz_dtype_t dtype, float *residual, size_t n,
                                void *stream)
{
    const size_t es = sqz_cu_dtype_size(dtype);
    if (es == 0 || !sqz_cu_params_ok(p, n)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0 || residual == NULL) {
        return SQZ_OK;
    }
    if (own == NULL || bad == NULL || in == NULL || !sqz_cu_aligned(own, 16) ||
        !sqz_cu_aligned(in, es) || !sqz_cu_aligned(residual, 4)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_cu_method(p)->restore(p, own, bad, in, dtype, residual, n, stream);
}

template <typename T>
__global__ void __launch_bounds__(256)
    sqz_cu_nan_if_kernel(const uint32_t *__restrict__ bad, T *__restrict__ out, size_t n,
                         unsigned long long *counter)
{
    if (*bad == 0) {
        return;
    }
    if (counter != NULL && blockIdx.x == 0 && threadIdx.x == 0) {
        atomicAdd(counter, 1ull);
    }
    const T q = sqz_cu_from_f32<T>(__int_as_float(0x7fc00000));
    for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)gridDim.x * 256) {
        out[i] = q;
    }
}

sqz_status_t sqz_gpu_nan_if(const uint32_t *bad, void *out, size_t n, sqz_dtype_t dtype,
                            unsigned long long *nonfinite_calls, void *stream)
{
    const size_t es = sqz_cu_dtype_size(dtype);
    if (es == 0 || bad == NULL || n == 0 || out == NULL || !sqz_cu_aligned(out, es) ||
        !sqz_cu_aligned(nonfinite_calls, 8)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        using T = SQZ_CU_ELEM(t);
        sqz_cu_nan_if_kernel<T><<<sqz_cu_grid(n, 256), 256, 0, (cudaStream_t)stream>>>(
            bad, (T *)out, n, nonfinite_calls);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

/* EF21's update, and EControl's (EC: with its error term err, strength eta). */
template <typename T, bool EC>
__global__ void __launch_bounds__(256)
    sqz_cu_ef21_finish_kernel(const uint32_t *__restrict__ bad, float *__restrict__ neg,
                              float *__restrict__ err, float eta, const T *in,
                              float *__restrict__ shared, const float *__restrict__ sum, T *out,
                              size_t n)
{
    const int b = *bad != 0;
    const T   q = sqz_cu_from_f32<T>(__int_as_float(0x7fc00000));
    for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)gridDim.x * 256) {
        const float e = EC ? err[i] : 0.0f;
        if (b) {
            if (EC) {
                neg[i] = __fsub_rn(neg[i], __fmul_rn(eta, e));
            }
            out[i] = q;
            continue;
        }
        const float x = sqz_cu_to_f32(in[i]); /* (read before out, which may be in, is written) */
        if (EC) {
            const float r = neg[i];
            err[i]        = __fadd_rn(__fmul_rn(__fsub_rn(1.0f, eta), e), r);
            neg[i]        = __fsub_rn(__fsub_rn(r, __fmul_rn(eta, e)), x);
        } else {
            neg[i] = __fsub_rn(neg[i], x);
        }
        const float g = __fadd_rn(shared[i], sum[i]);
        shared[i]     = g;
        out[i]        = sqz_cu_from_f32<T>(g);
    }
}

sqz_status_t sqz_gpu_ef21_finish(const uint32_t *bad, float *neg_estimate, float *err, float eta,
                                 const void *in, float *shared, const float *sum, void *out,
                                 size_t n, sqz_dtype_t dtype, void *stream)
{
    const size_t es = sqz_cu_dtype_size(dtype);
    if (es == 0 || bad == NULL || neg_estimate == NULL || in == NULL || shared == NULL ||
        sum == NULL || out == NULL || !sqz_cu_aligned(in, es) || !sqz_cu_aligned(out, es)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return SQZ_OK;
    }
    const unsigned grid = sqz_cu_grid(n, 256);
    cudaStream_t   st   = (cudaStream_t)stream;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        using T = SQZ_CU_ELEM(t);
        if (err != NULL) {
            sqz_cu_ef21_finish_kernel<T, true><<<grid, 256, 0, st>>>(
                bad, neg_estimate, err, eta, (const T *)in, shared, sum, (T *)out, n);
        } else {
            sqz_cu_ef21_finish_kernel<T, false><<<grid, 256, 0, st>>>(
                bad, neg_estimate, NULL, 0.0f, (const T *)in, shared, sum, (T *)out, n);
        }
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

__global__ void __launch_bounds__(256)
    sqz_cu_econtrol_begin_kernel(float *__restrict__ neg_h, const float *__restrict__ err,
                                 float eta, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)gridDim.x * 256) {
        neg_h[i] = __fadd_rn(neg_h[i], __fmul_rn(eta, err[i]));
    }
}

sqz_status_t sqz_gpu_econtrol_begin(float *neg_h, const float *err, float eta, size_t n,
                                    void *stream)
{
    if (neg_h == NULL || err == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return SQZ_OK;
    }
    sqz_cu_econtrol_begin_kernel<<<sqz_cu_grid(n, 256), 256, 0, (cudaStream_t)stream>>>(
        neg_h, err, eta, n);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}
