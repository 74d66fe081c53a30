/* Fuzz target for the layout-file parser (SQZ_LAYOUT, sqz_layout_file_parse): mutated layout
 * texts must parse into layers that lie inside their buffer, sorted and non-overlapping, or give
 * SQZ_ERR_INVALID_PARAM with a message naming the input; never crash or read out of bounds (the
 * input is copied into an exact-size heap block, so ASan catches overreads).  Deterministic
 * mutation driver; also a libFuzzer entry point. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_layout_file.h"

static const char *const seeds[] = {
    "# model\nbuffer 1000\n10 20 fc1.weight\n20 fc1.bias\npad 4\n2 3 4 5\n\nbuffer 50\n5 10\n",
    "buffer 4096\n64 64\n",
    "buffer 12\n3 4 # comment\n",
    "buffer 100\npad 10\n9 10 w\n",
};

static int parse_one(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    if (NULL == copy) {
        abort();
    }
    memcpy(copy, data, size);
    sqz_layout_file_t *f = NULL;
    char               err[256];
    err[0]                = '\0';
    const sqz_status_t st = sqz_layout_file_parse(copy, size, "fuzz", &f, err, sizeof err);
    if (SQZ_OK == st) {
        /* Every buffer the text names must satisfy the layout contract. */
        for (size_t count = 1; count <= 5000; count++) {
            size_t             nl = 0;
            const sqz_layer_t *l  = sqz_layout_file_find(f, count, &nl);
            size_t             end = 0;
            for (size_t i = 0; l && i < nl; i++) {
                if (0 == l[i].rows || 0 == l[i].cols || l[i].offset < end ||
                    l[i].rows * l[i].cols > count - l[i].offset) {
                    abort();
                }
                end = l[i].offset + l[i].rows * l[i].cols;
            }
        }
        sqz_layout_file_free(f);
    } else if (SQZ_ERR_INVALID_PARAM != st || NULL != f || 0 != strncmp(err, "fuzz", 4)) {
        abort();
    }
    free(copy);
    return SQZ_OK == st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_one(data, size);
    return 0;
}

#ifndef SQZ_LIBFUZZER
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

int main(void)
{
    const char alphabet[] = "0123456789 \t\n#xbufferpad-+";
    size_t     ok = 0, total = 0;
    uint8_t    buf[512];
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        const size_t len = strlen(seeds[s]);
        if (!parse_one((const uint8_t *)seeds[s], len)) {
            fprintf(stderr, "seed %zu does not parse\n", s);
            return 1;
        }
        for (int m = 0; m < 20000; m++) {
            size_t n = len;
            memcpy(buf, seeds[s], len);
            const int edits = 1 + (int)(next_u64() % 4);
            for (int e = 0; e < edits; e++) {
                const uint64_t r   = next_u64();
                const size_t   pos = n ? (size_t)(r >> 8) % n : 0;
                switch (r % 4) {
                case 0: buf[pos] = (uint8_t)alphabet[(r >> 40) % (sizeof alphabet - 1)]; break;
                case 1: buf[pos] = (uint8_t)(r >> 40); break;
                case 2: n = pos; break; /* truncate */
                default:
                    if (n < sizeof buf) { /* insert a digit: bigger numbers */
                        memmove(buf + pos + 1, buf + pos, n - pos);
                        buf[pos] = (uint8_t)('0' + (r >> 40) % 10);
                        n++;
                    }
                    break;
                }
            }
            ok += (size_t)parse_one(buf, n);
            total++;
        }
    }
    printf("fuzz_layout: %zu mutated inputs, %zu parsed, the rest rejected cleanly\n", total, ok);
    return 0;
}
#endif
