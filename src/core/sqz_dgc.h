/* Deep Gradient Compression's corrections around the compressor (Lin et al., ICLR 2018;
 * ALGORITHMS.md section 1), applied by the engine to any compressor with classic error feedback:
 *
 *   local clipping   x <- x * min(1, (clip / sqrt(P)) / ||x||)         (SQZ_DGC_CLIP > 0)
 *   momentum corr.   u <- m u + x;  the compressor sends from v + u     (SQZ_DGC_MOMENTUM > 0)
 *                    (Nesterov: u <- m (u + x), sends from v + u + x)
 *   factor masking   u[i] <- 0 where the compressor sent everything of v[i] (its residual became
 *                    exactly 0: the entries a sparsifier kept)       (SQZ_DGC_MASKING)
 *
 * v is the error-feedback residual the compressor already keeps.  Momentum correction only works
 * when the job's optimizer applies no momentum of its own (the shim cannot see the optimizer):
 * set the optimizer's momentum to 0 when SQZ_DGC_MOMENTUM is on.  The sparsity warm-up of DGC is
 * the top-k compressor's own schedule (SQZ_TOPK_WARMUP_STEPS). */
#ifndef SQZ_DGC_H
#define SQZ_DGC_H

#include "sqz_ctx.h"

/** Whether the DGC corrections are on (momentum or clipping). */
int sqz_dgc_active(const sqz_core_params_t *p);

/** The scratch floats sqz_dgc_input needs for n elements: msg, and the new momentum apart from
 *  it under Nesterov (else the new momentum is msg itself). */
size_t sqz_dgc_scratch(const sqz_core_params_t *p, size_t n);

/** Writes the vector the compressor must see into scratch[0, n) (the message) and the new
 *  momentum into *unew (scratch + n under Nesterov, else the message itself), from b's momentum
 *  (allocated here), which stays as it was until sqz_dgc_commit: a call that goes dense (a NaN
 *  or Inf on some rank) leaves it untouched, as it leaves the residual.
 *  \return SQZ_OK or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_dgc_input(const sqz_core_params_t *p, int nranks, sqz_state_store_t *s,
                           sqz_buf_state_t *b, const float *x, float *scratch, const float **unew,
                           size_t n);

/** After a successful compressed call: the momentum becomes unew, with factor masking from the
 *  new residual v (0 where v is 0). */
void sqz_dgc_commit(const sqz_core_params_t *p, sqz_buf_state_t *b, const float *unew,
                    const float *v, size_t n);

#endif
