/*
 * restore.c - phosd's side of `phosctl restore`: run phos-restore.
 *
 *   fork -> setsid, fork -> exec phos-restore --image P [--verify] --report-fd N
 *   (the middle child exits at once, so phosd never reaps the tree)
 *   read "PID NSPID" from the report pipe, or EOF = failed
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "phosd.h"
#include "restore.h"
#include "util.h"

static void child(const char *path, uid_t uid, gid_t gid, const int stdio[3], bool netns,
		  bool verify, int rep) __attribute__((noreturn));
static void child(const char *path, uid_t uid, gid_t gid, const int stdio[3], bool netns,
		  bool verify, int rep)
{
	const char *more[3] = { NULL, NULL, NULL };	/* the optional flags */
	char repfd[16], suid[16], sgid[16];
	sigset_t none;
	int k = 0;
	int null = open("/dev/null", O_RDWR);

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (setsid() < 0 || fork() != 0)
		_exit(0);
	for (int i = 0; i < 3; i++)
		if (dup2(stdio[i] >= 0 ? stdio[i] : null, i) < 0)
			_exit(126);
	int r = fcntl(rep, F_DUPFD, 3);
	if (r < 0)
		_exit(126);
	snprintf(repfd, sizeof(repfd), "%d", r);
	snprintf(suid, sizeof(suid), "%u", (unsigned)uid);
	snprintf(sgid, sizeof(sgid), "%u", (unsigned)gid);
	if (netns)
		more[k++] = "--new-netns";
	if (verify)
		more[k++] = "--verify";
	/* the image root and key phosd runs with, whatever phos.yaml says
	 * by now (the check beside CRIU needs both) */
	execl(phosd->restore_helper, "phos-restore", "--image", path, "--report-fd", repfd,
	      "--uid", suid, "--gid", sgid, "--criu", phosd->cfg.criu_path,
	      "--config", phosd->config_path, "--socket", phosd->cfg.socket,
	      "--checkpoint-dir", phosd->store.root, "--key-file", phosd->cfg.key_file,
	      more[0], more[1], (char *)NULL);
	dprintf(2, "phos: cannot run %s: %s\n", phosd->restore_helper, strerror(errno));
	_exit(127);
}

/* Read up to a newline (the report), EOF or timeout. */
static ssize_t read_line(int fd, char *buf, size_t size, int timeout_ms)
{
	size_t n = 0;
	uint64_t end = phos_now_ms() + (uint64_t)timeout_ms;

	while (n + 1 < size) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = phos_now_ms();
		ssize_t r;

		if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
			break;
		r = read(fd, buf + n, size - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (memchr(buf, '\n', n))
			break;
	}
	buf[n] = '\0';
	return (ssize_t)n;
}

int restore_spawn(const char *path, uid_t uid, gid_t gid, const int stdio[3], bool new_netns,
		  bool verify, pid_t *pid, struct phos_err *e)
{
	int pp[2], st;
	char buf[1100];
	ssize_t n;
	pid_t c;
	int rpid = 0, nspid = 0;

	if (pipe2(pp, O_CLOEXEC) < 0)
		return phos_errf(e, "pipe: %s", strerror(errno));
	c = fork();
	if (c < 0) {
		close(pp[0]);
		close(pp[1]);
		return phos_errf(e, "fork: %s", strerror(errno));
	}
	if (c == 0)
		child(path, uid, gid, stdio, new_netns, verify, pp[1]);
	close(pp[1]);
	while (waitpid(c, &st, 0) < 0 && errno == EINTR)
		;
	n = read_line(pp[0], buf, sizeof(buf), phosd->cfg.checkpoint_timeout * 1000);
	close(pp[0]);
	if (n <= 0)
		return phos_errnof(e, EIO, "restore of %s failed (phos-restore printed why on your "
				   "terminal; CRIU's log is in %s/restore.*)", path,
				   phosd->cfg.state_dir);
	buf[n] = '\0';
	if (strncmp(buf, "error ", 6) == 0) {	/* phos-restore says why it failed */
		buf[strcspn(buf, "\n")] = '\0';
		return phos_errnof(e, EIO, "%s", buf + 6);
	}
	int end = 0;

	if (sscanf(buf, "%d %d%n", &rpid, &nspid, &end) < 1 || rpid <= 0)
		return phos_errnof(e, EIO, "restore of %s: phos-restore reported '%s'", path, buf);
	*pid = rpid;
	/* after the pids, how the memory came back (lazy pages, phos-gpu) */
	char *how = buf + (end ? end : n);

	how += strspn(how, " ");
	how[strcspn(how, "\n")] = '\0';
	log_notice("restored %s as pid %d%s%s", path, rpid, how[0] ? "; " : "", how);
	return 0;
}

/* Remove dir's work directories named prefix* (root's, not links) older
 * than the cut; the number removed. */
static int prune_dir(const char *dir, const char *prefix, time_t cut)
{
	struct dirent *de;
	struct stat st;
	int n = 0;
	DIR *d = opendir(dir);

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0 ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode) || st.st_uid != 0 || st.st_mtime > cut)
			continue;
		if (phos_rm_tree_at(dirfd(d), de->d_name) < 0)
			log_warn("cannot remove %s/%s: %m", dir, de->d_name);
		else
			n++;
	}
	closedir(d);
	if (n)
		log_info("removed %d restore log director%s older than %d days from %s", n,
			 n == 1 ? "y" : "ies", PHOS_RESTORE_LOG_DAYS, dir);
	return n;
}

int restore_prune_logs(const char *state_dir)
{
	time_t cut = time(NULL) - (time_t)PHOS_RESTORE_LOG_DAYS * 86400;

	/* /tmp: where phos-restore falls back to, and where versions before
	 * 2026-12 left one directory per restore */
	return prune_dir(state_dir, "restore.", cut) + prune_dir("/tmp", "phos-restore.", cut);
}
