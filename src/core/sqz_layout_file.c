/* Layout files (SQZ_LAYOUT=path): the layers of buffers that a shim cannot learn from the job.
 *
 * Format (text, one statement per line, '#' starts a comment):
 *     buffer COUNT          starts the layout of every eligible buffer of COUNT elements
 *     D1 [D2 ...] [NAME]    the next layer, right after the previous one: a tensor of shape
 *                           D1 x D2 x ..., seen as D1 rows x (D2 * ...) columns (a single
 *                           dimension is a 1-D tensor: D1 x 1); NAME is ignored
 *     pad N                 skips N elements (padding between tensors)
 * Layers may not run past COUNT; elements after the last layer are summed exactly.  A shim sees
 * only the element count of a call, so buffers are matched by COUNT, and each COUNT may appear
 * once.  Any malformed line is an error naming the file and the line. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_layout_file.h"

typedef struct sqz_layout_file_buffer {
    size_t       count;
    sqz_layer_t *layers;
    size_t       nlayers, cap;
    size_t       end;  /* the first element after the last layer or pad */
    size_t       line; /* of its 'buffer COUNT' statement */
    int          used; /* some call found it (written by sqz_layout_file_find, atomically) */
} sqz_layout_file_buffer_t;

struct sqz_layout_file {
    sqz_layout_file_buffer_t *bufs;
    size_t                    nbufs, cap;
};

void sqz_layout_file_free(sqz_layout_file_t *f)
{
    if (NULL == f) {
        return;
    }
    for (size_t i = 0; i < f->nbufs; i++) {
        free(f->bufs[i].layers);
    }
    free(f->bufs);
    free(f);
}

/* Reads an unsigned decimal of at most 2^53 from [*p, end); \return 0 when there is none. */
static int sqz_lf_number(const char **p, const char *end, size_t *v)
{
    const char *s = *p;
    size_t      x = 0;
    if (s >= end || !isdigit((unsigned char)*s)) {
        return 0;
    }
    for (; s < end && isdigit((unsigned char)*s); s++) {
        if (x > ((size_t)1 << 53) / 10) {
            return 0;
        }
        x = x * 10 + (size_t)(*s - '0');
    }
    if (s < end && !isspace((unsigned char)*s)) {
        return 0; /* "12abc" */
    }
    *p = s;
    *v = x;
    return 1;
}

static const char *sqz_lf_skip_space(const char *p, const char *end)
{
    while (p < end && (' ' == *p || '\t' == *p || '\r' == *p)) {
        p++;
    }
    return p;
}

#define SQZ_LF_FAIL(...)                                                                          \
    do {                                                                                          \
        snprintf(err, errlen, __VA_ARGS__);                                                       \
        sqz_layout_file_free(f);                                                                  \
        return SQZ_ERR_INVALID_PARAM;                                                             \
    } while (0)

sqz_status_t sqz_layout_file_parse(const char *text, size_t len, const char *name,
                                   sqz_layout_file_t **out, char *err, size_t errlen)
{
    *out                 = NULL;
    sqz_layout_file_t *f = calloc(1, sizeof(*f));
    if (NULL == f) {
        return SQZ_ERR_NO_MEMORY;
    }
    const char *const end  = text + len;
    size_t            line = 0;
    for (const char *p = text; p < end;) {
        const char *nl   = memchr(p, '\n', (size_t)(end - p));
        const char *eol  = nl ? nl : end;
        const char *hash = memchr(p, '#', (size_t)(eol - p));
        const char *stop = hash ? hash : eol;
        line++;
        const char *s = sqz_lf_skip_space(p, stop);
        p             = nl ? nl + 1 : end;
        if (s == stop) {
            continue;
        }
        sqz_layout_file_buffer_t *b = f->nbufs ? &f->bufs[f->nbufs - 1] : NULL;
        size_t                    v = 0;
        if ((size_t)(stop - s) >= 6 && 0 == memcmp(s, "buffer", 6) &&
            (s + 6 == stop || isspace((unsigned char)s[6]))) {
            s = sqz_lf_skip_space(s + 6, stop);
            if (!sqz_lf_number(&s, stop, &v) || 0 == v || sqz_lf_skip_space(s, stop) != stop) {
                SQZ_LF_FAIL("%s:%zu: expected 'buffer COUNT' with COUNT >= 1", name, line);
            }
            for (size_t i = 0; i < f->nbufs; i++) {
                if (f->bufs[i].count == v) {
                    SQZ_LF_FAIL("%s:%zu: buffer %zu is described twice (a shim matches buffers "
                                "by element count)", name, line, v);
                }
            }
            if (f->nbufs == f->cap) {
                const size_t cap = f->cap ? 2 * f->cap : 4;
                void        *g   = realloc(f->bufs, cap * sizeof(*f->bufs));
                if (NULL == g) {
                    sqz_layout_file_free(f);
                    return SQZ_ERR_NO_MEMORY;
                }
                f->bufs = g, f->cap = cap;
            }
            f->bufs[f->nbufs++] = (sqz_layout_file_buffer_t){.count = v, .line = line};
            continue;
        }
        if (NULL == b) {
            SQZ_LF_FAIL("%s:%zu: a layer before any 'buffer COUNT' line", name, line);
        }
        if ((size_t)(stop - s) >= 3 && 0 == memcmp(s, "pad", 3) &&
            (s + 3 == stop || isspace((unsigned char)s[3]))) {
            s = sqz_lf_skip_space(s + 3, stop);
            if (!sqz_lf_number(&s, stop, &v) || sqz_lf_skip_space(s, stop) != stop) {
                SQZ_LF_FAIL("%s:%zu: expected 'pad N'", name, line);
            }
            if (v > b->count - b->end) {
                SQZ_LF_FAIL("%s:%zu: pad %zu runs past the end of buffer %zu", name, line, v,
                            b->count);
            }
            b->end += v;
            continue;
        }
        /* A shape: dimensions, then maybe a name. */
        size_t dims[8], nd = 0;
        while (s < stop && isdigit((unsigned char)*s)) {
            if (nd == 8 || !sqz_lf_number(&s, stop, &dims[nd]) || 0 == dims[nd]) {
                SQZ_LF_FAIL("%s:%zu: a shape is 1 to 8 positive integers", name, line);
            }
            nd++;
            s = sqz_lf_skip_space(s, stop);
        }
        if (0 == nd) {
            SQZ_LF_FAIL("%s:%zu: expected 'buffer COUNT', 'pad N' or a shape such as "
                        "'768 3072'", name, line);
        }
        /* The rest of the line is a name: one token. */
        while (s < stop && !isspace((unsigned char)*s)) {
            s++;
        }
        if (sqz_lf_skip_space(s, stop) != stop) {
            SQZ_LF_FAIL("%s:%zu: unexpected text after the layer's name", name, line);
        }
        size_t cols = 1;
        for (size_t d = 1; d < nd; d++) {
            if (dims[d] > b->count / cols) {
                SQZ_LF_FAIL("%s:%zu: the layer is larger than buffer %zu", name, line, b->count);
            }
            cols *= dims[d];
        }
        const size_t rows = dims[0];
        if (rows > b->count / cols || rows * cols > b->count - b->end) {
            SQZ_LF_FAIL("%s:%zu: layer %zu x %zu at element %zu runs past the end of buffer %zu "
                        "(the layers add up to more than the buffer's elements)",
                        name, line, rows, cols, b->end, b->count);
        }
        if (b->nlayers == b->cap) {
            const size_t cap = b->cap ? 2 * b->cap : 16;
            void        *g   = realloc(b->layers, cap * sizeof(*b->layers));
            if (NULL == g) {
                sqz_layout_file_free(f);
                return SQZ_ERR_NO_MEMORY;
            }
            b->layers = g, b->cap = cap;
        }
        b->layers[b->nlayers++] = (sqz_layer_t){.offset = b->end, .rows = rows, .cols = cols};
        b->end += rows * cols;
    }
    if (0 == f->nbufs) {
        SQZ_LF_FAIL("%s: no 'buffer COUNT' line", name);
    }
    *out = f;
    return SQZ_OK;
}

sqz_status_t sqz_layout_file_load(const char *path, sqz_layout_file_t **out, char *err,
                                  size_t errlen)
{
    *out    = NULL;
    FILE *fp = fopen(path, "rb");
    if (NULL == fp) {
        snprintf(err, errlen, "SQZ_LAYOUT=%s: cannot open: %s", path, strerror(errno));
        return SQZ_ERR_IO;
    }
    char  *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap        = cap ? 2 * cap : 65536;
            char *g    = realloc(text, cap);
            if (NULL == g || cap > ((size_t)64 << 20)) {
                free(g ? g : text);
                fclose(fp);
                snprintf(err, errlen, "SQZ_LAYOUT=%s: %s", path,
                         g ? "larger than 64 MiB" : "out of memory");
                return g ? SQZ_ERR_INVALID_PARAM : SQZ_ERR_NO_MEMORY;
            }
            text = g;
        }
        const size_t got = fread(text + len, 1, cap - len, fp);
        len += got;
        if (0 == got) {
            break;
        }
    }
    const int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(text);
        snprintf(err, errlen, "SQZ_LAYOUT=%s: read error", path);
        return SQZ_ERR_IO;
    }
    const sqz_status_t st = sqz_layout_file_parse(text, len, path, out, err, errlen);
    free(text);
    return st;
}

const sqz_layer_t *sqz_layout_file_find(const sqz_layout_file_t *f, size_t count, size_t *nlayers)
{
    for (size_t i = 0; f && i < f->nbufs; i++) {
        if (f->bufs[i].count == count) {
            __atomic_store_n((int *)&f->bufs[i].used, 1, __ATOMIC_RELAXED);
            *nlayers = f->bufs[i].nlayers;
            return f->bufs[i].layers;
        }
    }
    *nlayers = 0;
    return NULL;
}

size_t sqz_layout_file_unused(const sqz_layout_file_t *f, size_t *line, size_t *count, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; f && i < f->nbufs; i++) {
        if (!__atomic_load_n(&f->bufs[i].used, __ATOMIC_RELAXED)) {
            if (n < cap) {
                line[n]  = f->bufs[i].line;
                count[n] = f->bufs[i].count;
            }
            n++;
        }
    }
    return n;
}
