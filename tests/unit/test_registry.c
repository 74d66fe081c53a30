/* The compressor registry: built-ins, loading the example plugin, and plugins that fail to load
 * (missing file, not a plugin, bad descriptor) being skipped without harm; the device support
 * table (what the GPU path runs, and why not). */
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
             * taken; device buffers and 16-bit elements are declined. */
            sqz_query_v1_t q = {.size = sizeof(q), .count = 100, .nranks = 2, .dtype = 1,
                                .op = 1, .memory = SQZ_MEMORY_HOST};
            CHECK_EQ_INT(c->query(state, &q), SQZ_OK);
            q.memory = SQZ_MEMORY_DEVICE;
            CHECK_EQ_INT(c->query(state, &q), SQZ_ERR_NOT_SUPPORTED);
            q.memory = SQZ_MEMORY_HOST, q.dtype = 3;
            CHECK_EQ_INT(c->query(state, &q), SQZ_ERR_NOT_SUPPORTED);
            q.size = (uint32_t)offsetof(sqz_query_v1_t, dtype);
            CHECK_EQ_INT(c->query(state, &q), SQZ_OK);
            c->destroy(state);
        }
    } else {
        printf("SQUEEZE_TEST_PLUGIN not set: example plugin not tested here\n");
    }
    sqz_registry_fini(&r);
}

/* Every built-in has its own row in the device support table (a reason, or kernels); a name it
 * does not know is a host-only plugin; an option the device path declines is named. */
static void test_device_support(void)
{
    static const char *const on_device[] = {"none", "topk", "quant", "sign", "qsgd", "randk",
                                            "powersgd"};
    const char *plugin_reason = sqz_device_method_decline("nosuch_plugin");
    CHECK(plugin_reason != NULL && strstr(plugin_reason, "plugin") != NULL);
    sqz_registry_t r;
    REQUIRE(SQZ_OK == sqz_registry_init(&r));
    for (size_t j = 0; j < r.n; j++) {
        const char *name = r.e[j].c->name;
        const char *why = sqz_device_method_decline(name);
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
        {"quant", "econtrol", NULL, NULL, "econtrol"},
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
    test_device_support();
    return sqz_test_result("test_registry");
}
