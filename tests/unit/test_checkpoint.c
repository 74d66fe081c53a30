/* Checkpoints of the error-feedback state (sqz_state_save / sqz_state_load): a run stopped after
 * some steps, restarted in a new context and communicator from its checkpoint, continues bit for
 * bit as the uninterrupted run, for every method and error-feedback variant, with intercepted
 * calls (named by the call sequence) and API keys; a checkpoint of another method, rank or
 * settings, or a damaged one, is a clear error that changes nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_log.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"

#define P      3
#define STEPS  12 /* steps of the whole run */
#define CUT    7  /* the checkpoint is taken after this many steps */
#define NBUF   4

/* A step: a large buffer, two of one size (told apart by position), and one with an API key. */
static const size_t   sizes[NBUF] = {40000, 20000, 20000, 30000};
static const uint64_t keys[NBUF]  = {0, 0, 0, 77};

typedef struct job {
    const char *const *kv;
    sqz_thread_group_t *g;
    float              *out[P];     /* the outputs of steps CUT..STEPS-1, every buffer */
    unsigned char      *ckpt[P];    /* each rank's checkpoint */
    size_t              ckpt_len[P];
    int                 from, to;   /* the steps this run makes */
    int                 restore;    /* load ckpt before the first step */
    sqz_status_t        load_status[P];
} job_t;

static size_t out_len(void)
{
    size_t n = 0;
    for (int b = 0; b < NBUF; b++) {
        n += sizes[b];
    }
    return n * (STEPS - CUT);
}

static void fill(float *x, size_t n, int rank, int step, int b)
{
    for (size_t i = 0; i < n; i++) {
        const uint64_t h = (uint64_t)rank * 0x9e3779b97f4a7c15ull ^ i * 0xbf58476d1ce4e5b9ull ^
                           (uint64_t)(b + 1) << 50;
        const double   u = (double)((h ^ (h >> 29)) * 0x94d049bb133111ebull >> 11) * 0x1p-53;
        x[i] = (float)((u - 0.5) * (1.0 + 0.3 * sin(0.7 * step + b)) + 0.05 * (i % 7));
    }
}

static sqz_comm_t *make_comm(job_t *j, int rank, sqz_ctx_t **ctx)
{
    return sqz_thread_comm(j->g, rank, j->kv, ctx);
}

static void rank_main(int rank, void *arg)
{
    job_t      *j = arg;
    sqz_ctx_t  *ctx;
    sqz_comm_t *comm = make_comm(j, rank, &ctx);
    if (j->restore) {
        j->load_status[rank] = sqz_state_load(comm, j->ckpt[rank], j->ckpt_len[rank]);
    }
    float *x   = malloc(sizes[0] * sizeof(float));
    size_t off = 0;
    for (int step = j->from; step < j->to; step++) {
        for (int b = 0; b < NBUF; b++) {
            fill(x, sizes[b], rank, step, b);
            REQUIRE(SQZ_OK == sqz_allreduce(comm, NULL, x, sizes[b], SQZ_DTYPE_FLOAT32,
                                            SQZ_OP_AVG, keys[b]));
            if (step >= CUT) {
                memcpy(j->out[rank] + off, x, sizes[b] * sizeof(float));
                off += sizes[b];
            }
        }
        if (step + 1 == CUT && !j->restore) {
            j->ckpt_len[rank] = sqz_state_save(comm, NULL, 0);
            j->ckpt[rank]     = malloc(j->ckpt_len[rank]);
            REQUIRE(j->ckpt_len[rank] == sqz_state_save(comm, j->ckpt[rank], j->ckpt_len[rank]));
        }
    }
    free(x);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

static void run(job_t *j, int from, int to, int restore)
{
    j->from = from, j->to = to, j->restore = restore;
    j->g    = sqz_thread_group_create(P);
    sqz_thread_run(P, rank_main, j);
    sqz_thread_group_destroy(j->g);
}

/* The whole run, and the run restarted at CUT from the checkpoint: the same bits. */
static void test_continuation(const char *const *kv, const char *label)
{
    job_t whole = {.kv = kv}, resumed = {.kv = kv};
    for (int r = 0; r < P; r++) {
        whole.out[r]   = calloc(out_len(), sizeof(float));
        resumed.out[r] = calloc(out_len(), sizeof(float));
    }
    run(&whole, 0, STEPS, 0);
    for (int r = 0; r < P; r++) {
        resumed.ckpt[r]     = whole.ckpt[r];
        resumed.ckpt_len[r] = whole.ckpt_len[r];
    }
    run(&resumed, CUT, STEPS, 1);
    size_t diff = 0;
    for (int r = 0; r < P; r++) {
        CHECK_EQ_INT(resumed.load_status[r], SQZ_OK);
        diff += 0 != memcmp(whole.out[r], resumed.out[r], out_len() * sizeof(float));
    }
    CHECK_MSG(0 == diff, "%s: the resumed run differs on %zu rank(s)", label, diff);
    printf("%-28s checkpoint of %zu bytes: resumed run %s\n", label, whole.ckpt_len[0],
           diff ? "DIFFERS" : "bit-identical");
    for (int r = 0; r < P; r++) {
        free(whole.out[r]);
        free(resumed.out[r]);
        free(whole.ckpt[r]);
    }
}

/* A checkpoint of another method, of another rank, of other settings, or damaged: an error, and
 * the communicator keeps its state. */
static void test_refused(void)
{
    const char *const kq[] = {"SQZ_METHOD", "quant", "SQZ_MIN_BYTES", "0", NULL};
    const char *const kt[] = {"SQZ_METHOD", "topk", "SQZ_MIN_BYTES", "0", NULL};
    const char *const kb[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "2", "SQZ_MIN_BYTES", "0", NULL};
    job_t             j    = {.kv = kq};
    for (int r = 0; r < P; r++) {
        j.out[r] = calloc(out_len(), sizeof(float));
    }
    run(&j, 0, CUT, 0);
    sqz_thread_group_t *g = sqz_thread_group_create(P);
    job_t               k = {.g = g};
    sqz_ctx_t          *ctx;
    struct {
        const char *const *kv;
        int                rank;
        size_t             cut;
        sqz_status_t       expect;
        const char        *what;
    } cases[] = {
        {kt, 0, 0, SQZ_ERR_INVALID_PARAM, "another method"},
        {kb, 0, 0, SQZ_ERR_INVALID_PARAM, "other settings"},
        {kq, 1, 0, SQZ_ERR_INVALID_PARAM, "another rank's"},
        {kq, 0, 100, SQZ_ERR_CORRUPT, "truncated"},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        k.kv             = cases[c].kv;
        sqz_comm_t *comm = make_comm(&k, cases[c].rank, &ctx);
        const size_t len = cases[c].cut ? j.ckpt_len[0] - cases[c].cut : j.ckpt_len[0];
        CHECK_MSG(cases[c].expect == sqz_state_load(comm, j.ckpt[0], len), "%s checkpoint: "
                  "not refused", cases[c].what);
        /* Nothing changed: an empty state saves as small as a fresh one. */
        CHECK(sqz_state_save(comm, NULL, 0) < j.ckpt_len[0]);
        sqz_comm_destroy(comm);
        sqz_ctx_destroy(ctx);
    }
    sqz_thread_group_destroy(g);
    for (int r = 0; r < P; r++) {
        free(j.out[r]);
        free(j.ckpt[r]);
    }
}

int main(void)
{
    sqz_log_set_level(SQZ_LOG_ERROR);
    static const char *const cases[][12] = {
        {"SQZ_METHOD", "quant", NULL},
        {"SQZ_METHOD", "quant", "SQZ_QUANT_ROUNDING", "stochastic", "SQZ_EF_STORAGE", "int8", NULL},
        {"SQZ_METHOD", "sign", NULL},
        {"SQZ_METHOD", "topk", NULL},
        {"SQZ_METHOD", "topk", "SQZ_EF", "ef14", "SQZ_DGC_MOMENTUM", "0.9", NULL},
        {"SQZ_METHOD", "topk", "SQZ_EF", "econtrol", "SQZ_EF_STORAGE", "bf16", NULL},
        {"SQZ_METHOD", "randk", NULL},
        {"SQZ_METHOD", "qsgd", NULL},
        {"SQZ_METHOD", "terngrad", "SQZ_EF", "ef14", NULL},
        {"SQZ_METHOD", "fedzip", NULL},
        {"SQZ_METHOD", "powersgd", "SQZ_POWERSGD_START_STEPS", "2", "SQZ_EF", "ef14", NULL},
        {"SQZ_METHOD", "powersgd", "SQZ_POWERSGD_START_STEPS", "2", "SQZ_EF", "ef21", NULL},
        {"SQZ_METHOD", "topk", "SQZ_ADAPT", "lgreco", "SQZ_ADAPT_PERIOD", "3", NULL},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char label[128] = "";
        for (size_t i = 1; cases[c][i]; i += 2) {
            snprintf(label + strlen(label), sizeof(label) - strlen(label), "%s%s",
                     1 == i ? "" : " ", cases[c][i]);
        }
        test_continuation(cases[c], label);
    }
    test_refused();
    return sqz_test_result("test_checkpoint");
}
