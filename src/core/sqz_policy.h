/* The host engine's policy: which exchange carries a compressed call, and the communicator facts
 * the cost model needs (src/core/sqz_cost.h).
 *
 * SQZ_EXCHANGE_MODEL=bytes (default): the exchange that sends the fewest bytes - the choice on a
 * slow network, where compute is free - and, for the all-gather family, the dense all-reduce
 * when even that exchange would send more than SQZ_SPARSE_DENSE_SWITCH times a dense ring.
 * SQZ_EXCHANGE_MODEL=time: every candidate's predicted seconds, dense all-reduce included; the
 * fastest runs (dense when a compressed exchange would take more than SQZ_SPARSE_DENSE_SWITCH
 * times as long).  The prediction goes into the call's stats.
 *
 * Every input of a choice is the same on every rank (settings, sizes, the rates agreed by
 * sqz_policy_calibrate), so every rank takes the same exchange. */
#ifndef SQZ_POLICY_H
#define SQZ_POLICY_H

#include "sqz_cost.h"
#include "sqz_ctx.h"

typedef struct sqz_choice {
    int    algo;      /* sqz_algo_t; SQZ_ALGO_SUMMABLE for the summable exchange */
    double predicted; /* SQZ_EXCHANGE_MODEL=time: the chosen exchange's seconds; else 0 */
} sqz_choice_t;

/** Under SQZ_EXCHANGE_MODEL=time, once per communicator, at its first compressed call (so every
 *  rank calls it at the same point; sqz_calibrate.c): the kernel rates (SQZ_KERNEL_GBPS, or
 *  measured and agreed) and, under SQZ_LINK_GBPS=0, the link's.  A no-op otherwise.
 *  \return SQZ_OK, or SQZ_ERR_TRANSPORT when the all-gather failed. */
sqz_status_t sqz_policy_calibrate(sqz_comm_t *comm);

/** The exchange of a compressed call of n elements (block: a reduce-scatter's elements per rank;
 *  0 for an all-reduce). */
sqz_choice_t sqz_policy_choose(const sqz_comm_t *comm, size_t n, size_t block);

/** The network the cost model assumes for comm: its topology, and the settings or what
 *  sqz_policy_calibrate measured. */
sqz_cost_net_t sqz_policy_net(const sqz_comm_t *comm);

/** The predicted seconds of a dense ring all-reduce of n floats on comm (time model). */
double sqz_policy_dense_seconds(const sqz_comm_t *comm, size_t n);

#endif
