/*
 * Device codecs of the GPU path: compress with fused error feedback, decode-and-sum of every rank's
 * payload, and residual restore, for the built-in methods topk, quant, sign and qsgd.
 *
 * Contract shared by every function here:
 *  - Host-callable C; each one only enqueues kernels on `stream` and returns at once: no host
 *    synchronization, no allocation, no cudaMemcpy to or from the host, nothing that is illegal
 *    while the stream is being captured into a CUDA graph.
 *  - Gradients and outputs are device arrays of `dtype` (float32, float16 or bfloat16); all
 *    arithmetic is float32 (fp32 accumulation), the residual is float32.
 *  - Payloads have a fixed size, a deterministic function of (params, n): ranks can exchange them
 *    with ncclAllGather without telling each other their sizes first.
 *  - Decoding is deterministic: the same payloads give bit-identical outputs on every rank (ranks
 *    are summed in rank order, each element by one thread, no floating-point atomics).
 *  - Built with --fmad=false, so that encoding and decoding round exactly as the CPU plugins do.
 *  \return SQZ_OK, or SQZ_ERR_CUDA when a launch failed (cudaGetLastError), or
 *  SQZ_ERR_INVALID_PARAM for arguments out of range.
 */
#ifndef SQZ_CUDA_CODEC_H
#define SQZ_CUDA_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze.h>
#include <squeeze/compressor_v2.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SQZ_GPU_TOPK  = 1,
    SQZ_GPU_QUANT = 2,
    SQZ_GPU_SIGN  = 3,
    SQZ_GPU_QSGD  = 4,
    SQZ_GPU_RANDK = 5,
    SQZ_GPU_PLUGIN = 6, /* a v2 plugin's device operations (src/cuda/sqz_cuda_plugin.cu) */
    SQZ_GPU_TERNGRAD = 7
} sqz_gpu_method_t;

/** Parameters of one codec (from SQZ_TOPK_*, SQZ_QUANT_*, SQZ_SIGN_*, SQZ_QSGD_*). */
typedef struct sqz_gpu_params {
    sqz_gpu_method_t method;
    double           density;    /**< topk, randk: k = max(1, ceil(density * n)) (capped at n) */
    int              bits;       /**< quant: 1..8 */
    size_t           bucket;     /**< quant, qsgd: elements per bucket (>= 8); sign: multiple of 8,
                                      or 0 for one bucket over the whole vector */
    int              stochastic; /**< quant: 1 stochastic rounding, 0 nearest */
    int              sign_l2;    /**< sign: 1 scale = sqrt(sum a^2 / m), 0 scale = sum |a| / m */
    int              levels;     /**< qsgd: s, 1..255 */
    int              qsgd_max;   /**< qsgd: 1 norm = max |a|, 0 norm = ||a||_2 (the paper) */
    int              randk_unbiased; /**< randk: RANDK_SCALE=unbiased (no device kernel: 0) */
    double           clip;       /**< terngrad: TERNGRAD_CLIP, standard deviations (0: off);
                                      bucket: TERNGRAD_BUCKET */
    const sqz_device_ops_v2_t *plugin; /**< SQZ_GPU_PLUGIN: the plugin's device operations */
    void            *plugin_state;     /**< SQZ_GPU_PLUGIN: their state (the communicator's
                                            compressor state, one thread at a time) */
} sqz_gpu_params_t;

/* Every payload starts with this 16-byte header, written by compress. */
#define SQZ_GPU_MAGIC 0x47515a53u          /* "SQZG" */
#define SQZ_GPU_FLAG_NONFINITE 1u          /* some a[i] = in[i] + residual[i] was NaN or Inf */
typedef struct sqz_gpu_header {
    uint32_t magic;
    uint32_t flags;
    uint32_t count;    /* topk: entries used (<= k); quant, sign: 0 */
    uint32_t reserved;
} sqz_gpu_header_t;

/*
 * Payload bodies (after the header), little-endian, identical to the CPU plugins' wire formats
 * for quant and sign (so that the CPU decoders can check GPU payloads):
 *  quant: nb = ceil(n / bucket) pairs (f32 mn, f32 unit), then n codes of `bits` bits packed
 *         LSB-first; total 16 + 8 * nb + ceil(n * bits / 8), rounded up to a multiple of 16.
 *  sign:  nb f32 scales (nb = ceil(n / bucket), or 1 for bucket 0), then n bits LSB-first
 *         (bit = a >= 0; decoded = bit ? +s : -s); total 16 + 4 * nb + ceil(n / 8), rounded up
 *         to a multiple of 16.
 *  topk:  k u32 indices (strictly increasing over the `count` used entries), then k f32 values;
 *         total 16 + 8 * k rounded up to a multiple of 16.  Entries past `count` are ignored.
 *  randk: header count = k, reserved = the key; then k f32 values, the kept a in stratum order
 *         (plugins/randk/sqz_randk.cu: one position per stratum of n / k elements, from the
 *         key); total 16 + 4 * k rounded up to a multiple of 16.
 *  plugin: the body its payload_bytes() gives, rounded up to a multiple of 16 and zero-padded.
 *  qsgd:  nb f32 norms (nb = ceil(n / bucket)), then n codes of b = 1 + L bits packed
 *         LSB-first, L = ceil(log2(s + 1)), code = level | sign << L (plugins/qsgd's format);
 *         total 16 + 4 * nb + ceil(n * b / 8), rounded up to a multiple of 16.
 */

/** \return the SQZ_METHOD name of a device method, NULL for an unknown one. */
const char *sqz_gpu_method_name(sqz_gpu_method_t method);

/** \return 1 when p's method needs the same key on every rank for the same part of a call
 *  (randk: the positions are drawn from it, and must be the same everywhere), else 0: the
 *  exchanges then derive the key without the rank, and a chunk keeps its key in both phases. */
int sqz_gpu_shared_key(const sqz_gpu_params_t *p);

/** \return the payload size in bytes for n elements (a multiple of 16; 0 when n == 0). */
size_t sqz_gpu_payload_bytes(const sqz_gpu_params_t *p, size_t n);

/** \return the device workspace in bytes that compress, decode_sum and restore need for n elements
 *  of dtype (the caller allocates it once per buffer and passes it to every call). */
size_t sqz_gpu_workspace_bytes(const sqz_gpu_params_t *p, size_t n, sqz_dtype_t dtype);

/**
 * Compresses a = in + residual (residual NULL: a = in, no error feedback) into `payload` and, with
 * a residual, writes residual = a - decoded(payload) in the same pass (in and residual are read
 * once, residual written once).
 *  - quant: per bucket mn = min a, unit as in plugins/quant quant_unit(); code =
 *    min(floor((a - mn) / unit + r), 2^bits - 1), r = 0.5 (nearest) or
 *    sqz_pu_hash_f32(key, i) (stochastic; element index i within the buffer); unit 0 => code 0.
 *  - sign: per bucket scale s as in plugins/sign (l1 or l2 over the bucket's m elements).
 *  - qsgd: per bucket norm = ||a||_2 or max |a| over its finite elements (rounded to f32 as
 *    plugins/qsgd does, scale = norm / s), level = floor(|a| * s / norm) + Bernoulli(frac) with
 *    the draw sqz_pu_hash_f32(key, i) < frac, at most s; decoded = +-level * scale.
 *  - topk: DGC's sampled threshold: |a| at m = min(n, 8192) sample positions (evenly spaced from
 *    an offset drawn from key), threshold = the ceil(density * m)-th largest of them; every
 *    element with |a| >= threshold (and a != 0) is a candidate; candidates are kept in index order
 *    up to k (per-tile staging may drop some: dropped ones stay in the residual); kept entries
 *    have residual 0, all others residual a.  Deterministic for a given (in, residual, key).
 *  Non-finite elements (a NaN or Inf): the header gets SQZ_GPU_FLAG_NONFINITE; such an element
 *  keeps its old residual, is coded as 0 (quant/sign: excluded from min/max/scale; topk: never
 *  selected) and its neighbours are coded as if it were absent.
 */
sqz_status_t sqz_gpu_compress(const sqz_gpu_params_t *p, const void *in, sqz_dtype_t dtype,
                              float *residual, size_t n, uint32_t key, void *payload,
                              void *workspace, void *stream);

/**
 * out = scale * sum over r = 0..nranks-1 (in rank order) of decode(payloads + r * payload_bytes),
 * in float32, written as dtype.  `out` may alias the `in` of an earlier compress (in-place
 * all-reduce).  When any payload's header has SQZ_GPU_FLAG_NONFINITE (or a wrong magic), every
 * element of out is set to NaN instead (all ranks see the same headers, so all agree).
 */
sqz_status_t sqz_gpu_decode_sum(const sqz_gpu_params_t *p, const void *payloads, int nranks,
                                size_t n, float scale, void *out, sqz_dtype_t dtype,
                                void *workspace, void *stream);

/**
 * If any of the nranks payloads is flagged SQZ_GPU_FLAG_NONFINITE: restores this rank's residual
 * to its value before compress (residual = residual + decoded(own payload) - in, element by
 * element, except where in + residual is not finite, which compress left untouched), and adds 1
 * to *nonfinite_calls (device counter; may be NULL).  Otherwise does nothing (decided on the
 * device).  Must run before decode_sum when out aliases in.  residual NULL: only counts.
 */
sqz_status_t sqz_gpu_restore(const sqz_gpu_params_t *p, const void *payloads, int nranks, int self,
                             const void *in, sqz_dtype_t dtype, float *residual, size_t n,
                             unsigned long long *nonfinite_calls, void *workspace, void *stream);

/* The pieces of sqz_gpu_restore, for exchanges whose own payloads and flagged payloads are not
 * one array (the scatter-reduce exchange: a rank's chunks go to different ranks, and the flags
 * that matter are those of the all-gathered phase-2 payloads). */

/** *bad = 1 when any of the npayloads payloads (stride bytes apart, stride a multiple of 16) is
 *  flagged SQZ_GPU_FLAG_NONFINITE or has a wrong magic, else 0; when 1, adds 1 to
 *  *nonfinite_calls (device counter; may be NULL).  bad is a device word. */
sqz_status_t sqz_gpu_flag_any(const void *payloads, int npayloads, size_t stride, uint32_t *bad,
                              unsigned long long *nonfinite_calls, void *stream);

/** When *bad (decided on the device): residual = residual + decoded(own) - in, element by element,
 *  except where in + residual is not finite (own: this rank's payload of these n elements, made by
 *  sqz_gpu_compress from in and residual).  Otherwise nothing. */
sqz_status_t sqz_gpu_restore_if(const sqz_gpu_params_t *p, const uint32_t *bad, const void *own,
                                const void *in, sqz_dtype_t dtype, float *residual, size_t n,
                                void *stream);

/** When *bad (decided on the device): every element of out (n > 0 of dtype) = NaN, and 1 added to
 *  *nonfinite_calls (device counter; may be NULL). */
sqz_status_t sqz_gpu_nan_if(const uint32_t *bad, void *out, size_t n, sqz_dtype_t dtype,
                            unsigned long long *nonfinite_calls, void *stream);

/** EF21's update after the decode (the engine's ef21 buffers; neg_estimate holds -g_i, so that
 *  compress sent C(in - g_i) and left in - g_i - d_i in it): unless *bad,
 *  neg_estimate -= in (now -(g_i + d_i)), shared += sum (the decoded messages, fp32), and
 *  out = shared as dtype; when *bad, out = NaN and neither estimator changes.  out may be in.
 *  EControl's (err: its error term e_i; NULL for EF21), with r = neg_estimate (the message
 *  minus its decoded form): err = (1 - eta) err + r, neg_estimate = r - eta err_old - in (that
 *  is -(h_i + d_i)), the same shared and out; when *bad, neg_estimate -= eta * err (the restore
 *  gave back the message's base), out = NaN and nothing else changes. */
sqz_status_t sqz_gpu_ef21_finish(const uint32_t *bad, float *neg_estimate, float *err, float eta,
                                 const void *in, float *shared, const float *sum, void *out,
                                 size_t n, sqz_dtype_t dtype, void *stream);

/** Damped error feedback (SQZ_EF_DECAY): unless *bad (decided on the device; bad NULL: always),
 *  x[i] *= decay for i < n, one float multiply each, as the host damps its residuals. */
sqz_status_t sqz_gpu_damp(const uint32_t *bad, float *x, size_t n, float decay, void *stream);

/** EControl's message (SQZ_EF=econtrol; the engine's ef21 buffers with one more, err = e_i):
 *  neg_h += eta * err before compress, so that compress sends C(in - h_i + eta e_i) and leaves
 *  that message minus its decoded form in neg_h. */
sqz_status_t sqz_gpu_econtrol_begin(float *neg_h, const float *err, float eta, size_t n,
                                    void *stream);

/* ---- Compact residual storage (SQZ_EF_STORAGE; src/cuda/sqz_cuda_residual.cu) ---- */

/** The compact forms, numbered as sqz_ef_storage_t (src/core/sqz_residual.h). */
#define SQZ_GPU_RES_BF16 1
#define SQZ_GPU_RES_INT8 2

/** Bytes of the compact form of n residual floats (bf16: 2n rounded up to 16; int8: n codes
 *  rounded up to 16, then the scales); 0 for an unknown storage. */
size_t sqz_gpu_res_compact_bytes(int storage, size_t n);

/** r[0, n) = the residual held in `compact` (fp32). */
sqz_status_t sqz_gpu_res_expand(int storage, const void *compact, float *r, size_t n,
                                void *stream);

/** compact = r[0, n) in the storage's form (the host's rounding: bf16 to nearest even; int8 per
 *  block of 256 with scale max |r| / 127). */
sqz_status_t sqz_gpu_res_compact(int storage, const float *r, void *compact, size_t n,
                                 void *stream);

/* ---- DGC's corrections on the device (src/cuda/sqz_cuda_dgc.cu), the host's arithmetic ---- */

/** Bytes of device scratch sqz_gpu_dgc_input needs when it clips (the norm's partial sums). */
size_t sqz_gpu_dgc_scratch_bytes(void);

/** The message the compressor sees (msg, n floats) from x (n of dtype) and the momentum u (NULL:
 *  no momentum), as src/core/sqz_dgc.c computes it: g = x * scale (scale = min(1, limit /
 *  ||x||_2) when limit > 0, else 1), then msg = m u + g, or under Nesterov unew = m (u + g) and
 *  msg = unew + g.  u is read, never written (sqz_gpu_dgc_commit writes it); without Nesterov
 *  the new momentum is msg itself.  scratch: sqz_gpu_dgc_scratch_bytes() when limit > 0. */
sqz_status_t sqz_gpu_dgc_input(const void *x, sqz_dtype_t dtype, const float *u, float *msg,
                               float *unew, size_t n, float m, int nesterov, double limit,
                               double *scratch, void *stream);

/** Unless *bad (decided on the device): u = unew, and 0 where masking and the new residual v is
 *  0 (the elements the compressor sent whole). */
sqz_status_t sqz_gpu_dgc_commit(const uint32_t *bad, float *u, const float *unew, const float *v,
                                size_t n, int masking, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* SQZ_CUDA_CODEC_H */
