/*
 * restore.c - starting phos-restore inside a Slurm task (see restore.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "proto.h"
#include "restore.h"
#include "util.h"

int phos_restart_count_parse(const char *s, uint32_t *n)
{
	uint64_t v = 0;

	if (!s || !*s) {
		errno = EINVAL;
		return -1;
	}
	for (; *s; s++) {
		if (*s < '0' || *s > '9') {
			errno = EINVAL;
			return -1;
		}
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX) {
			errno = ERANGE;
			return -1;
		}
	}
	*n = (uint32_t)v;
	return 0;
}

/* Close every fd >= from except keep. */
static void close_from(int from, int keep)
{
	if (keep > from && close_range((unsigned)from, (unsigned)keep - 1, 0) < 0)
		for (int fd = from; fd < keep; fd++)
			close(fd);
	from = keep >= from ? keep + 1 : from;
	if (close_range((unsigned)from, ~0u, 0) < 0) {
		long max = sysconf(_SC_OPEN_MAX);

		for (int fd = from; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
			close(fd);
	}
}

/*
 * In the forked child: only async-signal-safe calls (the task is a fork of
 * the multi-threaded slurmstepd).  Reports the exec's errno on ep.
 */
static void __attribute__((noreturn)) exec_restorer(char *const argv[], int ctl, int ep)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;
	int err;

	/* ep out of the way of fd 3, then ctl to 3 (dup2 clears CLOEXEC). */
	if ((ep = fcntl(ep, F_DUPFD_CLOEXEC, PHOS_RESTORE_CONTROL_FD + 1)) < 0)
		_exit(127);
	if (ctl == PHOS_RESTORE_CONTROL_FD) {
		if (fcntl(ctl, F_SETFD, 0) < 0)
			goto fail;
	} else if (dup2(ctl, PHOS_RESTORE_CONTROL_FD) < 0) {
		goto fail;
	}
	close_from(PHOS_RESTORE_CONTROL_FD + 1, ep);

	for (int s = 1; s < NSIG; s++)
		sigaction(s, &sa, NULL);	/* SIGKILL, SIGSTOP, 32, 33 fail: fine */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* The task is our parent: if it is killed (Slurm's SIGKILL), so are we. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		goto fail;
	if (getppid() == 1) {
		errno = ESRCH;
		goto fail;
	}

	execv(argv[0], argv);
fail:
	err = errno;
	(void)!write(ep, &err, sizeof(err));
	_exit(127);
}

int phos_restore_spawn(const struct phos_restore_args *a, pid_t *pid, struct phos_err *e)
{
	char cfd[16], job[16], step[16], task[16], uid[16], gid[16];
	char *const argv[] = {
		(char *)a->helper, "--image", (char *)a->image,
		"--control-fd", cfd, "--socket", (char *)a->socket,
		"--job", job, "--step", step, "--task", task,
		"--uid", uid, "--gid", gid,
		a->config && *a->config ? "--config" : NULL, (char *)a->config, NULL,
	};
	int sv[2] = { -1, -1 }, ep[2] = { -1, -1 }, ctl = -1, err = 0, st;
	ssize_t n;
	pid_t p;

	snprintf(cfd, sizeof(cfd), "%d", PHOS_RESTORE_CONTROL_FD);
	snprintf(job, sizeof(job), "%" PRIu32, a->job);
	snprintf(step, sizeof(step), "%" PRIu32, a->step);
	snprintf(task, sizeof(task), "%" PRIu32, a->task);
	snprintf(uid, sizeof(uid), "%" PRIu32, a->uid);
	snprintf(gid, sizeof(gid), "%" PRIu32, a->gid);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
	    pipe2(ep, O_CLOEXEC) < 0) {
		phos_errf(e, "cannot create the restore control socket: %s", strerror(errno));
		goto fail;
	}
	/* Keep our end clear of 0-2, which Slurm overwrites with the task's stdio. */
	if ((ctl = fcntl(sv[0], F_DUPFD_CLOEXEC, 3)) < 0) {
		phos_errf(e, "cannot duplicate the restore control socket: %s", strerror(errno));
		goto fail;
	}
	phos_closep(&sv[0]);
	if ((p = fork()) < 0) {
		phos_errf(e, "cannot fork the restore helper: %s", strerror(errno));
		goto fail;
	}
	if (p == 0)
		exec_restorer(argv, sv[1], ep[1]);

	phos_closep(&sv[1]);
	phos_closep(&ep[1]);
	while ((n = read(ep[0], &err, sizeof(err))) < 0 && errno == EINTR)
		;
	phos_closep(&ep[0]);
	if (n != 0) {
		if (n != (ssize_t)sizeof(err))
			err = n < 0 ? errno : EIO;
		while (waitpid(p, &st, 0) < 0 && errno == EINTR)
			;
		errno = err;
		phos_errf(e, "cannot run the restore helper %s: %s", a->helper, strerror(err));
		goto fail;
	}
	*pid = p;
	return ctl;
fail:
	phos_closep(&sv[0]);
	phos_closep(&sv[1]);
	phos_closep(&ep[0]);
	phos_closep(&ep[1]);
	phos_closep(&ctl);
	return -1;
}

int phos_restore_handover(int ctl, struct phos_err *e)
{
	int fds[3] = { 0, 1, 2 }, devnull[3] = { -1, -1, -1 }, rc = -1;
	struct phos_msg *m;

	/* A closed stdio fd cannot travel: stand /dev/null in for it. */
	for (int i = 0; i < 3; i++)
		if (fcntl(i, F_GETFD) < 0 &&
		    (fds[i] = devnull[i] = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
			phos_errf(e, "cannot open /dev/null: %s", strerror(errno));
			goto out;
		}
	if (!(m = phos_msg_new(PHOS_MSG_RESTORE, 1)) ||
	    phos_msg_put_str(m, PHOS_A_FDMAP, "0,1,2") < 0) {
		phos_errf(e, "cannot build the stdio handover: %s", strerror(errno));
		phos_msg_free(m);
		goto out;
	}
	rc = phos_msg_send(ctl, m, fds, 3);
	if (rc < 0)
		phos_errf(e, "cannot hand the task's stdio to the restore helper: %s%s",
			  strerror(errno), errno == EPIPE || errno == ECONNRESET ?
			  " (the helper has exited)" : "");
	phos_msg_free(m);
out:
	for (int i = 0; i < 3; i++)
		phos_closep(&devnull[i]);
	return rc;
}

int phos_restore_exec_wait(const char *helper, int ctl, struct phos_err *e)
{
	char fd[16];
	char *const argv[] = { (char *)helper, "--wait-fd", fd, NULL };

	snprintf(fd, sizeof(fd), "%d", ctl);
	if (fcntl(ctl, F_SETFD, 0) < 0)
		return phos_errf(e, "cannot pass the restore control socket on: %s", strerror(errno));
	execv(helper, argv);
	return phos_errf(e, "cannot run %s --wait-fd: %s", helper, strerror(errno));
}
