/*
 * Device helpers shared by the CUDA codecs (src/cuda/sqz_cuda_codec.cu and the method kernels in
 * plugins/{quant,sign,topk}/sqz_*.cu).  Header-only: device functions are __forceinline__, host
 * helpers static inline, so a translation unit that does not use one pays nothing for it.
 *
 * Conventions of every kernel built on these helpers:
 *  - Elements are handled in "chunks" of 8 consecutive elements starting at a multiple of 8 (in
 *    the buffer's own indexing): 8 codes of b bits are exactly b bytes of a LSB-first packed
 *    stream, so a thread that owns a chunk owns whole payload bytes and writes them with plain
 *    stores (no read-modify-write, no race), and 8 elements are one or two 16-byte loads.
 *  - Vector (16-byte) loads and stores are used only when the caller found the base pointers
 *    16-byte aligned (the `vec` flag) and the chunk is full; otherwise scalar accesses.
 *  - Rounding-sensitive float arithmetic goes through the _rn intrinsics: they are never
 *    contracted into FMAs, so results match the CPU plugins whatever --fmad says.
 *  - Index arithmetic is size_t (64-bit) everywhere.
 */
#ifndef SQZ_CUDA_COMMON_CUH
#define SQZ_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <type_traits>

#include "sqz_cuda_codec.h"

/* ---------------------------------------------------------------------------------------------
 * Launch helpers.
 * ------------------------------------------------------------------------------------------- */

/** Returns SQZ_ERR_CUDA from the enclosing function when the last launch failed.  (It also
 *  reports an earlier asynchronous error of the context: the caller cannot do better.) */
#define SQZ_CU_CHECK_LAUNCH()                                                                  \
    do {                                                                                       \
        if (cudaGetLastError() != cudaSuccess) {                                               \
            return SQZ_ERR_CUDA;                                                               \
        }                                                                                      \
    } while (0)

/** Grid sizes are capped here; kernels loop grid-stride over their work units, so any n works
 *  and the grid stays far below the 2^31 - 1 limit. */
#define SQZ_CU_GRID_MAX ((size_t)1 << 20)

static inline size_t sqz_cu_div_up(size_t a, size_t b)
{
    return a / b + (a % b != 0);
}

/** \return the blocks for `units` work units handled `per_block` at a time (>= 1, capped). */
static inline unsigned sqz_cu_grid(size_t units, size_t per_block)
{
    size_t g = sqz_cu_div_up(units, per_block);
    g = g < 1 ? 1 : g;
    return (unsigned)(g < SQZ_CU_GRID_MAX ? g : SQZ_CU_GRID_MAX);
}

static inline int sqz_cu_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p % a) == 0;
}

/** \return x rounded up to a multiple of 16 (payload sizes). */
static inline size_t sqz_cu_round16(size_t x)
{
    return (x + 15) / 16 * 16;
}

/** \return x rounded up to a multiple of 256 (workspace sub-buffers). */
static inline size_t sqz_cu_round256(size_t x)
{
    return (x + 255) / 256 * 256;
}

/** Bytes of n codes of b bits packed LSB-first (sqz_pu_packed_bytes()). */
static inline size_t sqz_cu_packed_bytes(size_t n, unsigned b)
{
    return (n / 8) * b + ((n % 8) * b + 7) / 8;
}

/** The first workspace bytes of every method: small control words written and read on the device
 *  only (never copied to the host).  Method sub-buffers start at SQZ_CU_WS_CTRL_BYTES. */
typedef struct sqz_cu_ctrl {
    uint32_t thr;   /* topk: the threshold key of the last compress */
    uint32_t bad;   /* restore / topk decode: some payload is flagged (or has a wrong magic) */
    uint32_t total; /* topk: candidates staged by the last compress (before the cut at k) */
    uint32_t spare;
} sqz_cu_ctrl_t;
#define SQZ_CU_WS_CTRL_BYTES 256

/* ---------------------------------------------------------------------------------------------
 * Per-bucket segments of the two-kernel (statistics, then encode) paths of quant and sign:
 * a bucket of B elements is cut into spb segments of seg_len elements (the last ones may be short
 * or empty); one warp reduces each segment, then one block per bucket combines its segments in
 * a fixed order (skipped when spb == 1).  seg_len grows with B so that spb <= 16384.
 * ------------------------------------------------------------------------------------------- */
typedef struct sqz_cu_segs {
    size_t seg_len; /* elements per segment */
    size_t spb;     /* segments per bucket */
    size_t nseg;    /* nb * spb */
} sqz_cu_segs_t;

static inline sqz_cu_segs_t sqz_cu_segments(size_t B, size_t nb)
{
    sqz_cu_segs_t s;
    const size_t want = sqz_cu_div_up(B, 16384);
    s.seg_len = want > 2048 ? want : 2048;
    s.spb = sqz_cu_div_up(B, s.seg_len);
    s.nseg = nb * s.spb;
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * Element types: load as float, store float rounded to nearest (even).
 * ------------------------------------------------------------------------------------------- */
__device__ __forceinline__ float sqz_cu_to_f32(float x)
{
    return x;
}
__device__ __forceinline__ float sqz_cu_to_f32(__half x)
{
    return __half2float(x);
}
__device__ __forceinline__ float sqz_cu_to_f32(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T> __device__ __forceinline__ T sqz_cu_from_f32(float x);
template <> __device__ __forceinline__ float sqz_cu_from_f32<float>(float x)
{
    return x;
}
template <> __device__ __forceinline__ __half sqz_cu_from_f32<__half>(float x)
{
    return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 sqz_cu_from_f32<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

/* 8 consecutive elements from 16-byte aligned p.  Plain loads and stores: streaming hints
 * (__ldcs / __stcs) measured slower here (the residual is read, then written back while its
 * lines are still in L2). */
__device__ __forceinline__ void sqz_cu_vload8(const float *p, float x[8])
{
    const float4 u = reinterpret_cast<const float4 *>(p)[0];
    const float4 v = reinterpret_cast<const float4 *>(p)[1];
    x[0] = u.x, x[1] = u.y, x[2] = u.z, x[3] = u.w;
    x[4] = v.x, x[5] = v.y, x[6] = v.z, x[7] = v.w;
}
__device__ __forceinline__ void sqz_cu_vload8(const __half *p, float x[8])
{
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int q = 0; q < 4; q++) {
        __half2 h;
        memcpy(&h, &w[q], sizeof h);
        const float2 f = __half22float2(h);
        x[2 * q] = f.x;
        x[2 * q + 1] = f.y;
    }
}
__device__ __forceinline__ void sqz_cu_vload8(const __nv_bfloat16 *p, float x[8])
{
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int q = 0; q < 4; q++) {
        __nv_bfloat162 h;
        memcpy(&h, &w[q], sizeof h);
        const float2 f = __bfloat1622float2(h);
        x[2 * q] = f.x;
        x[2 * q + 1] = f.y;
    }
}

__device__ __forceinline__ void sqz_cu_vstore8(float *p, const float x[8])
{
    reinterpret_cast<float4 *>(p)[0] = make_float4(x[0], x[1], x[2], x[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(x[4], x[5], x[6], x[7]);
}
__device__ __forceinline__ void sqz_cu_vstore8(__half *p, const float x[8])
{
    uint32_t w[4];
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const __half2 h = __floats2half2_rn(x[2 * q], x[2 * q + 1]);
        memcpy(&w[q], &h, sizeof h);
    }
    *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}
__device__ __forceinline__ void sqz_cu_vstore8(__nv_bfloat16 *p, const float x[8])
{
    uint32_t w[4];
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(x[2 * q], x[2 * q + 1]);
        memcpy(&w[q], &h, sizeof h);
    }
    *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

/** The element type T of a pointer type (for the lambdas of sqz_cu_with_dtype). */
#define SQZ_CU_ELEM(t) std::remove_pointer_t<decltype(t)>

/** Calls f(T *) with a null pointer of the element type of dtype (float, __half or
 *  __nv_bfloat16), so that one generic lambda instantiates a method's launcher for the three:
 *      return sqz_cu_with_dtype(dtype, [&](auto *t) { ... (const SQZ_CU_ELEM(t) *)in ... });
 *  \return what f returns, or SQZ_ERR_INVALID_PARAM for another dtype. */
template <typename F>
static inline sqz_status_t sqz_cu_with_dtype(sqz_dtype_t dtype, F f)
{
    switch (dtype) {
    case SQZ_DTYPE_FLOAT32:
        return f((float *)nullptr);
    case SQZ_DTYPE_FLOAT16:
        return f((__half *)nullptr);
    case SQZ_DTYPE_BFLOAT16:
        return f((__nv_bfloat16 *)nullptr);
    }
    return SQZ_ERR_INVALID_PARAM;
}
/** x[e] = p[i0 + e] for e < len (len <= 8), 0 for the others.  vec: p is 16-byte aligned and
 *  i0 a multiple of 8, so a full chunk is read with 16-byte loads. */
template <typename T>
__device__ __forceinline__ void sqz_cu_load8(const T *p, size_t i0, int len, bool vec, float x[8])
{
    if (vec && len == 8) {
        sqz_cu_vload8(p + i0, x);
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) {
        x[e] = e < len ? sqz_cu_to_f32(p[i0 + e]) : 0.0f;
    }
}

/** p[i0 + e] = x[e] (rounded to T) for e < len whose bit is set in mask.  vec as sqz_cu_load8. */
template <typename T>
__device__ __forceinline__ void sqz_cu_store8(T *p, size_t i0, int len, bool vec, const float x[8],
                                              uint32_t mask)
{
    if (vec && len == 8 && mask == 0xffu) {
        sqz_cu_vstore8(p + i0, x);
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) {
        if (e < len && ((mask >> e) & 1u)) {
            p[i0 + e] = sqz_cu_from_f32<T>(x[e]);
        }
    }
}

/** a[e] = in[i0 + e] + res[i0 + e] (res NULL: in alone) for e < len, 0 for the others. */
template <typename T>
__device__ __forceinline__ void sqz_cu_load_a8(const T *in, const float *res, size_t i0, int len,
                                               bool vec, float a[8])
{
    sqz_cu_load8(in, i0, len, vec, a);
    if (res != NULL) {
        float r[8];
        sqz_cu_load8(res, i0, len, vec, r);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            a[e] = __fadd_rn(a[e], r[e]);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Finiteness.
 * ------------------------------------------------------------------------------------------- */

/** 1 when x is neither NaN nor +-Inf (a bit test, as sqz_pu_is_finite_f32()). */
__device__ __forceinline__ bool sqz_cu_finite(float x)
{
    return (__float_as_uint(x) & 0x7fffffffu) < 0x7f800000u;
}

/** The bits of |x|: for finite x they order like |x| (sqz_pu_abs_key()). */
__device__ __forceinline__ uint32_t sqz_cu_abs_key(float x)
{
    return __float_as_uint(x) & 0x7fffffffu;
}

/* ---------------------------------------------------------------------------------------------
 * Deterministic randomness: the same bits as plugins/common/sqz_plugin_util.h.
 * ------------------------------------------------------------------------------------------- */

/** sqz_pu_hash32(): murmur3 finalizer of key + i * golden ratio. */
__device__ __forceinline__ uint32_t sqz_cu_hash32(uint32_t key, uint32_t i)
{
    uint32_t x = key + i * 0x9e3779b9u;
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}

/** sqz_pu_hash_f32(): uniform in [0, 1) with 24 bits (the conversion and scaling are exact). */
__device__ __forceinline__ float sqz_cu_hash_f32(uint32_t key, uint32_t i)
{
    return __fmul_rn((float)(sqz_cu_hash32(key, i) >> 8), 0x1p-24f);
}

/** sqz_pu_splitmix64(). */
__host__ __device__ __forceinline__ uint64_t sqz_cu_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/** sqz_pu_seed_key(). */
__host__ __device__ __forceinline__ uint64_t sqz_cu_seed_key(uint64_t seed, int rank, uint64_t seq,
                                                             int stage)
{
    uint64_t s = seed;
    uint64_t k = sqz_cu_splitmix64(&s);
    s = k ^ ((uint64_t)(uint32_t)rank << 32 | (uint32_t)stage);
    k = sqz_cu_splitmix64(&s);
    s = k ^ seq;
    return sqz_cu_splitmix64(&s);
}

/** The hash key of element i: the CPU quant re-keys indices past 2^32 (the hash index is
 *  (uint32_t)i) with key ^ (uint32_t)sqz_pu_seed_key(key, 0, i >> 32, 0), per 2^32 range as its
 *  AVX2 path does. */
__device__ __forceinline__ uint32_t sqz_cu_elem_key(uint32_t key, size_t i)
{
    const uint64_t hi = (uint64_t)i >> 32;
    return hi ? key ^ (uint32_t)sqz_cu_seed_key(key, 0, hi, 0) : key;
}

/* ---------------------------------------------------------------------------------------------
 * Integer helpers.
 * ------------------------------------------------------------------------------------------- */

/** a / b, through 32-bit division when both fit (much cheaper than the 64-bit one). */
__device__ __forceinline__ size_t sqz_cu_udiv(size_t a, size_t b)
{
    if ((a | b) <= 0xffffffffull) {
        return (uint32_t)a / (uint32_t)b;
    }
    return a / b;
}

/* ---------------------------------------------------------------------------------------------
 * Packed codes: a chunk's 8 codes of b bits are the b bytes at chunk * b of the packed area,
 * held here little-endian in a uint64_t (code e at bits [e*b, (e+1)*b)).
 * ------------------------------------------------------------------------------------------- */

/** Stores nbytes (<= b) bytes of the packed chunk v at p.  Full chunks of b = 2, 4 or 8 use one
 *  aligned store: p = area + chunk * b with an 8-byte aligned area is b-byte aligned. */
__device__ __forceinline__ void sqz_cu_store_bits(uint8_t *p, uint64_t v, unsigned b, int nbytes)
{
    if (nbytes == (int)b) {
        switch (b) {
        case 1:
            *p = (uint8_t)v;
            return;
        case 2:
            *reinterpret_cast<uint16_t *>(p) = (uint16_t)v;
            return;
        case 4:
            *reinterpret_cast<uint32_t *>(p) = (uint32_t)v;
            return;
        case 8:
            *reinterpret_cast<uint2 *>(p) = make_uint2((uint32_t)v, (uint32_t)(v >> 32));
            return;
        default:
            break;
        }
    }
    for (int q = 0; q < nbytes; q++) {
        p[q] = (uint8_t)(v >> (8 * q));
    }
}

/** Loads nbytes (<= b) bytes of a packed chunk at p (the rest of the result is 0). */
__device__ __forceinline__ uint64_t sqz_cu_load_bits(const uint8_t *p, unsigned b, int nbytes)
{
    if (nbytes == (int)b) {
        switch (b) {
        case 1:
            return *p;
        case 2:
            return *reinterpret_cast<const uint16_t *>(p);
        case 4:
            return *reinterpret_cast<const uint32_t *>(p);
        case 8: {
            const uint2 u = *reinterpret_cast<const uint2 *>(p);
            return (uint64_t)u.x | ((uint64_t)u.y << 32);
        }
        default:
            break;
        }
    }
    uint64_t v = 0;
    for (int q = 0; q < nbytes; q++) {
        v |= (uint64_t)p[q] << (8 * q);
    }
    return v;
}

/* ---------------------------------------------------------------------------------------------
 * Reductions.
 * ------------------------------------------------------------------------------------------- */
__device__ __forceinline__ float sqz_cu_shfl_xor(float v, int off)
{
    return __shfl_xor_sync(0xffffffffu, v, off);
}
__device__ __forceinline__ double sqz_cu_shfl_xor(double v, int off)
{
    return __shfl_xor_sync(0xffffffffu, v, off);
}
__device__ __forceinline__ uint32_t sqz_cu_shfl_xor(uint32_t v, int off)
{
    return __shfl_xor_sync(0xffffffffu, v, off);
}
__device__ __forceinline__ unsigned long long sqz_cu_shfl_xor(unsigned long long v, int off)
{
    return __shfl_xor_sync(0xffffffffu, v, off);
}
/* A statistics struct (quant's min/max, sign's sums, ...): moved word by word, which moves its
 * value bit for bit since it is trivially copyable and a whole number of 32-bit words (padding
 * words travel too, harmlessly). */
template <typename S, typename std::enable_if<std::is_class<S>::value, int>::type = 0>
__device__ __forceinline__ S sqz_cu_shfl_xor(S s, int off)
{
    static_assert(std::is_trivially_copyable<S>::value && sizeof(S) % 4 == 0,
                  "a statistics struct must be plain 32-bit words");
    uint32_t w[sizeof(S) / 4];
    memcpy(w, &s, sizeof(S));
#pragma unroll
    for (unsigned q = 0; q < sizeof(S) / 4; q++) {
        w[q] = __shfl_xor_sync(0xffffffffu, w[q], off);
    }
    memcpy(&s, w, sizeof(S));
    return s;
}

/**
 * Reduces v over aligned groups of G = 2^glog2 consecutive threads of the block; every thread
 * of a group gets the group's result.  op must be commutative (bit for bit): the butterfly then
 * gives the same bits to every lane, and the cross-warp step combines warps in a fixed order, so
 * the result is deterministic.  G <= 32: shuffles only (no barrier).  G > 32: smem holds
 * blockDim.x / 32 values and the call contains __syncthreads(), so it must be reached by the
 * whole block (G uniform).  V is a scalar with an sqz_cu_shfl_xor overload or a struct.  Every lane of every
 * warp must be active.
 */
template <typename V, typename Op>
__device__ __forceinline__ V sqz_cu_group_reduce(V v, int glog2, V *smem, Op op)
{
    const int G = 1 << glog2;
    const int w = G < 32 ? G : 32;
    for (int off = w >> 1; off > 0; off >>= 1) {
        v = op(v, sqz_cu_shfl_xor(v, off));
    }
    if (G > 32) {
        if ((threadIdx.x & 31) == 0) {
            smem[threadIdx.x >> 5] = v;
        }
        __syncthreads();
        const int first = (int)(threadIdx.x >> glog2) << (glog2 - 5);
        V r = smem[first];
        for (int q = 1; q < (G >> 5); q++) {
            r = op(r, smem[first + q]);
        }
        __syncthreads(); /* smem is reused by the next call */
        v = r;
    }
    return v;
}

/** Inclusive prefix sum over the 32 lanes of a warp. */
__device__ __forceinline__ uint32_t sqz_cu_warp_incl_scan(uint32_t v)
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const uint32_t t = __shfl_up_sync(0xffffffffu, v, off);
        v += lane >= off ? t : 0u;
    }
    return v;
}

/* ---------------------------------------------------------------------------------------------
 * Payload headers.
 * ------------------------------------------------------------------------------------------- */

/** 1 when the 16-byte aligned header at p is flagged non-finite or has a wrong magic. */
__device__ __forceinline__ int sqz_cu_header_bad(const uint8_t *p)
{
    /* (the magic and flags words alone: half the bytes of the header through L1, which counts
     * where a decode reads every header per group of a few code bytes) */
    const uint2 h = *reinterpret_cast<const uint2 *>(p);
    return h.x != SQZ_GPU_MAGIC || (h.y & SQZ_GPU_FLAG_NONFINITE) != 0;
}

/** Block-wide: 1 when any of the nranks payloads (stride pbytes) is bad.  Contains a barrier:
 *  the whole block must call it. */
__device__ __forceinline__ int sqz_cu_block_any_bad(const uint8_t *payloads, int nranks,
                                                    size_t pbytes)
{
    int bad = 0;
    for (int r = threadIdx.x; r < nranks; r += blockDim.x) {
        bad |= sqz_cu_header_bad(payloads + (size_t)r * pbytes);
    }
    return __syncthreads_or(bad);
}

/** w = the NBY bytes at p as little-endian words, loaded 16, 8 or 4 bytes at a time: p is
 *  aligned to `align` (4, 8 or 16) bytes, and to 4 at least. */
template <int NBY>
__device__ __forceinline__ void sqz_cu_load_words(const uint8_t *p, uint32_t w[NBY / 4], int align)
{
    static_assert(NBY % 4 == 0, "whole words");
    if (NBY % 16 == 0 && align >= 16) {
#pragma unroll
        for (int q = 0; q < NBY / 16; q++) {
            const uint4 u = reinterpret_cast<const uint4 *>(p)[q];
            w[4 * q] = u.x, w[4 * q + 1] = u.y, w[4 * q + 2] = u.z, w[4 * q + 3] = u.w;
        }
    } else if (NBY % 8 == 0 && align >= 8) {
#pragma unroll
        for (int q = 0; q < NBY / 8; q++) {
            const uint2 u = reinterpret_cast<const uint2 *>(p)[q];
            w[2 * q] = u.x, w[2 * q + 1] = u.y;
        }
    } else {
#pragma unroll
        for (int q = 0; q < NBY / 4; q++) {
            w[q] = reinterpret_cast<const uint32_t *>(p)[q];
        }
    }
}

/** Floats of shared memory a warp needs for sqz_cu_store_warp of groups of E elements. */
#define SQZ_CU_STORE_WARP_FLOATS(E) (32 * (((E) < 32 ? (E) : 32) + 4))

/** The whole warp writes its 32 consecutive full groups of E elements, the lane's group in acc,
 *  the warp's first element at w0 (out 16-byte aligned), through sm (this warp's
 *  SQZ_CU_STORE_WARP_FLOATS(E) floats): P = min(E, 32) elements of each lane at a time go
 *  through sm, then each store instruction writes 16 bytes a lane, P / 4 (float) or P / 8
 *  (16-bit T) lanes a row: whole 128-byte lines, where a lane's own stores of its consecutive
 *  elements would touch one line per lane.  (Measured on an H100, decode of 8 payloads: worth it
 *  for float output; 16-bit output touches half as many lines and gains nothing.) */
template <typename T, int E>
__device__ __forceinline__ void sqz_cu_store_warp(const float acc[E], float *sm, size_t w0, T *out)
{
    constexpr int P = E < 32 ? E : 32;     /* elements of a row */
    constexpr int S = P + 4;               /* row stride in sm (conflict-free 16-byte writes) */
    constexpr int V = 16 / (int)sizeof(T); /* elements per 16-byte store */
    constexpr int U = P / V;               /* 16-byte stores per row */
    const int lane = (int)threadIdx.x & 31;
#pragma unroll
    for (int h = 0; h < E / P; h++) {
        __syncwarp();
#pragma unroll
        for (int q = 0; q < P / 4; q++) {
            const float *a = acc + P * h + 4 * q;
            *reinterpret_cast<float4 *>(sm + lane * S + 4 * q) =
                make_float4(a[0], a[1], a[2], a[3]);
        }
        __syncwarp();
#pragma unroll
        for (int s = 0; s < U; s++) {
            const int u = s * 32 + lane, row = u / U, col = (u % U) * V;
            const float4 x = *reinterpret_cast<const float4 *>(sm + row * S + col);
            T *o = out + w0 + (size_t)row * E + P * h + col;
            if (V == 4) {
                *reinterpret_cast<float4 *>(o) = x;
            } else {
                const float4 y = *reinterpret_cast<const float4 *>(sm + row * S + col + 4);
                const float v[8] = {x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w};
                sqz_cu_vstore8(o, v);
            }
        }
    }
}

/** Ranks whose codes decode-and-sum's wide path loads before its first add. */
#define SQZ_CU_WIDE_BATCH 8

/** decode-and-sum's wide path, for payloads of a header, per-bucket metadata and codes of a
 *  fixed width (quant, sign): a thread per group of Dec::E consecutive elements, all in one
 *  bucket; per batch of SQZ_CU_WIDE_BATCH ranks, each rank's metadata and the group's code
 *  words are loaded into registers before the first add, so that the loads are in flight
 *  together; each thread checks every header itself (no block barrier).  The sum runs in rank
 *  order with __fadd_rn, then __fmul_rn by scale, NaN everywhere when some header is bad: the
 *  bits of a thread-per-chunk decode.  WST: float output stored by sqz_cu_store_warp.  A partial
 *  last group goes chunk by chunk (sqz_cu_decode_wide_tail).  Dec gives:
 *    E, NW             elements and code words of a group;
 *    Meta              a bucket's metadata;
 *    load(p, gi, k, m, w)  rank payload p: bucket k's metadata, group gi's code words;
 *    value(m, w, e)    element e of the group decoded;
 *    chunk(p, ic, len, k, d)  elements ic .. ic + len - 1 (bucket k) decoded into d. */
/** The partial last group of sqz_cu_decode_wide_kernel, elements i0 .. n - 1 (bucket k): chunk
 *  by chunk, with the kernel's arithmetic (its codes may end before a whole group's words). */
template <typename T, typename Dec>
__device__ __noinline__ void sqz_cu_decode_wide_tail(const uint8_t *payloads, int nr,
                                                     size_t pbytes, size_t n, size_t i0, size_t k,
                                                     float scale, int vec, T *out, Dec dec)
{
    for (size_t ic = i0; ic < n; ic += 8) {
        const int len = (int)(n - ic < 8 ? n - ic : 8);
        float     acc[8];
        int       bad = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            acc[e] = 0.0f;
        }
        for (int r = 0; r < nr; r++) {
            const uint8_t *p = payloads + (size_t)r * pbytes;
            float          d[8];
            bad |= sqz_cu_header_bad(p);
            dec.chunk(p, ic, len, k, d);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                acc[e] = __fadd_rn(acc[e], d[e]);
            }
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            acc[e] = scale != 1.0f ? __fmul_rn(acc[e], scale) : acc[e];
            acc[e] = bad ? __int_as_float(0x7fc00000) : acc[e];
        }
        sqz_cu_store8(out, ic, len, vec != 0, acc, 0xffu);
    }
}

template <typename T, typename Dec, int NRK, bool WST>
__global__ void __launch_bounds__(256)
    sqz_cu_decode_wide_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t pbytes,
                              size_t n, size_t B, float scale, int vec, T *out, Dec dec)
{
    constexpr int E   = Dec::E;
    const int     nr  = NRK > 0 ? NRK : nranks;
    const size_t  ngr = (n + E - 1) / E;
    __shared__ __align__(16) float sm[WST ? 8 * SQZ_CU_STORE_WARP_FLOATS(E) : 4];
    for (size_t gi = (size_t)blockIdx.x * 256 + threadIdx.x; gi < ngr;
         gi += (size_t)gridDim.x * 256) {
        const size_t i0 = gi * E;
        const size_t k  = sqz_cu_udiv(i0, B);
        if (n - i0 < (size_t)E) {
            sqz_cu_decode_wide_tail(payloads, nr, pbytes, n, i0, k, scale, vec, out, dec);
            continue;
        }
        float acc[E];
        int   bad = 0;
#pragma unroll
        for (int e = 0; e < E; e++) {
            acc[e] = 0.0f;
        }
        for (int r0 = 0; r0 < nr; r0 += SQZ_CU_WIDE_BATCH) {
            uint32_t           w[SQZ_CU_WIDE_BATCH][Dec::NW];
            typename Dec::Meta mt[SQZ_CU_WIDE_BATCH];
#pragma unroll
            for (int j = 0; j < SQZ_CU_WIDE_BATCH; j++) {
                if (r0 + j < nr) {
                    const uint8_t *p = payloads + (size_t)(r0 + j) * pbytes;
                    bad |= sqz_cu_header_bad(p);
                    dec.load(p, gi, k, mt[j], w[j]);
                }
            }
#pragma unroll
            for (int j = 0; j < SQZ_CU_WIDE_BATCH; j++) {
                if (r0 + j < nr) {
#pragma unroll
                    for (int e = 0; e < E; e++) {
                        acc[e] = __fadd_rn(acc[e], dec.value(mt[j], w[j], e));
                    }
                }
            }
        }
#pragma unroll
        for (int e = 0; e < E; e++) {
            acc[e] = scale != 1.0f ? __fmul_rn(acc[e], scale) : acc[e];
            acc[e] = bad ? __int_as_float(0x7fc00000) : acc[e];
        }
        /* The warp's groups gi - lane .. + 31 are consecutive and all full when the last is:
         * every lane is here. */
        const size_t w0 = gi - (threadIdx.x & 31);
        if (WST && vec && (w0 + 32) * E <= n) {
            sqz_cu_store_warp<T, E>(acc, sm + (threadIdx.x >> 5) * SQZ_CU_STORE_WARP_FLOATS(E),
                                    w0 * E, out);
            continue;
        }
#pragma unroll
        for (int c = 0; c < E; c += 8) {
            sqz_cu_store8(out, i0 + c, 8, vec != 0, acc + c, 0xffu);
        }
    }
}

/** Launches sqz_cu_decode_wide_kernel (8 ranks compiled as a constant; float output through
 *  the warp's stores: measured on an H100 to pay for float output only). */
template <typename T, typename Dec>
static void sqz_cu_decode_wide(const uint8_t *payloads, int nranks, size_t pbytes, size_t n,
                               size_t B, float scale, T *out, const Dec &dec, cudaStream_t st)
{
    constexpr bool WS   = sizeof(T) == sizeof(float);
    const unsigned grid = sqz_cu_grid(sqz_cu_div_up(n, (size_t)Dec::E), 256);
    const int      vec  = sqz_cu_aligned(out, 16);
    if (nranks == 8) {
        sqz_cu_decode_wide_kernel<T, Dec, 8, WS><<<grid, 256, 0, st>>>(payloads, nranks, pbytes,
                                                                        n, B, scale, vec, out, dec);
    } else {
        sqz_cu_decode_wide_kernel<T, Dec, 0, WS><<<grid, 256, 0, st>>>(payloads, nranks, pbytes,
                                                                        n, B, scale, vec, out, dec);
    }
}

/** Block-wide: writes the header {magic, 0, 0, 0} and zeroes the padding bytes [body, total)
 *  of a payload.  The flags word is then only ever OR-ed by later kernels. */
__device__ __forceinline__ void sqz_cu_header_init(uint8_t *payload, size_t body, size_t total)
{
    if (threadIdx.x == 0) {
        *reinterpret_cast<uint4 *>(payload) = make_uint4(SQZ_GPU_MAGIC, 0u, 0u, 0u);
    }
    for (size_t q = body + threadIdx.x; q < total; q += blockDim.x) {
        payload[q] = 0;
    }
}

/** Sets the non-finite flag of a payload header (from any thread of a later kernel). */
__device__ __forceinline__ void sqz_cu_flag_nonfinite(uint8_t *payload)
{
    atomicOr(reinterpret_cast<unsigned int *>(payload) + 1, SQZ_GPU_FLAG_NONFINITE);
}

/* ---------------------------------------------------------------------------------------------
 * Per-bucket statistics over segments (quant's min/max, sign's scale: sqz_cu_segments()).
 *
 * A policy P describes the statistics: P::stats_t (a struct of 32-bit words), P::op_t
 * (the commutative combine, as sqz_cu_group_reduce wants), and the members identity(),
 * add(stats *, a) and finish(payload, bucket, stats), which writes a bucket's result into the
 * payload.  One warp per segment sums a = in + residual; with one segment per bucket it finishes
 * the bucket, else it leaves a partial that sqz_cu_seg_combine_kernel adds in segment order.
 * ------------------------------------------------------------------------------------------- */

/** a = in[i] (+ res[i]) in fp32, rounded as the CPU plugins round. */
template <typename T>
__device__ __forceinline__ float sqz_cu_load_a(const T *in, const float *res, size_t i)
{
    const float x = sqz_cu_to_f32(in[i]);
    return res != NULL ? __fadd_rn(x, res[i]) : x;
}

template <typename T, typename P>
__global__ void __launch_bounds__(256)
    sqz_cu_seg_stats_kernel(const T *__restrict__ in, const float *__restrict__ res, size_t n,
                            size_t B, size_t nb, size_t seg_len, size_t spb, P pol,
                            typename P::stats_t *__restrict__ part, uint8_t *__restrict__ payload)
{
    typedef typename P::stats_t S;
    const int    lane  = threadIdx.x & 31;
    const size_t nseg  = nb * spb;
    const size_t wstep = (size_t)gridDim.x * (blockDim.x / 32);
    for (size_t sg = (size_t)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5); sg < nseg;
         sg += wstep) {
        const size_t k   = sg / spb;
        const size_t s   = k * B;
        const size_t m   = n - s < B ? n - s : B;
        const size_t off = (sg - k * spb) * seg_len; /* may be >= m: an empty segment */
        const size_t lo  = s + off;
        const size_t hi  = s + (off + seg_len < m ? off + seg_len : m);
        S            st  = pol.identity();
        size_t       i   = lo + lane;
        /* Four independent loads in flight per lane. */
        for (; i + 96 < hi; i += 128) {
            const float a0 = sqz_cu_load_a(in, res, i);
            const float a1 = sqz_cu_load_a(in, res, i + 32);
            const float a2 = sqz_cu_load_a(in, res, i + 64);
            const float a3 = sqz_cu_load_a(in, res, i + 96);
            pol.add(&st, a0);
            pol.add(&st, a1);
            pol.add(&st, a2);
            pol.add(&st, a3);
        }
        for (; i < hi; i += 32) {
            pol.add(&st, sqz_cu_load_a(in, res, i));
        }
        st = sqz_cu_group_reduce(st, 5, (S *)NULL, typename P::op_t());
        if (lane == 0) {
            if (spb == 1) {
                pol.finish(payload, k, st);
            } else {
                part[sg] = st;
            }
        }
    }
}

/** A block per bucket: combines its spb partials (in a fixed order) and finishes the bucket. */
template <typename P>
__global__ void __launch_bounds__(256)
    sqz_cu_seg_combine_kernel(const typename P::stats_t *__restrict__ part, size_t nb, size_t spb,
                              P pol, uint8_t *__restrict__ payload)
{
    typedef typename P::stats_t S;
    __shared__ S red[8];
    for (size_t k = blockIdx.x; k < nb; k += gridDim.x) {
        S st = pol.identity();
        for (size_t q = threadIdx.x; q < spb; q += 256) {
            st = typename P::op_t()(st, part[k * spb + q]);
        }
        st = sqz_cu_group_reduce(st, 8, red, typename P::op_t());
        if (threadIdx.x == 0) {
            pol.finish(payload, k, st);
        }
    }
}

/** Launches the per-bucket statistics of n elements in nb buckets of B on st; part holds
 *  sqz_cu_segments(B, nb).nseg partials. */
template <typename T, typename P>
static inline sqz_status_t sqz_cu_launch_seg_stats(const T *in, const float *res, size_t n,
                                                   size_t B, size_t nb, P pol,
                                                   typename P::stats_t *part, uint8_t *payload,
                                                   cudaStream_t st)
{
    const sqz_cu_segs_t sg = sqz_cu_segments(B, nb);
    sqz_cu_seg_stats_kernel<T, P><<<sqz_cu_grid(sg.nseg, 8), 256, 0, st>>>(
        in, res, n, B, nb, sg.seg_len, sg.spb, pol, part, payload);
    SQZ_CU_CHECK_LAUNCH();
    if (sg.spb > 1) {
        sqz_cu_seg_combine_kernel<P><<<sqz_cu_grid(nb, 1), 256, 0, st>>>(part, nb, sg.spb, pol,
                                                                         payload);
        SQZ_CU_CHECK_LAUNCH();
    }
    return SQZ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Shapes shared by the methods' kernels.
 * ------------------------------------------------------------------------------------------- */
/** The whole block writes a decoded tile of len elements from shared memory: out[t0 + e] =
 *  scale * acc[e] as T (acc as it is when bad: NaN); vec: out is 16-byte aligned (t0 a
 *  multiple of 8); acc 16-byte aligned. */
template <typename T>
__device__ __forceinline__ void sqz_cu_store_tile(const float *acc, uint32_t len, size_t t0,
                                                  float scale, int bad, int vec, T *out)
{
    /* 16 bytes of output per thread and step (4 floats, or 8 halves), consecutive threads on
     * consecutive 16 bytes: every warp store is one contiguous 512-byte run.  (Eight floats per
     * thread wrote each sector half by half, twice the L2 traffic: 0.26 of copy for top-k's fp32
     * decode against 0.31 in bf16.) */
    constexpr uint32_t V = 16 / sizeof(T);
    for (uint32_t e = threadIdx.x * V; e < len; e += blockDim.x * V) {
        const int m = (int)(len - e < V ? len - e : V);
        float v[8];
        if (m == (int)V) {
            const float4 a0 = *reinterpret_cast<const float4 *>(acc + e);
            v[0] = a0.x, v[1] = a0.y, v[2] = a0.z, v[3] = a0.w;
            if (V == 8) {
                const float4 a1 = *reinterpret_cast<const float4 *>(acc + e + 4);
                v[4] = a1.x, v[5] = a1.y, v[6] = a1.z, v[7] = a1.w;
            }
        } else {
#pragma unroll
            for (int q = 0; q < (int)V; q++) {
                v[q] = acc[q < m ? e + q : e];
            }
        }
#pragma unroll
        for (int q = 0; q < (int)V; q++) {
            v[q] = scale != 1.0f && !bad ? __fmul_rn(v[q], scale) : v[q];
        }
        if (V == 4 && vec && m == 4) {
            float *o = reinterpret_cast<float *>(out + t0 + e);
            *reinterpret_cast<float4 *>(o) = make_float4(v[0], v[1], v[2], v[3]);
        } else if (V == 8) {
            sqz_cu_store8(out, t0 + e, m, vec != 0, v, 0xffu);
        } else {
            for (int q = 0; q < m; q++) {
                out[t0 + e + q] = sqz_cu_from_f32<T>(v[q]);
            }
        }
    }
}

/** The body of a restore kernel, a thread per chunk of 8: when *bad, residual = residual +
 *  decoded(own) - in wherever in + residual is finite.  dec(ch, len, d) writes the own payload's
 *  decoded values of chunk ch (elements ch * 8 .. + len) into d. */
template <typename T, typename Dec>
__device__ __forceinline__ void sqz_cu_restore_chunks(const uint32_t *bad, const T *in,
                                                      float *res, size_t n, int vec, Dec dec)
{
    if (*bad == 0) {
        return;
    }
    const size_t nch = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * blockDim.x + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * blockDim.x) {
        const size_t i0 = ch * 8;
        const int len = (int)(n - i0 < 8 ? n - i0 : 8);
        float x[8], r[8], d[8];
        sqz_cu_load8(in, i0, len, vec != 0, x);
        sqz_cu_load8(res, i0, len, vec != 0, r);
        dec(ch, len, d);
        uint32_t mask = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            if (e < len && sqz_cu_finite(__fadd_rn(x[e], r[e]))) {
                r[e] = __fsub_rn(__fadd_rn(r[e], d[e]), x[e]);
                mask |= 1u << e;
            }
        }
        sqz_cu_store8(res, i0, len, vec != 0, r, mask);
    }
}

#endif /* SQZ_CUDA_COMMON_CUH */
