#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sqz_log.h"

static int sqz_log_level = SQZ_LOG_WARN;
static int sqz_log_rank  = -1;

void sqz_log_set_level(int level) { __atomic_store_n(&sqz_log_level, level, __ATOMIC_RELAXED); }
int  sqz_log_get_level(void) { return __atomic_load_n(&sqz_log_level, __ATOMIC_RELAXED); }
void sqz_log_set_rank(int rank) { sqz_log_rank = rank; }

void sqz_log_write(int level, const char *file, int line, const char *fmt, ...)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char    msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *lvl = (level >= 0 && level <= SQZ_LOG_DEBUG) ? names[level] : "?";
    /* One fprintf per line so that lines of different ranks do not interleave mid-line. */
    if (sqz_log_rank >= 0) {
        if (level >= SQZ_LOG_DEBUG) {
            fprintf(stderr, "squeeze[rank %d] %s: %s (%s:%d)\n", sqz_log_rank, lvl, msg, file, line);
        } else {
            fprintf(stderr, "squeeze[rank %d] %s: %s\n", sqz_log_rank, lvl, msg);
        }
    } else {
        fprintf(stderr, "squeeze[pid %ld] %s: %s\n", (long)getpid(), lvl, msg);
    }
}
