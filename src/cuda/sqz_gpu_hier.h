/* Hierarchy on the GPU path (SQZ_HIER): compression where the network is slow.
 *
 * Ranks are grouped by host (SQZ_HOST_ID, else the hostname).  With H > 1 hosts of L > 1 ranks
 * each (the same L everywhere), an all-reduce of count elements runs as
 *   1. a dense ncclReduceScatter inside the host (NVLink): local rank l gets shard l, the sum over
 *      the host of elements [l * s, (l + 1) * s) with s = count / L, in place in the output;
 *   2. the compressed all-reduce of that shard among the H ranks with local index l on the hosts
 *      (an engine of its own over their communicator: its exchanges, residuals and stats), so
 *      every GPU drives its share of the host's network traffic;
 *   3. a dense ncclAllGather of the shards inside the host, in place;
 *   4. the count % L trailing elements, if any: a dense ncclAllReduce over all ranks.
 * Every rank of a host gets the same bytes from the all-gather, and the ranks with one local
 * index decode the same payloads: outputs are bit-identical everywhere.
 * The communicators of steps 1-3 are made once (ncclCommSplit, collective) with the
 * communicator, and freed with it.
 *
 * A reduce-scatter (recvcount per rank), where the ranks are host-major (rank = host x L + local
 * rank, as torchrun and mpirun place them), runs as
 *   1. one dense ncclReduceScatter inside the host per host row of L blocks (H calls): local
 *      rank l gets the host's sum of block h' L + l for every host h', a column of H blocks;
 *   2. the compressed reduce-scatter of that column among the H ranks with local index l: each
 *      gets its own block.  Only the column crosses the network, compressed; nothing is gathered.
 * The column's device scratch grows at a call every rank makes, with the ranks' agreement (one
 * rank out of memory: that call goes dense on all).  PowerSGD stays flat.
 */
#ifndef SQZ_GPU_HIER_H
#define SQZ_GPU_HIER_H

#include <cuda_runtime_api.h>

#include "sqz_ctx.h"
#include "sqz_state_io.h"
#include "transport/sqz_nccl.h"

typedef struct sqz_gpu_hier sqz_gpu_hier_t;

/** Collective over comm (a GPU communicator over nc, settings checked): reads every rank's host,
 *  and when SQZ_HIER and the grouping allow it, splits nc and creates the inter-host engine.
 *  \return SQZ_OK with *out NULL (flat) or the hierarchy; an error when a split or the engine
 *  could not be made (on every rank: each step is collective). */
sqz_status_t sqz_gpu_hier_create(sqz_comm_t *comm, const sqz_nccl_api_t *api, ncclComm_t nc,
                                 sqz_gpu_hier_t **out);

/** Frees the inter-host engine and the split communicators (NULL: no-op); `abandon`: after an
 *  abort, host memory only, and the split communicators aborted. */
void sqz_gpu_hier_free(sqz_gpu_hier_t *h, int abandon);

/** Checkpoints: the inter-host engine's state appended to w, and a checkpoint given to it. */
sqz_status_t sqz_gpu_hier_state_save(sqz_gpu_hier_t *h, sqz_wbuf_t *w);
sqz_status_t sqz_gpu_hier_state_load(sqz_gpu_hier_t *h, const void *buf, size_t len);

/** Enqueues one hierarchical all-reduce on s (the communicator's device current).  in may be
 *  out (in place).  \return SQZ_OK, SQZ_ERR_NCCL, or the inter-host engine's error. */
sqz_status_t sqz_gpu_hier_allreduce(sqz_gpu_hier_t *h, const void *in, void *out, size_t count,
                                    sqz_dtype_t dtype, sqz_op_t op, uint64_t key, cudaStream_t s);

/** Device bytes of the reduce-scatter's column scratch (NULL: 0); the inter-host engine counts
 *  its own buffers. */
size_t sqz_gpu_hier_scratch_bytes(const sqz_gpu_hier_t *h);

/** 1 when reduce-scatters can be hierarchical (the ranks are host-major). */
int sqz_gpu_hier_takes_reduce_scatter(const sqz_gpu_hier_t *h);

/** Enqueues one hierarchical reduce-scatter on s: rank r's recvcount elements of the reduction
 *  of in (nranks x recvcount) land in out.  comm: the whole communicator (the scratch's
 *  agreement).  \return SQZ_OK; SQZ_ERR_NOT_SUPPORTED on every rank when some rank had no
 *  memory for the scratch (the caller runs the dense reduce-scatter); SQZ_ERR_NCCL; or the
 *  inter-host engine's error. */
sqz_status_t sqz_gpu_hier_reduce_scatter(sqz_gpu_hier_t *h, sqz_comm_t *comm, const void *in,
                                         void *out, size_t recvcount, sqz_dtype_t dtype,
                                         sqz_op_t op, uint64_t key, cudaStream_t s);

#endif
