/*  guard.c — who may talk to the broker and how fast.

    CURVE. The broker's secret certificate makes the ROUTER a CURVE server in ZAP domain "gridq".
    Handshakes are decided by czmq's zauth. zauth takes one folder of certificates, and its
    certificate store asserts (aborts the broker) when it meets one key twice, so it is never
    pointed at the operator's folders: a small "keys" actor owns zauth and keeps a private folder
    (DB-zauth beside the store) in step with the clients and workers folders, one public
    certificate per distinct key, written under a hidden name and renamed so zauth never reads
    half a file, and tells zauth to reload whenever the folders change (checked every
    GQ_GUARD_RESCAN_MS).

    Roles. zauth only says "this key may connect". Each message is then checked here: its frames
    carry the key zauth accepted as "User-Id", and that key must be in the set of the role that
    frame 0 claims (clients folder for GQC1, workers folder for GQW1; a key in both may do both).
    A message without a key is refused: libzmq lets every CURVE handshake through, without a
    User-Id, when no ZAP handler answers, so this check also fails closed if zauth is gone.
    The sets are reloaded when the folders change, so removing a key revokes it within about a
    second, also on connections that are already open.

    Without CURVE every message is allowed, and a bind endpoint that other hosts can reach is
    refused unless the operator says --insecure.

    Rate. A token bucket per sender: its CURVE key, or its connection without CURVE. The table of
    buckets is bounded: a bucket that has refilled is the same as none, so those are swept when
    the table is full; while it is still full, new senders are told to retry.

    Queued cap. Unfinished jobs are counted per owner (the client's key, interned to a small id
    that the broker keeps in the job). */
#include "guard.h"
#include "tuning.h"
#include "gq_check.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_ROUTING_ID_BYTES 64    /* bytes of a routing id that name a connection's bucket */
#define S_ZAP_DOMAIN       "gridq"
#define S_KEY_BUF          (2 + 2 * S_ROUTING_ID_BYTES + 1)

/* One sender's token bucket. */
typedef struct {
    double tokens;   /* available; negative after a batch larger than the burst */
    int64_t last_us; /* monotonic time when tokens was last brought up to date */
} s_bucket_t;

/* What the keys actor works with; the actor owns it once started. */
typedef struct {
    char *dirs[2];      /* clients and workers folders */
    char *auth_dir;     /* the private folder that zauth reads */
    uint64_t signature; /* of dirs when auth_dir was last written */
} s_keys_args_t;

static void
s_keys_args_free (s_keys_args_t *args)
{
    if (args) {
        free (args->dirs[0]);
        free (args->dirs[1]);
        free (args->auth_dir);
        free (args);
    }
}

struct _gq_guard_t {
    bool curve;                  /* CURVE on: every message's key must have its role */
    char *dirs[2];               /* clients and workers folders (copies), or NULL */
    zhashx_t *roles[2];          /* Z85 public key -> "": keys allowed as client, as worker */
    uint64_t signature;          /* of both folders when roles were loaded */
    int64_t next_rescan_us;      /* next periodic look at the folders */
    int64_t next_miss_rescan_us; /* next look that an unknown key may force */
    char *auth_dir;              /* private folder of public certificates for zauth, or NULL */
    zactor_t *keys;              /* actor running zauth and keeping auth_dir in step, or NULL */
    int64_t deny_logged_us;      /* when the last "denied" line was logged */
    size_t deny_suppressed;      /* denials not logged since */
    double rate_per_s;           /* tokens per second; 0 is unlimited */
    double burst;                /* bucket size in tokens (jobs) */
    zhashx_t *buckets;           /* sender key -> s_bucket_t */
    int64_t next_sweep_us;       /* a full table of buckets is not swept again before this */
    int64_t full_logged_us;      /* when "table full" was last logged */
    int64_t max_queued;          /* unfinished jobs per owner; 0 is no cap */
    zhashx_t *owners;            /* client key -> owner id (stored in the pointer), or NULL */
    int64_t *queued;             /* unfinished jobs by owner id (entry 0 unused) */
    size_t owners_count;         /* ids handed out (1 is "", every client without a key) */
    size_t queued_size;          /* allocated entries of queued */
};

/* ---- Small helpers ------------------------------------------------------------------------- */

static bool
s_suffix (const char *name, const char *suffix)
{
    size_t n = strlen (name), s = strlen (suffix);
    return n >= s && strcmp (name + n - s, suffix) == 0;
}

static bool
s_zero_key (const byte *key)
{
    for (int i = 0; i < 32; i++) {
        if (key[i]) {
            return false;
        }
    }
    return true;
}

static void
s_hex (const byte *data, size_t size, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * size] = 0;
}

static void
s_destroy_item (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

/* Removes the plain files of a folder, then (unless keep) the folder. */
static void
s_remove_dir (const char *path, bool keep)
{
    DIR *dir = opendir (path);
    if (dir) {
        struct dirent *entry;
        while ((entry = readdir (dir))) {
            if (strcmp (entry->d_name, ".") && strcmp (entry->d_name, "..")) {
                char file[PATH_MAX];
                snprintf (file, sizeof file, "%s/%s", path, entry->d_name);
                unlink (file);
            }
        }
        closedir (dir);
    }
    if (!keep) {
        rmdir (path);
    }
}

/* ---- Endpoints ----------------------------------------------------------------------------- */

/* Does a bind endpoint reach this host only? tcp on 127.0.0.0/8, localhost or [::1] with a
   port (or '*'), ipc and inproc. Anything else (wildcards, interface names, other addresses,
   other transports) might be reachable from elsewhere. */
static bool
s_loopback (const char *endpoint)
{
    if (strncmp (endpoint, "ipc://", 6) == 0 || strncmp (endpoint, "inproc://", 9) == 0) {
        return true;
    }
    if (strncmp (endpoint, "tcp://", 6) != 0) {
        return false;
    }
    const char *p = endpoint + 6;
    if (strncmp (p, "localhost:", 10) == 0) {
        p += 9;
    } else if (strncmp (p, "[::1]:", 6) == 0) {
        p += 5;
    } else {
        for (int octet = 0; octet < 4; octet++) {
            int value = 0, digits = 0;
            while (*p >= '0' && *p <= '9' && digits < 3) {
                value = value * 10 + (*p++ - '0');
                digits++;
            }
            if (digits == 0 || value > 255 || (octet == 0 && value != 127)) {
                return false;
            }
            if (octet < 3 && *p++ != '.') {
                return false;
            }
        }
    }
    if (*p++ != ':') {
        return false;
    }
    if (strcmp (p, "*") == 0) {
        return true;
    }
    size_t n = strspn (p, "0123456789");
    return n > 0 && n <= 5 && p[n] == 0;
}

/* ---- Allowed-keys folders ------------------------------------------------------------------ */

/* May this entry of a keys folder be a public certificate? Hidden files and secret
   certificates (NAME.secret from gridq-keygen, NAME_secret from zcert_save) are not. */
static bool
s_candidate (const char *name)
{
    return name[0] != '.' && !s_suffix (name, ".secret") && !s_suffix (name, "_secret");
}

static uint64_t
s_fnv (uint64_t hash, const void *data, size_t size)
{
    const byte *p = (const byte *) data;
    for (size_t i = 0; i < size; i++) {
        hash = (hash ^ p[i]) * 1099511628211ULL;
    }
    return hash;
}

/* A fingerprint of the candidate files of both folders (names, sizes, times, inodes): cheap
   enough to take every second, so certificates are parsed again only after a change. */
static uint64_t
s_signature (char *const dirs[2])
{
    uint64_t total = 14695981039346656037ULL;
    for (int d = 0; d < 2; d++) {
        uint64_t sum = 0;
        DIR *dir = opendir (dirs[d]);
        if (!dir) {
            sum = 0x6e6f2064697221ULL; /* an unreadable folder has its own signature */
        }
        struct dirent *entry;
        while (dir && (entry = readdir (dir))) {
            if (!s_candidate (entry->d_name)) {
                continue;
            }
            char path[PATH_MAX];
            struct stat st;
            snprintf (path, sizeof path, "%s/%s", dirs[d], entry->d_name);
            if (stat (path, &st)) {
                continue;
            }
            int64_t fields[6] = {(int64_t) st.st_size,         (int64_t) st.st_mtim.tv_sec,
                                 (int64_t) st.st_mtim.tv_nsec, (int64_t) st.st_ctim.tv_sec,
                                 (int64_t) st.st_ctim.tv_nsec, (int64_t) st.st_ino};
            uint64_t hash = s_fnv (14695981039346656037ULL, entry->d_name, strlen (entry->d_name));
            sum += s_fnv (hash, fields, sizeof fields); /* a sum: readdir order does not count */
        }
        if (dir) {
            closedir (dir);
        }
        total = s_fnv (total, &sum, sizeof sum);
    }
    return total;
}

/* Reads the public key of a certificate file (ZPL, "curve/public-key") as Z85 text. Not
   zcert_load: czmq's zconfig_load leaks a zfile on every file it cannot parse, and a keys folder
   may hold anything; files that do not even mention a public key are not parsed at all. */
static bool
s_public_key (const char *file, char z85[41])
{
    zchunk_t *chunk = zchunk_slurp (file, GQ_GUARD_CERT_FILE_MAX_BYTES);
    if (!chunk || zchunk_size (chunk) == 0) {
        zchunk_destroy (&chunk);
        return false;
    }
    char *copy = zchunk_strdup (chunk);
    zconfig_t *root = copy && strstr (copy, "public-key") ? zconfig_chunk_load (chunk) : NULL;
    free (copy);
    const char *text = root ? zconfig_get (root, "curve/public-key", NULL) : NULL;
    byte key[32];
    bool ok = text && strlen (text) == 40 && zmq_z85_decode (key, text) && !s_zero_key (key);
    if (ok) {
        memcpy (z85, text, 41);
    }
    zconfig_destroy (&root);
    zchunk_destroy (&chunk);
    return ok;
}

/* Loads the public keys of a folder's certificates into keys (Z85 text -> ""). -1 when the
   folder cannot be read. With log, says what it passes over and why. */
static int
s_load_keys (const char *path, zhashx_t *keys, bool log)
{
    DIR *dir = opendir (path);
    if (!dir) {
        if (log) {
            zsys_error ("guard: cannot read the keys folder %s: %s", path, strerror (errno));
        }
        return -1;
    }
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        const char *name = entry->d_name;
        if (name[0] == '.') {
            continue;
        }
        char file[PATH_MAX];
        if (snprintf (file, sizeof file, "%s/%s", path, name) >= (int) sizeof file) {
            continue;
        }
        if (!s_candidate (name)) {
            if (log) {
                zsys_warning ("guard: %s is a secret certificate: not read (keep secret keys "
                              "out of the allowed-keys folders)",
                              file);
            }
            continue;
        }
        struct stat st;
        if (stat (file, &st) || !S_ISREG (st.st_mode) || st.st_size > GQ_GUARD_CERT_FILE_MAX_BYTES) {
            if (log) {
                zsys_warning ("guard: %s is not a certificate file: passed over", file);
            }
            continue;
        }
        char z85[41];
        if (s_public_key (file, z85)) {
            zhashx_update (keys, z85, (void *) "");
        } else if (log) {
            zsys_warning ("guard: %s holds no public key: passed over", file);
        }
    }
    closedir (dir);
    return 0;
}

/* Makes auth_dir hold exactly one public certificate per key of both roles, named by the key
   in hex. 0, or -1 when a file could not be written. */
static int
s_sync_auth_dir (const char *auth_dir, zhashx_t *const roles[2])
{
    int rc = 0;
    zhashx_t *wanted = zhashx_new ();
    for (int r = 0; r < 2; r++) {
        for (void *item = zhashx_first (roles[r]); item; item = zhashx_next (roles[r])) {
            const char *z85 = (const char *) zhashx_cursor (roles[r]);
            byte key[32];
            char name[2 * 32 + 8];
            if (strlen (z85) != 40 || !zmq_z85_decode (key, z85)) {
                continue;
            }
            s_hex (key, 32, name);
            strcat (name, ".pub");
            if (zhashx_lookup (wanted, name)) {
                continue; /* a key in both folders: one file */
            }
            zhashx_insert (wanted, name, (void *) "");
            char path[PATH_MAX], temp[PATH_MAX];
            snprintf (path, sizeof path, "%s/%s", auth_dir, name);
            if (access (path, F_OK) == 0) {
                continue; /* a file's content follows from its name */
            }
            snprintf (temp, sizeof temp, "%s/.%s.new", auth_dir, name);
            byte none[32] = {0};
            zcert_t *cert = zcert_new_from (key, none);
            if (!cert || zcert_save_public (cert, temp) || rename (temp, path)) {
                zsys_error ("guard: cannot write %s: %s", path, strerror (errno));
                unlink (temp);
                rc = -1;
            }
            zcert_destroy (&cert);
        }
    }
    DIR *dir = opendir (auth_dir);
    struct dirent *entry;
    while (dir && (entry = readdir (dir))) {
        if (strcmp (entry->d_name, ".") && strcmp (entry->d_name, "..") &&
            !zhashx_lookup (wanted, entry->d_name)) {
            char path[PATH_MAX];
            snprintf (path, sizeof path, "%s/%s", auth_dir, entry->d_name);
            unlink (path);
        }
    }
    if (dir) {
        closedir (dir);
    }
    zhashx_destroy (&wanted);
    return dir ? rc : -1;
}

/* The keys actor: runs zauth on auth_dir and follows changes of the folders. Signals twice:
   once for zactor_new, once with 0 when zauth runs (1 when it could not start). */
static void
s_keys_actor (zsock_t *pipe, void *arg)
{
    s_keys_args_t *args = (s_keys_args_t *) arg;
    zsock_signal (pipe, 0);
    zactor_t *auth = zactor_new (zauth, NULL);
    if (auth) {
        /* zauth stops on SIGINT by itself: never wait for its answer for ever. */
        zsock_set_rcvtimeo (auth, 5000);
        zstr_sendx (auth, "CURVE", args->auth_dir, NULL);
        zsock_wait (auth);
    }
    zsock_signal (pipe, auth ? 0 : 1);
    zpoller_t *poller = zpoller_new (pipe, NULL);
    zpoller_set_nonstop (poller, true); /* stop on $TERM only, not on SIGINT */
    while (auth && poller) {
        zsock_t *which = (zsock_t *) zpoller_wait (poller, GQ_GUARD_RESCAN_MS);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term) {
                break;
            }
            continue;
        }
        uint64_t signature = s_signature (args->dirs);
        if (signature == args->signature || zsys_interrupted) {
            continue; /* unchanged, or shutting down (zauth is gone) */
        }
        zhashx_t *roles[2] = {zhashx_new (), zhashx_new ()};
        s_load_keys (args->dirs[0], roles[0], false); /* an unreadable folder allows no key */
        s_load_keys (args->dirs[1], roles[1], false);
        if (s_sync_auth_dir (args->auth_dir, roles) == 0) {
            args->signature = signature;
        }
        /* zauth makes a new certificate store from the folder on this command. */
        zstr_sendx (auth, "CURVE", args->auth_dir, NULL);
        zsock_wait (auth);
        zhashx_destroy (&roles[0]);
        zhashx_destroy (&roles[1]);
    }
    zpoller_destroy (&poller);
    zactor_destroy (&auth);
    s_keys_args_free (args);
}

/* Reloads the role sets when the folders changed: periodically, or (miss) because a key was
   not found, at most every GQ_GUARD_MISS_RESCAN_MS. An unreadable folder allows no key. */
static void
s_roles_refresh (gq_guard_t *self, int64_t now_us, bool miss)
{
    if (now_us < (miss ? self->next_miss_rescan_us : self->next_rescan_us)) {
        return;
    }
    self->next_rescan_us = now_us + (int64_t) GQ_GUARD_RESCAN_MS * 1000;
    self->next_miss_rescan_us = now_us + (int64_t) GQ_GUARD_MISS_RESCAN_MS * 1000;
    uint64_t signature = s_signature (self->dirs);
    if (signature == self->signature) {
        return;
    }
    for (int r = 0; r < 2; r++) {
        zhashx_t *keys = zhashx_new ();
        s_load_keys (self->dirs[r], keys, true);
        zhashx_destroy (&self->roles[r]);
        self->roles[r] = keys;
    }
    self->signature = signature;
    zsys_info ("guard: allowed keys reloaded: %zu client keys, %zu worker keys",
               zhashx_size (self->roles[0]), zhashx_size (self->roles[1]));
}

/* Makes the private folder that zauth reads: DB-zauth beside the store (a broker that was
   killed leaves it behind, and the next one on the same store empties and reuses it), or a new
   folder in $TMPDIR when there is no store file. 0 or -1 with a reason. */
static int
s_auth_dir_make (const char *db_path, char *path, size_t size, char *why, size_t whylen)
{
    if (db_path && *db_path && strcmp (db_path, ":memory:") != 0 &&
        strncmp (db_path, "file:", 5) != 0) {
        if (snprintf (path, size, "%s-zauth", db_path) >= (int) size) {
            snprintf (why, whylen, "the store path %s is too long", db_path);
            return -1;
        }
        struct stat st;
        if (lstat (path, &st) == 0) {
            if (!S_ISDIR (st.st_mode) || st.st_uid != geteuid ()) {
                snprintf (why, whylen, "%s exists and is not a folder of this user: remove it",
                          path);
                return -1;
            }
            s_remove_dir (path, true); /* left by a broker that could not clean up */
            if (chmod (path, 0700) == 0) {
                return 0;
            }
        } else if (mkdir (path, 0700) == 0) {
            return 0;
        }
        snprintf (why, whylen, "cannot make the private folder %s for zauth: %s", path,
                  strerror (errno));
        return -1;
    }
    const char *tmp = getenv ("TMPDIR");
    snprintf (path, size, "%s/gridq-zauth-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp (path)) {
        snprintf (why, whylen, "cannot make a private folder %s for zauth: %s", path,
                  strerror (errno));
        return -1;
    }
    return 0;
}

/* Checks that curve is supported, loads the broker certificate and the keys, starts zauth and
   makes router a CURVE server. 0 or -1 with a reason. */
static int
s_curve_start (gq_guard_t *self, const gq_broker_opts_t *opts, zsock_t *router, char *why,
               size_t whylen)
{
    if (!zsys_has_curve ()) {
        snprintf (why, whylen, "this libzmq has no CURVE support (it must be built with "
                               "libsodium); cannot use --cert");
        return -1;
    }
    struct stat st;
    if (stat (opts->cert_path, &st)) {
        snprintf (why, whylen, "cannot load the broker certificate %s: %s (make one with: "
                               "gridq-keygen broker)",
                  opts->cert_path, strerror (errno));
        return -1;
    }
    zcert_t *cert = S_ISREG (st.st_mode) ? zcert_load (opts->cert_path) : NULL;
    if (!cert) {
        snprintf (why, whylen, "cannot load the broker certificate %s: not a ZeroMQ certificate "
                               "(make one with: gridq-keygen broker)",
                  opts->cert_path);
        return -1;
    }
    if (s_zero_key (zcert_secret_key (cert))) {
        snprintf (why, whylen, "the broker certificate %s holds no secret key: give --cert the "
                               "NAME.secret file, not NAME.pub",
                  opts->cert_path);
        zcert_destroy (&cert);
        return -1;
    }
    const char *what[2] = {"--clients-dir", "--workers-dir"};
    for (int r = 0; r < 2; r++) {
        self->dirs[r] = strdup (r == 0 ? opts->clients_dir : opts->workers_dir);
        self->roles[r] = zhashx_new ();
        DIR *dir = self->dirs[r] ? opendir (self->dirs[r]) : NULL;
        if (!dir) {
            snprintf (why, whylen, "%s %s: %s", what[r], r == 0 ? opts->clients_dir
                                                                : opts->workers_dir,
                      strerror (errno));
            zcert_destroy (&cert);
            return -1;
        }
        closedir (dir);
        if (stat (self->dirs[r], &st) == 0 && (st.st_mode & S_IWOTH)) {
            zsys_warning ("guard: %s is writable by anyone: anyone on this host can add keys",
                          self->dirs[r]);
        }
        s_load_keys (self->dirs[r], self->roles[r], true);
        if (zhashx_size (self->roles[r]) == 0) {
            zsys_warning ("guard: no public keys in %s: no %s can connect until one is added",
                          self->dirs[r], r == 0 ? "client" : "worker");
        }
    }
    self->signature = s_signature (self->dirs);
    self->next_rescan_us = gq_mono_us () + (int64_t) GQ_GUARD_RESCAN_MS * 1000;

    char auth_dir[PATH_MAX];
    if (s_auth_dir_make (opts->db_path, auth_dir, sizeof auth_dir, why, whylen)) {
        zcert_destroy (&cert);
        return -1;
    }
    self->auth_dir = strdup (auth_dir);
    s_keys_args_t *args = (s_keys_args_t *) calloc (1, sizeof *args);
    if (args) {
        args->dirs[0] = strdup (self->dirs[0]);
        args->dirs[1] = strdup (self->dirs[1]);
        args->auth_dir = strdup (auth_dir);
        args->signature = self->signature;
    }
    if (!self->auth_dir || !args || !args->dirs[0] || !args->dirs[1] || !args->auth_dir ||
        s_sync_auth_dir (auth_dir, self->roles)) {
        snprintf (why, whylen, "cannot write the keys for zauth into %s", auth_dir);
        s_keys_args_free (args);
        zcert_destroy (&cert);
        return -1;
    }
    self->keys = zactor_new (s_keys_actor, args);
    if (!self->keys || zsock_wait (self->keys) != 0) {
        snprintf (why, whylen, "cannot start the ZeroMQ authenticator (zauth)");
        if (!self->keys) {
            s_keys_args_free (args);
        }
        zcert_destroy (&cert);
        return -1;
    }
    zcert_apply (cert, router);
    zsock_set_curve_server (router, 1);
    zsock_set_zap_domain (router, S_ZAP_DOMAIN);
    zsys_info ("guard: CURVE on, broker key %s; %zu client keys (%s), %zu worker keys (%s)",
               zcert_public_txt (cert), zhashx_size (self->roles[0]), self->dirs[0],
               zhashx_size (self->roles[1]), self->dirs[1]);
    zcert_destroy (&cert);
    self->curve = true;
    return 0;
}

/* ---- Construction -------------------------------------------------------------------------- */

gq_guard_t *
gq_guard_new (const gq_broker_opts_t *opts, zsock_t *router, char *why, size_t whylen)
{
    bool curve = opts->cert_path && *opts->cert_path;
    const char *endpoint = opts->endpoint ? opts->endpoint : "";
    if (!curve && (opts->clients_dir || opts->workers_dir)) {
        snprintf (why, whylen, "--clients-dir and --workers-dir need --cert (the broker's "
                               "secret certificate)");
        return NULL;
    }
    if (curve && (!opts->clients_dir || !opts->workers_dir)) {
        snprintf (why, whylen, "--cert needs --clients-dir and --workers-dir (folders of the "
                               "public keys allowed as clients and as workers)");
        return NULL;
    }
    if (!curve && !s_loopback (endpoint)) {
        if (!opts->insecure) {
            snprintf (why, whylen,
                      "refusing to bind %s without CURVE: pass --cert/--clients-dir/--workers-dir, "
                      "or --insecure",
                      endpoint);
            return NULL;
        }
        zsys_warning ("guard: serving %s without CURVE (--insecure): whoever reaches it may "
                      "submit jobs and act as a worker",
                      endpoint);
    }
    gq_guard_t *self = (gq_guard_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->deny_logged_us = INT64_MIN / 2;
    self->full_logged_us = INT64_MIN / 2;
    /* A rate that is not a positive finite number is no limit; a burst below one job would
       refuse single jobs, so it is at least the rate's worth of a second, and at least one. */
    self->rate_per_s = opts->rate_per_s > 0 && isfinite (opts->rate_per_s) ? opts->rate_per_s : 0;
    self->burst = opts->burst > 0 ? opts->burst : fmax (self->rate_per_s, 1);
    self->buckets = zhashx_new ();
    self->max_queued = opts->max_queued_per_client > 0 ? opts->max_queued_per_client : 0;
    if (!self->buckets) {
        snprintf (why, whylen, "out of memory");
        gq_guard_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->buckets, s_destroy_item);
    if (self->max_queued) {
        self->owners = zhashx_new ();
        if (!self->owners) {
            snprintf (why, whylen, "out of memory");
            gq_guard_destroy (&self);
            return NULL;
        }
        gq_guard_owner (self, ""); /* id 1: every client without a key */
    }
    if (curve && s_curve_start (self, opts, router, why, whylen)) {
        gq_guard_destroy (&self);
        return NULL;
    }
    return self;
}

void
gq_guard_destroy (gq_guard_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_guard_t *self = *self_p;
    zactor_destroy (&self->keys);
    if (self->auth_dir) {
        s_remove_dir (self->auth_dir, false);
        free (self->auth_dir);
    }
    for (int r = 0; r < 2; r++) {
        free (self->dirs[r]);
        zhashx_destroy (&self->roles[r]);
    }
    zhashx_destroy (&self->buckets);
    zhashx_destroy (&self->owners);
    free (self->queued);
    free (self);
    *self_p = NULL;
}

/* ---- Roles --------------------------------------------------------------------------------- */

static void
s_log_denial (gq_guard_t *self, const char *why, int64_t now_us)
{
    if (now_us - self->deny_logged_us < (int64_t) GQ_GUARD_DENY_LOG_MS * 1000) {
        self->deny_suppressed++;
        return;
    }
    if (self->deny_suppressed) {
        zsys_warning ("guard: %s (and %zu more refused since the last report)", why,
                      self->deny_suppressed);
    } else {
        zsys_warning ("guard: %s", why);
    }
    self->deny_logged_us = now_us;
    self->deny_suppressed = 0;
}

/* May key act in role? 0, or GQ_EDENIED with a reason. */
static int
s_role_check (gq_guard_t *self, gq_role_t role, const char *key, int64_t now_us, char *why,
              size_t whylen)
{
    int r = role == GQ_ROLE_WORKER ? 1 : 0;
    if (!key || !*key) {
        snprintf (why, whylen, "the connection has no CURVE key: refused");
    } else if (zhashx_lookup (self->roles[r], key)) {
        return GQ_OK;
    } else {
        s_roles_refresh (self, now_us, true); /* a key added a moment ago? */
        if (zhashx_lookup (self->roles[r], key)) {
            return GQ_OK;
        }
        snprintf (why, whylen, "key %s is not allowed to act as a %s", key,
                  r ? "worker" : "client");
    }
    s_log_denial (self, why, now_us);
    return GQ_EDENIED;
}

int
gq_guard_role (gq_guard_t *self, gq_msg_t *msg, char *why, size_t whylen)
{
    if (!self || !self->curve) {
        return GQ_OK;
    }
    int64_t now_us = gq_mono_us ();
    s_roles_refresh (self, now_us, false);
    return s_role_check (self, gq_msg_role (msg), gq_msg_user_id (msg), now_us, why, whylen);
}

/* ---- Rate ---------------------------------------------------------------------------------- */

/* The bucket's name: "k:" and the CURVE key, or "r:" and the connection's routing id in hex. */
static void
s_sender_key (gq_guard_t *self, gq_msg_t *msg, char key[S_KEY_BUF])
{
    const char *user = gq_msg_user_id (msg);
    if (self->curve && user && *user) {
        snprintf (key, S_KEY_BUF, "k:%s", user);
        return;
    }
    zframe_t *id = gq_msg_routing_id (msg);
    size_t size = id ? zframe_size (id) : 0;
    memcpy (key, "r:", 2);
    s_hex (id ? zframe_data (id) : NULL, size < S_ROUTING_ID_BYTES ? size : S_ROUTING_ID_BYTES,
           key + 2);
}

static void
s_refill (gq_guard_t *self, s_bucket_t *bucket, int64_t now_us)
{
    if (now_us > bucket->last_us) {
        bucket->tokens += (double) (now_us - bucket->last_us) * self->rate_per_s / 1e6;
        if (bucket->tokens > self->burst) {
            bucket->tokens = self->burst;
        }
        bucket->last_us = now_us;
    }
}

/* Drops the buckets that have refilled, and notes when the first of the others will have. */
static void
s_sweep (gq_guard_t *self, int64_t now_us)
{
    zlistx_t *keys = zhashx_keys (self->buckets);
    int64_t soonest_us = INT64_MAX;
    for (const char *key = (const char *) zlistx_first (keys); key;
         key = (const char *) zlistx_next (keys)) {
        s_bucket_t *bucket = (s_bucket_t *) zhashx_lookup (self->buckets, key);
        s_refill (self, bucket, now_us);
        if (bucket->tokens >= self->burst) {
            zhashx_delete (self->buckets, key);
        } else {
            double full_in_us = (self->burst - bucket->tokens) / self->rate_per_s * 1e6;
            if (full_in_us < (double) soonest_us) {
                soonest_us = (int64_t) ceil (full_in_us);
            }
        }
    }
    zlistx_destroy (&keys);
    self->next_sweep_us = soonest_us == INT64_MAX ? now_us : now_us + soonest_us;
}

int
gq_guard_take (gq_guard_t *self, gq_msg_t *msg, size_t jobs, int64_t now_us,
               int64_t *retry_after_ms)
{
    if (retry_after_ms) {
        *retry_after_ms = 0;
    }
    if (!self || self->rate_per_s <= 0 || jobs == 0) {
        return GQ_OK;
    }
    char key[S_KEY_BUF];
    s_sender_key (self, msg, key);
    s_bucket_t *bucket = (s_bucket_t *) zhashx_lookup (self->buckets, key);
    if (!bucket) {
        if (zhashx_size (self->buckets) >= GQ_GUARD_MAX_BUCKETS && now_us >= self->next_sweep_us) {
            s_sweep (self, now_us);
        }
        if (zhashx_size (self->buckets) >= GQ_GUARD_MAX_BUCKETS) {
            /* Every bucket is in use: a storm of senders. Those known go on; new ones wait. */
            int64_t wait_ms = (self->next_sweep_us - now_us + 999) / 1000;
            if (retry_after_ms) {
                *retry_after_ms = wait_ms > 1 ? wait_ms : 1;
            }
            if (now_us - self->full_logged_us >= (int64_t) GQ_GUARD_DENY_LOG_MS * 1000) {
                zsys_warning ("guard: %d senders are being rate limited at once; new ones wait",
                              GQ_GUARD_MAX_BUCKETS);
                self->full_logged_us = now_us;
            }
            return GQ_ERATE;
        }
        bucket = (s_bucket_t *) malloc (sizeof *bucket);
        if (!bucket) {
            return GQ_OK; /* out of memory: no limit rather than no service */
        }
        bucket->tokens = self->burst;
        bucket->last_us = now_us;
        zhashx_insert (self->buckets, key, bucket);
    }
    s_refill (self, bucket, now_us);
    double need = (double) jobs;
    /* A full bucket takes any batch: one larger than the burst leaves it in debt. The
       tolerance keeps a sender who waited exactly the hinted time from being refused again by
       rounding. */
    double tolerance = self->rate_per_s * 1e-6 + 1e-9; /* a microsecond's worth */
    if (bucket->tokens >= need - tolerance || bucket->tokens >= self->burst - tolerance) {
        bucket->tokens -= need;
        return GQ_OK;
    }
    double missing = (need < self->burst ? need : self->burst) - bucket->tokens;
    double wait_ms = ceil (missing * 1000.0 / self->rate_per_s - 1e-3);
    if (retry_after_ms) {
        *retry_after_ms = wait_ms < 1 ? 1 : wait_ms > 1e12 ? (int64_t) 1e12 : (int64_t) wait_ms;
    }
    return GQ_ERATE;
}

/* ---- Queued cap ---------------------------------------------------------------------------- */

uint32_t
gq_guard_owner (gq_guard_t *self, const char *client)
{
    if (!self || !self->owners) {
        return 0;
    }
    const char *key = client ? client : "";
    uintptr_t id = (uintptr_t) zhashx_lookup (self->owners, key);
    if (id) {
        return (uint32_t) id;
    }
    if (self->owners_count >= GQ_GUARD_MAX_OWNERS) {
        return 1; /* beyond the bound, strangers share the keyless clients' count */
    }
    if (self->owners_count + 1 >= self->queued_size) {
        size_t size = self->queued_size ? self->queued_size * 2 : 16;
        int64_t *grown = (int64_t *) realloc (self->queued, size * sizeof *grown);
        if (!grown) {
            return 1;
        }
        memset (grown + self->queued_size, 0, (size - self->queued_size) * sizeof *grown);
        self->queued = grown;
        self->queued_size = size;
    }
    id = ++self->owners_count;
    zhashx_insert (self->owners, key, (void *) id);
    return (uint32_t) id;
}

int
gq_guard_queued (gq_guard_t *self, uint32_t owner, int64_t delta, bool enforce, char *why,
                 size_t whylen)
{
    if (!self || owner == 0 || owner > self->owners_count) {
        return GQ_OK;
    }
    int64_t *count = &self->queued[owner];
    if (delta > 0 && enforce) {
        if (delta > self->max_queued) {
            snprintf (why, whylen, "a batch of %lld jobs exceeds the limit of %lld unfinished "
                                   "jobs per client",
                      (long long) delta, (long long) self->max_queued);
            return GQ_EINVAL;
        }
        if (*count + delta > self->max_queued) {
            snprintf (why, whylen, "this client has %lld unfinished jobs and the limit is %lld; "
                                   "retry when some have finished",
                      (long long) *count, (long long) self->max_queued);
            return GQ_ERATE;
        }
    }
    *count += delta;
    if (*count < 0) {
        *count = 0;
    }
    return GQ_OK;
}

int64_t
gq_guard_queued_count (gq_guard_t *self, uint32_t owner)
{
    return self && owner && owner <= self->owners_count ? self->queued[owner] : 0;
}

/* ---- Selftest ------------------------------------------------------------------------------ */

#define S_CHECK_HAS(text, part)                                                               \
    do {                                                                                      \
        if (!strstr ((text), (part))) {                                                       \
            fprintf (stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,     \
                     (text), (part));                                                         \
            abort ();                                                                         \
        }                                                                                     \
    } while (0)

static void
s_test_opts (gq_broker_opts_t *opts, const char *endpoint)
{
    memset (opts, 0, sizeof *opts);
    opts->endpoint = endpoint;
}

/* A message as the broker would have decoded it from connection id. */
static gq_msg_t *
s_test_msg (gq_role_t role, uint32_t id)
{
    gq_msg_t *msg = gq_msg_new (role, role == GQ_ROLE_CLIENT ? "SUBMIT" : "READY", NULL);
    byte bytes[5] = {0, (byte) (id >> 24), (byte) (id >> 16), (byte) (id >> 8), (byte) id};
    zframe_t *frame = zframe_new (bytes, sizeof bytes);
    gq_msg_set_routing_id (msg, frame);
    zframe_destroy (&frame);
    return msg;
}

static void
s_test_endpoints (bool verbose)
{
    char why[300];
    gq_broker_opts_t opts;
    const char *local[] = {"tcp://127.0.0.1:5555", "tcp://127.1.2.3:*", "tcp://localhost:80",
                           "tcp://[::1]:5555",     "ipc:///tmp/gridq.sock", "inproc://broker",
                           NULL};
    for (const char **e = local; *e; e++) {
        s_test_opts (&opts, *e);
        gq_guard_t *guard = gq_guard_new (&opts, NULL, why, sizeof why);
        if (!guard) {
            fprintf (stderr, "guard: %s was refused: %s\n", *e, why);
            abort ();
        }
        gq_guard_destroy (&guard);
        gq_guard_destroy (&guard); /* safe twice */
    }
    const char *remote[] = {"tcp://0.0.0.0:5555",
                            "tcp://*:5555",
                            "tcp://192.168.1.20:5555",
                            "tcp://eth0:5555",
                            "tcp://[::]:5555",
                            "tcp://[::1]",
                            "tcp://127.0.0.1.example.com:5555",
                            "tcp://1270.0.0.1:5555",
                            "tcp://127.0.0.256:5555",
                            "tcp://128.0.0.1:5555",
                            "tcp://127.0.0:5555",
                            "tcp://127.0.0.1",
                            "tcp://127.0.0.1:",
                            "tcp://127.0.0.1:5555x",
                            "tcp://127.0.0.1:123456",
                            "tcp://localhost.example.com:5555",
                            "TCP://127.0.0.1:5555",
                            "ws://127.0.0.1:5555",
                            "pgm://eth0;239.192.1.1:5555",
                            "",
                            NULL};
    for (const char **e = remote; *e; e++) {
        s_test_opts (&opts, *e);
        gq_guard_t *guard = gq_guard_new (&opts, NULL, why, sizeof why);
        if (guard) {
            fprintf (stderr, "guard: %s was accepted without CURVE\n", *e);
            abort ();
        }
        S_CHECK_HAS (why, "without CURVE");
        opts.insecure = true;
        guard = gq_guard_new (&opts, NULL, why, sizeof why);
        assert (guard);
        gq_guard_destroy (&guard);
    }
    s_test_opts (&opts, "tcp://0.0.0.0:5555");
    assert (gq_guard_new (&opts, NULL, why, sizeof why) == NULL);
    if (strcmp (why, "refusing to bind tcp://0.0.0.0:5555 without CURVE: pass "
                     "--cert/--clients-dir/--workers-dir, or --insecure") != 0) {
        fprintf (stderr, "guard: unexpected reason: %s\n", why);
        abort ();
    }
    /* Half a CURVE configuration is refused rather than served in the clear. */
    s_test_opts (&opts, "tcp://127.0.0.1:5555");
    opts.clients_dir = "/tmp";
    assert (gq_guard_new (&opts, NULL, why, sizeof why) == NULL);
    S_CHECK_HAS (why, "need --cert");
    opts.clients_dir = NULL;
    opts.cert_path = "/nonexistent/broker.secret";
    assert (gq_guard_new (&opts, NULL, why, sizeof why) == NULL);
    S_CHECK_HAS (why, "--clients-dir and --workers-dir");
    if (verbose) {
        printf ("\n  endpoints: %s", why);
    }
}

static void
s_test_bucket (bool verbose)
{
    char why[300];
    gq_broker_opts_t opts;
    s_test_opts (&opts, "inproc://guard-test");
    opts.rate_per_s = 10;
    opts.burst = 5;
    gq_guard_t *guard = gq_guard_new (&opts, NULL, why, sizeof why);
    assert (guard);
    gq_msg_t *a = s_test_msg (GQ_ROLE_CLIENT, 1);
    gq_msg_t *b = s_test_msg (GQ_ROLE_CLIENT, 2);
    const int64_t t0 = 1000000000;
    const int64_t ms = 1000;
    int64_t retry = -1;
    /* The burst goes at once, then one job per 100 ms. */
    GQ_CHECK_EQ (gq_guard_take (guard, a, 5, t0, &retry), GQ_OK);
    GQ_CHECK_EQ (retry, 0);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0, &retry), GQ_ERATE);
    GQ_CHECK_EQ (retry, 100);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0 + 99 * ms, &retry), GQ_ERATE);
    GQ_CHECK_EQ (retry, 1);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0 + 100 * ms, &retry), GQ_OK);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 0, t0 + 100 * ms, &retry), GQ_OK);
    /* Another connection has its own bucket. */
    GQ_CHECK_EQ (gq_guard_take (guard, b, 5, t0, &retry), GQ_OK);
    GQ_CHECK_EQ (gq_guard_take (guard, b, 1, t0, &retry), GQ_ERATE);
    /* Idle time refills up to the burst, not beyond. */
    const int64_t hour = 3600LL * 1000 * ms;
    GQ_CHECK_EQ (gq_guard_take (guard, a, 5, t0 + hour, &retry), GQ_OK);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0 + hour, &retry), GQ_ERATE);
    GQ_CHECK_EQ (retry, 100);
    gq_guard_destroy (&guard);

    /* A batch larger than the burst: taken from a full bucket, which goes into debt. */
    guard = gq_guard_new (&opts, NULL, why, sizeof why);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 20, t0, &retry), GQ_OK);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0, &retry), GQ_ERATE);
    GQ_CHECK_EQ (retry, 1600); /* 16 tokens at 10/s */
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0 + 1599 * ms, &retry), GQ_ERATE);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0 + 1600 * ms, &retry), GQ_OK);
    /* From a bucket that is not full, a large batch waits until it is. */
    GQ_CHECK_EQ (gq_guard_take (guard, a, 20, t0 + 1600 * ms, &retry), GQ_ERATE);
    GQ_CHECK_EQ (retry, 500);
    GQ_CHECK_EQ (gq_guard_take (guard, a, 20, t0 + 2100 * ms, &retry), GQ_OK);
    /* Time that goes backwards refills nothing and breaks nothing. */
    GQ_CHECK_EQ (gq_guard_take (guard, a, 1, t0, &retry), GQ_ERATE);
    GQ_CHECK_EQ (retry, 1600);
    gq_guard_destroy (&guard);

    /* Rate 0 is no limit, and keeps no buckets. */
    opts.rate_per_s = 0;
    guard = gq_guard_new (&opts, NULL, why, sizeof why);
    for (int i = 0; i < 100; i++) {
        GQ_CHECK_EQ (gq_guard_take (guard, a, 10000, t0, &retry), GQ_OK);
    }
    GQ_CHECK_EQ (zhashx_size (guard->buckets), 0);
    gq_guard_destroy (&guard);

    /* A storm of connections cannot grow the table beyond its bound. Each bucket has one token
       left of two, so it is full again after a second at 1/s. */
    opts.rate_per_s = 1;
    opts.burst = 2;
    guard = gq_guard_new (&opts, NULL, why, sizeof why);
    for (uint32_t i = 0; i < GQ_GUARD_MAX_BUCKETS; i++) {
        gq_msg_t *msg = s_test_msg (GQ_ROLE_CLIENT, 1000 + i);
        GQ_CHECK_EQ (gq_guard_take (guard, msg, 1, t0, &retry), GQ_OK);
        gq_msg_destroy (&msg);
    }
    GQ_CHECK_EQ (zhashx_size (guard->buckets), GQ_GUARD_MAX_BUCKETS);
    gq_msg_t *late = s_test_msg (GQ_ROLE_CLIENT, 999);
    GQ_CHECK_EQ (gq_guard_take (guard, late, 1, t0 + 10 * ms, &retry), GQ_ERATE);
    GQ_CHECK_EQ (retry, 990);
    GQ_CHECK_EQ (zhashx_size (guard->buckets), GQ_GUARD_MAX_BUCKETS);
    /* A known sender goes on meanwhile; a second refusal does not sweep again. */
    gq_msg_t *known = s_test_msg (GQ_ROLE_CLIENT, 1000);
    GQ_CHECK_EQ (gq_guard_take (guard, known, 1, t0 + 20 * ms, &retry), GQ_OK);
    GQ_CHECK_EQ (gq_guard_take (guard, late, 1, t0 + 30 * ms, &retry), GQ_ERATE);
    /* Once they have refilled, the sweep makes room. */
    GQ_CHECK_EQ (gq_guard_take (guard, late, 1, t0 + 1000 * ms, &retry), GQ_OK);
    assert (zhashx_size (guard->buckets) < 10);
    gq_msg_destroy (&known);
    gq_msg_destroy (&late);
    gq_guard_destroy (&guard);
    gq_msg_destroy (&a);
    gq_msg_destroy (&b);
    if (verbose) {
        printf ("\n  buckets: ok");
    }
}

static void
s_test_queued (bool verbose)
{
    char why[300];
    gq_broker_opts_t opts;
    s_test_opts (&opts, "inproc://guard-test");
    gq_guard_t *guard = gq_guard_new (&opts, NULL, why, sizeof why);
    GQ_CHECK_EQ (gq_guard_owner (guard, "x"), 0); /* no cap */
    GQ_CHECK_EQ (gq_guard_queued (guard, 0, 1000000, true, why, sizeof why), GQ_OK);
    gq_guard_destroy (&guard);

    opts.max_queued_per_client = 10;
    guard = gq_guard_new (&opts, NULL, why, sizeof why);
    uint32_t anon = gq_guard_owner (guard, NULL);
    GQ_CHECK_EQ (anon, 1);
    GQ_CHECK_EQ (gq_guard_owner (guard, ""), anon);
    uint32_t alice = gq_guard_owner (guard, "alice-key");
    uint32_t bob = gq_guard_owner (guard, "bob-key");
    assert (alice > 1 && bob > 1 && alice != bob);
    GQ_CHECK_EQ (gq_guard_owner (guard, "alice-key"), alice);
    GQ_CHECK_EQ (gq_guard_queued (guard, alice, 8, true, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_guard_queued (guard, alice, 3, true, why, sizeof why), GQ_ERATE);
    S_CHECK_HAS (why, "8 unfinished jobs");
    GQ_CHECK_EQ (gq_guard_queued_count (guard, alice), 8);
    GQ_CHECK_EQ (gq_guard_queued (guard, bob, 10, true, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_guard_queued (guard, alice, 2, true, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_guard_queued (guard, alice, -5, true, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_guard_queued_count (guard, alice), 5);
    GQ_CHECK_EQ (gq_guard_queued (guard, alice, 11, true, why, sizeof why), GQ_EINVAL);
    S_CHECK_HAS (why, "exceeds the limit");
    /* Recovery counts without refusing; counts never go below zero. */
    GQ_CHECK_EQ (gq_guard_queued (guard, alice, 20, false, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_guard_queued_count (guard, alice), 25);
    GQ_CHECK_EQ (gq_guard_queued (guard, alice, -100, true, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_guard_queued_count (guard, alice), 0);
    GQ_CHECK_EQ (gq_guard_queued (guard, 12345, 1, true, why, sizeof why), GQ_OK);
    /* Owners are bounded: beyond the bound, new keys share the keyless count. */
    char key[32];
    for (int i = 0; i < GQ_GUARD_MAX_OWNERS + 10; i++) {
        snprintf (key, sizeof key, "k%d", i);
        uint32_t id = gq_guard_owner (guard, key);
        assert (id >= 1 && id <= GQ_GUARD_MAX_OWNERS);
    }
    GQ_CHECK_EQ (guard->owners_count, GQ_GUARD_MAX_OWNERS);
    gq_guard_destroy (&guard);
    if (verbose) {
        printf ("\n  queued cap: ok");
    }
}

/* ---- Selftest of CURVE roles: real certificates, zauth, a ROUTER on loopback ------------- */

static char *
s_test_cert (const char *dir, const char *name, zcert_t **cert_p)
{
    zcert_t *cert = zcert_new ();
    char path[PATH_MAX];
    snprintf (path, sizeof path, "%s/%s.pub", dir, name);
    GQ_CHECK_EQ (zcert_save_public (cert, path), 0);
    snprintf (path, sizeof path, "%s/%s.secret", dir, name);
    GQ_CHECK_EQ (zcert_save_secret (cert, path), 0);
    *cert_p = cert;
    return strdup (zcert_public_txt (cert));
}

static zsock_t *
s_test_dealer (zcert_t *cert, const char *server_key, int port)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    assert (dealer);
    zsock_set_linger (dealer, 0);
    if (cert) {
        zcert_apply (cert, dealer);
        zsock_set_curve_serverkey (dealer, server_key);
    }
    GQ_CHECK_EQ (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);
    return dealer;
}

/* Sends one message from dealer and runs what the broker does with it: decode, then the role
   check. Returns the check's code, or 1 when nothing arrived within timeout_ms. */
static int
s_test_exchange (gq_guard_t *guard, zsock_t *router, zsock_t *dealer, const char *proto,
                 const char *expect_key, int timeout_ms, char *why, size_t whylen)
{
    zstr_sendx (dealer, proto, "PING", "{}", NULL);
    zpoller_t *poller = zpoller_new (router, NULL);
    void *which = zpoller_wait (poller, timeout_ms);
    zpoller_destroy (&poller);
    if (!which) {
        return 1;
    }
    zmsg_t *zmsg = zmsg_recv (router);
    gq_msg_t *msg = NULL;
    GQ_CHECK_EQ (gq_msg_decode (&zmsg, true, &msg, why, whylen), GQ_OK);
    if (expect_key && strcmp (gq_msg_user_id (msg), expect_key) != 0) {
        fprintf (stderr, "guard: User-Id is \"%s\", expected \"%s\"\n", gq_msg_user_id (msg),
                 expect_key);
        abort ();
    }
    int rc = gq_guard_role (guard, msg, why, whylen);
    gq_msg_destroy (&msg);
    return rc;
}

static size_t
s_test_count_files (const char *path)
{
    size_t n = 0;
    DIR *dir = opendir (path);
    struct dirent *entry;
    while (dir && (entry = readdir (dir))) {
        n += entry->d_name[0] != '.';
    }
    if (dir) {
        closedir (dir);
    }
    return n;
}

static void
s_test_roles (bool verbose)
{
    if (!zsys_has_curve ()) {
        if (verbose) {
            printf ("\n  roles: skipped, this libzmq has no CURVE");
        }
        return;
    }
    char why[300];
    char base[] = "/tmp/gq-guard-test-XXXXXX";
    assert (mkdtemp (base));
    char clients[128], workers[128], keys[128], path[PATH_MAX];
    snprintf (clients, sizeof clients, "%s/clients", base);
    snprintf (workers, sizeof workers, "%s/workers", base);
    snprintf (keys, sizeof keys, "%s/keys", base);
    GQ_CHECK_EQ (mkdir (clients, 0700), 0);
    GQ_CHECK_EQ (mkdir (workers, 0700), 0);
    GQ_CHECK_EQ (mkdir (keys, 0700), 0);
    zcert_t *broker, *client, *worker, *both, *stranger, *late;
    char *broker_key = s_test_cert (keys, "broker", &broker);
    char *client_key = s_test_cert (keys, "client", &client);
    char *worker_key = s_test_cert (keys, "worker", &worker);
    char *both_key = s_test_cert (keys, "both", &both);
    char *stranger_key = s_test_cert (keys, "stranger", &stranger);
    char *late_key = s_test_cert (keys, "late", &late);
    /* The folders as an operator might leave them: the same key twice (which would abort a
       zcertstore pointed at them), a secret certificate, a file that is no certificate. */
    zcert_save_public (client, (snprintf (path, sizeof path, "%s/client.pub", clients), path));
    zcert_save_public (client, (snprintf (path, sizeof path, "%s/copy.pub", clients), path));
    zcert_save_secret (client, (snprintf (path, sizeof path, "%s/client.secret", clients), path));
    zcert_save_public (both, (snprintf (path, sizeof path, "%s/both.pub", clients), path));
    FILE *junk = fopen ((snprintf (path, sizeof path, "%s/README", clients), path), "w");
    assert (junk);
    fputs ("public keys of our clients\n", junk);
    fclose (junk);
    zcert_save_public (worker, (snprintf (path, sizeof path, "%s/worker.pub", workers), path));
    zcert_save_public (both, (snprintf (path, sizeof path, "%s/both.pub", workers), path));

    gq_broker_opts_t opts;
    s_test_opts (&opts, "tcp://127.0.0.1:*");
    opts.clients_dir = clients;
    opts.workers_dir = workers;
    /* Certificates that cannot serve are refused with a reason. */
    opts.cert_path = (snprintf (path, sizeof path, "%s/missing.secret", keys), path);
    assert (gq_guard_new (&opts, NULL, why, sizeof why) == NULL);
    S_CHECK_HAS (why, "No such file");
    opts.cert_path = (snprintf (path, sizeof path, "%s/broker.pub", keys), path);
    assert (gq_guard_new (&opts, NULL, why, sizeof why) == NULL);
    S_CHECK_HAS (why, "holds no secret key");
    char secret[256];
    snprintf (secret, sizeof secret, "%s/broker.secret", keys);
    opts.cert_path = secret;
    opts.workers_dir = "/nonexistent/workers";
    assert (gq_guard_new (&opts, NULL, why, sizeof why) == NULL);
    S_CHECK_HAS (why, "--workers-dir /nonexistent/workers");
    opts.workers_dir = workers;

    /* The private folder lies beside the store; one left by a killed broker is reused. */
    char db[256], stale[PATH_MAX + 16];
    snprintf (db, sizeof db, "%s/gridq.db", base);
    opts.db_path = db;
    GQ_CHECK_EQ (mkdir ((snprintf (path, sizeof path, "%s-zauth", db), path), 0755), 0);
    snprintf (stale, sizeof stale, "%s/stale.pub", path);
    zcert_save_public (stranger, stale);
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    zsock_set_linger (router, 0);
    gq_guard_t *guard = gq_guard_new (&opts, router, why, sizeof why);
    if (!guard) {
        fprintf (stderr, "guard: %s\n", why);
        abort ();
    }
    assert (guard->curve);
    GQ_CHECK_EQ (strcmp (guard->auth_dir, path), 0);
    struct stat st;
    GQ_CHECK_EQ (stat (guard->auth_dir, &st), 0);
    GQ_CHECK_EQ (st.st_mode & 0777, 0700);
    GQ_CHECK_EQ (stat (stale, &st) != 0, 1); /* the stranger's key left with the old folder */
    GQ_CHECK_EQ (zhashx_size (guard->roles[0]), 2);
    GQ_CHECK_EQ (zhashx_size (guard->roles[1]), 2);
    GQ_CHECK_EQ (s_test_count_files (guard->auth_dir), 3); /* client, worker, both */
    int port = zsock_bind (router, "tcp://127.0.0.1:*");
    assert (port > 0);

    /* Each key in its role; the wrong role is refused with the key named. */
    zsock_t *c = s_test_dealer (client, broker_key, port);
    GQ_CHECK_EQ (s_test_exchange (guard, router, c, "GQC1", client_key, 5000, why, sizeof why),
                GQ_OK);
    GQ_CHECK_EQ (s_test_exchange (guard, router, c, "GQW1", client_key, 5000, why, sizeof why),
                GQ_EDENIED);
    S_CHECK_HAS (why, "is not allowed to act as a worker");
    S_CHECK_HAS (why, client_key);
    zsock_t *w = s_test_dealer (worker, broker_key, port);
    GQ_CHECK_EQ (s_test_exchange (guard, router, w, "GQW1", worker_key, 5000, why, sizeof why),
                GQ_OK);
    GQ_CHECK_EQ (s_test_exchange (guard, router, w, "GQC1", worker_key, 5000, why, sizeof why),
                GQ_EDENIED);
    S_CHECK_HAS (why, "is not allowed to act as a client");
    zsock_t *bw = s_test_dealer (both, broker_key, port);
    GQ_CHECK_EQ (s_test_exchange (guard, router, bw, "GQW1", both_key, 5000, why, sizeof why),
                GQ_OK);
    GQ_CHECK_EQ (s_test_exchange (guard, router, bw, "GQC1", both_key, 5000, why, sizeof why),
                GQ_OK);
    /* Unknown keys and plaintext peers never get a message through. */
    zsock_t *s = s_test_dealer (stranger, broker_key, port);
    GQ_CHECK_EQ (s_test_exchange (guard, router, s, "GQC1", NULL, 300, why, sizeof why), 1);
    zsock_t *plain = s_test_dealer (NULL, NULL, port);
    GQ_CHECK_EQ (s_test_exchange (guard, router, plain, "GQC1", NULL, 300, why, sizeof why), 1);
    /* Synthetic keys: a message without a key is refused under CURVE. */
    int64_t now_us = gq_mono_us ();
    GQ_CHECK_EQ (s_role_check (guard, GQ_ROLE_CLIENT, "", now_us, why, sizeof why), GQ_EDENIED);
    S_CHECK_HAS (why, "no CURVE key");
    GQ_CHECK_EQ (s_role_check (guard, GQ_ROLE_WORKER, stranger_key, now_us, why, sizeof why),
                GQ_EDENIED);
    GQ_CHECK_EQ (s_role_check (guard, GQ_ROLE_WORKER, worker_key, now_us, why, sizeof why),
                GQ_OK);

    /* Revocation: the worker's key leaves its folder; its open connection is refused. */
    GQ_CHECK_EQ (unlink ((snprintf (path, sizeof path, "%s/worker.pub", workers), path)), 0);
    guard->next_rescan_us = 0;
    GQ_CHECK_EQ (s_test_exchange (guard, router, w, "GQW1", worker_key, 5000, why, sizeof why),
                GQ_EDENIED);
    /* A key added while the broker runs can connect within a few seconds: the keys actor tells
       zauth, an unknown key makes the role sets reload. A peer refused at the handshake does not
       try again on the same socket (libzmq ends the session), so each try is a new socket. */
    zcert_save_public (late, (snprintf (path, sizeof path, "%s/late.pub", workers), path));
    zsock_t *l = NULL;
    int rc = 1;
    for (int64_t deadline = gq_mono_us () + 5000000; rc == 1 && gq_mono_us () < deadline;) {
        zsock_destroy (&l);
        l = s_test_dealer (late, broker_key, port);
        rc = s_test_exchange (guard, router, l, "GQW1", late_key, 300, why, sizeof why);
    }
    GQ_CHECK_EQ (rc, GQ_OK);
    GQ_CHECK_EQ (s_test_count_files (guard->auth_dir), 3); /* client, both, late */

    zsock_destroy (&c);
    zsock_destroy (&w);
    zsock_destroy (&bw);
    zsock_destroy (&s);
    zsock_destroy (&plain);
    zsock_destroy (&l);
    zsock_destroy (&router);
    char auth_dir[PATH_MAX];
    snprintf (auth_dir, sizeof auth_dir, "%s", guard->auth_dir);
    gq_guard_destroy (&guard);
    assert (stat (auth_dir, &st) != 0); /* the private folder is gone */
    /* Without a store file, the folder goes to $TMPDIR. */
    opts.db_path = NULL;
    router = zsock_new (ZMQ_ROUTER);
    guard = gq_guard_new (&opts, router, why, sizeof why);
    assert (guard);
    S_CHECK_HAS (guard->auth_dir, "gridq-zauth-");
    snprintf (auth_dir, sizeof auth_dir, "%s", guard->auth_dir);
    zsock_destroy (&router);
    gq_guard_destroy (&guard);
    assert (stat (auth_dir, &st) != 0);

    zcert_destroy (&broker);
    zcert_destroy (&client);
    zcert_destroy (&worker);
    zcert_destroy (&both);
    zcert_destroy (&stranger);
    zcert_destroy (&late);
    free (broker_key);
    free (client_key);
    free (worker_key);
    free (both_key);
    free (stranger_key);
    free (late_key);
    s_remove_dir (clients, false);
    s_remove_dir (workers, false);
    s_remove_dir (keys, false);
    rmdir (base);
    if (verbose) {
        printf ("\n  roles: ok");
    }
}

void
gq_guard_test (bool verbose)
{
    s_test_endpoints (verbose);
    s_test_bucket (verbose);
    s_test_queued (verbose);
    s_test_roles (verbose);
}
