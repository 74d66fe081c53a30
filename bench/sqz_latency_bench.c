/* sqz_latency_bench: the cost of a call that Squeeze passes through.
 *
 *   mpirun -np 2 [-x LD_PRELOAD=libsqueeze_mpi.so] sqz_latency_bench [ITERS] [REPEATS]
 *
 * Times 8-byte all-reduces (2 floats SUM, below SQZ_MIN_BYTES, and 1 double SUM) called as
 * MPI_Allreduce (through the interposer when it is preloaded) and as PMPI_Allreduce (straight to
 * MPI), alternating in the same process so that both see the same machine state.  Prints the
 * median over REPEATS of the mean time per call in microseconds, and the ratio. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp);
    return v[n / 2];
}

typedef int (*allreduce_fn)(const void *, void *, int, MPI_Datatype, MPI_Op, MPI_Comm);

static double time_calls(allreduce_fn fn, MPI_Datatype dt, int count, int iters)
{
    double in[2] = {1, 2}, out[2];
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    for (int i = 0; i < iters; i++) {
        fn(in, out, count, dt, MPI_SUM, MPI_COMM_WORLD);
    }
    return (MPI_Wtime() - t0) / iters * 1e6;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const int iters   = argc > 1 ? atoi(argv[1]) : 20000;
    const int repeats = argc > 2 ? atoi(argv[2]) : 15;
    double   *t[4];
    for (int k = 0; k < 4; k++) {
        t[k] = malloc(sizeof(double) * (size_t)repeats);
    }
    time_calls(PMPI_Allreduce, MPI_FLOAT, 2, 2000); /* warm-up */
    for (int r = 0; r < repeats; r++) {
        t[0][r] = time_calls(MPI_Allreduce, MPI_FLOAT, 2, iters);
        t[1][r] = time_calls(PMPI_Allreduce, MPI_FLOAT, 2, iters);
        t[2][r] = time_calls(MPI_Allreduce, MPI_DOUBLE, 1, iters);
        t[3][r] = time_calls(PMPI_Allreduce, MPI_DOUBLE, 1, iters);
    }
    const double a = median(t[0], repeats), b = median(t[1], repeats);
    const double c = median(t[2], repeats), d = median(t[3], repeats);
    if (0 == rank) {
        printf("float2_sum MPI_Allreduce %.4f us, PMPI_Allreduce %.4f us, overhead %+.1f%%\n", a, b,
               100 * (a / b - 1));
        printf("double1_sum MPI_Allreduce %.4f us, PMPI_Allreduce %.4f us, overhead %+.1f%%\n", c, d,
               100 * (c / d - 1));
    }
    for (int k = 0; k < 4; k++) {
        free(t[k]);
    }
    MPI_Finalize();
    return 0;
}
