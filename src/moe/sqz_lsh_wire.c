/* The token block format of sqz_lsh.h: header, RAW blocks, and the one decoder of every form. */
#include "config.h"

#include <string.h>

#include "sqz_lsh.h"
#include "sqz_plugin_util.h"

size_t sqz_tok_esize(int dtype)
{
    switch (dtype) {
    case SQZ_DTYPE_FLOAT32: return 4;
    case SQZ_DTYPE_FLOAT16:
    case SQZ_DTYPE_BFLOAT16: return 2;
    default: return 0;
    }
}

size_t sqz_tok_raw_bytes(size_t tokens, size_t width, int dtype)
{
    return SQZ_TOKFRAME_HEADER + tokens * width * sqz_tok_esize(dtype);
}

unsigned sqz_tok_index_width(size_t rows)
{
    return rows <= 0x100u ? 1u : (rows <= 0x10000u ? 2u : 4u);
}

void sqz_tok_header(void *dst, unsigned kind, int dtype, unsigned iw, unsigned flags, size_t width,
                    size_t tokens, size_t rows)
{
    unsigned char *p = dst;
    sqz_pu_store_u32(p, SQZ_TOKFRAME_MAGIC);
    p[4] = (unsigned char)kind;
    p[5] = (unsigned char)dtype;
    p[6] = (unsigned char)iw;
    p[7] = (unsigned char)flags;
    sqz_pu_store_u32(p + 8, (uint32_t)width);
    sqz_pu_store_u32(p + 12, (uint32_t)tokens);
    sqz_pu_store_u32(p + 16, (uint32_t)rows);
    sqz_pu_store_u32(p + 20, 0);
}

void sqz_tok_store_index(unsigned char *idx, unsigned iw, size_t t, uint32_t v)
{
    switch (iw) {
    case 1: idx[t] = (unsigned char)v; break;
    case 2: sqz_pu_store_u16(idx + 2 * t, (uint16_t)v); break;
    default: sqz_pu_store_u32(idx + 4 * t, v); break;
    }
}

void sqz_tok_encode_raw(const void *src, size_t tokens, size_t width, int dtype, void *dst)
{
    sqz_tok_header(dst, SQZ_TOKFRAME_RAW, dtype, 0, 0, width, tokens, tokens);
    memcpy((unsigned char *)dst + SQZ_TOKFRAME_HEADER, src, tokens * width * sqz_tok_esize(dtype));
}

void sqz_tok_view(const void *block, sqz_tok_view_t *v)
{
    const unsigned char *p = block;
    const size_t         w = sqz_pu_load_u32(p + 8);
    v->kind                = p[4];
    v->iw                  = p[6];
    v->tokens              = sqz_pu_load_u32(p + 12);
    v->rows                = sqz_pu_load_u32(p + 16);
    v->rowdata             = p + SQZ_TOKFRAME_HEADER;
    v->index = SQZ_TOKFRAME_RAW == v->kind ? NULL
                                           : v->rowdata + (size_t)v->rows * w * sqz_tok_esize(p[5]);
}

uint32_t sqz_tok_view_index(const sqz_tok_view_t *v, size_t t)
{
    switch (v->iw) {
    case 0: return (uint32_t)t;
    case 1: return v->index[t];
    case 2: return sqz_pu_load_u16(v->index + 2 * t);
    default: return sqz_pu_load_u32(v->index + 4 * t);
    }
}

sqz_status_t sqz_tok_decode(const void *block, size_t bytes, size_t tokens, size_t width, int dtype,
                            void *out)
{
    const unsigned char *p  = block;
    const size_t         es = sqz_tok_esize(dtype);
    if (bytes < SQZ_TOKFRAME_HEADER || 0 == es || 0 == width || (uint64_t)tokens > UINT32_MAX ||
        (uint64_t)width > UINT32_MAX || SQZ_TOKFRAME_MAGIC != sqz_pu_load_u32(p) ||
        p[5] != (unsigned char)dtype || sqz_pu_load_u32(p + 8) != width ||
        sqz_pu_load_u32(p + 12) != tokens || 0 != sqz_pu_load_u32(p + 20)) {
        return SQZ_ERR_CORRUPT;
    }
    /* The header's own fields first; the view (pointers) only once they are known to fit. */
    const uint32_t kind = p[4], iw = p[6], rows = sqz_pu_load_u32(p + 16);
    /* Every size is checked by division first: no product of header fields can overflow. */
    const size_t rowbytes = width * es, avail = bytes - SQZ_TOKFRAME_HEADER;
    if (rows > avail / rowbytes) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t rest = avail - (size_t)rows * rowbytes;
    sqz_tok_view_t v;
    if (SQZ_TOKFRAME_RAW == kind) {
        if (0 != iw || rows != tokens || 0 != rest) {
            return SQZ_ERR_CORRUPT;
        }
        sqz_tok_view(block, &v);
        if (out) {
            memcpy(out, v.rowdata, tokens * rowbytes);
        }
        return SQZ_OK;
    }
    if (SQZ_TOKFRAME_ROWS != kind || rows > tokens || (0 == rows) != (0 == tokens) ||
        iw != sqz_tok_index_width(rows) || rest / iw < tokens || rest != tokens * iw) {
        return SQZ_ERR_CORRUPT;
    }
    sqz_tok_view(block, &v);
    for (size_t t = 0; t < tokens; t++) {
        if (sqz_tok_view_index(&v, t) >= v.rows) {
            return SQZ_ERR_CORRUPT;
        }
    }
    unsigned char *o = out;
    for (size_t t = 0; o && t < tokens; t++) {
        memcpy(o + t * rowbytes, v.rowdata + sqz_tok_view_index(&v, t) * rowbytes, rowbytes);
    }
    return SQZ_OK;
}
