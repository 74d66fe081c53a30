/* The device thread transport: N ranks as threads of one process on one GPU.
 *
 * It implements the NCCL entry points the GPU engine calls (sqz_nccl_api_t) with device copies
 * between the ranks' streams, so that the engine, unchanged, runs N ranks on one device: the
 * collective tier of tests/cuda, and simulations of N workers on one GPU.  NCCL itself refuses two
 * ranks on one device; this transport needs no NCCL library at all.
 *
 * Contract, the one NCCL gives and the engine relies on: an operation is enqueued on the caller's
 * stream and returns; its effects are ordered after that stream's earlier work and before its
 * later work, on every rank it involves.  Here a call blocks its thread until the peers it
 * exchanges with have posted their side (the rendezvous NCCL makes on the device), then returns
 * with everything enqueued.  Every rank of the group must make the same collective calls, from its
 * own thread, as with NCCL.  Reductions add the N ranks' contributions in rank order: every rank
 * gets the same bits.
 */
#ifndef SQZ_DEVICE_GROUP_H
#define SQZ_DEVICE_GROUP_H

#include "transport/sqz_nccl.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The NCCL entry points of the device thread transport (every field set).  CommSplit makes the
 *  new groups (freed with the group split); CommInit* and GetUniqueId answer ncclInvalidUsage:
 *  communicators come from a group. */
extern const sqz_nccl_api_t sqz_device_group_nccl;

/** Rank `rank`'s communicator handle of group g, as an ncclComm_t of sqz_device_group_nccl. */
ncclComm_t sqz_device_group_handle(sqz_device_group_t *g, int rank);

/** Sums (or min, max, product, average) the nslots blocks of count elements at slots, block after
 *  block in rank order, into out, on stream s (src/transport/sqz_device_group_reduce.cu).  Half
 *  types accumulate in float and round once.  \return 0, or -1 for a type or operation it does not
 *  know or a launch that failed. */
int sqz_device_group_reduce(const void *slots, int nslots, size_t count, ncclDataType_t dtype,
                            ncclRedOp_t op, void *out, cudaStream_t s);

/** Bytes of one element of dtype (0 for an unknown type). */
size_t sqz_device_group_type_size(ncclDataType_t dtype);

#ifdef __cplusplus
}
#endif

#endif
