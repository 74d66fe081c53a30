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

/** Tries to shrink payload[0, *bytes) in place.  \return 1 when the payload was replaced by its
 *  zstd frame (*bytes updated), 0 when it was left as it is. */
int sqz_entropy_wrap(sqz_entropy_t *e, int mode, double link_gbps, int nranks, unsigned char *payload,
                     size_t *bytes);

/** Decompresses a wrapped payload into the scratch of e; the frame must declare its content size,
 *  at most max_raw bytes.  \return SQZ_OK (*raw, *raw_bytes set) or SQZ_ERR_CORRUPT. */
sqz_status_t sqz_entropy_unwrap(sqz_entropy_t *e, const unsigned char *payload, size_t bytes,
                                size_t max_raw, const unsigned char **raw, size_t *raw_bytes);

#endif
