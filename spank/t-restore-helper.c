/*
 * t-restore-helper.c - a stand-in for phos-restore in test_spank.c.
 *
 * Restorer mode (--image DIR ... --control-fd N ...): writes its argv, one
 * per line, to $T_HELPER_OUT (else DIR/restorer.TASK.out, for runs under
 * slurmstepd, whose environment we do not control), then "uid:" and its
 * uid, "fds:" and the fds it holds besides 0-2
 * (there must be only the control fd), then receives the stdio message on
 * the control fd, checks it (type RESTORE, FDMAP "0,1,2", 3 fds), writes
 * "restored stdout" to the received fd 1 and "restored stderr" to fd 2,
 * and exits 7.  Waiter mode (--wait-fd N): waits for its child, exits
 * with its status.  Any deviation: a message on stderr and exit 99.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"

static int die(const char *what)
{
	fprintf(stderr, "t-restore-helper: %s: %s\n", what, strerror(errno));
	exit(99);
}

static const char *arg(int argc, char **argv, const char *name)
{
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return NULL;
}

static int restorer(int argc, char **argv, int cfd)
{
	const char *out = getenv("T_HELPER_OUT"), *map, *image = arg(argc, argv, "--image"),
		   *task = arg(argc, argv, "--task");
	char path[4096];
	struct phos_msg *m;
	struct dirent *d;
	FILE *f;
	DIR *dir;

	if (!out && image && task && getenv("T_HELPER_NO_OUT") == NULL) {
		snprintf(path, sizeof(path), "%s/restorer.%s.out", image, task);
		out = path;
	}
	if (!out) {
		errno = EDESTADDRREQ;
		return die("no output file (T_HELPER_OUT)");
	}
	if (!(f = fopen(out, "w")))
		return die(out);
	for (int i = 0; i < argc; i++)
		fprintf(f, "%s\n", argv[i]);
	if (!getenv("T_HELPER_OUT"))
		fprintf(f, "uid: %d\n", (int)getuid());
	fprintf(f, "fds:");
	if (!(dir = opendir("/proc/self/fd")))
		return die("/proc/self/fd");
	while ((d = readdir(dir))) {
		int fd = atoi(d->d_name);

		if (d->d_name[0] != '.' && fd > 2 && fd != dirfd(dir) && fd != fileno(f))
			fprintf(f, " %d", fd);
	}
	closedir(dir);
	fprintf(f, "\n");
	fclose(f);

	if (!(m = phos_msg_recv(cfd, 30000)))
		return die("recv");
	if (m->type != PHOS_MSG_RESTORE || m->nfds != 3 ||
	    phos_msg_get_str(m, PHOS_A_FDMAP, &map) < 0 || strcmp(map, "0,1,2") != 0) {
		errno = EBADMSG;
		return die("stdio message");
	}
	dprintf(m->fds[1], "restored stdout\n");
	dprintf(m->fds[2], "restored stderr\n");
	phos_msg_free(m);
	return 7;
}

int main(int argc, char **argv)
{
	int st;

	if (argc == 3 && strcmp(argv[1], "--wait-fd") == 0) {
		if (wait(&st) < 0)
			return die("wait");
		return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	if (arg(argc, argv, "--control-fd"))
		return restorer(argc, argv, atoi(arg(argc, argv, "--control-fd")));
	errno = EINVAL;
	return die("usage");
}
