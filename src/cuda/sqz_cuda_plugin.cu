/*
 * A v2 plugin's device operations (include/squeeze/compressor_v2.h) behind the contract of a row
 * of the codec's method table (sqz_cuda_methods.h), so that every exchange, error-feedback
 * variant and feature of the GPU engine runs a plugin as it runs a built-in method.
 *
 * What the row adds around the plugin's kernels, so that plugins need not know it:
 *  - the payload header: written here before compress (magic, flags 0) with the padding after
 *    the body zeroed; the plugin writes the body and ORs SQZ_DEVICE_FLAG_NONFINITE into the
 *    header's flags word, which it sees as `flags` (SQZ_GPU_FLAG_NONFINITE, the same bit);
 *  - the flagged-payload rule of decode_sum: after the plugin's decode, when any payload is
 *    flagged (or lacks the magic) the whole output becomes NaN, as every built-in decode does;
 *  - the workspace's control words (SQZ_CU_WS_CTRL_BYTES, whose `bad` word sqz_gpu_restore
 *    uses) ahead of the plugin's own workspace.
 * p->plugin_state is the communicator's compressor state; the engine calls into it from one
 * thread at a time, as compressor_v1.h promises plugins.
 */
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_codec.h"
#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

static_assert(SQZ_DEVICE_FLAG_NONFINITE == SQZ_GPU_FLAG_NONFINITE,
              "the plugin's flag is the header's");

#define SQZ_CU_PLUGIN_HEADER 16

static size_t sqz_cu_plugin_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* The plugin's body bytes for n elements, 0 when it declines n or has no device ops. */
static size_t sqz_cu_plugin_body(const sqz_gpu_params_t *p, size_t n)
{
    if (p->plugin == NULL) {
        return 0;
    }
    const size_t b = p->plugin->payload_bytes(p->plugin_state, n);
    return b > SIZE_MAX / 2 ? 0 : b;
}

static size_t sqz_cu_plugin_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    const size_t b = sqz_cu_plugin_body(p, n);
    return b == 0 ? 0 : SQZ_CU_PLUGIN_HEADER + sqz_cu_plugin_up(b, 16);
}

static size_t sqz_cu_plugin_workspace_bytes(const sqz_gpu_params_t *p, size_t n,
                                            sqz_dtype_t dtype)
{
    const size_t w = p->plugin != NULL ? p->plugin->workspace_bytes(p->plugin_state, n, (int)dtype)
                                       : 0;
    return SQZ_CU_WS_CTRL_BYTES + sqz_cu_plugin_up(w, 256);
}

/* The plugin's part of the workspace, NULL when it asked for none. */
static void *sqz_cu_plugin_ws(const sqz_gpu_params_t *p, void *workspace, size_t n,
                              sqz_dtype_t dtype)
{
    const size_t w = p->plugin->workspace_bytes(p->plugin_state, n, (int)dtype);
    return w == 0 ? NULL : (uint8_t *)workspace + SQZ_CU_WS_CTRL_BYTES;
}

static sqz_status_t sqz_cu_plugin_compress(const sqz_gpu_params_t *p, const void *in,
                                           sqz_dtype_t dtype, float *residual, size_t n,
                                           uint32_t key, void *payload, void *workspace,
                                           void *stream)
{
    const size_t body  = sqz_cu_plugin_body(p, n);
    const size_t total = sqz_cu_plugin_payload_bytes(p, n);
    sqz_status_t st    = sqz_cu_launch_header_init(payload, SQZ_CU_PLUGIN_HEADER + body, total,
                                                   stream);
    if (st != SQZ_OK) {
        return st;
    }
    sqz_device_compress_args_v2_t a = {};
    a.size      = sizeof a;
    a.in        = in;
    a.dtype     = (int)dtype;
    a.residual  = residual;
    a.n         = n;
    a.key       = key;
    a.body      = (uint8_t *)payload + SQZ_CU_PLUGIN_HEADER;
    a.flags     = (uint32_t *)payload + 1;
    a.workspace = sqz_cu_plugin_ws(p, workspace, n, dtype);
    a.stream    = stream;
    return p->plugin->compress(p->plugin_state, &a);
}

static sqz_status_t sqz_cu_plugin_decode_sum(const sqz_gpu_params_t *p, const void *payloads,
                                             int nranks, size_t n, float scale, void *out,
                                             sqz_dtype_t dtype, void *workspace, void *stream)
{
    const size_t pb = sqz_cu_plugin_payload_bytes(p, n);
    sqz_device_decode_args_v2_t a = {};
    a.size      = sizeof a;
    a.bodies    = (const uint8_t *)payloads + SQZ_CU_PLUGIN_HEADER;
    a.stride    = pb;
    a.nranks    = nranks;
    a.n         = n;
    a.scale     = scale;
    a.out       = out;
    a.dtype     = (int)dtype;
    a.workspace = sqz_cu_plugin_ws(p, workspace, n, dtype);
    a.stream    = stream;
    sqz_status_t st = p->plugin->decode_sum(p->plugin_state, &a);
    uint32_t    *bad = &((sqz_cu_ctrl_t *)workspace)->bad;
    if (st == SQZ_OK) {
        st = sqz_cu_launch_flags(payloads, nranks, pb, bad, NULL, stream);
    }
    if (st == SQZ_OK) {
        st = sqz_gpu_nan_if(bad, out, n, dtype, NULL, stream);
    }
    return st;
}

static sqz_status_t sqz_cu_plugin_restore(const sqz_gpu_params_t *p, const void *own,
                                          const uint32_t *bad, const void *in, sqz_dtype_t dtype,
                                          float *residual, size_t n, void *stream)
{
    sqz_device_restore_args_v2_t a = {};
    a.size     = sizeof a;
    a.bad      = bad;
    a.own      = (const uint8_t *)own + SQZ_CU_PLUGIN_HEADER;
    a.in       = in;
    a.dtype    = (int)dtype;
    a.residual = residual;
    a.n        = n;
    a.stream   = stream;
    return p->plugin->restore(p->plugin_state, &a);
}

extern "C" const sqz_cu_method_t sqz_cu_plugin_method = {
    "(plugin)", /* never matched against SQZ_METHOD: the engine selects it by descriptor */
    sqz_cu_plugin_payload_bytes,
    sqz_cu_plugin_workspace_bytes,
    sqz_cu_plugin_compress,
    sqz_cu_plugin_decode_sum,
    sqz_cu_plugin_restore,
    0, /* shared_key: from the plugin's flags (sqz_gpu_shared_key) */
};
