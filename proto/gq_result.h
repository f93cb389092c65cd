/*  gq_result.h — the fixed shape of a worker's RESULT for jobs that succeeded: written by
    gridq-worker, read by the broker without building a tree for the message.

    A RESULT of this shape (no whitespace, the keys in this order):

        {"node":"NAME","results":[ENTRY,ENTRY,...]}
        ENTRY = {"id":I,"attempt":A,"ok":true,"ms":M,"at":T,"result":R}

    I, A and T integers, M a number, R a JSON object or array. The broker's loop reads every
    RESULT of every job, so it takes such a message apart here: the numbers are read in place,
    and R is checked by jansson (a tree of R alone, freed at once) and kept as the text it came
    as, which the store and FINISHED take as is. Every other RESULT (a failure, output blobs, a
    scalar result, another key order, whitespace: any peer's valid JSON) does not scan, and is
    parsed as a whole, as any message is (gq_msg_parse). */
#ifndef GQ_RESULT_H_INCLUDED
#define GQ_RESULT_H_INCLUDED

#include <czmq.h>

#include "gq_common.h"

/* One entry, scanned: result points into the scanned text (not NUL-terminated). */
typedef struct {
    int64_t id;
    int64_t attempt;
    double ms;
    int64_t at;
    const char *result;
    size_t result_size;
} gq_result_entry_t;

/* Appends an entry's head, {"id":I,"attempt":A,"ok":true|false,"ms":M,"at":T, to chunk; the
   writer goes on with ,"result":R} or ,"error":"..."}. */
void gq_result_head (zchunk_t *chunk, int64_t id, int64_t attempt, bool ok, double ms, int64_t at);

/* Takes a RESULT's JSON text (size bytes) apart when it has the shape above: true, with the node
   name in node (node_size bytes, NUL-terminated; a valid node name), and the entries in
   entries[0 .. *count), at most max of them, each R nested at most max_depth deep. False when
   the text has another shape, more entries, or anything invalid: then nothing is set but what
   must be ignored, and the caller parses the message as a whole. */
bool gq_result_scan (const char *text, size_t size, int max_depth, char *node, size_t node_size,
                     gq_result_entry_t *entries, size_t max, size_t *count);

void gq_result_test (bool verbose);

#endif
