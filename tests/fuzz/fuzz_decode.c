/*
 * Decoder fuzzing for one compressor, chosen at build time (a built-in, or "example": the
 * out-of-tree example plugin, loaded from SQUEEZE_TEST_PLUGIN as SQZ_PLUGINS would):
 *
 *     cc -DSQZ_FUZZ_METHOD='"topk"' ... tests/fuzz/fuzz_decode.c -> fuzz_decode_topk
 *
 * Input format: 4 bytes little-endian h, then the payload.  n = (h & 0xffffff) % (FUZZ_MAX_N + 1)
 * elements, configuration number (h >> 24) % nconfigs.  Every input is decoded into a malloc'ed
 * buffer of exactly n floats (so AddressSanitizer sees any overflow) and with out == NULL.  The
 * oracle aborts when decompress returns anything but SQZ_OK or SQZ_ERR_CORRUPT, when the two calls
 * disagree, or when a rejected payload changed the output (validate-before-write).
 *
 * With -DSQZ_LIBFUZZER only LLVMFuzzerTestOneInput is built.  Otherwise main() is a deterministic
 * mutation driver: it compresses random vectors with random configurations (valid payloads must
 * decode with SQZ_OK), mutates the payloads and feeds every variant to the same entry point.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_param.h"
#include "sqz_registry.h"

#ifndef SQZ_FUZZ_METHOD
#error "build with -DSQZ_FUZZ_METHOD='\"name\"' (a built-in compressor, or example)"
#endif

#define FUZZ_MAX_N 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Configurations per method, as "NAME=value" lists (NULL-terminated). */
typedef struct fuzz_config {
    const char *method;
    const char *kv[5];
} fuzz_config_t;

static const fuzz_config_t all_configs[] = {
    {"none", {NULL}},
    {"topk", {NULL}},
    {"topk", {"TOPK_DENSITY=0.1", NULL}},
    {"topk", {"TOPK_DENSITY=1", NULL}},
    {"topk", {"TOPK_SELECT=sampled", "TOPK_DENSITY=0.05", "TOPK_SAMPLE_RATIO=0.1", NULL}},
    {"topk", {"TOPK_SELECT=sampled", "TOPK_DENSITY=0.001", "TOPK_SAMPLE_RATIO=0.0001", NULL}},
    {"quant", {NULL}},
    {"quant", {"QUANT_BITS=1", "QUANT_BUCKET=8", "QUANT_ROUNDING=stochastic", NULL}},
    {"quant", {"QUANT_BITS=2", "QUANT_BUCKET=13", NULL}},
    {"quant", {"QUANT_BITS=3", "QUANT_BUCKET=100", "QUANT_ROUNDING=stochastic", NULL}},
    {"quant", {"QUANT_BITS=5", "QUANT_BUCKET=1024", NULL}},
    {"quant", {"QUANT_BITS=7", "QUANT_BUCKET=9", "QUANT_ROUNDING=stochastic", NULL}},
    {"quant", {"QUANT_BITS=8", "QUANT_BUCKET=64", NULL}},
    {"quant", {"QUANT_BITS=2", "QUANT_BUCKET=128", "QUANT_ROUNDING=stochastic", NULL}},
    {"quant", {"QUANT_BITS=1", "QUANT_BUCKET=64", NULL}},
    {"sign", {"SIGN_SCALE=l1", NULL}},
    {"sign", {"SIGN_SCALE=l2", NULL}},
    {"sign", {"SIGN_SCALE=l1", "SIGN_BUCKET=0", NULL}},
    {"sign", {"SIGN_SCALE=l2", "SIGN_BUCKET=64", NULL}},
    {"sign", {"SIGN_BUCKET=200", NULL}},
    {"randk", {NULL}},
    {"randk", {"RANDK_DENSITY=0.1", "RANDK_SCALE=unbiased", NULL}},
    {"randk", {"RANDK_DENSITY=1", NULL}},
    {"randk", {"RANDK_DENSITY=0.7", NULL}},
    {"lossless", {NULL}},
    {"lossless", {"LOSSLESS_SHUFFLE=0", NULL}},
    {"lossless", {"LOSSLESS_LEVEL=-7", NULL}},
    {"lossless", {"LOSSLESS_LEVEL=19", "LOSSLESS_SHUFFLE=0", NULL}},
    {"qsgd", {NULL}},
    {"qsgd", {"QSGD_LEVELS=5", "QSGD_BUCKET=13", "QSGD_NORM=max", NULL}},
    {"qsgd", {"QSGD_LEVELS=200", "QSGD_BUCKET=9", NULL}},
    {"qsgd", {"QSGD_LEVELS=127", "QSGD_NORM=max", NULL}},
    {"terngrad", {NULL}},
    {"terngrad", {"TERNGRAD_BUCKET=8", NULL}},
    {"terngrad", {"TERNGRAD_BUCKET=13", "TERNGRAD_CLIP=2.5", NULL}},
    {"terngrad", {"TERNGRAD_BUCKET=100", "TERNGRAD_CLIP=1", NULL}},
    {"fedzip", {NULL}},
    {"fedzip", {"FEDZIP_DENSITY=0.1", "FEDZIP_CLUSTERS=16", NULL}},
    {"fedzip", {"FEDZIP_DENSITY=1", "FEDZIP_CLUSTERS=2", "FEDZIP_LEVEL=-7", NULL}},
    {"fedzip", {"FEDZIP_DENSITY=0.3", "FEDZIP_CLUSTERS=7", "FEDZIP_ITERS=1", "FEDZIP_LEVEL=19", NULL}},
    {"example", {NULL}},
    {"example", {"EXAMPLE_ROUND=0", NULL}},
};
#define FUZZ_MAX_CONFIGS (sizeof all_configs / sizeof all_configs[0])

typedef struct fuzz_ctx {
    const sqz_compressor_v1_t *c;
    sqz_registry_t             plugins; /* the example plugin's registry, when it is fuzzed */
    size_t                     nconfigs;
    void                      *config[FUZZ_MAX_CONFIGS];
    void                      *state[FUZZ_MAX_CONFIGS];
} fuzz_ctx_t;

static fuzz_ctx_t fuzz;

static void fuzz_die(const char *what, size_t n, size_t bytes, int status)
{
    fprintf(stderr, "fuzz_decode_%s: %s (n=%zu bytes=%zu status=%d)\n", SQZ_FUZZ_METHOD, what,
            n, bytes, status);
    abort();
}

/* Finds the built-in and creates one state per configuration, once. */
static void fuzz_init(void)
{
    if (fuzz.c != NULL) {
        return;
    }
    const sqz_compressor_v1_t *const builtins[] = {&sqz_compressor_none,  &sqz_compressor_topk,
                                                   &sqz_compressor_quant, &sqz_compressor_sign,
                                                   &sqz_compressor_randk, &sqz_compressor_lossless,
                                                   &sqz_compressor_qsgd,  &sqz_compressor_terngrad,
                                                   &sqz_compressor_fedzip};
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
        if (strcmp(builtins[i]->name, SQZ_FUZZ_METHOD) == 0) {
            fuzz.c = builtins[i];
        }
    }
    const char *plugin = getenv("SQUEEZE_TEST_PLUGIN");
    if (fuzz.c == NULL && plugin != NULL && plugin[0] != '\0' &&
        sqz_registry_init(&fuzz.plugins) == SQZ_OK &&
        sqz_registry_load_plugins(&fuzz.plugins, plugin) == 0) {
        fuzz.c = sqz_registry_find(&fuzz.plugins, SQZ_FUZZ_METHOD);
    }
    if (fuzz.c == NULL) {
        fuzz_die("unknown method (a plugin's needs SQUEEZE_TEST_PLUGIN)", 0, 0, 0);
    }
    const sqz_compressor_env_v1_t env = {sizeof env, 0, 2, 42};
    for (size_t i = 0; i < FUZZ_MAX_CONFIGS; i++) {
        if (strcmp(all_configs[i].method, SQZ_FUZZ_METHOD) != 0) {
            continue;
        }
        char err[256] = "";
        const size_t j = fuzz.nconfigs;
        if (sqz_plugin_config_make(fuzz.c, all_configs[i].kv, &fuzz.config[j], err, sizeof err) !=
                SQZ_OK ||
            fuzz.c->create(fuzz.config[j], &env, &fuzz.state[j]) != SQZ_OK) {
            fprintf(stderr, "%s\n", err);
            fuzz_die("cannot create a configuration", 0, 0, 0);
        }
        fuzz.nconfigs++;
    }
}

static void fuzz_fini(void)
{
    for (size_t j = 0; j < fuzz.nconfigs; j++) {
        fuzz.c->destroy(fuzz.state[j]);
        free(fuzz.config[j]);
    }
    if (fuzz.plugins.e != NULL) {
        sqz_registry_fini(&fuzz.plugins);
    }
    memset(&fuzz, 0, sizeof fuzz);
}

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static void store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Decodes one input; aborts on a contract violation.  \return the decompress status. */
static int fuzz_run(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (size < 4) {
        return SQZ_ERR_CORRUPT;
    }
    const uint32_t h = load_u32(data);
    const size_t n = (h & 0xffffffu) % (FUZZ_MAX_N + 1);
    const size_t cfg = (h >> 24) % fuzz.nconfigs;
    const size_t bytes = size - 4;

    /* Exact-size copies so that any read or write past the end is an ASan report. */
    uint8_t *payload = malloc(bytes ? bytes : 1);
    float *out = malloc(n ? n * sizeof *out : 1);
    float *ref = malloc(n ? n * sizeof *ref : 1);
    if (payload == NULL || out == NULL || ref == NULL) {
        fuzz_die("out of memory", n, bytes, 0);
    }
    memcpy(payload, data + 4, bytes);
    for (size_t i = 0; i < n; i++) {
        out[i] = ref[i] = (float)i * 0.25f - 3.0f;
    }
    void *st = fuzz.state[cfg];
    const sqz_status_t v = fuzz.c->decompress(st, payload, bytes, NULL, n);
    const sqz_status_t d = fuzz.c->decompress(st, payload, bytes, out, n);
    if (v != SQZ_OK && v != SQZ_ERR_CORRUPT) {
        fuzz_die("validation returned an unexpected status", n, bytes, v);
    }
    if (d != v) {
        fuzz_die("decode and validation disagree", n, bytes, d);
    }
    if (d == SQZ_ERR_CORRUPT && memcmp(out, ref, n * sizeof *out) != 0) {
        fuzz_die("a rejected payload was written to out", n, bytes, d);
    }
    free(payload);
    free(out);
    free(ref);
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fuzz_run(data, size);
    return 0;
}

#ifndef SQZ_LIBFUZZER
/* ---------------------------------------------------------------------------------------------
 * Deterministic mutation driver.
 * ------------------------------------------------------------------------------------------- */
static uint64_t rng_s = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t rnd_below(size_t bound)
{
    return bound ? (size_t)(rnd() % bound) : 0;
}

static double rnd_unif(void)
{
    return (double)(rnd() >> 11) * 0x1p-53;
}

/* A random finite vector drawn from a few shapes that stress the encoders. */
static void random_vector(float *x, size_t n)
{
    const size_t shape = rnd_below(6);
    const double scale = pow(10.0, (double)rnd_below(13) - 6.0);
    for (size_t i = 0; i < n; i++) {
        double v;
        switch (shape) {
        case 0:
            v = (rnd_unif() - 0.5) * scale;
            break;
        case 1:
            v = 0.0;
            break;
        case 2:
            v = scale;
            break;
        case 3:
            v = (rnd() & 1) ? FLT_MAX * rnd_unif() : -FLT_MAX * rnd_unif();
            break;
        case 4:
            v = (rnd_unif() - 0.5) * 1e-40;
            break;
        default:
            v = (double)(int)rnd_below(5) - 2.0;
            break;
        }
        x[i] = (float)v;
    }
}

/* Feeds one input (4-byte header + payload) and counts it. */
static size_t inputs;

static int feed(size_t n, size_t cfg, const uint8_t *payload, size_t bytes)
{
    uint8_t *buf = malloc(bytes + 4);
    if (buf == NULL) {
        fuzz_die("out of memory", n, bytes, 0);
    }
    store_u32(buf, (uint32_t)((cfg << 24) | n));
    memcpy(buf + 4, payload, bytes);
    const int st = fuzz_run(buf, bytes + 4);
    inputs++;
    free(buf);
    return st;
}

static const uint32_t extreme_u32[] = {0u, 1u, 2u, 7u, 8u, 4095u, 4096u, 4097u, 0x7fffffffu,
                                       0x80000000u, 0xfffffffeu, 0xffffffffu};

/* Applies one random mutation to buf (length *len, capacity cap); n is the element count. */
static void mutate(uint8_t *buf, size_t *len, size_t cap, size_t n)
{
    switch (rnd_below(9)) {
    case 0: { /* bit flips */
        const size_t flips = 1 + rnd_below(8);
        for (size_t f = 0; f < flips && *len > 0; f++) {
            const size_t at = rnd_below(*len);
            buf[at] ^= (uint8_t)(1u << rnd_below(8));
        }
        break;
    }
    case 1: /* truncation */
        *len = rnd_below(*len + 1);
        break;
    case 2: { /* extension with random bytes */
        const size_t add = 1 + rnd_below(16);
        for (size_t i = 0; i < add && *len < cap; i++) {
            buf[(*len)++] = (uint8_t)rnd();
        }
        break;
    }
    case 3: { /* a run of random bytes */
        if (*len == 0) {
            break;
        }
        const size_t at = rnd_below(*len);
        const size_t run = 1 + rnd_below(16);
        for (size_t i = at; i < at + run && i < *len; i++) {
            buf[i] = (uint8_t)rnd();
        }
        break;
    }
    case 4: /* extreme count / first metadata word */
    case 5: { /* extreme value in an early (metadata, index) word */
        const size_t words = *len / 4;
        if (words == 0) {
            break;
        }
        const size_t w = rnd_below(4) == 0 ? 0 : rnd_below(words < 64 ? words : 64);
        uint32_t v = extreme_u32[rnd_below(sizeof extreme_u32 / sizeof extreme_u32[0])];
        if (rnd_below(3) == 0) {
            v = (uint32_t)(n + rnd_below(3)) - 1u;
        }
        store_u32(buf + 4 * w, v);
        break;
    }
    case 6: { /* NaN / Inf / negative / huge floats in a metadata or value word */
        const size_t words = *len / 4;
        if (words == 0) {
            break;
        }
        static const float specials[] = {NAN, INFINITY, -INFINITY, -1.0f, -0.0f, FLT_MAX,
                                         -FLT_MAX, 1e-45f, FLT_MIN};
        const float f = specials[rnd_below(sizeof specials / sizeof specials[0])];
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        const size_t w = rnd_below(2) ? rnd_below(words < 8 ? words : 8) : rnd_below(words);
        store_u32(buf + 4 * w, u);
        break;
    }
    case 7: { /* swap two words (index order) */
        const size_t words = *len / 4;
        if (words < 2) {
            break;
        }
        const size_t a = rnd_below(words), b = rnd_below(words);
        uint8_t t[4];
        memcpy(t, buf + 4 * a, 4);
        memcpy(buf + 4 * a, buf + 4 * b, 4);
        memcpy(buf + 4 * b, t, 4);
        break;
    }
    default: /* all ones / all zeros */
        memset(buf, rnd_below(2) ? 0xff : 0x00, *len);
        break;
    }
}

int main(void)
{
    fuzz_init();
    const int iterations = 20000;
    float *in = malloc(FUZZ_MAX_N * sizeof *in);
    float *res = malloc(FUZZ_MAX_N * sizeof *res);
    if (in == NULL || res == NULL) {
        fuzz_die("out of memory", 0, 0, 0);
    }
    for (int it = 0; it < iterations; it++) {
        const size_t cfg = rnd_below(fuzz.nconfigs);
        /* Small sizes more often: they hit the edge cases (empty, partial bytes and buckets). */
        const size_t n = rnd_below(4) == 0 ? rnd_below(FUZZ_MAX_N + 1) : rnd_below(80);
        random_vector(in, n);
        random_vector(res, n);
        for (size_t i = 0; i < n; i++) {
            res[i] *= 1e-3f;
        }
        const size_t maxp = fuzz.c->max_payload(fuzz.state[cfg], n);
        const size_t cap = maxp + 64;
        uint8_t *payload = malloc(cap);
        uint8_t *mut = malloc(cap);
        if (payload == NULL || mut == NULL) {
            fuzz_die("out of memory", n, maxp, 0);
        }
        sqz_compress_args_v1_t a;
        memset(&a, 0, sizeof a);
        a.size = sizeof a;
        a.in = in;
        a.residual = rnd_below(2) ? res : NULL;
        a.n = n;
        a.seq = (uint64_t)it;
        a.stage = (int)rnd_below(2);
        a.payload = payload;
        a.capacity = maxp;
        const sqz_status_t cs = fuzz.c->compress(fuzz.state[cfg], &a);
        if (cs == SQZ_ERR_NONFINITE) {
            /* in + residual overflowed (the FLT_MAX shape): nothing to decode. */
            free(payload);
            free(mut);
            continue;
        }
        if (cs != SQZ_OK || a.payload_bytes > maxp) {
            fuzz_die("compress failed", n, a.payload_bytes, cs);
        }
        if (feed(n, cfg, payload, a.payload_bytes) != SQZ_OK) {
            fuzz_die("a valid payload was rejected", n, a.payload_bytes, SQZ_ERR_CORRUPT);
        }
        const int variants = 4;
        for (int v = 0; v < variants; v++) {
            size_t len = a.payload_bytes;
            memcpy(mut, payload, len);
            const size_t nmut = 1 + rnd_below(3);
            for (size_t k = 0; k < nmut; k++) {
                mutate(mut, &len, cap, n);
            }
            /* Sometimes decode the mutant under a neighbouring n. */
            size_t nn = n;
            if (rnd_below(8) == 0) {
                nn = rnd_below(2) ? n + 1 : (n > 0 ? n - 1 : 0);
            }
            (void)feed(nn, cfg, mut, len);
        }
        free(payload);
        free(mut);
    }
    /* A few raw random inputs, as libFuzzer would start with. */
    for (int it = 0; it < 2000; it++) {
        uint8_t buf[256];
        const size_t len = rnd_below(sizeof buf + 1);
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)rnd();
        }
        if (len >= 4) {
            buf[0] &= 0x3f; /* keep n small so that some sizes match */
            buf[1] = 0;
            buf[2] = 0;
        }
        (void)LLVMFuzzerTestOneInput(buf, len);
        inputs++;
    }
    free(in);
    free(res);
    fuzz_fini();
    printf("fuzz_decode_%s: %zu inputs, 0 crashes\n", SQZ_FUZZ_METHOD, inputs);
    return 0;
}
#endif /* SQZ_LIBFUZZER */
