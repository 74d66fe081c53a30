/* The entropy stage (SQZ_ENTROPY): a zstd pass over any compressor's payload, kept only when it
 * pays.  `zstd` keeps it whenever it is smaller; `auto` keeps it when the time the smaller
 * message saves on the link (SQZ_LINK_GBPS, to each of the P - 1 peers) exceeds what zstd costs
 * (its measured compression time, and as much again for the receivers' decompression).  A wrapped
 * payload is flagged in its frame, so receivers need no agreement: every rank may decide alone. */
#ifndef SQZ_ENTROPY_H
#define SQZ_ENTROPY_H

#include <stddef.h>

#include <squeeze.h>

typedef enum { SQZ_ENTROPY_NONE = 0, SQZ_ENTROPY_ZSTD = 1, SQZ_ENTROPY_AUTO = 2 } sqz_entropy_mode_t;

/** Per-thread zstd contexts and scratch (created on first use, kept). */
typedef struct sqz_entropy sqz_entropy_t;

sqz_entropy_t *sqz_entropy_create(void);
void           sqz_entropy_destroy(sqz_entropy_t *e); /* accepts NULL */

/* What a wrapped payload went through (the caller carries these bits in its frame). */
#define SQZ_ENTROPY_ZSTD_BIT      1 /* zstd frame (declaring its content size) */
#define SQZ_ENTROPY_POSITIONS_BIT 2 /* sparse layout with position-coded indices (below) */

/** Tries to shrink payload[0, *bytes) in place: position coding of a sparse layout (always kept
 *  when smaller: one cheap pass), then zstd (kept as the mode says).  \return the
 *  SQZ_ENTROPY_*_BIT applied (*bytes updated), 0 when the payload was left as it is. */
int sqz_entropy_wrap(sqz_entropy_t *e, int mode, double link_gbps, int nranks, unsigned char *payload,
                     size_t *bytes);

/** Undoes sqz_entropy_wrap (bits as it returned them) into the scratch of e; the raw payload must
 *  be at most max_raw bytes.  \return SQZ_OK (*raw, *raw_bytes set) or SQZ_ERR_CORRUPT. */
sqz_status_t sqz_entropy_unwrap(sqz_entropy_t *e, int bits, const unsigned char *payload,
                                size_t bytes, size_t max_raw, const unsigned char **raw,
                                size_t *raw_bytes);

/*
 * Position coding.  A sparse layout is u32 m, then m u32 indices strictly increasing, then m f32
 * values (4 + 8m bytes: top-k's wire format and the exact sparse frames).  Its coded form is
 * u32 m, then the m gaps as LEB128 varints (the first index, then index[i] - index[i-1] - 1),
 * then the m values unchanged: at density 1/100 most gaps fit one byte instead of four.
 */
/** Codes in[0, bytes) into out (capacity >= bytes).  \return the coded size, or 0 when the input
 *  is not a sparse layout or coding would not make it smaller. */
size_t sqz_positions_encode(const unsigned char *in, size_t bytes, unsigned char *out);

/** Decodes a coded sparse layout into out (capacity max_raw).  \return SQZ_OK (*raw_bytes =
 *  4 + 8m) or SQZ_ERR_CORRUPT (malformed varints, indices not increasing or past 2^32, sizes that
 *  do not add up, or a result larger than max_raw); out is not written past max_raw. */
sqz_status_t sqz_positions_decode(const unsigned char *in, size_t bytes, unsigned char *out,
                                  size_t max_raw, size_t *raw_bytes);

#endif
