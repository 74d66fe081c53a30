/* Minimal assertion helpers shared by the unit tests: a failed check prints file:line and the
 * expression, counts the failure, and the test's main() returns sqz_test_result(). */
#ifndef SQZ_TEST_H
#define SQZ_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int sqz_test_failures;
static int sqz_test_checks;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        sqz_test_checks++;                                                                  \
        if (!(cond)) {                                                                      \
            sqz_test_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
        }                                                                                   \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                \
    do {                                                                                    \
        sqz_test_checks++;                                                                  \
        if (!(cond)) {                                                                      \
            sqz_test_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
        }                                                                                   \
    } while (0)

#define CHECK_EQ_INT(a, b) CHECK_MSG((a) == (b), "%lld != %lld", (long long)(a), (long long)(b))
#define CHECK_NEAR(a, b, tol)                                                               \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %.3g)",          \
              (double)(a), (double)(b), (double)(tol))

/* Fatal: stop the test at once (for setup failures). */
#define REQUIRE(cond)                                                                       \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);      \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static inline int sqz_test_result(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, sqz_test_checks, sqz_test_failures);
    return sqz_test_failures ? 1 : 0;
}

#endif
