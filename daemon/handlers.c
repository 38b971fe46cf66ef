/*
 * handlers.c - request dispatch and the simple requests.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "log.h"
#include "phosd.h"
#include "util.h"

/* A growing text buffer for human-readable replies. */
struct text {
	char *buf;
	size_t len, cap;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = t->cap - t->len;

		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 1024;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *nb = realloc(t->buf, cap);
		if (!nb)
			return;
		t->buf = nb;
		t->cap = cap;
	}
}

static void reply_text(struct client *c, uint32_t seq, struct text *t)
{
	struct phos_msg *m = phos_reply_new(seq, 0, NULL);

	if (m && phos_msg_put_str(m, PHOS_A_TEXT, t->buf ? t->buf : "") < 0) {
		phos_msg_free(m);
		m = phos_reply_new(seq, errno, "reply too large: %s", strerror(errno));
	}
	client_send(c, m);
	free(t->buf);
}

static void handle_status(struct client *c, struct phos_msg *req)
{
	struct text t = { 0 };
	struct phos_config cfg;
	uint64_t up;

	pthread_mutex_lock(&phosd->lock);
	cfg = phosd->cfg;
	pthread_mutex_unlock(&phosd->lock);
	up = (phos_now_ms() - phosd->start_ms) / 1000;

	text_add(&t, "phosd %s on %s, up %llus, pid %d\n", PACKAGE_VERSION, phosd->host,
		 (unsigned long long)up, (int)getpid());
	text_add(&t, "config:          %s\n", phosd->config_path);
	text_add(&t, "socket:          %s\n", cfg.socket);
	text_add(&t, "checkpoint_dir:  %s\n", cfg.checkpoint_dir);
	text_add(&t, "keep:            %d generations\n", cfg.keep_generations);
	text_add(&t, "you:             uid %u%s\n", (unsigned)c->uid,
		 c->privileged ? " (privileged: all jobs)" : " (your own jobs only)");
	reply_text(c, req->seq, &t);
}

void handle_request(struct client *c, struct phos_msg *req)
{
	switch (req->type) {
	case PHOS_MSG_STATUS:
		handle_status(c, req);
		return;
	default:
		client_reply(c, req->seq, EOPNOTSUPP, "request type %u (%s) is not supported by phosd %s",
			     req->type, phos_msg_type_name(req->type), PACKAGE_VERSION);
		return;
	}
}
