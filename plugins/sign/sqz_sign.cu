/*
 * GPU kernels of "sign" (scaled sign with fused error feedback), the device side of
 * plugins/sign/sqz_sign.c.  The payload body after the 16-byte header is the CPU plugin's wire
 * format: nb f32 scales, then one bit per element LSB-first (bit = a >= 0, decoded = bit ? s : -s,
 * residual = a - decoded).  Per bucket, over its m finite elements:
 *   l1: s = sum |a| / m        l2: s = sqrt(sum a^2 / m)
 * The sums are double (as on the CPU), but in another order (per-thread, then a butterfly and a
 * fixed cross-warp order): deterministic, and within a few double ulps of the CPU's sums, so the
 * float scale is almost always bit-identical and always within 1e-6 relative.
 * Non-finite elements are left out of the sums (and of m), get bit 0 and keep their residual; the
 * header is flagged.  A bucket without a finite element gets s = 0.
 *
 * Launch structure of compress (after the header-init launch):
 *  - fused path, 0 < bucket <= SIGN_FUSED_MAX (the default 4096): ONE kernel, a group of G
 *    threads per bucket holding its chunks of 8 in registers (see plugins/quant/sqz_quant.cu):
 *    sums reduced over the group, then bits (one byte per chunk) and residual from registers.
 *    Bytes touched per element: read in (4 or 2), read residual 4, write residual 4, write 1/8
 *    (+4/B for the scale).
 *  - bucket 0 (one scale for the whole vector) or larger buckets: a warp per segment sums, one
 *    block per bucket combines the segments (skipped when a bucket is one segment), then a
 *    thread per chunk of 8 encodes: in and residual are read twice (the grid-wide reduction must
 *    finish before the first bit is known).
 * decode_sum: ONE kernel, a thread per group of 32 elements with 8 ranks' signs loaded before
 * the first add (one scale, or buckets that are multiples of 32: sqz_cu_decode_wide), else
 * a thread per chunk of 8 over every rank in order.  restore: the flag
 * launch, then a thread per chunk.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

#define SIGN_THREADS 256
/* Chunks per thread of the fused path and the blocks per SM its registers are cut for (as in
 * plugins/quant/sqz_quant.cu: occupancy wins; measured on H100, NC 2 with 5 blocks per SM
 * reaches 97% of the copy bandwidth for float32, 90% for bfloat16). */
#ifndef SIGN_NC
#define SIGN_NC 2
#endif
#ifndef SIGN_MINB
#define SIGN_MINB 5
#endif
#define SIGN_FUSED_MAX (SIGN_THREADS * 8 * SIGN_NC)

typedef struct sign_layout {
    size_t B;     /* elements per bucket (n for bucket 0) */
    size_t nb;    /* buckets */
    size_t body;  /* header + scales + bits */
    size_t total; /* body rounded up to 16 */
    int    l2;
    int    fused;
} sign_layout_t;

/* \return 0 for a bucket that is not a multiple of 8, or n too large. */
static int sign_layout(const sqz_gpu_params_t *p, size_t n, sign_layout_t *L)
{
    if (p->bucket % 8 != 0 || n > SIZE_MAX / 16) {
        return 0;
    }
    L->B = p->bucket != 0 ? p->bucket : (n > 0 ? n : 1);
    L->nb = p->bucket != 0 ? sqz_cu_div_up(n, p->bucket) : 1;
    L->body = 16 + 4 * L->nb + sqz_cu_div_up(n, 8);
    L->total = sqz_cu_round16(L->body);
    L->l2 = p->sign_l2 != 0;
    L->fused = p->bucket != 0 && p->bucket <= SIGN_FUSED_MAX;
    return 1;
}

/* Bucket statistics over the finite elements. */
typedef struct sign_stats {
    double             s1;  /* sum |a| */
    double             s2;  /* sum a^2 */
    unsigned long long cnt; /* finite elements */
    uint32_t           bad;
} sign_stats_t;

__device__ __forceinline__ sign_stats_t sign_stats_identity(void)
{
    sign_stats_t s;
    s.s1 = 0.0;
    s.s2 = 0.0;
    s.cnt = 0;
    s.bad = 0;
    return s;
}

__device__ __forceinline__ void sign_stats_add(sign_stats_t *s, float a)
{
    if (sqz_cu_finite(a)) {
        const double d = (double)a;
        s->s1 = __dadd_rn(s->s1, fabs(d));
        s->s2 = __dadd_rn(s->s2, __dmul_rn(d, d));
        s->cnt++;
    } else {
        s->bad = 1;
    }
}

/* Commutative bit for bit (IEEE addition is), as sqz_cu_group_reduce() requires. */
struct sign_stats_op {
    __device__ __forceinline__ sign_stats_t operator()(sign_stats_t x, sign_stats_t y) const
    {
        sign_stats_t r;
        r.s1 = __dadd_rn(x.s1, y.s1);
        r.s2 = __dadd_rn(x.s2, y.s2);
        r.cnt = x.cnt + y.cnt;
        r.bad = x.bad | y.bad;
        return r;
    }
};

/* The scale of a bucket (0 without a finite element).  Both scales are at most max |a| up to
 * rounding, so they are finite. */
__device__ __forceinline__ float sign_scale(sign_stats_t s, int l2)
{
    if (s.cnt == 0) {
        return 0.0f;
    }
    const double m = (double)s.cnt;
    return l2 ? __double2float_rn(__dsqrt_rn(__ddiv_rn(s.s2, m)))
              : __double2float_rn(__ddiv_rn(s.s1, m));
}

/* Writes bucket k's scale sc and flags the header when it held a non-finite element. */
__device__ __forceinline__ void sign_store_scale(uint8_t *payload, size_t k, float sc, uint32_t bad)
{
    reinterpret_cast<float *>(payload + 16)[k] = sc;
    if (bad) {
        sqz_cu_flag_nonfinite(payload);
    }
}

/* Bits and residual of one chunk: finite elements (mask fin) get bit a >= 0 and residual
 * a - (a >= 0 ? s : -s), written into a. */
__device__ __forceinline__ uint32_t sign_encode8(float a[8], uint32_t fin, float s)
{
    uint32_t v = 0;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        if ((fin >> e) & 1u) {
            const bool pos = a[e] >= 0.0f;
            v |= (uint32_t)pos << e;
            a[e] = __fsub_rn(a[e], pos ? s : -s);
        }
    }
    return v;
}

/* ---------------------------------------------------------------------------------------------
 * Compress, fused path (layout of the groups as in quant_fused_kernel).
 * ------------------------------------------------------------------------------------------- */
template <typename T>
__global__ void __launch_bounds__(SIGN_THREADS, SIGN_MINB)
    sign_fused_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                      size_t nb, int l2, int glog2, int nc, int vec, uint8_t *__restrict__ payload)
{
    __shared__ sign_stats_t red[SIGN_THREADS / 32];
    const int G = 1 << glog2;
    const int g = (int)threadIdx.x & (G - 1);
    const size_t gpb = (size_t)(SIGN_THREADS >> glog2);
    const size_t units = (nb + gpb - 1) / gpb;
    uint8_t *bits = payload + 16 + 4 * nb;

    for (size_t u = blockIdx.x; u < units; u += gridDim.x) {
        const size_t k = u * gpb + (threadIdx.x >> glog2);
        const size_t s = k * B; /* a multiple of 8 */
        const size_t m = k < nb ? (n - s < B ? n - s : B) : 0;
        float a[SIGN_NC][8];
        uint32_t fin[SIGN_NC];
        sign_stats_t st = sign_stats_identity();
#pragma unroll
        for (int j = 0; j < SIGN_NC; j++) {
            fin[j] = 0;
            const size_t c = (size_t)g + (size_t)j * G;
            if (j < nc && c * 8 < m) {
                const int len = (int)(m - c * 8 < 8 ? m - c * 8 : 8);
                sqz_cu_load_a8(in, res, s + c * 8, len, vec != 0, a[j]);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if (e < len) {
                        sign_stats_add(&st, a[j][e]);
                        fin[j] |= (uint32_t)sqz_cu_finite(a[j][e]) << e;
                    }
                }
            }
        }
        st = sqz_cu_group_reduce(st, glog2, red, sign_stats_op());
        if (k >= nb) {
            continue; /* no barrier below */
        }
        /* Every lane computes the scale (no divergent copy of the division). */
        const float sc = sign_scale(st, l2);
        if (g == 0) {
            sign_store_scale(payload, k, sc, st.bad);
        }
#pragma unroll
        for (int j = 0; j < SIGN_NC; j++) {
            const size_t c = (size_t)g + (size_t)j * G;
            if (j < nc && c * 8 < m) {
                const int len = (int)(m - c * 8 < 8 ? m - c * 8 : 8);
                const size_t i0 = s + c * 8;
                const uint32_t v = sign_encode8(a[j], fin[j], sc);
                if (res != NULL) {
                    sqz_cu_store8(res, i0, len, vec != 0, a[j], fin[j]);
                }
                bits[s / 8 + c] = (uint8_t)v;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Compress, segmented path (bucket 0 or large buckets).
 * ------------------------------------------------------------------------------------------- */

/* The per-bucket statistics of the general path (sqz_cu_launch_seg_stats): the scale's sums and
 * finiteness, finished into the bucket's scale. */
struct sign_seg_policy {
    typedef sign_stats_t  stats_t;
    typedef sign_stats_op op_t;
    int                   l2;
    __device__ __forceinline__ stats_t identity() const { return sign_stats_identity(); }
    __device__ __forceinline__ void    add(stats_t *s, float a) const { sign_stats_add(s, a); }
    __device__ __forceinline__ void    finish(uint8_t *payload, size_t k, const stats_t &s) const
    {
        sign_store_scale(payload, k, sign_scale(s, l2), s.bad);
    }
};

/* A thread per chunk of 8: bits and residual from the scales in the payload.  B is a multiple
 * of 8 or the whole vector, so a chunk lies in one bucket. */
template <typename T>
__global__ void __launch_bounds__(256)
    sign_encode_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                       size_t nb, int vec, uint8_t *__restrict__ payload)
{
    const float *scales = reinterpret_cast<const float *>(payload + 16);
    uint8_t *bits = payload + 16 + 4 * nb;
    const size_t nch = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int len = (int)(n - i0 < 8 ? n - i0 : 8);
        const float sc = scales[sqz_cu_udiv(i0, B)];
        float a[8];
        sqz_cu_load_a8(in, res, i0, len, vec != 0, a);
        uint32_t fin = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            fin |= (uint32_t)(e < len && sqz_cu_finite(a[e])) << e;
        }
        const uint32_t v = sign_encode8(a, fin, sc);
        if (res != NULL) {
            sqz_cu_store8(res, i0, len, vec != 0, a, fin);
        }
        bits[ch] = (uint8_t)v;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Decoding.
 * ------------------------------------------------------------------------------------------- */

template <typename T>
__global__ void __launch_bounds__(256)
    sign_decode_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t pbytes, size_t n,
                       size_t B, size_t nb, float scale, int vec, T *out)
{
    const int bad = sqz_cu_block_any_bad(payloads, nranks, pbytes);
    const size_t nch = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int len = (int)(n - i0 < 8 ? n - i0 : 8);
        float acc[8];
        if (bad) {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                acc[e] = __int_as_float(0x7fc00000);
            }
        } else {
            const size_t k = sqz_cu_udiv(i0, B);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                acc[e] = 0.0f;
            }
            /* Unrolled so that several ranks' loads are in flight at once. */
#pragma unroll 4
            for (int r = 0; r < nranks; r++) {
                const uint8_t *p = payloads + (size_t)r * pbytes;
                const float sc = reinterpret_cast<const float *>(p + 16)[k];
                const uint32_t v = p[16 + 4 * nb + ch];
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    acc[e] = __fadd_rn(acc[e], ((v >> e) & 1u) ? sc : -sc);
                }
            }
            if (scale != 1.0f) {
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    acc[e] = __fmul_rn(acc[e], scale);
                }
            }
        }
        sqz_cu_store8(out, i0, len, vec != 0, acc, 0xffu);
    }
}

/* decode_sum's wide path (sqz_cu_decode_wide; one scale, or buckets that are multiples of 32
 * elements): groups of 32 elements, 4 bytes of signs a rank.  Measured on an H100 (decode of 8
 * payloads, 2^26 elements, bucket 4096, against the thread-per-chunk kernel): 0.64 -> 0.81 of
 * copy in fp32, 0.42 -> 0.74 in bf16. */
#define SIGN_GROUP 32

struct sign_wide_decoder {
    static constexpr int E  = SIGN_GROUP;
    static constexpr int NW = E / 32;
    typedef float        Meta;
    size_t               nb;    /* buckets */
    int                  align; /* of every payload's sign area (4, 8 or 16: a group's 4 bytes
                                   take one 4-byte load whatever it is) */

    __device__ __forceinline__ void load(const uint8_t *p, size_t gi, size_t k, Meta &m,
                                         uint32_t w[NW]) const
    {
        m = reinterpret_cast<const float *>(p + 16)[k];
        sqz_cu_load_words<E / 8>(p + 16 + 4 * nb + gi * (E / 8), w, align);
    }
    __device__ __forceinline__ float value(const Meta &m, const uint32_t w[NW], int e) const
    {
        return ((w[e / 32] >> (e % 32)) & 1u) ? m : -m;
    }
    __device__ __forceinline__ void chunk(const uint8_t *p, size_t i0, int len, size_t k,
                                          float d[8]) const
    {
        (void)len;
        const float    sc = reinterpret_cast<const float *>(p + 16)[k];
        const uint32_t v  = p[16 + 4 * nb + i0 / 8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            d[e] = ((v >> e) & 1u) ? sc : -sc;
        }
    }
};
/* The own payload's decoded chunk: +-scale of its bucket by the sign bits. */
struct sign_chunk_decoder {
    const uint8_t *own;
    size_t         B, nb;
    __device__ __forceinline__ void operator()(size_t ch, int len, float d[8]) const
    {
        (void)len;
        const float    sc = reinterpret_cast<const float *>(own + 16)[sqz_cu_udiv(ch * 8, B)];
        const uint32_t v  = own[16 + 4 * nb + ch];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            d[e] = ((v >> e) & 1u) ? sc : -sc;
        }
    }
};

/* When *bad: residual = residual + decoded(own) - in wherever in + residual is finite. */
template <typename T>
__global__ void __launch_bounds__(256)
    sign_restore_kernel(const uint8_t *__restrict__ own, const uint32_t *__restrict__ bad,
                        const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                        size_t nb, int vec)
{
    sqz_cu_restore_chunks(bad, in, res, n, vec, sign_chunk_decoder{own, B, nb});
}

/* ---------------------------------------------------------------------------------------------
 * Host side.
 * ------------------------------------------------------------------------------------------- */

static size_t sqz_cu_sign_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    sign_layout_t L;
    if (n == 0 || !sign_layout(p, n, &L)) {
        return 0;
    }
    return L.total;
}

static size_t sqz_cu_sign_workspace_bytes(const sqz_gpu_params_t *p, size_t n,
                                          sqz_dtype_t dtype)
{
    sign_layout_t L;
    (void)dtype;
    size_t bytes = SQZ_CU_WS_CTRL_BYTES;
    if (n > 0 && sign_layout(p, n, &L) && !L.fused) {
        const sqz_cu_segs_t sg = sqz_cu_segments(L.B, L.nb);
        if (sg.spb > 1) {
            bytes += sqz_cu_round256(sg.nseg * sizeof(sign_stats_t));
        }
    }
    return bytes;
}

template <typename T>
static sqz_status_t sign_compress_t(const sign_layout_t *L, const T *in, float *res, size_t n,
                                    uint8_t *payload, uint8_t *ws, cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && (res == NULL || sqz_cu_aligned(res, 16));
    if (L->fused) {
        const size_t C = L->B / 8;
        int glog2 = 0;
        while (((size_t)1 << glog2) * SIGN_NC < C) {
            glog2++;
        }
        const int nc = (int)sqz_cu_div_up(C, (size_t)1 << glog2);
        const size_t gpb = (size_t)SIGN_THREADS >> glog2;
        sign_fused_kernel<T><<<sqz_cu_grid(L->nb, gpb), SIGN_THREADS, 0, st>>>(
            in, res, n, L->B, L->nb, L->l2, glog2, nc, vec, payload);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    }
    sign_stats_t *part = reinterpret_cast<sign_stats_t *>(ws + SQZ_CU_WS_CTRL_BYTES);
    const sqz_status_t sst = sqz_cu_launch_seg_stats(in, res, n, L->B, L->nb,
                                                     sign_seg_policy{L->l2}, part, payload, st);
    if (sst != SQZ_OK) {
        return sst;
    }
    sign_encode_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        in, res, n, L->B, L->nb, vec, payload);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_sign_compress(const sqz_gpu_params_t *p, const void *in,
                                         sqz_dtype_t dtype, float *residual, size_t n,
                                         uint32_t key, void *payload, void *workspace,
                                         void *stream)
{
    sign_layout_t L;
    (void)key; /* sign is deterministic */
    if (!sign_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const sqz_status_t s = sqz_cu_launch_header_init(payload, L.body, L.total, stream);
    if (s != SQZ_OK) {
        return s;
    }
    cudaStream_t st = (cudaStream_t)stream;
    uint8_t *pl = (uint8_t *)payload;
    uint8_t *ws = (uint8_t *)workspace;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return sign_compress_t(&L, (const SQZ_CU_ELEM(t) *)in, residual, n, pl, ws, st);
    });
}

template <typename T>
static sqz_status_t sign_decode_t(const sign_layout_t *L, const uint8_t *payloads, int nranks,
                                  size_t n, float scale, T *out, cudaStream_t st)
{
    if (L->nb == 1 || L->B % SIGN_GROUP == 0) {
        const uint8_t *area  = payloads + 16 + 4 * L->nb;
        const int      align = sqz_cu_aligned(area, 16) ? 16 : sqz_cu_aligned(area, 8) ? 8 : 4;
        sqz_cu_decode_wide(payloads, nranks, L->total, n, L->B, scale, out,
                           sign_wide_decoder{L->nb, align}, st);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    }
    sign_decode_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        payloads, nranks, L->total, n, L->B, L->nb, scale, sqz_cu_aligned(out, 16), out);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_sign_decode_sum(const sqz_gpu_params_t *p, const void *payloads,
                                           int nranks, size_t n, float scale, void *out,
                                           sqz_dtype_t dtype, void *workspace, void *stream)
{
    sign_layout_t L;
    (void)workspace;
    if (!sign_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *pl = (const uint8_t *)payloads;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return sign_decode_t(&L, pl, nranks, n, scale, (SQZ_CU_ELEM(t) *)out, st);
    });
}

template <typename T>
static sqz_status_t sign_restore_t(const sign_layout_t *L, const uint8_t *own,
                                   const uint32_t *bad, const T *in, float *res, size_t n,
                                   cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && sqz_cu_aligned(res, 16);
    sign_restore_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        own, bad, in, res, n, L->B, L->nb, vec);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_sign_restore(const sqz_gpu_params_t *p, const void *own,
                                        const uint32_t *bad, const void *in,
                                        sqz_dtype_t dtype, float *residual, size_t n,
                                        void *stream)
{
    sign_layout_t L;
    if (!sign_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *o = (const uint8_t *)own;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return sign_restore_t(&L, o, bad, (const SQZ_CU_ELEM(t) *)in, residual, n, st);
    });
}

extern "C" const sqz_cu_method_t sqz_cu_sign_method = {
    "sign",
    sqz_cu_sign_payload_bytes,
    sqz_cu_sign_workspace_bytes,
    sqz_cu_sign_compress,
    sqz_cu_sign_decode_sum,
    sqz_cu_sign_restore,
    0, /* shared_key */
};
