/*
 * sqz_mlp_train: data-parallel training of a small MLP with plain MPI.
 *
 * This is the "unmodified job" of the Squeeze demo: it knows nothing about Squeeze.  Run it as is
 * for dense training, or with LD_PRELOAD=libsqueeze_mpi.so and SQZ_METHOD=... to compress its
 * gradient all-reduce.
 *
 * Model: 64 inputs -> 256 ReLU -> 256 ReLU -> 10 softmax (85,002 parameters with biases).
 * Task:  10 classes, each a mixture of two Gaussian clusters in 64 dimensions (so the classes are
 *        not linearly separable), generated deterministically from --seed.  Every rank draws its
 *        own training shard; the held-out test set is the same on every rank.
 * Step:  forward/backward on the local batch, ONE MPI_Allreduce (in place, MPI_FLOAT, MPI_SUM) of
 *        all gradients packed in a flat buffer, division by the number of ranks, then SGD with
 *        momentum done locally.  The batch loss is summed with a separate small MPI_Allreduce of
 *        one double (not a float SUM, so a compressor leaves it exact).
 * End:   prints the final train loss, the test accuracy, the wall time, and checks that every
 *        rank holds bit-identical parameters (exit 3 when they differ).
 *
 * Usage: sqz_mlp_train [--steps N] [--batch B] [--lr LR] [--momentum M] [--seed S] [--json FILE]
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* M_PI is POSIX, not C11. */
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define N_IN 64
#define N_H1 256
#define N_H2 256
#define N_OUT 10
#define N_CLUSTERS_PER_CLASS 2
#define N_TRAIN_PER_RANK 8192
#define N_TEST 4000
/* Cluster centres are drawn as SEPARATION * N(0, I) and samples as centre + N(0, I).  With 0.5,
 * dense training reaches ~94% test accuracy in 300 steps and a few percent of the samples stay
 * ambiguous, so that accuracy differences between methods show. */
#define SEPARATION 0.5f

/* ---------------------------------------------------------------------------------------------
 * Deterministic random numbers (splitmix64): the same stream on every machine and compiler.
 * ------------------------------------------------------------------------------------------- */
typedef struct rng {
    uint64_t s;
    int      have_spare;
    float    spare;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static rng_t rng_make(uint64_t seed, uint64_t stream)
{
    rng_t r = {seed * 0x2545f4914f6cdd1dull + stream * 0x9e3779b97f4a7c15ull + 1, 0, 0.0f};
    (void)rng_next(&r);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(rng_t *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Standard normal (Box-Muller; the second value is kept for the next call). */
static float rng_normal(rng_t *r)
{
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    double u1 = rng_uniform(r);
    double u2 = rng_uniform(r);
    if (u1 < 1e-300) {
        u1 = 1e-300;
    }
    const double rad = sqrt(-2.0 * log(u1));
    r->spare         = (float)(rad * sin(2.0 * M_PI * u2));
    r->have_spare    = 1;
    return (float)(rad * cos(2.0 * M_PI * u2));
}

/* ---------------------------------------------------------------------------------------------
 * Data
 * ------------------------------------------------------------------------------------------- */
typedef struct dataset {
    int    n;
    float *x; /* n * N_IN */
    int   *y; /* n */
} dataset_t;

static void make_centres(uint64_t seed, float *centres)
{
    rng_t r = rng_make(seed, 1);
    for (int i = 0; i < N_OUT * N_CLUSTERS_PER_CLASS * N_IN; i++) {
        centres[i] = SEPARATION * rng_normal(&r);
    }
}

static int make_dataset(dataset_t *d, int n, const float *centres, uint64_t seed, uint64_t stream)
{
    d->n = n;
    d->x = malloc((size_t)n * N_IN * sizeof(float));
    d->y = malloc((size_t)n * sizeof(int));
    if (NULL == d->x || NULL == d->y) {
        return -1;
    }
    rng_t r = rng_make(seed, stream);
    for (int i = 0; i < n; i++) {
        const int    c = (int)(rng_next(&r) % N_OUT);
        const int    k = (int)(rng_next(&r) % N_CLUSTERS_PER_CLASS);
        const float *m = centres + (size_t)(c * N_CLUSTERS_PER_CLASS + k) * N_IN;
        for (int j = 0; j < N_IN; j++) {
            d->x[(size_t)i * N_IN + j] = m[j] + rng_normal(&r);
        }
        d->y[i] = c;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Model: all parameters in one flat array, the gradients in another of the same layout, so that
 * the whole gradient is one all-reduce.
 * ------------------------------------------------------------------------------------------- */
enum {
    OFF_W1 = 0,
    OFF_B1 = OFF_W1 + N_IN * N_H1,
    OFF_W2 = OFF_B1 + N_H1,
    OFF_B2 = OFF_W2 + N_H1 * N_H2,
    OFF_W3 = OFF_B2 + N_H2,
    OFF_B3 = OFF_W3 + N_H2 * N_OUT,
    N_PARAMS = OFF_B3 + N_OUT
};

/* Activations of one batch. */
typedef struct acts {
    float *z1, *a1, *z2, *a2, *p; /* B*N_H1, B*N_H1, B*N_H2, B*N_H2, B*N_OUT */
    float *d1, *d2, *d3;          /* deltas of the same shapes as z1, z2, p */
} acts_t;

static void init_params(float *theta, uint64_t seed)
{
    /* He initialization; the same seed gives the same model on every rank. */
    rng_t r = rng_make(seed, 2);
    const struct {
        int off, nin, nout;
    } layers[3] = {{OFF_W1, N_IN, N_H1}, {OFF_W2, N_H1, N_H2}, {OFF_W3, N_H2, N_OUT}};
    memset(theta, 0, N_PARAMS * sizeof(float));
    for (int l = 0; l < 3; l++) {
        const float sd = sqrtf(2.0f / (float)layers[l].nin);
        for (int i = 0; i < layers[l].nin * layers[l].nout; i++) {
            theta[layers[l].off + i] = sd * rng_normal(&r);
        }
    }
}

/* y += a * x over n floats (the inner loop of every matrix product: contiguous, vectorizable). */
static void axpy(float *restrict y, float a, const float *restrict x, int n)
{
    for (int j = 0; j < n; j++) {
        y[j] += a * x[j];
    }
}

/* Dot product with 8 independent partial sums: vectorizable without -ffast-math, and the same
 * fixed summation order on every rank. */
static float dot(const float *restrict a, const float *restrict b, int n)
{
    float acc[8] = {0};
    int   j      = 0;
    for (; j + 8 <= n; j += 8) {
        for (int l = 0; l < 8; l++) {
            acc[l] += a[j + l] * b[j + l];
        }
    }
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; j++) {
        s += a[j] * b[j];
    }
    return s;
}

/* y[b] = bias + x[b] W for a batch; W is nin x nout row-major.  Zero inputs (ReLU outputs) are
 * skipped, which halves the work of the hidden layers. */
static void dense_forward(const float *x, int B, int nin, int nout, const float *W,
                          const float *bias, float *y)
{
    for (int b = 0; b < B; b++) {
        float       *yb = y + (size_t)b * nout;
        const float *xb = x + (size_t)b * nin;
        memcpy(yb, bias, (size_t)nout * sizeof(float));
        for (int k = 0; k < nin; k++) {
            if (0.0f != xb[k]) {
                axpy(yb, xb[k], W + (size_t)k * nout, nout);
            }
        }
    }
}

/* gW = x^T d, gb = sum_b d. */
static void dense_backward_params(const float *x, const float *d, int B, int nin, int nout,
                                  float *gW, float *gb)
{
    memset(gW, 0, (size_t)nin * nout * sizeof(float));
    memset(gb, 0, (size_t)nout * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * nin;
        const float *db = d + (size_t)b * nout;
        for (int k = 0; k < nin; k++) {
            if (0.0f != xb[k]) {
                axpy(gW + (size_t)k * nout, xb[k], db, nout);
            }
        }
        axpy(gb, 1.0f, db, nout);
    }
}

/* dx[b][k] = (d[b] . W[k]) where the layer below was active (z > 0), else 0: the ReLU backward
 * folded into the product. */
static void dense_backward_input(const float *d, const float *W, const float *z, int B, int nin,
                                 int nout, float *dx)
{
    for (int b = 0; b < B; b++) {
        const float *db = d + (size_t)b * nout;
        for (int k = 0; k < nin; k++) {
            const size_t i = (size_t)b * nin + k;
            dx[i]          = z[i] > 0.0f ? dot(W + (size_t)k * nout, db, nout) : 0.0f;
        }
    }
}

static void relu(const float *z, float *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        a[i] = z[i] > 0.0f ? z[i] : 0.0f;
    }
}

/* Forward pass; fills act->p with the class probabilities.  \return the summed cross-entropy
 * (when y is not NULL) and counts correct predictions in *correct (when not NULL). */
static double forward(const float *theta, const float *x, const int *y, int B, acts_t *act,
                      int *correct)
{
    dense_forward(x, B, N_IN, N_H1, theta + OFF_W1, theta + OFF_B1, act->z1);
    relu(act->z1, act->a1, (size_t)B * N_H1);
    dense_forward(act->a1, B, N_H1, N_H2, theta + OFF_W2, theta + OFF_B2, act->z2);
    relu(act->z2, act->a2, (size_t)B * N_H2);
    dense_forward(act->a2, B, N_H2, N_OUT, theta + OFF_W3, theta + OFF_B3, act->p);
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        float *pb   = act->p + (size_t)b * N_OUT;
        float  zmax = pb[0];
        int    best = 0;
        for (int c = 1; c < N_OUT; c++) {
            if (pb[c] > zmax) {
                zmax = pb[c];
                best = c;
            }
        }
        float sum = 0.0f;
        for (int c = 0; c < N_OUT; c++) {
            pb[c] = expf(pb[c] - zmax);
            sum += pb[c];
        }
        for (int c = 0; c < N_OUT; c++) {
            pb[c] /= sum;
        }
        if (y) {
            const float py = pb[y[b]] > 1e-30f ? pb[y[b]] : 1e-30f;
            loss -= log((double)py);
        }
        if (correct && y && best == y[b]) {
            (*correct)++;
        }
    }
    return loss;
}

/* Backward pass for the batch of the last forward(); writes the gradient of the mean loss. */
static void backward(const float *theta, const float *x, const int *y, int B, acts_t *act,
                     float *grad)
{
    const float invB = 1.0f / (float)B;
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < N_OUT; c++) {
            const size_t i = (size_t)b * N_OUT + c;
            act->d3[i]     = (act->p[i] - (c == y[b] ? 1.0f : 0.0f)) * invB;
        }
    }
    dense_backward_params(act->a2, act->d3, B, N_H2, N_OUT, grad + OFF_W3, grad + OFF_B3);
    dense_backward_input(act->d3, theta + OFF_W3, act->z2, B, N_H2, N_OUT, act->d2);
    dense_backward_params(act->a1, act->d2, B, N_H1, N_H2, grad + OFF_W2, grad + OFF_B2);
    dense_backward_input(act->d2, theta + OFF_W2, act->z1, B, N_H1, N_H2, act->d1);
    dense_backward_params(x, act->d1, B, N_IN, N_H1, grad + OFF_W1, grad + OFF_B1);
}

static int acts_alloc(acts_t *a, int B)
{
    const size_t b = (size_t)B;
    a->z1          = malloc(b * N_H1 * sizeof(float));
    a->a1          = malloc(b * N_H1 * sizeof(float));
    a->z2          = malloc(b * N_H2 * sizeof(float));
    a->a2          = malloc(b * N_H2 * sizeof(float));
    a->p           = malloc(b * N_OUT * sizeof(float));
    a->d1          = malloc(b * N_H1 * sizeof(float));
    a->d2          = malloc(b * N_H2 * sizeof(float));
    a->d3          = malloc(b * N_OUT * sizeof(float));
    return (a->z1 && a->a1 && a->z2 && a->a2 && a->p && a->d1 && a->d2 && a->d3) ? 0 : -1;
}

static void acts_free(acts_t *a)
{
    free(a->z1);
    free(a->a1);
    free(a->z2);
    free(a->a2);
    free(a->p);
    free(a->d1);
    free(a->d2);
    free(a->d3);
}

/* FNV-1a over the bytes: replicas are compared bit for bit, not within a tolerance. */
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

/* ---------------------------------------------------------------------------------------------
 * Driver
 * ------------------------------------------------------------------------------------------- */
typedef struct options {
    long        steps;
    long        batch;
    double      lr;
    double      momentum;
    long        seed;
    const char *json;
} options_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: sqz_mlp_train [--steps N] [--batch B] [--lr LR] [--momentum M] [--seed S] "
               "[--json FILE]\n"
               "  --steps N     training steps (default 300)\n"
               "  --batch B     samples per rank and step (default 64)\n"
               "  --lr LR       learning rate (default 0.05)\n"
               "  --momentum M  SGD momentum (default 0.9)\n"
               "  --seed S      seed of the data and of the initial model (default 1)\n"
               "  --json FILE   rank 0 writes the final loss, accuracy, seconds and steps there\n");
}

/* \return 0 on success, 1 for --help, -1 on a bad argument. */
static int parse_options(int argc, char **argv, options_t *o)
{
    *o = (options_t){.steps = 300, .batch = 64, .lr = 0.05, .momentum = 0.9, .seed = 1, .json = NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (0 == strcmp(a, "--help") || 0 == strcmp(a, "-h")) {
            return 1;
        }
        if (i + 1 >= argc) {
            return -1;
        }
        const char *v   = argv[++i];
        char       *end = NULL;
        if (0 == strcmp(a, "--steps")) {
            o->steps = strtol(v, &end, 10);
            if (*end || o->steps < 1) {
                return -1;
            }
        } else if (0 == strcmp(a, "--batch")) {
            o->batch = strtol(v, &end, 10);
            if (*end || o->batch < 1 || o->batch > 65536) {
                return -1;
            }
        } else if (0 == strcmp(a, "--lr")) {
            o->lr = strtod(v, &end);
            if (*end || !(o->lr > 0.0)) {
                return -1;
            }
        } else if (0 == strcmp(a, "--momentum")) {
            o->momentum = strtod(v, &end);
            if (*end || !(o->momentum >= 0.0 && o->momentum < 1.0)) {
                return -1;
            }
        } else if (0 == strcmp(a, "--seed")) {
            o->seed = strtol(v, &end, 10);
            if (*end || o->seed < 0) {
                return -1;
            }
        } else if (0 == strcmp(a, "--json")) {
            o->json = v;
        } else {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, nranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);

    options_t opt;
    const int prc = parse_options(argc, argv, &opt);
    if (0 != prc) {
        if (0 == rank) {
            usage(prc > 0 ? stdout : stderr);
        }
        MPI_Finalize();
        return prc > 0 ? 0 : 2;
    }
    const int      B    = (int)opt.batch;
    const uint64_t seed = (uint64_t)opt.seed;

    float    *centres = malloc(N_OUT * N_CLUSTERS_PER_CLASS * N_IN * sizeof(float));
    float    *theta   = malloc(N_PARAMS * sizeof(float));
    float    *grad    = malloc(N_PARAMS * sizeof(float));
    float    *vel     = calloc(N_PARAMS, sizeof(float));
    float    *xb      = malloc((size_t)B * N_IN * sizeof(float));
    int      *yb      = malloc((size_t)B * sizeof(int));
    int      *perm    = malloc(N_TRAIN_PER_RANK * sizeof(int));
    dataset_t train = {0}, test = {0};
    acts_t    act = {0}, eval = {0};
    enum { EVAL_BATCH = 500 };
    if (NULL == centres || NULL == theta || NULL == grad || NULL == vel || NULL == xb ||
        NULL == yb || NULL == perm || 0 != acts_alloc(&act, B) || 0 != acts_alloc(&eval, EVAL_BATCH)) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    make_centres(seed, centres);
    /* Stream 1000 + rank: a shard of its own per rank; stream 3: the shared test set. */
    if (0 != make_dataset(&train, N_TRAIN_PER_RANK, centres, seed, 1000 + (uint64_t)rank) ||
        0 != make_dataset(&test, N_TEST, centres, seed, 3)) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    init_params(theta, seed);
    rng_t shuffle = rng_make(seed, 2000 + (uint64_t)rank);
    for (int i = 0; i < N_TRAIN_PER_RANK; i++) {
        perm[i] = i;
    }

    if (0 == rank) {
        printf("sqz_mlp_train: %d rank(s), %d parameters, %ld steps, batch %d per rank, lr %g, "
               "momentum %g, seed %ld\n",
               nranks, N_PARAMS, opt.steps, B, opt.lr, opt.momentum, opt.seed);
        fflush(stdout);
    }

    MPI_Barrier(MPI_COMM_WORLD);
    const double t0       = MPI_Wtime();
    const float  scale    = 1.0f / (float)nranks;
    const float  lr       = (float)opt.lr;
    const float  mu       = (float)opt.momentum;
    const long   tail     = opt.steps < 10 ? opt.steps : 10;
    double       tail_sum = 0.0;
    int          cursor   = N_TRAIN_PER_RANK; /* forces a shuffle before the first batch */
    for (long step = 0; step < opt.steps; step++) {
        for (int b = 0; b < B; b++) {
            if (cursor >= N_TRAIN_PER_RANK) {
                /* A new epoch over the local shard, in a new order (Fisher-Yates). */
                for (int i = N_TRAIN_PER_RANK - 1; i > 0; i--) {
                    const int j = (int)(rng_next(&shuffle) % (uint64_t)(i + 1));
                    const int t = perm[i];
                    perm[i]     = perm[j];
                    perm[j]     = t;
                }
                cursor = 0;
            }
            const int s = perm[cursor++];
            memcpy(xb + (size_t)b * N_IN, train.x + (size_t)s * N_IN, N_IN * sizeof(float));
            yb[b] = train.y[s];
        }
        double loss = forward(theta, xb, yb, B, &act, NULL) / B;
        backward(theta, xb, yb, B, &act, grad);

        /* The gradient all-reduce Squeeze compresses: one flat float buffer, in place. */
        MPI_Allreduce(MPI_IN_PLACE, grad, N_PARAMS, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        /* The loss: one double, which Squeeze passes through exactly. */
        MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        loss /= nranks;

        for (int i = 0; i < N_PARAMS; i++) {
            vel[i]   = mu * vel[i] + grad[i] * scale;
            theta[i] = theta[i] - lr * vel[i];
        }
        if (step >= opt.steps - tail) {
            tail_sum += loss;
        }
        if (0 == rank && (0 == (step + 1) % 50 || step + 1 == opt.steps)) {
            printf("step %5ld  loss %.4f\n", step + 1, loss);
            fflush(stdout);
        }
    }
    double seconds = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    const double final_loss = tail_sum / (double)tail;

    /* Every rank holds the same model when the all-reduce gave every rank the same bits, so each
     * evaluates the shared test set itself. */
    int correct = 0;
    for (int i = 0; i < N_TEST; i += EVAL_BATCH) {
        const int n = N_TEST - i < EVAL_BATCH ? N_TEST - i : EVAL_BATCH;
        (void)forward(theta, test.x + (size_t)i * N_IN, test.y + i, n, &eval, &correct);
    }
    const double accuracy = (double)correct / N_TEST;

    /* Bit-identical replicas: the max and the min of the hashes agree only if all do. */
    unsigned long long h = hash_bytes(theta, N_PARAMS * sizeof(float)), hmax = 0, hmin = 0;
    MPI_Allreduce(&h, &hmax, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hmin, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    const int identical = (hmax == hmin);

    int rc = identical ? 0 : 3;
    if (0 == rank) {
        printf("final train loss: %.4f (mean of the last %ld steps)\n", final_loss, tail);
        printf("test accuracy: %.4f\n", accuracy);
        printf("wall seconds: %.3f\n", seconds);
        printf("replicas: %s\n", identical ? "identical" : "DIFFER");
        fflush(stdout);
        if (opt.json) {
            FILE *f = fopen(opt.json, "w");
            if (NULL == f) {
                perror(opt.json);
                rc = rc ? rc : 1;
            } else {
                fprintf(f,
                        "{\n  \"ranks\": %d,\n  \"params\": %d,\n  \"steps\": %ld,\n"
                        "  \"batch\": %d,\n  \"loss\": %.6f,\n  \"accuracy\": %.6f,\n"
                        "  \"seconds\": %.6f,\n  \"replicas_identical\": %s\n}\n",
                        nranks, N_PARAMS, opt.steps, B, final_loss, accuracy, seconds,
                        identical ? "true" : "false");
                if (0 != fclose(f)) {
                    perror(opt.json);
                    rc = rc ? rc : 1;
                }
            }
        }
    }
    if (!identical) {
        fprintf(stderr, "rank %d: parameter hash %016llx (ranks disagree)\n", rank, h);
    }

    acts_free(&act);
    acts_free(&eval);
    free(train.x);
    free(train.y);
    free(test.x);
    free(test.y);
    free(centres);
    free(theta);
    free(grad);
    free(vel);
    free(xb);
    free(yb);
    free(perm);
    MPI_Finalize();
    return rc;
}
