/* The runner: the one sequence every compressed call goes through, host or device buffers.
 *
 * The policy (sqz_policy.h) decides a call from facts every rank shares and returns a plan; the
 * runner executes it, in the same steps for every memory, and a memory backend does each step's
 * work on its own call object (host buffers: sqz_engine.c; device buffers:
 * src/cuda/sqz_gpu_engine.c):
 *
 *   1. state     the buffer's state from the communicator's store (sqz_call_state: by key or
 *                call sequence, the backend's memory attached at the same call on every rank)
 *                and its call counter.  No state (no memory on some rank): the dense path,
 *                SQZ_RUN_NO_STATE, on which the ranks stay in step.
 *   2. warm-up   sqz_policy_plan_warm, from the counter.
 *   3. path      the backend's verdict, the same on every rank: compressed, or a dense path
 *                (the warm-up; a state that must go dense: a hierarchy's shard that another shard
 *                poisoned, a device buffer some rank could not allocate or of another kind).
 *   4. open      error feedback's inputs: what the compressor sees (DGC's message, EF21's
 *                difference) and the residual.  SQZ_ERR_NO_MEMORY (this rank alone): the
 *                SQZ_RUN_NO_STATE dense path; any other failure is the call's.
 *   5. exchange  the plan's algorithm.
 *   6. close     given the exchange's status: error feedback closes (DGC's commit, damping, a
 *                restore on a fallback), the output is finished (estimators, AVG) and counted,
 *                or the agreed fallback runs.  Its status is the call's.
 */
#ifndef SQZ_RUNNER_H
#define SQZ_RUNNER_H

#include "sqz_ctx.h"
#include "sqz_policy.h"

/** Step 3's verdicts (dense paths are also counted as such in the stats, by the backend). */
typedef enum {
    SQZ_RUN_COMPRESS = 0,   /* the compressed exchange */
    SQZ_RUN_WARMUP   = 'w', /* a warm-up call */
    SQZ_RUN_FALLBACK = 'f', /* the state says dense, on every rank */
    SQZ_RUN_NO_STATE = 'n'  /* no state on some rank (no memory): dense, the ranks in step */
} sqz_run_path_t;

/** A memory backend's work for each step, on its own call object. */
typedef struct sqz_run_backend {
    sqz_status_t (*state)(void *call, const sqz_plan_t *plan, sqz_buf_state_t **bs,
                          uint64_t *seq);
    int (*path)(void *call, const sqz_plan_t *plan); /* sqz_run_path_t */
    sqz_status_t (*dense)(void *call, const sqz_plan_t *plan, int path);
    sqz_status_t (*open)(void *call, const sqz_plan_t *plan);
    sqz_status_t (*exchange)(void *call, const sqz_plan_t *plan);
    sqz_status_t (*close)(void *call, const sqz_plan_t *plan, sqz_status_t st);
} sqz_run_backend_t;

/** Runs a compressed call's plan (plan->warm is set here) through backend be.  opt: the
 *  optimizer-side collective (no warm-up).  \return the call's status. */
sqz_status_t sqz_run_call(const sqz_comm_t *comm, const sqz_run_backend_t *be, void *call,
                          sqz_plan_t *plan, int opt);

#endif
