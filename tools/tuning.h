/*  tuning.h — the constants that tune the tools' behaviour, one section per program, each with
    its unit in its name (the protocol's own limits are in proto/gq_common.h). */
#ifndef GQ_TOOLS_TUNING_H_INCLUDED
#define GQ_TOOLS_TUNING_H_INCLUDED

/* ---- gridq-top ----------------------------------------------------------------------------- */
#define GQ_TOP_INTERVAL_MS      1000               /* default time between refreshes */
#define GQ_TOP_MIN_INTERVAL_MS  100                /* faster than this only loads the broker */
#define GQ_TOP_HISTORY_SAMPLES  128                /* samples kept per counter series */
#define GQ_TOP_NODE_WINDOW_US   (60 * 1000000LL)   /* jobs per minute measured over at most this */
#define GQ_TOP_RATE_WINDOW_US   (5 * 1000000LL)    /* done / failed per second over at most this */
#define GQ_TOP_FAILED_JOBS      50                 /* recent failures asked for */
#define GQ_TOP_POLL_MAX_MS      250                /* the screen loop wakes at least this often */
#define GQ_TOP_NAME_COLS        20                 /* widest node name column */
#define GQ_TOP_GPU_COLS         22                 /* widest GPU model column */
#define GQ_TOP_BAR_COLS         12                 /* VRAM bar, inside its brackets */

#endif
