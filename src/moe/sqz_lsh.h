/*
 * LSH-MoE token codecs (Nie et al., NeurIPS 2024): the rows of an MoE all-to-all, one token of
 * `width` elements each, coded per destination.
 *
 * Why these are not sqz_compressor_v1_t plugins: a v1 compressor is the one method SQZ_METHOD
 * picks for the all-reduces, and codes a flat float vector that the engine sums.  A token codec
 * runs beside it (a job compresses its gradients with topk and its tokens with lsh), its unit is
 * a row, nothing is summed, its exchange is an all-to-all-v with a block per peer, and the API
 * pairs a dispatch with its combine through a handle (residuals, token->centroid maps), which a
 * stateless compress/decompress pair cannot express.  Extending the v1 struct for a single codec
 * would freeze an interface with one user; so the codecs live here, written like a plugin (no
 * MPI, no environment, explicit parameters), called by sqz_moe.c, with their
 * parameters in the core table.
 *
 * Wire format of one block (what one rank sends one peer), little-endian, shared with a GPU
 * path: a 24-byte header
 *     u32 magic SQZ_TOKFRAME_MAGIC
 *     u8  kind   SQZ_TOKFRAME_RAW (the tokens as they are) or SQZ_TOKFRAME_ROWS (rows + index)
 *     u8  dtype  sqz_dtype_t (1 float32, 2 float16, 3 bfloat16)
 *     u8  iw     index bytes per token: 0 (RAW), or 1, 2, 4: the smallest that holds `rows`
 *     u8  flags  SQZ_TOKFRAME_LOSSY when rows are LSH centroids (informational)
 *     u32 width  elements per token
 *     u32 tokens tokens described
 *     u32 rows   rows that follow (RAW: = tokens)
 *     u32 zero
 * then rows * width elements, then (ROWS only) one index per token into the rows.  The receiver
 * rebuilds token t as row index[t].  LSH writes centroids (one per bucket) and the bucket of
 * each token; de-duplication writes the distinct rows and the row of each token: one decoder for
 * both.
 */
#ifndef SQZ_LSH_H
#define SQZ_LSH_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze.h>

#define SQZ_TOKFRAME_MAGIC  0x545a5153u /* "SQZT" */
#define SQZ_TOKFRAME_HEADER 24u
#define SQZ_TOKFRAME_RAW    0u
#define SQZ_TOKFRAME_ROWS   1u
#define SQZ_TOKFRAME_LOSSY  0x1u

/** \return the bytes of one element of dtype (4 or 2), 0 for an unknown dtype. */
size_t sqz_tok_esize(int dtype);

/** \return the bytes of a RAW block of `tokens` tokens: the bound of every encoder, since each
 *  falls back to RAW when its own form would not be smaller. */
size_t sqz_tok_raw_bytes(size_t tokens, size_t width, int dtype);

/** Writes a RAW block of the tokens at `src` to dst (sqz_tok_raw_bytes bytes). */
void sqz_tok_encode_raw(const void *src, size_t tokens, size_t width, int dtype, void *dst);

/** Decodes one block of `bytes` bytes that must describe exactly `tokens` tokens of `width`
 *  elements of `dtype`, writing them to out (tokens * width elements); out == NULL validates
 *  only.  Everything is validated before anything is written: header fields, the exact size,
 *  every index.  Never reads outside [block, block + bytes) nor writes outside out.
 *  \return SQZ_OK or SQZ_ERR_CORRUPT (out untouched). */
sqz_status_t sqz_tok_decode(const void *block, size_t bytes, size_t tokens, size_t width, int dtype,
                            void *out);

/** Reads the header of a block that sqz_tok_decode accepted: rows (centroids or distinct rows),
 *  index width, and where the rows and the indices start. */
typedef struct sqz_tok_view {
    uint32_t             kind, iw, rows, tokens;
    const unsigned char *rowdata; /* rows * width elements */
    const unsigned char *index;   /* tokens * iw bytes; NULL for RAW */
} sqz_tok_view_t;
void     sqz_tok_view(const void *block, sqz_tok_view_t *v);
/** \return index t of a view (t itself for RAW). */
uint32_t sqz_tok_view_index(const sqz_tok_view_t *v, size_t t);

/* ---------------------------------------------------------------------------------------------
 * The codec state: the LSH projections (derived from the seed: identical on every rank) and
 * scratch that grows to the largest block seen and is kept.  One state per communicator; not
 * thread-safe.
 * ------------------------------------------------------------------------------------------- */
typedef struct sqz_lsh sqz_lsh_t;

/** Limits of the parameters (checked at context creation). */
#define SQZ_LSH_MAX_HASHES 16
#define SQZ_LSH_MAX_DIM    64

/** \return the bits one hash code takes: ceil(log2(2 * rot_dim)).  A bucket id concatenates the
 *  `hashes` codes (the AND construction) and must fit 64 bits: hashes * bits <= 64. */
unsigned sqz_lsh_code_bits(int rot_dim);

/** Creates a codec for tokens of `width` float elements: `hashes` cross-polytope hash functions,
 *  each a projection into rot_dim dimensions by a random matrix with orthonormal rows, applied to
 *  `sample` coordinates of each token (0 or more than width: all), all drawn from `seed` (the same
 *  seed gives the same bits on every rank and machine).
 *  \return SQZ_ERR_INVALID_PARAM when width is 0, rot_dim or hashes are out of range or do not
 *  fit a 64-bit bucket id. */
sqz_status_t sqz_lsh_create(size_t width, int rot_dim, int hashes, size_t sample, uint64_t seed,
                            sqz_lsh_t **out);
void         sqz_lsh_destroy(sqz_lsh_t *lsh);
size_t       sqz_lsh_width(const sqz_lsh_t *lsh);

/** The projection matrices (hashes * rot_dim rows of min(sample, width) floats, row-major), for
 *  tests. */
const float *sqz_lsh_projections(const sqz_lsh_t *lsh);

/** The shape of the hash, for an encoder elsewhere (the GPU's) that must compute the same bucket
 *  ids: the `ns` sampled coordinates (sorted), rot_dim and hashes.  \return the coordinates. */
const uint32_t *sqz_lsh_columns(const sqz_lsh_t *lsh, size_t *ns, int *rot_dim, int *hashes);

/** Bucket id of each of `tokens` tokens (float, width each) into bucket[]: the concatenated codes
 *  of (x - mean of the block) (centering: the angular hash then separates the tokens by where they
 *  sit around the batch rather than by the direction all of them share). */
sqz_status_t sqz_lsh_hash(sqz_lsh_t *lsh, const float *x, size_t tokens, uint64_t *bucket);

/** LSH encoder: groups the tokens by bucket, writes one centroid (the mean of its bucket, in
 *  bucket order of first appearance) per bucket and the centroid of each token; a RAW block when
 *  that would not be smaller.  dst holds at least sqz_tok_raw_bytes(tokens, width, FLOAT32).
 *  map (may be NULL) receives each token's row in the block (t itself for RAW).
 *  \return SQZ_OK (with *bytes) or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_lsh_encode(sqz_lsh_t *lsh, const float *x, size_t tokens, void *dst, size_t *bytes,
                            uint32_t *map);

/** Exact de-duplication encoder (any dtype): rows are hashed and compared byte for byte; the
 *  distinct rows in order of first appearance and the row of each token; RAW when not smaller.
 *  `scratch` is a codec state (its scratch is used; its width need not match).
 *  \return SQZ_OK (with *bytes) or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_dedup_encode(sqz_lsh_t *scratch, const void *x, size_t tokens, size_t width,
                              int dtype, void *dst, size_t *bytes);

/** The grouping step both encoders share (sqz_lsh.c): tokens whose keys are equal, and for which
 *  same(arg, first token of the group, t) holds when `same` is not NULL, form one group.  Groups
 *  are numbered in order of first appearance: group[t] receives token t's group, first[g] the
 *  first token of group g (both arrays live in the codec's scratch, valid until its next call).
 *  \return the number of groups, or SIZE_MAX when out of memory. */
typedef int (*sqz_lsh_same_fn)(const void *arg, size_t a, size_t b);
size_t sqz_lsh_group(sqz_lsh_t *lsh, const uint64_t *keys, size_t tokens, sqz_lsh_same_fn same,
                     const void *arg, uint32_t **group, uint32_t **first);
/** A key array of `tokens` entries in the codec's scratch (for sqz_dedup_encode). */
uint64_t *sqz_lsh_keys(sqz_lsh_t *lsh, size_t tokens);

/** Writes the header of a block. */
void sqz_tok_header(void *dst, unsigned kind, int dtype, unsigned iw, unsigned flags, size_t width,
                    size_t tokens, size_t rows);
/** \return the index width (1, 2 or 4 bytes) that holds `rows` rows. */
unsigned sqz_tok_index_width(size_t rows);
/** Stores index v of token t at idx (iw bytes each). */
void     sqz_tok_store_index(unsigned char *idx, unsigned iw, size_t t, uint32_t v);

#endif
