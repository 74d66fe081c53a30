/*
 * Layer layouts (sqz_layout_register): validation with clear errors, round trips, and the move of
 * error-feedback residuals to a rebuilt buffer (DDP's bucket rebuild): a parameter's residual
 * follows its layer id into the new buffer, wherever the new buffer puts it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_test.h"
#include "sqz_thread_transport.h"

static sqz_comm_t *one_rank_comm(sqz_thread_group_t *g, const char *const *kv, sqz_ctx_t **ctx)
{
    sqz_config_t *cfg;
    char          err[256];
    sqz_config_create(&cfg);
    for (int i = 0; kv[i]; i += 2) {
        sqz_config_set(cfg, kv[i], kv[i + 1]);
    }
    if (SQZ_OK != sqz_ctx_create(cfg, ctx, err, sizeof(err))) {
        printf("FAIL ctx: %s\n", err);
        exit(1);
    }
    sqz_config_destroy(cfg);
    sqz_transport_t t;
    sqz_thread_transport(g, 0, &t);
    sqz_comm_t *comm = NULL;
    if (SQZ_OK != sqz_comm_create(*ctx, &t, &comm)) {
        printf("FAIL comm\n");
        exit(1);
    }
    return comm;
}

static void test_validation(sqz_comm_t *comm)
{
    const sqz_layer_t good[] = {{0, 4, 8, 1}, {40, 10, 1, 2}, {50, 1, 1, 0}};
    CHECK_MSG(SQZ_OK == sqz_layout_register(comm, 7, 64, good, 3), "a valid layout is refused");
    sqz_layer_t got[4];
    CHECK_MSG(3 == sqz_layout_get(comm, 7, 64, got, 4) && 0 == memcmp(got, good, sizeof(good)),
          "layout round trip");
    CHECK_MSG(0 == sqz_layout_get(comm, 7, 65, got, 4) && 0 == sqz_layout_get(comm, 8, 64, NULL, 0),
          "a layout is found under another (key, count)");
    const sqz_layer_t overlap[] = {{0, 4, 8, 1}, {31, 2, 1, 2}};
    const sqz_layer_t outside[] = {{60, 5, 1, 1}};
    const sqz_layer_t empty[]   = {{0, 0, 3, 1}};
    const sqz_layer_t huge[]    = {{0, (size_t)1 << 40, (size_t)1 << 40, 1}};
    CHECK_MSG(SQZ_ERR_INVALID_PARAM == sqz_layout_register(comm, 7, 64, overlap, 2), "overlap");
    CHECK_MSG(SQZ_ERR_INVALID_PARAM == sqz_layout_register(comm, 7, 64, outside, 1), "outside");
    CHECK_MSG(SQZ_ERR_INVALID_PARAM == sqz_layout_register(comm, 7, 64, empty, 1), "empty layer");
    CHECK_MSG(SQZ_ERR_INVALID_PARAM == sqz_layout_register(comm, 7, 64, huge, 1), "overflowing size");
    CHECK_MSG(3 == sqz_layout_get(comm, 7, 64, got, 4) && 0 == memcmp(got, good, sizeof(good)),
          "a refused layout replaced the good one");
    const sqz_layer_t again[] = {{0, 64, 1, 9}};
    CHECK_MSG(SQZ_OK == sqz_layout_register(comm, 7, 64, again, 1) &&
              1 == sqz_layout_get(comm, 7, 64, got, 4) && 9 == got[0].id,
          "registering again replaces the layout");
    printf("%s: layout validation\n", sqz_test_failures ? "FAIL" : "ok");
}

/* Two parameters P1 (A elements) and P2 (B elements).  Buffer 1 holds [P1 | P2], buffer 2 (the
 * rebuilt bucket) holds [P2 | pad | P1].  One top-k call on buffer 1 leaves a residual; the first
 * call on buffer 2 with a zero gradient sends that residual, moved to P1's and P2's new places. */
static void test_carry(sqz_thread_group_t *g, const char *storage, int expect_carry)
{
    enum { A = 3000, B = 5000, PAD = 100, N1 = A + B, N2 = A + B + PAD };
    const char *const kv[] = {"METHOD", "topk", "TOPK_DENSITY", "0.25", "MIN_BYTES", "0",
                              "EF", "ef14", "EF_STORAGE", storage, NULL};
    sqz_ctx_t  *ctx;
    sqz_comm_t *comm = one_rank_comm(g, kv, &ctx);
    const sqz_layer_t l1[] = {{0, 30, 100, 1}, {A, B, 1, 2}};
    const sqz_layer_t l2[] = {{0, B, 1, 2}, {B + PAD, 30, 100, 1}};
    CHECK_MSG(SQZ_OK == sqz_layout_register(comm, 1, N1, l1, 2), "register 1");
    CHECK_MSG(SQZ_OK == sqz_layout_register(comm, 2, N2, l2, 2), "register 2");
    float *x = alloc_floats(N1), *y = alloc_floats(N1), *z = alloc_floats(N2);
    fill_random(x, N1, 1.0);
    memcpy(y, x, N1 * sizeof(float));
    CHECK_MSG(SQZ_OK == sqz_allreduce(comm, NULL, y, N1, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1), "call 1");
    /* residual of buffer 1 = x - y (one rank: the output is the decoded payload) */
    memset(z, 0, N2 * sizeof(float));
    CHECK_MSG(SQZ_OK == sqz_allreduce(comm, NULL, z, N2, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 2), "call 2");
    /* What buffer 2 sent comes from the moved residual: every sent value is x - y at the
     * parameter's old place, and the padding sends nothing. */
    size_t sent = 0, wrong = 0;
    for (size_t i = 0; i < N2; i++) {
        if (z[i] == 0.0f) {
            continue;
        }
        sent++;
        float want;
        if (i < B) {
            want = x[A + i] - y[A + i];
        } else if (i >= B + PAD) {
            want = x[i - B - PAD] - y[i - B - PAD];
        } else {
            want = NAN;
        }
        wrong += !(z[i] == want);
    }
    if (expect_carry) {
        CHECK_MSG(sent > 0 && 0 == wrong, "EF_STORAGE=%s: %zu values sent, %zu not the moved residual",
              storage, sent, wrong);
        /* Moved, not copied: a third call on buffer 1 with zero input sends nothing. */
        memset(y, 0, N1 * sizeof(float));
        CHECK_MSG(SQZ_OK == sqz_allreduce(comm, NULL, y, N1, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1),
              "call 3");
        size_t left = 0;
        for (size_t i = 0; i < N1; i++) {
            left += y[i] != 0.0f;
        }
        CHECK_MSG(0 == left, "the old buffer still holds %zu residual entries", left);
    } else {
        CHECK_MSG(0 == sent, "EF_STORAGE=%s: residuals moved although storage is compact", storage);
    }
    printf("%s: residual moves with its layer id (EF_STORAGE=%s)\n", sqz_test_failures ? "FAIL" : "ok",
           storage);
    free(x);
    free(y);
    free(z);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

int main(void)
{
    sqz_thread_group_t *g = sqz_thread_group_create(1);
    const char *const   kv[] = {"METHOD", "topk", NULL};
    sqz_ctx_t          *ctx;
    sqz_comm_t         *comm = one_rank_comm(g, kv, &ctx);
    test_validation(comm);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    test_carry(g, "fp32", 1);
    /* Compact residual storage keeps residuals per buffer (documented): nothing moves. */
    test_carry(g, "bf16", 0);
    sqz_thread_group_destroy(g);
    return sqz_test_result("test_layout");
}
