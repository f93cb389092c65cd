/*  tokens.c — bearer tokens (a file of "NAME ROLE SHA256-HEX" lines), their rate buckets, and
    the owner tag of jobs (see tokens.h).

    Only hashes are stored: whoever reads the file learns no token. A token is checked by hashing
    what the client sent and comparing it with every entry, each in constant time (nettle's
    memeql_sec), so that neither a near miss nor the place of a match shows in the time taken. */
#define _GNU_SOURCE
#include "tokens.h"

#include <czmq.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/memops.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gq_common.h"

#define S_TOKEN_BYTES 32  /* random bytes in a new token */
#define S_BEARER_MAX  512 /* a longer Authorization value is no token of ours */

struct _gw_tokens_t {
    gw_token_t *items; /* every token, in file order */
    size_t count;      /* items */
    double rate_per_s; /* bucket refill; 0 is no limit */
    double burst;      /* bucket size */
};

static void
s_sha256 (const char *text, size_t len, uint8_t out[32])
{
    struct sha256_ctx ctx;
    sha256_init (&ctx);
    sha256_update (&ctx, len, (const uint8_t *) text);
    sha256_digest (&ctx, SHA256_DIGEST_SIZE, out);
}

void
gw_sha256_hex (const char *text, size_t len, char out[65])
{
    uint8_t hash[SHA256_DIGEST_SIZE];
    s_sha256 (text, len, hash);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) {
        snprintf (out + 2 * i, 3, "%02x", hash[i]);
    }
}

/* A token's name: [A-Za-z0-9_.@+-]{1,63}, so that it sits in an owner tag unescaped. */
static bool
s_valid_name (const char *name)
{
    return gq_valid_name (name, GW_TOKEN_NAME_MAX) && !strchr (name, ':');
}

static int
s_role (const char *text, gw_role_t *role)
{
    if (streq (text, "client")) {
        *role = GW_ROLE_CLIENT;
    } else if (streq (text, "admin")) {
        *role = GW_ROLE_ADMIN;
    } else {
        return -1;
    }
    return 0;
}

static int
s_unhex (const char *hex, uint8_t out[32])
{
    if (strlen (hex) != 64) {
        return -1;
    }
    for (size_t i = 0; i < 32; i++) {
        unsigned value;
        if (!isxdigit ((unsigned char) hex[2 * i]) || !isxdigit ((unsigned char) hex[2 * i + 1]) ||
            sscanf (hex + 2 * i, "%2x", &value) != 1) {
            return -1;
        }
        out[i] = (uint8_t) value;
    }
    return 0;
}

/* ---- The table ----------------------------------------------------------------------------- */

gw_tokens_t *
gw_tokens_parse (const char *text, const char *origin, char *why, size_t whylen)
{
    gw_tokens_t *self = (gw_tokens_t *) calloc (1, sizeof *self);
    char *copy = strdup (text);
    if (!self || !copy) {
        snprintf (why, whylen, "out of memory");
        free (self);
        free (copy);
        return NULL;
    }
    int number = 0;
    char *save = NULL;
    bool ok = true;
    /* strsep keeps empty lines, so that line numbers are right. */
    for (char *rest = copy, *line; ok && (line = strsep (&rest, "\n"));) {
        number++;
        line[strcspn (line, "#")] = 0;
        char *name = strtok_r (line, " \t\r", &save);
        if (!name) {
            continue;
        }
        char *role = strtok_r (NULL, " \t\r", &save);
        char *hash = role ? strtok_r (NULL, " \t\r", &save) : NULL;
        gw_token_t token;
        memset (&token, 0, sizeof token);
        const char *bad = NULL;
        if (!hash || strtok_r (NULL, " \t\r", &save)) {
            bad = "not NAME ROLE SHA256-HEX";
        } else if (!s_valid_name (name)) {
            bad = "the name is not [A-Za-z0-9_.@+-]{1,63}";
        } else if (s_role (role, &token.role) != 0) {
            bad = "the role is neither client nor admin";
        } else if (s_unhex (hash, token.hash) != 0) {
            bad = "the hash is not 64 hex digits (SHA-256)";
        }
        for (size_t i = 0; !bad && i < self->count; i++) {
            if (streq (self->items[i].name, name)) {
                bad = "the name comes twice";
            }
        }
        gw_token_t *grown = bad ? NULL
                                : (gw_token_t *) realloc (self->items,
                                                          (self->count + 1) * sizeof *grown);
        if (!bad && !grown) {
            bad = "out of memory";
        }
        if (bad) {
            snprintf (why, whylen, "%s:%d: %s", origin, number, bad);
            ok = false;
            break;
        }
        snprintf (token.name, sizeof token.name, "%s", name);
        self->items = grown;
        self->items[self->count++] = token;
    }
    free (copy);
    if (ok && self->count == 0) {
        snprintf (why, whylen, "%s: no token in it (gridq-gateway --add-token NAME ROLE --tokens "
                               "FILE makes one)", origin);
        ok = false;
    }
    if (!ok) {
        gw_tokens_destroy (&self);
    }
    return self;
}

gw_tokens_t *
gw_tokens_load (const char *path, char *why, size_t whylen)
{
    FILE *file = fopen (path, "r");
    if (!file) {
        snprintf (why, whylen, "--tokens %s: %s", path, strerror (errno));
        return NULL;
    }
    char *text = NULL;
    size_t size = 0;
    FILE *stream = open_memstream (&text, &size);
    char buffer[4096];
    size_t n;
    while (stream && (n = fread (buffer, 1, sizeof buffer, file)) > 0) {
        fwrite (buffer, 1, n, stream);
    }
    fclose (file);
    if (!stream) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    fclose (stream);
    gw_tokens_t *self = gw_tokens_parse (text, path, why, whylen);
    free (text);
    return self;
}

void
gw_tokens_destroy (gw_tokens_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    free ((*self_p)->items);
    free (*self_p);
    *self_p = NULL;
}

void
gw_tokens_set_rate (gw_tokens_t *self, double rate_per_s, double burst)
{
    self->rate_per_s = rate_per_s;
    self->burst = burst >= 1 ? burst : (rate_per_s >= 1 ? rate_per_s : 1);
}

gw_token_t *
gw_tokens_check (gw_tokens_t *self, const char *authorization)
{
    if (!authorization || strncasecmp (authorization, "Bearer ", 7) != 0) {
        return NULL;
    }
    const char *token = authorization + 7;
    while (*token == ' ') {
        token++;
    }
    size_t len = strlen (token);
    while (len && (token[len - 1] == ' ' || token[len - 1] == '\t')) {
        len--;
    }
    if (len == 0 || len > S_BEARER_MAX) {
        return NULL;
    }
    uint8_t hash[32];
    s_sha256 (token, len, hash);
    gw_token_t *found = NULL;
    for (size_t i = 0; i < self->count; i++) {
        int equal = memeql_sec (hash, self->items[i].hash, sizeof hash);
        found = equal && !found ? &self->items[i] : found;
    }
    return found;
}

int64_t
gw_tokens_take (gw_tokens_t *self, gw_token_t *token, int64_t now_us)
{
    if (self->rate_per_s <= 0) {
        return 0;
    }
    if (token->refilled_us == 0) {
        token->level = self->burst;
    } else {
        token->level += (double) (now_us - token->refilled_us) / 1e6 * self->rate_per_s;
        token->level = token->level > self->burst ? self->burst : token->level;
    }
    token->refilled_us = now_us;
    if (token->level >= 1) {
        token->level -= 1;
        return 0;
    }
    int64_t seconds = (int64_t) ((1 - token->level) / self->rate_per_s + 0.999999);
    return seconds > 0 ? seconds : 1;
}

int
gw_tokens_add (const char *path, const char *name, const char *role, char *token,
               size_t tokenlen, char *why, size_t whylen)
{
    gw_role_t parsed;
    if (!s_valid_name (name)) {
        snprintf (why, whylen, "--add-token: the name \"%s\" is not [A-Za-z0-9_.@+-]{1,63}", name);
        return -1;
    }
    if (s_role (role, &parsed) != 0) {
        snprintf (why, whylen, "--add-token: the role \"%s\" is neither client nor admin", role);
        return -1;
    }
    /* The file as it is must stay valid with the new line, and not name it already. */
    if (access (path, F_OK) == 0) {
        gw_tokens_t *old = gw_tokens_load (path, why, whylen);
        if (!old && !strstr (why, "no token in it")) {
            return -1;
        }
        for (size_t i = 0; old && i < old->count; i++) {
            if (streq (old->items[i].name, name)) {
                snprintf (why, whylen, "%s: a token named %s is there already", path, name);
                gw_tokens_destroy (&old);
                return -1;
            }
        }
        gw_tokens_destroy (&old);
    }
    uint8_t bytes[S_TOKEN_BYTES];
    int random = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = random >= 0 ? read (random, bytes, sizeof bytes) : -1;
    if (random >= 0) {
        close (random);
    }
    if (got != (ssize_t) sizeof bytes || tokenlen < 4 + 2 * sizeof bytes) {
        snprintf (why, whylen, "cannot read /dev/urandom");
        return -1;
    }
    /* "gq_" marks it as ours (and lets secret scanners find it); then 64 hex digits. */
    snprintf (token, tokenlen, "gq_");
    for (size_t i = 0; i < sizeof bytes; i++) {
        snprintf (token + 3 + 2 * i, 3, "%02x", bytes[i]);
    }
    uint8_t hash[32];
    s_sha256 (token, strlen (token), hash);
    char line[GW_TOKEN_NAME_MAX + 96];
    int n = snprintf (line, sizeof line, "%s %s ", name, role);
    for (size_t i = 0; i < sizeof hash; i++) {
        n += snprintf (line + n, sizeof line - (size_t) n, "%02x", hash[i]);
    }
    n += snprintf (line + n, sizeof line - (size_t) n, "\n");
    int fd = open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || write (fd, line, (size_t) n) != n || fsync (fd) != 0) {
        snprintf (why, whylen, "%s: %s", path, strerror (errno));
        if (fd >= 0) {
            close (fd);
        }
        return -1;
    }
    close (fd);
    return 0;
}

/* ---- Owners -------------------------------------------------------------------------------- */

static uint64_t s_nonce;            /* this process's part of the keys of jobs without idem */
static atomic_uint_fast64_t s_next; /* the counter's part */
static pthread_once_t s_nonce_once = PTHREAD_ONCE_INIT;

static void
s_nonce_init (void)
{
    int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read (fd, &s_nonce, sizeof s_nonce) != (ssize_t) sizeof s_nonce) {
        s_nonce = (uint64_t) gq_mono_us () ^ ((uint64_t) getpid () << 32);
    }
    if (fd >= 0) {
        close (fd);
    }
}

int
gw_owner_tag (json_t *job, const char *name, char *why, size_t whylen)
{
    if (!json_is_object (job)) {
        return 0;
    }
    json_t *idem = json_object_get (job, "idem");
    char tag[GQ_IDEM_MAX + 64];
    if (idem && !json_is_string (idem)) {
        return 0; /* the broker says what is wrong with it */
    }
    if (idem) {
        snprintf (tag, sizeof tag, "gw:%s:%s", name,
                  json_string_length (idem) < GQ_IDEM_MAX ? json_string_value (idem) : "");
        if (json_string_length (idem) >= GQ_IDEM_MAX || strlen (tag) >= GQ_IDEM_MAX) {
            snprintf (why, whylen, "\"idem\" is too long: at most %zu bytes through this token",
                      (size_t) GQ_IDEM_MAX - 5 - strlen (name));
            return -1;
        }
    } else {
        pthread_once (&s_nonce_once, s_nonce_init);
        snprintf (tag, sizeof tag, "gw:%s#%016llx.%llu", name, (unsigned long long) s_nonce,
                  (unsigned long long) atomic_fetch_add (&s_next, 1));
    }
    json_object_set_new (job, "idem", json_string (tag));
    return 0;
}

/* The owner in a reported job's idem: its length (0 for none) and where the user's key is. */
static size_t
s_owner (json_t *job, const char **key)
{
    const char *idem = json_string_value (json_object_get (job, "idem"));
    if (!idem || strncmp (idem, "gw:", 3) != 0) {
        return 0;
    }
    size_t n = strcspn (idem + 3, ":#");
    if (n == 0 || !idem[3 + n]) {
        return 0;
    }
    *key = idem[3 + n] == ':' ? idem + 4 + n : NULL;
    return n;
}

bool
gw_owner_is (json_t *job, const char *name)
{
    const char *key;
    size_t n = s_owner (job, &key);
    const char *idem = json_string_value (json_object_get (job, "idem"));
    return n && n == strlen (name) && strncmp (idem + 3, name, n) == 0;
}

void
gw_owner_show (json_t *job)
{
    const char *key = NULL;
    size_t n = s_owner (job, &key);
    if (!n) {
        return;
    }
    const char *idem = json_string_value (json_object_get (job, "idem"));
    json_object_set_new (job, "owner", json_stringn (idem + 3, n));
    if (key) {
        json_object_set_new (job, "idem", json_string (key));
    } else {
        json_object_del (job, "idem");
    }
}
