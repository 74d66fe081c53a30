/* Status strings and version macros agree with the library. */
#include <string.h>

#include <squeeze.h>

#include "sqz_test.h"

int main(void)
{
    CHECK_EQ_INT(sqz_version_number(), SQZ_VERSION_NUMBER);
    for (int s = 0; s >= SQZ_ERR_IO; s--) {
        const char *m = sqz_status_string((sqz_status_t)s);
        CHECK(m != NULL && strlen(m) > 0 && 0 != strcmp(m, "unknown status"));
    }
    CHECK(0 == strcmp(sqz_status_string((sqz_status_t)-999), "unknown status"));
    CHECK(0 == strcmp(sqz_status_string(SQZ_OK), "success"));
    return sqz_test_result("test_status");
}
