/* The real NCCL, resolved at run time: Squeeze never links NCCL.
 *
 * Under LD_PRELOAD our own ncclAllReduce shadows NCCL's in the global scope, and PyTorch loads
 * its NCCL privately (RTLD_LOCAL), so dlsym(RTLD_NEXT) finds nothing there.  The resolver asks
 * the loader for the NCCL library already in the process (dlopen(name, RTLD_NOLOAD)) and takes
 * each function from that handle (its own scope: never our interposed symbols), preferring the
 * pnccl* aliases that NCCL exports for profilers; failing that, RTLD_NEXT; finally, for the C
 * API path only, it loads the library.  A resolved pointer that lands inside libsqueeze itself is
 * rejected, so that an interposed function can never call itself. */
#ifndef SQZ_NCCL_H
#define SQZ_NCCL_H

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <squeeze.h>

typedef struct sqz_nccl_api {
    ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                              ncclComm_t, cudaStream_t);
    ncclResult_t (*ReduceScatter)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                                  ncclComm_t, cudaStream_t);
    ncclResult_t (*AllGather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t,
                              cudaStream_t);
    ncclResult_t (*Send)(const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*Recv)(void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    /* NULL before NCCL 2.28 */
    ncclResult_t (*AlltoAll)(const void *, void *, size_t, ncclDataType_t, ncclComm_t,
                             cudaStream_t);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*CommInitRankConfig)(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *);
    ncclResult_t (*CommInitAll)(ncclComm_t *, int, const int *);
    ncclResult_t (*CommSplit)(ncclComm_t, int, int, ncclComm_t *, ncclConfig_t *);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    ncclResult_t (*CommAbort)(ncclComm_t);
    ncclResult_t (*CommCount)(const ncclComm_t, int *);
    ncclResult_t (*CommUserRank)(const ncclComm_t, int *);
    ncclResult_t (*CommCuDevice)(const ncclComm_t, int *);
    ncclResult_t (*GetVersion)(int *);
    const char *(*GetErrorString)(ncclResult_t);
    int version; /* NCCL_VERSION_CODE of the library found */
} sqz_nccl_api_t;

/** \return the resolved NCCL (resolved once, thread-safe), or NULL when no NCCL library could be
 *  found (logged once).  `may_load`: when NCCL is not already in the process, load `library`
 *  (the C API path); the interposer passes 0 (NCCL must be the application's). */
const sqz_nccl_api_t *sqz_nccl_resolve(int may_load);

/** \return the text of an NCCL result (through the resolved library when possible). */
const char *sqz_nccl_error(ncclResult_t r);

/** Whether `ok` holds on every rank of the new communicator nc (collective: one one-word
 *  ncclAllReduce MIN on a private stream of nc's device, then a synchronization).  For what
 *  every rank must know before it uses nc: whether each could read its configuration.  \return 1
 *  (all ok), 0 (some rank not), -1 (the agreement itself failed). */
int sqz_nccl_agree_ok(const sqz_nccl_api_t *api, ncclComm_t nc, int ok);

#endif
