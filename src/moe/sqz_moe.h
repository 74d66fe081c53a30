/* MoE token all-to-all: per-communicator state, statistics and the policy of the interposers. */
#ifndef SQZ_MOE_H
#define SQZ_MOE_H

#include <squeeze.h>

#include "sqz_lsh.h"

#define SQZ_MOE_NCODECS   3  /* sqz_moe_codec_t values */
#define SQZ_MOE_CYCLE_MAX 64 /* entries of SQZ_MOE_CYCLE */

/** SQZ_MOE: what the interposers do with the token all-to-alls they see. */
typedef enum { SQZ_MOE_OFF = 0, SQZ_MOE_ALL_DEDUP = 1, SQZ_MOE_ALL_LSH = 2, SQZ_MOE_CYCLE = 3 } sqz_moe_mode_t;
/** An entry of SQZ_MOE_CYCLE: a codec, or -1 for "none" (the call passes through). */
#define SQZ_MOE_NONE (-1)

extern const char *const sqz_moe_codec_names[SQZ_MOE_NCODECS];

/** A communicator's MoE state (created at its first token all-to-all). */
typedef struct sqz_moe_comm {
    sqz_lsh_t *lsh;       /* the LSH codec for the last width used, or NULL */
    sqz_lsh_t *scratch;   /* grouping scratch of the de-duplication encoder */
    uint64_t   ncalls;    /* token all-to-alls seen by the interposer: position in SQZ_MOE_CYCLE */
    uint64_t  *sizes;     /* 2 * nranks: block sizes sent, received */
    size_t    *bytes;     /* 4 * nranks: send bytes, send displs, recv bytes, recv displs */
} sqz_moe_comm_t;

/** Frees comm->moe (sqz_comm_destroy). */
void sqz_moe_comm_free(sqz_comm_t *comm);

/** For the interposers: the codec the next token all-to-all of comm gets under SQZ_MOE (and
 *  SQZ_MOE_CYCLE), advancing the cycle; SQZ_MOE_NONE when it passes through.  Call it only for
 *  calls that are token traffic (same decision on every rank). */
int sqz_moe_next_codec(sqz_comm_t *comm);

/** Counts a float all-to-all that SQZ_MOE would have taken but that is not token traffic (a
 *  count not a multiple of SQZ_MOE_DIM, in place, ...): it passed through. */
void sqz_moe_count_passthrough(sqz_comm_t *comm);

/** Adds one coded token all-to-all (its tokens, rows, bytes, times) to ctx's row of `codec`
 *  (the CPU exchange and the GPU path of the NCCL interposer). */
void sqz_moe_stats_record(sqz_ctx_t *ctx, int codec, const sqz_moe_stats_t *cs);

/** Parses SQZ_MOE_CYCLE ("lsh,dedup,none") into codes.  \return the number of entries, or -1. */
int sqz_moe_parse_cycle(const char *s, signed char *codes, int cap);

#endif
