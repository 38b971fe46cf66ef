/*
 * server.c - one thread per client connection.
 *
 * A connection carries requests one after another; each request gets zero
 * or more PROGRESS messages and exactly one REPLY.  The peer's identity is
 * SO_PEERCRED, taken once at accept time.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handlers.h"
#include "log.h"
#include "phosd.h"
#include "server.h"
#include "util.h"

#define CLIENT_IDLE_MS (60 * 1000)
#define MAX_CLIENTS 128

int client_send(struct client *c, struct phos_msg *m)
{
	int rc;

	if (!m) {
		log_err("client pid %d: cannot build a reply: %m", (int)c->pid);
		return -1;
	}
	rc = phos_msg_send(c->fd, m, NULL, 0);
	if (rc < 0)
		log_debug("client pid %d: send %s: %m", (int)c->pid, phos_msg_type_name(m->type));
	phos_msg_free(m);
	return rc;
}

int client_reply(struct client *c, uint32_t seq, int err, const char *fmt, ...)
{
	struct phos_msg *m;
	char buf[1024];
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		m = phos_reply_new(seq, err, "%s", buf);
	} else {
		m = phos_reply_new(seq, err, NULL);
	}
	return client_send(c, m);
}

void client_progress(struct client *c, uint32_t seq, uint64_t done, uint64_t total,
		     const char *fmt, ...)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_PROGRESS, seq);
	char buf[512];
	va_list ap;

	if (!m)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (phos_msg_put_u64(m, PHOS_A_DONE, done) < 0 ||
	    phos_msg_put_u64(m, PHOS_A_TOTAL, total) < 0 ||
	    phos_msg_put_str(m, PHOS_A_TEXT, buf) < 0) {
		phos_msg_free(m);
		return;
	}
	client_send(c, m);
}

static int peer_identify(struct client *c)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -1;
	c->pid = cr.pid;
	c->uid = cr.uid;
	c->gid = cr.gid;
	pthread_mutex_lock(&phosd->lock);
	c->privileged = cr.uid == 0 || cr.uid == phosd->slurm_uid;
	pthread_mutex_unlock(&phosd->lock);
	return 0;
}

static void *client_main(void *arg)
{
	struct client c = { .fd = (int)(intptr_t)arg };

	if (peer_identify(&c) < 0) {
		log_warn("cannot identify a client (SO_PEERCRED): %m");
		goto out;
	}
	log_debug("client pid %d uid %u connected", (int)c.pid, (unsigned)c.uid);
	while (!phosd->stopping) {
		struct phos_msg *req = phos_msg_recv(c.fd, CLIENT_IDLE_MS);

		if (!req) {
			if (errno == ECONNRESET || errno == ETIMEDOUT)
				break;
			/* A malformed message: say why, then hang up (framing is lost). */
			log_warn("client pid %d uid %u: bad message: %m", (int)c.pid, (unsigned)c.uid);
			client_reply(&c, 0, errno, "bad message: %s", strerror(errno));
			break;
		}
		log_debug("client pid %d uid %u: %s", (int)c.pid, (unsigned)c.uid,
			  phos_msg_type_name(req->type));
		handle_request(&c, req);
		phos_msg_free(req);
	}
out:
	phos_closep(&c.fd);
	pthread_mutex_lock(&phosd->lock);
	phosd->nclients--;
	pthread_mutex_unlock(&phosd->lock);
	return NULL;
}

int server_spawn(int fd)
{
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	pthread_mutex_lock(&phosd->lock);
	if (phosd->nclients >= MAX_CLIENTS) {
		pthread_mutex_unlock(&phosd->lock);
		close(fd);
		errno = EMFILE;
		return -1;
	}
	phosd->nclients++;
	pthread_mutex_unlock(&phosd->lock);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, client_main, (void *)(intptr_t)fd);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		pthread_mutex_lock(&phosd->lock);
		phosd->nclients--;
		pthread_mutex_unlock(&phosd->lock);
		close(fd);
		errno = rc;
		return -1;
	}
	return 0;
}
