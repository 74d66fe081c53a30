/*
 * sqz_bow_train: a communication-bound data-parallel training job, for time-to-accuracy runs.
 *
 * A bag-of-words text classifier: each sample is L token ids from a vocabulary of V; the model
 * averages their D-dimensional embeddings, applies a ReLU hidden layer of H units and a softmax
 * over C classes.  The embedding table (V x D, 3.2M floats by default) dominates the parameters
 * while the compute per step is tiny, as in recommendation and NLP models with large embedding
 * tables: the gradient all-reduce, not the arithmetic, sets the step time on a slow network.
 *
 * Plain MPI, like any unmodified job: every step packs all gradients in one float buffer, sums
 * it with MPI_Allreduce(MPI_IN_PLACE, ..., MPI_FLOAT, MPI_SUM) and divides by the number of ranks;
 * the loss is averaged with a double all-reduce.  Synthetic data: class c owns a set of keyword
 * tokens; a sample draws each token from its class's keywords with probability --signal, else
 * uniformly from the vocabulary.  Each rank draws its own samples; the test set is the same on
 * every rank.
 *
 * Options: --steps N --batch B --vocab V --dim D --hidden H --classes C --tokens L --lr LR
 *          --momentum M --signal P --seed S --eval-every E --log FILE (CSV: step,seconds,loss,
 *          test_accuracy; accuracy empty between evaluations) --json FILE (final figures).
 * At the end it checks that every rank holds bit-identical parameters (exit 3 otherwise).
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int    steps, batch, vocab, dim, hidden, classes, tokens, eval_every, test_size;
    double lr, momentum, signal;
    unsigned long long seed;
    const char *log, *json;
} opts_t;

typedef struct {
    size_t E, W1, b1, W2, b2, n; /* offsets into the flat parameter buffer, and its size */
} layout_t;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r) { return r->s = mix(r->s); }
static double   rng_unif(rng_t *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
static double   rng_normal(rng_t *r)
{
    const double u1 = rng_unif(r) + 1e-300, u2 = rng_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Keyword k of class c: a fixed pseudo-random token. */
static int keyword(const opts_t *o, int c, int k)
{
    return (int)(mix(o->seed * 7919u + (uint64_t)c * 1000003u + (uint64_t)k) % (uint64_t)o->vocab);
}

#define KEYWORDS 50

static int sample(const opts_t *o, rng_t *r, int *tok)
{
    const int c = (int)(rng_next(r) % (uint64_t)o->classes);
    for (int t = 0; t < o->tokens; t++) {
        tok[t] = rng_unif(r) < o->signal ? keyword(o, c, (int)(rng_next(r) % KEYWORDS))
                                         : (int)(rng_next(r) % (uint64_t)o->vocab);
    }
    return c;
}

/* Forward pass of one sample; fills h0 (D), a1 (H), p (C softmax).  Returns the loss. */
static double forward(const opts_t *o, const layout_t *L, const float *w, const int *tok, int y,
                      float *h0, float *a1, float *p)
{
    const int D = o->dim, H = o->hidden, C = o->classes;
    memset(h0, 0, (size_t)D * sizeof(float));
    for (int t = 0; t < o->tokens; t++) {
        const float *e = w + L->E + (size_t)tok[t] * (size_t)D;
        for (int d = 0; d < D; d++) {
            h0[d] += e[d];
        }
    }
    const float inv = 1.0f / (float)o->tokens;
    for (int d = 0; d < D; d++) {
        h0[d] *= inv;
    }
    for (int h = 0; h < H; h++) {
        float z = w[L->b1 + (size_t)h];
        for (int d = 0; d < D; d++) {
            z += w[L->W1 + (size_t)h * (size_t)D + (size_t)d] * h0[d];
        }
        a1[h] = z > 0 ? z : 0;
    }
    float zmax = -INFINITY;
    for (int c = 0; c < C; c++) {
        float z = w[L->b2 + (size_t)c];
        for (int h = 0; h < H; h++) {
            z += w[L->W2 + (size_t)c * (size_t)H + (size_t)h] * a1[h];
        }
        p[c] = z;
        zmax = z > zmax ? z : zmax;
    }
    double sum = 0;
    for (int c = 0; c < C; c++) {
        p[c] = expf(p[c] - zmax);
        sum += p[c];
    }
    for (int c = 0; c < C; c++) {
        p[c] = (float)(p[c] / sum);
    }
    return -log((double)p[y] + 1e-12);
}

static void backward(const opts_t *o, const layout_t *L, const float *w, float *g, const int *tok,
                     int y, const float *h0, const float *a1, const float *p, float scale)
{
    const int D = o->dim, H = o->hidden, C = o->classes;
    float     dz2[64], da1[256], dh0[256];
    for (int c = 0; c < C; c++) {
        dz2[c] = (p[c] - (c == y ? 1.0f : 0.0f)) * scale;
        g[L->b2 + (size_t)c] += dz2[c];
        for (int h = 0; h < H; h++) {
            g[L->W2 + (size_t)c * (size_t)H + (size_t)h] += dz2[c] * a1[h];
        }
    }
    for (int h = 0; h < H; h++) {
        float s = 0;
        for (int c = 0; c < C; c++) {
            s += w[L->W2 + (size_t)c * (size_t)H + (size_t)h] * dz2[c];
        }
        da1[h] = a1[h] > 0 ? s : 0;
        g[L->b1 + (size_t)h] += da1[h];
    }
    memset(dh0, 0, (size_t)D * sizeof(float));
    for (int h = 0; h < H; h++) {
        for (int d = 0; d < D; d++) {
            g[L->W1 + (size_t)h * (size_t)D + (size_t)d] += da1[h] * h0[d];
            dh0[d] += w[L->W1 + (size_t)h * (size_t)D + (size_t)d] * da1[h];
        }
    }
    /* The embedding rows get the gradient of a sum (not a mean) of their tokens: with mean pooling
     * each row's gradient is L times smaller than the layers above it, and one learning rate
     * cannot serve both (a per-layer learning rate, folded into the gradient). */
    for (int t = 0; t < o->tokens; t++) {
        float *ge = g + L->E + (size_t)tok[t] * (size_t)D;
        for (int d = 0; d < D; d++) {
            ge[d] += dh0[d];
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: sqz_bow_train [--steps N] [--batch B] [--vocab V] [--dim D] [--hidden H]\n"
                    "  [--classes C] [--tokens L] [--lr LR] [--momentum M] [--signal P] [--seed S]\n"
                    "  [--eval-every E] [--log FILE.csv] [--json FILE]\n");
}

static int parse(opts_t *o, int argc, char **argv)
{
    *o = (opts_t){.steps = 300, .batch = 32, .vocab = 50000, .dim = 64, .hidden = 64, .classes = 10,
                  .tokens = 32, .eval_every = 10, .test_size = 2000, .lr = 0.2, .momentum = 0.9,
                  .signal = 0.1, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (NULL == v) {
            return -1;
        }
        if (0 == strcmp(a, "--steps")) o->steps = atoi(v);
        else if (0 == strcmp(a, "--batch")) o->batch = atoi(v);
        else if (0 == strcmp(a, "--vocab")) o->vocab = atoi(v);
        else if (0 == strcmp(a, "--dim")) o->dim = atoi(v);
        else if (0 == strcmp(a, "--hidden")) o->hidden = atoi(v);
        else if (0 == strcmp(a, "--classes")) o->classes = atoi(v);
        else if (0 == strcmp(a, "--tokens")) o->tokens = atoi(v);
        else if (0 == strcmp(a, "--lr")) o->lr = atof(v);
        else if (0 == strcmp(a, "--momentum")) o->momentum = atof(v);
        else if (0 == strcmp(a, "--signal")) o->signal = atof(v);
        else if (0 == strcmp(a, "--seed")) o->seed = strtoull(v, NULL, 10);
        else if (0 == strcmp(a, "--eval-every")) o->eval_every = atoi(v);
        else if (0 == strcmp(a, "--log")) o->log = v;
        else if (0 == strcmp(a, "--json")) o->json = v;
        else return -1;
        i++;
    }
    if (o->steps < 1 || o->batch < 1 || o->vocab < 1000 || o->dim < 1 || o->dim > 256 ||
        o->hidden < 1 || o->hidden > 256 || o->classes < 2 || o->classes > 64 || o->tokens < 1 ||
        o->eval_every < 1) {
        return -1;
    }
    return 0;
}

static double accuracy(const opts_t *o, const layout_t *L, const float *w)
{
    rng_t r = {.s = o->seed * 31337u + 99};
    int   tok[1024], ok = 0;
    float h0[256], a1[256], p[64];
    for (int s = 0; s < o->test_size; s++) {
        const int y = sample(o, &r, tok);
        forward(o, L, w, tok, y, h0, a1, p);
        int best = 0;
        for (int c = 1; c < o->classes; c++) {
            best = p[c] > p[best] ? c : best;
        }
        ok += best == y;
    }
    return (double)ok / o->test_size;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    opts_t o;
    if (0 != parse(&o, argc, argv) || o.tokens > 1024) {
        if (0 == rank) {
            usage();
        }
        MPI_Finalize();
        return 2;
    }
    layout_t L;
    L.E  = 0;
    L.W1 = L.E + (size_t)o.vocab * (size_t)o.dim;
    L.b1 = L.W1 + (size_t)o.hidden * (size_t)o.dim;
    L.W2 = L.b1 + (size_t)o.hidden;
    L.b2 = L.W2 + (size_t)o.classes * (size_t)o.hidden;
    L.n  = L.b2 + (size_t)o.classes;
    float *w = malloc(L.n * sizeof(float)), *g = malloc(L.n * sizeof(float));
    float *m = calloc(L.n, sizeof(float));
    /* The same initial weights on every rank. */
    rng_t init = {.s = o.seed};
    for (size_t i = 0; i < L.n; i++) {
        const double fan = i < L.W1 ? 10.0 : (i < L.W2 ? (double)o.dim : (double)o.hidden);
        w[i]             = (float)(rng_normal(&init) / sqrt(fan));
    }
    FILE *log = (0 == rank && o.log) ? fopen(o.log, "w") : NULL;
    if (log) {
        fprintf(log, "step,seconds,loss,test_accuracy\n");
    }
    if (0 == rank) {
        printf("bow: %zu parameters (%.1f MB of gradient per step), %d ranks, batch %d per rank\n",
               L.n, (double)L.n * 4 / 1e6, P, o.batch);
    }
    int   tok[1024];
    float h0[256], a1[256], p[64];
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    double       loss = 0, acc = 0;
    for (int step = 1; step <= o.steps; step++) {
        rng_t r = {.s = mix(o.seed ^ ((uint64_t)rank << 32) ^ (uint64_t)step * 0x9e37u)};
        memset(g, 0, L.n * sizeof(float));
        double local = 0;
        for (int b = 0; b < o.batch; b++) {
            const int y = sample(&o, &r, tok);
            local += forward(&o, &L, w, tok, y, h0, a1, p);
            backward(&o, &L, w, g, tok, y, h0, a1, p, 1.0f / (float)o.batch);
        }
        MPI_Allreduce(MPI_IN_PLACE, g, (int)L.n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        local /= o.batch;
        MPI_Allreduce(&local, &loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        loss /= P;
        const float inv = 1.0f / (float)P, lr = (float)o.lr, mom = (float)o.momentum;
        for (size_t i = 0; i < L.n; i++) {
            m[i] = mom * m[i] + g[i] * inv;
            w[i] -= lr * m[i];
        }
        const int eval = (0 == step % o.eval_every) || step == o.steps;
        if (eval) {
            acc = 0 == rank ? accuracy(&o, &L, w) : 0;
        }
        if (log) {
            if (eval) {
                fprintf(log, "%d,%.6f,%.6f,%.4f\n", step, MPI_Wtime() - t0, loss, acc);
            } else {
                fprintf(log, "%d,%.6f,%.6f,\n", step, MPI_Wtime() - t0, loss);
            }
        }
    }
    const double secs = MPI_Wtime() - t0;
    /* Replicas: every rank must hold the same bits. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < L.n; i++) {
        uint32_t u;
        memcpy(&u, &w[i], sizeof(u));
        h = (h ^ u) * 1099511628211ull;
    }
    unsigned long long hmin, hmax, hl = h;
    MPI_Allreduce(&hl, &hmin, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&hl, &hmax, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (0 == rank) {
        printf("final train loss: %.4f\ntest accuracy: %.4f\nwall seconds: %.3f (%.2f ms/step)\n"
               "replicas: %s\n", loss, acc, secs, 1e3 * secs / o.steps,
               hmin == hmax ? "identical" : "DIFFER");
        if (o.json) {
            FILE *f = fopen(o.json, "w");
            if (f) {
                fprintf(f, "{\"loss\": %.6f, \"accuracy\": %.6f, \"seconds\": %.6f, \"steps\": %d, "
                           "\"ranks\": %d, \"replicas_identical\": %s}\n",
                        loss, acc, secs, o.steps, P, hmin == hmax ? "true" : "false");
                fclose(f);
            }
        }
    }
    if (log) {
        fclose(log);
    }
    free(w);
    free(g);
    free(m);
    MPI_Finalize();
    return hmin == hmax ? 0 : 3;
}
