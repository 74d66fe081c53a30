/* The runner (see sqz_runner.h). */
#include "config.h"

#include "sqz_log.h"
#include "sqz_runner.h"

sqz_status_t sqz_run_call(const sqz_comm_t *comm, const sqz_run_backend_t *be, void *call,
                          sqz_plan_t *plan, int opt)
{
    sqz_buf_state_t *bs  = NULL;
    uint64_t         seq = 0;
    SQZ_CHECK(be->state(call, plan, &bs, &seq));
    if (NULL == bs) {
        return be->dense(call, plan, SQZ_RUN_NO_STATE);
    }
    sqz_policy_plan_warm(comm, plan, seq, opt);
    const int path = be->path(call, plan);
    if (SQZ_RUN_COMPRESS != path) {
        return be->dense(call, plan, path);
    }
    const sqz_status_t st = be->open(call, plan);
    if (SQZ_ERR_NO_MEMORY == st) {
        return be->dense(call, plan, SQZ_RUN_NO_STATE);
    }
    if (SQZ_OK != st) {
        return st;
    }
    return be->close(call, plan, be->exchange(call, plan));
}
