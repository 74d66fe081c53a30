/* The parameter table: defaults, parsing of every type, bounds errors that name the variable,
 * config files, precedence of the environment, unknown variables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <squeeze.h>

#include "sqz_ctx.h"
#include "sqz_param.h"
#include "sqz_test.h"

/* Creates a context from "NAME=value" pairs; returns the status, the error text in err. */
static sqz_status_t make(const char *const *kv, sqz_ctx_t **ctx, char *err, size_t errlen)
{
    sqz_config_t *cfg;
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    for (size_t i = 0; kv && kv[i]; i += 2) {
        REQUIRE(SQZ_OK == sqz_config_set(cfg, kv[i], kv[i + 1]));
    }
    const sqz_status_t st = sqz_ctx_create(cfg, ctx, err, errlen);
    sqz_config_destroy(cfg);
    return st;
}

static void expect_error(const char *const *kv, const char *needle1, const char *needle2)
{
    sqz_ctx_t *ctx = NULL;
    char       err[512];
    CHECK_EQ_INT(make(kv, &ctx, err, sizeof(err)), SQZ_ERR_INVALID_PARAM);
    CHECK(NULL == ctx);
    CHECK_MSG(strstr(err, needle1) != NULL, "'%s' lacks '%s'", err, needle1);
    if (needle2) {
        CHECK_MSG(strstr(err, needle2) != NULL, "'%s' lacks '%s'", err, needle2);
    }
}

static void test_defaults(void)
{
    sqz_ctx_t *ctx = NULL;
    char       err[512];
    CHECK_EQ_INT(make(NULL, &ctx, err, sizeof(err)), SQZ_OK);
    REQUIRE(ctx);
    CHECK(0 == strcmp(sqz_ctx_method(ctx), "none"));
    CHECK_EQ_INT(ctx->p.min_bytes, 65536);
    CHECK_EQ_INT(ctx->p.ef, SQZ_EF_AUTO);
    CHECK_EQ_INT(ctx->ef, SQZ_EF_NONE); /* method none: nothing to feed back */
    CHECK_EQ_INT(ctx->p.warmup_steps, 0);
    sqz_ctx_destroy(ctx);
    sqz_ctx_destroy(NULL); /* accepted */
    sqz_config_destroy(NULL);
}

/* SQZ_EF=auto resolves per method (the compressors' flags); an explicit choice stays. */
static void test_ef_auto(void)
{
    static const struct {
        const char *method, *ef;
        int         expect;
    } cases[] = {
        {"quant", NULL, SQZ_EF_EF14},    {"sign", NULL, SQZ_EF_EF14},  {"topk", NULL, SQZ_EF_EF21},
        {"fedzip", NULL, SQZ_EF_EF21},   {"randk", NULL, SQZ_EF_NONE}, {"qsgd", NULL, SQZ_EF_NONE},
        {"terngrad", NULL, SQZ_EF_NONE}, {"powersgd", NULL, SQZ_EF_EF14},
        {"lossless", NULL, SQZ_EF_NONE}, {"topk", "ef14", SQZ_EF_EF14},
        {"qsgd", "ef14", SQZ_EF_EF14}, /* kept, with a warning */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *kv[] = {"SQZ_METHOD", cases[i].method, cases[i].ef ? "SQZ_EF" : NULL,
                            cases[i].ef, NULL};
        sqz_ctx_t  *ctx  = NULL;
        char        err[512];
        CHECK_EQ_INT(make(kv, &ctx, err, sizeof(err)), SQZ_OK);
        CHECK_MSG(ctx && ctx->ef == cases[i].expect, "%s with SQZ_EF=%s: %d, expected %d",
                  cases[i].method, cases[i].ef ? cases[i].ef : "auto", ctx ? ctx->ef : -1,
                  cases[i].expect);
        sqz_ctx_destroy(ctx);
    }
    /* DGC's momentum correction is defined over classic error feedback: auto gives ef14. */
    const char *kd[] = {"SQZ_METHOD", "topk", "SQZ_DGC_MOMENTUM", "0.9", NULL};
    sqz_ctx_t  *ctx  = NULL;
    CHECK_EQ_INT(make(kd, &ctx, NULL, 0), SQZ_OK);
    CHECK(ctx && SQZ_EF_EF14 == ctx->ef);
    sqz_ctx_destroy(ctx);
}

static void test_values(void)
{
    const char *kv[] = {"SQZ_METHOD", "topk", "MIN_BYTES", "1M", "SQZ_TOPK_DENSITY", "0.25",
                        "SQZ_EF", "none", "SQZ_WARMUP_STEPS", "7", "SQZ_CHECK_SETTINGS", "off",
                        "SQZ_QUANT_BITS", "8", NULL};
    sqz_ctx_t *ctx = NULL;
    char       err[512];
    CHECK_EQ_INT(make(kv, &ctx, err, sizeof(err)), SQZ_OK);
    REQUIRE(ctx);
    CHECK(0 == strcmp(sqz_ctx_method(ctx), "topk"));
    CHECK_EQ_INT(ctx->p.min_bytes, 1024 * 1024);
    CHECK_EQ_INT(ctx->p.ef, SQZ_EF_NONE);
    CHECK_EQ_INT(ctx->p.warmup_steps, 7);
    CHECK_EQ_INT(ctx->p.check_settings, 0);
    char     digest[4096];
    uint64_t h1 = 0, h2 = 0;
    CHECK_EQ_INT(sqz_ctx_settings_digest(ctx, digest, sizeof(digest), &h1), SQZ_OK);
    CHECK(strstr(digest, "SQZ_TOPK_DENSITY=0.25") != NULL);
    CHECK(strstr(digest, "SQZ_LOG") == NULL); /* local settings may differ between ranks */
    sqz_ctx_destroy(ctx);
    const char *kv2[] = {"SQZ_METHOD", "topk", "MIN_BYTES", "1M", "SQZ_TOPK_DENSITY", "0.5",
                         "SQZ_EF", "none", "SQZ_WARMUP_STEPS", "7", "SQZ_CHECK_SETTINGS", "off",
                         NULL};
    CHECK_EQ_INT(make(kv2, &ctx, err, sizeof(err)), SQZ_OK);
    REQUIRE(ctx);
    CHECK_EQ_INT(sqz_ctx_settings_digest(ctx, digest, sizeof(digest), &h2), SQZ_OK);
    CHECK(h1 != h2);
    sqz_ctx_destroy(ctx);
}

static void test_errors(void)
{
    expect_error((const char *const[]){"SQZ_METHOD", "nosuch", NULL}, "SQZ_METHOD", "topk");
    expect_error((const char *const[]){"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "2", NULL},
                 "SQZ_TOPK_DENSITY", "[1e-06, 1]");
    expect_error((const char *const[]){"SQZ_TOPK_DENSITY", "0", NULL}, "SQZ_TOPK_DENSITY", "out of range");
    expect_error((const char *const[]){"SQZ_TOPK_DENSITY", "0.1x", NULL}, "SQZ_TOPK_DENSITY", "not a number");
    expect_error((const char *const[]){"SQZ_QUANT_BITS", "9", NULL}, "SQZ_QUANT_BITS", "[1, 8]");
    expect_error((const char *const[]){"SQZ_QUANT_BITS", "abc", NULL}, "SQZ_QUANT_BITS", "not an integer");
    expect_error((const char *const[]){"SQZ_QUANT_BITS", "4.5", NULL}, "SQZ_QUANT_BITS", NULL);
    expect_error((const char *const[]){"SQZ_MIN_BYTES", "-1", NULL}, "SQZ_MIN_BYTES", NULL);
    expect_error((const char *const[]){"SQZ_MIN_BYTES", "12Q", NULL}, "SQZ_MIN_BYTES", "not a size");
    expect_error((const char *const[]){"SQZ_EF", "ef99", NULL}, "SQZ_EF", "ef14|none");
    expect_error((const char *const[]){"SQZ_LOG", "loud", NULL}, "SQZ_LOG", NULL);
    expect_error((const char *const[]){"SQZ_CHECK_SETTINGS", "maybe", NULL}, "SQZ_CHECK_SETTINGS", "boolean");
    expect_error((const char *const[]){"SQZ_STATS", "csv", NULL}, "SQZ_STATS", "json:PATH");
    expect_error((const char *const[]){"SQZ_WARMUP_STEPS", "-3", NULL}, "SQZ_WARMUP_STEPS", NULL);
    /* A long value is shown shortened: the reason and the bounds stay in the message. */
    char long_value[2048];
    memset(long_value, '7', sizeof(long_value) - 1);
    long_value[sizeof(long_value) - 1] = '\0';
    expect_error((const char *const[]){"SQZ_QUANT_BITS", long_value, NULL}, "[1, 8]",
                 "(2047 characters)");
}

static void test_file_and_env(void)
{
    char path[] = "/tmp/sqz-params-XXXXXX";
    int  fd     = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# a comment\nSQZ_METHOD = quant\nQUANT_BITS=2   # trailing comment\n\n"
               "SQZ_TOPK_DENSITY = 0.5\n");
    fclose(f);
    setenv("SQZ_CONFIG", path, 1);
    setenv("SQZ_QUANT_BITS", "3", 1); /* the environment wins over the file */
    setenv("SQZ_NOT_A_PARAMETER", "1", 1);
    sqz_config_t *cfg;
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    CHECK_EQ_INT(sqz_config_load_env(cfg), SQZ_OK);
    const sqz_config_entry_t *e = sqz_config_find(cfg, "QUANT_BITS");
    CHECK(e && 0 == strcmp(e->value, "3") && 0 == strcmp(e->source, "env"));
    e = sqz_config_find(cfg, "SQZ_METHOD");
    CHECK(e && 0 == strcmp(e->value, "quant") && strstr(e->source, "file") != NULL);
    sqz_ctx_t *ctx = NULL;
    char       err[512];
    CHECK_EQ_INT(sqz_ctx_create(cfg, &ctx, err, sizeof(err)), SQZ_OK); /* warns about the unknown */
    CHECK(ctx && 0 == strcmp(sqz_ctx_method(ctx), "quant"));
    sqz_ctx_destroy(ctx);
    sqz_config_destroy(cfg);

    /* A malformed line is an error naming the file and line. */
    f = fopen(path, "w");
    fprintf(f, "SQZ_METHOD = topk\nthis line has no equals sign\n");
    fclose(f);
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    CHECK_EQ_INT(sqz_config_load_env(cfg), SQZ_ERR_INVALID_PARAM);
    sqz_config_destroy(cfg);

    /* A directory is an I/O error, not an empty configuration. */
    setenv("SQZ_CONFIG", "/tmp", 1);
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    CHECK_EQ_INT(sqz_config_load_env(cfg), SQZ_ERR_IO);
    sqz_config_destroy(cfg);
    setenv("SQZ_CONFIG", path, 1);

    /* A missing file is an I/O error. */
    unlink(path);
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    CHECK_EQ_INT(sqz_config_load_env(cfg), SQZ_ERR_IO);
    sqz_config_destroy(cfg);
    unsetenv("SQZ_CONFIG");
    unsetenv("SQZ_QUANT_BITS");
    unsetenv("SQZ_NOT_A_PARAMETER");
}

static int visited;
static void visit(void *arg, const char *owner, const sqz_param_def_v1_t *def, const char *current,
                  const char *source)
{
    (void)arg;
    (void)owner;
    visited++;
    CHECK(def->help && def->help[0] && current && source);
}

static void test_visit(void)
{
    sqz_ctx_t *ctx = NULL;
    char       err[512];
    REQUIRE(SQZ_OK == make(NULL, &ctx, err, sizeof(err)));
    visited = 0;
    sqz_ctx_visit_params(ctx, visit, NULL);
    CHECK(visited >= 15);
    sqz_ctx_destroy(ctx);
}

int main(void)
{
    test_defaults();
    test_values();
    test_ef_auto();
    test_errors();
    test_file_and_env();
    test_visit();
    return sqz_test_result("test_params");
}
