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
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
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

/* Authenticate a remote request; returns the inner request or NULL
 * (after replying). */
static struct phos_msg *remote_request(struct client *c, struct phos_msg *req)
{
	struct phos_err e = { "" };
	char sock[108];
	struct phos_msg *inner;
	uid_t uid;
	gid_t gid;

	pthread_mutex_lock(&phosd->lock);
	phos_strlcpy(sock, phosd->cfg.munge_socket, sizeof(sock));
	pthread_mutex_unlock(&phosd->lock);
	inner = phos_auth_unwrap(req, sock[0] ? sock : NULL, &uid, &gid, &e);
	if (!inner) {
		log_warn("remote request from %s refused: %s", c->peer, e.msg);
		client_reply(c, req->seq, errno, "%s", e.msg);
		return NULL;
	}
	c->uid = uid;
	c->gid = gid;
	c->pid = 0;
	pthread_mutex_lock(&phosd->lock);
	c->privileged = uid == 0 || uid == phosd->slurm_uid;
	pthread_mutex_unlock(&phosd->lock);
	log_debug("remote client %s uid %u: %s", c->peer, (unsigned)uid,
		  phos_msg_type_name(inner->type));
	return inner;
}

struct spawn_arg {
	int fd;
	bool remote;
};

static void *client_main(void *arg)
{
	struct spawn_arg *sa = arg;
	struct client c = { .fd = sa->fd, .remote = sa->remote };

	free(sa);
	if (c.remote) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char host[48] = "?", port[16] = "?";

		if (getpeername(c.fd, (struct sockaddr *)&ss, &sl) == 0)
			getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port,
				    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(c.peer, sizeof(c.peer), "%s:%s", host, port);
		c.uid = (uid_t)-1;
		log_debug("remote client %s connected", c.peer);
	} else if (peer_identify(&c) < 0) {
		log_warn("cannot identify a client (SO_PEERCRED): %m");
		goto out;
	} else {
		log_debug("client pid %d uid %u connected", (int)c.pid, (unsigned)c.uid);
	}
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
		if (c.remote) {
			struct phos_msg *inner = remote_request(&c, req);

			phos_msg_free(req);
			if (!inner)
				break;
			req = inner;
		} else {
			log_debug("client pid %d uid %u: %s", (int)c.pid, (unsigned)c.uid,
				  phos_msg_type_name(req->type));
		}
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

int server_spawn(int fd, bool remote)
{
	struct spawn_arg *sa = malloc(sizeof(*sa));
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (!sa) {
		close(fd);
		return -1;
	}
	sa->fd = fd;
	sa->remote = remote;
	pthread_mutex_lock(&phosd->lock);
	if (phosd->nclients >= MAX_CLIENTS) {
		pthread_mutex_unlock(&phosd->lock);
		free(sa);
		close(fd);
		errno = EMFILE;
		return -1;
	}
	phosd->nclients++;
	pthread_mutex_unlock(&phosd->lock);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, client_main, sa);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		pthread_mutex_lock(&phosd->lock);
		phosd->nclients--;
		pthread_mutex_unlock(&phosd->lock);
		free(sa);
		close(fd);
		errno = rc;
		return -1;
	}
	return 0;
}
