/* Minimal assertion helpers shared by the unit tests: a failed check prints file:line and the
 * expression, counts the failure, and the test's main() returns sqz_test_result(). */
#ifndef SQZ_TEST_H
#define SQZ_TEST_H

#include <math.h>
#include <stdint.h>
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

/* Deterministic test data: splitmix64 from rng_state (a test may set another seed in main). */
static uint64_t rng_state __attribute__((unused)) = 0x243f6a8885a308d3ull;

static inline uint64_t rng_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double rng_unif(void) { return (double)(rng_u64() >> 11) * 0x1p-53; }

/* Roughly normal (sum of uniforms), scaled. */
static inline float rng_gauss(double scale)
{
    double s = 0.0;
    for (int i = 0; i < 4; i++) {
        s += rng_unif() - 0.5;
    }
    return (float)(s * 1.7320508 * scale);
}

static inline void fill_random(float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = rng_gauss(scale);
    }
}

/* A zeroed float array (at least one element), or the test stops. */
static inline float *alloc_floats(size_t n)
{
    float *p = (float *)calloc(n ? n : 1, sizeof *p);
    REQUIRE(p != NULL);
    return p;
}

static inline int sqz_test_result(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, sqz_test_checks, sqz_test_failures);
    return sqz_test_failures ? 1 : 0;
}

#endif
