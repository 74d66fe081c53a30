/*
 * mpi_allreduce_check: checks what an interposed MPI job sees from its reductions.  Plain MPI: it
 * knows nothing about Squeeze and runs the same with or without LD_PRELOAD.
 *
 * Usage: mpi_allreduce_check MODE [MAXREL]
 *
 *   bitident [MAXREL]  float SUM all-reduces of 16K..1M elements and of a prime count (in place
 *                      and not, blocking and MPI_Iallreduce + MPI_Wait, and
 *                      MPI_Reduce_scatter_block) on random data that
 *                      differs per rank.  After each: every rank must hold the same bits (the hash
 *                      of the result is compared through MPI_MAX and MPI_MIN of an unsigned long
 *                      long, which pass through), and the relative L2 error against the exact sum
 *                      must be at most MAXREL (default 1.0; pick it per method).
 *   passthrough        reductions that must never be compressed (int, double, float MIN/MAX/PROD,
 *                      a user-defined op, a derived datatype, an intercommunicator, a float SUM
 *                      below the default SQZ_MIN_BYTES of 64 KiB...), all large enough to be
 *                      compressed if they were eligible.  Results must EQUAL the exact result,
 *                      which each rank computes itself from the inputs of all ranks (every rank's
 *                      input is a deterministic function of (seed, rank); sums use integer values,
 *                      so they are exact in any order).
 *   nan [MAXREL [keep-residual]]
 *                      six float SUM all-reduces on the same buffer; in the third, the last rank
 *                      puts a NaN in its input.  That call must give exactly what a dense
 *                      all-reduce gives (NaN where the NaN was, the exact integer sums elsewhere);
 *                      the others must be bit-identical across ranks and within MAXREL of the sum.
 *                      With keep-residual (for deterministic compressors only: no stochastic
 *                      rounding, no sampling), a second buffer runs the same calls without the
 *                      third, and the later results of both must agree (up to the float rounding
 *                      of restoring the residual): the NaN call must leave the error-feedback
 *                      residual as it was.
 *   size N             MPI_COMM_WORLD must hold N ranks: the harness's check that the launcher
 *                      belongs to the MPI of the programs (another launcher starts N singletons).
 *
 * Prints one line per check (rank 0) and exits 0 only when every check passed on every rank.
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEED 20240611ull

static int g_rank, g_nranks, g_failures;

/* ---------------------------------------------------------------------------------------------
 * Deterministic inputs: element i of rank r's input for tag t is a pure function of (r, t, i),
 * so that every rank can recompute every other rank's input.
 * ------------------------------------------------------------------------------------------- */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t s;
} rng_t;

static rng_t rng_make(int rank, uint64_t tag)
{
    rng_t r = {mix64(SEED ^ mix64((uint64_t)rank * 0x9e3779b97f4a7c15ull + tag + 1))};
    return r;
}

static uint64_t rng_next(rng_t *r) { return mix64(r->s += 0x9e3779b97f4a7c15ull); }

/* Uniform float in [-1, 1). */
static float rng_float(rng_t *r) { return (float)((double)(rng_next(r) >> 40) * 0x1.0p-23 - 1.0); }

/* Uniform integer in [lo, hi]. */
static long rng_int(rng_t *r, long lo, long hi)
{
    return lo + (long)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static void fill_uniform(float *x, size_t n, int rank, uint64_t tag)
{
    rng_t r = rng_make(rank, tag);
    for (size_t i = 0; i < n; i++) {
        x[i] = rng_float(&r);
    }
}

static void fill_int_float(float *x, size_t n, int rank, uint64_t tag, long lo, long hi)
{
    rng_t r = rng_make(rank, tag);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)rng_int(&r, lo, hi);
    }
}

static void fill_int_double(double *x, size_t n, int rank, uint64_t tag, long lo, long hi)
{
    rng_t r = rng_make(rank, tag);
    for (size_t i = 0; i < n; i++) {
        x[i] = (double)rng_int(&r, lo, hi);
    }
}

static void fill_int(int *x, size_t n, int rank, uint64_t tag, long lo, long hi)
{
    rng_t r = rng_make(rank, tag);
    for (size_t i = 0; i < n; i++) {
        x[i] = (int)rng_int(&r, lo, hi);
    }
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (NULL == p) {
        fprintf(stderr, "rank %d: out of memory (%zu bytes)\n", g_rank, bytes);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* The exact sum (in double) of the uniform inputs of all ranks for this tag. */
static double *ref_sum_uniform(size_t n, uint64_t tag)
{
    double *ref = xmalloc(n * sizeof(double));
    float  *tmp = xmalloc(n * sizeof(float));
    memset(ref, 0, n * sizeof(double));
    for (int r = 0; r < g_nranks; r++) {
        fill_uniform(tmp, n, r, tag);
        for (size_t i = 0; i < n; i++) {
            ref[i] += tmp[i];
        }
    }
    free(tmp);
    return ref;
}

/* ---------------------------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------------------------- */
static unsigned long long hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    unsigned long long   h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* \return 1 when every rank holds the same bytes. */
static int all_identical(const void *buf, size_t bytes)
{
    const unsigned long long h = hash_bytes(buf, bytes);
    unsigned long long       hmax = 0, hmin = 0;
    MPI_Allreduce(&h, &hmax, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hmin, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    return hmax == hmin;
}

/* Records one check.  `ok` may differ by rank: the verdict is the AND over all ranks, so that
 * every rank exits with the same status; a failing rank prints its own detail. */
static void report(int ok, const char *name, const char *detail)
{
    int all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok) {
        fprintf(stderr, "rank %d: FAIL %s: %s\n", g_rank, name, detail);
    }
    if (0 == g_rank) {
        printf("%s %s: %s\n", all_ok ? "PASS" : "FAIL", name, detail);
        fflush(stdout);
    }
    if (!all_ok) {
        g_failures++;
    }
}

/* Relative L2 error of x against ref; +inf when x is not finite. */
static double rel_error(const float *x, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            return INFINITY;
        }
        const double d = (double)x[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

/* The verdict on a float SUM whose result `res` (n elements, the same on every rank) should be
 * close to `ref`. */
static void check_close_identical(const char *name, const float *res, const double *ref, size_t n,
                                  double maxrel, int check_identity)
{
    const int    same = check_identity ? all_identical(res, n * sizeof(float)) : 1;
    const double e    = rel_error(res, ref, n);
    char         detail[256];
    snprintf(detail, sizeof(detail), "%s, rel_err %.3e (max %.3g)",
             check_identity ? (same ? "bit-identical on all ranks" : "ranks DIFFER") : "per-rank blocks",
             e, maxrel);
    report(same && e <= maxrel, name, detail);
}

/* ---------------------------------------------------------------------------------------------
 * bitident
 * ------------------------------------------------------------------------------------------- */
static void mode_bitident(double maxrel)
{
    static const size_t sizes[] = {16384, 65536, 262144, 1048576};
    const int           P       = g_nranks;
    /* Every buffer stays allocated until the end: Squeeze keys its error-feedback residual on the
     * buffer's address and size, and a fresh address for every call keeps one call's residual
     * out of the next call's result (each result then compares with its own exact sum). */
    void  *keep[64];
    int    nkeep = 0;
    char   name[128];
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        const size_t n   = sizes[s];
        uint64_t     tag = 100 * (s + 1);

        /* MPI_Allreduce in place. */
        float  *buf = keep[nkeep++] = xmalloc(n * sizeof(float));
        double *ref                 = ref_sum_uniform(n, tag);
        fill_uniform(buf, n, g_rank, tag);
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        snprintf(name, sizeof(name), "MPI_Allreduce in place n=%zu", n);
        check_close_identical(name, buf, ref, n, maxrel, 1);
        free(ref);

        /* MPI_Allreduce out of place: the send buffer must come back untouched. */
        tag++;
        float *snd = keep[nkeep++] = xmalloc(n * sizeof(float));
        float *rcv = keep[nkeep++] = xmalloc(n * sizeof(float));
        ref                        = ref_sum_uniform(n, tag);
        fill_uniform(snd, n, g_rank, tag);
        const unsigned long long hsnd = hash_bytes(snd, n * sizeof(float));
        MPI_Allreduce(snd, rcv, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        snprintf(name, sizeof(name), "MPI_Allreduce out of place n=%zu", n);
        check_close_identical(name, rcv, ref, n, maxrel, 1);
        snprintf(name, sizeof(name), "MPI_Allreduce out of place n=%zu: send buffer", n);
        report(hsnd == hash_bytes(snd, n * sizeof(float)), name, "unchanged");
        free(ref);

        /* MPI_Iallreduce + MPI_Wait, in place and not. */
        tag++;
        MPI_Request req;
        buf = keep[nkeep++] = xmalloc(n * sizeof(float));
        ref                 = ref_sum_uniform(n, tag);
        fill_uniform(buf, n, g_rank, tag);
        MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
        snprintf(name, sizeof(name), "MPI_Iallreduce in place n=%zu", n);
        check_close_identical(name, buf, ref, n, maxrel, 1);
        free(ref);

        tag++;
        snd = keep[nkeep++] = xmalloc(n * sizeof(float));
        rcv = keep[nkeep++] = xmalloc(n * sizeof(float));
        ref                 = ref_sum_uniform(n, tag);
        fill_uniform(snd, n, g_rank, tag);
        MPI_Iallreduce(snd, rcv, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
        snprintf(name, sizeof(name), "MPI_Iallreduce out of place n=%zu", n);
        check_close_identical(name, rcv, ref, n, maxrel, 1);
        free(ref);

        /* MPI_Reduce_scatter_block, out of place and in place.  Each rank holds a different
         * block, so the blocks are gathered (MPI_Allgather is never compressed) and the whole
         * vector compared with the exact sum. */
        const size_t blk  = n / (size_t)P;
        const size_t nrs  = blk * (size_t)P;
        float       *full = xmalloc(nrs * sizeof(float));
        for (int inplace = 0; inplace < 2; inplace++) {
            tag++;
            ref = ref_sum_uniform(nrs, tag);
            snd = keep[nkeep++] = xmalloc(nrs * sizeof(float));
            fill_uniform(snd, nrs, g_rank, tag);
            if (inplace) {
                MPI_Reduce_scatter_block(MPI_IN_PLACE, snd, (int)blk, MPI_FLOAT, MPI_SUM,
                                         MPI_COMM_WORLD);
                rcv = snd;
            } else {
                rcv = keep[nkeep++] = xmalloc(blk * sizeof(float));
                MPI_Reduce_scatter_block(snd, rcv, (int)blk, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            }
            MPI_Allgather(rcv, (int)blk, MPI_FLOAT, full, (int)blk, MPI_FLOAT, MPI_COMM_WORLD);
            snprintf(name, sizeof(name), "MPI_Reduce_scatter_block %s n=%zu",
                     inplace ? "in place" : "out of place", nrs);
            check_close_identical(name, full, ref, nrs, maxrel, 0);
            free(ref);
        }
        free(full);
    }

    /* A count no rank count divides (a prime): a hierarchy's shards differ by one element. */
    const size_t odd = 262147;
    for (int inplace = 0; inplace < 2; inplace++) {
        const uint64_t tag = 5000 + (uint64_t)inplace;
        double        *ref = ref_sum_uniform(odd, tag);
        float         *snd = keep[nkeep++] = xmalloc(odd * sizeof(float));
        float         *rcv = inplace ? snd : (keep[nkeep++] = xmalloc(odd * sizeof(float)));
        fill_uniform(snd, odd, g_rank, tag);
        MPI_Allreduce(inplace ? MPI_IN_PLACE : snd, rcv, (int)odd, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        snprintf(name, sizeof(name), "MPI_Allreduce %s n=%zu", inplace ? "in place" : "out of place",
                 odd);
        check_close_identical(name, rcv, ref, odd, maxrel, 1);
        free(ref);
    }

    /* Repeated calls on one buffer, the way a training loop calls: the error-feedback residual
     * is now carried from call to call, so the result is no longer close to this call's sum
     * alone; what must hold is that every rank keeps getting the same finite bits. */
    const size_t n   = 1048576;
    float       *buf = keep[nkeep++] = xmalloc(n * sizeof(float));
    for (int call = 1; call <= 5; call++) {
        fill_uniform(buf, n, g_rank, 9000 + (uint64_t)call);
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        int finite = 1;
        for (size_t i = 0; i < n; i++) {
            finite &= isfinite(buf[i]) ? 1 : 0;
        }
        const int same = all_identical(buf, n * sizeof(float));
        snprintf(name, sizeof(name), "repeated MPI_Allreduce on one buffer, call %d, n=%zu", call, n);
        report(same && finite, name,
               same ? (finite ? "bit-identical on all ranks, finite" : "NOT finite")
                    : "ranks DIFFER");
    }
    for (int i = 0; i < nkeep; i++) {
        free(keep[i]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * passthrough
 * ------------------------------------------------------------------------------------------- */
#define PT_N (1 << 20)

/* A user-defined commutative sum on floats: numerically MPI_SUM, but not MPI_SUM, so it must not
 * be compressed. */
static void user_sum(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    const float *a = in;
    float       *b = inout;
    (void)dt;
    for (int i = 0; i < *len; i++) {
        b[i] += a[i];
    }
}

/* The same sum over elements of 4 floats (MPI_Type_contiguous(4, MPI_FLOAT)). */
static void user_sum_f4(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    int n4 = 4 * *len;
    user_sum(in, inout, &n4, dt);
}

static void report_exact(const char *name, long mismatches, size_t n)
{
    char detail[160];
    if (0 == mismatches) {
        snprintf(detail, sizeof(detail), "exact (%zu elements)", n);
    } else {
        snprintf(detail, sizeof(detail), "%ld of %zu elements differ from the exact result",
                 mismatches, n);
    }
    report(0 == mismatches, name, detail);
}

/* Float SUM of integer-valued inputs in [lo, hi] for `tag`: every rank's input into `x`, and the
 * exact expected sum over the ranks listed in [r0, r1) into `expect`. */
static void sum_case_float(float *x, float *expect, size_t n, uint64_t tag, int r0, int r1)
{
    float *tmp = xmalloc(n * sizeof(float));
    memset(expect, 0, n * sizeof(float));
    for (int r = r0; r < r1; r++) {
        fill_int_float(tmp, n, r, tag, -1000, 1000);
        for (size_t i = 0; i < n; i++) {
            expect[i] += tmp[i];
        }
    }
    fill_int_float(x, n, g_rank, tag, -1000, 1000);
    free(tmp);
}

static long count_mismatch_f(const float *a, const float *b, size_t n)
{
    long m = 0;
    for (size_t i = 0; i < n; i++) {
        m += (a[i] != b[i]);
    }
    return m;
}

static void mode_passthrough(void)
{
    const size_t n = PT_N;
    const int    P = g_nranks;
    float       *x = xmalloc(n * sizeof(float));
    float       *y = xmalloc(n * sizeof(float));
    float       *e = xmalloc(n * sizeof(float));
    float       *t = xmalloc(n * sizeof(float));
    long         m;

    /* int SUM, in place. */
    {
        int *xi = xmalloc(n * sizeof(int)), *ei = xmalloc(n * sizeof(int)), *ti = xmalloc(n * sizeof(int));
        memset(ei, 0, n * sizeof(int));
        for (int r = 0; r < P; r++) {
            fill_int(ti, n, r, 1, -1000, 1000);
            for (size_t i = 0; i < n; i++) {
                ei[i] += ti[i];
            }
        }
        fill_int(xi, n, g_rank, 1, -1000, 1000);
        MPI_Allreduce(MPI_IN_PLACE, xi, (int)n, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        m = 0;
        for (size_t i = 0; i < n; i++) {
            m += (xi[i] != ei[i]);
        }
        report_exact("MPI_INT MPI_SUM in place", m, n);

        /* int SUM through MPI_Reduce_scatter_block. */
        const size_t blk = n / (size_t)P;
        memset(ei, 0, n * sizeof(int));
        for (int r = 0; r < P; r++) {
            fill_int(ti, blk * (size_t)P, r, 2, -1000, 1000);
            for (size_t i = 0; i < blk * (size_t)P; i++) {
                ei[i] += ti[i];
            }
        }
        fill_int(xi, blk * (size_t)P, g_rank, 2, -1000, 1000);
        MPI_Reduce_scatter_block(xi, ti, (int)blk, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        m = 0;
        for (size_t i = 0; i < blk; i++) {
            m += (ti[i] != ei[(size_t)g_rank * blk + i]);
        }
        report_exact("MPI_INT MPI_SUM MPI_Reduce_scatter_block", m, blk);
        free(xi);
        free(ei);
        free(ti);
    }

    /* double SUM of integer values (exact in any order), out of place, then non-blocking. */
    {
        double *xd = xmalloc(n * sizeof(double)), *yd = xmalloc(n * sizeof(double));
        double *ed = xmalloc(n * sizeof(double)), *td = xmalloc(n * sizeof(double));
        for (int nb = 0; nb < 2; nb++) {
            const uint64_t tag = 3 + (uint64_t)nb;
            memset(ed, 0, n * sizeof(double));
            for (int r = 0; r < P; r++) {
                fill_int_double(td, n, r, tag, -1000000, 1000000);
                for (size_t i = 0; i < n; i++) {
                    ed[i] += td[i];
                }
            }
            fill_int_double(xd, n, g_rank, tag, -1000000, 1000000);
            if (nb) {
                MPI_Request req;
                MPI_Iallreduce(xd, yd, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req);
                MPI_Wait(&req, MPI_STATUS_IGNORE);
            } else {
                MPI_Allreduce(xd, yd, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            }
            m = 0;
            for (size_t i = 0; i < n; i++) {
                m += (yd[i] != ed[i]);
            }
            report_exact(nb ? "MPI_DOUBLE MPI_SUM MPI_Iallreduce" : "MPI_DOUBLE MPI_SUM out of place",
                         m, n);
        }
        free(xd);
        free(yd);
        free(ed);
        free(td);
    }

    /* float MIN and MAX: exact whatever the order. */
    for (int op = 0; op < 2; op++) {
        for (size_t i = 0; i < n; i++) {
            e[i] = op ? -INFINITY : INFINITY;
        }
        for (int r = 0; r < P; r++) {
            fill_uniform(t, n, r, 10 + (uint64_t)op);
            for (size_t i = 0; i < n; i++) {
                e[i] = op ? (t[i] > e[i] ? t[i] : e[i]) : (t[i] < e[i] ? t[i] : e[i]);
            }
        }
        fill_uniform(x, n, g_rank, 10 + (uint64_t)op);
        MPI_Allreduce(x, y, (int)n, MPI_FLOAT, op ? MPI_MAX : MPI_MIN, MPI_COMM_WORLD);
        report_exact(op ? "MPI_FLOAT MPI_MAX" : "MPI_FLOAT MPI_MIN", count_mismatch_f(y, e, n), n);
    }

    /* float PROD of small integers: |product| <= 3^P stays exact for the rank counts used. */
    {
        for (size_t i = 0; i < n; i++) {
            e[i] = 1.0f;
        }
        for (int r = 0; r < P; r++) {
            fill_int_float(t, n, r, 12, -3, 3);
            for (size_t i = 0; i < n; i++) {
                e[i] *= t[i];
            }
        }
        fill_int_float(x, n, g_rank, 12, -3, 3);
        MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_PROD, MPI_COMM_WORLD);
        /* 0 * negative gives -0.0 in some orders: compare values, not bits. */
        report_exact("MPI_FLOAT MPI_PROD", count_mismatch_f(x, e, n), n);
    }

    /* A user-defined op on floats. */
    {
        MPI_Op op;
        MPI_Op_create(user_sum, 1, &op);
        sum_case_float(x, e, n, 13, 0, P);
        MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, op, MPI_COMM_WORLD);
        report_exact("MPI_FLOAT user-defined op", count_mismatch_f(x, e, n), n);
        MPI_Op_free(&op);
    }

    /* A derived contiguous datatype of 4 floats.  MPI defines the predefined ops (MPI_SUM...)
     * on predefined datatypes only, and Open MPI rejects MPI_SUM on any derived type (even a
     * dup of MPI_FLOAT), so the sum comes from a user-defined op over the 4-float elements. */
    {
        MPI_Datatype f4;
        MPI_Op       op;
        MPI_Type_contiguous(4, MPI_FLOAT, &f4);
        MPI_Type_commit(&f4);
        MPI_Op_create(user_sum_f4, 1, &op);
        sum_case_float(x, e, n, 14, 0, P);
        MPI_Allreduce(x, y, (int)(n / 4), f4, op, MPI_COMM_WORLD);
        report_exact("contiguous datatype of 4 MPI_FLOAT, user-defined sum", count_mismatch_f(y, e, n),
                     n);
        MPI_Op_free(&op);
        MPI_Type_free(&f4);
    }

    /* float SUM below the default SQZ_MIN_BYTES (64 KiB): 16383 floats = 65532 bytes. */
    {
        const size_t small = 16383;
        sum_case_float(x, e, small, 15, 0, P);
        MPI_Allreduce(MPI_IN_PLACE, x, (int)small, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        report_exact("MPI_FLOAT MPI_SUM below SQZ_MIN_BYTES (65532 bytes)",
                     count_mismatch_f(x, e, small), small);
    }

    /* float SUM with count 0: nothing to do, and nothing must break. */
    {
        MPI_Allreduce(MPI_IN_PLACE, x, 0, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        report(1, "MPI_FLOAT MPI_SUM count 0", "returned");
    }

    /* float SUM on an intercommunicator: each group receives the sum of the other group's
     * inputs.  Squeeze handles intra-communicators only. */
    if (P >= 2) {
        MPI_Comm  half, inter;
        const int color = g_rank < P / 2 ? 0 : 1;
        MPI_Comm_split(MPI_COMM_WORLD, color, g_rank, &half);
        /* The remote leader is the first rank of the other group, named in MPI_COMM_WORLD. */
        MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, color ? 0 : P / 2, 77, &inter);
        const int r0 = color ? 0 : P / 2, r1 = color ? P / 2 : P;
        sum_case_float(x, e, n, 16, r0, r1);
        MPI_Allreduce(x, y, (int)n, MPI_FLOAT, MPI_SUM, inter);
        report_exact("MPI_FLOAT MPI_SUM on an intercommunicator", count_mismatch_f(y, e, n), n);
        MPI_Comm_free(&inter);
        MPI_Comm_free(&half);
    }
    free(x);
    free(y);
    free(e);
    free(t);
}

/* ---------------------------------------------------------------------------------------------
 * nan
 * ------------------------------------------------------------------------------------------- */
static void mode_nan(double maxrel, int keep_residual)
{
    const size_t n       = 262144;
    const size_t nan_at  = 12345;
    const int    nan_call = 3;
    const int    P       = g_nranks;
    float       *buf     = xmalloc(n * sizeof(float));
    float       *twin    = xmalloc(n * sizeof(float)); /* the same calls, less the NaN one */
    float       *tmp     = xmalloc(n * sizeof(float));
    double      *ref     = xmalloc(n * sizeof(double));
    char         name[128], detail[256];
    for (int call = 1; call <= 6; call++) {
        /* Integer values: the dense sum is exact, so "what PMPI gives" is known bit for bit. */
        const uint64_t tag = 500 + (uint64_t)call;
        memset(ref, 0, n * sizeof(double));
        for (int r = 0; r < P; r++) {
            fill_int_float(tmp, n, r, tag, -100, 100);
            for (size_t i = 0; i < n; i++) {
                ref[i] += tmp[i];
            }
        }
        fill_int_float(buf, n, g_rank, tag, -100, 100);
        if (call == nan_call && g_rank == P - 1) {
            buf[nan_at] = NAN;
        }
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        const int same = all_identical(buf, n * sizeof(float));
        if (call == nan_call) {
            long   wrong = 0;
            size_t first = n;
            for (size_t i = 0; i < n; i++) {
                const int ok = (i == nan_at) ? isnan(buf[i]) : ((double)buf[i] == ref[i]);
                if (!ok) {
                    wrong++;
                    first = first < n ? first : i;
                }
            }
            snprintf(name, sizeof(name), "call %d (NaN at [%zu] on rank %d), n=%zu", call, nan_at,
                     P - 1, n);
            if (wrong) {
                snprintf(detail, sizeof(detail),
                         "%ld element(s) differ from the dense result (first [%zu] = %g, expected "
                         "%g)%s",
                         wrong, first, (double)buf[first], first == nan_at ? NAN : ref[first],
                         same ? "" : "; ranks DIFFER");
            } else {
                snprintf(detail, sizeof(detail), "exactly the dense result (NaN propagated), %s",
                         same ? "bit-identical on all ranks" : "ranks DIFFER");
            }
            report(0 == wrong && same, name, detail);
        } else {
            snprintf(name, sizeof(name), "call %d, n=%zu", call, n);
            check_close_identical(name, buf, ref, n, maxrel, 1);
            if (keep_residual) {
                /* A distinct buffer has its own error-feedback state (keyed on the address). */
                fill_int_float(twin, n, g_rank, tag, -100, 100);
                MPI_Allreduce(MPI_IN_PLACE, twin, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                const int equal = 0 == memcmp(twin, buf, n * sizeof(float));
                double    d2 = 0.0, t2 = 0.0, dmax = 0.0;
                long      ndiff = 0;
                for (size_t i = 0; i < n; i++) {
                    const double d = (double)buf[i] - (double)twin[i];
                    d2 += d * d;
                    t2 += (double)twin[i] * twin[i];
                    dmax = fabs(d) > dmax ? fabs(d) : dmax;
                    ndiff += buf[i] != twin[i];
                }
                /* The residual is put back arithmetically (r + decoded - in), which is exact
                 * only up to float rounding, and a rounding-level change may flip a quantizer
                 * code: allow that, but not a residual lost or applied twice (~1e-1). */
                const double rel = t2 > 0.0 ? sqrt(d2 / t2) : sqrt(d2);
                snprintf(name, sizeof(name), "call %d, n=%zu, residual kept", call, n);
                if (equal) {
                    snprintf(detail, sizeof(detail),
                             "same bits as a buffer that never saw the NaN call");
                } else {
                    snprintf(detail, sizeof(detail),
                             "%ld element(s) differ from a buffer that never saw the NaN call, "
                             "rel %.3e (max 1e-2), max abs %.3e",
                             ndiff, rel, dmax);
                }
                report(rel <= 1e-2, name, detail);
            }
        }
    }
    free(buf);
    free(twin);
    free(tmp);
    free(ref);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_nranks);
    const char *mode   = argc > 1 ? argv[1] : "";
    double      maxrel = 1.0;
    if (argc > 2) {
        char *end = NULL;
        maxrel    = strtod(argv[2], &end);
        if (*end || !(maxrel >= 0.0)) {
            mode = "";
        }
    }
    if (0 == strcmp(mode, "bitident")) {
        mode_bitident(maxrel);
    } else if (0 == strcmp(mode, "passthrough")) {
        mode_passthrough();
    } else if (0 == strcmp(mode, "nan") && (argc < 4 || 0 == strcmp(argv[3], "keep-residual"))) {
        mode_nan(maxrel, argc > 3);
    } else if (0 == strcmp(mode, "size") && 3 == argc) {
        char detail[80];
        snprintf(detail, sizeof(detail), "%d rank(s), expected %s", g_nranks, argv[2]);
        report(g_nranks == atoi(argv[2]), "MPI_COMM_WORLD size", detail);
    } else {
        if (0 == g_rank) {
            fprintf(stderr, "usage: mpi_allreduce_check bitident|passthrough [MAXREL]\n"
                            "       mpi_allreduce_check nan [MAXREL [keep-residual]]\n"
                            "       mpi_allreduce_check size N\n");
        }
        MPI_Finalize();
        return 2;
    }
    if (0 == g_rank) {
        printf("%s: %s (%d rank(s))\n", mode, g_failures ? "FAILED" : "all checks passed",
               g_nranks);
    }
    MPI_Finalize();
    return g_failures ? 1 : 0;
}
