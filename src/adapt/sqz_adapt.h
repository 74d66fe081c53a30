/* Layer-adaptive compression (SQZ_ADAPT=lgreco): the engine's side of L-GreCo.
 *
 * Every SQZ_ADAPT_PERIOD compressed calls of a buffer (and at its first compressed call) the call
 * probes: the compressor measures, for every layer and every candidate level, this rank's squared
 * error ||a_l - C_level(a_l)||^2 (sqz_reduce_args_v1_t.probe_*).  The engine sums those errors
 * over the ranks with one small all-reduce, so every rank holds the same numbers, and solves
 * L-GreCo's dynamic program (sqz_lgreco.h): the fewest wire bytes subject to a total error at
 * most that of the uniform setting (every layer at the compressor's configured level) measured
 * in the same call.  Identical inputs and a deterministic solver: every rank applies the same
 * choice, from the next call on.  The latest choice per buffer size is in the stats JSON
 * ("adapt") and readable through the binding (sqz_stats_json). */
#ifndef SQZ_ADAPT_H
#define SQZ_ADAPT_H

#include <stdio.h>

#include "core/sqz_ctx.h"

/** The latest choice for the buffers of one size (stats). */
typedef struct sqz_adapt_record {
    size_t   count;         /* buffer elements */
    uint64_t solves;
    double   budget;        /* the uniform setting's error (sum over ranks), at the last solve */
    double   error;         /* the chosen levels' error in the same call */
    double   bytes;         /* this rank's wire bytes per call with the choice */
    double   bytes_uniform; /* ... with the uniform setting */
    size_t   nlevels;
    int     *levels;        /* per layer */
} sqz_adapt_record_t;

/** A probing call's inputs and outputs (scratch owned by the caller, see sqz_adapt_begin). */
typedef struct sqz_adapt_probe {
    int     cand[16];       /* candidate levels, ascending */
    size_t  ncand;
    int     uniform;        /* the configured level */
    double *err;            /* nlayers * ncand */
    double *norm;           /* nlayers */
    double *bytes;          /* nlayers * ncand, or NULL: the method's level_bytes() */
} sqz_adapt_probe_t;

/** The candidate levels of ctx's method (ascending, the configured level among them) and the
 *  configured (uniform) level, into pr. */
void sqz_adapt_candidates(const sqz_ctx_t *ctx, sqz_adapt_probe_t *pr);

/** Whether call `seq` of a buffer whose choice is lv probes (SQZ_ADAPT on and its period
 *  reached).  Fills pr's candidates and points err/norm/bytes into comm scratch for nlayers
 *  layers (zeroed; bytes NULL: the caller may point it at its own).  \return 1 to probe, 0 not,
 *  or a negative sqz_status_t. */
int sqz_adapt_begin(sqz_comm_t *comm, sqz_levels_t *lv, uint64_t seq, size_t nlayers,
                    sqz_adapt_probe_t *pr);

/** After probing call `seq` of a buffer of `count` elements succeeded on every rank: sums the
 *  errors over the ranks (comm's transport), solves and stores the choice in lv (and the stats
 *  record).  Collective.  \return SQZ_OK, or SQZ_ERR_TRANSPORT. */
sqz_status_t sqz_adapt_end(sqz_comm_t *comm, sqz_levels_t *lv, uint64_t seq, size_t count,
                           const sqz_layer_t *layers, size_t nlayers, sqz_adapt_probe_t *pr);

/** Writes `"adapt": [...]` (the records) into an open JSON object, with a leading comma. */
void sqz_adapt_write_json(const sqz_ctx_t *ctx, FILE *f);

void sqz_adapt_records_free(sqz_ctx_t *ctx);

#endif
