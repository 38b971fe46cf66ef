/*
 * phos-restore.c - restore a verified image as a child of the caller.
 *
 * Restorer mode (root; exec'ed by phosd for `phosctl restore`, or forked
 * and exec'ed by the SPANK plugin inside a Slurm task):
 *
 *   phos-restore --image DIR [--verify [--checkpoint-dir D --key-file K]]
 *                [--control-fd N] [--socket S --job J --step S --task T]
 *                [--uid U --gid G] [--report-fd N]
 *
 *   1. stdio: fds received on the control fd (the task's 0,1,2, sent once
 *      Slurm has set them up), else our own 0,1,2;
 *   2. join the cgroup of our parent (the Slurm task, already placed by
 *      slurmstepd) so the restored tree is accounted to the new step;
 *   3. unshare a pid and a mount namespace and fork its init; init mounts
 *      a fresh /proc and runs CRIU with rst_sibling, so the restored tree
 *      is init's child, keeps its original pids and cannot clash with the
 *      pids of this node; with --verify (phosd checked the manifest only),
 *      a checker process hashes the image meanwhile, and CRIU's tasks
 *      resume only once it passed (check_gate());
 *   4. init tells libphos in the processes that were waiting for their
 *      checkpoint that they were restored, drops privileges, reaps, and
 *      reports the root's wait status;
 *   5. we tell phosd (RESTORE_DONE), drop privileges, forward signals to
 *      the restored root and exit the way it exited.
 *
 * Waiter mode (the Slurm task itself, as the user, after exec):
 *
 *   phos-restore --wait-fd N
 *
 *   waits for its child (the restorer above), forwards signals to it, and
 *   exits the way it exited.
 *
 * Exit status: the restored root's; 1 (with a message on stderr) if the
 * restore failed.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "criu.h"
#include "cuda.h"
#include "gpu.h"
#include "gpu-load.h"
#include "image.h"
#include "log.h"
#include "manifest.h"
#include "prefetch.h"
#include "proc.h"
#include "proto.h"
#include "stage.h"
#include "util.h"

struct opts {
	const char *image;
	const char *criu;		/* criu binary (--criu, else phos.yaml's) */
	const char *socket;
	int control_fd;
	int report_fd;
	int wait_fd;
	uint64_t job, step, task;
	bool have_ids;
	uid_t uid;
	gid_t gid;
	bool have_uid;
	bool new_netns;		/* the original still runs here: own network namespace */
	bool gpu_concurrent;	/* phos.yaml gpu_concurrent_restore */
	const char *state_dir;	/* phos.yaml state_dir: CRIU's work directory goes there */
	bool lazy_pages;	/* PHOS_CRIU_LAZY_PAGES=1: an experiment (doc/concurrent-restore.md) */
	bool verify;		/* --verify: the full image check runs beside CRIU */
	const char *checkpoint_dir, *key_file;	/* for that check: phosd's, else phos.yaml's */
};

static volatile pid_t forward_to = -1;

static void forward(int sig)
{
	if (forward_to > 0)
		kill(forward_to, sig);
}

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT,
				 SIGALRM, SIGTSTP };

static void forward_signals(void)
{
	struct sigaction sa = { .sa_handler = forward, .sa_flags = SA_RESTART };

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
		sigaction(forwarded[i], &sa, NULL);
}

/* Exit the way a child with wait status st ended. */
static void exit_like(int st) __attribute__((noreturn));
static void exit_like(int st)
{
	if (WIFSIGNALED(st)) {
		int sig = WTERMSIG(st);

		signal(sig, SIG_DFL);
		prctl(PR_SET_DUMPABLE, 0);	/* no core for a re-raised signal */
		raise(sig);
		_exit(128 + sig);
	}
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
}

static int wait_mode(int fd)
{
	int st = 0;
	pid_t p;

	forward_to = -1;
	/* Our only child is the restorer; signals go to it. */
	forward_signals();
	while ((p = waitpid(-1, &st, 0)) < 0 && errno == EINTR)
		;
	if (fd >= 0)
		close(fd);
	if (p < 0) {
		fprintf(stderr, "phos: restore helper vanished: %s\n", strerror(errno));
		return 1;
	}
	exit_like(st);
}

static int drop_privileges(uid_t uid, gid_t gid)
{
	if (setgroups(0, NULL) < 0 || setregid(gid, gid) < 0 || setreuid(uid, uid) < 0)
		return -1;
	return 0;
}

/* Receive the task's stdio on the control fd: a message with 3 fds. */
static int recv_stdio(int cfd, int fds[3])
{
	struct phos_msg *m = phos_msg_recv(cfd, 10 * 60 * 1000);

	if (!m)
		return -1;
	if (m->nfds != 3) {
		phos_msg_free(m);
		errno = EBADMSG;
		return -1;
	}
	for (int i = 0; i < 3; i++) {
		fds[i] = m->fds[i];
		m->fds[i] = -1;
	}
	phos_msg_free(m);
	return 0;
}

/* Move ourselves into our parent's cgroup (v2).  Best effort. */
static void join_parent_cgroup(void)
{
	char path[128], line[4096], procs[4200];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)getppid());
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "0::", 3) != 0)
			continue;
		if (phos_snprintf(procs, sizeof(procs), "/sys/fs/cgroup%s/cgroup.procs", line + 3) < 0)
			break;
		fd = open(procs, O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (dprintf(fd, "%d\n", (int)getpid()) < 0)
				log_debug("cannot join cgroup %s: %m", line + 3);
			close(fd);
		}
		break;
	}
	fclose(f);
}

static int load_manifest(int dirfd, struct phos_manifest *m, struct phos_err *e)
{
	int fd = openat(dirfd, PHOS_MANIFEST_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	char *buf;
	ssize_t n;
	int rc;

	if (fd < 0 || fstat(fd, &st) < 0)
		return phos_errf(e, "cannot read the manifest: %s", strerror(errno));
	if (st.st_size > PHOS_MANIFEST_MAX) {
		close(fd);
		return phos_errnof(e, EFBIG, "manifest too large");
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -1;
	}
	n = phos_read_full(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return phos_errf(e, "short read of the manifest");
	}
	phos_manifest_init(m);
	rc = phos_manifest_parse(m, PHOS_MANIFEST_NAME, buf, (size_t)n, e);
	free(buf);
	return rc;
}

/* The inherit-fd key phosd recorded for a stdio fd (see checkpoint.c):
 * "pipe:[N]", "socket:[N]", "file[MNT:INO]" or a path without its leading
 * '/'. */
static const char *inherit_key(const char *key)
{
	if (!key || !*key || key[0] == '/')
		return NULL;
	return key;
}

/* Status pipe messages from init to the restorer. */
struct init_report {
	int ok;			/* 1 restored, 0 failed */
	pid_t nspid;		/* root pid inside the namespace */
	int status;		/* root's wait status (second report) */
	uint64_t check_ms;	/* --verify: what the image check took */
	uint64_t check_wait_ms;	/* and how long CRIU's tasks waited for it */
	uint64_t criu_run[2];	/* when CRIU's run began and ended (phos_now_ms) */
	char msg[PHOS_ERR_MAX];
};

/*
 * --verify: the full image check (doc/concurrent-restore.md, "The image
 * check beside CRIU"), in a process of its own started before anything
 * else (no thread of ours is running then): phos_image_verify() without
 * PHOS_VERIFY_QUICK, what phosd did before it started us in earlier
 * versions.  It writes "ok MS" or the reason to out, and exits.
 */
static void check_main(const struct opts *o, int out) __attribute__((noreturn));
static void check_main(const struct opts *o, int out)
{
	struct phos_key key = { 0 };
	struct phos_store st = { .root_fd = -1 };
	struct phos_image_id id;
	struct phos_err e = { "" };
	uint64_t t0 = phos_now_ms(), gen;
	char msg[PHOS_ERR_MAX + 32];

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	prctl(PR_SET_NAME, "phos-check");	/* what ps and top show */
	signal(SIGPIPE, SIG_IGN);	/* a restore that failed before it asked */
	/* its answer and stderr: nothing else of ours (phosd's report pipe,
	 * the Slurm task's sockets) stays open in it */
	if (out != 3) {
		if (dup2(out, 3) < 0)
			_exit(1);
		out = 3;
	}
	closefrom(4);
	if (phos_key_load(&key, o->key_file, &e) < 0 ||
	    phos_store_open(&st, o->checkpoint_dir, &key, false, &e) < 0 ||
	    phos_image_parse_path(&st, o->image, &id, &gen, &e) < 0 ||
	    phos_image_verify(&st, &id, gen, PHOS_UID_ANY, 0, NULL, &e) < 0)
		snprintf(msg, sizeof(msg), "%s\n", e.msg[0] ? e.msg : "the image check failed");
	else
		snprintf(msg, sizeof(msg), "ok %" PRIu64 "\n", phos_now_ms() - t0);
	if (write(out, msg, strlen(msg)) < 0)
		_exit(1);
	_exit(0);
}

static pid_t check_start(const struct opts *o, int *answer)
{
	int p[2];
	pid_t c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	c = fork();
	if (c == 0) {
		close(p[0]);
		check_main(o, p[1]);
	}
	close(p[1]);
	if (c < 0)
		close(p[0]);
	else
		*answer = p[0];
	return c;
}

/* A helper child of ours (the checker, the lazy-pages daemon) goes: killed
 * and reaped.  Nothing for pid <= 0. */
static void stop_child(pid_t pid)
{
	int st;

	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
}

/* The gate at CRIU's post-restore notification: every task is restored
 * and none runs yet (CRIU kills them all if we answer no).  The answers it
 * waits for there: the image check's (--verify) and, for an image with GPU
 * state, the GPU check's (cuda_restore_check, run by phos-restore while
 * CRIU restores).  Each is "ok MS" or the reason; EOF is a no. */
enum { GATE_IMAGE, GATE_GPU, GATE_N };

struct check_gate {
	int fd[GATE_N];		/* an answer still to read; -1: none (or read) */
	int failed;		/* -1, or the GATE_ whose answer was no */
	uint64_t ms, waited;	/* the image check's time; the tasks' wait */
	char msg[PHOS_ERR_MAX];
};

static const char *const gate_what[GATE_N] = { "image check", "GPU check" };

static int check_gate(void *arg, const char *script, pid_t pid)
{
	struct check_gate *g = arg;
	char buf[PHOS_ERR_MAX + 32];
	uint64_t t0 = phos_now_ms(), ms;

	(void)pid;
	if (strcmp(script, "post-restore") != 0)
		return 0;
	for (int i = 0; i < GATE_N; i++) {
		ssize_t n;

		if (g->fd[i] < 0)
			continue;
		n = phos_read_full(g->fd[i], buf, sizeof(buf) - 1);
		phos_closep(&g->fd[i]);
		buf[n > 0 ? n : 0] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		if (sscanf(buf, "ok %" SCNu64, &ms) == 1) {
			if (i == GATE_IMAGE)
				g->ms = ms;
		} else if (g->failed < 0) {
			g->failed = i;
			snprintf(g->msg, sizeof(g->msg), "%.500s", buf[0] ? buf : i == GATE_IMAGE ?
				 "the image check died before it answered" :
				 "the GPU check did not answer");
		}
	}
	g->waited = phos_now_ms() - t0;
	return g->failed < 0 ? 0 : -1;
}

/* Signal the processes that waited in libphos for their checkpoint. */
static void wake_waiters(const struct phos_manifest *m)
{
	const char *w = phos_manifest_get_extra(m, "phos.waiters");
	union sigval v = { .sival_int = PHOS_SIGVAL_RESTORED };

	while (w && *w) {
		char *end;
		long pid = strtol(w, &end, 10);

		if (end == w)
			break;
		if (pid > 0 && sigqueue((pid_t)pid, SIGRTMIN + PHOS_SIGNAL_OFFSET, v) < 0)
			log_debug("cannot wake pid %ld: %m", pid);
		w = *end ? end + 1 : end;
	}
}

/*
 * PHOS_DEBUG: how much of CRIU's run its log does not cover (its lines are
 * timed from the log's start): from CRIU's start (wall[0]) to the log's
 * creation, and from its last write to the run's end (wall[1]); where the
 * file system keeps no creation time, the last write only.
 */
static void log_edges(int dirfd, const char *name, const struct timespec wall[2])
{
	struct statx stx;

#define MS(a, b) (((int64_t)(b).tv_sec - (int64_t)(a).tv_sec) * 1000 + \
		  ((int64_t)(b).tv_nsec - (int64_t)(a).tv_nsec) / 1000000)
	if (statx(dirfd, name, 0, STATX_BTIME | STATX_MTIME, &stx) < 0)
		return;
	struct timespec mt = { stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec };

	if (stx.stx_mask & STATX_BTIME) {
		struct timespec bt = { stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec };

		log_info("CRIU's run outside its log: %" PRId64 " ms before its first line (exec "
			 "and start), %" PRId64 " ms after its last", MS(wall[0], bt), MS(mt, wall[1]));
	} else {
		log_info("CRIU's run outside its log: %" PRId64 " ms after its last line",
			 MS(mt, wall[1]));
	}
#undef MS
}

static void init_main(const struct opts *o, int dirfd, const struct phos_manifest *m,
		      int inherit[3], const char *logdir, bool lazy, int check_fd, int gpu_fd,
		      int rep)
	__attribute__((noreturn));
static void init_main(const struct opts *o, int dirfd, const struct phos_manifest *m,
		      int inherit[3], const char *logdir, bool lazy, int check_fd, int gpu_fd,
		      int rep)
{
	struct check_gate gate = { .fd = { check_fd, gpu_fd }, .failed = -1 };
	struct phos_criu_req r;
	struct init_report ir = { 0 };
	struct phos_err e = { "" };
	const char *keys[3];
	pid_t root = 0, p;
	int st = 0, rc;

	/* A mount namespace of init's own (not ours: our /proc must stay the
	 * node's), with a /proc of the new pid namespace. */
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		snprintf(ir.msg, sizeof(ir.msg), "cannot mount /proc for the new pid namespace: %s",
			 strerror(errno));
		goto fail;
	}
	/* A copy restored beside its still-running original would clash on
	 * abstract unix socket names (the CUDA runtime binds one named after
	 * its pid): give it a network namespace of its own, loopback up. */
	if (o->new_netns) {
		struct ifreq ifr = { .ifr_flags = IFF_UP | IFF_RUNNING };
		int sk;

		if (unshare(CLONE_NEWNET) < 0) {
			snprintf(ir.msg, sizeof(ir.msg), "cannot create a network namespace: %s",
				 strerror(errno));
			goto fail;
		}
		sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
		if (sk < 0 || ioctl(sk, SIOCSIFFLAGS, &ifr) < 0)
			log_warn("cannot bring up lo in the new network namespace: %m");
		if (sk >= 0)
			close(sk);
	}
	/* Our own session: the task's session leader (slurmstepd made the
	 * task one) is outside this pid namespace, and CRIU refuses to dump
	 * a tree whose session leader it cannot see (chains of restores). */
	if (setsid() < 0)
		log_debug("setsid: %m");
	/* Same probe as phosd's: without working breakpoints CRIU must trace
	 * syscalls to catch the restored tasks (200 ms when they do not work). */
	if (!phos_criu_probe_breakpoints())
		log_debug("hardware breakpoints do not fire here: CRIU traces syscalls");
	phos_criu_req_init(&r);
	if (o->criu)
		r.criu_path = o->criu;
	r.images_fd = dirfd;
	r.log_name = "restore.log";
	r.rst_sibling = true;
	/* The dumped stdio pipes/sockets are replaced by the new task's. */
	for (int i = 0; i < 3; i++) {
		char k[16];
		bool dup = false;

		snprintf(k, sizeof(k), "stdio.%d", i);
		keys[i] = inherit_key(phos_manifest_get_extra(m, k));
		if (!keys[i])
			continue;
		for (int j = 0; j < r.ninherit; j++)
			dup |= strcmp(r.inherit[j].key, keys[i]) == 0;
		if (dup)
			continue;
		r.inherit[r.ninherit].fd = inherit[i];
		r.inherit[r.ninherit].key = keys[i];
		r.ninherit++;
	}
	r.lazy_pages = lazy;
	if ((r.work_fd = open(logdir, O_DIRECTORY | O_CLOEXEC)) < 0) {
		snprintf(ir.msg, sizeof(ir.msg), "cannot open %.400s: %s", logdir, strerror(errno));
		goto fail;
	}
	if (check_fd >= 0 || gpu_fd >= 0) {
		r.notify = check_gate;
		r.notify_arg = &gate;
	}
	struct timespec wall[2];

	clock_gettime(CLOCK_REALTIME, &wall[0]);
	ir.criu_run[0] = phos_now_ms();
	rc = phos_criu_run(PHOS_CRIU_RESTORE, &r, &root, &e);
	ir.criu_run[1] = phos_now_ms();
	clock_gettime(CLOCK_REALTIME, &wall[1]);
	if (rc < 0) {
		if (gate.failed >= 0)
			snprintf(ir.msg, sizeof(ir.msg), "%s: %.380s (found while CRIU restored it: "
				 "CRIU killed the restored tasks before they ran)",
				 gate.failed == GATE_IMAGE ? "image refused" : "refused", gate.msg);
		else
			snprintf(ir.msg, sizeof(ir.msg), "%.300s (in %.200s)", e.msg, logdir);
		goto fail;
	}
	/* No post-restore notification, no answer read: the tasks may run on
	 * an image nobody checked, or on a GPU that cannot take their state.
	 * Never. */
	for (int i = 0; i < GATE_N; i++) {
		if (gate.fd[i] < 0)
			continue;
		kill(-1, SIGKILL);	/* every task of this pid namespace but us */
		snprintf(ir.msg, sizeof(ir.msg), "CRIU did not stop at post-restore for the %s: "
			 "the restored tasks were killed (is %.200s a CRIU >= 4.1?)", gate_what[i],
			 r.criu_path);
		goto fail;
	}
	ir.check_ms = gate.ms;
	ir.check_wait_ms = gate.waited;
	/* Keep CRIU's log only when it explains a failure, or when asked to
	 * (PHOS_DEBUG: its timestamps say where CRIU's time went).  The
	 * directory also holds CRIU's stats-restore and, where its probes of
	 * the kernel crash a child on purpose, a core file: all of it goes. */
	if (secure_getenv("PHOS_DEBUG")) {
		log_info("CRIU's restore log (PHOS_DEBUG): %s/restore.log", logdir);
		log_edges(r.work_fd, "restore.log", wall);
	} else if (!lazy && phos_rm_tree_at(AT_FDCWD, logdir) < 0)
		log_warn("cannot remove %s: %m", logdir);
	close(r.work_fd);
	ir.ok = 1;
	ir.nspid = root;
	wake_waiters(m);
	if (o->have_uid && drop_privileges(o->uid, o->gid) < 0)
		log_warn("cannot drop privileges in the namespace init: %m");
	if (write(rep, &ir, sizeof(ir)) != (ssize_t)sizeof(ir))
		_exit(1);
	forward_to = root;
	forward_signals();
	for (;;) {
		p = waitpid(-1, &st, 0);
		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0 || p == root)
			break;
	}
	ir.status = p == root ? st : (1 << 8);
	if (write(rep, &ir, sizeof(ir)) != (ssize_t)sizeof(ir))
		_exit(1);
	_exit(0);
fail:
	ir.ok = 0;
	if (write(rep, &ir, sizeof(ir)) != (ssize_t)sizeof(ir))
		_exit(1);
	_exit(1);
}

/* Global pid of init's only child. */
static pid_t child_of(pid_t init)
{
	char path[96];
	FILE *f;
	int c = -1;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)init, (int)init);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &c) != 1)
		c = -1;
	fclose(f);
	return c;
}

/* phosd's staging pool, if it holds this image's GPU buffers (a stop or
 * preempt checkpoint on this node: doc/protocol.md, "STAGE_GET"): its fd
 * and the pieces, else -1 (the loaders read storage); a driver-pinned
 * pool's pieces in cuda (cfd, theirs to close). */
static int stage_get(const struct opts *o, char *pieces, size_t n, struct stage_cuda *cuda,
		     int *cfd)
{
	struct phos_msg *m, *r = NULL;
	const char *text = NULL, *why = NULL;
	uint64_t err = EIO, piece = 0;
	int fd, pool = -1;

	if (!o->socket || (fd = phos_unix_connect(o->socket)) < 0)
		return -1;
	m = phos_msg_new(PHOS_MSG_STAGE_GET, 1);
	if (m && phos_msg_put_str(m, PHOS_A_PATH, o->image) == 0 && phos_msg_send(fd, m, NULL, 0) == 0 &&
	    (r = phos_msg_recv(fd, 10000)) && phos_msg_get_u64(r, PHOS_A_ERRNO, &err) == 0 && !err &&
	    r->nfds >= 1 && r->nfds <= 1 + STAGE_CUDA_MAX &&
	    (r->nfds == 1 || (phos_msg_get_u64(r, PHOS_A_BYTES, &piece) == 0 && piece)) &&
	    phos_msg_get_str(r, PHOS_A_TEXT, &text) == 0 && phos_strlcpy(pieces, text, n) >= 0) {
		pool = r->fds[0];
		r->fds[0] = -1;	/* ours now */
		for (int i = 1; i < r->nfds; i++) {
			cfd[i - 1] = r->fds[i];
			r->fds[i] = -1;
		}
		if (r->nfds > 1)
			*cuda = (struct stage_cuda){ .fd = cfd, .n = (unsigned)r->nfds - 1,
						     .piece = piece };
		r->nfds = 0;
		log_info("the GPU buffers load from phosd's staging pool, not from storage");
	} else if (r && phos_msg_get_str(r, PHOS_A_MSG, &why) == 0) {
		log_debug("staging pool: %s", why);
	}
	phos_msg_free(r);
	phos_msg_free(m);
	close(fd);
	return pool;
}

static void report_done(const struct opts *o, pid_t pid, pid_t nspid, const char *what)
{
	struct phos_msg *m, *r;
	int fd;

	if (!o->socket || !o->have_ids)
		return;
	fd = phos_unix_connect(o->socket);
	if (fd < 0) {
		log_warn("cannot tell phosd at %s about the restore: %m", o->socket);
		return;
	}
	m = phos_msg_new(PHOS_MSG_RESTORE_DONE, 1);
	if (m && phos_msg_put_u64(m, PHOS_A_JOB, o->job) == 0 &&
	    phos_msg_put_u64(m, PHOS_A_STEP, o->step) == 0 &&
	    phos_msg_put_u64(m, PHOS_A_TASK, o->task) == 0 &&
	    phos_msg_put_u64(m, PHOS_A_PID, (uint64_t)pid) == 0 &&
	    phos_msg_put_u64(m, PHOS_A_NSPID, (uint64_t)nspid) == 0 &&
	    phos_msg_put_str(m, PHOS_A_PATH, o->image) == 0 &&
	    phos_msg_put_str(m, PHOS_A_MSG, what) == 0 &&
	    phos_msg_send(fd, m, NULL, 0) == 0) {
		r = phos_msg_recv(fd, 10000);
		phos_msg_free(r);
	}
	phos_msg_free(m);
	close(fd);
}

/* A failed restore: say why on stderr (the task's, or the requester's
 * terminal) and, for phosd, on the report fd ("error MSG"): a detached
 * restore has no terminal. */
static int restore_fail(const struct opts *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int restore_fail(const struct opts *o, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "phos: %s\n", msg);
	if (o->report_fd >= 0)
		dprintf(o->report_fd, "error %s\n", msg);
	return 1;
}

/*
 * The lazy-pages daemon exits once every page of the restored memory is
 * in.  Should it fail first, the tasks must not run on: once its
 * userfaultfd is closed, a page it never copied reads as zeros.
 */
static void wait_lazy(pid_t lazy, pid_t init, const char *logdir, uint64_t t_start)
{
	int st = 0;

	while (waitpid(lazy, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		log_info("criu lazy-pages: every page of the restored memory is in, %" PRIu64
			 " ms after the restore began", phos_now_ms() - t_start);
		if (!secure_getenv("PHOS_DEBUG") && phos_rm_tree_at(AT_FDCWD, logdir) < 0)
			log_warn("cannot remove %s: %m", logdir);
		return;
	}
	kill(init, SIGKILL);	/* the pid namespace's init: every task of it goes */
	log_err("criu lazy-pages failed (%s %d) before the restored memory was complete: the "
		"restored process is killed (its log: %s/lazy-pages.log)",
		WIFEXITED(st) ? "status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
		logdir);
}

/*
 * The GPU check, beside CRIU: cuda_restore_check(), its answer sent to
 * init's post-restore gate ("ok MS" or the reason), its time in *ms.
 * False with e filled when the node cannot take the image's GPU state.
 */
static bool gpu_check(const struct phos_manifest *m, int answer, uint64_t *ms,
		      struct phos_err *e)
{
	char msg[PHOS_ERR_MAX + 32];
	uint64_t t0 = phos_now_ms();
	bool ok = cuda_restore_check(m, e) == 0;

	*ms = phos_now_ms() - t0;
	if (ok)
		snprintf(msg, sizeof(msg), "ok %" PRIu64 "\n", *ms);
	else
		snprintf(msg, sizeof(msg), "%s\n", e->msg);
	/* init gone (CRIU failed first): its own report says why */
	if (send(answer, msg, strlen(msg), MSG_NOSIGNAL) < 0)
		log_debug("the GPU check's answer was not taken: %m");
	return ok;
}

static int restore_mode(const struct opts *o)
{
	struct phos_manifest m;
	struct phos_err e = { "" };
	struct init_report ir;
	struct gpu_loads *loads = NULL;
	uint64_t t_start, t_criu, t_driver = 0;
	int stdio[3] = { -1, -1, -1 };
	int pp[2], dirfd, st, rc, check_fd = -1, gpu_gate[2] = { -1, -1 }, nodens = -1;
	uint64_t gpu_ms = UINT64_MAX;	/* the GPU check's time: none yet */
	bool gpu_ok = true;
	pid_t init = 0, root = 0, lazy = 0, check = 0;
	char logdir[PATH_MAX];

	uint64_t t_begin = phos_now_ms();

	if (geteuid() != 0) {
		fprintf(stderr, "phos: phos-restore must run as root (it is started by phosd or the SPANK plugin)\n");
		return 1;
	}
	if (o->control_fd >= 0) {
		if (recv_stdio(o->control_fd, stdio) < 0) {
			fprintf(stderr, "phos: restore: did not get the task's stdio: %s\n", strerror(errno));
			return 1;
		}
		/* From now on our own stdio is the task's. */
		for (int i = 0; i < 3; i++)
			if (dup2(stdio[i], i) < 0)
				return 1;
		join_parent_cgroup();
	} else {
		for (int i = 0; i < 3; i++)
			stdio[i] = fcntl(i, F_DUPFD_CLOEXEC, 3);
	}
	dirfd = open(o->image, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (dirfd < 0) {
		return restore_fail(o, "restore: cannot open %s: %s", o->image, strerror(errno));
	}
	if (load_manifest(dirfd, &m, &e) < 0) {
		return restore_fail(o, "restore: %s: %s", o->image, e.msg);
	}
	/* GPU: what the driver could not restore here is refused at CRIU's
	 * post-restore gate, by the check phos-restore runs beside CRIU (the
	 * driver's start, 33-90 ms on an H200, is then off the way to the
	 * first step).  Its answer goes to init over a socket: a send to an
	 * init that is gone fails, it raises no SIGPIPE. */
	if (cuda_image_has_gpu(&m) &&
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, gpu_gate) < 0)
		return restore_fail(o, "restore: cannot create a socket pair: %s", strerror(errno));
	/* the file pages the process had in memory, read ahead while CRIU
	 * restores it (prefetch.h) */
	prefetch_start(dirfd, o->state_dir, m.uid, m.gid);
	/* --verify: the image is hashed while CRIU restores it (the checker
	 * starts first: no thread of ours runs yet) */
	if (o->verify && (check = check_start(o, &check_fd)) < 0)
		return restore_fail(o, "restore of %s failed: cannot start the image check: %s",
				    o->image, strerror(errno));
	/* The GPU buffers' loaders start now, in our pid namespace (the
	 * driver needs a /proc that matches): their CUDA contexts, the
	 * buffers and (concurrent) the first of the data are ready by the
	 * time CRIU and the driver have restored the process. */
	t_start = phos_now_ms();
	log_debug("the loaders start %" PRIu64 " ms after phos-restore did (the manifest; the "
		  "read-ahead and the image check started)%s", t_start - t_begin,
		  gpu_gate[1] >= 0 ? "; the GPU check comes beside CRIU" : "");
	char pieces[1024] = "";
	struct stage_cuda cuda = { NULL, 0, 0 };
	int cfd[STAGE_CUDA_MAX];
	int stage_fd = stage_get(o, pieces, sizeof(pieces), &cuda, cfd);

	/* the generation's key for its GPU buffers' sums (common/savetab.h),
	 * from the node key: in the loaders' environment */
	char keyenv[PHOS_GPU_SUMS_KEY_ENV_LEN] = "";
	char **genv = NULL;
	{
		struct phos_key nk = { 0 };
		struct phos_err ke = { "" };
		uint64_t sk;

		if (!o->key_file || phos_key_load(&nk, o->key_file, &ke) < 0 ||
		    phos_gpumem_key(&nk, &m.id, m.generation, &sk, &ke) < 0)
			log_warn("no key for the sums of %s's GPU buffers (%s): a map whose sums "
				 "are keyed cannot be loaded", o->image,
				 ke.msg[0] ? ke.msg : "no key_file");
		else {
			phos_gpumem_key_env(sk, keyenv);
			genv = phos_env_with(keyenv);
		}
		phos_key_clear(&nk);
	}
	rc = gpu_load_start(dirfd, o->gpu_concurrent, stage_fd, &cuda, pieces, genv, &loads, &e);
	free(genv);
	explicit_bzero(keyenv, sizeof(keyenv));
	if (stage_fd >= 0)
		close(stage_fd);	/* the loaders hold it (and the pool's lock) */
	for (unsigned i = 0; i < cuda.n; i++)
		close(cfd[i]);
	if (rc < 0) {
		restore_fail(o, "restore of %s failed: %s", o->image, e.msg);
		goto failed;
	}
	/* CRIU's work directory (its log must not go into the verified image
	 * directory): one of its own in the node's state directory (root's),
	 * or /tmp where that cannot be had.  Made here, in the node's pid
	 * namespace, where a lazy-pages daemon starts too. */
	if ((phos_snprintf(logdir, sizeof(logdir), "%s/restore.XXXXXX", o->state_dir) < 0 ||
	     !mkdtemp(logdir)) &&
	    (snprintf(logdir, sizeof(logdir), "/tmp/phos-restore.XXXXXX"), !mkdtemp(logdir))) {
		restore_fail(o, "restore: cannot create a work directory for CRIU: %s",
			     strerror(errno));
		goto failed;
	}
	if (o->lazy_pages) {
		lazy = phos_criu_lazy_start(o->criu, o->image, logdir, &e);
		if (lazy < 0) {
			restore_fail(o, "restore of %s failed: %s", o->image, e.msg);
			goto failed;
		}
		log_info("criu lazy-pages %d serves the restored memory (log: %s/lazy-pages.log)",
			 (int)lazy, logdir);
	}
	/* the node's pid namespace, to come back to for our own children once
	 * init is made: after unshare(CLONE_NEWPID) no thread can be created
	 * (clone() says EINVAL), and cuInit (the GPU check) creates some */
	nodens = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (nodens < 0 || pipe2(pp, O_CLOEXEC) < 0 || unshare(CLONE_NEWPID) < 0) {
		restore_fail(o, "restore: cannot create a pid namespace: %s", strerror(errno));
		goto failed;
	}
	init = fork();
	if (init < 0) {
		restore_fail(o, "restore: fork: %s", strerror(errno));
		goto failed;
	}
	if (init == 0) {
		close(pp[0]);
		if (o->report_fd >= 0)
			close(o->report_fd);
		phos_closep(&gpu_gate[1]);
		phos_closep(&nodens);
		init_main(o, dirfd, &m, stdio, logdir, lazy > 0, check_fd, gpu_gate[0], pp[1]);
	}
	close(pp[1]);
	phos_closep(&check_fd);	/* init's now */
	phos_closep(&gpu_gate[0]);
	if (setns(nodens, CLONE_NEWPID) < 0) {
		restore_fail(o, "restore: cannot return to the node's pid namespace: %s",
			     strerror(errno));
		goto failed;
	}
	phos_closep(&nodens);
	if (gpu_gate[1] >= 0) {
		gpu_ok = gpu_check(&m, gpu_gate[1], &gpu_ms, &e);
		phos_closep(&gpu_gate[1]);
	}
	/* (the gate refused what the GPU check refused: !gpu_ok with ir.ok
	 * would be a CRIU that ran the tasks regardless; they go) */
	if (phos_read_full(pp[0], &ir, sizeof(ir)) != (ssize_t)sizeof(ir) || !ir.ok || !gpu_ok) {
		if (!gpu_ok)
			restore_fail(o, "restore of %s refused: %s (the GPU check beside CRIU: no "
				     "restored task ran)", o->image, e.msg);
		else
			restore_fail(o, "restore of %s failed: %s", o->image,
				     ir.msg[0] ? ir.msg : "the namespace init died");
		goto failed;
	}
	stop_child(check);	/* it answered before CRIU let the tasks run */
	check = 0;
	root = child_of(init);
	t_criu = phos_now_ms();
	/* GPU: CRIU restored the tree running, its CUDA calls blocked (the
	 * driver still has it checkpointed and locked).  We are in the node's
	 * pid namespace and know root's global pid: driver restore + unlock. */
	if (cuda_restore_tree(root, &m, NULL, &e) < 0 ||
	    (t_driver = phos_now_ms(), gpu_load_finish(loads, root, o->socket, &e) < 0)) {
		restore_fail(o, "restore of %s failed: %s", o->image, e.msg);
		goto failed;
	}
	forward_to = root;
	forward_signals();
	/* what the restore took, for phosd's log (a Slurm task's restore has
	 * no other way there) */
	char what[768], said[640];
	const char *gpu = gpu_load_said(loads);

	snprintf(said, sizeof(said), "%s%s%s", lazy > 0 ? "memory pages served by criu lazy-pages" : "",
		 lazy > 0 && gpu[0] ? "; " : "", gpu);
	char checked[160] = "";

	if (o->verify && gpu_ms != UINT64_MAX)
		snprintf(checked, sizeof(checked), " (the image checked beside it in %" PRIu64
			 " ms, the GPU in %" PRIu64 " ms; the restored tasks waited %" PRIu64
			 " ms for that)", ir.check_ms, gpu_ms, ir.check_wait_ms);
	else if (o->verify || gpu_ms != UINT64_MAX)
		snprintf(checked, sizeof(checked), " (the %s checked beside it in %" PRIu64
			 " ms; the restored tasks waited %" PRIu64 " ms for that)",
			 o->verify ? "image" : "GPU", o->verify ? ir.check_ms : gpu_ms,
			 ir.check_wait_ms);
	/* CRIU's part: getting to it (the loaders, the namespaces), its run,
	 * and after it (the init's report) */
	snprintf(what, sizeof(what), "CRIU %" PRIu64 " ms (%" PRIu64 " + run %" PRIu64 " + %" PRIu64
		 ")%s, driver %" PRIu64 " ms, GPU buffers handed over and loaded %" PRIu64 " ms%s%s",
		 t_criu - t_start, ir.criu_run[0] - t_start, ir.criu_run[1] - ir.criu_run[0],
		 t_criu - ir.criu_run[1], checked, t_driver - t_criu, phos_now_ms() - t_driver,
		 said[0] ? "; " : "", said);
	log_info("restored %s as pid %d (pid %d in its namespace): %s", o->image, (int)root,
		 (int)ir.nspid, what);
	if (o->report_fd >= 0) {
		/* pid, pid in its namespace, and how the memory came back */
		dprintf(o->report_fd, "%d %d%s%s\n", (int)root, (int)ir.nspid, said[0] ? " " : "",
			said);
		close(o->report_fd);
	}
	report_done(o, root, ir.nspid, what);
	if (lazy > 0)
		wait_lazy(lazy, init, logdir, t_start);
	gpu_load_free(loads);
	phos_manifest_free(&m);
	close(dirfd);
	for (int i = 0; i < 3; i++)
		phos_closep(&stdio[i]);
	if (o->have_uid && drop_privileges(o->uid, o->gid) < 0)
		log_warn("cannot drop privileges: %m");
	/* A credential change clears the parent-death signal the plugin set:
	 * die with the Slurm task (our parent) as before. */
	if (o->control_fd >= 0)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (phos_read_full(pp[0], &ir, sizeof(ir)) != (ssize_t)sizeof(ir))
		ir.status = 1 << 8;
	while (waitpid(init, &st, 0) < 0 && errno == EINTR)
		;
	exit_like(ir.status);
failed:
	/* what was started goes: the loaders, the restored tree (init takes
	 * every task of its pid namespace with it), the helpers */
	phos_closep(&gpu_gate[0]);
	phos_closep(&gpu_gate[1]);
	phos_closep(&nodens);
	gpu_load_free(loads);
	if (root > 0)
		kill(root, SIGKILL);
	if (init > 0)
		waitpid(init, &st, 0);
	stop_child(lazy);
	stop_child(check);
	return 1;
}

static int parse_u64(const char *name, const char *v, uint64_t *out)
{
	if (phos_parse_u64(v, out) < 0) {
		fprintf(stderr, "phos-restore: %s: expected a number, got '%s'\n", name, v);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "image", required_argument, NULL, 'i' },
		{ "criu", required_argument, NULL, 'C' },
		{ "new-netns", no_argument, NULL, 'N' },
		{ "verify", no_argument, NULL, 'V' },
		{ "checkpoint-dir", required_argument, NULL, 'D' },
		{ "key-file", required_argument, NULL, 'K' },
		{ "config", required_argument, NULL, 'F' },
		{ "control-fd", required_argument, NULL, 'c' },
		{ "report-fd", required_argument, NULL, 'r' },
		{ "wait-fd", required_argument, NULL, 'w' },
		{ "socket", required_argument, NULL, 's' },
		{ "job", required_argument, NULL, 'j' },
		{ "step", required_argument, NULL, 'S' },
		{ "task", required_argument, NULL, 't' },
		{ "uid", required_argument, NULL, 'u' },
		{ "gid", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .control_fd = -1, .report_fd = -1, .wait_fd = -1 };
	static struct phos_config cfg;
	const char *config = PHOS_CONFIG_DEFAULT;
	uint64_t v;
	int c;

	phos_log_open("phos-restore", PHOS_LOG_STDERR,
		      secure_getenv("PHOS_DEBUG") ? LOG_DEBUG : LOG_WARNING);
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'i': o.image = optarg; break;
		case 'C': o.criu = optarg; break;
		case 'N': o.new_netns = true; break;
		case 'V': o.verify = true; break;
		case 'D': o.checkpoint_dir = optarg; break;
		case 'K': o.key_file = optarg; break;
		case 'F': config = optarg; break;
		case 's': o.socket = optarg; break;
		case 'c': if (parse_u64("--control-fd", optarg, &v) < 0) return 2; o.control_fd = (int)v; break;
		case 'r': if (parse_u64("--report-fd", optarg, &v) < 0) return 2; o.report_fd = (int)v; break;
		case 'w': if (parse_u64("--wait-fd", optarg, &v) < 0) return 2; o.wait_fd = (int)v; break;
		case 'j': if (parse_u64("--job", optarg, &o.job) < 0) return 2; o.have_ids = true; break;
		case 'S': if (parse_u64("--step", optarg, &o.step) < 0) return 2; break;
		case 't': if (parse_u64("--task", optarg, &o.task) < 0) return 2; break;
		case 'u': if (parse_u64("--uid", optarg, &v) < 0) return 2; o.uid = (uid_t)v; o.have_uid = true; break;
		case 'g': if (parse_u64("--gid", optarg, &v) < 0) return 2; o.gid = (gid_t)v; break;
		case 'h':
			printf("Usage: phos-restore --image DIR [--verify [--checkpoint-dir DIR --key-file FILE]]\n"
			       "                    [--criu PATH | --config FILE] [--control-fd N] [--report-fd N]\n"
			       "                    [--socket S --job J --step S --task T] [--uid U --gid G]\n"
			       "       phos-restore --wait-fd N\n"
			       "Internal helper of phosd and the PhOS SPANK plugin; see phosd(8).\n");
			return 0;
		default:
			return 2;
		}
	}
	if (o.wait_fd >= 0)
		return wait_mode(o.wait_fd);
	/* phos.yaml (phosd passes its own): the criu binary of this node
	 * unless --criu names one, and how GPU buffers are loaded */
	{
		struct phos_err e;

		phos_config_defaults(&cfg);
		if (phos_config_load(&cfg, config, &e) < 0 && errno != ENOENT)
			log_warn("%s", e.msg);
		if (!o.criu)
			o.criu = cfg.criu_path;
		o.gpu_concurrent = cfg.gpu_concurrent_restore;
		o.state_dir = cfg.state_dir;
		if (!o.checkpoint_dir)
			o.checkpoint_dir = cfg.checkpoint_dir;
		if (!o.key_file)
			o.key_file = cfg.key_file;
		o.lazy_pages = phos_env_on("PHOS_CRIU_LAZY_PAGES");
	}
	if (!o.image) {
		fprintf(stderr, "phos-restore: --image DIR or --wait-fd N is required\n");
		return 2;
	}
	return restore_mode(&o);
}
