/*  call.c — one HTTP request shared by the HTTP thread and the relay (see call.h). */
#define _GNU_SOURCE
#include "call.h"
#include "tuning.h"

#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

gw_call_t *
gw_call_new (struct MHD_Connection *connection, const char *method, const char *url)
{
    gw_call_t *self = (gw_call_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    if (pthread_mutex_init (&self->mutex, NULL) != 0) {
        free (self);
        return NULL;
    }
    atomic_init (&self->refs, 1);
    self->after_seq = -2;
    self->last_seq = -1;
    self->connection = connection;
    self->started_us = gq_mono_us ();
    snprintf (self->method, sizeof self->method, "%s", method);
    snprintf (self->path, sizeof self->path, "%s", url);
    return self;
}

gw_call_t *
gw_call_ref (gw_call_t *self)
{
    atomic_fetch_add (&self->refs, 1);
    return self;
}

void
gw_call_unref (gw_call_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gw_call_t *self = *self_p;
    *self_p = NULL;
    if (atomic_fetch_sub (&self->refs, 1) != 1) {
        return;
    }
    json_decref (self->body);
    json_decref (self->finished);
    free (self->held);
    free (self->upload);
    free (self->text);
    free (self->location);
    pthread_mutex_destroy (&self->mutex);
    free (self);
}

/* Unlocks, and resumes the connection when the HTTP thread had suspended it. A suspended
   connection cannot close, so resuming it after the unlock is safe. */
static void
s_unlock_resume (gw_call_t *self)
{
    bool resume = self->suspended;
    self->suspended = false;
    pthread_mutex_unlock (&self->mutex);
    if (resume) {
        MHD_resume_connection (self->connection);
    }
}

void
gw_call_reply (gw_call_t *self, unsigned status, json_t *body)
{
    char *text = body ? json_dumps (body, JSON_COMPACT) : NULL;
    json_decref (body);
    pthread_mutex_lock (&self->mutex);
    if (self->answered || self->aborted) {
        pthread_mutex_unlock (&self->mutex);
        free (text);
        return;
    }
    self->answered = true;
    self->status = text ? status : 500;
    free (self->text);
    self->text = text;
    self->len = text ? strlen (text) : 0;
    s_unlock_resume (self);
}

/* OpenAI's error type for an HTTP status. */
static const char *
s_openai_type (unsigned status)
{
    if (status == 429) {
        return "rate_limit_error";
    }
    return status >= 500 ? "server_error" : "invalid_request_error";
}

void
gw_call_error (gw_call_t *self, unsigned status, const char *code, const char *field,
               const char *format, ...)
{
    char message[1024];
    va_list args;
    va_start (args, format);
    vsnprintf (message, sizeof message, format, args);
    va_end (args);
    /* A message that quotes the client's bytes (a path, a header) may not be UTF-8: those
       bytes become '?', so that the answer is JSON still (a 4xx, never a 500). */
    json_t *text = json_string (message);
    for (char *byte = message; !text && *byte; byte++) {
        *byte = (unsigned char) *byte >= 0x80 ? '?' : *byte;
    }
    json_t *error = json_pack ("{s:o}", "message", text ? text : json_string (message));
    if (self->openai) {
        json_object_set_new (error, "type", json_string (s_openai_type (status)));
        json_object_set_new (error, "param", field ? json_string (field) : json_null ());
        json_object_set_new (error, "code", code ? json_string (code) : json_null ());
    } else {
        if (field) {
            json_object_set_new (error, "field", json_string (field));
        }
        if (code) {
            json_object_set_new (error, "code", json_string (code));
        }
    }
    gw_call_reply (self, status, json_pack ("{s:o}", "error", error));
}

void
gw_call_stream_open (gw_call_t *self)
{
    pthread_mutex_lock (&self->mutex);
    if (self->answered || self->aborted) {
        pthread_mutex_unlock (&self->mutex);
        return;
    }
    self->answered = true;
    self->streaming = true;
    self->status = 200;
    s_unlock_resume (self);
}

bool
gw_call_stream_write (gw_call_t *self, const char *text)
{
    size_t n = strlen (text);
    pthread_mutex_lock (&self->mutex);
    if (self->ended || self->aborted || self->len - self->sent + n > GW_STREAM_BUFFER_BYTES) {
        pthread_mutex_unlock (&self->mutex);
        return false;
    }
    /* What libmicrohttpd has taken is dropped first, so text holds only what is owed. */
    if (self->sent) {
        memmove (self->text, self->text + self->sent, self->len - self->sent);
        self->len -= self->sent;
        self->sent = 0;
    }
    char *grown = (char *) realloc (self->text, self->len + n + 1);
    if (!grown) {
        pthread_mutex_unlock (&self->mutex);
        return false;
    }
    memcpy (grown + self->len, text, n + 1);
    self->text = grown;
    self->len += n;
    s_unlock_resume (self);
    return true;
}

void
gw_call_stream_end (gw_call_t *self)
{
    pthread_mutex_lock (&self->mutex);
    self->ended = true;
    s_unlock_resume (self);
}

void
gw_call_abort (gw_call_t *self)
{
    pthread_mutex_lock (&self->mutex);
    self->aborted = true;
    s_unlock_resume (self);
}

bool
gw_call_client_left (gw_call_t *self)
{
    bool left = false;
    pthread_mutex_lock (&self->mutex);
    if (self->suspended) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info (self->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info) {
            struct pollfd item = {info->connect_fd, POLLIN | POLLRDHUP, 0};
            char byte;
            /* A peer that closed reads as end of file: POLLRDHUP, or POLLIN with nothing to
               read. A keep-alive client's next request (bytes) is not a close. */
            if (poll (&item, 1, 0) == 1 &&
                ((item.revents & (POLLRDHUP | POLLHUP | POLLERR)) ||
                 recv (info->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0)) {
                left = true;
            }
        }
    }
    pthread_mutex_unlock (&self->mutex);
    return left;
}

bool
gw_call_suspend (gw_call_t *self)
{
    pthread_mutex_lock (&self->mutex);
    bool suspend = !self->answered && !self->aborted;
    if (suspend) {
        self->suspended = true;
        MHD_suspend_connection (self->connection);
    }
    pthread_mutex_unlock (&self->mutex);
    return suspend;
}

ssize_t
gw_call_stream_read (gw_call_t *self, char *buf, size_t max)
{
    pthread_mutex_lock (&self->mutex);
    ssize_t n;
    if (self->aborted) {
        n = -2;
    } else if (self->sent < self->len) {
        size_t owed = self->len - self->sent;
        n = (ssize_t) (owed < max ? owed : max);
        memcpy (buf, self->text + self->sent, (size_t) n);
        self->sent += (size_t) n;
    } else if (self->ended) {
        n = -1;
    } else {
        self->suspended = true;
        MHD_suspend_connection (self->connection);
        n = 0;
    }
    pthread_mutex_unlock (&self->mutex);
    return n;
}
