/*  gridq-keygen.c — makes a CURVE key pair for gridq: NAME.pub (public) and NAME.secret (secret,
    readable by its owner only), as czmq certificates.

    Files are written under a temporary name and then linked into place, so an existing key is
    never overwritten by accident (not even by a race) unless --force is given, and a reader
    never sees half a certificate. */
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gq_common.h"
#include "tool.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-keygen [--dir DIR] [--force] NAME\n"
             "\n"
             "Makes a CURVE key pair for gridq's encryption and authentication:\n"
             "  NAME.pub     the public key: copy it into the broker's --clients-dir or\n"
             "               --workers-dir (a client's or a worker's key), or give it to clients\n"
             "               and workers as --server-cert (the broker's key)\n"
             "  NAME.secret  the secret key (mode 0600): only its owner uses it, as --cert\n"
             "\n"
             "  --dir DIR    write into DIR (default: the current folder)\n"
             "  --force      replace existing NAME.pub and NAME.secret\n"
             "  --help       this text\n"
             "\n"
             "NAME is made of letters, digits and _.:@+- (at most 63 bytes).\n"
             "\n"
             "example:\n"
             "  gridq-keygen broker && gridq-keygen alice && gridq-keygen gpu-1\n"
             "  mkdir clients workers && cp alice.pub clients/ && cp gpu-1.pub workers/\n"
             "  gridq-broker --cert broker.secret --clients-dir clients --workers-dir workers\n");
}

/* Writes the certificate (secret or public) to a new temporary file in dir with mode, whose
   name goes into temp. 0 or -1 with errno. */
static int
s_write_temp (zcert_t *cert, bool secret, const char *dir, mode_t mode, char *temp, size_t size)
{
    snprintf (temp, size, "%s/.gridq-keygen-XXXXXX", dir);
    int fd = mkstemp (temp);
    if (fd < 0) {
        return -1;
    }
    int rc = fchmod (fd, mode);
    close (fd);
    if (rc == 0) {
        rc = secret ? zcert_save_secret (cert, temp) : zcert_save_public (cert, temp);
        if (rc) {
            errno = EIO;
        }
    }
    if (rc) {
        int saved = errno;
        unlink (temp);
        errno = saved;
    }
    return rc;
}

/* Moves temp to path: replacing it with force, else only when path does not exist. */
static int
s_place (const char *temp, const char *path, bool force)
{
    if (force) {
        return rename (temp, path);
    }
    int rc = link (temp, path); /* fails with EEXIST, atomically, when path exists */
    int saved = errno;
    unlink (temp);
    errno = saved;
    return rc;
}

int
main (int argc, char **argv)
{
    tool_set_name ("gridq-keygen");
    const char *dir = ".";
    bool force = false;
    enum { O_DIR = 1000, O_FORCE, O_HELP };
    static const struct option options[] = {{"dir", required_argument, 0, O_DIR},
                                            {"force", no_argument, 0, O_FORCE},
                                            {"help", no_argument, 0, O_HELP},
                                            {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        if (opt == O_DIR) {
            dir = optarg;
        } else if (opt == O_FORCE) {
            force = true;
        } else if (opt == O_HELP) {
            s_usage (stdout);
            return 0;
        } else {
            s_usage (stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf (stderr, "gridq-keygen: %s\n(see gridq-keygen --help)\n",
                 optind >= argc ? "give the NAME of the key pair" : "give one NAME only");
        return 2;
    }
    const char *name = argv[optind];
    if (!gq_valid_name (name, GQ_NAME_MAX) || name[0] == '.') {
        fprintf (stderr,
                 "gridq-keygen: NAME '%s' must be letters, digits and _.:@+- (not starting "
                 "with '.', at most %d bytes)\n(see gridq-keygen --help)\n",
                 name, GQ_NAME_MAX - 1);
        return 2;
    }
    struct stat st;
    if (stat (dir, &st)) {
        return tool_fail ("cannot write into %s: %s", dir, strerror (errno));
    }
    if (!S_ISDIR (st.st_mode)) {
        return tool_fail ("cannot write into %s: not a folder", dir);
    }
    if (!zsys_has_curve ()) {
        return tool_fail ("this libzmq has no CURVE support (it must be built with libsodium)");
    }
    char pub_path[PATH_MAX], secret_path[PATH_MAX];
    if (snprintf (pub_path, sizeof pub_path, "%s/%s.pub", dir, name) >= (int) sizeof pub_path ||
        snprintf (secret_path, sizeof secret_path, "%s/%s.secret", dir, name) >=
            (int) sizeof secret_path) {
        return tool_fail ("the folder name %s is too long", dir);
    }
    if (!force) {
        const char *paths[2] = {pub_path, secret_path};
        for (int i = 0; i < 2; i++) {
            if (lstat (paths[i], &st) == 0) {
                return tool_fail ("%s exists: not overwritten (use --force to replace the key pair)",
                               paths[i]);
            }
        }
    }
    zsys_init ();
    zsys_set_logident ("gridq-keygen");
    zcert_t *cert = zcert_new ();
    if (!cert) {
        return tool_fail ("cannot make a key pair");
    }
    zcert_set_meta (cert, "name", "%s", name);
    zcert_set_meta (cert, "created-by", "gridq-keygen");

    char secret_temp[PATH_MAX], pub_temp[PATH_MAX];
    if (s_write_temp (cert, true, dir, 0600, secret_temp, sizeof secret_temp)) {
        zcert_destroy (&cert);
        return tool_fail ("cannot write into %s: %s", dir, strerror (errno));
    }
    if (s_write_temp (cert, false, dir, 0644, pub_temp, sizeof pub_temp)) {
        int saved = errno;
        unlink (secret_temp);
        zcert_destroy (&cert);
        return tool_fail ("cannot write into %s: %s", dir, strerror (saved));
    }
    if (s_place (secret_temp, secret_path, force)) {
        int saved = errno;
        unlink (pub_temp);
        zcert_destroy (&cert);
        return tool_fail ("cannot write %s: %s", secret_path, strerror (saved));
    }
    if (s_place (pub_temp, pub_path, force)) {
        int saved = errno;
        if (!force) {
            unlink (secret_path); /* ours: the two files go together */
        }
        zcert_destroy (&cert);
        return tool_fail ("cannot write %s: %s", pub_path, strerror (saved));
    }
    printf ("public key  %s\n", zcert_public_txt (cert));
    printf ("wrote %s     public: for the broker's --clients-dir or --workers-dir, or "
            "--server-cert\n",
            pub_path);
    printf ("wrote %s  secret (mode 0600): its owner's --cert; never copy it elsewhere\n",
            secret_path);
    zcert_destroy (&cert);
    return 0;
}
