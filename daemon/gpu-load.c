/*
 * gpu-load.c - phos-restore's phos-gpu loaders (gpu-load.h).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpu-load.h"
#include "log.h"
#include "proc.h"
#include "proto.h"
#include "stage.h"
#include "util.h"

/* PHOS_GPU_BIN and gpu_helper(), without the rest of gpu.h */
#include "gpu.h"

#define MAX_LOADERS 64

struct loader {
	char tag[32];		/* gpumem-TAG.map: the pid in the namespace */
	pid_t pid;		/* the helper; -1 once reaped */
	int sk;			/* its fd 3: the buffers come on it */
	int ep;			/* its stderr */
	char said[512];		/* its last line on stderr */
};

struct gpu_loads {
	int n;
	struct loader l[MAX_LOADERS];
	char said[512];
};

/* a line of the helper's: copied to our stderr (nobody may read it), and
 * kept as its last */
static void pass_on(void *arg, const char *line, bool cut)
{
	struct loader *ld = arg;

	dprintf(2, "%s%s\n", line, cut ? " [...]" : "");
	snprintf(ld->said, sizeof(ld->said), "%s", line);
}

/* Copy what the helper wrote to stderr to ours (it may be /dev/null when
 * detached) and keep its last line. */
static void drain(struct loader *ld)
{
	phos_read_lines(ld->ep, pass_on, ld);
	phos_closep(&ld->ep);
}

/* Reap the helper: its wait status, or -1 if it was reaped already. */
static int reap(struct loader *ld)
{
	int st = -1;

	if (ld->pid <= 0)
		return -1;
	while (waitpid(ld->pid, &st, 0) < 0 && errno == EINTR)
		;
	ld->pid = -1;
	return st;
}

/* The offset of tag's buffers in the pool (pieces: "TAG OFFSET" lines),
 * or -1. */
static long long piece_of(const char *pieces, const char *tag)
{
	char t[32];
	long long off;
	int used;

	while (pieces && sscanf(pieces, "%31s %lld%n", t, &off, &used) == 2) {
		if (strcmp(t, tag) == 0)
			return off;
		pieces += used;
	}
	return -1;
}

static int spawn(struct loader *ld, int dirfd, bool concurrent, int stage_fd, long long off,
		 const struct stage_cuda *cuda, char *const *env, struct phos_err *e)
{
	int sk[2], ep[2];
	char stagearg[48], cudaarg[64];
	unsigned ncuda = off >= 0 && cuda && cuda->fd ? cuda->n : 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sk) < 0)
		return phos_errf(e, "socketpair: %s", strerror(errno));
	if (pipe2(ep, O_CLOEXEC) < 0) {
		close(sk[0]);
		close(sk[1]);
		return phos_errf(e, "pipe: %s", strerror(errno));
	}
	ld->pid = fork();
	if (ld->pid == 0) {
		char *args[10];
		int k = 0, high = 8 + STAGE_CUDA_MAX, moved[STAGE_CUDA_MAX];

		/* a driver-pinned pool's pieces go to 5...: out of the way first */
		for (unsigned i = 0; i < ncuda; i++)
			if ((moved[i] = fcntl(cuda->fd[i], F_DUPFD, high)) < 0)
				_exit(127);
		if (fchdir(dirfd) < 0 || dup2(sk[1], 3) < 0 || dup2(ep[1], 2) < 0 ||
		    (off >= 0 && dup2(stage_fd, 4) < 0))
			_exit(127);
		for (unsigned i = 0; i < ncuda; i++)
			if (dup2(moved[i], 5 + (int)i) < 0)
				_exit(127);
		args[k++] = "phos-gpu";
		args[k++] = "load";
		args[k++] = ld->tag;
		if (concurrent)
			args[k++] = "--concurrent";
		if (off >= 0) {
			snprintf(stagearg, sizeof(stagearg), "4:%lld", off);
			args[k++] = "--stage";
			args[k++] = stagearg;
		}
		if (ncuda) {
			stage_cuda_arg(cudaarg, sizeof(cudaarg), 5, cuda);
			args[k++] = "--stage-cuda";
			args[k++] = cudaarg;
		}
		args[k] = NULL;
		if (env)
			execve(gpu_helper(), args, env);
		else
			execv(gpu_helper(), args);
		fprintf(stderr, "phos-gpu: cannot run %s: %s\n", gpu_helper(), strerror(errno));
		_exit(127);
	}
	close(sk[1]);
	close(ep[1]);
	ld->sk = sk[0];
	ld->ep = ep[0];
	if (ld->pid < 0) {
		phos_closep(&ld->sk);
		phos_closep(&ld->ep);
		return phos_errf(e, "fork: %s", strerror(errno));
	}
	return 0;
}

int gpu_load_start(int dirfd, bool concurrent, int stage_fd, const struct stage_cuda *cuda,
		   const char *pieces, char *const *env, struct gpu_loads **out,
		   struct phos_err *e)
{
	struct gpu_loads *l = calloc(1, sizeof(*l));
	int dfd = dup(dirfd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *de;
	int rc = 0;

	*out = NULL;
	if (!l || !d) {
		rc = phos_errf(e, "cannot read the image directory: %s", strerror(errno));
		if (!d && dfd >= 0)
			close(dfd);
		goto out;
	}
	while (rc == 0 && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct loader *ld;

		if (strncmp(de->d_name, "gpumem-", 7) || len < 12 || len - 11 >= sizeof(ld->tag) ||
		    strcmp(de->d_name + len - 4, ".map"))
			continue;
		if (l->n == MAX_LOADERS) {
			rc = phos_errf(e, "the image has GPU buffers of more than %d processes",
				       MAX_LOADERS);
			break;
		}
		ld = &l->l[l->n];
		memcpy(ld->tag, de->d_name + 7, len - 11);
		ld->tag[len - 11] = '\0';
		ld->sk = ld->ep = -1;
		long long off = stage_fd >= 0 ? piece_of(pieces, ld->tag) : -1;

		if ((rc = spawn(ld, dirfd, concurrent, stage_fd, off, cuda, env, e)) == 0) {
			log_debug("phos-gpu %d loads the GPU buffers of pid %s%s%s", (int)ld->pid,
				  ld->tag, concurrent ? " (concurrent)" : "",
				  off >= 0 ? " from the staging pool" : "");
			l->n++;
		}
	}
out:
	if (d)
		closedir(d);
	if (rc < 0) {
		gpu_load_free(l);
		return -1;
	}
	*out = l;
	return 0;
}

/* The restored process of tag, by its pid in the namespace; -1: none. */
static pid_t find(const pid_t *tree, size_t n, const char *tag)
{
	for (size_t i = 0; i < n; i++) {
		struct proc_ids ids;

		if (proc_ids(tree[i], &ids) == 0 && ids.nspid == (pid_t)atoi(tag))
			return tree[i];
	}
	return -1;
}

/* Hand the helper's buffers (its first message) to pid through phosd. */
static int hand_over(struct loader *ld, pid_t pid, const char *socket, struct phos_err *e)
{
	struct phos_msg *m = phos_msg_recv(ld->sk, -1), *r = NULL;
	uint64_t err = EIO;
	const char *why = NULL;
	int fd = -1, rc = -1;

	phos_closep(&ld->sk);
	if (!m) {
		drain(ld);
		reap(ld);
		phos_errf(e, "loading the GPU buffers of pid %s failed: %s", ld->tag,
			  ld->said[0] ? ld->said : "phos-gpu died");
		goto out;
	}
	if (!socket) {
		phos_errf(e, "no phosd socket (--socket) to hand the GPU buffers of pid %s over",
			  ld->tag);
		goto out;
	}
	if (phos_msg_put_u64(m, PHOS_A_PID, (uint64_t)pid) < 0 ||
	    (fd = phos_unix_connect(socket)) < 0 || phos_msg_send(fd, m, m->fds, m->nfds) < 0 ||
	    !(r = phos_msg_recv(fd, 120000)) || phos_msg_get_u64(r, PHOS_A_ERRNO, &err) < 0 || err) {
		if (r)
			phos_msg_get_str(r, PHOS_A_MSG, &why);
		phos_errf(e, "phosd could not hand the GPU buffers to pid %d: %s", (int)pid,
			  why ? why : strerror(err ? (int)err : errno));
		goto out;
	}
	log_info("pid %d has its GPU buffers back", (int)pid);
	rc = 0;
out:
	phos_msg_free(m);
	phos_msg_free(r);
	if (fd >= 0)
		close(fd);
	return rc;
}

int gpu_load_finish(struct gpu_loads *l, pid_t root, const char *socket, struct phos_err *e)
{
	pid_t *tree = NULL;
	size_t n = 0;
	int rc = 0;

	if (!l || l->n == 0)
		return 0;
	if (proc_tree(root, &tree, &n) < 0)
		return phos_errf(e, "cannot list the restored processes: %s", strerror(errno));
	/* every process gets its buffers first (each may already run on its
	 * load table), then the loads are waited for */
	for (int i = 0; rc == 0 && i < l->n; i++) {
		pid_t pid = find(tree, n, l->l[i].tag);

		if (pid < 0)
			rc = phos_errf(e, "the image has GPU buffers of pid %s, which was not "
				       "restored", l->l[i].tag);
		else
			rc = hand_over(&l->l[i], pid, socket, e);
	}
	free(tree);
	for (int i = 0; rc == 0 && i < l->n; i++) {
		struct loader *ld = &l->l[i];
		int st;

		drain(ld);
		st = reap(ld);
		if (ld->said[0])
			snprintf(l->said, sizeof(l->said), "%s", ld->said);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			rc = phos_errf(e, "loading the GPU buffers of pid %s failed (%s): the "
				       "restored process is stopped; the image is unchanged",
				       ld->tag, ld->said[0] ? ld->said : "phos-gpu died");
	}
	return rc < 0 ? -1 : 0;
}

const char *gpu_load_said(const struct gpu_loads *l)
{
	return l ? l->said : "";
}

void gpu_load_free(struct gpu_loads *l)
{
	if (!l)
		return;
	for (int i = 0; i < l->n; i++) {
		struct loader *ld = &l->l[i];

		if (ld->pid > 0)
			kill(ld->pid, SIGKILL);
		reap(ld);
		phos_closep(&ld->sk);
		phos_closep(&ld->ep);
	}
	free(l);
}
