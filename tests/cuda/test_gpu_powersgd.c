/* PowerSGD on the device path, one GPU (a one-rank NCCL communicator): the same exactness checks as
 * the CPU plugin's (tests/unit/test_powersgd.c) at ranks 4 to 128, so the kernels' passes of 32
 * factor columns and the block-parallel Cholesky are covered:
 *   - a matrix of rank below the configured one comes back exactly, the exact part bit for bit,
 *     and the call sends (rows + cols) r floats plus the exact part;
 *   - on a full-rank matrix without error feedback the output is an orthogonal projection of the
 *     input (||out||^2 + ||in - out||^2 = ||in||^2), and the warm start does not lose ground;
 *   - SQZ_ADAPT=lgreco: probes cost no wire bytes (an adaptive run sends at most what the
 *     uniform one sends, probing calls included) and the choice is recorded.
 * Per-call device times are printed, not asserted.  Skips (77) without a GPU or NCCL. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_cuda_test.h"
#include "sqz_log.h"

#define KEY   42
#define NTAIL 7

static double urand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (double)(1u << 24) * 2.0 - 1.0;
}

/* a (rows x cols) = U V^T with U, V of `rank` columns; rank 0: independent entries. */
static void matrix(float *a, size_t rows, size_t cols, size_t rank, unsigned seed)
{
    if (0 == rank) {
        for (size_t i = 0; i < rows * cols; i++) {
            a[i] = (float)urand(&seed);
        }
        return;
    }
    double *u = malloc(rows * rank * sizeof(double)), *v = malloc(cols * rank * sizeof(double));
    for (size_t i = 0; i < rows * rank; i++) {
        u[i] = urand(&seed);
    }
    for (size_t i = 0; i < cols * rank; i++) {
        v[i] = urand(&seed);
    }
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            double s = 0;
            for (size_t k = 0; k < rank; k++) {
                s += u[i * rank + k] * v[j * rank + k];
            }
            a[i * cols + j] = (float)s;
        }
    }
    free(u), free(v);
}

static sqz_comm_t *make_comm(void *nc, sqz_ctx_t **ctx, const char *const *kv)
{
    static const char *const base[] = {"SQZ_METHOD", "powersgd", "SQZ_MIN_BYTES", "0",
                                       "SQZ_WARMUP_STEPS", "0", "SQZ_POWERSGD_START_STEPS", "0",
                                       NULL};
    return sqz_cuda_make_comm(nc, ctx, base, kv);
}

/* One all-reduce of h (n floats) in place on the device; the result back in out; the call's
 * device time in *ms. */
static void call(sqz_comm_t *comm, float *d, const float *h, float *out, size_t n,
                 cudaStream_t s, float *ms)
{
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    CU(cudaMemcpyAsync(d, h, n * sizeof(float), cudaMemcpyHostToDevice, s));
    CU(cudaEventRecord(e0, s));
    EXPECT(SQZ_OK == sqz_allreduce_async(comm, NULL, d, n, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, KEY, s),
           "sqz_allreduce_async");
    CU(cudaEventRecord(e1, s));
    CU(cudaMemcpyAsync(out, d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
    CU(cudaEventElapsedTime(ms, e0, e1));
    CU(cudaEventDestroy(e0));
    CU(cudaEventDestroy(e1));
}

static double norm2(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (b ? (double)b[i] : 0.0);
        s += d * d;
    }
    return s;
}

typedef struct {
    int    rank, true_rank;
    size_t rows, cols;
} shape_t;

/* Exactness below the rank, the wire bytes, and the projection property above it. */
static void test_shape(void *nc, const shape_t *c)
{
    char rank[16];
    snprintf(rank, sizeof rank, "%d", c->rank);
    const char *const kv[] = {"SQZ_POWERSGD_RANK", rank, "SQZ_EF", "none", NULL};
    sqz_ctx_t        *ctx;
    sqz_comm_t       *comm  = make_comm(nc, &ctx, kv);
    const size_t      mat   = c->rows * c->cols, n = mat + NTAIL;
    const sqz_layer_t lay[] = {{0, c->rows, c->cols, 1}};
    EXPECT(SQZ_OK == sqz_layout_register(comm, KEY, n, lay, 1), "layout");
    float       *h = malloc(n * sizeof(float)), *o = malloc(n * sizeof(float));
    float       *d = dalloc(n * sizeof(float));
    cudaStream_t s;
    CU(cudaStreamCreate(&s));
    float ms[3];

    matrix(h, c->rows, c->cols, (size_t)c->true_rank, 7u + (unsigned)c->rank);
    for (int t = 0; t < NTAIL; t++) {
        h[mat + t] = 0.25f * (float)(t + 1);
    }
    call(comm, d, h, o, n, s, &ms[0]);
    const double rel = sqrt(norm2(o, h, mat) / norm2(h, NULL, mat));
    EXPECT(rel < 1e-4, "rank %d, a rank-%d %zux%zu matrix: relative error %g", c->rank,
           c->true_rank, c->rows, c->cols, rel);
    EXPECT(0 == memcmp(o + mat, h + mat, NTAIL * sizeof(float)), "rank %d: exact part", c->rank);
    sqz_stats_t st;
    sqz_stats_get(ctx, &st);
    const size_t want = ((c->rows + c->cols) * (size_t)c->rank + NTAIL) * sizeof(float);
    EXPECT(1 == st.calls_compressed && st.bytes_wire == want,
           "rank %d: %llu calls compressed, %llu bytes on the wire (want %zu)", c->rank,
           (unsigned long long)st.calls_compressed, (unsigned long long)st.bytes_wire, want);

    /* Full rank, no error feedback: out = P^ P^T in, an orthogonal projection. */
    matrix(h, c->rows, c->cols, 0, 99u + (unsigned)c->rank);
    call(comm, d, h, o, n, s, &ms[1]);
    const double in2 = norm2(h, NULL, mat), out2 = norm2(o, NULL, mat), err1 = norm2(o, h, mat);
    EXPECT(fabs(out2 + err1 - in2) < 1e-4 * in2 && err1 > 1e-3 * in2,
           "rank %d: ||out||^2 %g + ||in - out||^2 %g against ||in||^2 %g", c->rank, out2, err1,
           in2);
    call(comm, d, h, o, n, s, &ms[2]);
    const double err2 = norm2(o, h, mat);
    EXPECT(err2 <= err1 * (1 + 1e-4), "rank %d: the warm start lost ground: %g -> %g", c->rank,
           err1, err2);
    printf("rank %3d, %4zu x %4zu: rank-%d input relative error %.2e; full rank %.4f then %.4f "
           "of ||in||^2; %.3f ms a call\n", c->rank, c->rows, c->cols, c->true_rank, rel,
           err1 / in2, err2 / in2, ms[2]);
    CU(cudaStreamDestroy(s));
    CU(cudaFree(d));
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    free(h), free(o);
}

/* Layers whose spectra differ (nearly rank 2 first, full rank last): `calls` calls; the bytes on
 * the wire, and the stats JSON's adapt record in json (when not NULL). */
static uint64_t adapt_run(void *nc, int adapt, int calls, char *json, size_t jlen)
{
    const char *const kv_a[] = {"SQZ_POWERSGD_RANK", "8", "SQZ_ADAPT", "lgreco",
                                "SQZ_ADAPT_PERIOD", "5", NULL};
    const char *const kv_u[] = {"SQZ_POWERSGD_RANK", "8", NULL};
    enum { NL = 4, ROWS = 256, COLS = 192 };
    sqz_ctx_t   *ctx;
    sqz_comm_t  *comm = make_comm(nc, &ctx, adapt ? kv_a : kv_u);
    sqz_layer_t  lay[NL];
    const size_t n = (size_t)NL * ROWS * COLS;
    for (size_t l = 0; l < NL; l++) {
        lay[l] = (sqz_layer_t){l * ROWS * COLS, ROWS, COLS, l + 1};
    }
    EXPECT(SQZ_OK == sqz_layout_register(comm, KEY, n, lay, NL), "layout");
    float       *h = malloc(n * sizeof(float)), *o = malloc(n * sizeof(float)), ms;
    float       *d = dalloc(n * sizeof(float));
    float       *noise = malloc((size_t)ROWS * COLS * sizeof(float));
    cudaStream_t s;
    CU(cudaStreamCreate(&s));
    for (int k = 0; k < calls; k++) {
        for (size_t l = 0; l < NL; l++) {
            const size_t true_rank[NL] = {2, 4, 16, 0};
            matrix(h + l * ROWS * COLS, ROWS, COLS, true_rank[l], 1000u * (unsigned)l + 3u);
            matrix(noise, ROWS, COLS, 0, (unsigned)(k * 31 + (int)l));
            for (size_t i = 0; i < (size_t)ROWS * COLS; i++) {
                h[l * ROWS * COLS + i] += 0.01f * noise[i];
            }
        }
        call(comm, d, h, o, n, s, &ms);
    }
    sqz_stats_t st;
    sqz_stats_get(ctx, &st);
    EXPECT(st.calls_compressed == (uint64_t)calls && 0 == st.calls_fallback,
           "%llu of %d calls compressed, %llu fell back", (unsigned long long)st.calls_compressed,
           calls, (unsigned long long)st.calls_fallback);
    if (json) {
        sqz_stats_json(ctx, 0, json, jlen);
    }
    CU(cudaStreamDestroy(s));
    CU(cudaFree(d));
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    free(h), free(o), free(noise);
    return st.bytes_wire;
}

static void test_adapt(void *nc)
{
    static char  json[1 << 16];
    const int    calls   = 30;
    const uint64_t uniform = adapt_run(nc, 0, calls, NULL, 0);
    const uint64_t adapted = adapt_run(nc, 1, calls, json, sizeof json);
    const char    *rec     = strstr(json, "\"adapt\"");
    const char    *lv      = rec ? strstr(rec, "\"levels\"") : NULL;
    printf("SQZ_ADAPT=lgreco, %d calls: %llu bytes on the wire against %llu uniform (%.2fx), %.*s\n",
           calls, (unsigned long long)adapted, (unsigned long long)uniform,
           adapted ? (double)uniform / (double)adapted : 0.0, lv ? (int)strcspn(lv, "]") + 1 : 0,
           lv ? lv : "");
    EXPECT(lv != NULL, "no adapt record: %.300s", json);
    EXPECT(adapted <= uniform, "the adaptive run sent %llu bytes, the uniform one %llu",
           (unsigned long long)adapted, (unsigned long long)uniform);
}

int main(void)
{
    sqz_log_set_level(SQZ_LOG_ERROR);
    void     *nc   = NULL;
    const int skip = sqz_cuda_one_rank_nccl(&nc);
    if (skip) {
        return skip;
    }
    /* Sizes where PyTorch's rule compresses: rows * cols > 2 (rows + cols) r. */
    const shape_t shapes[] = {{4, 3, 256, 200},     {32, 24, 512, 300},   {40, 40, 600, 500},
                              {64, 50, 600, 520},   {128, 100, 1200, 1000}, {128, 128, 1200, 1000},
                              {128, 60, 2048, 4096}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        test_shape(nc, &shapes[i]);
    }
    test_adapt(nc);
    sqz_nccl_comm_destroy(nc);
    printf("test_gpu_powersgd: %d failure(s)\n", sqz_cuda_failures);
    return sqz_cuda_failures ? 1 : 0;
}
