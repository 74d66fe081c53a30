/* Where the classic error-feedback residual lives (SQZ_EF_STORAGE).  fp32 keeps it as the
 * compressor updates it.  bf16 (half the memory) and int8 (a quarter, plus one float scale per
 * 256 elements) keep it compact between calls: it is expanded into a scratch vector for the call
 * and compacted again after it.  The rounding of the compact forms is lost from the residual:
 * an approximation of error feedback, traded for memory. */
#ifndef SQZ_RESIDUAL_H
#define SQZ_RESIDUAL_H

#include "sqz_ctx.h"

typedef enum { SQZ_EF_STORAGE_FP32 = 0, SQZ_EF_STORAGE_BF16 = 1, SQZ_EF_STORAGE_INT8 = 2 } sqz_ef_storage_t;

/** Sets *res to the working fp32 residual of b for this call (creating the storage, zeroed).
 *  \return SQZ_OK or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_residual_open(sqz_comm_t *comm, sqz_buf_state_t *b, int storage, float **res);

/** Stores the working residual back into b's compact storage (nothing to do for fp32). */
void sqz_residual_close(sqz_buf_state_t *b, int storage, const float *res);

#endif
