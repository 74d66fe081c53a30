/* Layout files (SQZ_LAYOUT=path): parsing and lookup.  The format is described in
 * sqz_layout_file.c and docs/methods.md. */
#ifndef SQZ_LAYOUT_FILE_H
#define SQZ_LAYOUT_FILE_H

#include <stddef.h>

#include <squeeze.h>

typedef struct sqz_layout_file sqz_layout_file_t;

/** Parses `len` bytes of layout text; `name` names it in error messages.  \return SQZ_OK and
 *  *out, or SQZ_ERR_INVALID_PARAM with "name:line: what is wrong" in err. */
sqz_status_t sqz_layout_file_parse(const char *text, size_t len, const char *name,
                                   sqz_layout_file_t **out, char *err, size_t errlen);

/** Reads and parses the file at path (SQZ_ERR_IO when it cannot be read). */
sqz_status_t sqz_layout_file_load(const char *path, sqz_layout_file_t **out, char *err,
                                  size_t errlen);

/** \return the layers of buffers of `count` elements (and their number), or NULL. */
const sqz_layer_t *sqz_layout_file_find(const sqz_layout_file_t *f, size_t count, size_t *nlayers);

/** The entries no call has found (their buffer size never came): up to cap of their line numbers
 *  and counts.  \return how many there are. */
size_t sqz_layout_file_unused(const sqz_layout_file_t *f, size_t *line, size_t *count, size_t cap);

void sqz_layout_file_free(sqz_layout_file_t *f);

#endif
