/* Error-feedback variants that change what the collective carries and what the caller gets back
 * (SQZ_EF=ef21, econtrol).  Classic EF (ef14) needs none of this: the compressor updates the
 * residual itself.
 *
 * Both keep estimators per buffer and send the compressed difference between the new gradient
 * and the estimator; the engine returns the shared estimator instead of the exact sum:
 *   EF21 (Richtarik et al. 2021):  m_i = x_i - g_i;  g_i += D(C(m_i));  G += sum_j D(C(m_j));
 *                                  return G.
 *   EControl (Gao et al. 2024):    m_i = eta e_i + x_i - h_i;  e_i += x_i - h_i - D(C(m_i));
 *                                  h_i += D(C(m_i));  return H + S;  H += S   (S = sum_j D(C(m_j))).
 * In sum form (an all-reduce returns sums): G and H estimate sum_i x_i and stay bit-identical on
 * every rank because they only ever add the collective's bit-identical output.
 * D(C(m_i)) comes from the compressor's error-feedback contract: compressing m_i with a zeroed
 * residual r leaves r = m_i - D(C(m_i)). */
#ifndef SQZ_EF_H
#define SQZ_EF_H

#include "sqz_ctx.h"

/** Whether mode changes the collective's input and output (ef21, econtrol). */
int sqz_ef_transforms(int mode);

/** Makes sure b's estimators exist (zeroed).  \return SQZ_OK or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_ef_reserve(sqz_state_store_t *s, sqz_buf_state_t *b, int mode);

/** Writes the message m (n floats) to send for input x, and zeroes r. */
void sqz_ef_message(int mode, double eta, const sqz_buf_state_t *b, const float *x, float *m,
                    float *r, size_t n);

/** After a successful compressed collective: `sum` holds S.  Updates the estimators from m and
 *  r (= m - D(C(m))) and writes the value returned to the caller into out (may alias sum: the
 *  input x is not needed, since x - h_i = m - eta e_i). */
void sqz_ef_commit(int mode, double eta, sqz_buf_state_t *b, const float *m, const float *r,
                   const float *sum, float *out, size_t n);

/** After a dense call (warm-up): the exact gradients initialize the estimators (EF21's g_i^0 =
 *  grad f_i(x^0)); non-finite values leave them as they are. */
void sqz_ef_dense(int mode, sqz_buf_state_t *b, const float *x, const float *sum, size_t n);

/** The estimators as before any warm-up (zero), where they are allocated: what every rank holds
 *  when some rank could not initialize its own. */
void sqz_ef_clear(sqz_buf_state_t *b, size_t n);

#endif
