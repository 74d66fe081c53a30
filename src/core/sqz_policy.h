/* The policy of both engines: which exchange carries a compressed call (host buffers:
 * sqz_policy_choose; device buffers: sqz_policy_choose_device, from the facts the device engine
 * measures), and the communicator facts the cost model needs (src/core/sqz_cost.h).
 *
 * SQZ_EXCHANGE_MODEL=bytes (default): the exchange that sends the fewest bytes - the choice on a
 * slow network, where compute is free - and, for the all-gather family, the dense all-reduce
 * when even that exchange would send more than SQZ_SPARSE_DENSE_SWITCH times a dense ring.
 * SQZ_EXCHANGE_MODEL=time: every candidate's predicted seconds, dense all-reduce included; the
 * fastest runs (dense when a compressed exchange would take more than SQZ_SPARSE_DENSE_SWITCH
 * times as long).  The prediction goes into the call's stats (host buffers: a device call is
 * enqueued, its time not seen).
 *
 * sqz_policy_plan gathers every decision of a call (error feedback, DGC, damping, exchange) into
 * one sqz_plan_t that both engines run.
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

/** What the device engine knows of a compressed call of device buffers (facts every rank shares:
 *  the sizes, the method, the rank count). */
typedef struct sqz_device_call {
    size_t bytes;    /* the call's input bytes (elements x element size) */
    int    rs;       /* a reduce-scatter */
    int    sra_ok;   /* the scatter-reduce exchange can carry it: every chunk holds elements and
                        the method is not powersgd (sqz_policy_plan adds: nor does ef21 or
                        econtrol run the call, whose shared estimator needs every rank's
                        message) */
    double sra_sent; /* bytes a rank sends through the scatter-reduce exchange */
    double ag_sent;  /* through the all-gather of the whole buffer's payloads */
} sqz_device_call_t;

/** The exchange of a compressed call of device buffers: SQZ_ALGO_REDUCE_SCATTER, or
 *  SQZ_ALGO_NCCL_ALLGATHER, or SQZ_ALGO_DENSE_SWITCH (with its predicted seconds under
 *  SQZ_EXCHANGE_MODEL=time).
 *  - the scatter-reduce exchange when it can carry the call, for a reduce-scatter with every
 *    method (its first phase alone), for an all-reduce with the methods whose payloads summarize
 *    contiguous elements (SQZ_EXCHANGE_REDUCE_SCATTER) from 3 ranks (at 2 both move one payload,
 *    and the all-gather takes one round and no re-compression);
 *  - else the all-gather (a top-k all-reduce: sparse payloads are not re-compressed);
 *  - then, as the host's model does for its sparse all-gather, dense when the bytes a rank would
 *    send exceed SQZ_SPARSE_DENSE_SWITCH times the dense collective's (a ring all-reduce sends
 *    2(N-1)/N of the input, a reduce-scatter (N-1)/N), or, under SQZ_EXCHANGE_MODEL=time, when
 *    the compressed exchange is predicted that many times slower (kernel rates SQZ_KERNEL_GBPS,
 *    or 1000 GB/s when it is 0: the order of the device kernels' rates; nothing is measured on
 *    the device, so every rank predicts the same). */
sqz_choice_t sqz_policy_choose_device(const sqz_comm_t *comm, const sqz_device_call_t *f);

/** The bytes a rank sends in a dense ring all-reduce (reduce-scatter: rs) of `bytes`. */
double sqz_policy_dense_bytes(const sqz_comm_t *comm, double bytes, int rs);

/** Whether a call is compressed at all, on host or device buffers (memory SQZ_MEMORY_*): SUM or
 *  AVG of elements its engine compresses (host: float32; device: float32, float16, bfloat16),
 *  count > 0 and at least SQZ_MIN_BYTES unless it is the optimizer's collective (opt), and taken
 *  by the method's query (rs: a reduce-scatter).  From facts every rank shares.  (Each engine
 *  adds what only it knows: the device engine, CUDA graph capture and its codec's sizes.) */
int sqz_policy_eligible(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype, sqz_op_t op,
                        int memory, int rs, int opt);

/** Whether a call of a buffer that has made `calls` calls before is a dense warm-up call
 *  (SQZ_WARMUP_STEPS; never the optimizer's collective, opt). */
int sqz_policy_warm(const sqz_comm_t *comm, uint64_t calls, int opt);

/** The error feedback of one call (sqz_ef_mode_t), on host and device buffers alike: the
 *  context's (SQZ_EF resolved), except that the optimizer-side collective (opt) always keeps
 *  classic error feedback, that ef21/econtrol transform all-reduces only (a reduce-scatter, rs,
 *  keeps classic error feedback), and that under SQZ_EF=auto a summable method (powersgd) runs
 *  pseudo-layers without it (buffer (key, n) without a known layout: its rank-r approximations
 *  keep about r / min(rows, cols) of a matrix with no low-rank structure; classic error
 *  feedback then diverges, the plain projection of the summed gradient converges;
 *  docs/methods.md). */
int sqz_policy_ef(const sqz_comm_t *comm, int rs, int opt, uint64_t key, size_t n);

/** A call as the policy sees it: facts every rank shares. */
typedef struct sqz_call_facts {
    size_t                   count;  /* the input's elements (a reduce-scatter's: ranks x block) */
    size_t                   block;  /* a reduce-scatter's elements per rank; 0: an all-reduce */
    sqz_dtype_t              dtype;
    sqz_op_t                 op;
    int                      memory; /* SQZ_MEMORY_HOST or SQZ_MEMORY_DEVICE */
    int                      opt;    /* the optimizer-side collective (sqz_ef_allreduce) */
    uint64_t                 key;    /* the caller's key; 0: an intercepted call */
    const sqz_device_call_t *device; /* device buffers: what the device codec says of the sizes
                                        (sra_ok, bytes sent); NULL for host buffers */
} sqz_call_facts_t;

/** What a compressed call does: the plan both engines run. */
typedef struct sqz_plan {
    int    ef;        /* sqz_ef_mode_t: sqz_policy_ef */
    int    transform; /* ef21 / econtrol: the compressor sees a message, not the gradient */
    int    dgc;       /* DGC's momentum correction, masking and clipping around classic error
                         feedback (SQZ_DGC_MOMENTUM or SQZ_DGC_CLIP; not the optimizer's) */
    int    damp;      /* classic error feedback damped by SQZ_EF_DECAY < 1: after a compressed
                         call, the worker and server residuals keep decay of themselves */
    int    algo;      /* sqz_algo_t: the exchange, SQZ_ALGO_SUMMABLE for a summable method */
    double predicted; /* SQZ_EXCHANGE_MODEL=time: the exchange's predicted seconds; else 0 */
    int    warm;      /* a dense warm-up call (sqz_policy_plan_warm, once the buffer's count of
                         calls is known) */
} sqz_plan_t;

/** The plan of a call that sqz_policy_admit admitted: its error feedback, DGC, damping and
 *  exchange, from facts every rank shares, so every rank runs the same plan.  Called after the
 *  communicator's one-time collective steps of a compressed call (host buffers: the settings
 *  check and sqz_policy_calibrate, the time model's rates; the device engine checks settings at
 *  its creation and measures nothing), before the call's state is looked up (so that a call the
 *  plan sends dense allocates nothing); the warm-up is sqz_policy_plan_warm's, after the lookup.
 *  Pure: it changes nothing. */
sqz_plan_t sqz_policy_plan(const sqz_comm_t *comm, const sqz_call_facts_t *f);

/** Whether a call is compressed at all: sqz_policy_eligible of the facts (a reduce-scatter:
 *  f->block != 0).  Before anything else of the call: an ineligible call touches no state. */
int sqz_policy_admit(const sqz_comm_t *comm, const sqz_call_facts_t *f);

/** Marks plan->warm for a call of a buffer with `calls` calls before it (sqz_policy_warm). */
void sqz_policy_plan_warm(const sqz_comm_t *comm, sqz_plan_t *plan, uint64_t calls, int opt);

/** The network the cost model assumes for comm: its topology, and the settings or what
 *  sqz_policy_calibrate measured. */
sqz_cost_net_t sqz_policy_net(const sqz_comm_t *comm);

/** The predicted seconds of a dense ring all-reduce of n floats on comm (time model). */
double sqz_policy_dense_seconds(const sqz_comm_t *comm, size_t n);

#endif
