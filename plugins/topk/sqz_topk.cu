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
 * decode_sum: ONE launch (topk_decode2_kernel, its section below), a block per run of
 * consecutive output tiles of TOPK_DEC_TILE elements; every block reads every header (any bad:
 * the tile is NaN).  Per tile and group of 8 ranks, warp w stages a window of its rank's next 64
 * (256 when dense) entries in shared memory (the run's first tile finds them by a 32-way search
 * of the sorted indices, a later one starts at the previous tile's end); one barrier; each warp
 * adds, rank after rank, the staged entries of the accumulator stripes it owns (32 elements of
 * every 256) and stores those stripes itself, while its next window is already loading into
 * registers: one global round trip a tile, hidden behind the adds.  A full window that ends
 * inside the tile cuts the round short at its last offset for every rank (the rest is a second
 * round), so each element sums 0 + v_0 + v_1 ... in rank order, as the CPU decoder accumulates.
 * The output is written once and each entry read once.  8 payloads of 2^26 elements at density
 * 0.01, H100 (session 18, docs/performance.md): 0.79 of copy in fp32 and 0.45 in bf16, against
 * 0.51 and 0.32 for the kernel it replaced (a barrier and a dependent load per rank and tile).
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


/* ---------------------------------------------------------------------------------------------
 * decode_sum: one global round trip per tile, prefetched.
 *
 * Per round, warp w of the block holds the WINDOW of rank r0 + w: the W entries from its cursor
 * on, staged in shared memory as (offset in the tile, or 0xffff when not in it; value).  Every
 * warp then scans all 8 windows and adds, in rank order with a __syncwarp between ranks, the
 * entries whose offsets lie in its OWN stripes (32 elements every 256: offset / 32 % 8 == w);
 * those are the only accumulator elements it ever zeroes, adds to and stores, so the block's
 * only barrier is the one after the staging.  Each warp then advances its cursor by the entries
 * used (a ballot over its window) and loads its next window into registers BEFORE adding, so
 * the load of tile t + 1 is in flight while tile t is added and stored; the windows are double
 * buffered.  A window that is full and ends inside the tile bounds the round to the offsets
 * below its last entry + 1 (b); the entries at b and above wait for the next round of the same
 * tile, for every rank: each round covers an offset range completely, so every element still
 * sums 0 + v_0 + v_1 ... in rank order (the CPU decoder's bits).
 * W is 64 when a rank's entries per tile average at most TOPK_DEC2_SPARSE, else 256.
 * ------------------------------------------------------------------------------------------- */
#define TOPK_DEC2_STRIPE 32   /* accumulator elements per stripe of a warp */
#define TOPK_DEC2_SPARSE 48   /* mean entries per rank and tile up to which W is 64 */
#define TOPK_DEC2_WDENSE 256  /* W above it */
#define TOPK_DEC2_BLOCKS 2048 /* blocks wanted */
#define TOPK_DEC2_MIN_RUN 2   /* tiles per block at least (half the searches at mid sizes) */
#ifndef TOPK_DEC2_MINB
#define TOPK_DEC2_MINB 6 /* blocks per SM the sparse kernel's registers are cut for (40) */
#endif
#define TOPK_DEC2_NOWHERE 0xffffu /* staged offset of an entry that is not in the tile */
/* Static shared memory of the kernel for windows of W entries (acc, 2 x 8 windows). */
#define TOPK_DEC2_SMEM(W) (4 * TOPK_DEC_TILE + 2 * 8 * (W) * 6)

#if TOPK_DEC_TILE % (8 * TOPK_DEC2_STRIPE) != 0 || TOPK_DEC_TILE >= TOPK_DEC2_NOWHERE
#error "topk_decode2_kernel wants TOPK_DEC_TILE a multiple of 256 below 65535"
#endif
#if TOPK_DEC2_SMEM(TOPK_DEC2_WDENSE) > 48 * 1024
#error "topk_decode2_kernel: the dense windows and the tile exceed 48 KiB of static shared memory"
#endif

/* The payload array, as every warp reads it. */
typedef struct topk_dec2_src {
    const uint8_t *payloads;
    size_t pbytes;
    size_t k;
} topk_dec2_src_t;

/* One warp's window in registers: lane l holds entries lo + l + 32 m, m < S. */
template <int S>
struct topk_dec2_win {
    uint32_t idx[S];
    float val[S];
};

/* Elements of tile t. */
__device__ __forceinline__ uint32_t topk_dec2_len(size_t n, size_t t)
{
    const size_t t0 = t * TOPK_DEC_TILE;
    return (uint32_t)(n - t0 < TOPK_DEC_TILE ? n - t0 : TOPK_DEC_TILE);
}

/* Entries of rank r (its count clamped to k): the header's word, read by the whole warp. */
__device__ __forceinline__ uint32_t topk_dec2_count_of(topk_dec2_src_t s, int r)
{
    const uint32_t c = reinterpret_cast<const uint32_t *>(s.payloads + (size_t)r * s.pbytes)[2];
    return c < s.k ? c : (uint32_t)s.k;
}

/* Warp: the first entry of rank r (cnt entries) at or past element t0. */
__device__ __forceinline__ uint32_t topk_dec2_search(topk_dec2_src_t s, int r, uint32_t cnt,
                                                     size_t t0)
{
    const uint32_t *idx = reinterpret_cast<const uint32_t *>(s.payloads + (size_t)r * s.pbytes +
                                                             16);
    return (uint32_t)topk_warp_lower_bound(idx, cnt, (uint32_t)t0);
}

/* Warp: starts the loads of rank r's window at lo.  Entries past cnt are not read: their index
 * is 0xffffffff, >= n (n < 2^32), so never inside a tile. */
template <int S>
__device__ __forceinline__ void topk_dec2_fetch(topk_dec2_src_t s, int r, uint32_t lo,
                                                uint32_t cnt, topk_dec2_win<S> *w)
{
    const uint8_t *p = s.payloads + (size_t)r * s.pbytes;
    const uint32_t *idx = reinterpret_cast<const uint32_t *>(p + 16);
    const float *val = reinterpret_cast<const float *>(p + 16 + 4 * s.k);
    const uint32_t lane = threadIdx.x & 31;
#pragma unroll
    for (int m = 0; m < S; m++) {
        const size_t pos = (size_t)lo + lane + 32 * m;
        w->idx[m] = pos < cnt ? idx[pos] : 0xffffffffu;
        w->val[m] = pos < cnt ? val[pos] : 0.0f;
    }
}

/* Warp: stages its window for the tile at t0 of len elements (offsets, NOWHERE outside). */
template <int S>
__device__ __forceinline__ void topk_dec2_put(const topk_dec2_win<S> *w, size_t t0, uint32_t len,
                                              uint16_t *off, float *val)
{
    const uint32_t lane = threadIdx.x & 31;
#pragma unroll
    for (int m = 0; m < S; m++) {
        const uint32_t d = w->idx[m] - (uint32_t)t0; /* wraps for indices below the tile */
        off[lane + 32 * m] = (uint16_t)(d < len ? d : TOPK_DEC2_NOWHERE);
        val[lane + 32 * m] = w->val[m];
    }
}

/* The round's bound: len, or less when a full window ends inside the tile (then the entries of
 * every rank at or past its last offset + 1 wait for the next round). */
template <int W>
__device__ __forceinline__ uint32_t topk_dec2_bound(const uint16_t (*off)[W], int g,
                                                    uint32_t len)
{
    uint32_t b = len;
    for (int r = 0; r < g; r++) {
        const uint32_t o = off[r][W - 1];
        b = o < b ? o + 1 : b;
    }
    return b;
}

/* Warp: the entries of its window below b (the ones this round uses). */
template <int W>
__device__ __forceinline__ uint32_t topk_dec2_used(const uint16_t *off, uint32_t b)
{
    const uint32_t lane = threadIdx.x & 31;
    uint32_t u = 0;
#pragma unroll
    for (int m = 0; m < W / 32; m++) {
        u += __popc(__ballot_sync(0xffffffffu, off[lane + 32 * m] < b));
    }
    return u;
}

/* Warp: fills its own stripes of the accumulator with f. */
__device__ __forceinline__ void topk_dec2_fill(float *acc, float f)
{
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (uint32_t u = lane; u < TOPK_DEC_TILE / 32; u += 32) {
        const uint32_t e = TOPK_DEC2_STRIPE * (warp + 8 * (u / 8)) + 4 * (u % 8);
        *reinterpret_cast<float4 *>(acc + e) = make_float4(f, f, f, f);
    }
}

/* Warp: adds the staged entries below b that fall in its stripes, rank after rank (g ranks).
 * Offsets of the next rank are loaded before the current rank's adds (they are not written
 * during the round); only the accumulator needs the __syncwarp between ranks. */
template <int W>
__device__ __forceinline__ void topk_dec2_add(float *acc, const uint16_t (*off)[W],
                                              const float (*val)[W], int g, uint32_t b)
{
    constexpr int S = W / 32;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint32_t o[S], on[S];
#pragma unroll
    for (int m = 0; m < S; m++) {
        o[m] = g > 0 ? off[0][lane + 32 * m] : TOPK_DEC2_NOWHERE;
    }
#pragma unroll
    for (int r = 0; r < 8; r++) {
        if (r >= g) {
            break;
        }
#pragma unroll
        for (int m = 0; m < S; m++) {
            on[m] = r + 1 < g ? off[r + 1][lane + 32 * m] : TOPK_DEC2_NOWHERE;
        }
#pragma unroll
        for (int m = 0; m < S; m++) {
            if (o[m] < b && (o[m] / TOPK_DEC2_STRIPE) % 8 == warp) {
                acc[o[m]] = __fadd_rn(acc[o[m]], val[r][lane + 32 * m]);
            }
        }
        __syncwarp();
#pragma unroll
        for (int m = 0; m < S; m++) {
            o[m] = on[m];
        }
    }
}

/* 16 bytes of output from acc[e, e + V) (fewer at the tile's end): sqz_cu_store_tile's
 * arithmetic and stores, for one of its steps. */
template <typename T>
__device__ __forceinline__ void topk_dec2_store16(const float *acc, uint32_t e, uint32_t len,
                                                  size_t t0, float scale, int bad, int vec,
                                                  T *out)
{
    constexpr uint32_t V = 16 / sizeof(T);
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

/* Warp: writes its own stripes of the tile at t0 (len elements). */
template <typename T>
__device__ __forceinline__ void topk_dec2_store(const float *acc, uint32_t len, size_t t0,
                                                float scale, int bad, int vec, T *out)
{
    constexpr uint32_t V = 16 / sizeof(T);
    constexpr uint32_t L = TOPK_DEC2_STRIPE / V; /* lanes per stripe */
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (uint32_t u = lane; u < TOPK_DEC_TILE / (8 * TOPK_DEC2_STRIPE) * L; u += 32) {
        const uint32_t e = TOPK_DEC2_STRIPE * (warp + 8 * (u / L)) + V * (u % L);
        if (e < len) {
            topk_dec2_store16(acc, e, len, t0, scale, bad, vec, out);
        }
    }
}

/* out = scale * (sum over ranks, in order, of the entries inside each tile), or NaN everywhere
 * when some header is bad; a block decodes tiles [first, first + per_block), one round per tile
 * and group of 8 ranks (more when a window fills: see the section's comment).  Cursors: in a
 * register of warp w while it keeps its rank (8 ranks or fewer); with more ranks, cur[r] in
 * dynamic shared memory (written and read by warp r % 8 only) when per_block > 1; otherwise a
 * search, as for the block's first tile. */
template <typename T, int W>
__global__ void __launch_bounds__(256, W <= 64 ? TOPK_DEC2_MINB : 4)
    topk_decode2_kernel(const uint8_t *__restrict__ payloads, int nranks, size_t pbytes, size_t k,
                        size_t n, float scale, int vec, size_t per_block, T *out)
{
    constexpr int S = W / 32;
    __shared__ __align__(16) float acc[TOPK_DEC_TILE];
    __shared__ float s_val[2][8][W];
    __shared__ uint16_t s_off[2][8][W];
    extern __shared__ uint32_t cur[];
    const int bad = sqz_cu_block_any_bad(payloads, nranks, pbytes);
    const int nr = bad ? 0 : nranks;
    const int warp = (int)(threadIdx.x >> 5);
    const topk_dec2_src_t src = {payloads, pbytes, k};
    const size_t ntiles = (n + TOPK_DEC_TILE - 1) / TOPK_DEC_TILE;
    const size_t first = (size_t)blockIdx.x * per_block;
    const size_t last = first + per_block < ntiles ? first + per_block : ntiles;
    topk_dec2_win<S> win;
    uint32_t lo = 0, cnt = 0; /* warp's cursor and entries of its rank */
    size_t t = first;
    int r0 = 0, ph = 0, fresh = 1;
    if (warp < nr) {
        cnt = topk_dec2_count_of(src, warp);
        lo = topk_dec2_search(src, warp, cnt, first * TOPK_DEC_TILE);
        topk_dec2_fetch(src, warp, lo, cnt, &win);
        topk_dec2_put(&win, first * TOPK_DEC_TILE, topk_dec2_len(n, first), s_off[0][warp],
                      s_val[0][warp]);
    }
    for (;;) {
        __syncthreads(); /* the windows of this round are staged */
        const uint32_t len = topk_dec2_len(n, t);
        const int g = nr - r0 < 8 ? nr - r0 : 8; /* ranks of this round (0 when bad) */
        const uint32_t b = topk_dec2_bound<W>(s_off[ph], g, len);
        if (warp < g) {
            lo += topk_dec2_used<W>(s_off[ph][warp], b);
        }
        /* The next round: the rest of this tile (b < len), its next group, or the next tile. */
        const int done = b == len && r0 + 8 >= nr; /* the tile is summed after this round */
        const size_t tn = done ? t + 1 : t;
        const int r0n = b < len ? r0 : (done ? 0 : r0 + 8);
        if (b == len && nr > 8 && per_block > 1 && warp < g && (threadIdx.x & 31) == 0) {
            cur[r0 + warp] = lo;
        }
        const int more = tn < last;
        if (more && r0n + warp < nr) {
            if (r0n != r0) { /* another rank for this warp */
                cnt = topk_dec2_count_of(src, r0n + warp);
                lo = tn == first ? topk_dec2_search(src, r0n + warp, cnt, tn * TOPK_DEC_TILE)
                                 : cur[r0n + warp];
            }
            topk_dec2_fetch(src, r0n + warp, lo, cnt, &win);
        }
        if (fresh) {
            topk_dec2_fill(acc, bad ? __int_as_float(0x7fc00000) : 0.0f);
        }
        __syncwarp();
        topk_dec2_add<W>(acc, s_off[ph], s_val[ph], g, b);
        if (done) {
            topk_dec2_store(acc, len, t * TOPK_DEC_TILE, scale, bad, vec, out);
        }
        if (!more) {
            break;
        }
        if (r0n + warp < nr) {
            topk_dec2_put(&win, tn * TOPK_DEC_TILE, topk_dec2_len(n, tn), s_off[ph ^ 1][warp],
                          s_val[ph ^ 1][warp]);
        }
        t = tn;
        r0 = r0n;
        ph ^= 1;
        fresh = done;
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

/* About TOPK_DEC2_BLOCKS blocks of TOPK_DEC2_MIN_RUN tiles or more; with more than 8 ranks, one
 * tile a block (each searches) when their cursors would not fit beside the static 48 KiB. */
template <typename T, int W>
static sqz_status_t topk_decode2_t(const topk_layout_t *L, const uint8_t *payloads, int nranks,
                                   size_t n, float scale, T *out, cudaStream_t st)
{
    const size_t ntiles = sqz_cu_div_up(n, TOPK_DEC_TILE);
    const size_t cmax = (48 * 1024 - TOPK_DEC2_SMEM(W)) / sizeof(uint32_t);
    size_t per_block = sqz_cu_div_up(ntiles, TOPK_DEC2_BLOCKS);
    per_block = per_block > TOPK_DEC2_MIN_RUN ? per_block : TOPK_DEC2_MIN_RUN;
    if (nranks > 8 && (size_t)nranks > cmax) {
        per_block = 1;
    }
    const size_t smem = nranks > 8 && per_block > 1 ? (size_t)nranks * sizeof(uint32_t) : 0;
    topk_decode2_kernel<T, W><<<(unsigned)sqz_cu_div_up(ntiles, per_block), 256, smem, st>>>(
        payloads, nranks, L->total, L->k, n, scale, sqz_cu_aligned(out, 16), per_block, out);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

template <typename T>
static sqz_status_t topk_decode_t(const topk_layout_t *L, const uint8_t *payloads, int nranks,
                                  size_t n, float scale, T *out, cudaStream_t st)
{
    /* Windows of 64 entries while a rank's entries per tile average at most TOPK_DEC2_SPARSE. */
    if ((double)L->k * TOPK_DEC_TILE <= (double)TOPK_DEC2_SPARSE * (double)n) {
        return topk_decode2_t<T, 64>(L, payloads, nranks, n, scale, out, st);
    }
    return topk_decode2_t<T, TOPK_DEC2_WDENSE>(L, payloads, nranks, n, scale, out, st);
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
