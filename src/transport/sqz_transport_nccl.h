/* A host-memory transport over an NCCL communicator (sqz_transport_t): for the engine's control
 * path (the settings check) and for host buffers given to sqz_allreduce on an NCCL communicator.
 * Every call stages through device memory on a private stream and synchronizes it: correct and
 * simple, not fast.  Device buffers take the stream-ordered GPU path instead (sqz_gpu_engine). */
#ifndef SQZ_TRANSPORT_NCCL_H
#define SQZ_TRANSPORT_NCCL_H

#include "transport/sqz_nccl.h"

typedef struct sqz_nccl_transport sqz_nccl_transport_t;

/** Creates the transport over `comm` (on the communicator's device) and fills *t.
 *  \return SQZ_OK, SQZ_ERR_NCCL or SQZ_ERR_CUDA. */
sqz_status_t sqz_nccl_transport_create(const sqz_nccl_api_t *api, ncclComm_t comm,
                                       sqz_transport_t *t, sqz_nccl_transport_t **out);
void         sqz_nccl_transport_destroy(sqz_nccl_transport_t *nt);

#endif
