/*
 * GPU kernels of "topk" (DGC's sampled threshold with fused error feedback), the device side of
 * plugins/topk/sqz_topk.c.  Deterministic for a given (in, residual, key), one pass over the big
 * arrays.  k = max(1, ceil(density * n)), at most n.
 *
 * Compress, four launches:
 *  1. topk_select_kernel (one block): writes the payload header, reads |a| at m = min(n, 8192)
 *     positions offset + j * (n / m) (offset = hash(key) mod n / m), and radix-selects (4 passes
 *     of 8 bits over the float bits of |a|, histograms in shared memory) the ceil(density * m)-th
 *     largest: the threshold, kept in the workspace (never copied to the host).  Non-finite
 *     samples count as 0.
 *  2. topk_main_kernel (one block per tile of SQZ_CU_TOPK_TILE elements): a = in + residual once;
 *     candidates are the finite a != 0 with |a| >= threshold; the block compacts them in index
 *     order (warp scans plus a block scan of the warp totals) into its staging slot of capacity
 *     C = sqz_cu_topk_stage_cap(density).  Staged candidates get residual 0, all other finite
 *     elements residual a (candidates past C included: they are not sent), non-finite ones keep
 *     their residual and flag the header.  Writes the block's staged count.
 *  3. topk_scan_kernel (one block): exclusive scan of the per-tile counts; the header count is
 *     min(total, k).
 *  4. topk_gather_kernel (one block per tile): copies staged entries to the payload in tile
 *     order; the ones at positions >= k are not sent and get their residual back (= a).
 * Bytes touched per element: read in (4 or 2), read residual 4, write residual 4; plus about
 * 2 * 8 bytes per staged candidate (staging write, then read) and 8 per sent entry.
 *
 * decode_sum: ONE launch, a block per run of consecutive output tiles of TOPK_DEC_TILE elements:
 * every block reads every header (any bad: the tile is NaN), then per group of 8 ranks each warp
 * finds its rank's entries inside the tile (the run's first tile: a 32-way search of the sorted
 * indices, about 4 dependent loads for a million entries; a later tile starts at the previous
 * one's end and finds its own with one coalesced probe when it holds at most 32 entries; the
 * block-per-tile version searched twice a tile and ran at 0.22 of copy with 8 payloads), and the
 * block adds them into a shared-memory accumulator rank after rank
 * (indices are unique within a payload, so no two threads of one rank's pass touch one element;
 * a barrier between ranks keeps the rank order), then writes scale * acc as dtype once.  Sums are
 * 0 + v_0 + v_1 ... in rank order, as the CPU decoder accumulates.  The output is written once
 * and each entry read once: no memset, no accumulator in the workspace, no pass per rank.
 * restore: the flag launch, residual -= in over the finite in + residual, then the own entries
 * added back (residual + decoded - in with one rounding per element).
 */
#include <stddef.h>
#include <stdint.h>

#include "sqz_cuda_common.cuh"
#include "sqz_cuda_methods.h"

#define TOPK_THREADS 256
#define TOPK_TILE SQZ_CU_TOPK_TILE
/* Chunks of 8 per thread per tile: TOPK_TILE = TOPK_THREADS * 8 * TOPK_ROUNDS. */
#define TOPK_ROUNDS (TOPK_TILE / (TOPK_THREADS * 8))
#define TOPK_SAMPLES 8192
#define TOPK_SEL_THREADS 1024
#define TOPK_SEL_PER (TOPK_SAMPLES / TOPK_SEL_THREADS)
#ifndef TOPK_DEC_TILE
#define TOPK_DEC_TILE 4096 /* output elements per decode tile (16 KiB of fp32 in shared memory) */
#endif
#define TOPK_DEC_BLOCKS 2048      /* decode blocks wanted: enough to fill the device */
#define TOPK_DEC_CURSORS_MAX 4096 /* ranks whose cursors fit in shared memory (16 KiB) */

#if TOPK_TILE != TOPK_THREADS * 8 * TOPK_ROUNDS
#error "SQZ_CU_TOPK_TILE must be a multiple of TOPK_THREADS * 8"
#endif

/* ceil(x) for 0 <= x < 2^63 (sqz_pu_ceil_size()). */
static size_t topk_ceil(double x)
{
    const size_t t = (size_t)x;
    return ((double)t < x) ? t + 1 : t;
}

extern "C" size_t sqz_cu_topk_k(double density, size_t n)
{
    if (n == 0) {
        return 0;
    }
    const size_t k = topk_ceil(density * (double)n);
    return k < 1 ? 1 : (k < n ? k : n);
}

extern "C" size_t sqz_cu_topk_stage_cap(double density)
{
    size_t c = 4 * topk_ceil(density * (double)TOPK_TILE);
    c = c > 64 ? c : 64;
    return c < TOPK_TILE ? c : TOPK_TILE;
}

typedef struct topk_layout {
    size_t k;
    size_t body;   /* header + k indices + k values */
    size_t total;  /* body rounded up to 16 */
    size_t nblk;   /* tiles */
    size_t cap;    /* staging entries per tile */
    size_t o_cnt;  /* workspace offsets: per-tile counts */
    size_t o_off;  /*   per-tile output offsets */
    size_t o_sidx; /*   staged indices (nblk * cap) */
    size_t o_sval; /*   staged values (nblk * cap) */
    size_t ws;     /* workspace bytes (without the accumulator) */
} topk_layout_t;

/* \return 0 for density outside (0, 1] or n >= 2^32 (indices are u32). */
static int topk_layout(const sqz_gpu_params_t *p, size_t n, topk_layout_t *L)
{
    if (!(p->density > 0.0 && p->density <= 1.0) || n > 0xffffffffull) {
        return 0;
    }
    L->k = sqz_cu_topk_k(p->density, n);
    L->body = 16 + 8 * L->k;
    L->total = sqz_cu_round16(L->body);
    L->nblk = sqz_cu_div_up(n, TOPK_TILE);
    L->cap = sqz_cu_topk_stage_cap(p->density);
    L->o_cnt = SQZ_CU_WS_CTRL_BYTES;
    L->o_off = L->o_cnt + sqz_cu_round256(L->nblk * 4);
    L->o_sidx = L->o_off + sqz_cu_round256(L->nblk * 4);
    L->o_sval = L->o_sidx + sqz_cu_round256(L->nblk * L->cap * 4);
    L->ws = L->o_sval + sqz_cu_round256(L->nblk * L->cap * 4);
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * 1. Sample and threshold.
 * ------------------------------------------------------------------------------------------- */
template <typename T>
__global__ void __launch_bounds__(TOPK_SEL_THREADS)
    topk_select_kernel(const T *__restrict__ in, const float *__restrict__ res, size_t n,
                       size_t m, uint32_t kk, uint32_t key, sqz_cu_ctrl_t *__restrict__ ctrl,
                       uint8_t *__restrict__ payload, size_t body, size_t total)
{
    __shared__ uint32_t hist[256];
    __shared__ uint32_t s_digit, s_want;
    sqz_cu_header_init(payload, body, total);

    const size_t stride = n / m;
    const size_t offset = (size_t)sqz_cu_hash32(key, 0x243f6a88u) % stride;
    uint32_t keys[TOPK_SEL_PER];
    uint32_t valid = 0;
#pragma unroll
    for (int q = 0; q < TOPK_SEL_PER; q++) {
        const size_t j = threadIdx.x + (size_t)q * TOPK_SEL_THREADS;
        keys[q] = 0;
        if (j < m) {
            const size_t i = offset + j * stride; /* <= m * stride - 1 <= n - 1 */
            float a = sqz_cu_to_f32(in[i]);
            if (res != NULL) {
                a = __fadd_rn(a, res[i]);
            }
            keys[q] = sqz_cu_finite(a) ? sqz_cu_abs_key(a) : 0u;
            valid |= 1u << q;
        }
    }

    /* Radix select of the kk-th largest key, most significant byte first.  Invariant: `want`
     * (1-based rank from the top) is at most the number of keys matching `prefix` above. */
    uint32_t prefix = 0, want = kk;
    for (int pass = 0; pass < 4; pass++) {
        const int shift = 24 - 8 * pass;
        const uint32_t hmask = pass == 0 ? 0u : 0xffffffffu << (shift + 8);
        if (threadIdx.x < 256) {
            hist[threadIdx.x] = 0;
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < TOPK_SEL_PER; q++) {
            if (((valid >> q) & 1u) && (keys[q] & hmask) == prefix) {
                atomicAdd(&hist[(keys[q] >> shift) & 255u], 1u);
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            /* Lane l owns bins 255 - 8l down to 248 - 8l: lanes in descending key order. */
            const int lane = threadIdx.x;
            uint32_t sum = 0;
            for (int b = 0; b < 8; b++) {
                sum += hist[255 - 8 * lane - b];
            }
            const uint32_t incl = sqz_cu_warp_incl_scan(sum);
            const unsigned hit = __ballot_sync(0xffffffffu, incl >= want);
            if (lane == __ffs(hit) - 1) {
                uint32_t c = incl - sum;
                for (int b = 0; b < 8; b++) {
                    const uint32_t h = hist[255 - 8 * lane - b];
                    if (c + h >= want) {
                        s_digit = (uint32_t)(255 - 8 * lane - b);
                        s_want = want - c;
                        break;
                    }
                    c += h;
                }
            }
        }
        __syncthreads();
        prefix |= s_digit << shift;
        want = s_want;
        /* The next writes of hist and s_digit follow the next pass's first barrier. */
    }
    if (threadIdx.x == 0) {
        ctrl->thr = prefix;
    }
}

/* ---------------------------------------------------------------------------------------------
 * 2. Candidates of one tile, staged in index order.
 * ------------------------------------------------------------------------------------------- */
template <typename T>
__global__ void __launch_bounds__(TOPK_THREADS)
    topk_main_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n, size_t cap,
                     int vec, const sqz_cu_ctrl_t *__restrict__ ctrl, uint32_t *__restrict__ counts,
                     uint32_t *__restrict__ sidx, float *__restrict__ sval,
                     uint8_t *__restrict__ payload)
{
    __shared__ uint32_t wsum[TOPK_ROUNDS][TOPK_THREADS / 32];
    const uint32_t thr = ctrl->thr;
    const size_t tile = blockIdx.x;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    uint32_t *bidx = sidx + tile * cap;
    float *bval = sval + tile * cap;
    uint32_t base = 0; /* candidates of the earlier rounds */
    int bad = 0;
#pragma unroll
    for (int j = 0; j < TOPK_ROUNDS; j++) {
        /* Round j: the block covers 2048 consecutive elements, thread t the chunk t. */
        const size_t i0 = tile * TOPK_TILE + (size_t)j * (TOPK_THREADS * 8) + threadIdx.x * 8;
        const int len = i0 < n ? (int)(n - i0 < 8 ? n - i0 : 8) : 0;
        float a[8];
        uint32_t cand = 0, fin = 0;
        if (len > 0) {
            sqz_cu_load_a8(in, res, i0, len, vec != 0, a);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                if (e < len) {
                    if (sqz_cu_finite(a[e])) {
                        fin |= 1u << e;
                        cand |= (uint32_t)(a[e] != 0.0f && sqz_cu_abs_key(a[e]) >= thr) << e;
                    } else {
                        bad = 1;
                    }
                }
            }
        }
        const uint32_t cnt = __popc(cand);
        const uint32_t incl = sqz_cu_warp_incl_scan(cnt);
        if (lane == 31) {
            wsum[j][warp] = incl;
        }
        __syncthreads();
        uint32_t woff = 0, rtot = 0;
#pragma unroll
        for (int q = 0; q < TOPK_THREADS / 32; q++) {
            const uint32_t w = wsum[j][q];
            woff += q < warp ? w : 0u;
            rtot += w;
        }
        uint32_t pos = base + woff + incl - cnt;
        base += rtot;
        if (cand != 0) {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                if ((cand >> e) & 1u) {
                    if (pos < cap) {
                        bidx[pos] = (uint32_t)(i0 + e);
                        bval[pos] = a[e];
                        a[e] = 0.0f; /* sent (unless cut at k: topk_gather_kernel) */
                    }
                    pos++;
                }
            }
        }
        if (res != NULL && len > 0) {
            sqz_cu_store8(res, i0, len, vec != 0, a, fin);
        }
    }
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) {
        counts[tile] = base < cap ? base : (uint32_t)cap;
        if (bad) {
            sqz_cu_flag_nonfinite(payload);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * 3. Exclusive scan of the per-tile counts (one block; thread t owns a contiguous range).
 * ------------------------------------------------------------------------------------------- */
__global__ void __launch_bounds__(1024)
    topk_scan_kernel(const uint32_t *__restrict__ counts, uint32_t *__restrict__ offsets,
                     size_t nblk, size_t k, sqz_cu_ctrl_t *__restrict__ ctrl,
                     uint8_t *__restrict__ payload)
{
    __shared__ uint32_t wsum[32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const size_t per = (nblk + 1023) / 1024;
    const size_t lo = threadIdx.x * per < nblk ? threadIdx.x * per : nblk;
    const size_t hi = lo + per < nblk ? lo + per : nblk;
    uint32_t sum = 0;
    for (size_t i = lo; i < hi; i++) {
        sum += counts[i];
    }
    const uint32_t incl = sqz_cu_warp_incl_scan(sum);
    if (lane == 31) {
        wsum[warp] = incl;
    }
    __syncthreads();
    if (warp == 0) {
        const uint32_t v = wsum[lane];
        const uint32_t vi = sqz_cu_warp_incl_scan(v);
        wsum[lane] = vi - v;
    }
    __syncthreads();
    uint32_t off = wsum[warp] + incl - sum;
    for (size_t i = lo; i < hi; i++) {
        offsets[i] = off;
        off += counts[i];
    }
    if (threadIdx.x == 1023) {
        /* The last thread's running offset is the total (its range may be empty). */
        ctrl->total = off;
        reinterpret_cast<uint32_t *>(payload)[2] = off < k ? off : (uint32_t)k;
    }
}

/* ---------------------------------------------------------------------------------------------
 * 4. Staged entries to the payload, in tile order; those past k go back to the residual.
 * ------------------------------------------------------------------------------------------- */
__global__ void __launch_bounds__(TOPK_THREADS)
    topk_gather_kernel(const uint32_t *__restrict__ counts, const uint32_t *__restrict__ offsets,
                       const uint32_t *__restrict__ sidx, const float *__restrict__ sval,
                       size_t cap, size_t k, float *__restrict__ res,
                       uint8_t *__restrict__ payload)
{
    const size_t tile = blockIdx.x;
    const uint32_t cnt = counts[tile];
    if (cnt == 0) {
        return;
    }
    const size_t off = offsets[tile];
    uint32_t *pidx = reinterpret_cast<uint32_t *>(payload + 16);
    float *pval = reinterpret_cast<float *>(payload + 16 + 4 * k);
    for (uint32_t j = threadIdx.x; j < cnt; j += TOPK_THREADS) {
        const size_t p = off + j;
        const uint32_t ix = sidx[tile * cap + j];
        const float v = sval[tile * cap + j];
        if (p < k) {
            pidx[p] = ix;
            pval[p] = v;
        } else if (res != NULL) {
            res[ix] = v;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Decoding and restore.
 * ------------------------------------------------------------------------------------------- */

/* The first of the c sorted indices idx[0, c) that is >= bound (c when none), found by a whole
 * warp: 32 probes per step cut the range 32-fold.  Unsorted (corrupt) indices give some position
 * in [0, c], never an access outside it. */
__device__ __forceinline__ size_t topk_warp_lower_bound(const uint32_t *idx, size_t c,
                                                       uint32_t bound)
{
    const size_t lane = threadIdx.x & 31;
    size_t lo = 0, hi = c; /* the answer lies in [lo, hi]; everything before lo is below */
    while (hi - lo > 32) {
        const size_t step = (hi - lo + 31) / 32;
        const size_t q = lo + lane * step;
        const int nb = __popc(__ballot_sync(0xffffffffu, q < hi && idx[q] < bound));
        if (nb == 0) {
            return lo;
        }
        const size_t top = lo + (size_t)nb * step; /* the first probe not below, or past hi */
        lo += (size_t)(nb - 1) * step + 1;
        hi = top < hi ? top : hi;
    }
    const size_t q = lo + lane;
    return lo + (size_t)__popc(__ballot_sync(0xffffffffu, q < hi && idx[q] < bound));
}

/* The first of the c sorted indices idx[0, c) that is >= bound when it is likely near the start
 * (the next tile's entries follow the previous tile's): one coalesced probe of the first 32, the
 * full search past them only when all 32 are below. */
__device__ __forceinline__ size_t topk_warp_lower_bound_near(const uint32_t *idx, size_t c,
                                                            uint32_t bound)
{
    const size_t lane = threadIdx.x & 31;
    const int nb = __popc(__ballot_sync(0xffffffffu, lane < c && idx[lane] < bound));
    if (nb < 32 || c <= 32) {
        return (size_t)nb;
    }
    return 32 + topk_warp_lower_bound(idx + 32, c - 32, bound);
}

/* out = scale * (sum over ranks, in order, of the entries inside each tile), or NaN everywhere
 * when some header is bad (every block reads every header, so all agree).  A block decodes
 * `per_block` consecutive tiles: each rank's entries of a tile start where the previous tile's
 * ended (the cursor, cur[rank] in dynamic shared memory), so only the block's first tile
 * searches the whole index list; a later tile finds its end with one coalesced probe when its
 * entries are few (at most len entries lie in a tile: indices are unique). */
template <typename T>
__global__ void __launch_bounds__(256)
    topk_decode_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t pbytes, size_t k,
                       size_t n, float scale, int vec, size_t per_block, T *out)
{
    __shared__ __align__(16) float acc[TOPK_DEC_TILE];
    __shared__ size_t range[8][2]; /* [lo, hi) of the entries of rank r0 + w in the tile */
    extern __shared__ uint32_t cur[]; /* nranks cursors when per_block > 1 */
    const int bad = sqz_cu_block_any_bad(payloads, nranks, pbytes);
    const int warp = (int)(threadIdx.x >> 5);
    const size_t ntiles = (n + TOPK_DEC_TILE - 1) / TOPK_DEC_TILE;
    const size_t first = (size_t)blockIdx.x * per_block;
    const size_t last = first + per_block < ntiles ? first + per_block : ntiles;
    for (size_t t = first; t < last; t++) {
        const size_t t0 = t * TOPK_DEC_TILE;
        const uint32_t len = (uint32_t)(n - t0 < TOPK_DEC_TILE ? n - t0 : TOPK_DEC_TILE);
        for (uint32_t e = threadIdx.x; e < len; e += 256) {
            acc[e] = bad ? __int_as_float(0x7fc00000) : 0.0f;
        }
        for (int r0 = 0; !bad && r0 < nranks; r0 += 8) {
            if (r0 + warp < nranks) {
                const int r = r0 + warp;
                const uint8_t *p = payloads + (size_t)r * pbytes;
                const uint32_t c = reinterpret_cast<const uint32_t *>(p)[2];
                const size_t cnt = c < k ? c : k;
                const uint32_t *idx = reinterpret_cast<const uint32_t *>(p + 16);
                const size_t lo = t == first ? topk_warp_lower_bound(idx, cnt, (uint32_t)t0)
                                             : cur[r];
                const size_t win = cnt - lo < len ? cnt - lo : len;
                const size_t hi = lo + topk_warp_lower_bound_near(idx + lo, win,
                                                                  (uint32_t)(t0 + len));
                if ((threadIdx.x & 31) == 0) {
                    range[warp][0] = lo;
                    range[warp][1] = hi;
                    if (per_block > 1) {
                        cur[r] = (uint32_t)hi;
                    }
                }
            }
            __syncthreads(); /* (also orders the zeroing, or the previous round's adds) */
            for (int w = 0; w < 8 && r0 + w < nranks; w++) {
                const uint8_t *p = payloads + (size_t)(r0 + w) * pbytes;
                const uint32_t *idx = reinterpret_cast<const uint32_t *>(p + 16);
                const float *val = reinterpret_cast<const float *>(p + 16 + 4 * k);
                for (size_t j = range[w][0] + threadIdx.x; j < range[w][1]; j += 256) {
                    const uint32_t off = idx[j] - (uint32_t)t0;
                    if (off < len) { /* never false for a payload of compress: safety only */
                        acc[off] = __fadd_rn(acc[off], val[j]);
                    }
                }
                __syncthreads();
            }
        }
        __syncthreads();
        sqz_cu_store_tile(acc, len, t0, scale, bad, vec, out);
        __syncthreads(); /* (the next tile zeroes acc) */
    }
}

/* When bad: residual -= in wherever in + residual is finite. */
template <typename T>
__global__ void __launch_bounds__(256)
    topk_restore_sub_kernel(const T *__restrict__ in, float *__restrict__ res, size_t n,
                            const uint32_t *__restrict__ bad, int vec)
{
    if (*bad == 0) {
        return;
    }
    const size_t nch = (n + 7) / 8;
    for (size_t ch = (size_t)blockIdx.x * 256 + threadIdx.x; ch < nch;
         ch += (size_t)gridDim.x * 256) {
        const size_t i0 = ch * 8;
        const int len = (int)(n - i0 < 8 ? n - i0 : 8);
        float x[8], r[8];
        sqz_cu_load8(in, i0, len, vec != 0, x);
        sqz_cu_load8(res, i0, len, vec != 0, r);
        uint32_t mask = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            if (e < len && sqz_cu_finite(__fadd_rn(x[e], r[e]))) {
                r[e] = __fsub_rn(r[e], x[e]);
                mask |= 1u << e;
            }
        }
        sqz_cu_store8(res, i0, len, vec != 0, r, mask);
    }
}

/* When bad: residual[idx] += val over the own payload's entries. */
__global__ void __launch_bounds__(256)
    topk_restore_add_kernel(const uint8_t *__restrict__ own, size_t k, size_t n,
                            const uint32_t *__restrict__ bad, float *__restrict__ res)
{
    if (*bad == 0) {
        return;
    }
    const uint32_t c = reinterpret_cast<const uint32_t *>(own)[2];
    const size_t cnt = c < k ? c : k;
    const uint32_t *pidx = reinterpret_cast<const uint32_t *>(own + 16);
    const float *pval = reinterpret_cast<const float *>(own + 16 + 4 * k);
    for (size_t j = (size_t)blockIdx.x * 256 + threadIdx.x; j < cnt;
         j += (size_t)gridDim.x * 256) {
        const uint32_t ix = pidx[j];
        if (ix < n) {
            res[ix] = __fadd_rn(res[ix], pval[j]);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Host side.
 * ------------------------------------------------------------------------------------------- */

static size_t sqz_cu_topk_payload_bytes(const sqz_gpu_params_t *p, size_t n)
{
    topk_layout_t L;
    if (n == 0 || !topk_layout(p, n, &L)) {
        return 0;
    }
    return L.total;
}

static size_t sqz_cu_topk_workspace_bytes(const sqz_gpu_params_t *p, size_t n,
                                          sqz_dtype_t dtype)
{
    topk_layout_t L;
    if (n == 0 || !topk_layout(p, n, &L)) {
        return SQZ_CU_WS_CTRL_BYTES;
    }
    size_t bytes = L.ws;
    (void)dtype;
    return bytes;
}

template <typename T>
static sqz_status_t topk_compress_t(const sqz_gpu_params_t *p, const topk_layout_t *L,
                                    const T *in, float *res, size_t n, uint32_t key,
                                    uint8_t *payload, uint8_t *ws, cudaStream_t st)
{
    sqz_cu_ctrl_t *ctrl = reinterpret_cast<sqz_cu_ctrl_t *>(ws);
    uint32_t *counts = reinterpret_cast<uint32_t *>(ws + L->o_cnt);
    uint32_t *offsets = reinterpret_cast<uint32_t *>(ws + L->o_off);
    uint32_t *sidx = reinterpret_cast<uint32_t *>(ws + L->o_sidx);
    float *sval = reinterpret_cast<float *>(ws + L->o_sval);
    const size_t m = n < TOPK_SAMPLES ? n : TOPK_SAMPLES;
    size_t kk = topk_ceil(p->density * (double)m);
    kk = kk < 1 ? 1 : (kk > m ? m : kk);
    const int vec = sqz_cu_aligned(in, 16) && (res == NULL || sqz_cu_aligned(res, 16));

    topk_select_kernel<T><<<1, TOPK_SEL_THREADS, 0, st>>>(in, res, n, m, (uint32_t)kk, key, ctrl,
                                                          payload, L->body, L->total);
    SQZ_CU_CHECK_LAUNCH();
    topk_main_kernel<T><<<(unsigned)L->nblk, TOPK_THREADS, 0, st>>>(
        in, res, n, L->cap, vec, ctrl, counts, sidx, sval, payload);
    SQZ_CU_CHECK_LAUNCH();
    topk_scan_kernel<<<1, 1024, 0, st>>>(counts, offsets, L->nblk, L->k, ctrl, payload);
    SQZ_CU_CHECK_LAUNCH();
    topk_gather_kernel<<<(unsigned)L->nblk, TOPK_THREADS, 0, st>>>(counts, offsets, sidx, sval,
                                                                   L->cap, L->k, res, payload);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_topk_compress(const sqz_gpu_params_t *p, const void *in,
                                         sqz_dtype_t dtype, float *residual, size_t n,
                                         uint32_t key, void *payload, void *workspace,
                                         void *stream)
{
    topk_layout_t L;
    if (!topk_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    uint8_t *pl = (uint8_t *)payload;
    uint8_t *ws = (uint8_t *)workspace;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return topk_compress_t(p, &L, (const SQZ_CU_ELEM(t) *)in, residual, n, key, pl, ws, st);
    });
}

template <typename T>
static sqz_status_t topk_decode_t(const topk_layout_t *L, const uint8_t *payloads, int nranks,
                                  size_t n, float scale, T *out, cudaStream_t st)
{
    /* About TOPK_DEC_BLOCKS blocks, each a run of consecutive tiles; one tile a block (each
     * searches, no cursors) when the ranks' cursors would not fit in shared memory. */
    const size_t ntiles = sqz_cu_div_up(n, TOPK_DEC_TILE);
    const size_t per_block = nranks <= TOPK_DEC_CURSORS_MAX
                                 ? sqz_cu_div_up(ntiles, TOPK_DEC_BLOCKS)
                                 : 1;
    const size_t smem = per_block > 1 ? (size_t)nranks * sizeof(uint32_t) : 0;
    topk_decode_kernel<T><<<(unsigned)sqz_cu_div_up(ntiles, per_block), 256, smem, st>>>(
        payloads, nranks, L->total, L->k, n, scale, sqz_cu_aligned(out, 16), per_block, out);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_topk_decode_sum(const sqz_gpu_params_t *p, const void *payloads,
                                           int nranks, size_t n, float scale, void *out,
                                           sqz_dtype_t dtype, void *workspace, void *stream)
{
    topk_layout_t L;
    if (!topk_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    (void)workspace;
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *pl = (const uint8_t *)payloads;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return topk_decode_t(&L, pl, nranks, n, scale, (SQZ_CU_ELEM(t) *)out, st);
    });
}

template <typename T>
static sqz_status_t topk_restore_t(const topk_layout_t *L, const uint8_t *own,
                                   const uint32_t *bad, const T *in, float *res, size_t n,
                                   cudaStream_t st)
{
    const int vec = sqz_cu_aligned(in, 16) && sqz_cu_aligned(res, 16);
    topk_restore_sub_kernel<T><<<sqz_cu_grid(sqz_cu_div_up(n, 8), 256), 256, 0, st>>>(
        in, res, n, bad, vec);
    SQZ_CU_CHECK_LAUNCH();
    topk_restore_add_kernel<<<sqz_cu_grid(L->k, 256), 256, 0, st>>>(own, L->k, n, bad, res);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

static sqz_status_t sqz_cu_topk_restore(const sqz_gpu_params_t *p, const void *own,
                                        const uint32_t *bad, const void *in,
                                        sqz_dtype_t dtype, float *residual, size_t n,
                                        void *stream)
{
    topk_layout_t L;
    if (!topk_layout(p, n, &L)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    cudaStream_t st = (cudaStream_t)stream;
    const uint8_t *o = (const uint8_t *)own;
    return sqz_cu_with_dtype(dtype, [&](auto *t) {
        return topk_restore_t(&L, o, bad, (const SQZ_CU_ELEM(t) *)in, residual, n, st);
    });
}

extern "C" const sqz_cu_method_t sqz_cu_topk_method = {
    "topk",
    sqz_cu_topk_payload_bytes,
    sqz_cu_topk_workspace_bytes,
    sqz_cu_topk_compress,
    sqz_cu_topk_decode_sum,
    sqz_cu_topk_restore,
    0, /* shared_key */
};
