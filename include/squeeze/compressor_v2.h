/*
 * Squeeze compressor plugin ABI, version 2: host operations and optional device operations.
 *
 * A v2 plugin is a shared object that exports
 *
 *     const sqz_compressor_v2_t sqz_compressor_v2;
 *
 * which points at two tables: `host`, the v1 descriptor of compressor_v1.h unchanged (name,
 * parameters, create/query/destroy, the host codec; its own abi field stays
 * SQZ_COMPRESSOR_ABI_V1: it is the layout of that table), and `device`, the method's CUDA
 * kernels, or NULL for a plugin with host operations only.  The two tables share one state: the
 * one create() made from the plugin's parameters, so host and device codecs read the same
 * settings.  A plugin that exports only `sqz_compressor_v1` keeps loading (the engine adapts it
 * into a v2 descriptor without device operations); when a shared object exports both symbols,
 * v2 wins.
 *
 * Device operations let the GPU engine (libsqueeze_nccl.so, the C API on device buffers, the
 * Python binding) run the method on device buffers with everything the engine has: its
 * exchanges (the all-gather, the scatter-reduce with re-compression when the host table's
 * exchange is SQZ_EXCHANGE_REDUCE_SCATTER, the reduce-scatter's first phase), error feedback
 * (ef14, ef21, none), DGC's momentum correction, the dense switch, hierarchy across hosts, the
 * agreement on allocation failures and non-finite inputs.  The plugin writes kernels only: it
 * never allocates, synchronizes or communicates.
 *
 * Contract of every device operation:
 *  - It only enqueues work on `stream` (a cudaStream_t) and returns at once: no host
 *    synchronization, no allocation, no copy to or from the host (the engine may capture the
 *    stream into a CUDA graph).
 *  - Buffers are device memory of the engine's device.  Elements are `dtype` (1 float32,
 *    2 float16, 3 bfloat16: the plugin's query declines the ones it does not take); the residual
 *    is float32.  The engine aligns payload bodies and the workspace to 16 bytes.
 *  - Payloads have a fixed size, payload_bytes(state, n): the engine moves them without telling
 *    the ranks their sizes.  The body starts after the engine's 16-byte header; the plugin never
 *    sees the header, it reports non-finite inputs through `flags`.
 *  - Deterministic: the same payloads decode to bit-identical outputs on every rank (sum the
 *    ranks in rank order, each element by one thread; no floating-point atomics).
 *  \return SQZ_OK, SQZ_ERR_CUDA when a launch failed (cudaGetLastError), SQZ_ERR_INVALID_PARAM
 *  for arguments out of range.  An error is taken as the device failing (as a failed launch of a
 *  built-in kernel is: the call fails, or goes dense on this rank alone): what a plugin cannot
 *  do it declines beforehand, in query() or with payload_bytes() 0, the same on every rank.
 */
#ifndef SQUEEZE_COMPRESSOR_V2_H
#define SQUEEZE_COMPRESSOR_V2_H

#include <squeeze/compressor_v1.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SQZ_COMPRESSOR_ABI_V2 2u

/** The host table of a v2 descriptor: compressor_v1.h's descriptor, field for field. */
typedef sqz_compressor_v1_t sqz_host_ops_v2_t;

/** flags of `*flags` in sqz_device_compress_args_v2_t: some a[i] = in[i] + residual[i] was NaN
 *  or Inf.  The engine then sends the call dense on every rank and has the residual restored. */
#define SQZ_DEVICE_FLAG_NONFINITE 1u

/** One device compress: a = in + residual (residual NULL: a = in, no error feedback) into the
 *  payload body, and, with a residual, residual = a - decoded(body) in the same pass.
 *  Non-finite elements: atomicOr(flags, SQZ_DEVICE_FLAG_NONFINITE); such an element keeps its
 *  old residual (restore relies on it) and is coded as the plugin likes (the engine discards
 *  flagged payloads).  `body` has payload_bytes(state, n) bytes, every one to be written.
 *  The scatter-reduce exchange also compresses each reduced chunk again (float32, with its
 *  owner's residual) through this same call. */
typedef struct sqz_device_compress_args_v2 {
    uint32_t    size;      /**< sizeof(sqz_device_compress_args_v2_t) of the engine */
    const void *in;        /**< n elements of dtype */
    int         dtype;
    float      *residual;  /**< n floats, or NULL */
    size_t      n;
    uint32_t    key;       /**< seeds the call's randomness; see SQZ_DEVICE_SHARED_KEY */
    void       *body;      /**< the payload body (16-byte aligned) */
    uint32_t   *flags;     /**< device word: OR SQZ_DEVICE_FLAG_NONFINITE into it */
    void       *workspace; /**< workspace_bytes(state, n, dtype) bytes, or NULL when 0 */
    void       *stream;
} sqz_device_compress_args_v2_t;

/** One device decode-and-sum: out = scale * sum over r = 0..nranks-1, in rank order, of
 *  decode(bodies + r * stride), in float32 and written as dtype.  out may alias the `in` of an
 *  earlier compress (in-place all-reduce).  The engine has checked nothing: a flagged payload
 *  decodes to anything finite or not, and the engine then replaces the whole output. */
typedef struct sqz_device_decode_args_v2 {
    uint32_t    size;      /**< sizeof(sqz_device_decode_args_v2_t) of the engine */
    const void *bodies;    /**< nranks payload bodies, stride bytes apart (16-byte aligned) */
    size_t      stride;
    int         nranks;
    size_t      n;
    float       scale;     /**< 1, or 1 / ranks for an average */
    void       *out;       /**< n elements of dtype */
    int         dtype;
    void       *workspace;
    void       *stream;
} sqz_device_decode_args_v2_t;

/** One device restore, after a non-finite input on some rank: when *bad (a device word, decided
 *  on the device: read it in the kernel), residual = residual + decoded(own) - in, element by
 *  element, except where in + residual is not finite (compress left those untouched); when
 *  !*bad, nothing.  Afterwards the residual is what it was before compress, up to float
 *  rounding, and the engine sends the call dense. */
typedef struct sqz_device_restore_args_v2 {
    uint32_t        size;  /**< sizeof(sqz_device_restore_args_v2_t) of the engine */
    const uint32_t *bad;
    const void     *own;   /**< this rank's body of these n elements, from compress */
    const void     *in;
    int             dtype;
    float          *residual;
    size_t          n;
    void           *stream;
} sqz_device_restore_args_v2_t;

/** flags of sqz_device_ops_v2_t: the key of a part of a call must be the same on every rank
 *  (rand-k draws its positions from it, and the ranks' positions must agree).  Without it the
 *  engine derives keys from the rank too, so that ranks draw independent randomness. */
#define SQZ_DEVICE_SHARED_KEY 0x1u

/** A method's device operations.  Fields are never reordered; new ones are appended and `size`
 *  tells the engine which are present. */
typedef struct sqz_device_ops_v2 {
    uint32_t size;  /**< sizeof(sqz_device_ops_v2_t) */
    uint32_t flags; /**< SQZ_DEVICE_* */
    /** Body bytes of one payload of n elements (a function of the state and n only: every rank
     *  computes the same); 0 declines n (the call passes through dense). */
    size_t (*payload_bytes)(void *state, size_t n);
    /** Device scratch the calls of n elements of dtype need (0: none); the engine allocates it
     *  once per buffer. */
    size_t (*workspace_bytes)(void *state, size_t n, int dtype);
    sqz_status_t (*compress)(void *state, const sqz_device_compress_args_v2_t *a);
    sqz_status_t (*decode_sum)(void *state, const sqz_device_decode_args_v2_t *a);
    sqz_status_t (*restore)(void *state, const sqz_device_restore_args_v2_t *a);
} sqz_device_ops_v2_t;

/** The v2 descriptor. */
typedef struct sqz_compressor_v2 {
    uint32_t                   abi;    /**< SQZ_COMPRESSOR_ABI_V2 */
    uint32_t                   size;   /**< sizeof(sqz_compressor_v2_t) */
    const sqz_host_ops_v2_t   *host;   /**< required: identity, parameters, state, host codec */
    const sqz_device_ops_v2_t *device; /**< NULL: host buffers only */
} sqz_compressor_v2_t;

#ifdef __cplusplus
}
#endif
#endif /* SQUEEZE_COMPRESSOR_V2_H */
