/*
 * criu.c - a client of CRIU's RPC service, `criu swrk FD`.
 *
 *   socketpair(SEQPACKET) -> fork -> [setns pid+mnt, fork] -> exec criu swrk FD
 *   send CriuReq -> { recv NOTIFY -> callback -> send NOTIFY ack }* -> recv CriuResp
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rpc.pb-c.h"

#include "criu.h"
#include "log.h"
#include "util.h"

#define RPC_MAX (64 * 1024)

static bool no_breakpoints;	/* set by phos_criu_probe_breakpoints() */

/* The probe child calls this until it traps (or gives up). */
static void __attribute__((noinline)) bp_target(void)
{
	__asm__ volatile("" ::: "memory");
}

bool phos_criu_probe_breakpoints(void)
{
#if defined(__x86_64__)
	pid_t c = fork();
	int st = 0;
	bool works = false;

	if (c < 0)
		return true;	/* cannot tell: leave CRIU's default */
	if (c == 0) {
		uint64_t end;

		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
			_exit(2);
		raise(SIGSTOP);
		end = phos_now_ms() + 200;
		while (phos_now_ms() < end)
			bp_target();
		_exit(0);
	}
	if (waitpid(c, &st, 0) == c && WIFSTOPPED(st) &&
	    ptrace(PTRACE_POKEUSER, c, offsetof(struct user, u_debugreg[0]), (void *)bp_target) == 0 &&
	    ptrace(PTRACE_POKEUSER, c, offsetof(struct user, u_debugreg[7]), (void *)1) == 0 &&
	    ptrace(PTRACE_CONT, c, NULL, NULL) == 0) {
		while (waitpid(c, &st, 0) < 0 && errno == EINTR)
			;
		works = WIFSTOPPED(st) && WSTOPSIG(st) == SIGTRAP;
	}
	kill(c, SIGKILL);
	while (waitpid(c, &st, 0) < 0 && errno == EINTR)
		;
	no_breakpoints = !works;
	return works;
#else
	return true;
#endif
}

void phos_criu_req_init(struct phos_criu_req *r)
{
	memset(r, 0, sizeof(*r));
	r->criu_path = PHOS_CRIU_BIN;
	r->images_fd = -1;
	r->work_fd = -1;
	r->log_level = 4;
	r->pidns_fd = -1;
	r->mntns_fd = -1;
}

/* In the child: keep fd open across exec. */
static int keep_fd(int fd, int want)
{
	(void)want;
	int fl = fcntl(fd, F_GETFD);
	if (fl < 0 || fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC) < 0)
		return -1;
	return fd;
}

/* In the child, before exec of criu: what every CRIU run gets. */
static void child_env(void)
{
	sigset_t none;

	/* phosd blocks signals for its signalfd: criu must not inherit that. */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* CRIU's probes of the kernel crash a child on purpose (the 32-bit
	 * mmap test on kernels without ia32 emulation): no core file of it in
	 * the image or work directory.  The restored tasks get their own
	 * limits back from the image. */
	if (!getenv("PHOS_DEBUG")) {
		struct rlimit rl;

		if (getrlimit(RLIMIT_CORE, &rl) == 0) {
			rl.rlim_cur = 0;
			setrlimit(RLIMIT_CORE, &rl);
		}
	}
	if (no_breakpoints)
		setenv("CRIU_FAULT", "130", 1);	/* FI_NO_BREAKPOINTS */
}

static void child_exec(const struct phos_criu_req *r, int sk) __attribute__((noreturn));
static void child_exec(const struct phos_criu_req *r, int sk)
{
	char fdarg[16];

	if (r->pidns_fd >= 0) {
		pid_t p;
		int st;

		/* setns(pid) applies to our children: fork once more. */
		if (setns(r->pidns_fd, CLONE_NEWPID) < 0)
			_exit(126);
		p = fork();
		if (p < 0)
			_exit(126);
		if (p > 0) {
			while (waitpid(p, &st, 0) < 0 && errno == EINTR)
				;
			_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 126);
		}
		/* The target's mount namespace: its /proc is the namespace's
		 * (phos-restore mounted it) and CRIU must see the same mounts
		 * as the tasks it dumps. */
		if (r->mntns_fd >= 0 && setns(r->mntns_fd, CLONE_NEWNS) < 0)
			_exit(126);
	}
	/* The image dir and inherited fds keep their numbers (the request
	 * names them); the service socket goes to a free high number. */
	int hi = fcntl(sk, F_DUPFD, 100);
	if (hi < 0)
		_exit(126);
	if (r->images_fd >= 0 && keep_fd(r->images_fd, -1) < 0)
		_exit(126);
	if (r->work_fd >= 0 && keep_fd(r->work_fd, -1) < 0)
		_exit(126);
	for (int i = 0; i < r->ninherit; i++)
		if (keep_fd(r->inherit[i].fd, -1) < 0)
			_exit(126);
	snprintf(fdarg, sizeof(fdarg), "%d", hi);
	child_env();
	execl(r->criu_path, "criu", "swrk", fdarg, (char *)NULL);
	_exit(127);
}

static int send_req(int sk, CriuReq *req)
{
	size_t n = criu_req__get_packed_size(req);
	uint8_t *buf;
	ssize_t w;

	if (n > RPC_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	buf = malloc(n ? n : 1);
	if (!buf)
		return -1;
	criu_req__pack(req, buf);
	do
		w = send(sk, buf, n, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	free(buf);
	if (w < 0)
		return -1;
	return 0;
}

static CriuResp *recv_resp(int sk)
{
	uint8_t *buf = malloc(RPC_MAX);
	CriuResp *resp;
	ssize_t n;

	if (!buf)
		return NULL;
	do
		n = recv(sk, buf, RPC_MAX, MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n <= 0 || n > RPC_MAX) {
		if (n == 0)
			errno = ECONNRESET;
		else if (n > RPC_MAX)
			errno = EMSGSIZE;
		free(buf);
		return NULL;
	}
	resp = criu_resp__unpack(NULL, (size_t)n, buf);
	free(buf);
	if (!resp)
		errno = EBADMSG;
	return resp;
}

static const char *op_name(enum phos_criu_op op)
{
	switch (op) {
	case PHOS_CRIU_DUMP: return "dump";
	case PHOS_CRIU_PRE_DUMP: return "pre-dump";
	case PHOS_CRIU_RESTORE: return "restore";
	}
	return "?";
}

/* Fill opts from r; pointers in opts refer to r and to inh[]. */
static void fill_opts(enum phos_criu_op op, const struct phos_criu_req *r, CriuOpts *o,
		      InheritFd *inh, InheritFd **inhp)
{
	o->images_dir_fd = r->images_fd;
	if (r->pidns_fd >= 0 && r->images_path) {
		/* CRIU cannot reach our fds from inside the namespace. */
		o->images_dir_fd = -1;
		o->images_dir = (char *)r->images_path;
	}
	if (r->work_fd >= 0 && r->pidns_fd < 0) {
		o->has_work_dir_fd = true;
		o->work_dir_fd = r->work_fd;
	}
	o->log_file = (char *)r->log_name;
	o->has_log_level = true;
	o->log_level = r->log_level;
	o->has_shell_job = true;
	o->shell_job = true;		/* the task's session leader is outside the tree */
	o->has_ext_unix_sk = true;
	o->ext_unix_sk = true;
	o->has_file_locks = true;
	o->file_locks = true;
	o->has_manage_cgroups_mode = true;
	o->manage_cgroups_mode = CRIU_CG_MODE__IGNORE;	/* never the old job's cgroups */
	if (r->timeout) {
		o->has_timeout = true;
		o->timeout = r->timeout;
	}
	if (r->notify) {
		o->has_notify_scripts = true;
		o->notify_scripts = true;
	}
	if (op == PHOS_CRIU_RESTORE) {
		o->has_rst_sibling = true;
		o->rst_sibling = r->rst_sibling;
		if (r->lazy_pages) {
			o->has_lazy_pages = true;
			o->lazy_pages = true;
		}
		for (int i = 0; i < r->ninherit; i++) {
			inherit_fd__init(&inh[i]);
			inh[i].key = (char *)r->inherit[i].key;
			inh[i].fd = r->inherit[i].fd;
			inhp[i] = &inh[i];
		}
		o->n_inherit_fd = (size_t)r->ninherit;
		o->inherit_fd = inhp;
		return;
	}
	o->has_pid = true;
	o->pid = r->pid;
	o->n_external = (size_t)r->nexternal;
	o->external = (char **)r->external;
	if (op == PHOS_CRIU_DUMP) {
		o->has_leave_running = true;
		o->leave_running = r->leave_running;
		if (r->leave_stopped) {
			o->has_leave_stopped = true;
			o->leave_stopped = true;
		}
	}
	if (r->track_mem) {
		o->has_track_mem = true;
		o->track_mem = true;
	}
	if (r->parent_img)
		o->parent_img = (char *)r->parent_img;
}

/*
 * The most telling error of a failed run: the last "Error" line of the
 * CRIU log that is not one of the harmless ones, without its timestamp.
 */
static void log_reason(const struct phos_criu_req *r, char *out, size_t size)
{
	int dir = r->work_fd >= 0 ? r->work_fd : r->images_fd;
	int fd = r->log_name ? openat(dir, r->log_name, O_RDONLY | O_CLOEXEC) : -1;
	char line[1024];
	FILE *f;

	out[0] = '\0';
	if (fd < 0 || !(f = fdopen(fd, "r"))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char *p = strstr(line, "Error (");

		if (!p || strstr(line, "RLIMIT_NOFILE") || strstr(line, "FAILED.") ||
		    strstr(line, "failed with -1") || strstr(line, "killed by signal") ||
		    strstr(line, "Killing processes because of failure"))
			continue;
		p = strstr(p, "): ");
		p = p ? p + 3 : line;
		p[strcspn(p, "\n")] = '\0';
		snprintf(out, size, "%s", p);
	}
	fclose(f);
}

int phos_criu_run(enum phos_criu_op op, const struct phos_criu_req *r, pid_t *restored,
		  struct phos_err *e)
{
	CriuReq req = CRIU_REQ__INIT;
	CriuOpts opts = CRIU_OPTS__INIT;
	InheritFd inh[PHOS_CRIU_MAX_INHERIT];
	InheritFd *inhp[PHOS_CRIU_MAX_INHERIT];
	CriuResp *resp = NULL;
	int sv[2] = { -1, -1 };
	int rc = -1, st = 0;
	pid_t child;

	if (r->ninherit < 0 || r->ninherit > PHOS_CRIU_MAX_INHERIT || r->images_fd < 0)
		return phos_errnof(e, EINVAL, "criu %s: bad request", op_name(op));
	fill_opts(op, r, &opts, inh, inhp);
	req.type = op == PHOS_CRIU_DUMP ? CRIU_REQ_TYPE__DUMP :
		   op == PHOS_CRIU_PRE_DUMP ? CRIU_REQ_TYPE__PRE_DUMP : CRIU_REQ_TYPE__RESTORE;
	req.opts = &opts;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return phos_errf(e, "criu %s: socketpair: %s", op_name(op), strerror(errno));
	child = fork();
	if (child < 0) {
		phos_errf(e, "criu %s: fork: %s", op_name(op), strerror(errno));
		goto out;
	}
	if (child == 0)
		child_exec(r, sv[1]);
	phos_closep(&sv[1]);

	if (send_req(sv[0], &req) < 0) {
		phos_errf(e, "criu %s: cannot talk to 'criu swrk' (%s): is %s a working criu >= 4.1?",
			  op_name(op), strerror(errno), r->criu_path);
		goto out;
	}
	for (;;) {
		resp = recv_resp(sv[0]);
		if (!resp) {
			phos_errf(e, "criu %s: the criu service died (%s); see %s",
				  op_name(op), strerror(errno), r->log_name);
			goto out;
		}
		if (resp->type != CRIU_REQ_TYPE__NOTIFY)
			break;
		const char *script = resp->notify && resp->notify->script ? resp->notify->script : "";
		pid_t npid = resp->notify && resp->notify->has_pid ? resp->notify->pid : 0;
		int ok = r->notify ? r->notify(r->notify_arg, script, npid) == 0 : 1;
		CriuReq ack = CRIU_REQ__INIT;

		log_debug("criu %s: notify '%s' pid %d -> %s", op_name(op), script, (int)npid,
			  ok ? "ok" : "fail");
		ack.type = CRIU_REQ_TYPE__NOTIFY;
		ack.has_notify_success = true;
		ack.notify_success = ok;
		criu_resp__free_unpacked(resp, NULL);
		resp = NULL;
		if (send_req(sv[0], &ack) < 0) {
			phos_errf(e, "criu %s: lost the criu service during '%s'", op_name(op), script);
			goto out;
		}
	}
	if (!resp->success) {
		int cerr = resp->has_cr_errno ? resp->cr_errno : 0;
		char why[1100];

		log_reason(r, why, sizeof(why));
		if (strstr(why, "rlimit") && strstr(why, "Operation not permitted"))
			snprintf(why + strlen(why), sizeof(why) - strlen(why), " (phosd needs full root "
				 "capabilities, CAP_SYS_RESOURCE included, to checkpoint other users' "
				 "processes)");
		phos_errnof(e, cerr ? cerr : EIO, "criu %s failed: %s (full log: %s)", op_name(op),
			    why[0] ? why : resp->cr_errmsg && *resp->cr_errmsg ? resp->cr_errmsg :
			    cerr ? strerror(cerr) : "no reason given", r->log_name);
		goto out;
	}
	if (op == PHOS_CRIU_RESTORE && restored)
		*restored = resp->restore ? resp->restore->pid : 0;
	rc = 0;
out:
	if (resp)
		criu_resp__free_unpacked(resp, NULL);
	phos_closep(&sv[0]);
	phos_closep(&sv[1]);
	if (child > 0) {
		while (waitpid(child, &st, 0) < 0 && errno == EINTR)
			;
		if (rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 127)
			log_warn("criu %s: exec %s failed", op_name(op), r->criu_path);
	}
	if (rc < 0)
		errno = errno ? errno : EIO;
	return rc;
}

pid_t phos_criu_lazy_start(const char *criu_path, const char *images_path, const char *work_path,
			   struct phos_err *e)
{
	char sock[PATH_MAX];
	struct stat st;
	int status;
	pid_t c;

	if (phos_snprintf(sock, sizeof(sock), "%s/lazy-pages.socket", work_path) < 0) {
		phos_errf(e, "lazy pages: work directory path too long");
		return -1;
	}
	c = fork();
	if (c < 0) {
		phos_errf(e, "lazy pages: fork: %s", strerror(errno));
		return -1;
	}
	if (c == 0) {
		int null = open("/dev/null", O_RDWR);

		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
		    chdir(work_path) < 0)
			_exit(126);
		child_env();
		execl(criu_path, "criu", "lazy-pages", "--images-dir", images_path,
		      "--work-dir", work_path, "--log-file", "lazy-pages.log", "-v4", (char *)NULL);
		_exit(127);
	}
	/* It listens on its socket before the restore may connect. */
	for (int i = 0; i < 1000; i++) {
		if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode))
			return c;
		if (waitpid(c, &status, WNOHANG) == c) {
			phos_errf(e, "criu lazy-pages exited with status %d before it listened "
				     "(its log: %s/lazy-pages.log)", WIFEXITED(status) ?
				     WEXITSTATUS(status) : 128 + WTERMSIG(status), work_path);
			return -1;
		}
		usleep(5000);
	}
	kill(c, SIGKILL);
	waitpid(c, &status, 0);
	phos_errf(e, "criu lazy-pages did not listen within 5 s (its log: %s/lazy-pages.log)",
		     work_path);
	return -1;
}

/* The regular files pid maps, each once, as "0 SIZE PATH" lines to out. */
static void mapped_files(pid_t pid, FILE *out)
{
	char path[64], line[PATH_MAX + 128], last[PATH_MAX] = "";
	FILE *maps;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	if (!(maps = fopen(path, "re")))
		return;
	while (fgets(line, sizeof(line), maps)) {
		char *f = strchr(line, '/');
		struct stat st;

		if (!f)
			continue;
		f[strcspn(f, "\n")] = '\0';
		if (strcmp(f, last) == 0 || stat(f, &st) < 0 || !S_ISREG(st.st_mode))
			continue;	/* (a deleted file's name ends in " (deleted)") */
		snprintf(last, sizeof(last), "%s", f);
		fprintf(out, "0 %llx %s\n", (unsigned long long)st.st_size, f);
	}
	fclose(maps);
}

int phos_criu_has_mem_track(const char *criu_path, FILE *files)
{
	CriuReq req = CRIU_REQ__INIT;
	CriuFeatures feat = CRIU_FEATURES__INIT;
	struct phos_criu_req r;
	CriuResp *resp;
	int sv[2], st, rc = -1;
	pid_t c;

	phos_criu_req_init(&r);
	r.criu_path = criu_path;
	feat.has_mem_track = true;
	feat.mem_track = true;
	req.type = CRIU_REQ_TYPE__FEATURE_CHECK;
	req.features = &feat;
	/* with files: criu waits for another request after its answer, alive
	 * for /proc/PID/maps, and exits when the socket closes */
	req.has_keep_open = files != NULL;
	req.keep_open = files != NULL;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	c = fork();
	if (c < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (c == 0)
		child_exec(&r, sv[1]);
	close(sv[1]);
	if (send_req(sv[0], &req) == 0 && (resp = recv_resp(sv[0]))) {
		if (resp->features && resp->features->has_mem_track)
			rc = resp->features->mem_track ? 1 : 0;
		criu_resp__free_unpacked(resp, NULL);
		/* it answered: started, waiting for the socket to close */
		if (files) {
			mapped_files(c, files);
			/* the same question, not kept open: criu answers and
			 * exits (a socket closed under it is an error in its
			 * log, "Can't recv request", on phosd's stderr) */
			req.keep_open = false;
			if (send_req(sv[0], &req) == 0 && (resp = recv_resp(sv[0])))
				criu_resp__free_unpacked(resp, NULL);
		}
	}
	close(sv[0]);
	while (waitpid(c, &st, 0) < 0 && errno == EINTR)
		;
	return rc;
}

int phos_criu_version(const char *criu_path, struct phos_err *e)
{
	char cmd[4200];
	FILE *f;
	int maj = 0, min = 0, sub = 0;
	char line[256];

	if (phos_snprintf(cmd, sizeof(cmd), "'%s' --version 2>/dev/null", criu_path) < 0)
		return phos_errf(e, "criu path too long");
	f = popen(cmd, "re");
	if (!f)
		return phos_errf(e, "cannot run %s: %s", criu_path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Version: %d.%d.%d", &maj, &min, &sub) >= 2)
			break;
	pclose(f);
	if (maj == 0)
		return phos_errnof(e, ENOENT, "%s does not run or prints no version: install CRIU >= 4.1 "
				   "(scripts/install-deps.sh)", criu_path);
	return maj * 10000 + min * 100 + sub;
}
