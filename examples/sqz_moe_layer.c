/* A mixture-of-experts layer trained with SGD under mpirun: one small FFN expert per rank
 * (D -> H -> D, ReLU), tokens drawn around K cluster centers, routed to expert (cluster mod P),
 * regressing y = x + sin(x) (element-wise).  Each step makes three MPI_Alltoallv calls: dispatch
 * (tokens to the experts), combine (outputs back), and the gradient of the loss with respect to
 * the outputs (to the experts again).  Plain MPI: run it as it is for the uncompressed baseline,
 * and under libsqueeze_mpi.so with
 *
 *     SQZ_MOE=cycle SQZ_MOE_CYCLE=lsh,dedup,none SQZ_MOE_DIM=<D>
 *
 * for LSH-MoE through the interposer (dispatch by LSH centroids, combine de-duplicated, gradients
 * exact: the interposer cannot tell which tokens shared a centroid).
 *
 * With --api lsh the three exchanges go through Squeeze's MoE API instead (include/squeeze.h,
 * over an MPI transport on MPI_COMM_WORLD, settings from the SQZ_* environment): sqz_moe_dispatch
 * (LSH), sqz_moe_combine (residuals added back) and, with --grad centroid (the default there),
 * sqz_moe_combine_backward: each centroid's copies receive the mean gradient of its tokens, sent
 * once per centroid, which gives the experts' weights exactly the gradient of the LSH forward
 * pass; --grad exact sends the per-token gradients uncompressed.  --api exact runs the same calls
 * with an exact dispatch (the uncompressed baseline through the API).
 *
 * Prints the loss, the all-to-all bytes (handed to MPI; through the API, put on the wire) and the
 * time spent in the all-to-alls, per kind of call (each timed after a barrier, so that the ranks'
 * compute imbalance is not counted; the slowest rank's sums).
 *
 *     mpirun -np 4 examples/sqz_moe_layer [--steps N] [--tokens T] [--dim D] [--hidden H]
 *                                         [--clusters K] [--noise S] [--lr LR]
 *                                         [--api lsh|exact] [--grad centroid|exact]
 */
#include "config.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "transport/sqz_transport_mpi.h"

static int rank, size;

static double unif(unsigned long long z) /* [0, 1) from a key */
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

static double gauss(unsigned long long k)
{
    return sqrt(-2.0 * log(unif(2 * k) + 1e-300)) * cos(6.283185307179586 * unif(2 * k + 1));
}

typedef struct {
    int         steps, T, D, H, K;
    double      noise, lr;
    const char *api;  /* NULL: plain MPI_Alltoallv; "lsh" or "exact": the dispatch's codec */
    const char *grad; /* "centroid" or "exact" (API only) */
} opts_t;

enum { DISPATCH, COMBINE, GRAD, NKINDS };
static const char *const kind_names[NKINDS] = {"dispatch", "combine", "gradient"};
static double a2a_time[NKINDS], a2a_bytes;

static void die(const char *what, sqz_status_t st)
{
    fprintf(stderr, "rank %d: %s: %s\n", rank, what, sqz_status_string(st));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* The Squeeze state of the API mode. */
static sqz_ctx_t       *sctx;
static sqz_comm_t      *scomm;
static sqz_transport_t  strans;
static sqz_moe_handle_t *handle;
static size_t          *tok; /* 4 * size: the step's counts and displacements in tokens */

/* Starts timing one exchange of `kind` (after a barrier). */
static double tic(void)
{
    MPI_Barrier(MPI_COMM_WORLD);
    return MPI_Wtime();
}

/* One exchange of `kind`: float counts sc/sd/rc/rd (plain MPI), tokens of D floats (API). */
static void exchange(int kind, const opts_t *o, const float *s, const int *sc, const int *sd,
                     float *r, const int *rc, const int *rd)
{
    const double t0 = tic();
    if (NULL == o->api) {
        MPI_Alltoallv(s, sc, sd, MPI_FLOAT, r, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
        a2a_time[kind] += MPI_Wtime() - t0;
        for (int p = 0; p < size; p++) {
            a2a_bytes += (p != rank) ? 4.0 * sc[p] : 0.0;
        }
        return;
    }
    sqz_status_t st = SQZ_OK;
    if (DISPATCH == kind) {
        for (int p = 0; p < size; p++) {
            tok[p]            = (size_t)(sc[p] / o->D);
            tok[size + p]     = (size_t)(sd[p] / o->D);
            tok[2 * size + p] = (size_t)(rc[p] / o->D);
            tok[3 * size + p] = (size_t)(rd[p] / o->D);
        }
        sqz_moe_handle_free(handle);
        handle = NULL;
        st = sqz_moe_dispatch(scomm, strcmp(o->api, "lsh") ? SQZ_MOE_EXACT : SQZ_MOE_LSH, s, tok,
                              tok + size, r, tok + 2 * size, tok + 3 * size, (size_t)o->D, &handle);
    } else if (COMBINE == kind) {
        st = sqz_moe_combine(scomm, handle, s, r);
    } else if (0 == strcmp(o->grad, "centroid")) {
        st = sqz_moe_combine_backward(scomm, handle, s, r, NULL);
    } else {
        st = sqz_moe_alltoallv(scomm, SQZ_MOE_EXACT, s, tok, tok + size, r, tok + 2 * size,
                               tok + 3 * size, (size_t)o->D, SQZ_DTYPE_FLOAT32);
    }
    a2a_time[kind] += MPI_Wtime() - t0;
    if (SQZ_OK != st) {
        die(kind_names[kind], st);
    }
}

static void api_init(void)
{
    sqz_config_t *cfg = NULL;
    char          err[512] = "";
    sqz_status_t  st       = sqz_config_create(&cfg);
    if (SQZ_OK == st) {
        st = sqz_config_load_env(cfg);
    }
    if (SQZ_OK == st) {
        st = sqz_ctx_create(cfg, &sctx, err, sizeof(err));
    }
    sqz_config_destroy(cfg);
    if (SQZ_OK != st) {
        fprintf(stderr, "rank %d: %s\n", rank, err);
        die("sqz_ctx_create", st);
    }
    if (SQZ_OK != (st = sqz_transport_mpi_create(MPI_COMM_WORLD, &strans)) ||
        SQZ_OK != (st = sqz_comm_create(sctx, &strans, &scomm))) {
        die("sqz_comm_create", st);
    }
    tok = malloc(4 * (size_t)size * sizeof(size_t));
}

/* Bytes the API put on the wire (every codec). */
static double api_wire_bytes(void)
{
    double b = 0;
    for (int c = SQZ_MOE_EXACT; c <= SQZ_MOE_LSH; c++) {
        sqz_moe_stats_t m;
        sqz_moe_stats_get(sctx, (sqz_moe_codec_t)c, &m);
        b += (double)m.bytes_wire;
    }
    return b;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    opts_t o = {.steps = 40, .T = 2048, .D = 128, .H = 32, .K = 64, .noise = 0.05, .lr = 0.05,
                .api = NULL, .grad = "centroid"};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--steps")) o.steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) o.T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dim")) o.D = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--hidden")) o.H = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--clusters")) o.K = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--noise")) o.noise = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--lr")) o.lr = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--api")) o.api = argv[i + 1];
        else if (!strcmp(argv[i], "--grad")) o.grad = argv[i + 1];
    }
    if ((o.api && strcmp(o.api, "lsh") && strcmp(o.api, "exact")) ||
        (strcmp(o.grad, "centroid") && strcmp(o.grad, "exact"))) {
        if (0 == rank) {
            fprintf(stderr, "--api takes lsh or exact, --grad centroid or exact\n");
        }
        MPI_Finalize();
        return 2;
    }
    if (o.api) {
        api_init();
    }
    const int    T = o.T, D = o.D, H = o.H, P = size;
    const size_t TD = (size_t)T * (size_t)D;
    /* Buffers: tokens and targets grouped by expert; what the expert receives (at most all T*P
     * tokens); its outputs and hidden activations; gradients. */
    float *x = malloc(TD * 4), *y = malloc(TD * 4), *out = malloc(TD * 4), *g = malloc(TD * 4);
    float *ex = malloc(TD * (size_t)P * 4), *eo = malloc(TD * (size_t)P * 4),
          *eg = malloc(TD * (size_t)P * 4), *eh = malloc((size_t)T * P * (size_t)H * 4);
    float *W1 = malloc((size_t)H * D * 4), *W2 = malloc((size_t)D * H * 4);
    float *G1 = malloc((size_t)H * D * 4), *G2 = malloc((size_t)D * H * 4);
    float *centers = malloc((size_t)o.K * D * 4);
    int   *sc = calloc((size_t)P, 4), *sd = calloc((size_t)P, 4), *rc = calloc((size_t)P, 4),
        *rd = calloc((size_t)P, 4), *cnt = calloc((size_t)P, 4), *kk = malloc((size_t)T * 4);
    for (int i = 0; i < o.K * D; i++) {
        centers[i] = (float)gauss(1000003ull + (unsigned long long)i);
    }
    for (int i = 0; i < H * D; i++) { /* every rank's expert starts alike (seed of the expert) */
        W1[i] = (float)(gauss(77ull << 32 | (unsigned)(rank * H * D + i)) / sqrt((double)D));
        W2[i] = (float)(gauss(78ull << 32 | (unsigned)(rank * H * D + i)) / sqrt((double)H));
    }
    double loss = 0;
    for (int step = 0; step < o.steps; step++) {
        /* Draw this step's tokens, count them per expert, and lay them out grouped by expert. */
        memset(cnt, 0, (size_t)P * 4);
        for (int t = 0; t < T; t++) {
            const unsigned long long key = ((unsigned long long)step << 40) ^ ((unsigned long long)rank << 24) ^ (unsigned)t;
            kk[t] = (int)(unif(key) * o.K);
            cnt[kk[t] % P]++;
        }
        for (int p = 0, off = 0; p < P; p++) {
            sc[p] = cnt[p] * D;
            sd[p] = off;
            off += sc[p];
            cnt[p] = sd[p] / D; /* next slot of expert p */
        }
        for (int t = 0; t < T; t++) {
            const int slot = cnt[kk[t] % P]++;
            for (int j = 0; j < D; j++) {
                const unsigned long long key = ((unsigned long long)step << 40) ^ ((unsigned long long)rank << 24) ^ ((unsigned long long)t << 8);
                const float v = centers[(size_t)kk[t] * D + j] + (float)(o.noise * gauss(key + (unsigned)j + 7));
                x[(size_t)slot * D + j] = v;
                y[(size_t)slot * D + j] = v + sinf(v);
            }
        }
        MPI_Alltoall(sc, 1, MPI_INT, rc, 1, MPI_INT, MPI_COMM_WORLD); /* counts: int, not tokens */
        int nr = 0;
        for (int p = 0; p < P; p++) {
            rd[p] = nr;
            nr += rc[p];
        }
        const int ne = nr / D;
        exchange(DISPATCH, &o, x, sc, sd, ex, rc, rd);
        /* Expert forward: h = relu(W1 x), o = W2 h. */
        for (int t = 0; t < ne; t++) {
            for (int a = 0; a < H; a++) {
                float s = 0;
                for (int j = 0; j < D; j++) {
                    s += W1[(size_t)a * D + j] * ex[(size_t)t * D + j];
                }
                eh[(size_t)t * H + a] = s > 0 ? s : 0;
            }
            for (int j = 0; j < D; j++) {
                float s = 0;
                for (int a = 0; a < H; a++) {
                    s += W2[(size_t)j * H + a] * eh[(size_t)t * H + a];
                }
                eo[(size_t)t * D + j] = s;
            }
        }
        exchange(COMBINE, &o, eo, rc, rd, out, sc, sd);
        /* Loss and its gradient, on the tokens' own rank. */
        double l = 0;
        for (size_t i = 0; i < TD; i++) {
            const double e = (double)out[i] - y[i];
            l += e * e;
            g[i] = (float)(2.0 * e / (double)D);
        }
        MPI_Allreduce(MPI_IN_PLACE, &l, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        loss = l / ((double)T * P * D);
        exchange(GRAD, &o, g, sc, sd, eg, rc, rd);
        /* Expert backward (mean over its tokens) and SGD. */
        memset(G1, 0, (size_t)H * D * 4);
        memset(G2, 0, (size_t)H * D * 4);
        for (int t = 0; t < ne; t++) {
            float dh[1024];
            for (int a = 0; a < H; a++) {
                float s = 0;
                for (int j = 0; j < D; j++) {
                    const float gj = eg[(size_t)t * D + j];
                    G2[(size_t)j * H + a] += gj * eh[(size_t)t * H + a];
                    s += W2[(size_t)j * H + a] * gj;
                }
                dh[a] = eh[(size_t)t * H + a] > 0 ? s : 0;
            }
            for (int a = 0; a < H; a++) {
                for (int j = 0; j < D; j++) {
                    G1[(size_t)a * D + j] += dh[a] * ex[(size_t)t * D + j];
                }
            }
        }
        const float scale = (float)(o.lr / (double)(ne ? ne : 1));
        for (int i = 0; i < H * D; i++) {
            W1[i] -= scale * G1[i];
            W2[i] -= scale * G2[i];
        }
        if (0 == rank && (0 == step % 10 || step == o.steps - 1)) {
            printf("step %3d  loss %.6f\n", step, loss);
        }
    }
    double t[NKINDS + 1], b = o.api ? api_wire_bytes() : a2a_bytes;
    t[NKINDS] = 0;
    for (int k = 0; k < NKINDS; k++) {
        t[k] = a2a_time[k];
        t[NKINDS] += a2a_time[k];
    }
    MPI_Allreduce(MPI_IN_PLACE, t, NKINDS + 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &b, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    size_t rows = 0, sent = handle ? sqz_moe_handle_tokens(handle, &rows) : 0;
    unsigned long long rs[2] = {rows, sent};
    MPI_Allreduce(MPI_IN_PLACE, rs, 2, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (0 == rank) {
        printf("final loss %.6f  all-to-all: %.1f MB %s (all ranks), %.3f s (slowest rank, %d "
               "steps x 3 calls): dispatch %.3f s, combine %.3f s, gradient %.3f s\n",
               loss, b / 1e6, o.api ? "on the wire" : "handed to MPI", t[NKINDS], o.steps,
               t[DISPATCH], t[COMBINE], t[GRAD]);
        if (o.api) {
            printf("api: dispatch %s, gradient %s; last dispatch's compression rate (centroids / "
                   "tokens) %.4f\n", o.api, o.grad, rs[1] ? (double)rs[0] / (double)rs[1] : 0.0);
        }
    }
    sqz_moe_handle_free(handle);
    sqz_comm_destroy(scomm);
    sqz_transport_mpi_destroy(&strans);
    sqz_ctx_destroy(sctx);
    free(tok);
    free(x), free(y), free(out), free(g), free(ex), free(eo), free(eg), free(eh);
    free(W1), free(W2), free(G1), free(G2), free(centers);
    free(sc), free(sd), free(rc), free(rd), free(cnt), free(kk);
    MPI_Finalize();
    return 0;
}
