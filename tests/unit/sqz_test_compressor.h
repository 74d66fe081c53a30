/* The harness the per-compressor unit tests share: a compressor instance made from its parameter
 * table, compress into a payload with a canary past max_payload (and the size promises of
 * compressor_v1.h checked on every call), decompress's validate-before-write check, the
 * finiteness contract's residual check, and a clock for the throughput prints.
 *
 * Header-only (static functions): the CHECK counters of sqz_test.h belong to each test program,
 * so the checks made here count in the program that includes it. */
#ifndef SQZ_TEST_COMPRESSOR_H
#define SQZ_TEST_COMPRESSOR_H

#include <float.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include <squeeze/compressor_v1.h>

#include "sqz_param.h"
#include "sqz_registry.h"
#include "sqz_test.h"

/** One compressor state and the config it was made from. */
typedef struct sqz_tc {
    const sqz_compressor_v1_t *c;
    const char                *label; /* prefixes the messages of failed checks */
    void                      *config;
    void                      *state;
} sqz_tc_t;

/** Monotonic seconds (throughput prints). */
static inline double sqz_tc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/** A state of c from its defaults plus kv ("NAME=value", NULL-terminated; may be NULL), created
 *  as rank `rank` of 2 with seed 1234.  A bad config fails a check and stops the test. */
static inline sqz_tc_t sqz_tc_make(const sqz_compressor_v1_t *c, const char *label,
                                   const char *const *kv, int rank)
{
    sqz_tc_t           t        = {c, label, NULL, NULL};
    char               err[256] = "";
    const sqz_status_t st       = sqz_plugin_config_make(c, kv, &t.config, err, sizeof err);
    CHECK_MSG(st == SQZ_OK, "%s: config: %s", label, err);
    REQUIRE(st == SQZ_OK);
    const sqz_compressor_env_v1_t env = {sizeof env, rank, 2, 1234};
    REQUIRE(c->create(t.config, &env, &t.state) == SQZ_OK);
    return t;
}

static inline void sqz_tc_free(sqz_tc_t *t)
{
    t->c->destroy(t->state);
    free(t->config);
}

/** The arguments of one compress call (stage-0 shared values: set a.shared after). */
static inline sqz_compress_args_v1_t sqz_tc_args(const float *in, float *residual, size_t n,
                                                 uint64_t seq, int stage, void *payload, size_t cap)
{
    sqz_compress_args_v1_t a;
    memset(&a, 0, sizeof a);
    a.size     = sizeof a;
    a.in       = in;
    a.residual = residual;
    a.n        = n;
    a.seq      = seq;
    a.stage    = stage;
    a.payload  = payload;
    a.capacity = cap;
    return a;
}

/** Compresses in (+ residual, may be NULL) at `stage` with `shared` (may be NULL) into a fresh
 *  payload (*payload, free it) of max_payload + 16 bytes, the 16 a canary.  On success checks
 *  payload_bytes <= max_payload (== for SQZ_COMPRESSOR_FIXED_PAYLOAD), the canary, and that the
 *  norms are not negative.  *args (may be NULL) receives the compress arguments. */
static inline sqz_status_t sqz_tc_compress(const sqz_tc_t *t, const float *in, float *residual,
                                           size_t n, uint64_t seq, int stage, const float *shared,
                                           uint8_t **payload, sqz_compress_args_v1_t *args)
{
    const size_t maxp = t->c->max_payload(t->state, n);
    uint8_t     *p    = malloc(maxp + 16);
    REQUIRE(p != NULL);
    memset(p, 0xA5, maxp + 16);
    sqz_compress_args_v1_t a = sqz_tc_args(in, residual, n, seq, stage, p, maxp);
    a.shared                 = shared;
    const sqz_status_t st    = t->c->compress(t->state, &a);
    if (st == SQZ_OK) {
        CHECK_MSG(a.payload_bytes <= maxp, "%s n=%zu: %zu > max %zu", t->label, n, a.payload_bytes,
                  maxp);
        if (SQZ_FIXED_PAYLOAD(t->c)) {
            CHECK_MSG(a.payload_bytes == maxp, "%s n=%zu: %zu bytes, fixed size %zu", t->label, n,
                      a.payload_bytes, maxp);
        }
        int canary_ok = 1;
        for (size_t i = maxp; i < maxp + 16; i++) {
            canary_ok &= p[i] == 0xA5;
        }
        CHECK_MSG(canary_ok, "%s n=%zu: wrote past max_payload", t->label, n);
        CHECK_MSG(a.norm2_in >= 0.0 && a.norm2_err >= 0.0, "%s n=%zu: negative norms", t->label, n);
    }
    *payload = p;
    if (args != NULL) {
        *args = a;
    }
    return st;
}

/** One timed round of the throughput prints: compresses in (+ residual, may be NULL) at `seq`
 *  into payload (capacity cap) and decodes it into out; both must succeed (checked, and the test
 *  stops when compress fails).  *tc and *td keep the fastest compress and decode seconds.
 *  \return the payload bytes. */
static inline size_t sqz_tc_time(const sqz_tc_t *t, const float *in, float *residual, size_t n,
                                 uint64_t seq, uint8_t *payload, size_t cap, float *out, double *tc,
                                 double *td)
{
    sqz_compress_args_v1_t a  = sqz_tc_args(in, residual, n, seq, 0, payload, cap);
    const double           t0 = sqz_tc_now();
    const sqz_status_t     sc = t->c->compress(t->state, &a);
    const double           t1 = sqz_tc_now();
    CHECK_EQ_INT(sc, SQZ_OK);
    REQUIRE(sc == SQZ_OK);
    const sqz_status_t sd = t->c->decompress(t->state, payload, a.payload_bytes, out, n);
    const double       t2 = sqz_tc_now();
    CHECK_EQ_INT(sd, SQZ_OK);
    *tc = fmin(*tc, t1 - t0);
    *td = fmin(*td, t2 - t1);
    return a.payload_bytes;
}

/** Decompress's validate-before-write contract on a malformed payload: SQZ_ERR_CORRUPT with out
 *  untouched, and SQZ_ERR_CORRUPT when only validating. */
static inline void sqz_tc_check_rejects(const sqz_tc_t *t, const uint8_t *payload, size_t bytes,
                                        size_t n, const char *what)
{
    float *out = alloc_floats(n);
    float *ref = alloc_floats(n);
    for (size_t i = 0; i < n; i++) {
        out[i] = ref[i] = 1000.0f + (float)i;
    }
    const sqz_status_t st = t->c->decompress(t->state, payload, bytes, out, n);
    CHECK_MSG(st == SQZ_ERR_CORRUPT, "%s n=%zu %s: status %d", t->label, n, what, (int)st);
    CHECK_MSG(memcmp(out, ref, n * sizeof *out) == 0, "%s n=%zu %s: out written", t->label, n,
              what);
    CHECK_EQ_INT(t->c->decompress(t->state, payload, bytes, NULL, n), SQZ_ERR_CORRUPT);
    free(out);
    free(ref);
}

/** The finiteness contract for compressors that restore the buckets they already updated: after
 *  SQZ_ERR_NONFINITE the residual holds its old values up to 4 ulps of max |a| over the finite
 *  a = in + res_old.  \return 1 when it does. */
static inline int sqz_tc_residual_restored(const float *in, const float *res, const float *res_old,
                                           size_t n)
{
    double maxabs = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float a = in[i] + res_old[i];
        if (isfinite(a)) {
            maxabs = fmax(maxabs, fabs((double)a));
        }
    }
    const double tol = 4.0 * FLT_EPSILON * (maxabs + 1e-30);
    for (size_t i = 0; i < n; i++) {
        if (!(fabs((double)res[i] - (double)res_old[i]) <= tol)) {
            return 0;
        }
    }
    return 1;
}

#endif
