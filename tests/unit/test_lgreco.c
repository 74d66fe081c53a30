/*
 * L-GreCo's dynamic program against brute force, and layout files (SQZ_LAYOUT): the format,
 * and a clear error naming the line for every malformed input.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt/sqz_lgreco.h"
#include "sqz_layout_file.h"
#include "sqz_test.h"

/* The optima by enumeration of every choice: with by_bytes, the fewest bytes whose total error
 * is at most `limit`; otherwise the least error whose total bytes are at most `limit`; +inf when
 * no choice fits. */
static double brute_opt(size_t L, size_t C, const double *bytes, const double *err, double limit,
                        int by_bytes)
{
    size_t idx[8] = {0};
    double best   = INFINITY;
    for (;;) {
        double b = 0, e = 0;
        for (size_t l = 0; l < L; l++) {
            b += bytes[l * C + idx[l]];
            e += err[l * C + idx[l]];
        }
        if (by_bytes && e <= limit * (1 + 1e-12) && b < best) {
            best = b;
        } else if (!by_bytes && b <= limit && e < best) {
            best = e;
        }
        size_t l = 0;
        while (l < L && ++idx[l] == C) {
            idx[l++] = 0;
        }
        if (l == L) {
            return best;
        }
    }
}

static double brute(size_t L, size_t C, const double *bytes, const double *err, double budget)
{
    return brute_opt(L, C, bytes, err, budget, 1);
}

static double brute_err(size_t L, size_t C, const double *bytes, const double *err, double max_bytes)
{
    return brute_opt(L, C, bytes, err, max_bytes, 0);
}

static void test_dp(void)
{
    rng_state = 11;
    int exact_matches = 0, real_cases = 0;
    for (int trial = 0; trial < 400; trial++) {
        const size_t L = 1 + (size_t)(rng_u64() % 6), C = 1 + (size_t)(rng_u64() % 4);
        const size_t bins = 16;
        const int    grid = trial % 2 == 0; /* bytes on the bin grid: the DP is exact there */
        double       bytes[6 * 4], err[6 * 4];
        /* Candidate c of a layer: more bytes, less error (as ranks behave), plus noise. */
        for (size_t l = 0; l < L; l++) {
            double e = 4 + 8 * rng_unif(), b = 1 + 3 * rng_unif();
            for (size_t c = 0; c < C; c++) {
                bytes[l * C + c] = round(b * 10);
                err[l * C + c]   = e;
                e *= 0.2 + 0.6 * rng_unif();
                b *= 1.5 + rng_unif();
            }
        }
        /* Budget: the error of a "uniform" middle candidate. */
        double budget = 0;
        for (size_t l = 0; l < L; l++) {
            budget += err[l * C + C / 2];
        }
        size_t bins_used = bins;
        double span      = 0; /* the bytes axis: sum over layers of their largest bytes */
        for (size_t l = 0; l < L; l++) {
            double m = 0;
            for (size_t c = 0; c < C; c++) {
                m = fmax(m, bytes[l * C + c]);
            }
            span += m;
        }
        if (grid) {
            /* Whole-number bytes and one bin per byte: rounding loses nothing. */
            bins_used = (size_t)span;
        }
        int          choice[6];
        double       tb = -1, te = -1;
        const double opt = brute(L, C, bytes, err, budget);
        const sqz_status_t st = sqz_lgreco_solve(L, C, bytes, err, budget, bins_used, choice, &tb, &te);
        if (!isfinite(opt)) {
            CHECK_EQ_INT(st, SQZ_ERR_NOT_SUPPORTED);
            continue;
        }
        if (grid) {
            /* On the grid the program is exact: the same optimum. */
            CHECK_MSG(te <= budget * (1 + 1e-12), "trial %d: error %g over budget %g", trial, te,
                      budget);
            CHECK_MSG(SQZ_OK == st && fabs(tb - opt) < 1e-9, "trial %d: DP %g, brute force %g",
                      trial, tb, opt);
            exact_matches += (SQZ_OK == st && fabs(tb - opt) < 1e-9);
        } else if (SQZ_OK == st) {
            /* Coarse bins: never over budget, never better than the optimum, and at most the
             * rounding (L bins of the bytes axis) worse. */
            real_cases++;
            CHECK_MSG(te <= budget * (1 + 1e-12), "trial %d: error %g over budget %g", trial, te,
                      budget);
            CHECK_MSG(tb >= opt - 1e-9, "trial %d: %g beats the optimum %g", trial, tb, opt);
            CHECK_MSG(tb <= opt + (double)L * span / bins + 1e-9,
                      "trial %d: %g more than %zu bins above the optimum %g", trial, tb, L, opt);
        }
        /* The dual (least error within a byte budget): exact on the grid, within budget always. */
        if (grid) {
            double ub = 0;
            for (size_t l = 0; l < L; l++) {
                ub += bytes[l * C + C / 2];
            }
            int          ch2[6];
            double       b2 = -1, e2 = -1;
            const double eopt = brute_err(L, C, bytes, err, ub);
            CHECK_EQ_INT(sqz_lgreco_solve_bytes(L, C, bytes, err, ub, bins_used, ch2, &b2, &e2),
                         SQZ_OK);
            CHECK_MSG(b2 <= ub && fabs(e2 - eopt) <= 1e-9 * (1 + eopt),
                      "trial %d: dual DP %g bytes (max %g), error %g vs brute force %g", trial, b2,
                      ub, e2, eopt);
        }
        /* The reported totals are those of the choice. */
        if (SQZ_OK == st) {
            double b = 0, e = 0;
            for (size_t l = 0; l < L; l++) {
                CHECK(choice[l] >= 0 && (size_t)choice[l] < C);
                b += bytes[l * C + (size_t)choice[l]];
                e += err[l * C + (size_t)choice[l]];
            }
            CHECK_NEAR(b, tb, 1e-9);
            CHECK_NEAR(e, te, 1e-9 * (1 + e));
        }
    }
    CHECK_MSG(exact_matches > 150 && real_cases > 100, "%d exact, %d real cases", exact_matches,
              real_cases);
    /* Bad arguments. */
    int    c1;
    double one = 1;
    CHECK_EQ_INT(sqz_lgreco_solve(0, 1, &one, &one, 1, 8, &c1, NULL, NULL), SQZ_ERR_INVALID_PARAM);
    double nan = NAN;
    CHECK_EQ_INT(sqz_lgreco_solve(1, 1, &one, &nan, 1, 8, &c1, NULL, NULL), SQZ_ERR_INVALID_PARAM);
    printf("%s: dynamic program vs brute force (%d exact, %d real)\n",
           sqz_test_failures ? "FAIL" : "ok", exact_matches, real_cases);
}

static void test_layout_file(void)
{
    const char *good = "# a model\n"
                       "buffer 1000\n"
                       "  10 20 fc1.weight   # rows x cols\n"
                       "20 fc1.bias\n"
                       "pad 4\n"
                       "2 3 4 5\n"
                       "\n"
                       "buffer 50\n"
                       "5 10\n";
    sqz_layout_file_t *f = NULL;
    char               err[256];
    CHECK_EQ_INT(sqz_layout_file_parse(good, strlen(good), "good", &f, err, sizeof err), SQZ_OK);
    size_t             nl = 0;
    const sqz_layer_t *l  = sqz_layout_file_find(f, 1000, &nl);
    CHECK_MSG(l && 3 == nl, "buffer 1000: %zu layers", nl);
    if (l && 3 == nl) {
        CHECK(0 == l[0].offset && 10 == l[0].rows && 20 == l[0].cols);
        CHECK(200 == l[1].offset && 20 == l[1].rows && 1 == l[1].cols);
        CHECK(224 == l[2].offset && 2 == l[2].rows && 60 == l[2].cols);
    }
    l = sqz_layout_file_find(f, 50, &nl);
    CHECK(l && 1 == nl && 5 == l[0].rows && 10 == l[0].cols);
    CHECK(NULL == sqz_layout_file_find(f, 51, &nl) && 0 == nl);
    size_t line[2], count[2];
    CHECK_EQ_INT(sqz_layout_file_unused(f, line, count, 2), 0); /* both were found */
    sqz_layout_file_free(f);
    /* An entry no call finds is reported with its line. */
    CHECK_EQ_INT(sqz_layout_file_parse(good, strlen(good), "good", &f, err, sizeof err), SQZ_OK);
    (void)sqz_layout_file_find(f, 50, &nl);
    CHECK_EQ_INT(sqz_layout_file_unused(f, line, count, 2), 1);
    CHECK(1000 == count[0] && line[0] >= 1);
    sqz_layout_file_free(f);

    const struct {
        const char *text, *expect;
    } bad[] = {
        {"10 20\n", "bad:1: a layer before any 'buffer COUNT' line"},
        {"buffer 100\n10 20\n", "bad:2: layer 10 x 20 at element 0 runs past the end of buffer 100"},
        {"buffer 100\n5 5\n5 5\n9 9\n", "bad:4:"},
        {"buffer 0\n", "bad:1: expected 'buffer COUNT'"},
        {"buffer x\n", "bad:1:"},
        {"buffer 10\nbuffer 10\n", "bad:2: buffer 10 is described twice"},
        {"buffer 10\npad 11\n", "bad:2: pad 11 runs past"},
        {"buffer 10\n2 0\n", "bad:2: a shape is 1 to 8 positive integers"},
        {"buffer 10\nweights 2 3\n", "bad:2: expected 'buffer COUNT', 'pad N' or a shape"},
        {"buffer 10\n2 3 name extra\n", "bad:2: unexpected text"},
        {"buffer 10\n2x3\n", "bad:2:"},
        {"# nothing\n", "bad: no 'buffer COUNT' line"},
        {"buffer 99999999999999999999\n", "bad:1:"},
        {"buffer 100\n1 2 3 4 5 6 7 8 9\n", "bad:2: a shape is 1 to 8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0]                = '\0';
        f                     = NULL;
        const sqz_status_t st = sqz_layout_file_parse(bad[i].text, strlen(bad[i].text), "bad", &f,
                                                      err, sizeof err);
        CHECK_MSG(SQZ_ERR_INVALID_PARAM == st && NULL == f && strstr(err, bad[i].expect),
                  "case %zu: %s: '%s'", i, sqz_status_string(st), err);
        sqz_layout_file_free(f);
    }
    printf("%s: layout files\n", sqz_test_failures ? "FAIL" : "ok");
}

int main(void)
{
    test_dp();
    test_layout_file();
    return sqz_test_result("test_lgreco");
}
