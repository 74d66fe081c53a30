/* Layer-adaptive selection for the payload compressors (SQZ_ADAPT with an all-gather method such
 * as topk): a buffer is cut into segments (its layers, and the gaps between them), each compressed
 * by a state of the method created with the segment's level written into its configuration (for
 * topk, TOPK_DENSITY = level / level_scale), into one composite payload that every rank decodes.
 * The composite is itself a compressor (sqz_seg_compressor), so the exchanges of src/coll carry
 * it unchanged.  The power-law methods with their own exchange (powersgd) take levels directly
 * (sqz_reduce_args_v1_t); this file is for the others.
 *
 * Composite payload (little-endian): u32 magic "SQSG", u32 nseg, nseg x {u32 candidate index,
 * u32 elements, u32 bytes}, then each segment's payload at the next multiple of 8 bytes.  The
 * segments cover [0, n) in order.  The decoder validates every header and every segment (the
 * method's own decoder with a NULL output) before it writes anything. */
#ifndef SQZ_ADAPT_SEG_H
#define SQZ_ADAPT_SEG_H

#include "adapt/sqz_adapt.h"

typedef struct sqz_seg sqz_seg_t;

/** The composite compressor; its state is a sqz_seg_t. */
extern const sqz_compressor_v1_t sqz_seg_compressor;

/** Whether ctx's method can be adapted segment by segment: an all-gather exchange, levels and a
 *  level parameter (INT, or DOUBLE with level_scale). */
int sqz_seg_supported(const sqz_ctx_t *ctx);

/** Creates the composite for ctx's method: one state of the method per candidate level. */
sqz_status_t sqz_seg_create(const sqz_ctx_t *ctx, const sqz_compressor_env_v1_t *env,
                            sqz_seg_t **out);
void         sqz_seg_destroy(sqz_seg_t *s);

/** Sets the segments of the next calls: the layers at their levels (NULL: every layer at the
 *  uniform level), the gaps at the uniform level.  A level not among the candidates falls back to
 *  the uniform one. */
sqz_status_t sqz_seg_plan(sqz_seg_t *s, const sqz_layer_t *layers, size_t nlayers, size_t n,
                          const int *levels);

/** A probe: for every layer and candidate, this rank's squared error of compressing a = in +
 *  residual (residual may be NULL) with that candidate, into pr->err, and the payload bytes into
 *  pr->bytes (nlayers x pr->ncand, both). */
sqz_status_t sqz_seg_probe(sqz_seg_t *s, const float *in, const float *residual,
                           const sqz_layer_t *layers, size_t nlayers, uint64_t seq,
                           sqz_adapt_probe_t *pr);

#endif
