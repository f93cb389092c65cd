/*  worker.h — the gridq worker daemon: one DEALER socket to the broker, one zloop, and one
    thread per slot that runs jobs off the socket thread, so heartbeats go on during long jobs. */
#ifndef GQ_WORKER_H_INCLUDED
#define GQ_WORKER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GQ_WORKER_MAX_HANDLERS 32

typedef struct {
    const char *broker;        /* broker endpoint */
    const char *name;          /* node name; NULL: hostname-backend-device */
    const char *backend;       /* "auto", "cuda" or "cpu" */
    int device;                /* CUDA device index */
    int slots;                 /* concurrent jobs */
    const char *gpu_model;     /* overrides the detected model (or "cpu") */
    int64_t vram_mb;           /* overrides the detected VRAM; -1: detect */
    double tflops;             /* overrides the detected TFLOPS; < 0: detect */
    double price;              /* hourly price */
    const char *models_dir;    /* folder of .safetensors models, or NULL */
    const char *handlers[GQ_WORKER_MAX_HANDLERS]; /* "KIND=COMMAND" */
    size_t n_handlers;
    const char *engines[GQ_WORKER_MAX_HANDLERS]; /* "KIND=COMMAND": persistent engines */
    size_t n_engines;
    const char *openai[GQ_WORKER_MAX_HANDLERS]; /* "KIND=URL": OpenAI-compatible servers */
    size_t n_openai;
    int engine_slots;          /* jobs in flight on one engine or server; 0: slots */
    int64_t engine_ready_timeout_ms; /* wait for an engine's ready line (a server's first
                                        answer) this long */
    int stream_window;         /* partials of a job sent and not acknowledged, at most */
    const char *cert_path;     /* worker secret certificate (CURVE), or NULL */
    const char *server_cert_path; /* broker public certificate, or NULL */
} gq_worker_opts_t;

void gq_worker_opts_default (gq_worker_opts_t *opts);

typedef struct _gq_worker_t gq_worker_t;

/* gridq-worker's exit status when its GPU is lost: a sticky CUDA error (an illegal address, a
   kernel that faulted, an uncorrectable ECC error, ...) made the process's context unusable.
   The job that met it fails with the reason; the worker takes no other job and exits, so that
   its service manager starts a new process, which gets a working context. */
#define GQ_WORKER_EXIT_LOST 3

/* Detects the device, starts the slot threads and connects. NULL with a reason. */
gq_worker_t *gq_worker_new (const gq_worker_opts_t *opts, char *why, size_t whylen);
/* Runs until SIGINT/SIGTERM, or until the device is lost; says BYE to the broker on the way out
   (running jobs go back to the queue at once). Returns the process's exit status: 0 on a clean
   stop, 1 when the socket failed, GQ_WORKER_EXIT_LOST. */
int gq_worker_run (gq_worker_t *self);
void gq_worker_destroy (gq_worker_t **self_p);

#endif
