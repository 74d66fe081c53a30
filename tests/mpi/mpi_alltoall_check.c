/* MPI_Alltoall(v) under the interposer with SQZ_MOE=cycle, SQZ_MOE_CYCLE=dedup,lsh and
 * SQZ_MOE_DIM=16 (test_moe_alltoall.sh).  Plain MPI only: the program does not know Squeeze.
 *
 * Non-token all-to-alls (int, double, a float count that is not a multiple of 16 on one rank only,
 * in place) must arrive exactly; token all-to-alls alternate between de-duplication (bit-exact)
 * and LSH (each received token within a small distance of what was sent, on clustered tokens). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D 16

static int rank, size, failures;

static void check(int ok, const char *what)
{
    int all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (0 == rank) {
        printf("%s: %s\n", all ? "PASS" : "FAIL", what);
    }
    failures += !all;
}

/* A uniform number in [-1, 1) from a key (splitmix64). */
static double unif(unsigned long long z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-52 - 1.0;
}

/* Element j of token t that rank src sends rank dst: one of 8 random centers plus noise. */
static float tok(int src, int dst, int t, int j, double noise)
{
    const unsigned long long pair = (unsigned long long)(src * 64 + dst) << 32;
    const unsigned long long k    = (unsigned long long)((unif(pair + (unsigned)t) + 1.0) * 4.0) % 8;
    return (float)(unif(pair ^ (k << 20 | (unsigned)j | 1ull << 40)) +
                   noise * unif(pair ^ ((unsigned long long)t << 8 | (unsigned)j | 1ull << 41)));
}

/* Tokens src sends dst in the -v tests (zero for some pairs). */
static int ntok(int src, int dst) { return ((src + 2 * dst) % 3) * 40; }

static void test_passthrough(void)
{
    const int n = 5;
    int      *is = malloc((size_t)(n * size) * sizeof(int)), *ir = malloc((size_t)(n * size) * sizeof(int));
    double   *ds = malloc((size_t)(D * size) * sizeof(double)), *dr = malloc((size_t)(D * size) * sizeof(double));
    float    *fs = malloc((size_t)(D * size) * sizeof(float)), *fr = malloc((size_t)(D * size) * sizeof(float));
    for (int i = 0; i < n * size; i++) {
        is[i] = rank * 1000 + i;
    }
    for (int i = 0; i < D * size; i++) {
        ds[i] = rank + i * 0.25;
        fs[i] = (float)(rank * 0.5 + i);
    }
    MPI_Alltoall(is, n, MPI_INT, ir, n, MPI_INT, MPI_COMM_WORLD);
    int ok = 1;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < n; i++) {
            ok &= ir[r * n + i] == r * 1000 + rank * n + i;
        }
    }
    check(ok, "MPI_Alltoall of MPI_INT is exact");
    MPI_Alltoall(ds, D, MPI_DOUBLE, dr, D, MPI_DOUBLE, MPI_COMM_WORLD);
    ok = 1;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < D; i++) {
            ok &= dr[r * D + i] == r + (rank * D + i) * 0.25;
        }
    }
    check(ok, "MPI_Alltoall of MPI_DOUBLE is exact");
    /* 5 floats a peer: not a multiple of the token width. */
    MPI_Alltoall(fs, 5, MPI_FLOAT, fr, 5, MPI_FLOAT, MPI_COMM_WORLD);
    ok = 1;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < 5; i++) {
            ok &= fr[r * 5 + i] == (float)(r * 0.5 + rank * 5 + i);
        }
    }
    check(ok, "MPI_Alltoall of 5 floats a peer (width 16) is exact");
    /* In place. */
    for (int i = 0; i < D * size; i++) {
        fr[i] = (float)(rank * 0.5 + i);
    }
    MPI_Alltoall(MPI_IN_PLACE, D, MPI_FLOAT, fr, D, MPI_FLOAT, MPI_COMM_WORLD);
    ok = 1;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < D; i++) {
            ok &= fr[r * D + i] == (float)(r * 0.5 + rank * D + i);
        }
    }
    check(ok, "MPI_Alltoall in place is exact");
    /* Alltoallv where only rank 0's counts to rank 1 break the width: every rank passes through. */
    int sc[64], sd[64], rc[64], rd[64];
    for (int r = 0; r < size; r++) {
        sc[r] = (0 == rank && 1 == r) ? D - 3 : D;
        rc[r] = (1 == rank && 0 == r) ? D - 3 : D;
        sd[r] = rd[r] = r * D;
    }
    for (int i = 0; i < D * size; i++) {
        fs[i] = (float)(rank * 100 + i) + 0.125f;
        fr[i] = -1.0f;
    }
    MPI_Alltoallv(fs, sc, sd, MPI_FLOAT, fr, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
    ok = 1;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < rc[r]; i++) {
            ok &= fr[r * D + i] == (float)(r * 100 + rank * D + i) + 0.125f;
        }
    }
    check(ok, "MPI_Alltoallv with one count not a multiple of the width is exact on every rank");
    free(is);
    free(ir);
    free(ds);
    free(dr);
    free(fs);
    free(fr);
}

/* One token MPI_Alltoallv (zero counts, gaps between blocks); \return the relative distance of
 * what was received from what was sent, sqrt(sum ||x - y||^2 / sum ||x||^2). */
static double token_alltoallv(double noise)
{
    int    sc[64], sd[64], rc[64], rd[64], ns = 0, nr = 0;
    for (int r = 0; r < size; r++) {
        sc[r] = ntok(rank, r) * D;
        sd[r] = ns;
        ns += sc[r] + 2 * D;
        rc[r] = ntok(r, rank) * D;
    }
    for (int r = size - 1; r >= 0; r--) {
        rd[r] = nr;
        nr += rc[r] + D;
    }
    float *s = malloc((size_t)ns * sizeof(float) + 4), *v = malloc((size_t)nr * sizeof(float) + 4);
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < sc[r]; i++) {
            s[sd[r] + i] = tok(rank, r, i / D, i % D, noise);
        }
    }
    for (int i = 0; i < nr; i++) {
        v[i] = -9.0f;
    }
    MPI_Alltoallv(s, sc, sd, MPI_FLOAT, v, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
    double e = 0, x = 0;
    int    gaps = 1;
    for (int r = 0; r < size; r++) {
        for (int t = 0; t < rc[r] / D; t++) {
            for (int j = 0; j < D; j++) {
                const double a = tok(r, rank, t, j, noise), b = v[rd[r] + t * D + j];
                e += (a - b) * (a - b);
                x += a * a;
            }
        }
        gaps &= !(rd[r] + rc[r] < nr && -9.0f != v[rd[r] + rc[r]]);
    }
    const double worst = gaps ? (x > 0 ? sqrt(e / x) : 0.0) : 1e9; /* 1e9: a gap was written */
    free(s);
    free(v);
    return worst;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 64) {
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    test_passthrough();
    /* SQZ_MOE_CYCLE=dedup,lsh: the 1st and 3rd token calls are de-duplicated, the 2nd LSH. */
    check(0.0 == token_alltoallv(0.02), "token MPI_Alltoallv, dedup: bit-exact");
    const double e = token_alltoallv(0.02);
    if (0 == rank) {
        printf("LSH: relative distance of the received tokens from the sent ones %.4f\n", e);
    }
    check(e > 0.0 && e < 0.1, "token MPI_Alltoallv, lsh: the tokens received near those sent");
    /* A plain token MPI_Alltoall with duplicated tokens, de-duplicated: exact. */
    float *s = malloc((size_t)(4 * D * size) * sizeof(float)), *v = malloc((size_t)(4 * D * size) * sizeof(float));
    for (int i = 0; i < 4 * D * size; i++) {
        s[i] = (float)((i / D) % 2) + (float)(i % D) * 0.5f + (float)rank;
    }
    MPI_Alltoall(s, 4 * D, MPI_FLOAT, v, 4 * D, MPI_FLOAT, MPI_COMM_WORLD);
    int ok = 1;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < 4 * D; i++) {
            const int g = rank * 4 * D + i;
            ok &= v[r * 4 * D + i] == (float)((g / D) % 2) + (float)(g % D) * 0.5f + (float)r;
        }
    }
    check(ok, "token MPI_Alltoall, dedup: bit-exact");
    free(s);
    free(v);
    MPI_Finalize();
    return failures ? 1 : 0;
}
