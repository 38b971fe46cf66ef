/*
 * t-fake-phosd.c - a scripted phosd for t-spank-stepd.sh.
 *
 *   t-fake-phosd SOCKET DIR NODE
 *
 * Listens on SOCKET and answers each request after reading DIR/mode:
 *   ok          (default) ERRNO 0
 *   enoent      RESTORE_PREPARE: ENOENT "job J has no checkpoint of task T";
 *               others as ok
 *   image:PATH  RESTORE_PREPARE: ERRNO 0, PATH, GEN 5; others as ok
 *   refuse      REGISTER: ENOSPC "the image store is full"; others as ok
 * and appends one line per request to DIR/log:
 *   NODE TYPE peer_uid=U pid=P job=J step=S task=T uid=U gid=G ms=M
 * (an absent attribute reads "-").  Runs until killed.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "util.h"

static void attr(char *buf, size_t size, struct phos_msg *m, const char *name, uint16_t tag)
{
	size_t n = strlen(buf);
	uint64_t v;

	if (phos_msg_get_u64(m, tag, &v) == 0)
		snprintf(buf + n, size - n, " %s=%" PRIu64, name, v);
	else
		snprintf(buf + n, size - n, " %s=-", name);
}

static struct phos_msg *answer(struct phos_msg *m, const char *mode)
{
	struct phos_msg *r;
	uint64_t job = 0, task = 0;

	phos_msg_get_u64(m, PHOS_A_JOB, &job);
	phos_msg_get_u64(m, PHOS_A_TASK, &task);
	if (m->type == PHOS_MSG_RESTORE_PREPARE && strcmp(mode, "enoent") == 0)
		return phos_reply_new(m->seq, ENOENT, "job %" PRIu64 " has no checkpoint of task %" PRIu64,
				      job, task);
	if (m->type == PHOS_MSG_REGISTER && strcmp(mode, "refuse") == 0)
		return phos_reply_new(m->seq, ENOSPC, "the image store is full");
	r = phos_reply_new(m->seq, 0, NULL);
	if (r && m->type == PHOS_MSG_RESTORE_PREPARE && strncmp(mode, "image:", 6) == 0 &&
	    (phos_msg_put_str(r, PHOS_A_PATH, mode + 6) < 0 || phos_msg_put_u64(r, PHOS_A_GEN, 5) < 0)) {
		phos_msg_free(r);
		return NULL;
	}
	return r;
}

static void read_mode(const char *dir, char *mode, size_t size)
{
	char path[4096];
	FILE *f;

	snprintf(mode, size, "ok");
	snprintf(path, sizeof(path), "%s/mode", dir);
	if (!(f = fopen(path, "r")))
		return;
	if (fgets(mode, (int)size, f))
		mode[strcspn(mode, "\n")] = '\0';
	fclose(f);
}

int main(int argc, char **argv)
{
	char path[4096];
	FILE *log;
	int l;

	if (argc != 4) {
		fprintf(stderr, "usage: t-fake-phosd SOCKET DIR NODE\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	snprintf(path, sizeof(path), "%s/log", argv[2]);
	if ((l = phos_unix_listen(argv[1], 0666)) < 0 || !(log = fopen(path, "a"))) {
		perror("t-fake-phosd");
		return 1;
	}
	setvbuf(log, NULL, _IOLBF, 0);
	for (;;) {
		char line[512], mode[4096];
		struct ucred cr = { 0 };
		socklen_t cl = sizeof(cr);
		struct phos_msg *m, *r;
		int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0)
			continue;
		getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &cl);
		if ((m = phos_msg_recv(c, 10000))) {
			snprintf(line, sizeof(line), "%s %s peer_uid=%d", argv[3],
				 phos_msg_type_name(m->type), (int)cr.uid);
			attr(line, sizeof(line), m, "pid", PHOS_A_PID);
			attr(line, sizeof(line), m, "job", PHOS_A_JOB);
			attr(line, sizeof(line), m, "step", PHOS_A_STEP);
			attr(line, sizeof(line), m, "task", PHOS_A_TASK);
			attr(line, sizeof(line), m, "uid", PHOS_A_UID);
			attr(line, sizeof(line), m, "gid", PHOS_A_GID);
			attr(line, sizeof(line), m, "ms", PHOS_A_MS);
			fprintf(log, "%s\n", line);
			read_mode(argv[2], mode, sizeof(mode));
			if ((r = answer(m, mode)))
				phos_msg_send(c, r, NULL, 0);
			phos_msg_free(r);
			phos_msg_free(m);
		}
		close(c);
	}
}
