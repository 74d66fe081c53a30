/*
 * mpi_quadratic: distributed gradient descent on a heterogeneous quadratic, the smallest problem
 * on which error feedback visibly matters.  Plain MPI (run it under LD_PRELOAD to compress).
 *
 * Rank r holds f_r(x) = 0.5 * sum_i a_ri (x_i - b_ri)^2 with a_ri in [0.5, 2] and b_ri = c_i + d_ri
 * (c shared, d different on every rank), so the ranks pull towards different points and their
 * gradients do not vanish at the global optimum x* = sum_r a_r b_r / sum_r a_r: each rank's
 * gradient there is large, only their sum is zero.  A biased compressor without error feedback
 * then stalls away from x*; with error feedback it converges.
 *
 * Step: g = grad f_r(x) in float, MPI_Allreduce(MPI_IN_PLACE, g, SUM, MPI_FLOAT), x -= lr_t * g / P.
 * The step size decays geometrically from LR to LR_END over the run.  It matters: with a constant
 * step, error feedback only brings x to a neighbourhood of x* whose radius is proportional to the
 * step (the compressed updates of the ranks do not cancel step by step, only on average), while
 * the bias of compression without error feedback stays whatever the step.
 *
 * Usage: mpi_quadratic STEPS [LR (default 0.5)] [LR_END (default LR)] [DIM (default 100000)]
 * Prints the relative distance ||x - x*|| / ||x*|| along the way and, last,
 *   "final relative distance: <value>"
 * and exits 0: the caller decides what distance is good enough.
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi), a pure function of (stream, i): every rank can rebuild every rank's data. */
static double uniform_at(uint64_t stream, size_t i, double lo, double hi)
{
    const uint64_t z = mix64(mix64(stream * 0x9e3779b97f4a7c15ull + 12345) + (uint64_t)i);
    return lo + (hi - lo) * (double)(z >> 11) * 0x1.0p-53;
}

static double coef_a(int rank, size_t i) { return uniform_at(1000 + (uint64_t)rank, i, 0.5, 2.0); }
static double coef_b(int rank, size_t i)
{
    return uniform_at(1, i, -1.0, 1.0) + uniform_at(2000 + (uint64_t)rank, i, -1.0, 1.0);
}

static double rel_distance(const float *x, const double *xstar, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)x[i] - xstar[i];
        num += d * d;
        den += xstar[i] * xstar[i];
    }
    return sqrt(num / den);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, P = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);

    char  *end   = NULL;
    long   steps = argc > 1 ? strtol(argv[1], &end, 10) : -1;
    int    bad   = argc < 2 || argc > 5 || *end || steps < 1;
    double lr    = 0.5;
    long   dim   = 100000;
    if (!bad && argc > 2) {
        lr  = strtod(argv[2], &end);
        bad = *end || !(lr > 0.0);
    }
    double lr_end = lr;
    if (!bad && argc > 3) {
        lr_end = strtod(argv[3], &end);
        bad    = *end || !(lr_end > 0.0);
    }
    if (!bad && argc > 4) {
        dim = strtol(argv[4], &end, 10);
        bad = *end || dim < 1;
    }
    if (bad) {
        if (0 == rank) {
            fprintf(stderr, "usage: mpi_quadratic STEPS [LR] [LR_END] [DIM]\n");
        }
        MPI_Finalize();
        return 2;
    }
    const size_t n     = (size_t)dim;
    float       *a     = malloc(n * sizeof(float));
    float       *b     = malloc(n * sizeof(float));
    float       *x     = calloc(n, sizeof(float));
    float       *g     = malloc(n * sizeof(float));
    double      *xstar = calloc(n, sizeof(double));
    double      *asum  = calloc(n, sizeof(double));
    if (NULL == a || NULL == b || NULL == x || NULL == g || NULL == xstar || NULL == asum) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    /* The local problem, in the float values the gradient uses, and the exact optimum of the sum
     * of those same float problems (in double). */
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)coef_a(rank, i);
        b[i] = (float)coef_b(rank, i);
    }
    for (int r = 0; r < P; r++) {
        for (size_t i = 0; i < n; i++) {
            const double ar = (float)coef_a(r, i);
            xstar[i] += ar * (double)(float)coef_b(r, i);
            asum[i] += ar;
        }
    }
    for (size_t i = 0; i < n; i++) {
        xstar[i] /= asum[i];
    }
    free(asum);

    if (0 == rank) {
        printf("mpi_quadratic: %d rank(s), dimension %zu, %ld steps, lr %g -> %g\n", P, n, steps,
               lr, lr_end);
        fflush(stdout);
    }
    const double decay = steps > 1 ? pow(lr_end / lr, 1.0 / (double)(steps - 1)) : 1.0;
    const double t0    = MPI_Wtime();
    for (long t = 1; t <= steps; t++) {
        const float step_scale = (float)(lr * pow(decay, (double)(t - 1)) / P);
        for (size_t i = 0; i < n; i++) {
            g[i] = a[i] * (x[i] - b[i]);
        }
        MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        for (size_t i = 0; i < n; i++) {
            x[i] -= step_scale * g[i];
        }
        if (0 == rank && (t == steps || 0 == t % (steps >= 5 ? steps / 5 : 1))) {
            printf("step %6ld  relative distance %.6e\n", t, rel_distance(x, xstar, n));
            fflush(stdout);
        }
    }
    const double seconds = MPI_Wtime() - t0;
    /* Every rank applies the same all-reduced gradient, so x is the same everywhere; rank 0's
     * distance is the job's. */
    if (0 == rank) {
        printf("seconds: %.3f\n", seconds);
        printf("final relative distance: %.6e\n", rel_distance(x, xstar, n));
    }
    free(a);
    free(b);
    free(x);
    free(g);
    free(xstar);
    MPI_Finalize();
    return 0;
}
