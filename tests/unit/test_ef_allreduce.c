/* The optimizer-side collective (sqz_ef_allreduce, sqz_ef_forget), N ranks in threads:
 *  - every rank ends with the same bits;
 *  - it keeps error feedback whatever SQZ_EF, SQZ_WARMUP_STEPS and SQZ_MIN_BYTES say: the sum of
 *    its outputs over many calls stays within a bounded distance of the sum of the exact averages
 *    (without error feedback the distance grows with the number of calls);
 *  - sqz_ef_forget(key) makes the next call what a fresh communicator gives;
 *  - a NaN on one rank gives the dense result and leaves the residuals as they were;
 *  - its state survives sqz_state_save / sqz_state_load;
 *  - bad arguments are refused with a status and change nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_log.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"

#define P     4
#define N     5000
#define KEY   0x5157ull
#define STEPS 60

/* Each rank's input of one step: a shared trend plus rank noise (a momentum-like signal). */
static void fill(float *x, int rank, int step)
{
    for (size_t i = 0; i < N; i++) {
        const uint64_t h = ((uint64_t)rank * 0x9e3779b97f4a7c15ull) ^ (i * 0xbf58476d1ce4e5b9ull) ^
                           ((uint64_t)step << 40);
        const double   u = (double)(((h ^ (h >> 29)) * 0x94d049bb133111ebull) >> 11) * 0x1p-53;
        x[i] = (float)(0.3 * sin(0.001 * (double)i + 0.05 * step) + (u - 0.5));
    }
}

typedef struct job {
    const char *const  *kv;
    sqz_thread_group_t *g;
    int                 steps;
    int                 forget_before;   /* call sqz_ef_forget before this step (-1: never) */
    int                 skip_to;         /* start at this step with a fresh state */
    int                 nan_step;        /* rank 1 sends a NaN at this step (-1: never) */
    int                 save_after;      /* checkpoint after this many steps (-1: never) */
    int                 load;            /* load ckpt before the first step */
    unsigned char      *ckpt[P];
    size_t              ckpt_len[P];
    float              *last[P];         /* each rank's output of the last step */
    double              drift[P];        /* max over steps of |sum(out) - sum(exact)|_inf */
    float              *nan_out[P];      /* each rank's output of the NaN step */
    sqz_stats_t         stats[P];
} job_t;

static sqz_comm_t *make_comm(job_t *j, int rank, sqz_ctx_t **ctx)
{
    return sqz_thread_comm(j->g, rank, j->kv, ctx);
}

/* The exact average of the step's inputs, in double. */
static void exact_avg(double *avg, int step)
{
    float *x = malloc(N * sizeof(float));
    memset(avg, 0, N * sizeof(double));
    for (int r = 0; r < P; r++) {
        fill(x, r, step);
        for (size_t i = 0; i < N; i++) {
            avg[i] += x[i] / (double)P;
        }
    }
    free(x);
}

static void rank_main(int rank, void *arg)
{
    job_t      *j = arg;
    sqz_ctx_t  *ctx;
    sqz_comm_t *comm = make_comm(j, rank, &ctx);
    if (j->load) {
        REQUIRE(SQZ_OK == sqz_state_load(comm, j->ckpt[rank], j->ckpt_len[rank]));
    }
    float  *x     = malloc(N * sizeof(float));
    double *avg   = malloc(N * sizeof(double));
    double *sum_d = calloc(N, sizeof(double)); /* sum of outputs - sum of exact averages */
    for (int step = j->skip_to; step < j->steps; step++) {
        if (step == j->forget_before) {
            sqz_ef_forget(comm, KEY);
        }
        fill(x, rank, step);
        if (step == j->nan_step && 1 == rank) {
            x[17] = NAN;
        }
        REQUIRE(SQZ_OK == sqz_ef_allreduce(comm, x, N, SQZ_DTYPE_FLOAT32, SQZ_OP_AVG, KEY, NULL));
        if (step == j->nan_step) {
            j->nan_out[rank] = malloc(N * sizeof(float));
            memcpy(j->nan_out[rank], x, N * sizeof(float));
        } else {
            exact_avg(avg, step);
            for (size_t i = 0; i < N; i++) {
                sum_d[i] += (double)x[i] - avg[i];
                j->drift[rank] = fmax(j->drift[rank], fabs(sum_d[i]));
            }
        }
        if (step + 1 == j->save_after) {
            j->ckpt_len[rank] = sqz_state_save(comm, NULL, 0);
            j->ckpt[rank]     = malloc(j->ckpt_len[rank]);
            REQUIRE(j->ckpt_len[rank] == sqz_state_save(comm, j->ckpt[rank], j->ckpt_len[rank]));
        }
    }
    j->last[rank] = x;
    sqz_stats_get(ctx, &j->stats[rank]);
    free(avg);
    free(sum_d);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

static void run(job_t *j)
{
    j->g = sqz_thread_group_create(P);
    sqz_thread_run(P, rank_main, j);
    sqz_thread_group_destroy(j->g);
}

static job_t job(const char *const *kv, int steps)
{
    return (job_t){.kv = kv, .steps = steps, .forget_before = -1, .nan_step = -1,
                   .save_after = -1};
}

static int ranks_identical(const job_t *j)
{
    for (int r = 1; r < P; r++) {
        if (0 != memcmp(j->last[0], j->last[r], N * sizeof(float))) {
            return 0;
        }
    }
    return 1;
}

static void release(job_t *j)
{
    for (int r = 0; r < P; r++) {
        free(j->last[r]);
        free(j->nan_out[r]);
        free(j->ckpt[r]);
    }
}

/* first runs and saves every rank's state after save_after steps; rest loads it and runs from
 * step skip_to on (the checkpoints change hands). */
static void run_resumed(job_t *first, int save_after, job_t *rest, int skip_to)
{
    first->save_after = save_after;
    run(first);
    rest->skip_to = skip_to, rest->load = 1;
    for (int r = 0; r < P; r++) {
        rest->ckpt[r] = first->ckpt[r], rest->ckpt_len[r] = first->ckpt_len[r];
        first->ckpt[r] = NULL;
    }
    run(rest);
}

/* Error feedback keeps the drift of the summed outputs bounded, under settings that would turn
 * the interposed path's error feedback, warm-up and compression off. */
static void test_error_feedback(const char *method)
{
    const char *const kv[] = {"SQZ_METHOD", method, "SQZ_EF", "none", "SQZ_WARMUP_STEPS",
                              "1000", "SQZ_MIN_BYTES", "100000000", NULL};
    job_t             few  = job(kv, STEPS / 4), many = job(kv, STEPS);
    run(&few);
    run(&many);
    CHECK_MSG(ranks_identical(&many), "%s: ranks differ", method);
    CHECK_EQ_INT(many.stats[0].calls_compressed, STEPS);
    CHECK_EQ_INT(many.stats[0].calls_warmup, 0);
    /* Without error feedback the drift of a sign or 4-bit code grows about linearly with the
     * steps; with it, the drift is one residual: it does not grow from STEPS/4 to STEPS. */
    printf("%-6s drift of the summed outputs: %.3f after %d steps, %.3f after %d\n", method,
           few.drift[0], STEPS / 4, many.drift[0], STEPS);
    CHECK_MSG(many.drift[0] < 2.0 * few.drift[0], "%s: drift grows %.3f -> %.3f", method,
              few.drift[0], many.drift[0]);
    release(&few);
    release(&many);
}

/* After sqz_ef_forget the next call is what a fresh communicator gives. */
static void test_forget(void)
{
    const char *const kv[] = {"SQZ_METHOD", "sign", NULL};
    job_t             a    = job(kv, 9), b = job(kv, 9);
    a.forget_before        = 8;
    b.skip_to              = 8;
    run(&a);
    run(&b);
    CHECK_MSG(0 == memcmp(a.last[0], b.last[0], N * sizeof(float)),
              "the call after sqz_ef_forget differs from a fresh one");
    release(&a);
    release(&b);
}

/* A NaN on rank 1: every rank gets the dense (NaN-carrying) result, and the residuals are those
 * of before, so that the run continues as if that step had not been. */
static void test_nonfinite(void)
{
    const char *const kv[] = {"SQZ_METHOD", "sign", NULL};
    job_t             a    = job(kv, 8);
    a.nan_step             = 5;
    run(&a);
    for (int r = 0; r < P; r++) {
        CHECK_MSG(isnan(a.nan_out[r][17]) && isfinite(a.nan_out[r][18]),
                  "rank %d: not the dense result", r);
    }
    CHECK_MSG(ranks_identical(&a), "ranks differ after a NaN");
    CHECK_EQ_INT(a.stats[0].calls_nonfinite, 1);
    /* The same run with step 5 skipped by every rank ends with the same bits. */
    const char *const kv2[] = {"SQZ_METHOD", "sign", NULL};
    job_t             b     = job(kv2, 8);
    job_t             c     = job(kv2, 5); /* steps 0..4, checkpointed */
    run_resumed(&c, 5, &b, 6);
    CHECK_MSG(0 == memcmp(a.last[0], b.last[0], N * sizeof(float)),
              "a NaN step changed the residuals");
    release(&a);
    release(&b);
    release(&c);
}

/* Saved after 20 steps and resumed: the same bits as the uninterrupted run. */
static void test_checkpoint(void)
{
    const char *const kv[] = {"SQZ_METHOD", "sign", NULL};
    job_t             whole = job(kv, 30), first = job(kv, 20), rest = job(kv, 30);
    run(&whole);
    run_resumed(&first, 20, &rest, 20);
    CHECK_MSG(0 == memcmp(whole.last[2], rest.last[2], N * sizeof(float)),
              "the resumed run differs");
    release(&whole);
    release(&first);
    release(&rest);
}

static void test_bad_arguments(void)
{
    const char *const   kv[] = {"SQZ_METHOD", "sign", NULL};
    job_t               j    = job(kv, 0);
    sqz_thread_group_t *g    = sqz_thread_group_create(1);
    sqz_ctx_t          *ctx;
    j.g              = g;
    sqz_comm_t *comm = make_comm(&j, 0, &ctx);
    float       x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_EQ_INT(sqz_ef_allreduce(NULL, x, 8, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1, NULL),
                 SQZ_ERR_INVALID_PARAM);
    CHECK_EQ_INT(sqz_ef_allreduce(comm, x, 8, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 0, NULL),
                 SQZ_ERR_INVALID_PARAM);
    CHECK_EQ_INT(sqz_ef_allreduce(comm, x, 8, SQZ_DTYPE_FLOAT32, (sqz_op_t)7, 1, NULL),
                 SQZ_ERR_INVALID_PARAM);
    CHECK_EQ_INT(sqz_ef_allreduce(comm, x, 8, SQZ_DTYPE_FLOAT16, SQZ_OP_SUM, 1, NULL),
                 SQZ_ERR_NOT_SUPPORTED);
    CHECK_EQ_INT(x[7], 8);
    sqz_ef_forget(NULL, 1);
    sqz_ef_forget(comm, 0);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    sqz_thread_group_destroy(g);
}

int main(void)
{
    sqz_log_set_level(SQZ_LOG_ERROR);
    test_error_feedback("sign");
    test_error_feedback("quant");
    test_forget();
    test_nonfinite();
    test_checkpoint();
    test_bad_arguments();
    return sqz_test_result("test_ef_allreduce");
}
