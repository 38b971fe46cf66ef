/*
 * server.h - client connections: authentication, dispatch, replies.
 */
#ifndef PHOSD_SERVER_H
#define PHOSD_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "proto.h"

struct client {
	int fd;
	pid_t pid;		/* SO_PEERCRED */
	uid_t uid;
	gid_t gid;
	bool privileged;	/* root or slurm_user */
	bool remote;		/* TCP: each request carries a munge credential */
	char peer[64];		/* remote address, for logs */
};

/* Serve one accepted connection on a detached thread; takes ownership of
 * fd.  -1 + errno if the thread cannot be started (fd is closed). */
int server_spawn(int fd, bool remote);

/* Send a REPLY to c; logs and returns -1 on a send error. */
int client_reply(struct client *c, uint32_t seq, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Send a ready-made message (consumed). */
int client_send(struct client *c, struct phos_msg *m);
/* Send a PROGRESS message; errors are ignored (the operation goes on). */
void client_progress(struct client *c, uint32_t seq, uint64_t done, uint64_t total,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
