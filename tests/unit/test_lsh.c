/* The LSH-MoE token codecs (src/moe/sqz_lsh*.c): seeded projections, bucketing, reconstruction error on
 * clustered tokens, exact de-duplication, and the decoder's validation. */
#include "config.h"

#include <string.h>

#include "sqz_lsh.h"
#include "sqz_test.h"

/* Clustered tokens: ntok tokens of width d around k centers (radius 1 each), noise sigma. */
static void clustered(float *x, size_t ntok, size_t d, size_t k, double sigma, float *centers)
{
    for (size_t c = 0; c < k * d; c++) {
        centers[c] = rng_gauss(1.0 / sqrt((double)d) * 1.7);
    }
    for (size_t t = 0; t < ntok; t++) {
        const size_t c = (size_t)(rng_u64() % k);
        for (size_t j = 0; j < d; j++) {
            x[t * d + j] = centers[c * d + j] + rng_gauss(sigma / sqrt((double)d));
        }
    }
}

static double norm2(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - (b ? (double)b[i] : 0.0);
        s += e * e;
    }
    return s;
}

static void test_projections(void)
{
    sqz_lsh_t *a = NULL, *b = NULL, *c = NULL;
    REQUIRE(SQZ_OK == sqz_lsh_create(64, 4, 6, 64, 42, &a));
    REQUIRE(SQZ_OK == sqz_lsh_create(64, 4, 6, 64, 42, &b));
    REQUIRE(SQZ_OK == sqz_lsh_create(64, 4, 6, 64, 43, &c));
    CHECK(0 == memcmp(sqz_lsh_projections(a), sqz_lsh_projections(b), 24 * 64 * sizeof(float)));
    CHECK(0 != memcmp(sqz_lsh_projections(a), sqz_lsh_projections(c), 24 * 64 * sizeof(float)));
    /* Rows of one hash function are orthonormal (a partial rotation). */
    const float *p = sqz_lsh_projections(a);
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 4; k++) {
            double dot = 0;
            for (int j = 0; j < 64; j++) {
                dot += (double)p[(size_t)(8 + i) * 64 + (size_t)j] * p[(size_t)(8 + k) * 64 + (size_t)j];
            }
            CHECK_NEAR(dot, i == k ? 1.0 : 0.0, 1e-5);
        }
    }
    sqz_lsh_destroy(a);
    sqz_lsh_destroy(b);
    sqz_lsh_destroy(c);
    /* Out of range: 16 hashes of 5 bits (d' = 16) do not fit 64 bits. */
    CHECK(SQZ_ERR_INVALID_PARAM == sqz_lsh_create(64, 16, 16, 64, 1, &a));
    CHECK(SQZ_ERR_INVALID_PARAM == sqz_lsh_create(0, 4, 6, 64, 1, &a));
    CHECK(SQZ_ERR_INVALID_PARAM == sqz_lsh_create(8, 0, 6, 64, 1, &a));
    CHECK(SQZ_ERR_INVALID_PARAM == sqz_lsh_create(8, 4, 0, 64, 1, &a));
    CHECK_EQ_INT(sqz_lsh_code_bits(4), 3);
    CHECK_EQ_INT(sqz_lsh_code_bits(8), 4);
    CHECK_EQ_INT(sqz_lsh_code_bits(1), 1);
}

static void test_identical_share_bucket(void)
{
    const size_t d = 32, n = 200;
    float       *x = alloc_floats(n * d);
    fill_random(x, n * d, 1.0);
    for (size_t t = 100; t < n; t++) { /* the second half repeats the first */
        memcpy(x + t * d, x + (t - 100) * d, d * sizeof(float));
    }
    sqz_lsh_t *l = NULL;
    REQUIRE(SQZ_OK == sqz_lsh_create(d, 4, 6, 64, 7, &l));
    uint64_t b[200];
    sqz_lsh_hash(l, x, n, b);
    size_t same = 0, distinct_pairs = 0;
    for (size_t t = 0; t < 100; t++) {
        same += (b[t] == b[t + 100]);
        distinct_pairs += (t > 0 && b[t] != b[t - 1]);
    }
    CHECK_EQ_INT(same, 100);
    CHECK(distinct_pairs > 50); /* random tokens mostly land apart */
    sqz_lsh_destroy(l);
    free(x);
}

static void test_clustered_reconstruction(void)
{
    const size_t d = 64, n = 2048, k = 32;
    float       *x = alloc_floats(n * d), *centers = alloc_floats(k * d), *y = alloc_floats(n * d);
    clustered(x, n, d, k, 0.1, centers);
    sqz_lsh_t *l = NULL;
    REQUIRE(SQZ_OK == sqz_lsh_create(d, 4, 6, 64, 42, &l));
    const size_t   raw = sqz_tok_raw_bytes(n, d, SQZ_DTYPE_FLOAT32);
    unsigned char *blk = malloc(raw);
    uint32_t      *map = malloc(n * sizeof(uint32_t));
    size_t         bytes = 0;
    REQUIRE(SQZ_OK == sqz_lsh_encode(l, x, n, blk, &bytes, map));
    REQUIRE(SQZ_OK == sqz_tok_decode(blk, bytes, n, d, SQZ_DTYPE_FLOAT32, y));
    sqz_tok_view_t v;
    sqz_tok_view(blk, &v);
    const double rate = (double)v.rows / (double)n, rel = sqrt(norm2(x, y, n * d) / norm2(x, NULL, n * d));
    printf("clustered: %u centroids for %zu tokens (rate %.3f), relative error %.4f, %zu of %zu bytes\n",
           v.rows, n, rate, rel, bytes, raw);
    CHECK(SQZ_TOKFRAME_ROWS == v.kind);
    CHECK(rate <= 0.25);
    CHECK(rel <= 0.15); /* noise 0.1 against centers of norm ~1.7 */
    CHECK(bytes < raw / 3);
    /* Every token decodes to its centroid, which is the mean of the tokens mapped to it. */
    for (size_t t = 0; t < n; t++) {
        CHECK_EQ_INT(map[t], sqz_tok_view_index(&v, t));
    }
    double cs = 0;
    size_t cnt = 0;
    for (size_t t = 0; t < n; t++) {
        if (map[t] == map[0]) {
            cs += x[t * d + 5];
            cnt++;
        }
    }
    CHECK_NEAR(y[5], cs / (double)cnt, 1e-5);
    sqz_lsh_destroy(l);
    free(blk);
    free(map);
    free(x);
    free(y);
    free(centers);
}

static void test_dedup(void)
{
    const size_t d = 24, n = 500;
    float       *x = alloc_floats(n * d), *y = alloc_floats(n * d);
    float        uniq[10 * 24];
    fill_random(uniq, 10 * d, 1.0);
    uniq[3] = -0.0f; /* row 0 and row 1 differ only by the sign of a zero */
    memcpy(uniq + d, uniq, d * sizeof(float));
    uniq[d + 3] = 0.0f;
    for (size_t t = 0; t < n; t++) {
        memcpy(x + t * d, uniq + (rng_u64() % 10) * d, d * sizeof(float));
    }
    sqz_lsh_t *s = NULL;
    REQUIRE(SQZ_OK == sqz_lsh_create(1, 1, 1, 64, 0, &s));
    unsigned char *blk = malloc(sqz_tok_raw_bytes(n, d, SQZ_DTYPE_FLOAT32));
    size_t         bytes = 0;
    REQUIRE(SQZ_OK == sqz_dedup_encode(s, x, n, d, SQZ_DTYPE_FLOAT32, blk, &bytes));
    sqz_tok_view_t v;
    sqz_tok_view(blk, &v);
    CHECK_EQ_INT(v.rows, 10);
    CHECK_EQ_INT(bytes, SQZ_TOKFRAME_HEADER + 10 * d * 4 + n);
    REQUIRE(SQZ_OK == sqz_tok_decode(blk, bytes, n, d, SQZ_DTYPE_FLOAT32, y));
    CHECK(0 == memcmp(x, y, n * d * sizeof(float))); /* bit-exact */
    /* bf16 rows (2 bytes an element), and distinct rows: RAW. */
    uint16_t h[6 * 4] = {1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9};
    uint16_t o[24];
    REQUIRE(SQZ_OK == sqz_dedup_encode(s, h, 6, 4, SQZ_DTYPE_BFLOAT16, blk, &bytes));
    REQUIRE(SQZ_OK == sqz_tok_decode(blk, bytes, 6, 4, SQZ_DTYPE_BFLOAT16, o));
    CHECK(0 == memcmp(h, o, sizeof(h)));
    fill_random(x, n * d, 1.0);
    REQUIRE(SQZ_OK == sqz_dedup_encode(s, x, n, d, SQZ_DTYPE_FLOAT32, blk, &bytes));
    sqz_tok_view(blk, &v);
    CHECK(SQZ_TOKFRAME_RAW == v.kind);
    CHECK_EQ_INT(bytes, sqz_tok_raw_bytes(n, d, SQZ_DTYPE_FLOAT32));
    REQUIRE(SQZ_OK == sqz_tok_decode(blk, bytes, n, d, SQZ_DTYPE_FLOAT32, y));
    CHECK(0 == memcmp(x, y, n * d * sizeof(float)));
    /* Zero tokens: an empty block. */
    REQUIRE(SQZ_OK == sqz_dedup_encode(s, x, 0, d, SQZ_DTYPE_FLOAT32, blk, &bytes));
    CHECK_EQ_INT(bytes, SQZ_TOKFRAME_HEADER);
    CHECK(SQZ_OK == sqz_tok_decode(blk, bytes, 0, d, SQZ_DTYPE_FLOAT32, NULL));
    sqz_lsh_destroy(s);
    free(blk);
    free(x);
    free(y);
}

/* Corrupted blocks are rejected and leave the output untouched. */
static void test_corrupt(void)
{
    const size_t d = 8, n = 40;
    float        x[40 * 8], y[40 * 8], ref[40 * 8];
    for (size_t t = 0; t < n; t++) {
        for (size_t j = 0; j < d; j++) {
            x[t * d + j] = (float)(t % 3) + 0.5f * (float)j;
        }
    }
    sqz_lsh_t *s = NULL;
    REQUIRE(SQZ_OK == sqz_lsh_create(d, 2, 3, 64, 1, &s));
    unsigned char blk[2048], bad[2048];
    size_t        bytes = 0;
    REQUIRE(SQZ_OK == sqz_dedup_encode(s, x, n, d, SQZ_DTYPE_FLOAT32, blk, &bytes));
    CHECK_EQ_INT(bytes, SQZ_TOKFRAME_HEADER + 3 * d * 4 + n);
    for (size_t i = 0; i < n * d; i++) {
        y[i] = ref[i] = -1.0f;
    }
    /* header fields, sizes, an index out of range */
    const struct {
        size_t at;
        unsigned char v;
    } pokes[] = {{0, 0}, {4, 7}, {5, 1 + 1}, {6, 2}, {8, 9}, {12, 41}, {16, 4}, {16, 0}, {20, 1},
                 {SQZ_TOKFRAME_HEADER + 3 * 8 * 4 + 17, 3}};
    for (size_t k = 0; k < sizeof(pokes) / sizeof(pokes[0]); k++) {
        memcpy(bad, blk, bytes);
        bad[pokes[k].at] = pokes[k].v;
        CHECK_MSG(SQZ_ERR_CORRUPT == sqz_tok_decode(bad, bytes, n, d, SQZ_DTYPE_FLOAT32, y),
                  "poke %zu", k);
        CHECK(0 == memcmp(y, ref, sizeof(y)));
    }
    CHECK(SQZ_ERR_CORRUPT == sqz_tok_decode(blk, bytes - 1, n, d, SQZ_DTYPE_FLOAT32, y));
    CHECK(SQZ_ERR_CORRUPT == sqz_tok_decode(blk, bytes, n - 1, d, SQZ_DTYPE_FLOAT32, y));
    CHECK(SQZ_ERR_CORRUPT == sqz_tok_decode(blk, bytes, n, d + 1, SQZ_DTYPE_FLOAT32, y));
    CHECK(SQZ_ERR_CORRUPT == sqz_tok_decode(blk, bytes, n, d, SQZ_DTYPE_FLOAT16, y));
    CHECK(SQZ_ERR_CORRUPT == sqz_tok_decode(blk, 3, n, d, SQZ_DTYPE_FLOAT32, y));
    CHECK(0 == memcmp(y, ref, sizeof(y)));
    CHECK(SQZ_OK == sqz_tok_decode(blk, bytes, n, d, SQZ_DTYPE_FLOAT32, y));
    CHECK(0 == memcmp(y, x, sizeof(y)));
    sqz_lsh_destroy(s);
}

int main(void)
{
    test_projections();
    test_identical_share_bucket();
    test_clustered_reconstruction();
    test_dedup();
    test_corrupt();
    return sqz_test_result("test_lsh");
}
