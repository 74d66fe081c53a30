/*
 * GPU kernels of "terngrad" (TernGrad's stochastic ternarization per bucket), the device side of
 * plugins/terngrad/sqz_terngrad.c.  The payload body after the 16-byte header is the CPU plugin's
 * wire format: nb = ceil(n / B) f32 scalers, then n 2-bit codes packed 4 per byte LSB-first (0:
 * 0, 1: +1, 2: -1), so the CPU decoder reads device payloads.  Per bucket, as on the CPU:
 *   clip level c = TERNGRAD_CLIP * sigma (population standard deviation of a = in + residual;
 *                  infinite when clipping is off or sigma is 0), m = min(|a|, c)
 *   scaler s = max over the bucket of m
 *   code: nonzero when u * s < m, u = sqz_pu_hash_f32(element key, i), with a's sign;
 *   decoded = s * (+1, 0 or -1), residual = a - decoded
 * The one difference from the CPU: s is this rank's own scaler, never the MAX over the ranks
 * (the CPU's scaler sharing at stage 0).  Device operations have no agreement step before
 * compress, and do not need one: with its own scaler each probability m / s is at least the
 * shared one's, so the variance s |a| - a^2 of an element is at most the CPU's, the payload is
 * still unbiased (without clipping), and every decoder reads the scaler from the payload.  The
 * sums of sigma are doubles in another order than the CPU's, so a clip level can differ from the
 * CPU's in its last bit.  Non-finite elements: flagged in the header, coded 0, residual kept.
 *
 * Launches of compress (after the header init): the per-bucket statistics
 * (sqz_cu_launch_seg_stats: finiteness, sum a, sum a^2, max |a|) write each bucket's scaler into
 * the payload and its clip level into the workspace, then a thread per chunk of 8 elements
 * encodes (a chunk spans at most two buckets, since B >= 8) and writes its 16 code bits.
 * decode_sum: a thread per chunk of 8 decodes every rank in rank order.  restore: a thread per
 * chunk of 8 (residual + decoded - in).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

typedef struct terngrad_layout {
    size_t B;     /* elements per bucket */
    size_t nb;    /* buckets */
    size_t body;  /* header + scalers + packed codes */
    size_t total; /* body rounded up to 16 */
    float  clip;  /* TERNGRAD_CLIP (0: off) */
} terngrad_layout_t;

/* \return 0 for parameters out of range (bucket 8..2^24, clip 0 or 1..16) or n too large. */
static int terngrad_layout(const sqz_gpu_params_t *p, size_t n, terngrad_layout_t *L)
{
    if (p->bucket < 8 || p->bucket > ((size_t)1 << 24) || n > SIZE_MAX / 16 ||
        !(p->clip == 0.0 || (p->clip >= 1.0 && p->clip <= 16.0))) {
        return 0;
    }
    L->B = p->bucket;
    L->nb = sqz_cu_div_up(n, L->B);
    L->body = 16 + 4 * L->nb + sqz_cu_div_up(n, 4);
    L->total = sqz_cu_round16(L->body);
    L->clip = (float)p->clip;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Arithmetic (terngrad_decode_one / terngrad_clip_level / terngrad_encode_block of the CPU).
 * ------------------------------------------------------------------------------------------- */

__device__ __forceinline__ float terngrad_decode_one(float s, uint32_t code)
{
    return __fmul_rn(s, __fsub_rn((float)(code & 1u), (float)(code >> 1)));
}

/* The code of finite a against scaler s and clip level c. */
__device__ __forceinline__ uint32_t terngrad_code(float a, float s, float c, float u)
{
    const uint32_t bits = __float_as_uint(a);
    const float    m    = fminf(__uint_as_float(bits & 0x7fffffffu), c);
    const uint32_t nz   = (uint32_t)(__fmul_rn(u, s) < m);
    return nz + (nz & (bits >> 31));
}

/* Bucket statistics over the finite elements. */
typedef struct terngrad_stats {
    double   sum; /* sum a */
    double   sq;  /* sum a^2 */
    uint32_t mx;  /* max |a| bits */
    uint32_t bad; /* some a is NaN or Inf */
} terngrad_stats_t;

/* Commutative bit for bit (IEEE addition is), as sqz_cu_group_reduce() requires. */
struct terngrad_stats_op {
    __device__ __forceinline__ terngrad_stats_t operator()(terngrad_stats_t x,
                                                           terngrad_stats_t y) const
    {
        terngrad_stats_t r;
        r.sum = __dadd_rn(x.sum, y.sum);
        r.sq = __dadd_rn(x.sq, y.sq);
        r.mx = x.mx > y.mx ? x.mx : y.mx;
        r.bad = x.bad | y.bad;
        return r;
    }
};

/* The statistics policy of sqz_cu_launch_seg_stats: finishes a bucket into its scaler (in the
 * payload) and its clip level (clipv[k], in the workspace). */
struct terngrad_seg_policy {
    typedef terngrad_stats_t  stats_t;
    typedef terngrad_stats_op op_t;
    size_t                    n, B;
    float                     clip;
    float                    *clipv;
    __device__ __forceinline__ stats_t identity() const
    {
        stats_t s;
        s.sum = 0.0;
        s.sq = 0.0;
        s.mx = 0;
        s.bad = 0;
        return s;
    }
    __device__ __forceinline__ void add(stats_t *s, float a) const
    {
        if (sqz_cu_finite(a)) {
            const double d = (double)a;
            s->sum = __dadd_rn(s->sum, d);
            s->sq = __dadd_rn(s->sq, __dmul_rn(d, d));
            const uint32_t key = sqz_cu_abs_key(a);
            s->mx = key > s->mx ? key : s->mx;
        } else {
            s->bad = 1;
        }
    }
    /* (the CPU's terngrad_clip_level: INFINITY when off, or for a constant bucket) */
    __device__ __forceinline__ float clip_level(const stats_t &s, size_t m) const
    {
        if (clip <= 0.0f || m == 0) {
            return __int_as_float(0x7f800000);
        }
        const double mean = s.sum / (double)m;
        const double var = s.sq / (double)m - mean * mean;
        if (!(var > 0.0)) {
            return __int_as_float(0x7f800000);
        }
        const float c = __double2float_rn((double)clip * sqrt(var));
        return c > 0.0f ? c : __int_as_float(0x7f800000);
    }
    __device__ __forceinline__ void finish(uint8_t *payload, size_t k, const stats_t &s) const
    {
        const size_t m = n - k * B < B ? n - k * B : B;
        const float  c = clip_level(s, m);
        const float  x = fminf(__uint_as_float(s.mx), c);
        reinterpret_cast<float *>(payload + 16)[k] = sqz_cu_finite(x) ? x : 0.0f;
        clipv[k] = c;
        if (s.bad) {
            sqz_cu_flag_nonfinite(payload);
        }
    }
};

/* The bucket of element i (its scaler and clip level are the bucket's). */
__device__ __forceinline__ size_t terngrad_bucket(size_t i, size_t B)
{
    return sqz_cu_udiv(i, B);
}

/* ---------------------------------------------------------------------------------------------
 * Kernels.
 * ------------------------------------------------------------------------------------------- */

/* A thread per chunk of 8: codes and residual from the scalers in the payload and the clip
 * levels in clipv.  Non-finite elements are coded 0 and keep their residual; the statistics
 * pass has flagged the header for them already (as sign's encode relies on). */
template <typename T>
__global__ void __launch_bounds__(256)
    terngrad_encode_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                           size_t nb, const float *__restrict__ clipv, uint32_t key, int vec,
                           uint8_t *__restrict__ payload)
{
    const float *scalers = reinterpret_cast<const float *>(payload + 16);
    uint16_t    *codes   = reinterpret_cast<uint16_t *>(payload + 16 + 4 * nb);
    const size_t nch     = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int    len = (int)(n - i0 < 8 ? n - i0 : 8);
        float        a[8];
        sqz_cu_load_a8(in, res, i0, len, vec != 0, a);
        const uint32_t ekey = sqz_cu_elem_key(key, i0);
        uint32_t       v = 0, fin = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            if (e >= len || !sqz_cu_finite(a[e])) {
                continue;
            }
            const size_t   i = i0 + (size_t)e, k = terngrad_bucket(i, B);
            const float    s = scalers[k];
            const float    u = sqz_cu_hash_f32(ekey, (uint32_t)i);
            const uint32_t code = terngrad_code(a[e], s, clipv[k], u);
            v |= code << (2 * e);
            a[e] = __fsub_rn(a[e], terngrad_decode_one(s, code));
            fin |= 1u << e;
        }
        codes[ch] = (uint16_t)v;
        if (res != NULL) {
            sqz_cu_store8(res, i0, len, vec != 0, a, fin);
        }
    }
}

/* The decoded values of chunk ch of one payload into d (len elements; the others 0). */
__device__ __forceinline__ void terngrad_decode8(const uint8_t *p, size_t ch, int len, size_t B,
                                                 size_t nb, float d[8])
{
    const float   *scalers = reinterpret_cast<const float *>(p + 16);
    const uint32_t v = reinterpret_cast<const uint16_t *>(p + 16 + 4 * nb)[ch];
    const size_t   i0 = ch * 8;
    const size_t   k0 = terngrad_bucket(i0, B);
    const size_t   edge = (k0 + 1) * B; /* the next bucket's first element */
    const float    s0 = scalers[k0];
    const float    s1 = i0 + 8 > edge && edge < i0 + (size_t)len ? scalers[k0 + 1] : s0;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        d[e] = e < len ? terngrad_decode_one(i0 + (size_t)e < edge ? s0 : s1, (v >> (2 * e)) & 3u)
                       : 0.0f;
    }
}

/* out = scale * (sum over ranks, in order, of the decoded payloads), NaN everywhere when some
 * header is bad (every block reads every header, so all agree). */
template <typename T>
__global__ void __launch_bounds__(256)
    terngrad_decode_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t pbytes,
                           size_t n, size_t B, size_t nb, float scale, int vec, T *out)
{
    const int    bad = sqz_cu_block_any_bad(payloads, nranks, pbytes);
    const size_t nch = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const int len = (int)(n - ch * 8 < 8 ? n - ch * 8 : 8);
        float     acc[8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            acc[e] = bad ? __int_as_float(0x7fc00000) : 0.0f;
        }
        for (int r = 0; !bad && r < nranks; r++) {
            float d[8];
            terngrad_decode8(payloads + (size_t)r * pbytes, ch, len, B, nb, d);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                acc[e] = __fadd_rn(acc[e], d[e]);
            }
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            acc[e] = __fmul_rn(acc[e], scale);
        }
        sqz_cu_store8(out, ch * 8, len, vec != 0, acc, 0xffu);
    }
}

/* The own payload's decoded chunk. */
struct terngrad_chunk_decoder {
    const uint8_t *own;
    size_t         B, nb;
    __device__ __forceinline__ void operator()(size_t ch, int len, float d[8]) const
    {
        terngrad_decode8(own, ch, len, B, nb, d);
    }
};

/* When *bad: residual = residual + decoded(own) - in wherever in + residual is finite. */
template <typename T>
__global__ void __launch_bounds__(256)
    terngrad_restore_kernel(const uint8_t *__restrict__ own, const uint32_t *__restrict__ bad,
                            const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                            size_t nb, int vec)
{
    sqz_cu_restore_chunks(bad, in, res, n, vec, terngrad_chunk_decoder{own, B, nb});
}

/* ---------------------------------------------------------------------------------------------
 * Host side.  Workspace: the control words, the clip levels (nb floats), the statistics'
 * partials of large buckets.
 * ------------------------------------------------------------------------------------------- */
static size_t terngrad_clip_bytes(const terngrad_layout_t *L)
{
    return sqz_cu_round256(L->nb * sizeof(float));
}

static size_t terngrad_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    terngrad_layout_t L;
    return n > 0 && terngrad_layout(p, n, &L) ? L.total : 0;
}

static size_t terngrad_workspace_bytes(const sqz_gpu_params_t *p, size_t n, sqz_dtype_t dtype)
{
    terngrad_layout_t L;
    (void)dtype;
    size_t bytes = SQZ_CU_WS_CTRL_BYTES;
    if (n > 0 && terngrad_layout(p, n, &L)) {
        const sqz_cu_segs_t sg = sqz_cu_segments(L.B, L.nb);
        bytes += terngrad_clip_bytes(&L);
        if (sg.spb > 1) {
            bytes += sqz_cu_round256(sg.nseg * sizeof(terngrad_stats_t));
        }
    }
    return bytes;
}

template <typename T>
static sqz_status_t terngrad_compress_t(const terngrad_layout_t *L, const T *in, float *res,
                                        size_t n, uint32_t key, uint8_t *payload, uint8_t *ws,
                                        cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && (res == NULL || sqz_cu_aligned(res, 16));
    float    *clipv = reinterpret_cast<float *>(ws + SQZ_CU_WS_CTRL_BYTES);
    terngrad_stats_t *part =
        reinterpret_cast<terngrad_stats_t *>(ws + SQZ_CU_WS_CTRL_BYTES + terngrad_clip_bytes(L));
    const terngrad_seg_policy pol = {n, L->B, L->clip, clipv};
    const sqz_status_t sst = sqz_cu_launch_seg_stats(in, res, n, L->B, L->nb, pol, part, payload,
                                                     st);
    if (sst != SQZ_OK) {
        return sst;
    }
    terngrad_encode_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        in, res, n, L->B, L->nb, clipv, key, vec, payload);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t terngrad_compress(const sqz_gpu_params_t *p, const void *in,
                                      sqz_dtype_t dtype, float *residual, size_t n, uint32_t key,
                                      void *payload, void *workspace, void *stream)
{
    terngrad_layout_t L;
    if (!terngrad_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    uint8_t     *pl = (uint8_t *)payload;
    sqz_status_t s  = sqz_cu_launch_header_init(pl, L.body, L.total, st);
    if (s != SQZ_OK) {
        return s;
    }
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return terngrad_compress_t(&L, (const SQZ_CU_ELEM(t) *)in, residual, n, key, pl,
                                   (uint8_t *)workspace, st);
    });
}

static sqz_status_t terngrad_decode_sum(const sqz_gpu_params_t *p, const void *payloads,
                                        int nranks, size_t n, float scale, void *out,
                                        sqz_dtype_t dtype, void *workspace, void *stream)
{
    terngrad_layout_t L;
    (void)workspace;
    if (!terngrad_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        SQZ_CU_ELEM(t) *o = (SQZ_CU_ELEM(t) *)out;
        terngrad_decode_kernel<<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
            (const uint8_t *)payloads, nranks, L.total, n, L.B, L.nb, scale,
            sqz_cu_aligned(o, 16), o);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

static sqz_status_t terngrad_restore(const sqz_gpu_params_t *p, const void *own,
                                     const uint32_t *bad, const void *in, sqz_dtype_t dtype,
                                     float *residual, size_t n, void *stream)
{
    terngrad_layout_t L;
    if (!terngrad_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        const SQZ_CU_ELEM(t) *x = (const SQZ_CU_ELEM(t) *)in;
        const int vec = sqz_cu_aligned(x, 16) && sqz_cu_aligned(residual, 16);
        terngrad_restore_kernel<<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
            (const uint8_t *)own, bad, x, residual, n, L.B, L.nb, vec);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

extern "C" const sqz_cu_method_t sqz_cu_terngrad_method = {
    "terngrad", terngrad_payload_bytes, terngrad_workspace_bytes, terngrad_compress,
    terngrad_decode_sum, terngrad_restore, 0, /* shared_key: each rank its own noise */
};
