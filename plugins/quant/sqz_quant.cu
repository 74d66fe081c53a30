/*
 * GPU kernels of "quant" (bucketed max-min b-bit quantization with fused error feedback), the
 * device side of plugins/quant/sqz_quant.c.  The payload body after the 16-byte header is the CPU
 * plugin's wire format, bit for bit for the same a = in + residual: per bucket
 *   mn = min a, unit = quant_unit(mn, max a, b)           (double arithmetic, as the CPU)
 *   code = min(floor((a - mn) * inv_unit + r), 2^b - 1)   inv_unit = unit > 0 ? 1.0f / unit : 0
 *   decoded = mn + unit * code, residual = a - decoded
 * with r = 0.5 or sqz_pu_hash_f32(key, i) (the CPU derives key from (seed, rank, seq, stage);
 * here the caller passes it).  Every rounding step is an _rn intrinsic, never an FMA.
 * Non-finite elements are left out of min/max, coded 0, and keep their residual; the header is
 * flagged.  A bucket without a finite element gets mn = unit = 0 (the CPU never sees one: it
 * rejects the whole call).
 *
 * Launch structure of compress (after the header-init launch):
 *  - fused path, bucket B a multiple of 8 and <= QUANT_FUSED_MAX (4096; the defaults 512 and
 *    4096 qualify): ONE kernel, instantiated per b (constant shifts and masks).  A group of
 *    G = 2^g threads (G from 1 to 256: a sub-warp, a warp or several) owns a bucket: it loads the
 *    bucket's chunks of 8 (at most QUANT_NC per thread) into registers, reduces min/max/non-finite
 *    over the group (integer min/max on order-preserving images), computes the unit, then encodes
 *    from registers: residual written with 16-byte stores, each chunk's b code bytes with one
 *    store.  Bytes touched per element: read in (4 or 2), read residual 4, write residual 4,
 *    write b/8 (+8/B of metadata).
 *  - general path (B not a multiple of 8, or larger): a warp per segment of a bucket reduces
 *    min/max (writing the metadata directly when a bucket is one segment), one block per bucket
 *    combines the segments otherwise, then a thread per chunk of 8 encodes (a chunk then spans
 *    at most two buckets since B >= 8).  in and residual are read twice.
 * decode_sum: ONE kernel.  Buckets that are multiples of 32 elements (16 for 6 and 8 bits):
 * a thread per group of 32 (16) elements, 8 ranks' codes loaded before the first add
 * (sqz_cu_decode_wide); other buckets: a thread per chunk of 8 decodes every rank in rank
 * order (each block first checks every header).  restore: the flag launch, then a thread per chunk.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

#include <type_traits>

#define QUANT_THREADS 256
/* Chunks held in registers per thread in the fused path, and the blocks per SM its register
 * budget is cut for: the kernel is latency-bound on its per-bucket chain (reduce, unit, inverse),
 * so occupancy matters more than bytes in flight per thread (measured on H100 / H200: NC 2 with
 * 4 blocks per SM reaches the copy bandwidth for float32, NC 4 or 3 blocks stay near 60-70%). */
#ifndef QUANT_NC
#define QUANT_NC 2
#endif
#ifndef QUANT_MINB
#define QUANT_MINB 4
#endif
/* Largest bucket of the fused path: QUANT_NC chunks per thread of a 256-thread group. */
#define QUANT_FUSED_MAX (QUANT_THREADS * 8 * QUANT_NC)

typedef struct quant_layout {
    size_t   B;     /* elements per bucket */
    size_t   nb;    /* buckets */
    size_t   body;  /* header + metadata + packed codes */
    size_t   total; /* body rounded up to 16 */
    unsigned bits;
} quant_layout_t;

/* \return 0 for parameters out of range (bits 1..8, bucket >= 8) or n too large. */
static int quant_layout(const sqz_gpu_params_t *p, size_t n, quant_layout_t *L)
{
    if (p->bits < 1 || p->bits > 8 || p->bucket < 8 || n > SIZE_MAX / 16) {
        return 0;
    }
    L->B = p->bucket;
    L->bits = (unsigned)p->bits;
    L->nb = sqz_cu_div_up(n, L->B);
    L->body = 16 + 8 * L->nb + sqz_cu_packed_bytes(n, L->bits);
    L->total = sqz_cu_round16(L->body);
    return 1;
}

static int quant_fused(const quant_layout_t *L)
{
    return L->B % 8 == 0 && L->B <= QUANT_FUSED_MAX;
}

/* ---------------------------------------------------------------------------------------------
 * Arithmetic shared by every kernel (quant_decode_one / quant_unit / quant_encode_block of the
 * CPU plugin, operation for operation).
 * ------------------------------------------------------------------------------------------- */

__device__ __forceinline__ float quant_decode_one(float mn, float unit, float code)
{
    return __fadd_rn(mn, __fmul_rn(unit, code));
}

/* The unit of a bucket with finite extremes mn <= mx (quant_unit() of the CPU plugin).  The CPU
 * computes u = RN(d1 / L), limit = RN(d2 / L) and takes limit when u > limit; since rounding is
 * monotonic this is exactly RN(min(d1, d2) / L): one double division instead of two (it sits on
 * the critical path between the reduction and the encoding). */
__device__ __forceinline__ float quant_unit(float mn, float mx, unsigned bits)
{
    const float levels = (float)((1u << bits) - 1u);
    const double d1 = __dsub_rn((double)mx, (double)mn);
    const double d2 = fmin((double)FLT_MAX * (1.0 - 0x1p-20),
                           __dsub_rn(__dsub_rn((double)FLT_MAX, (double)mn), 0x1p106));
    float unit = __double2float_rn(__ddiv_rn(d1 < d2 ? d1 : d2, (double)levels));
    if (!(unit >= FLT_MIN)) {
        return 0.0f;
    }
    for (int i = 0; i < 64 && !sqz_cu_finite(quant_decode_one(mn, unit, levels)); i++) {
        unit = nextafterf(unit, 0.0f);
    }
    return sqz_cu_finite(quant_decode_one(mn, unit, levels)) ? unit : 0.0f;
}

/* The code of a (finite, >= mn) and its decoded value: t = (a - mn) * inv + r clamped to the top
 * code (an overflowing a - mn gives +Inf and NaN cannot pass the clamp, both give the top code),
 * code = floor(t).  The conversion pair: the truncating conversion is a floor since t >= 0, and
 * the code converts back for decoding.  QUANT_FLOOR_ADD (an experiment against the pair, same
 * bits): t + 2^23 rounded toward zero is 2^23 + floor(t), since floats in [2^23, 2^24) are the
 * integers; its bits give the code and subtracting 2^23 gives floor(t) exactly. */
__device__ __forceinline__ uint32_t quant_code(float a, float mn, float unit, float inv,
                                               float levels, float rnd, float *decoded)
{
    float t = __fadd_rn(__fmul_rn(__fsub_rn(a, mn), inv), rnd);
    t = t < levels ? t : levels;
#ifdef QUANT_FLOOR_ADD
    const float biased = __fadd_rz(t, 0x1p23f);
    *decoded           = quant_decode_one(mn, unit, __fsub_rn(biased, 0x1p23f));
    return __float_as_uint(biased) - 0x4b000000u;
#else
    const uint32_t code = (uint32_t)(int32_t)t;
    *decoded            = quant_decode_one(mn, unit, (float)code);
    return code;
#endif
}

/* The rounding offset of element i0 + e of a chunk; ckey = sqz_cu_elem_key(key, i0) (a chunk
 * never straddles a multiple of 2^32, so one key serves its 8 elements). */
__device__ __forceinline__ float quant_rnd(int stochastic, uint32_t ckey, size_t i0, int e)
{
    return stochastic ? sqz_cu_hash_f32(ckey, (uint32_t)i0 + (uint32_t)e) : 0.5f;
}

/* Order-preserving integer image of a float: signed comparison of images is the IEEE order of
 * the values with -0 < +0, a total order, so integer min/max (one instruction each) are exact
 * and symmetric (butterfly reductions give every lane the same bits).  An involution. */
__device__ __forceinline__ int32_t quant_ord(float x)
{
    const int32_t k = __float_as_int(x);
    return k ^ ((k >> 31) & 0x7fffffff);
}
__device__ __forceinline__ float quant_unord(int32_t k)
{
    return __int_as_float(k ^ ((k >> 31) & 0x7fffffff));
}

/* Bucket statistics over the finite elements (as quant_ord images; mn > mx: none finite). */
typedef struct quant_stats {
    int32_t  mn;
    int32_t  mx;
    uint32_t bad;
} quant_stats_t;

__device__ __forceinline__ quant_stats_t quant_stats_identity(void)
{
    quant_stats_t s;
    s.mn = 0x7fffffff;
    s.mx = -0x7fffffff - 1;
    s.bad = 0;
    return s;
}

__device__ __forceinline__ void quant_stats_add(quant_stats_t *s, float a)
{
    const bool fin = sqz_cu_finite(a);
    const int32_t k = quant_ord(a);
    s->mn = min(s->mn, fin ? k : 0x7fffffff);
    s->mx = max(s->mx, fin ? k : -0x7fffffff - 1);
    s->bad |= (uint32_t)!fin;
}

struct quant_stats_op {
    __device__ __forceinline__ quant_stats_t operator()(quant_stats_t x, quant_stats_t y) const
    {
        quant_stats_t r;
        r.mn = min(x.mn, y.mn);
        r.mx = max(x.mx, y.mx);
        r.bad = x.bad | y.bad;
        return r;
    }
};

/* (mn, unit) of a bucket from its statistics: mn = unit = 0 when no element is finite. */
__device__ __forceinline__ float2 quant_meta(quant_stats_t s, unsigned bits)
{
    if (s.mn <= s.mx) {
        const float mn = quant_unord(s.mn);
        return make_float2(mn, quant_unit(mn, quant_unord(s.mx), bits));
    }
    return make_float2(0.0f, 0.0f);
}

/* Writes bucket k's metadata m and flags the header when it held a non-finite element. */
__device__ __forceinline__ void quant_store_meta(uint8_t *payload, size_t k, float2 m, uint32_t bad)
{
    reinterpret_cast<float2 *>(payload + 16)[k] = m;
    if (bad) {
        sqz_cu_flag_nonfinite(payload);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Compress, fused path.  Block of QUANT_THREADS threads = 256 / G groups; group q of work unit u
 * owns bucket k = u * (256 / G) + q; thread g of the group holds chunks c = g + j * G (j < nc)
 * of the bucket, so that the G threads of a group read consecutive chunks at each step j.
 * ------------------------------------------------------------------------------------------- */
template <typename T, unsigned BITS>
__global__ void __launch_bounds__(QUANT_THREADS, QUANT_MINB)
    quant_fused_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                       size_t nb, int stochastic, uint32_t key, int glog2, int nc, int vec,
                       uint8_t *__restrict__ payload)
{
    const unsigned bits = BITS; /* a constant: shifts, masks and stores fold */
    __shared__ quant_stats_t red[QUANT_THREADS / 32];
    const int G = 1 << glog2;
    const int g = (int)threadIdx.x & (G - 1);
    const size_t gpb = (size_t)(QUANT_THREADS >> glog2);
    const size_t units = (nb + gpb - 1) / gpb;
    uint8_t *packed = payload + 16 + 8 * nb;
    const float levels = (float)((1u << bits) - 1u);

    for (size_t u = blockIdx.x; u < units; u += gridDim.x) {
        const size_t k = u * gpb + (threadIdx.x >> glog2);
        const size_t s = k * B; /* a multiple of 8 */
        const size_t m = k < nb ? (n - s < B ? n - s : B) : 0;
        float a[QUANT_NC][8];
        uint32_t fin[QUANT_NC];
        quant_stats_t st = quant_stats_identity();
#pragma unroll
        for (int j = 0; j < QUANT_NC; j++) {
            fin[j] = 0;
            const size_t c = (size_t)g + (size_t)j * G;
            if (j < nc && c * 8 < m) {
                const int len = (int)(m - c * 8 < 8 ? m - c * 8 : 8);
                sqz_cu_load_a8(in, res, s + c * 8, len, vec != 0, a[j]);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if (e < len) {
                        quant_stats_add(&st, a[j][e]);
                        fin[j] |= (uint32_t)sqz_cu_finite(a[j][e]) << e;
                    }
                }
            }
        }
        st = sqz_cu_group_reduce(st, glog2, red, quant_stats_op());
        if (k >= nb) {
            continue; /* no barrier below: idle groups may leave the step */
        }
        /* Every lane computes the metadata (no divergent copy of this latency-bound chain). */
        const float2 mu = quant_meta(st, bits);
        if (g == 0) {
            quant_store_meta(payload, k, mu, st.bad);
        }
        const float mn = mu.x, unit = mu.y;
        const float inv = unit > 0.0f ? __fdiv_rn(1.0f, unit) : 0.0f;
#pragma unroll
        for (int j = 0; j < QUANT_NC; j++) {
            const size_t c = (size_t)g + (size_t)j * G;
            if (j < nc && c * 8 < m) {
                const int len = (int)(m - c * 8 < 8 ? m - c * 8 : 8);
                const size_t i0 = s + c * 8;
                const uint32_t ckey = sqz_cu_elem_key(key, i0);
                uint64_t v = 0;
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if ((fin[j] >> e) & 1u) {
                        float d;
                        const uint32_t code = quant_code(a[j][e], mn, unit, inv, levels,
                                                         quant_rnd(stochastic, ckey, i0, e), &d);
                        v |= (uint64_t)code << (e * bits);
                        a[j][e] = __fsub_rn(a[j][e], d);
                    }
                }
                if (res != NULL) {
                    sqz_cu_store8(res, i0, len, vec != 0, a[j], fin[j]);
                }
                sqz_cu_store_bits(packed + (s / 8 + c) * bits, v, bits,
                                  len == 8 ? (int)bits : (int)((len * bits + 7) / 8));
            }
        }
    }
}

/* Calls f(std::integral_constant<int, b>{}) for b = bits, 1 to 8: the bit width as a template
 * argument of the kernels f launches (their unpacking folds).  \return SQZ_ERR_INVALID_PARAM for
 * another width, else SQZ_OK (f's launch is checked by the caller). */
template <typename F>
static sqz_status_t quant_with_bits(int bits, F &&f)
{
    switch (bits) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: return SQZ_ERR_INVALID_PARAM;
    }
    return SQZ_OK;
}


/* ---------------------------------------------------------------------------------------------
 * Compress, general path.
 * ------------------------------------------------------------------------------------------- */

/* The per-bucket statistics of the general path (sqz_cu_launch_seg_stats): min/max and
 * finiteness, finished into the bucket's metadata. */
struct quant_seg_policy {
    typedef quant_stats_t  stats_t;
    typedef quant_stats_op op_t;
    unsigned               bits;
    __device__ __forceinline__ stats_t identity() const { return quant_stats_identity(); }
    __device__ __forceinline__ void    add(stats_t *s, float a) const { quant_stats_add(s, a); }
    __device__ __forceinline__ void    finish(uint8_t *payload, size_t k, const stats_t &s) const
    {
        quant_store_meta(payload, k, quant_meta(s, bits), s.bad);
    }
};

/* A thread per chunk of 8 elements: codes and residual from the metadata in the payload. */
template <typename T>
__global__ void __launch_bounds__(256)
    quant_encode_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                        size_t nb, unsigned bits, int stochastic, uint32_t key, int vec,
                        uint8_t *__restrict__ payload)
{
    const float2 *meta = reinterpret_cast<const float2 *>(payload + 16);
    uint8_t *packed = payload + 16 + 8 * nb;
    const size_t nch = (n + 7) / 8;
    const float levels = (float)((1u << bits) - 1u);
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int len = (int)(n - i0 < 8 ? n - i0 : 8);
        const size_t k0 = sqz_cu_udiv(i0, B);
        const size_t kb = (k0 + 1) * B; /* elements from kb on are in bucket k0 + 1 */
        const float2 m0 = meta[k0];
        const float2 m1 = i0 + (size_t)len > kb ? meta[k0 + 1] : m0;
        const float inv0 = m0.y > 0.0f ? __fdiv_rn(1.0f, m0.y) : 0.0f;
        const float inv1 = m1.y > 0.0f ? __fdiv_rn(1.0f, m1.y) : 0.0f;
        float a[8];
        sqz_cu_load_a8(in, res, i0, len, vec != 0, a);
        const uint32_t ckey = sqz_cu_elem_key(key, i0);
        uint64_t v = 0;
        uint32_t fin = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            if (e < len && sqz_cu_finite(a[e])) {
                const bool hi = i0 + e >= kb;
                const float mn = hi ? m1.x : m0.x;
                const float unit = hi ? m1.y : m0.y;
                float d;
                const uint32_t code = quant_code(a[e], mn, unit, hi ? inv1 : inv0, levels,
                                                 quant_rnd(stochastic, ckey, i0, e), &d);
                v |= (uint64_t)code << (e * bits);
                a[e] = __fsub_rn(a[e], d);
                fin |= 1u << e;
            }
        }
        if (res != NULL) {
            sqz_cu_store8(res, i0, len, vec != 0, a, fin);
        }
        sqz_cu_store_bits(packed + ch * bits, v, bits,
                          len == 8 ? (int)bits : (int)((len * bits + 7) / 8));
    }
}

/* ---------------------------------------------------------------------------------------------
 * Decoding.
 * ------------------------------------------------------------------------------------------- */

/* d[e] = decoded value of element i0 + e (e < len) of the payload at p.  TWO: the chunk may
 * reach into bucket k0 + 1 (bucket not a multiple of 8); without it, one bucket per chunk. */
template <bool TWO>
__device__ __forceinline__ void quant_decode8(const uint8_t *p, size_t ch, int len, size_t k0,
                                              size_t kb, size_t nb, unsigned bits, float d[8])
{
    const float2 *meta = reinterpret_cast<const float2 *>(p + 16);
    const size_t i0 = ch * 8;
    const float2 m0 = meta[k0];
    const float2 m1 = TWO && i0 + (size_t)len > kb ? meta[k0 + 1] : m0;
    const uint64_t v = sqz_cu_load_bits(p + 16 + 8 * nb + ch * bits, bits,
                                        len == 8 ? (int)bits : (int)((len * bits + 7) / 8));
    const uint64_t mask = (1ull << bits) - 1;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const bool hi = TWO && i0 + e >= kb;
        const float code = (float)(uint32_t)((v >> (e * bits)) & mask);
        d[e] = quant_decode_one(hi ? m1.x : m0.x, hi ? m1.y : m0.y, code);
    }
}

/* out = scale * sum over ranks (in order) of the decoded payloads, or NaN everywhere when some
 * header is bad (every block reads every header, so all agree). */
template <typename T, bool TWO, unsigned BITS>
__global__ void __launch_bounds__(256)
    quant_decode_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t pbytes, size_t n,
                        size_t B, size_t nb, unsigned rbits, float scale, int vec, T *out)
{
    const unsigned bits = BITS ? BITS : rbits; /* BITS 0: known at run time only */
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
            const size_t k0 = sqz_cu_udiv(i0, B);
            const size_t kb = (k0 + 1) * B;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                acc[e] = 0.0f;
            }
            /* Unrolled so that several ranks' loads are in flight at once. */
#pragma unroll 4
            for (int r = 0; r < nranks; r++) {
                float d[8];
                quant_decode8<TWO>(payloads + (size_t)r * pbytes, ch, len, k0, kb, nb, bits, d);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    acc[e] = __fadd_rn(acc[e], d[e]);
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

/* decode_sum's wide path (sqz_cu_decode_wide; buckets that are multiples of a group): groups of
 * QUANT_GROUP(b) chunks, 32 elements (16 for b = 6 and 8, so that a group's codes are 12 or 16
 * bytes), loaded 16, 8 or 4 bytes at a time; a bucket's (mn, unit) once a group and rank.
 * Measured on an H100 (decode of 8 payloads, 2^26 elements, against the thread-per-chunk
 * kernel): 4 bits 0.55 -> 0.88 of copy in fp32, 0.45 -> 0.77 in bf16; 8 bits 0.72 -> 1.02,
 * 0.65 -> 1.02. */
#define QUANT_GROUP(b) ((b) == 6 || (b) == 8 ? 2 : 4)

template <unsigned BITS>
struct quant_wide_decoder {
    static constexpr int E   = 8 * QUANT_GROUP(BITS); /* elements of a group */
    static constexpr int NBY = E / 8 * (int)BITS;     /* its code bytes */
    static constexpr int NW  = NBY / 4;
    typedef float2       Meta;
    size_t               nb;    /* buckets */
    int                  align; /* of every payload's code area: 8 or 16 */

    __device__ __forceinline__ void load(const uint8_t *p, size_t gi, size_t k, Meta &m,
                                         uint32_t w[NW]) const
    {
        m = reinterpret_cast<const float2 *>(p + 16)[k];
        sqz_cu_load_words<NBY>(p + 16 + 8 * nb + gi * NBY, w, align);
    }
    /* Code e: bits [e * b, (e + 1) * b) of the group, maybe across two words. */
    __device__ __forceinline__ float value(const Meta &m, const uint32_t w[NW], int e) const
    {
        const int      o = e * (int)BITS, q = o / 32, sh = o % 32;
        const uint32_t hi = w[q + 1 < NW ? q + 1 : q];
        const uint32_t c  = (sh + (int)BITS <= 32 ? w[q] >> sh : __funnelshift_r(w[q], hi, sh)) &
                           ((1u << BITS) - 1u);
        return quant_decode_one(m.x, m.y, (float)c);
    }
    __device__ __forceinline__ void chunk(const uint8_t *p, size_t i0, int len, size_t k,
                                          float d[8]) const
    {
        quant_decode8<false>(p, i0 / 8, len, k, 0, nb, BITS, d);
    }
};
/* The own payload's decoded chunk (quant_decode8). */
struct quant_chunk_decoder {
    const uint8_t *own;
    size_t         B, nb;
    unsigned       bits;
    __device__ __forceinline__ void operator()(size_t ch, int len, float d[8]) const
    {
        const size_t k0 = sqz_cu_udiv(ch * 8, B);
        quant_decode8<true>(own, ch, len, k0, (k0 + 1) * B, nb, bits, d);
    }
};

/* When *bad: residual = residual + decoded(own) - in wherever in + residual is finite. */
template <typename T>
__global__ void __launch_bounds__(256)
    quant_restore_kernel(const uint8_t *__restrict__ own, const uint32_t *__restrict__ bad,
                         const T *__restrict__ in, float *__restrict__ res, size_t n, size_t B,
                         size_t nb, unsigned bits, int vec)
{
    sqz_cu_restore_chunks(bad, in, res, n, vec, quant_chunk_decoder{own, B, nb, bits});
}

/* ---------------------------------------------------------------------------------------------
 * Host side.
 * ------------------------------------------------------------------------------------------- */

static size_t sqz_cu_quant_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    quant_layout_t L;
    if (n == 0 || !quant_layout(p, n, &L)) {
        return 0;
    }
    return L.total;
}

static size_t sqz_cu_quant_workspace_bytes(const sqz_gpu_params_t *p, size_t n,
                                           sqz_dtype_t dtype)
{
    quant_layout_t L;
    (void)dtype;
    size_t bytes = SQZ_CU_WS_CTRL_BYTES;
    if (n > 0 && quant_layout(p, n, &L) && !quant_fused(&L)) {
        const sqz_cu_segs_t sg = sqz_cu_segments(L.B, L.nb);
        if (sg.spb > 1) {
            bytes += sqz_cu_round256(sg.nseg * sizeof(quant_stats_t));
        }
    }
    return bytes;
}


template <typename T>
static sqz_status_t quant_compress_t(const quant_layout_t *L, const T *in, float *res, size_t n,
                                     int stochastic, uint32_t key, uint8_t *payload,
                                     uint8_t *ws, cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && (res == NULL || sqz_cu_aligned(res, 16));
    if (quant_fused(L)) {
        /* G: the smallest power of two with G * QUANT_NC >= B / 8 chunks. */
        const size_t C = L->B / 8;
        int glog2 = 0;
        while (((size_t)1 << glog2) * QUANT_NC < C) {
            glog2++;
        }
        const int nc = (int)sqz_cu_div_up(C, (size_t)1 << glog2);
        const size_t gpb = (size_t)QUANT_THREADS >> glog2;
        const unsigned grid = sqz_cu_grid(L->nb, gpb);
        const sqz_status_t s = quant_with_bits(L->bits, [&](auto b) {
            quant_fused_kernel<T, decltype(b)::value><<<grid, QUANT_THREADS, 0, st>>>(
                in, res, n, L->B, L->nb, stochastic, key, glog2, nc, vec, payload);
        });
        if (s != SQZ_OK) {
            return s;
        }
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    }
    quant_stats_t *part = reinterpret_cast<quant_stats_t *>(ws + SQZ_CU_WS_CTRL_BYTES);
    const sqz_status_t sst = sqz_cu_launch_seg_stats(in, res, n, L->B, L->nb,
                                                     quant_seg_policy{L->bits}, part, payload, st);
    if (sst != SQZ_OK) {
        return sst;
    }
    quant_encode_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        in, res, n, L->B, L->nb, L->bits, stochastic, key, vec, payload);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_quant_compress(const sqz_gpu_params_t *p, const void *in,
                                          sqz_dtype_t dtype, float *residual, size_t n,
                                          uint32_t key, void *payload, void *workspace,
                                          void *stream)
{
    quant_layout_t L;
    if (!quant_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const sqz_status_t s = sqz_cu_launch_header_init(payload, L.body, L.total, stream);
    if (s != SQZ_OK) {
        return s;
    }
    cudaStream_t st = (cudaStream_t)stream;
    uint8_t *pl = (uint8_t *)payload;
    uint8_t *ws = (uint8_t *)workspace;
    const int stoch = p->stochastic != 0;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return quant_compress_t(&L, (const SQZ_CU_ELEM(t) *)in, residual, n, stoch, key, pl, ws,
                                st);
    });
}

template <typename T>
static sqz_status_t quant_decode_t(const quant_layout_t *L, const uint8_t *payloads, int nranks,
                                   size_t n, float scale, T *out, cudaStream_t st)
{
    if (L->B % (8 * (size_t)QUANT_GROUP(L->bits)) == 0) {
        const int align = sqz_cu_aligned(payloads + 16 + 8 * L->nb, 16) ? 16 : 8;
        const sqz_status_t s = quant_with_bits(L->bits, [&](auto b) {
            sqz_cu_decode_wide(payloads, nranks, L->total, n, L->B, scale, out,
                               quant_wide_decoder<decltype(b)::value>{L->nb, align}, st);
        });
        if (s != SQZ_OK) {
            return s;
        }
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    }
    const unsigned grid = sqz_cu_grid(sqz_cu_div_up(n, 8), 256);
    const int vec = sqz_cu_aligned(out, 16);
    if (L->B % 8 != 0) {
        quant_decode_kernel<T, true, 0><<<grid, 256, 0, st>>>(payloads, nranks, L->total, n, L->B,
                                                              L->nb, L->bits, scale, vec, out);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    }
    /* One bucket per chunk (the usual buckets): constant bits let the unpacking fold. */
    const sqz_status_t s = quant_with_bits(L->bits, [&](auto b) {
        quant_decode_kernel<T, false, decltype(b)::value><<<grid, 256, 0, st>>>(
            payloads, nranks, L->total, n, L->B, L->nb, decltype(b)::value, scale, vec, out);
    });
    if (s != SQZ_OK) {
        return s;
    }
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_quant_decode_sum(const sqz_gpu_params_t *p, const void *payloads,
                                            int nranks, size_t n, float scale, void *out,
                                            sqz_dtype_t dtype, void *workspace, void *stream)
{
    quant_layout_t L;
    (void)workspace;
    if (!quant_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *pl = (const uint8_t *)payloads;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return quant_decode_t(&L, pl, nranks, n, scale, (SQZ_CU_ELEM(t) *)out, st);
    });
}

template <typename T>
static sqz_status_t quant_restore_t(const quant_layout_t *L, const uint8_t *own,
                                    const uint32_t *bad, const T *in, float *res, size_t n,
                                    cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && sqz_cu_aligned(res, 16);
    quant_restore_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        own, bad, in, res, n, L->B, L->nb, L->bits, vec);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_quant_restore(const sqz_gpu_params_t *p, const void *own,
                                         const uint32_t *bad, const void *in,
                                         sqz_dtype_t dtype, float *residual, size_t n,
                                         void *stream)
{
    quant_layout_t L;
    if (!quant_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *o = (const uint8_t *)own;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return quant_restore_t(&L, o, bad, (const SQZ_CU_ELEM(t) *)in, residual, n, st);
    });
}

extern "C" const sqz_cu_method_t sqz_cu_quant_method = {
    "quant",
    sqz_cu_quant_payload_bytes,
    sqz_cu_quant_workspace_bytes,
    sqz_cu_quant_compress,
    sqz_cu_quant_decode_sum,
    sqz_cu_quant_restore,
    0, /* shared_key */
};
