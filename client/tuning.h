/*  tuning.h — the constants that tune the gridq command-line client, each with its unit in its
    name (the protocol's own limits are in proto/gq_common.h). */
#ifndef GQ_CLIENT_TUNING_H_INCLUDED
#define GQ_CLIENT_TUNING_H_INCLUDED

/* Jobs per SUBMIT and SUBMITs in flight for --file: small enough that the broker's group
   commit and our reads overlap, large enough that per-message costs vanish. */
#define GQ_CLI_FILE_CHUNK_JOBS     1000
#define GQ_CLI_FILE_WINDOW_SUBMITS 8
#define GQ_CLI_PROGRESS_EVERY_US   100000 /* redraw the progress line and flush --out this often */
#define GQ_CLI_MAX_LINE_ERRORS     20     /* invalid JSONL lines reported before giving up */
#define GQ_CLI_MAX_LINE_RANGES     8      /* ranges of refused lines named, then "..." */
/* RATE_LIMITED refusals of one chunk in a row, with nothing accepted meanwhile, before a submit
   gives up (--rate-retries): a rate limit never gets there, since each wait lets one chunk in;
   a per-client cap that no finishing job frees does, after this many of its 1 s hints. */
#define GQ_CLI_RATE_RETRIES        10
/* gridq jobs: an array's progress bar, in cells inside its brackets (20: a cell per 5 %). */
#define GQ_CLI_ARRAY_BAR_CELLS     20

#endif
