/*  test_reliability_disk.c — the disk fills while results, cancels and submissions flow (issue
    14's second loss). The broker's store lives on a 4 MiB tmpfs; 200 jobs run on two workers when
    a filler file takes every free byte. Before, every finish of that moment was forgotten, the
    jobs showed "queued" for ever and ran again after a restart. Now: the broker says once that
    the store cannot commit (STATS store.ok false), places no new work, refuses submissions with
    STORE and keeps every write; once the filler goes it commits them and goes on by itself. Then
    every acknowledged job has ended exactly once (none ran twice), a cancel sent during the
    outage is answered after it with the job cancelled, the counts match the store, and a broker
    restarted on the same store finds nothing left to run. gridq stats, gridq-top and /metrics
    say the store cannot commit while it cannot. Needs root for the mount: skipped (77) where it
    fails; needs libmicrohttpd (built only then). */
#include <czmq.h>
#include <sys/mount.h>

#include "harness.h"
#include "metrics.h"

#define S_JOBS 200

static char s_mnt[64] = "";

static void
s_unmount (void)
{
    if (s_mnt[0]) {
        umount2 (s_mnt, MNT_DETACH);
        rmdir (s_mnt);
    }
}

static bool
s_store_ok (gq_client_t *client, bool want)
{
    json_t *stats = gq_client_call (client, "STATS", NULL);
    json_t *ok = json_object_get (json_object_get (stats, "store"), "ok");
    bool match = json_is_boolean (ok) && json_is_true (ok) == want;
    json_decref (stats);
    return match;
}

static bool
s_store_down (void *arg)
{
    return s_store_ok ((gq_client_t *) arg, false);
}

static bool
s_store_up (void *arg)
{
    return s_store_ok ((gq_client_t *) arg, true);
}

/* The count of jobs in state name that STATS reports. */
static int64_t
s_stat (gq_client_t *client, const char *name)
{
    json_t *stats = gq_client_call (client, "STATS", NULL);
    int64_t n = json_integer_value (json_object_get (json_object_get (stats, "jobs"), name));
    json_decref (stats);
    return n;
}

int
main (void)
{
    h_init ("rel-disk", 90);
    snprintf (s_mnt, sizeof s_mnt, "/tmp/gq-disk-XXXXXX");
    if (!mkdtemp (s_mnt) || mount ("tmpfs", s_mnt, "tmpfs", 0, "size=4m") != 0) {
        printf ("SKIP: cannot mount a tmpfs here (needs root)\n");
        rmdir (s_mnt);
        s_mnt[0] = '\0';
        h_cleanup ();
        return 77;
    }
    h_at_cleanup (s_unmount);
    char db[128], metrics[64];
    snprintf (db, sizeof db, "%s/gridq.db", s_mnt);
    int metrics_port = h_free_port ();
    snprintf (metrics, sizeof metrics, "127.0.0.1:%d", metrics_port);
    pid_t broker = h_start_broker ("--db", db, "--metrics", metrics, NULL);
    gq_client_t *client = h_start_workers (4, 3000, "w1", "w2", NULL);

    /* 200 jobs of 100 ms on 8 slots: 2.5 s of work. */
    json_t *jobs = json_array ();
    for (int i = 0; i < S_JOBS; i++) {
        json_array_append_new (jobs, json_pack ("{s:s, s:{s:i, s:i}}", "kind", "sleep", "payload",
                                                "ms", 100, "i", i));
    }
    int64_t ids[S_JOBS];
    CHECK_EQ (gq_client_submit (client, jobs, false, ids), 0);
    json_decref (jobs);
    CHECK (h_wait_state (client, ids[0], "running", 5000));

    /* The disk fills: the next commit of finishes fails. */
    char command[300];
    snprintf (command, sizeof command, "dd if=/dev/zero of=%s/filler bs=16k 2>/dev/null; true",
              s_mnt);
    CHECK_EQ (h_run (command, NULL), 0);
    CHECK (h_wait_until (s_store_down, client, 10000));

    /* While nothing can commit: a submission is refused with STORE; a cancel is sent and its
       answer waits; the running jobs end and their results are kept; nothing new starts. */
    json_t *late = json_pack ("[{s:s, s:{s:i}}]", "kind", "sleep", "payload", "ms", 1);
    int64_t late_id = 0;
    CHECK (gq_client_submit (client, late, false, &late_id) != 0);
    CHECK_EQ (gq_client_errcode (client), GQ_ESTORE);
    CHECK (strstr (gq_client_error (client), "store") != NULL);
    json_decref (late);
    int64_t victim = ids[S_JOBS - 1]; /* the last job: queued still, placement is paused */
    int64_t cancel_req = gq_client_send (client, "CANCEL",
                                         json_pack ("{s:[I]}", "ids", (json_int_t) victim));
    CHECK (cancel_req > 0);
    CHECK (h_wait_until (s_store_down, client, 1000)); /* still down: the disk is still full */
    /* ... and says so: gridq stats, gridq-top, /metrics. */
    char *said = NULL;
    snprintf (command, sizeof command, "%s/gridq --broker %s stats", h_bin (), h_endpoint ());
    CHECK_EQ (h_run (command, &said), 0);
    CHECK (said && strstr (said, "CANNOT COMMIT") && strstr (said, "full"));
    free (said);
    snprintf (command, sizeof command, "%s/gridq-top --broker %s --once", h_bin (), h_endpoint ());
    CHECK_EQ (h_run (command, &said), 0);
    CHECK (said && strstr (said, "STORE  cannot commit"));
    free (said);
    char *body = NULL, ctype[128];
    CHECK_EQ (gq_metrics_http_get (metrics_port, "/metrics", &body, ctype, sizeof ctype), 200);
    CHECK (body && strstr (body, "\ngridq_store_up 0\n"));
    free (body);

    /* The disk frees: the broker commits what it kept and goes on by itself. */
    snprintf (command, sizeof command, "rm -f %s/filler", s_mnt);
    CHECK_EQ (h_run (command, NULL), 0);
    CHECK (h_wait_until (s_store_up, client, 10000));
    CHECK_EQ (gq_metrics_http_get (metrics_port, "/metrics", &body, ctype, sizeof ctype), 200);
    CHECK (body && strstr (body, "\ngridq_store_up 1\n") &&
           strstr (body, "\ngridq_store_failures_total "));
    free (body);
    char reply[32];
    int64_t req = 0;
    json_t *answer_body = NULL;
    int64_t deadline = gq_mono_us () + 10000000;
    while (req != cancel_req && gq_mono_us () < deadline) {
        json_decref (answer_body);
        answer_body = NULL;
        if (gq_client_recv (client, 500, reply, &req, &answer_body, NULL) != 0) {
            req = 0;
        }
    }
    CHECK_EQ (req, cancel_req);
    CHECK_STR (reply, "CANCEL");
    json_t *answer = json_array_get (json_object_get (answer_body, "jobs"), 0);
    CHECK_EQ (h_int (answer, "id"), victim);
    CHECK_STR (h_str (answer, "state"), "cancelled");
    json_decref (answer_body);

    /* Every acknowledged job ends, exactly once. */
    CHECK_EQ (gq_client_wait (client, ids, S_JOBS, 30000, NULL, NULL), 0);
    CHECK_EQ (h_sql_settled (db, "select count(*) from jobs where state = 2", S_JOBS - 1, 5000),
              S_JOBS - 1);
    CHECK_EQ (h_sql_int (db, "select count(*) from jobs where state = 4"), 1);
    CHECK_EQ (h_sql_int (db, "select count(*) from jobs"), S_JOBS); /* the refused one left none */
    CHECK_EQ (h_sql_int (db, "select count(*) from jobs where attempts > 1"), 0);
    CHECK_EQ (s_stat (client, "done"), S_JOBS - 1);
    CHECK_EQ (s_stat (client, "cancelled"), 1);
    CHECK_EQ (s_stat (client, "queued") + s_stat (client, "running"), 0);
    char *count = NULL;
    snprintf (command, sizeof command, "grep -c 'the store cannot commit' %s/broker.log", h_dir ());
    h_run (command, &count);
    CHECK_EQ (atoi (count ? count : "0"), 1); /* said once for the outage */
    free (count);

    /* A broker restarted on that store finds nothing to run again. */
    h_kill (broker, SIGTERM);
    h_start_broker ("--db", db, NULL);
    h_wait_broker (client, 10000);
    CHECK_EQ (s_stat (client, "queued") + s_stat (client, "running"), 0);
    CHECK_EQ (s_stat (client, "done"), S_JOBS - 1);

    printf ("disk: full while %d jobs ran; refused, kept, committed after: every job ended "
            "once\n",
            S_JOBS);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
