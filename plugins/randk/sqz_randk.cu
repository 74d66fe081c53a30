/*
 * GPU kernels of "randk" (random-k sparsification with positions shared by every rank), the
 * device side of plugins/randk/sqz_randk.c with RANDK_SCALE=none.  The positions are drawn
 * otherwise than on the CPU (whose Floyd sampling is sequential): STRATIFIED, one per stratum.
 * k = max(1, ceil(density * n)) (at most n) strata [lo_j, lo_{j+1}), lo_j = floor(j n / k), each
 * of 1 or more elements, and
 *     pos_j = lo_j + floor(hash32(key, j) * len_j / 2^32),    len_j = lo_{j+1} - lo_j,
 * so every element is kept with probability 1 / len_j (n/k rounded down or up), positions are
 * ascending and computed in parallel, and an element's stratum is j = floor(((i + 1) k - 1) / n)
 * (the largest j with lo_j <= i), so a thread per element knows whether it is kept.
 *
 * The key is the caller's: the engine passes one that does not depend on the rank (the codec
 * row's shared_key), so every rank keeps the same positions of a buffer or chunk in a call; the
 * sum of the payloads is then supported on those positions, and the scatter-reduce exchange's
 * second phase (the same key for the chunk) re-selects exactly them: lossless, as on the CPU.
 *
 * Payload: header {magic, flags, k, key}, then k f32 values in stratum order (the kept a, as
 * they are); 16 + 4 k bytes rounded up to 16.  With error feedback the residual becomes 0 at the
 * kept positions and a elsewhere (decode + residual == a bit for bit).  Non-finite elements:
 * flagged, value 0, residual untouched.
 *
 * compress: ONE launch, a thread per chunk of 8 elements (reads in and residual once, writes the
 * residual once and each kept value once).  decode_sum: ONE launch, a block per output tile:
 * the strata that meet the tile are known without a search; for each rank in order the block
 * adds that rank's values at its positions (its own key, from its header) in shared memory, then
 * writes the tile once.  restore: a thread per chunk of 8 (residual + decoded - in).
 */
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

#define RANDK_DEC_TILE 4096

typedef struct randk_layout {
    size_t n, k, total;
} randk_layout_t;

/* \return 0 for a density outside (0, 1], RANDK_SCALE other than none, n >= 2^32, or n k past
 *  2^64 (the strata's arithmetic). */
static int randk_layout(const sqz_gpu_params_t *p, size_t n, randk_layout_t *L)
{
    if (!(p->density > 0.0 && p->density <= 1.0) || p->randk_unbiased || n > 0xffffffffull) {
        return 0;
    }
    L->n = n;
    L->k = sqz_cu_topk_k(p->density, n);
    L->total = sqz_cu_round16(16 + 4 * L->k);
    /* The strata's bounds are j n / k and ((i + 1) k - 1) / n in 64 bits: n k must fit. */
    return n == 0 || L->k <= UINT64_MAX / n;
}

/* ---------------------------------------------------------------------------------------------
 * The pattern (host and device: tests recompute it).
 * ------------------------------------------------------------------------------------------- */
__host__ __device__ __forceinline__ uint64_t randk_lo(uint64_t j, uint64_t n, uint64_t k)
{
    return j * n / k;
}

__host__ __device__ __forceinline__ uint64_t randk_stratum(uint64_t i, uint64_t n, uint64_t k)
{
    return ((i + 1) * k - 1) / n;
}

__device__ __forceinline__ uint64_t randk_pos(uint32_t key, uint64_t j, uint64_t n, uint64_t k)
{
    const uint64_t lo = randk_lo(j, n, k), len = randk_lo(j + 1, n, k) - lo;
    return lo + (((uint64_t)sqz_cu_hash32(key, (uint32_t)j) * len) >> 32);
}

/* ---------------------------------------------------------------------------------------------
 * Kernels.
 * ------------------------------------------------------------------------------------------- */
template <typename T>
__global__ void __launch_bounds__(256)
    randk_compress_kernel(const T *__restrict__ in, float *__restrict__ res, randk_layout_t L,
                          uint32_t key, int vec, uint8_t *__restrict__ payload)
{
    float *val = reinterpret_cast<float *>(payload + 16);
    const size_t nch = (L.n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int len = (int)(L.n - i0 < 8 ? L.n - i0 : 8);
        float a[8];
        sqz_cu_load_a8(in, res, i0, len, vec != 0, a);
        uint32_t write = 0, bad = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            if (e >= len) {
                continue;
            }
            const uint64_t i = i0 + (size_t)e, j = randk_stratum(i, L.n, L.k);
            const bool fin = sqz_cu_finite(a[e]);
            bad |= (uint32_t)!fin;
            if (randk_pos(key, j, L.n, L.k) == i) {
                val[j] = fin ? a[e] : 0.0f;
                a[e] = 0.0f; /* (sent whole: nothing left) */
            }
            write |= (uint32_t)fin << e;
        }
        if (res != NULL) {
            sqz_cu_store8(res, i0, len, vec != 0, a, write);
        }
        if (bad) {
            sqz_cu_flag_nonfinite(payload);
        }
    }
}

/* Writes the header {magic, 0, k, key} and zeroes the padding past the values. */
__global__ void __launch_bounds__(32) randk_header_kernel(uint8_t *payload, randk_layout_t L,
                                                          uint32_t key)
{
    sqz_cu_header_init(payload, 16 + 4 * L.k, L.total);
    __syncwarp();
    if (threadIdx.x == 0) {
        reinterpret_cast<uint32_t *>(payload)[2] = (uint32_t)L.k;
        reinterpret_cast<uint32_t *>(payload)[3] = key;
    }
}

/* out = scale * (sum over ranks, in order, of each rank's values at its positions), NaN
 * everywhere when some header is bad (every block reads every header, so all agree). */
template <typename T>
__global__ void __launch_bounds__(256)
    randk_decode_kernel(const uint8_t *__restrict__ payloads, int nranks, randk_layout_t L,
                        float scale, int vec, T *out)
{
    __shared__ __align__(16) float acc[RANDK_DEC_TILE];
    const int bad = sqz_cu_block_any_bad(payloads, nranks, L.total);
    const size_t ntiles = (L.n + RANDK_DEC_TILE - 1) / RANDK_DEC_TILE;
    for (size_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const size_t t0 = t * RANDK_DEC_TILE;
        const uint32_t len = (uint32_t)(L.n - t0 < RANDK_DEC_TILE ? L.n - t0 : RANDK_DEC_TILE);
        for (uint32_t e = threadIdx.x; e < len; e += 256) {
            acc[e] = bad ? __int_as_float(0x7fc00000) : 0.0f;
        }
        /* The strata that meet [t0, t0 + len): from the first element's to the last's. */
        const uint64_t j0 = randk_stratum(t0, L.n, L.k);
        const uint64_t j1 = randk_stratum(t0 + len - 1, L.n, L.k);
        for (int r = 0; !bad && r < nranks; r++) {
            __syncthreads(); /* (the zeroing, or the previous rank's adds) */
            const uint8_t *p = payloads + (size_t)r * L.total;
            const uint32_t key = reinterpret_cast<const uint32_t *>(p)[3];
            const float *val = reinterpret_cast<const float *>(p + 16);
            for (uint64_t j = j0 + threadIdx.x; j <= j1; j += 256) {
                const uint64_t off = randk_pos(key, j, L.n, L.k) - t0;
                if (off < len) { /* (positions are distinct within a payload) */
                    acc[off] = __fadd_rn(acc[off], val[j]);
                }
            }
        }
        __syncthreads();
        sqz_cu_store_tile(acc, len, t0, scale, bad, vec, out);
        __syncthreads(); /* (the next tile zeroes acc) */
    }
}

/* The own payload's decoded chunk: its value where the chunk holds its stratum's position. */
struct randk_chunk_decoder {
    const uint8_t *own;
    randk_layout_t L;
    __device__ __forceinline__ void operator()(size_t ch, int len, float d[8]) const
    {
        const uint32_t key = reinterpret_cast<const uint32_t *>(own)[3];
        const float *val = reinterpret_cast<const float *>(own + 16);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const uint64_t i = ch * 8 + (size_t)e, j = randk_stratum(i, L.n, L.k);
            d[e] = e < len && randk_pos(key, j, L.n, L.k) == i ? val[j] : 0.0f;
        }
    }
};

/* When *bad: residual = residual + decoded(own) - in wherever in + residual is finite. */
template <typename T>
__global__ void __launch_bounds__(256)
    randk_restore_kernel(const uint8_t *__restrict__ own, const uint32_t *__restrict__ bad,
                         const T *__restrict__ in, float *__restrict__ res, randk_layout_t L,
                         int vec)
{
    sqz_cu_restore_chunks(bad, in, res, L.n, vec, randk_chunk_decoder{own, L});
}

/* ---------------------------------------------------------------------------------------------
 * Host side.
 * ------------------------------------------------------------------------------------------- */
static size_t randk_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    randk_layout_t L;
    return n > 0 && randk_layout(p, n, &L) ? L.total : 0;
}

static size_t randk_workspace_bytes(const sqz_gpu_params_t *p, size_t n, sqz_dtype_t dtype)
{
    (void)p, (void)n, (void)dtype;
    return SQZ_CU_WS_CTRL_BYTES;
}

static sqz_status_t randk_compress(const sqz_gpu_params_t *p, const void *in, sqz_dtype_t dtype,
                                   float *residual, size_t n, uint32_t key, void *payload,
                                   void *workspace, void *stream)
{
    randk_layout_t L;
    (void)workspace;
    if (!randk_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    uint8_t *pl = (uint8_t *)payload;
    randk_header_kernel<<<1, 32, 0, st>>>(pl, L, key);
    SQZ_CU_CHECK_LAUNCH();
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        const SQZ_CU_ELEM(t) *x = (const SQZ_CU_ELEM(t) *)in;
        const int vec = sqz_cu_aligned(x, 16) && (residual == NULL || sqz_cu_aligned(residual, 16));
        randk_compress_kernel<<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
            x, residual, L, key, vec, pl);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

static sqz_status_t randk_decode_sum(const sqz_gpu_params_t *p, const void *payloads, int nranks,
                                     size_t n, float scale, void *out, sqz_dtype_t dtype,
                                     void *workspace, void *stream)
{
    randk_layout_t L;
    (void)workspace;
    if (!randk_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        SQZ_CU_ELEM(t) *o = (SQZ_CU_ELEM(t) *)out;
        randk_decode_kernel<<<sqz_cu_grid(sqz_cu_div_up(n, RANDK_DEC_TILE), 1), 256, 0, st>>>(
            (const uint8_t *)payloads, nranks, L, scale, sqz_cu_aligned(o, 16), o);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

static sqz_status_t randk_restore(const sqz_gpu_params_t *p, const void *own, const uint32_t *bad,
                                  const void *in, sqz_dtype_t dtype, float *residual, size_t n,
                                  void *stream)
{
    randk_layout_t L;
    if (!randk_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        const SQZ_CU_ELEM(t) *x = (const SQZ_CU_ELEM(t) *)in;
        const int vec = sqz_cu_aligned(x, 16) && sqz_cu_aligned(residual, 16);
        randk_restore_kernel<<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
            (const uint8_t *)own, bad, x, residual, L, vec);
        SQZ_CU_CHECK_LAUNCH();
        return SQZ_OK;
    });
}

extern "C" const sqz_cu_method_t sqz_cu_randk_method = {
    "randk", randk_payload_bytes, randk_workspace_bytes, randk_compress, randk_decode_sum,
    randk_restore, 1, /* shared_key */
};
