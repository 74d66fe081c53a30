/*
 * GPU kernels of "qsgd" (QSGD's stochastic s-level quantization per bucket), the device side of
 * plugins/qsgd/sqz_qsgd.c.  The payload body after the 16-byte header is the CPU plugin's wire
 * format: nb f32 norms, then n codes of b = 1 + L bits (level | sign << L) packed LSB-first, 8
 * codes in b bytes.  For the same a = in + residual and key, the codes and residuals are the
 * CPU's operation for operation (every rounding an _rn intrinsic, never an FMA):
 *   norm  = qsgd_norm_f32(||a||_2 or max |a|)        (the CPU's f32 rounding and clamping)
 *   scale = norm / s, inv = s / norm (0 for norm 0)
 *   r = |a| * inv, level = min(floor(r) + (u < r - floor(r)), s), u = sqz_pu_hash_f32(key, i)
 *   decoded = +-level * scale, residual = a - decoded
 * The one difference: the l2 norm's sum of squares is a double sum in another order (per warp
 * lane, then a butterfly), so a norm can differ from the CPU's in its last bit when the exact
 * value sits on a float rounding boundary.  Non-finite elements are left out of the norm, coded
 * 0 and keep their residual; the header is flagged.
 *
 * Launches of compress (after the header init), as quant's:
 *  - fused path, bucket B a multiple of 8 and <= QSGD_FUSED_MAX (4096; the default 512
 *    qualifies): ONE kernel.  A group of G = 2^g threads owns a bucket, holds its chunks of 8 in
 *    registers (at most QSGD_NC per thread), reduces the statistics over the group, computes the
 *    norm in every lane and encodes from registers: in and residual read once.
 *  - general path: the per-bucket statistics (sqz_cu_launch_seg_stats: a warp per segment of a
 *    bucket, one block per bucket combining segments of large buckets) write the norms, then a
 *    thread per chunk of 8 elements encodes (a chunk spans at most two buckets, since B >= 8).
 * decode_sum: a thread per chunk of 8 decodes every rank in rank order.
 * Codes of 2..8 bits are held in one 64-bit word per chunk, 9 bits (s >= 128) in 64 + 8.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

typedef struct qsgd_layout {
    size_t   B;     /* elements per bucket */
    size_t   nb;    /* buckets */
    size_t   body;  /* header + norms + packed codes */
    size_t   total; /* body rounded up to 16 */
    unsigned s;     /* levels */
    unsigned L;     /* level bits: ceil(log2(s + 1)) */
    unsigned b;     /* code bits: 1 + L */
    int      wide;  /* 8-byte aligned code area: b = 8 chunks may use one 8-byte access */
} qsgd_layout_t;

/* \return 0 for parameters out of range (levels 1..255, bucket >= 8) or n too large. */
static int qsgd_layout(const sqz_gpu_params_t *p, size_t n, qsgd_layout_t *Q)
{
    if (p->levels < 1 || p->levels > 255 || p->bucket < 8 || n > SIZE_MAX / 16) {
        return 0;
    }
    Q->s = (unsigned)p->levels;
    Q->L = 0;
    while ((1u << Q->L) < Q->s + 1u) {
        Q->L++;
    }
    Q->b = 1 + Q->L;
    Q->B = p->bucket;
    Q->nb = sqz_cu_div_up(n, Q->B);
    Q->body = 16 + 4 * Q->nb + sqz_cu_packed_bytes(n, Q->b);
    Q->total = sqz_cu_round16(Q->body);
    Q->wide = (4 * Q->nb) % 8 == 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Arithmetic shared by every kernel (qsgd_decode_one / qsgd_scale / qsgd_norm_f32 /
 * qsgd_encode_block of the CPU plugin, operation for operation).
 * ------------------------------------------------------------------------------------------- */

__device__ __forceinline__ float qsgd_decode_one(float scale, uint32_t level, uint32_t sign)
{
    return __uint_as_float(__float_as_uint(__fmul_rn((float)level, scale)) | (sign << 31));
}

__device__ __forceinline__ float qsgd_scale(float norm, unsigned s)
{
    return __fdiv_rn(norm, (float)s);
}

/* The f32 norm sent for a bucket whose exact norm is nd >= 0 (0: the bucket sends zeros). */
__device__ __forceinline__ float qsgd_norm_f32(double nd, unsigned s)
{
    if (!(nd > 0.0)) {
        return 0.0f;
    }
    float norm = nd >= (double)FLT_MAX ? FLT_MAX : __double2float_rn(nd);
    for (int i = 0; i < 64 && !sqz_cu_finite(qsgd_decode_one(qsgd_scale(norm, s), s, 0)); i++) {
        norm = nextafterf(norm, 0.0f);
    }
    if (!sqz_cu_finite(qsgd_decode_one(qsgd_scale(norm, s), s, 0)) ||
        !sqz_cu_finite(__fdiv_rn((float)s, norm))) {
        return 0.0f;
    }
    return norm;
}

/* A bucket's coding constants from its norm. */
typedef struct qsgd_coef {
    float scale; /* norm / s */
    float inv;   /* s / norm, 0 for norm 0 */
} qsgd_coef_t;

__device__ __forceinline__ qsgd_coef_t qsgd_coef(float norm, unsigned s)
{
    qsgd_coef_t c;
    c.scale = qsgd_scale(norm, s);
    c.inv = norm > 0.0f ? __fdiv_rn((float)s, norm) : 0.0f;
    return c;
}

/* The code (level | sign << L) of finite a; *dec gets its decoded value. */
__device__ __forceinline__ uint32_t qsgd_code(float a, qsgd_coef_t c, unsigned s, unsigned L,
                                              float u, float *dec)
{
    const uint32_t bits = __float_as_uint(a);
    const uint32_t sb = bits >> 31;
    const float r = __fmul_rn(__uint_as_float(bits & 0x7fffffffu), c.inv);
    const int32_t f = (int32_t)r;
    const float frac = __fsub_rn(r, (float)f);
    uint32_t l = (uint32_t)f + (uint32_t)(u < frac);
    l = l < s ? l : s;
    *dec = qsgd_decode_one(c.scale, l, sb);
    return l | (sb << L);
}

/* ---------------------------------------------------------------------------------------------
 * Packed chunks: 8 codes of b bits in b bytes; bits [0, 64) in lo, [64, 72) in hi (b = 9).
 * ------------------------------------------------------------------------------------------- */
typedef struct qsgd_bits {
    uint64_t lo;
    uint32_t hi;
} qsgd_bits_t;

__device__ __forceinline__ void qsgd_put(qsgd_bits_t *v, uint32_t code, unsigned pos, unsigned b)
{
    v->lo |= (uint64_t)code << pos;
    if (pos + b > 64) {
        v->hi |= code >> (64 - pos);
    }
}

__device__ __forceinline__ uint32_t qsgd_get(const qsgd_bits_t *v, unsigned pos, unsigned b)
{
    uint32_t c = (uint32_t)(v->lo >> pos);
    if (pos + b > 64) {
        c |= v->hi << (64 - pos);
    }
    return c & ((1u << b) - 1u);
}

/* nbytes (<= b) bytes of a chunk at p; wide: an 8-byte aligned code area. */
__device__ __forceinline__ void qsgd_store(uint8_t *p, qsgd_bits_t v, unsigned b, int nbytes,
                                           int wide)
{
    if (b < 8 || (b == 8 && wide)) {
        sqz_cu_store_bits(p, v.lo, b, nbytes);
        return;
    }
    for (int q = 0; q < nbytes; q++) {
        p[q] = q < 8 ? (uint8_t)(v.lo >> (8 * q)) : (uint8_t)v.hi;
    }
}

__device__ __forceinline__ qsgd_bits_t qsgd_load(const uint8_t *p, unsigned b, int nbytes,
                                                 int wide)
{
    qsgd_bits_t v = {0, 0};
    if (b < 8 || (b == 8 && wide)) {
        v.lo = sqz_cu_load_bits(p, b, nbytes);
        return v;
    }
    for (int q = 0; q < nbytes; q++) {
        if (q < 8) {
            v.lo |= (uint64_t)p[q] << (8 * q);
        } else {
            v.hi = p[q];
        }
    }
    return v;
}

/* ---------------------------------------------------------------------------------------------
 * Compress: the per-bucket statistics (sum a^2 in double, max |a|, finiteness), finished into
 * the bucket's norm, then a thread per chunk of 8 encodes.
 * ------------------------------------------------------------------------------------------- */
typedef struct qsgd_stats {
    double   sq;
    uint32_t mx;
    uint32_t bad;
} qsgd_stats_t;

struct qsgd_stats_op {
    __device__ __forceinline__ qsgd_stats_t operator()(qsgd_stats_t x, qsgd_stats_t y) const
    {
        qsgd_stats_t r;
        r.sq = __dadd_rn(x.sq, y.sq); /* commutative bit for bit, as the butterfly needs */
        r.mx = max(x.mx, y.mx);
        r.bad = x.bad | y.bad;
        return r;
    }
};

struct qsgd_seg_policy {
    typedef qsgd_stats_t  stats_t;
    typedef qsgd_stats_op op_t;
    unsigned              s;
    int                   use_max;
    __device__ __forceinline__ stats_t identity() const
    {
        stats_t z;
        z.sq = 0.0;
        z.mx = 0;
        z.bad = 0;
        return z;
    }
    __device__ __forceinline__ void add(stats_t *st, float a) const
    {
        if (sqz_cu_finite(a)) {
            st->sq = __dadd_rn(st->sq, __dmul_rn((double)a, (double)a));
            st->mx = max(st->mx, sqz_cu_abs_key(a));
        } else {
            st->bad = 1;
        }
    }
    __device__ __forceinline__ void finish(uint8_t *payload, size_t k, const stats_t &st) const
    {
        const double nd = use_max ? (double)__uint_as_float(st.mx) : __dsqrt_rn(st.sq);
        reinterpret_cast<float *>(payload + 16)[k] = qsgd_norm_f32(nd, s);
        if (st.bad) {
            sqz_cu_flag_nonfinite(payload);
        }
    }
};

/* ---------------------------------------------------------------------------------------------
 * Compress, fused path.  Block of QSGD_THREADS threads = 256 / G groups; group q of work unit u
 * owns bucket k = u * (256 / G) + q; thread g of the group holds chunks c = g + j * G (j < nc).
 * ------------------------------------------------------------------------------------------- */
#define QSGD_THREADS 256
#define QSGD_NC 2   /* chunks of 8 in registers per thread (quant's measured choice) */
#define QSGD_MINB 4 /* blocks per SM the register budget is cut for */
#define QSGD_FUSED_MAX (QSGD_THREADS * 8 * QSGD_NC)

static int qsgd_fused(const qsgd_layout_t *Q)
{
    return Q->B % 8 == 0 && Q->B <= QSGD_FUSED_MAX;
}

template <typename T>
__global__ void __launch_bounds__(QSGD_THREADS, QSGD_MINB)
    qsgd_fused_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n,
                      qsgd_layout_t Q, int use_max, uint32_t key, int glog2, int nc, int vec,
                      uint8_t *__restrict__ payload)
{
    __shared__ qsgd_stats_t red[QSGD_THREADS / 32];
    const int G = 1 << glog2;
    const int g = (int)threadIdx.x & (G - 1);
    const size_t gpb = (size_t)(QSGD_THREADS >> glog2);
    const size_t units = (Q.nb + gpb - 1) / gpb;
    uint8_t *packed = payload + 16 + 4 * Q.nb;
    const qsgd_seg_policy pol = {Q.s, use_max};
    for (size_t u = blockIdx.x; u < units; u += gridDim.x) {
        const size_t k = u * gpb + (threadIdx.x >> glog2);
        const size_t s0 = k * Q.B; /* a multiple of 8 */
        const size_t m = k < Q.nb ? (n - s0 < Q.B ? n - s0 : Q.B) : 0;
        float a[QSGD_NC][8];
        uint32_t fin[QSGD_NC];
        qsgd_stats_t st = pol.identity();
#pragma unroll
        for (int j = 0; j < QSGD_NC; j++) {
            fin[j] = 0;
            const size_t c = (size_t)g + (size_t)j * G;
            if (j < nc && c * 8 < m) {
                const int len = (int)(m - c * 8 < 8 ? m - c * 8 : 8);
                sqz_cu_load_a8(in, res, s0 + c * 8, len, vec != 0, a[j]);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if (e < len) {
                        pol.add(&st, a[j][e]);
                        fin[j] |= (uint32_t)sqz_cu_finite(a[j][e]) << e;
                    }
                }
            }
        }
        st = sqz_cu_group_reduce(st, glog2, red, qsgd_stats_op());
        if (k >= Q.nb) {
            continue; /* no barrier below: idle groups may leave the step */
        }
        /* Every lane computes the norm (no divergent copy of this latency-bound chain). */
        const double nd = use_max ? (double)__uint_as_float(st.mx) : __dsqrt_rn(st.sq);
        const float norm = qsgd_norm_f32(nd, Q.s);
        if (g == 0) {
            reinterpret_cast<float *>(payload + 16)[k] = norm;
            if (st.bad) {
                sqz_cu_flag_nonfinite(payload);
            }
        }
        const qsgd_coef_t cf = qsgd_coef(norm, Q.s);
#pragma unroll
        for (int j = 0; j < QSGD_NC; j++) {
            const size_t c = (size_t)g + (size_t)j * G;
            if (j < nc && c * 8 < m) {
                const int len = (int)(m - c * 8 < 8 ? m - c * 8 : 8);
                const size_t i0 = s0 + c * 8;
                const uint32_t ckey = sqz_cu_elem_key(key, i0);
                qsgd_bits_t v = {0, 0};
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if ((fin[j] >> e) & 1u) {
                        float dec;
                        const uint32_t code =
                            qsgd_code(a[j][e], cf, Q.s, Q.L,
                                      sqz_cu_hash_f32(ckey, (uint32_t)i0 + (uint32_t)e), &dec);
                        qsgd_put(&v, code, (unsigned)e * Q.b, Q.b);
                        a[j][e] = __fsub_rn(a[j][e], dec);
                    }
                }
                if (res != NULL) {
                    sqz_cu_store8(res, i0, len, vec != 0, a[j], fin[j]);
                }
                qsgd_store(packed + (i0 / 8) * Q.b, v, Q.b,
                           len == 8 ? (int)Q.b : (int)((len * Q.b + 7) / 8), Q.wide);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Compress, general path: a thread per chunk of 8 encodes, the norms already in the payload.
 * ------------------------------------------------------------------------------------------- */
template <typename T>
__global__ void __launch_bounds__(256)
    qsgd_encode_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n,
                       qsgd_layout_t Q, uint32_t key, int vec, uint8_t *__restrict__ payload)
{
    const float *norms = reinterpret_cast<const float *>(payload + 16);
    uint8_t *packed = payload + 16 + 4 * Q.nb;
    const size_t nch = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int len = (int)(n - i0 < 8 ? n - i0 : 8);
        const size_t k0 = sqz_cu_udiv(i0, Q.B);
        const size_t kb = (k0 + 1) * Q.B; /* elements from kb on are in bucket k0 + 1 */
        const qsgd_coef_t c0 = qsgd_coef(norms[k0], Q.s);
        const qsgd_coef_t c1 = i0 + (size_t)len > kb ? qsgd_coef(norms[k0 + 1], Q.s) : c0;
        float a[8];
        sqz_cu_load_a8(in, res, i0, len, vec != 0, a);
        const uint32_t ckey = sqz_cu_elem_key(key, i0);
        qsgd_bits_t v = {0, 0};
        uint32_t fin = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            if (e < len && sqz_cu_finite(a[e])) {
                float dec;
                const uint32_t code =
                    qsgd_code(a[e], i0 + e >= kb ? c1 : c0, Q.s, Q.L,
                              sqz_cu_hash_f32(ckey, (uint32_t)i0 + (uint32_t)e), &dec);
                qsgd_put(&v, code, (unsigned)e * Q.b, Q.b);
                a[e] = __fsub_rn(a[e], dec);
                fin |= 1u << e;
            }
        }
        if (res != NULL) {
            sqz_cu_store8(res, i0, len, vec != 0, a, fin);
        }
        qsgd_store(packed + ch * Q.b, v, Q.b, len == 8 ? (int)Q.b : (int)((len * Q.b + 7) / 8),
                   Q.wide);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Decoding.
 * ------------------------------------------------------------------------------------------- */

/* d[e] = decoded value of element ch * 8 + e (e < len) of the payload at p. */
__device__ __forceinline__ void qsgd_decode8(const uint8_t *p, const qsgd_layout_t &Q, size_t ch,
                                             int len, size_t k0, size_t kb, float d[8])
{
    const float *norms = reinterpret_cast<const float *>(p + 16);
    const size_t i0 = ch * 8;
    const float s0 = qsgd_scale(norms[k0], Q.s);
    const float s1 = i0 + (size_t)len > kb ? qsgd_scale(norms[k0 + 1], Q.s) : s0;
    const qsgd_bits_t v = qsgd_load(p + 16 + 4 * Q.nb + ch * Q.b, Q.b,
                                    len == 8 ? (int)Q.b : (int)((len * Q.b + 7) / 8), Q.wide);
    const uint32_t lmask = (1u << Q.L) - 1u;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const uint32_t code = qsgd_get(&v, (unsigned)e * Q.b, Q.b);
        d[e] = qsgd_decode_one(i0 + e >= kb ? s1 : s0, code & lmask, (code >> Q.L) & 1u);
    }
}

/* out = scale * sum over ranks (in order) of the decoded payloads, or NaN everywhere when some
 * header is bad (every block reads every header, so all agree). */
template <typename T>
__global__ void __launch_bounds__(256)
    qsgd_decode_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t n,
                       qsgd_layout_t Q, float scale, int vec, T *out)
{
    const int bad = sqz_cu_block_any_bad(payloads, nranks, Q.total);
    const size_t nch = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int len = (int)(n - i0 < 8 ? n - i0 : 8);
        float acc[8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            acc[e] = bad ? __int_as_float(0x7fc00000) : 0.0f;
        }
        if (!bad) {
            const size_t k0 = sqz_cu_udiv(i0, Q.B);
            const size_t kb = (k0 + 1) * Q.B;
#pragma unroll 4
            for (int r = 0; r < nranks; r++) {
                float d[8];
                qsgd_decode8(payloads + (size_t)r * Q.total, Q, ch, len, k0, kb, d);
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

/* The own payload's decoded chunk (qsgd_decode8). */
struct qsgd_chunk_decoder {
    const uint8_t *own;
    qsgd_layout_t  Q;
    __device__ __forceinline__ void operator()(size_t ch, int len, float d[8]) const
    {
        const size_t k0 = sqz_cu_udiv(ch * 8, Q.B);
        qsgd_decode8(own, Q, ch, len, k0, (k0 + 1) * Q.B, d);
    }
};

/* When *bad: residual = residual + decoded(own) - in wherever in + residual is finite. */
template <typename T>
__global__ void __launch_bounds__(256)
    qsgd_restore_kernel(const uint8_t *__restrict__ own, const uint32_t *__restrict__ bad,
                        const T *__restrict__ in, float *__restrict__ res, size_t n,
                        qsgd_layout_t Q, int vec)
{
    sqz_cu_restore_chunks(bad, in, res, n, vec, qsgd_chunk_decoder{own, Q});
}

/* ---------------------------------------------------------------------------------------------
 * Host side.
 * ------------------------------------------------------------------------------------------- */

static size_t qsgd_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    qsgd_layout_t Q;
    if (n == 0 || !qsgd_layout(p, n, &Q)) {
        return 0;
    }
    return Q.total;
}

static size_t qsgd_workspace_bytes(const sqz_gpu_params_t *p, size_t n, sqz_dtype_t dtype)
{
    qsgd_layout_t Q;
    (void)dtype;
    size_t bytes = SQZ_CU_WS_CTRL_BYTES;
    if (n > 0 && qsgd_layout(p, n, &Q) && !qsgd_fused(&Q)) {
        const sqz_cu_segs_t sg = sqz_cu_segments(Q.B, Q.nb);
        if (sg.spb > 1) {
            bytes += sqz_cu_round256(sg.nseg * sizeof(qsgd_stats_t));
        }
    }
    return bytes;
}

template <typename T>
static sqz_status_t qsgd_compress_t(const qsgd_layout_t *Q, int use_max, const T *in,
                                    float *res, size_t n, uint32_t key, uint8_t *payload,
                                    uint8_t *ws, cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && (res == NULL || sqz_cu_aligned(res, 16));
    if (qsgd_fused(Q)) {
        /* G: the smallest power of two with G * QSGD_NC >= B / 8 chunks. */
        const size_t C = Q->B / 8;
        int glog2 = 0;
        while (((size_t)1 << glog2) * QSGD_NC < C) {
            glog2++;
        }
        const int nc = (int)sqz_cu_div_up(C, (size_t)1 << glog2);
        const size_t gpb = (size_t)QSGD_THREADS >> glog2;
        qsgd_fused_kernel<T><<<sqz_cu_grid(Q->nb, gpb), QSGD_THREADS, 0, st>>>(
            in, res, n, *Q, use_max, key, glog2, nc, vec, payload);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    }
    qsgd_stats_t *part = reinterpret_cast<qsgd_stats_t *>(ws + SQZ_CU_WS_CTRL_BYTES);
    const qsgd_seg_policy pol = {Q->s, use_max};
    const sqz_status_t sst = sqz_cu_launch_seg_stats(in, res, n, Q->B, Q->nb, pol, part, payload,
                                                     st);
    if (sst != SQZ_OK) {
        return sst;
    }
    qsgd_encode_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        in, res, n, *Q, key, vec, payload);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t qsgd_compress(const sqz_gpu_params_t *p, const void *in, sqz_dtype_t dtype,
                                  float *residual, size_t n, uint32_t key, void *payload,
                                  void *workspace, void *stream)
{
    qsgd_layout_t Q;
    if (!qsgd_layout(p, n, &Q)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const sqz_status_t s = sqz_cu_launch_header_init(payload, Q.body, Q.total, stream);
    if (s != SQZ_OK) {
        return s;
    }
    cudaStream_t st = (cudaStream_t)stream;
    uint8_t *pl = (uint8_t *)payload;
    uint8_t *ws = (uint8_t *)workspace;
    const int mx = p->qsgd_max != 0;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return qsgd_compress_t(&Q, mx, (const SQZ_CU_ELEM(t) *)in, residual, n, key, pl, ws, st);
    });
}

template <typename T>
static sqz_status_t qsgd_decode_t(const qsgd_layout_t *Q, const uint8_t *payloads, int nranks,
                                  size_t n, float scale, T *out, cudaStream_t st)
{
    qsgd_decode_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        payloads, nranks, n, *Q, scale, sqz_cu_aligned(out, 16), out);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t qsgd_decode_sum(const sqz_gpu_params_t *p, const void *payloads, int nranks,
                                    size_t n, float scale, void *out, sqz_dtype_t dtype,
                                    void *workspace, void *stream)
{
    qsgd_layout_t Q;
    (void)workspace;
    if (!qsgd_layout(p, n, &Q)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *pl = (const uint8_t *)payloads;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return qsgd_decode_t(&Q, pl, nranks, n, scale, (SQZ_CU_ELEM(t) *)out, st);
    });
}

template <typename T>
static sqz_status_t qsgd_restore_t(const qsgd_layout_t *Q, const uint8_t *own,
                                   const uint32_t *bad, const T *in, float *res, size_t n,
                                   cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && sqz_cu_aligned(res, 16);
    qsgd_restore_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        own, bad, in, res, n, *Q, vec);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t qsgd_restore(const sqz_gpu_params_t *p, const void *own, const uint32_t *bad,
                                 const void *in, sqz_dtype_t dtype, float *residual, size_t n,
                                 void *stream)
{
    qsgd_layout_t Q;
    if (!qsgd_layout(p, n, &Q)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *o = (const uint8_t *)own;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return qsgd_restore_t(&Q, o, bad, (const SQZ_CU_ELEM(t) *)in, residual, n, st);
    });
}

extern "C" const sqz_cu_method_t sqz_cu_qsgd_method = {
    "qsgd", qsgd_payload_bytes, qsgd_workspace_bytes, qsgd_compress, qsgd_decode_sum, qsgd_restore,
    0, /* shared_key */
};
