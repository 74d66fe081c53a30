/* The call-sequence tracker (src/core/sqz_callseq.h) on the patterns jobs make: distinct sizes,
 * a size repeated inside a step, one buffer reduced over and over, stable and churning addresses,
 * an occasional extra call, a periodic extra call, a changed pattern; slots must follow
 * positions, never join two buffers, stay bounded, and survive a checkpoint. */
#include <stdlib.h>
#include <string.h>

#include "sqz_callseq.h"
#include "sqz_test.h"

#define STEPS_MAX 64

/* A job's step: the signatures of its calls; addresses come from `addr_of`. */
typedef struct pattern {
    const uint64_t *sig;
    size_t          n;
    int             churn; /* 1: every call has a new address; 0: position p has address p + 1 */
} pattern_t;

static uint64_t churn_next = 1u << 20;

static uintptr_t addr_of(const pattern_t *p, size_t pos)
{
    return p->churn ? (uintptr_t)(churn_next += 4096) : (uintptr_t)(pos + 1) * 4096;
}

/* Places one call as a lone rank would (its own confirmation is the agreement). */
static uint64_t place(sqz_callseq_t *q, uint64_t sig, uintptr_t addr, sqz_seq_place_t *pl)
{
    REQUIRE(SQZ_OK == sqz_callseq_place(q, sig, addr, pl));
    if (pl->refine) {
        REQUIRE(SQZ_OK == sqz_callseq_refine(q, pl->local_period, pl));
    }
    REQUIRE(pl->slot != NULL);
    return pl->slot->id;
}

/* Runs `steps` steps of p; slots[s][pos] receives the slot of each call. */
static void run_steps(sqz_callseq_t *q, const pattern_t *p, int steps,
                      uint64_t slots[][STEPS_MAX])
{
    for (int s = 0; s < steps; s++) {
        for (size_t pos = 0; pos < p->n; pos++) {
            sqz_seq_place_t pl;
            slots[s][pos] = place(q, p->sig[pos], addr_of(p, pos), &pl);
        }
    }
}

static void noop_evict(void *arg, uint64_t id)
{
    (void)id;
    (*(size_t *)arg)++;
}

/* After `learn` steps every position keeps its slot, and distinct positions have distinct
 * slots. */
static void check_settled(const char *name, uint64_t slots[][STEPS_MAX], size_t n, int learn,
                          int steps)
{
    int same = 1, distinct = 1;
    for (int s = learn + 1; s < steps; s++) {
        for (size_t pos = 0; pos < n; pos++) {
            same &= slots[s][pos] == slots[learn][pos];
        }
    }
    for (size_t a = 0; a < n; a++) {
        for (size_t b = a + 1; b < n; b++) {
            distinct &= slots[steps - 1][a] != slots[steps - 1][b];
        }
    }
    CHECK_MSG(same, "%s: a position changed slot after step %d", name, learn);
    CHECK_MSG(distinct, "%s: two positions share a slot", name);
}

static void test_pattern(const char *name, const uint64_t *sig, size_t n, int churn, int learn)
{
    static uint64_t slots[200][STEPS_MAX];
    const int       steps = 200 > learn + 20 ? learn + 20 : 200;
    sqz_callseq_t  *q     = sqz_callseq_create();
    const pattern_t p     = {sig, n, churn};
    REQUIRE(q != NULL && n <= STEPS_MAX);
    run_steps(q, &p, steps, slots);
    check_settled(name, slots, n, learn, steps);
    CHECK_MSG(sqz_callseq_period(q) == n, "%s: period %llu, expected %zu", name,
              (unsigned long long)sqz_callseq_period(q), n);
    size_t evicted = 0;
    sqz_callseq_evict(q, noop_evict, &evicted);
    printf("%-28s period %llu, %zu slots evicted after %d steps\n", name,
           (unsigned long long)sqz_callseq_period(q), evicted, steps);
    sqz_callseq_destroy(q);
}

/* Distinct sizes, a size repeated inside a step, one size only with K stable buffers. */
static void test_patterns(void)
{
    const uint64_t distinct[] = {11, 12, 13, 14, 15};
    const uint64_t repeated[] = {1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
                                 2, 2, 2, 2, 2, 2, 3};
    const uint64_t uniform3[] = {7, 7, 7};
    test_pattern("distinct, stable", distinct, 5, 0, 3);
    test_pattern("distinct, churn", distinct, 5, 1, 30);
    test_pattern("e b^24 h, stable", repeated, 26, 0, 3);
    test_pattern("e b^24 h, churn", repeated, 26, 1, 6);
    test_pattern("uniform x3, stable", uniform3, 3, 0, 3);
}

/* One buffer reduced over and over: one slot from the second call (stable) or after the
 * evidence (churn), and its counter counts every call. */
static void test_single_buffer(void)
{
    for (int churn = 0; churn < 2; churn++) {
        sqz_callseq_t  *q = sqz_callseq_create();
        sqz_seq_place_t pl;
        uint64_t        first = 0;
        int             settled_at = -1;
        for (int c = 0; c < 200; c++) {
            const uint64_t id = place(q, 99, churn ? (uintptr_t)(4096 * (c + 10)) : 4096, &pl);
            CHECK_EQ_INT(pl.seq, (uint64_t)c); /* never a repeated counter */
            if (settled_at < 0 && c > 0 && !pl.fresh) {
                settled_at = c;
                first      = id;
            }
            if (settled_at >= 0) {
                CHECK(id == first);
            }
        }
        CHECK_MSG(settled_at == (churn ? SQZ_SEQ_MIN_EVIDENCE - 1 : 1),
                  "churn %d: settled at call %d", churn, settled_at);
        sqz_callseq_destroy(q);
    }
}

/* An extra call once in a while takes an irregular slot and leaves the template alone; an extra
 * call every step becomes part of the period. */
static void test_irregular(void)
{
    const uint64_t  step[] = {21, 22, 23, 24, 25, 26, 27, 28};
    sqz_callseq_t  *q      = sqz_callseq_create();
    sqz_seq_place_t pl;
    uint64_t        slot0 = 0;
    for (int s = 0; s < 120; s++) {
        for (size_t pos = 0; pos < 8; pos++) {
            const uint64_t id = place(q, step[pos], (pos + 1) * 4096, &pl);
            if (s == 10 && pos == 0) {
                slot0 = id;
            }
            if (s > 10 && pos == 0) {
                CHECK(id == slot0);
            }
        }
        if (s % 40 == 39) {
            place(q, 77, 99 * 4096, &pl); /* once in 40 steps: irregular */
            CHECK(sqz_callseq_period(q) == 8);
        }
    }
    CHECK_EQ_INT(sqz_callseq_period(q), 8);
    /* Now a ninth call every step: the template ends and the period becomes 9. */
    for (int s = 0; s < 40; s++) {
        for (size_t pos = 0; pos < 8; pos++) {
            place(q, step[pos], (pos + 1) * 4096, &pl);
        }
        place(q, 88, 98 * 4096, &pl);
    }
    CHECK_EQ_INT(sqz_callseq_period(q), 9);
    sqz_callseq_destroy(q);
}

/* Bounded: a churning job of 100,000 calls keeps a few periods of slots. */
static void test_bounded(void)
{
    const uint64_t  step[] = {31, 32, 32, 33};
    sqz_callseq_t  *q      = sqz_callseq_create();
    size_t          evicted = 0, most = 0;
    sqz_seq_place_t pl;
    for (int c = 0; c < 100000; c++) {
        place(q, step[c % 4], (uintptr_t)(4096 * (c + 1)), &pl);
        if (0 == c % 64) {
            sqz_callseq_evict(q, noop_evict, &evicted);
        }
        most = sqz_callseq_live(q) > most ? sqz_callseq_live(q) : most;
    }
    printf("churn, 100000 calls: at most %zu live slots, %zu evicted\n", most, evicted);
    CHECK_MSG(most <= 2 * 64 + 64, "%zu live slots", most);
    CHECK_EQ_INT(sqz_callseq_live(q) <= 4 + 64, 1);
    CHECK_EQ_INT(sqz_callseq_period(q), 4);
    sqz_callseq_destroy(q);
}

/* A tracker saved and loaded continues exactly as the original. */
static void test_checkpoint(void)
{
    const uint64_t  step[] = {41, 42, 42, 43, 44};
    sqz_callseq_t  *a      = sqz_callseq_create();
    sqz_seq_place_t pl, pm;
    for (int c = 0; c < 333; c++) {
        place(a, step[c % 5], (uintptr_t)(4096 * (c % 5 + 1)), &pl);
    }
    const size_t   len = sqz_callseq_save(a, NULL, 0);
    unsigned char *buf = malloc(len);
    REQUIRE(buf && sqz_callseq_save(a, buf, len) == len);
    sqz_callseq_t *b = NULL;
    CHECK(SQZ_OK == sqz_callseq_load(buf, len, &b));
    CHECK(SQZ_ERR_CORRUPT == sqz_callseq_load(buf, len - 1, &(sqz_callseq_t *){NULL}));
    for (int c = 333; b && c < 700; c++) {
        const uint64_t ia = place(a, step[c % 5], (uintptr_t)(4096 * (c % 5 + 1)), &pl);
        const uint64_t ib = place(b, step[c % 5], (uintptr_t)(8192 * (c % 5 + 1)), &pm);
        CHECK(ia == ib && pl.seq == pm.seq);
    }
    free(buf);
    sqz_callseq_destroy(a);
    sqz_callseq_destroy(b);
}

int main(void)
{
    test_patterns();
    test_single_buffer();
    test_irregular();
    test_bounded();
    test_checkpoint();
    return sqz_test_result("test_callseq");
}
