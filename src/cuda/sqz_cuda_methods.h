/*
 * Internal interface between the GPU codec dispatcher (src/cuda/sqz_cuda_codec.cu) and the
 * kernels of each method (plugins/<name>/sqz_<name>.cu): one table row per method.  Plain C
 * declarations, so that tests/cuda can use them too.
 *
 * The dispatcher has already checked what is common to every method: p, dtype and the pointers
 * are valid, payload(s) and workspace are 16-byte aligned, in is aligned to its element size and
 * residual/out to theirs, n > 0 and nranks >= 1.  Each method checks its own parameters
 * (SQZ_ERR_INVALID_PARAM) and only enqueues work on `stream`.
 */
#ifndef SQZ_CUDA_METHODS_H
#define SQZ_CUDA_METHODS_H

#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_codec.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * One method's device kernels: a row of the codec's method table (sqz_cuda_codec.cu), which
 * sqz_gpu_params_t.method indexes.  Each function has the contract of the sqz_cuda_codec.h
 * entry point of the same name, after the dispatcher's checks; restore is sqz_gpu_restore_if's
 * (the verdict `bad` is decided on the device).  payload_bytes returns 0 for parameters the
 * method does not support.  A method's kernels live in its plugin folder, next to its CPU codec.
 */
typedef struct sqz_cu_method {
    const char *name; /* the SQZ_METHOD value, as the CPU plugin's descriptor */
    size_t (*payload_bytes)(const sqz_gpu_params_t *p, size_t n);
    size_t (*workspace_bytes)(const sqz_gpu_params_t *p, size_t n, sqz_dtype_t dtype);
    sqz_status_t (*compress)(const sqz_gpu_params_t *p, const void *in, sqz_dtype_t dtype,
                             float *residual, size_t n, uint32_t key, void *payload,
                             void *workspace, void *stream);
    sqz_status_t (*decode_sum)(const sqz_gpu_params_t *p, const void *payloads, int nranks,
                               size_t n, float scale, void *out, sqz_dtype_t dtype,
                               void *workspace, void *stream);
    sqz_status_t (*restore)(const sqz_gpu_params_t *p, const void *own, const uint32_t *bad,
                            const void *in, sqz_dtype_t dtype, float *residual, size_t n,
                            void *stream);
    int shared_key; /* sqz_gpu_shared_key(): the key must not depend on the rank */
} sqz_cu_method_t;

extern const sqz_cu_method_t sqz_cu_topk_method;  /* plugins/topk/sqz_topk.cu */
extern const sqz_cu_method_t sqz_cu_quant_method; /* plugins/quant/sqz_quant.cu */
extern const sqz_cu_method_t sqz_cu_sign_method;  /* plugins/sign/sqz_sign.cu */
extern const sqz_cu_method_t sqz_cu_qsgd_method;  /* plugins/qsgd/sqz_qsgd.cu */
extern const sqz_cu_method_t sqz_cu_randk_method; /* plugins/randk/sqz_randk.cu */
extern const sqz_cu_method_t sqz_cu_terngrad_method; /* plugins/terngrad/sqz_terngrad.cu */
/* A v2 plugin's device operations behind the row contract (src/cuda/sqz_cuda_plugin.cu). */
extern const sqz_cu_method_t sqz_cu_plugin_method;

/* ---- topk's helpers (tests read them) ---- */

/** Elements per tile of the topk main kernel (one thread block), and the staging capacity of a
 *  tile: candidates past it in a tile are not sent (they stay in the residual). */
#define SQZ_CU_TOPK_TILE 4096
size_t sqz_cu_topk_stage_cap(double density);
/** k = max(1, ceil(density * n)), at most n (sqz_pu_density_count()). */
size_t sqz_cu_topk_k(double density, size_t n);
/* (After topk's compress ran, the first uint32_t of the workspace holds the threshold key, the
 *  bits of |thr|, and the third the number of candidates staged: tests read them.) */

/* ---- shared launches (src/cuda/sqz_cuda_codec.cu) ---- */

/** Writes the header {SQZ_GPU_MAGIC, 0, 0, 0} of `payload` and zeroes its bytes [body, total):
 *  compress enqueues it before kernels that OR flags into the header. */
sqz_status_t sqz_cu_launch_header_init(void *payload, size_t body, size_t total, void *stream);

/** One block: bad = any of the nranks payloads (stride pbytes) flagged non-finite or with a
 *  wrong magic, stored at *bad_out (device); when bad and counter != NULL, adds 1 to *counter. */
sqz_status_t sqz_cu_launch_flags(const void *payloads, int nranks, size_t pbytes,
                                 uint32_t *bad_out, unsigned long long *counter, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* SQZ_CUDA_METHODS_H */
