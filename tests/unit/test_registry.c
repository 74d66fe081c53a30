/* The compressor registry: built-ins, loading the example plugin (ABI v2) and a v1 plugin (the
 * adapter), and plugins that fail to load (missing file, not a plugin, bad descriptor) being
 * skipped without harm; the v2 descriptor checks; the device support table (what the GPU path
 * runs, and why not). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_ctx.h"
#include "sqz_device_support.h"
#include "sqz_log.h"
#include "sqz_param.h"
#include "sqz_registry.h"
#include "sqz_test.h"

static void test_builtins(void)
{
    sqz_registry_t r;
    REQUIRE(SQZ_OK == sqz_registry_init(&r));
    const char *names[] = {"none", "topk", "quant", "sign"};
    for (size_t i = 0; i < 4; i++) {
        const sqz_compressor_v1_t *c = sqz_registry_find(&r, names[i]);
        CHECK_MSG(c != NULL, "%s missing", names[i]);
        if (c) {
            char err[256];
            CHECK_EQ_INT(sqz_registry_check(c, err, sizeof(err)), SQZ_OK);
            CHECK(c->description && strlen(c->description) > 10);
        }
    }
    CHECK(NULL == sqz_registry_find(&r, "nosuch"));
    sqz_registry_fini(&r);
}

static void test_check(void)
{
    char                err[256];
    sqz_compressor_v1_t bad = sqz_compressor_topk;
    bad.abi                 = 2;
    CHECK_EQ_INT(sqz_registry_check(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    bad      = sqz_compressor_topk;
    bad.size = 8;
    CHECK_EQ_INT(sqz_registry_check(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    bad      = sqz_compressor_topk;
    bad.name = "Top-K";
    CHECK_EQ_INT(sqz_registry_check(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    bad          = sqz_compressor_topk;
    bad.compress = NULL;
    CHECK_EQ_INT(sqz_registry_check(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    bad          = sqz_compressor_topk;
    bad.exchange = (sqz_exchange_t)77;
    CHECK_EQ_INT(sqz_registry_check(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    CHECK_EQ_INT(sqz_registry_check(NULL, err, sizeof(err)), SQZ_ERR_PLUGIN);
}

static void test_plugins(void)
{
    const char *plugin = getenv("SQUEEZE_TEST_PLUGIN");
    sqz_registry_t r;
    REQUIRE(SQZ_OK == sqz_registry_init(&r));
    const size_t before = r.n;
    /* Missing file, a file that is not a shared object, a library without the symbol: skipped. */
    CHECK_EQ_INT(sqz_registry_load_plugins(&r, "/nonexistent/libnothing.so"), 1);
    CHECK_EQ_INT(sqz_registry_load_plugins(&r, "/etc/hostname,libm.so.6"), 2);
    CHECK_EQ_INT(r.n, before);
    if (plugin && plugin[0]) {
        CHECK_EQ_INT(sqz_registry_load_plugins(&r, plugin), 0);
        const sqz_compressor_v1_t *c = sqz_registry_find(&r, "example");
        CHECK(c != NULL);
        CHECK_EQ_INT(r.n, before + 1);
        /* Loading it twice: the duplicate name is refused. */
        CHECK_EQ_INT(sqz_registry_load_plugins(&r, plugin), 1);
        if (c) {
            /* The plugin works through the ABI. */
            void                         *state = NULL;
            const sqz_compressor_env_v1_t env   = {.size = sizeof(env), .rank = 0, .nranks = 1, .seed = 1};
            void                         *cfg   = NULL;
            char                          err[256];
            REQUIRE(SQZ_OK == sqz_plugin_config_make(c, NULL, &cfg, err, sizeof(err)));
            CHECK_EQ_INT(c->create(cfg, &env, &state), SQZ_OK);
            free(cfg);
            float          in[100], res[100] = {0}, out[100] = {0};
            unsigned char  payload[4096];
            for (int i = 0; i < 100; i++) {
                in[i] = (float)i * 0.37f - 11.0f;
            }
            sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .residual = res, .n = 100,
                                        .payload = payload, .capacity = sizeof(payload)};
            REQUIRE(c->max_payload(state, 100) <= sizeof(payload));
            CHECK_EQ_INT(c->compress(state, &a), SQZ_OK);
            CHECK_EQ_INT(c->decompress(state, payload, a.payload_bytes, out, 100), SQZ_OK);
            for (int i = 0; i < 100; i++) {
                CHECK_NEAR(out[i] + res[i], in[i], 1e-5);
            }
            /* Its query reads only the fields the engine filled: an older, shorter query is
             * taken; 16-bit elements are declined, on host and device buffers. */
            sqz_query_v1_t q = {.size = sizeof(q), .count = 100, .nranks = 2, .dtype = 1,
                                .op = 1, .memory = SQZ_MEMORY_HOST};
            CHECK_EQ_INT(c->query(state, &q), SQZ_OK);
            q.memory = SQZ_MEMORY_DEVICE;
            CHECK_EQ_INT(c->query(state, &q), SQZ_OK);
            q.dtype = 3;
            CHECK_EQ_INT(c->query(state, &q), SQZ_ERR_NOT_SUPPORTED);
            q.memory = SQZ_MEMORY_HOST;
            CHECK_EQ_INT(c->query(state, &q), SQZ_ERR_NOT_SUPPORTED);
            q.size = (uint32_t)offsetof(sqz_query_v1_t, dtype);
            CHECK_EQ_INT(c->query(state, &q), SQZ_OK);
            c->destroy(state);
            /* A v2 plugin: device operations exactly when this build has CUDA. */
            const sqz_device_ops_v2_t *dev = r.e[r.n - 1].device;
#ifdef SQZ_HAVE_GPU
            CHECK_MSG(dev != NULL && dev->size >= sizeof(*dev) && dev->compress != NULL,
                      "the example plugin has no device operations in a CUDA build");
            CHECK(NULL == sqz_device_method_decline("example", dev));
#else
            CHECK_MSG(dev == NULL, "device operations in a build without CUDA");
#endif
        }
    } else {
        printf("SQUEEZE_TEST_PLUGIN not set: example plugin not tested here\n");
    }
    sqz_registry_fini(&r);
}

/* A plugin built against ABI v1 alone loads through the adapter: host operations, no device
 * operations, declined on device buffers with the reason. */
static void test_v1_plugin(void)
{
    const char *plugin = getenv("SQUEEZE_TEST_PLUGIN_V1");
    if (NULL == plugin || '\0' == plugin[0]) {
        printf("SQUEEZE_TEST_PLUGIN_V1 not set: the v1 adapter not tested here\n");
        return;
    }
    sqz_registry_t r;
    REQUIRE(SQZ_OK == sqz_registry_init(&r));
    CHECK_EQ_INT(sqz_registry_load_plugins(&r, plugin), 0);
    const sqz_compressor_v1_t *c = sqz_registry_find(&r, "v1copy");
    CHECK(c != NULL && r.e[r.n - 1].c == c);
    if (c != NULL) {
        CHECK(NULL == r.e[r.n - 1].device);
        const char *why = sqz_device_method_decline("v1copy", NULL);
        CHECK(why != NULL && strstr(why, "host operations only") != NULL);
        void                         *state = NULL;
        const sqz_compressor_env_v1_t env   = {.size = sizeof(env), .rank = 0, .nranks = 1};
        REQUIRE(SQZ_OK == c->create(NULL, &env, &state));
        float         in[5] = {1.5f, -2.0f, 0.0f, 3e-7f, -1e9f}, res[5] = {0}, out[5] = {0};
        unsigned char payload[20];
        sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .residual = res, .n = 5,
                                    .payload = payload, .capacity = sizeof(payload)};
        CHECK_EQ_INT(c->compress(state, &a), SQZ_OK);
        CHECK_EQ_INT(c->decompress(state, payload, a.payload_bytes, out, 5), SQZ_OK);
        CHECK(0 == memcmp(in, out, sizeof(in)));
        c->destroy(state);
    }
    sqz_registry_fini(&r);
}

/* A context selecting the example plugin: its device operations are the method's (a CUDA build),
 * and the settings digest says whether it has them (ranks that loaded different builds of it
 * must not meet); a built-in's digest has no such line. */
static void test_plugin_context(void)
{
    const char *plugin = getenv("SQUEEZE_TEST_PLUGIN");
    if (NULL == plugin || '\0' == plugin[0]) {
        return;
    }
    for (int builtin = 0; builtin < 2; builtin++) {
        sqz_config_t *cfg = NULL;
        sqz_ctx_t    *ctx = NULL;
        char          err[256], digest[8192];
        uint64_t      hash = 0;
        REQUIRE(SQZ_OK == sqz_config_create(&cfg));
        REQUIRE(SQZ_OK == sqz_config_set(cfg, "SQZ_PLUGINS", plugin));
        REQUIRE(SQZ_OK == sqz_config_set(cfg, "SQZ_METHOD", builtin ? "quant" : "example"));
        REQUIRE(SQZ_OK == sqz_ctx_create(cfg, &ctx, err, sizeof(err)));
        REQUIRE(SQZ_OK == sqz_ctx_settings_digest(ctx, digest, sizeof(digest), &hash));
        const char *line = strstr(digest, "SQZ_PLUGIN_DEVICE_OPS=");
#ifdef SQZ_HAVE_GPU
        const char *want = "SQZ_PLUGIN_DEVICE_OPS=yes";
        CHECK(builtin ? NULL == ctx->method_device : NULL != ctx->method_device);
#else
        const char *want = "SQZ_PLUGIN_DEVICE_OPS=no";
        CHECK(NULL == ctx->method_device);
#endif
        CHECK_MSG(builtin ? NULL == line : NULL != line && 0 == strncmp(line, want, strlen(want)),
                  "%s: digest line '%.30s'", builtin ? "quant" : "example", line ? line : "none");
        const char *why = sqz_device_decline(ctx);
#ifdef SQZ_HAVE_GPU
        CHECK_MSG(NULL == why, "device buffers declined: %s", why);
#else
        CHECK(builtin ? NULL == why : NULL != why && NULL != strstr(why, "host operations only"));
#endif
        sqz_ctx_destroy(ctx);
        sqz_config_destroy(cfg);
    }
}

/* The v2 descriptor's own checks: abi, size, host table, device operations. */
static void test_check_v2(void)
{
    static const sqz_device_ops_v2_t ok_ops = {
        .size = sizeof(sqz_device_ops_v2_t),
        .payload_bytes = (size_t (*)(void *, size_t))1,
        .workspace_bytes = (size_t (*)(void *, size_t, int))1,
        .compress = (sqz_status_t (*)(void *, const sqz_device_compress_args_v2_t *))1,
        .decode_sum = (sqz_status_t (*)(void *, const sqz_device_decode_args_v2_t *))1,
        .restore = (sqz_status_t (*)(void *, const sqz_device_restore_args_v2_t *))1,
    };
    char                err[256];
    sqz_compressor_v2_t d = {.abi = SQZ_COMPRESSOR_ABI_V2, .size = sizeof(d),
                             .host = &sqz_compressor_quant, .device = NULL};
    CHECK_EQ_INT(sqz_registry_check_v2(&d, err, sizeof(err)), SQZ_OK);
    d.device = &ok_ops;
    CHECK_EQ_INT(sqz_registry_check_v2(&d, err, sizeof(err)), SQZ_OK);
    sqz_compressor_v2_t bad = d;
    bad.abi                 = SQZ_COMPRESSOR_ABI_V1;
    CHECK_EQ_INT(sqz_registry_check_v2(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    bad = d, bad.size = 8;
    CHECK_EQ_INT(sqz_registry_check_v2(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    bad = d, bad.host = NULL;
    CHECK_EQ_INT(sqz_registry_check_v2(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    sqz_compressor_v1_t badhost = sqz_compressor_quant;
    badhost.compress            = NULL;
    bad = d, bad.host = &badhost;
    CHECK_EQ_INT(sqz_registry_check_v2(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    sqz_device_ops_v2_t badops = ok_ops;
    badops.restore             = NULL;
    bad = d, bad.device = &badops;
    CHECK_EQ_INT(sqz_registry_check_v2(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    CHECK(strstr(err, "device callback") != NULL);
    badops = ok_ops, badops.size = 4;
    CHECK_EQ_INT(sqz_registry_check_v2(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    bad = d, bad.host = &sqz_compressor_powersgd; /* summable: no device form */
    CHECK_EQ_INT(sqz_registry_check_v2(&bad, err, sizeof(err)), SQZ_ERR_PLUGIN);
    CHECK(strstr(err, "SUMMABLE") != NULL);
    CHECK_EQ_INT(sqz_registry_check_v2(NULL, err, sizeof(err)), SQZ_ERR_PLUGIN);
}

/* Every built-in has its own row in the device support table (a reason, or kernels); a name it
 * does not know is a host-only plugin; an option the device path declines is named. */
static void test_device_support(void)
{
    static const char *const on_device[] = {"none", "topk", "quant", "sign", "qsgd", "randk",
                                            "terngrad", "powersgd"};
    const char *plugin_reason = sqz_device_method_decline("nosuch_plugin", NULL);
    CHECK(plugin_reason != NULL && strstr(plugin_reason, "plugin") != NULL);
    sqz_registry_t r;
    REQUIRE(SQZ_OK == sqz_registry_init(&r));
    for (size_t j = 0; j < r.n; j++) {
        const char *name = r.e[j].c->name;
        const char *why = sqz_device_method_decline(name, NULL);
        int kernels = 0;
        for (size_t k = 0; k < sizeof(on_device) / sizeof(on_device[0]); k++) {
            kernels |= 0 == strcmp(on_device[k], name);
        }
        CHECK_MSG(kernels ? why == NULL : why != NULL && why != plugin_reason && strlen(why) > 20,
                  "%s: device support '%s'", name, why ? why : "kernels");
    }
    sqz_registry_fini(&r);
    const char *const cases[][5] = {
        {"quant", "ef14", NULL, NULL, NULL},
        {"quant", "econtrol", NULL, NULL, NULL},
        {"none", "econtrol", NULL, NULL, NULL},
        {"fedzip", "auto", NULL, NULL, "variable-size"},
        {"randk", "auto", "SQZ_RANDK_SCALE", "none", NULL},
        {"randk", "none", "SQZ_RANDK_SCALE", "unbiased", "RANDK_SCALE=unbiased"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sqz_config_t *cfg = NULL;
        sqz_ctx_t *ctx = NULL;
        char err[256];
        REQUIRE(SQZ_OK == sqz_config_create(&cfg));
        REQUIRE(SQZ_OK == sqz_config_set(cfg, "SQZ_METHOD", cases[i][0]));
        REQUIRE(SQZ_OK == sqz_config_set(cfg, "SQZ_EF", cases[i][1]));
        if (cases[i][2]) {
            REQUIRE(SQZ_OK == sqz_config_set(cfg, cases[i][2], cases[i][3]));
        }
        REQUIRE(SQZ_OK == sqz_ctx_create(cfg, &ctx, err, sizeof(err)));
        const char *why = sqz_device_decline(ctx);
        CHECK_MSG(cases[i][4] ? why != NULL && strstr(why, cases[i][4]) != NULL : why == NULL,
                  "%s with SQZ_EF=%s: device decline '%s'", cases[i][0], cases[i][1],
                  why ? why : "none");
        sqz_ctx_destroy(ctx);
        sqz_config_destroy(cfg);
    }
}

int main(void)
{
    sqz_log_set_level(SQZ_LOG_ERROR); /* the skipped plugins warn: expected */
    test_builtins();
    test_check();
    test_plugins();
    test_v1_plugin();
    test_plugin_context();
    test_check_v2();
    test_device_support();
    return sqz_test_result("test_registry");
}
