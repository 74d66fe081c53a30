/*
 * Device token codecs of LSH-MoE (src/moe/sqz_cuda_moe.cu): the GPU twins of sqz_lsh.c, writing
 * and reading the same wire format (sqz_lsh.h: header, rows, one index per token), so that a block
 * encoded on either side decodes on the other.
 *
 *  - dedup (lossless): each token row is hashed (the CPU's 64-bit row hash), rows with equal hashes
 *    are compared byte for byte, and the distinct rows are written in order of first appearance
 *    with the row of each token: the same block as sqz_dedup_encode, bit for bit (when two
 *    different rows of a block share a 64-bit hash, the later one becomes a row of its own: still
 *    lossless, one row more than the CPU would write).
 *  - lsh (float32 only): the bucket id of each token is computed exactly as sqz_lsh_hash does (same
 *    sampled coordinates, projections, centering on the block mean accumulated in double, the
 *    same summation order and IEEE round-to-nearest operations), so the ids are the CPU's bit for
 *    bit; one centroid per bucket (sum in token order, times 1/count, as the CPU), buckets in
 *    order of first appearance.
 *  Both fall back to a RAW block when the coded form would not be smaller, as the CPU encoders.
 *
 * Contract of every call: host-callable C that only enqueues work on `stream` (the descriptor
 * upload is a cudaMemcpyAsync from host memory: the host array may be reused on return); no
 * allocation, no synchronization.  \return SQZ_OK, SQZ_ERR_INVALID_PARAM (arguments out of range)
 * or SQZ_ERR_CUDA (a launch failed).
 */
#ifndef SQZ_CUDA_MOE_H
#define SQZ_CUDA_MOE_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sqz_lsh;

/** One block of a call: the tokens for (encode) or from (decode) one peer. */
typedef struct sqz_gpu_tok_blk {
    const void *src;    /**< encode: the tokens (device, aligned to the element size);
                             decode: the received block (device, 8-byte aligned) */
    void       *dst;    /**< encode: the block's slot (device, 8-byte aligned, at least
                             sqz_tok_raw_bytes(tokens) bytes); decode: where the tokens go */
    uint64_t    tokens; /**< tokens of the block (0: nothing is written or read) */
    uint64_t    bytes;  /**< decode: the block's size (0 with 0 tokens: no block) */
    uint64_t    toff;   /**< set by sqz_gpu_tok_plan: the block's first token in the workspace */
    uint64_t    soff;   /**< set by sqz_gpu_tok_plan: the block's hash table in the workspace */
    uint64_t    nslots; /**< set by sqz_gpu_tok_plan: its size (a power of 2, >= 2 tokens) */
} sqz_gpu_tok_blk_t;

/** The LSH hash on the device: a copy of a CPU codec's projections and sampled coordinates. */
typedef struct sqz_gpu_lsh sqz_gpu_lsh_t;

/** Copies the hash of `lsh` to the current device (synchronous: call it at setup, not per call).
 *  \return SQZ_OK, SQZ_ERR_NO_MEMORY or SQZ_ERR_CUDA. */
sqz_status_t sqz_gpu_lsh_create(const struct sqz_lsh *lsh, sqz_gpu_lsh_t **out);
void         sqz_gpu_lsh_destroy(sqz_gpu_lsh_t *g);
/** \return the token width the hash was made for. */
size_t       sqz_gpu_lsh_width(const sqz_gpu_lsh_t *g);

/** Fills toff, soff and nslots of n blocks (tokens set) of tokens of `width` elements and
 *  \return the device workspace in bytes that sqz_gpu_tok_encode needs for them
 *  (sqz_gpu_tok_decode needs sqz_gpu_tok_decode_ws(n)). */
size_t sqz_gpu_tok_plan(sqz_gpu_tok_blk_t *blks, int n, size_t width);
size_t sqz_gpu_tok_decode_ws(int n);

/**
 * Encodes n blocks (planned by sqz_gpu_tok_plan) of tokens of `width` elements of dtype: lsh NULL
 * gives dedup (any float dtype), otherwise LSH (float32, width == sqz_gpu_lsh_width(lsh)).
 * Writes each block to its dst, and meta[b] = its size in bytes, meta[n + b] = its rows (meta:
 * 2 n device uint64; a block of 0 tokens has size 0 and is not written).  keys (device, may be
 * NULL) receives each token's bucket id (lsh) or row hash (dedup), in toff order.
 * ws: 256-byte aligned device memory of the planned size.
 */
sqz_status_t sqz_gpu_tok_encode(const sqz_gpu_lsh_t *lsh, sqz_dtype_t dtype, size_t width,
                                const sqz_gpu_tok_blk_t *blks, int n, void *ws, uint64_t *meta,
                                uint64_t *keys, void *stream);

/**
 * Validates and decodes n received blocks (src, bytes, tokens, dst set) into their dst
 * (tokens * width elements each).  Each block is validated as sqz_tok_decode does (header, exact
 * size, every index) before any of its tokens is written; a malformed block leaves its dst
 * untouched, sets status[b] = 1 (device, n uint32; 0 otherwise) and adds 1 to *corrupt (device
 * counter, may be NULL).  ws: sqz_gpu_tok_decode_ws(n) bytes of device memory.
 */
sqz_status_t sqz_gpu_tok_decode(sqz_dtype_t dtype, size_t width, const sqz_gpu_tok_blk_t *blks,
                                int n, void *ws, uint32_t *status, unsigned long long *corrupt,
                                void *stream);

#ifdef __cplusplus
}
#endif
#endif /* SQZ_CUDA_MOE_H */
