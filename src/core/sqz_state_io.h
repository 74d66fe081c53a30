/* Checkpoints of a communicator's per-buffer state (sqz_state_save / sqz_state_load in
 * squeeze.h): the serialization helpers the host store and the device engine share. */
#ifndef SQZ_STATE_IO_H
#define SQZ_STATE_IO_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze.h>

/** A byte sink that only counts when `base` is NULL or too small (the first pass sizes). */
typedef struct sqz_wbuf {
    unsigned char *base;
    size_t         cap, off;
} sqz_wbuf_t;

/** A bounds-checked byte source. */
typedef struct sqz_rbuf {
    const unsigned char *base;
    size_t               len, off;
    int                  bad; /* a read ran past the end */
} sqz_rbuf_t;

/** Appends n bytes (counts them; copies them when they fit). */
void sqz_wbuf_put(sqz_wbuf_t *w, const void *p, size_t n);

/** Reads n bytes into p; on a short source sets r->bad and zeroes p. \return !r->bad. */
int sqz_rbuf_get(sqz_rbuf_t *r, void *p, size_t n);

/** Reads a pointer to n bytes in place (NULL and r->bad when short). */
const void *sqz_rbuf_take(sqz_rbuf_t *r, size_t n);

#endif
