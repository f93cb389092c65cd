/*  tokens.h — who may use the gateway: bearer tokens, their roles and rate buckets, and the owner
    tag that ties each job to the token that submitted it (see tokens.c). */
#ifndef GW_TOKENS_H_INCLUDED
#define GW_TOKENS_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_TOKEN_NAME_MAX 64 /* a token's name, its NUL included */

typedef enum {
    GW_ROLE_CLIENT, /* its own jobs, the models */
    GW_ROLE_ADMIN   /* every job, the nodes, the stats */
} gw_role_t;

typedef struct {
    char name[GW_TOKEN_NAME_MAX]; /* as in the file: [A-Za-z0-9_.@+-]{1,63} */
    gw_role_t role;
    uint8_t hash[32];             /* SHA-256 of the token */
    double level;                 /* rate bucket: tokens left (the HTTP thread only) */
    int64_t refilled_us;          /* rate bucket: when level was computed, or 0 (full) */
} gw_token_t;

typedef struct _gw_tokens_t gw_tokens_t;

/* The table of a tokens file's text (lines "NAME ROLE SHA256-HEX", # comments); origin names it
   in messages. NULL with "origin:LINE: why" in why. */
gw_tokens_t *gw_tokens_parse (const char *text, const char *origin, char *why, size_t whylen);
/* The same from a file. */
gw_tokens_t *gw_tokens_load (const char *path, char *why, size_t whylen);
void gw_tokens_destroy (gw_tokens_t **self_p);
/* Every token gets a bucket of burst tokens refilled at rate_per_s; 0 is no limit. */
void gw_tokens_set_rate (gw_tokens_t *self, double rate_per_s, double burst);
/* The token that an Authorization header's value ("Bearer TOKEN") names, or NULL (none, or not
   known). Every entry is compared, in constant time: the answer's time says nothing. */
gw_token_t *gw_tokens_check (gw_tokens_t *self, const char *authorization);
/* The SHA-256 of len bytes of text, as 64 hex digits and a NUL. */
void gw_sha256_hex (const char *text, size_t len, char out[65]);
/* Takes one request from token's bucket: 0 when it may go, else the seconds until it may. */
int64_t gw_tokens_take (gw_tokens_t *self, gw_token_t *token, int64_t now_us);

/* Makes a token for name with role ("client" or "admin"), appends its line to the file at path
   (created 0600) and writes the token (NUL-terminated) into token. 0, or -1 with why. */
int gw_tokens_add (const char *path, const char *name, const char *role, char *token,
                   size_t tokenlen, char *why, size_t whylen);

/* ---- Owners: a job's idem key carries the token that submitted it ----------------------------
   The broker stores "idem" and reports it with the job, so the gateway keeps the owner there:
   "gw:NAME:KEY" for a job submitted with idem KEY, "gw:NAME#N" (unique) for one without. Each
   token's keys are thus its own: another token's KEY is another job. */

/* Sets job's idem to its tag for owner name; 0, or -1 with why when the job's own idem is too
   long. A job that is not an object, or whose idem is not a string, is left to the broker. */
int gw_owner_tag (json_t *job, const char *name, char *why, size_t whylen);
/* Whether job (as reported) was submitted through the token name. */
bool gw_owner_is (json_t *job, const char *name);
/* Rewrites a reported job as its submitter sees it: "owner" set, "idem" as it was given. */
void gw_owner_show (json_t *job);

#endif
