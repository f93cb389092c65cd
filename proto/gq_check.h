/*  gq_check.h — the assertions of gridq's selftests: on failure they print both values, where
    and what, then abort. For tests only: wire data is never asserted on. */
#ifndef GQ_CHECK_H_INCLUDED
#define GQ_CHECK_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GQ_CHECK_EQ(a, b)                                                                     \
    do {                                                                                      \
        long long gq_a_ = (long long) (a), gq_b_ = (long long) (b);                           \
        if (gq_a_ != gq_b_) {                                                                 \
            fprintf (stderr, "\n%s:%d: %s is %lld, expected %s = %lld\n", __FILE__, __LINE__, \
                     #a, gq_a_, #b, gq_b_);                                                   \
            abort ();                                                                         \
        }                                                                                     \
    } while (0)

#define GQ_CHECK_STR(a, b)                                                                    \
    do {                                                                                      \
        const char *gq_a_ = (a), *gq_b_ = (b);                                                \
        if (!gq_a_ || !gq_b_ || strcmp (gq_a_, gq_b_) != 0) {                                 \
            fprintf (stderr, "\n%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__,   \
                     #a, gq_a_ ? gq_a_ : "(null)", gq_b_ ? gq_b_ : "(null)");                 \
            abort ();                                                                         \
        }                                                                                     \
    } while (0)

#endif
