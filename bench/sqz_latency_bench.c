/* sqz_latency_bench: the cost of a call that Squeeze passes through.  Times many 8-byte
 * MPI_Allreduce calls (2 floats SUM, below SQZ_MIN_BYTES, and 1 double SUM); run it with and
 * without LD_PRELOAD=libsqueeze_mpi.so, side by side (bench/run_all.sh alternates the two).
 *
 *   mpirun -np 2 sqz_latency_bench [ITERS] [REPEATS]
 *
 * Prints the median over REPEATS of the mean time per call, in microseconds, for each kind. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const int iters   = argc > 1 ? atoi(argv[1]) : 20000;
    const int repeats = argc > 2 ? atoi(argv[2]) : 7;
    double   *tf = malloc(sizeof(double) * (size_t)repeats), *td = malloc(sizeof(double) * (size_t)repeats);
    float     f[2] = {1.0f, 2.0f}, fo[2];
    double    d = 1.0, dout;
    for (int w = 0; w < 1000; w++) {
        MPI_Allreduce(f, fo, 2, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    for (int r = 0; r < repeats; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (int i = 0; i < iters; i++) {
            MPI_Allreduce(f, fo, 2, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        tf[r] = (MPI_Wtime() - t0) / iters * 1e6;
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        for (int i = 0; i < iters; i++) {
            MPI_Allreduce(&d, &dout, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        }
        td[r] = (MPI_Wtime() - t0) / iters * 1e6;
    }
    qsort(tf, (size_t)repeats, sizeof(double), cmp);
    qsort(td, (size_t)repeats, sizeof(double), cmp);
    if (0 == rank) {
        printf("float2_sum_us %.4f\ndouble1_sum_us %.4f\n", tf[repeats / 2], td[repeats / 2]);
    }
    free(tf);
    free(td);
    MPI_Finalize();
    return 0;
}
