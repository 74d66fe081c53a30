/* The hierarchical all-reduce over two transports (sqz_comm_create_hier; the MPI interposer's
 * SQZ_HIER on hosts of the same number of ranks).
 *
 * The communicator is the engine over `inter` (the ranks with this rank's local index, one per
 * host); it holds the transport over `local` (this host's L ranks).  An all-reduce of count
 * elements:
 *   1. a dense reduce-scatter over local (an all-to-all of the other ranks' pieces of each
 *      rank's shard, then each rank sums its own piece and then theirs in local-rank order, in
 *      cache-sized blocks): shard i has count / L elements, one more for i < count % L;
 *   2. the shard's SUM all-reduce over inter by the engine (compressed, or dense when the call is
 *      not eligible), after one float all-reduce over local that tells every rank of the host
 *      whether some shard holds NaN or Inf: then every exchange of the call goes dense (fallback
 *      frames make the peers on the other hosts go dense too), so the call is the exact dense
 *      sum and every residual stays for the next call, as on a flat communicator;
 *   3. AVG: the shard scaled by 1 / (L x hosts);
 *   4. a dense all-gather over local.
 * Every exchange over inter ends bit-identical on its ranks and the all-gather copies bits, so
 * every rank ends bit-identical.  Step 4 runs even when step 2 failed, so no rank of the host is
 * left waiting.  A rank without memory for the scratch (agreed when it grows) makes its host
 * take steps 1 and 4 as dense all-reduces inside the host instead.  Bytes between hosts: each
 * rank sends its exchange's share for 1/L of the buffer, and the host's L exchanges share its
 * link (the cost model's link_share). */
#ifndef SQZ_COLL_HIER_H
#define SQZ_COLL_HIER_H

#include "sqz_ctx.h"

typedef struct sqz_hier sqz_hier_t;

/** Attaches the hierarchy over `local` to comm (the engine over inter).  \return SQZ_OK,
 *  SQZ_ERR_INVALID_PARAM (an unusable transport) or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_hier_attach(sqz_comm_t *comm, const sqz_transport_t *local);

/** Frees comm's hierarchy (sqz_comm_destroy; accepts NULL). */
void sqz_hier_free(sqz_hier_t *h);

/** The hierarchical all-reduce of count floats (in may equal out; op SUM or AVG).  Collective over
 *  every rank of local and inter. */
sqz_status_t sqz_hier_allreduce(sqz_comm_t *comm, const float *in, float *out, size_t count,
                                sqz_op_t op, uint64_t key);

/** The hierarchical reduce-scatter of P = hosts x L blocks of c floats: block b of in belongs to
 *  the rank of host b / L (its rank in inter) and local rank b % L, whose out (c floats; may be
 *  the start of in) gets the SUM (or AVG) of every rank's block b.  Steps: for each host's row
 *  of L blocks, the dense reduce-scatter of step 1 gives this rank the host's sum of its block of
 *  the row: a column of one block per host; then one float all-reduce over local (a NaN or Inf
 *  anywhere in the host's columns makes the exchange dense, as for the all-reduce); then the
 *  engine's compressed reduce-scatter of the column over inter, named by out.  Bytes between
 *  hosts: each rank's exchange for H blocks, (H - 1) / H of its compressed column.  When some
 *  rank has no memory for the scratch (agreed by every rank before any data moves), every rank
 *  returns SQZ_ERR_NOT_SUPPORTED and the caller runs its dense reduce-scatter, as for a call
 *  that is not eligible.  Collective over every rank of local and inter. */
sqz_status_t sqz_hier_reduce_scatter_block(sqz_comm_t *comm, const float *in, float *out,
                                           size_t c, sqz_op_t op, uint64_t key);

/** The predicted seconds of the dense stages inside the host of an all-reduce of count floats on
 *  comm (the reduce-scatter's all-to-all and the all-gather, each moving (L-1)/L of the buffer
 *  per rank at SQZ_INTRA_GBPS, or as timed once with SQZ_INTRA_GBPS=0; the exchange between
 *  hosts is the engine's own prediction). */
double sqz_hier_intra_seconds(const sqz_comm_t *comm, size_t count);

/** Tests: when set, called as each rank's scratch grows (host: the rank in inter, local_rank: in
 *  local); nonzero makes that allocation fail (the no-memory path of steps 1 and 4). */
extern int (*sqz_hier_alloc_fails)(int host, int local_rank);

#endif
