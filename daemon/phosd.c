/*
 * phosd.c - the PhOS node daemon: startup, main loop, shutdown.
 *
 *   main -> parse args -> load config -> open log -> make dirs -> listen
 *        -> loop { accept -> server_spawn | signal -> reload/stop }
 *        -> close listener -> wait for clients -> teardown
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "criu.h"
#include "handlers.h"
#include "log.h"
#include "ops.h"
#include "prefetch.h"
#include "registry.h"
#include "restore.h"
#include "gpu.h"
#include "phosd.h"
#include "server.h"
#include "stage.h"
#include "util.h"

struct phosd *phosd;

static struct registry registry;
static struct oplist oplist;

static struct phosd daemon_state = {
	.reg = &registry,
	.ops = &oplist,
	.store = { .root_fd = -1 },
	.listen_fd = -1,
	.tcp_fd = -1,
	.signal_fd = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: phosd [OPTION]...\n"
		"PhOS node daemon: checkpoints and restores processes and GPU jobs on this node.\n"
		"\n"
		"  -c, --config FILE    configuration file (default %s)\n"
		"  -f, --foreground     stay in the foreground, log to stderr unless\n"
		"                       phos.yaml says log_target: syslog (systemd uses this)\n"
		"  -t, --test-config    check the configuration, print it and exit\n"
		"  -v, --verbose        log at debug level\n"
		"  -V, --version        print the version and exit\n"
		"  -h, --help           print this help and exit\n"
		"\n"
		"See phosd(8) and phos.yaml(5).\n",
		PHOS_CONFIG_DEFAULT);
}

static uid_t lookup_uid(const char *user)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getpwnam_r(user, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return (uid_t)-1;
	return pw.pw_uid;
}

static void print_config(const struct phos_config *c)
{
	printf("socket: %s\n", c->socket);
	printf("checkpoint_dir: %s\n", c->checkpoint_dir);
	printf("state_dir: %s\n", c->state_dir);
	printf("key_file: %s\n", c->key_file);
	printf("criu_path: %s\n", c->criu_path);
	printf("log_target: %s\n", c->log_target);
	printf("log_level: %s\n", phos_log_level_name(c->log_level));
	printf("keep_generations: %d\n", c->keep_generations);
	printf("keep_images_after_job: %s\n", c->keep_images_after_job ? "true" : "false");
	printf("gpu_concurrent_restore: %s\n", c->gpu_concurrent_restore ? "true" : "false");
	printf("gpu_compress_level: %d\n", c->gpu_compress_level);
	printf("gpu_stage_pool_gib: %d\n", c->gpu_stage_pool_gib);
	printf("gpu_stage_pool_pinned: %s\n", c->gpu_stage_pool_pinned ? "true" : "false");
	printf("gpu_rank_ms: %d\n", c->gpu_rank_ms);
	printf("predump_rounds: %d\n", c->predump_rounds);
	printf("checkpoint_timeout: %d\n", c->checkpoint_timeout);
	printf("listen: \"%s\"\n", c->listen);
	printf("slurm_user: %s\n", c->slurm_user);
	printf("munge_socket: \"%s\"\n", c->munge_socket);
}

/* Load the config at startup: a missing default file means defaults. */
static int load_config(struct phos_config *c, const char *path, bool explicit_path)
{
	struct phos_err e;

	phos_config_defaults(c);
	if (phos_config_load(c, path, &e) == 0)
		return 0;
	if (errno == ENOENT && !explicit_path)
		return 0;
	fprintf(stderr, "phosd: %s\n", e.msg);
	return -1;
}

static void reload(struct phosd *d)
{
	struct phos_config c = d->cfg;
	struct phos_err e;

	if (phos_config_load(&c, d->config_path, &e) < 0) {
		log_err("reload: %s; keeping the running configuration", e.msg);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (strcmp(c.socket, d->cfg.socket))
		log_warn("reload: socket changed to %s: takes effect after a restart", c.socket);
	if (c.gpu_stage_pool_gib != d->cfg.gpu_stage_pool_gib)
		log_warn("reload: gpu_stage_pool_gib changed to %d: takes effect after a restart",
			 c.gpu_stage_pool_gib);
	if (c.gpu_stage_pool_pinned != d->cfg.gpu_stage_pool_pinned)
		log_warn("reload: gpu_stage_pool_pinned changed to %s: takes effect after a restart",
			 c.gpu_stage_pool_pinned ? "true" : "false");
	phos_strlcpy(c.socket, d->cfg.socket, sizeof(c.socket));
	d->cfg = c;
	d->slurm_uid = lookup_uid(c.slurm_user);
	pthread_mutex_unlock(&d->lock);
	phos_log_set_level(c.log_level);
	log_notice("configuration reloaded from %s", d->config_path);
}

static int setup_signals(struct phosd *d)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	/* Block in every thread (threads inherit the mask), read via signalfd. */
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	d->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return d->signal_fd < 0 ? -1 : 0;
}

/*
 * criu keeps what it probed of the kernel (kerndat) in /run/criu.kdat,
 * but only where /run is a tmpfs (gone at reboot).  Elsewhere every criu
 * run probes again: network namespaces, netfilter, nftables, 0.1-0.2 s of
 * each checkpoint and restore, longer on a cold page cache.  Said once at
 * start, after the feature check (which writes the cache where it can).
 */
#define CRIU_RUNDIR "/run"	/* criu's RUNDIR, as built (scripts/install-deps.sh) */
#define CRIU_KDAT CRIU_RUNDIR "/criu.kdat"

static void criu_kdat_note(void)
{
	struct statfs sf;

	if (access(CRIU_KDAT, F_OK) == 0 || errno != ENOENT)
		return;
	if (statfs(CRIU_RUNDIR, &sf) == 0 && sf.f_type != TMPFS_MAGIC)
		log_info("criu cannot cache what it probes of the kernel: " CRIU_RUNDIR " is not a "
			 "tmpfs, so each checkpoint and restore probes it again (0.1-0.2 s); on a "
			 "systemd node /run is a tmpfs");
	else if (access(CRIU_KDAT ".tmp", F_OK) == 0)
		log_info("criu cannot write what it probes of the kernel to " CRIU_KDAT ": a stale "
			 CRIU_KDAT ".tmp (left by a criu that was killed) is in its way; remove it, "
			 "or each checkpoint and restore probes the kernel again (0.1-0.2 s)");
}

/*
 * Ask criu whether it can track dirty memory, and keep the files it maps
 * once started in state_dir's PHOS_PREFETCH_CRIU: a restore reads them
 * ahead first, so that criu does not start from a cold page cache behind
 * the restored process's read-ahead (prefetch.h).
 */
static bool criu_probe(const struct phos_config *c)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	FILE *f = NULL;
	int fd = -1, mt;

	if (phos_snprintf(path, sizeof(path), "%s/" PHOS_PREFETCH_CRIU, c->state_dir) == 0 &&
	    phos_snprintf(tmp, sizeof(tmp), "%s.new", path) == 0 &&
	    (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644)) >= 0 &&
	    !(f = fdopen(fd, "w")))
		close(fd);
	mt = phos_criu_has_mem_track(c->criu_path, f);
	if (f) {
		bool some = ftell(f) > 0;

		if (fclose(f) == 0 && some && rename(tmp, path) == 0)
			log_debug("the files criu maps, read ahead by restores first: %s", path);
		else
			unlink(tmp);
	}
	if (mt >= 0)
		criu_kdat_note();
	return mt == 1;
}

static int make_dirs(const struct phos_config *c)
{
	struct stat st;

	if (phos_mkdir_p(c->state_dir, 0755) < 0) {
		log_err("cannot create state_dir %s: %m", c->state_dir);
		return -1;
	}
	if (phos_mkdir_p(c->checkpoint_dir, 0755) < 0) {
		log_err("cannot create checkpoint_dir %s: %m", c->checkpoint_dir);
		return -1;
	}
	if (stat(c->checkpoint_dir, &st) == 0 &&
	    (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))))
		log_warn("checkpoint_dir %s is writable by users other than root: "
			 "fix with 'chown root: %s && chmod 0755 %s'",
			 c->checkpoint_dir, c->checkpoint_dir, c->checkpoint_dir);
	return 0;
}

static int open_listener(struct phosd *d)
{
	char dir[sizeof(d->cfg.socket)];
	char *slash;

	phos_strlcpy(dir, d->cfg.socket, sizeof(dir));
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (phos_mkdir_p(dir, 0755) < 0) {
			log_err("cannot create socket directory %s: %m", dir);
			return -1;
		}
	}
	/* Anyone may connect; SO_PEERCRED decides what they may do. */
	d->listen_fd = phos_unix_listen(d->cfg.socket, 0666);
	if (d->listen_fd < 0) {
		log_err("cannot listen on %s: %m%s", d->cfg.socket,
			errno == EEXIST ? " (a file that is not a socket is in the way)" : "");
		return -1;
	}
	return 0;
}

/* TCP listener for munge-authenticated requests from other nodes. */
static int open_tcp(struct phosd *d)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE }, *res = NULL;
	char host[64], *colon;
	int one = 1, rc;

	if (!d->cfg.listen[0])
		return 0;
	phos_strlcpy(host, d->cfg.listen, sizeof(host));
	colon = strrchr(host, ':');
	*colon = '\0';
	rc = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, colon + 1, &hints, &res);
	if (rc != 0) {
		log_err("listen %s: %s", d->cfg.listen, gai_strerror(rc));
		return -1;
	}
	d->tcp_fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (d->tcp_fd < 0 || setsockopt(d->tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(d->tcp_fd, res->ai_addr, res->ai_addrlen) < 0 || listen(d->tcp_fd, 64) < 0) {
		log_err("cannot listen on %s: %m", d->cfg.listen);
		freeaddrinfo(res);
		phos_closep(&d->tcp_fd);
		return -1;
	}
	freeaddrinfo(res);
	log_notice("accepting munge-authenticated requests on %s", d->cfg.listen);
	return 0;
}

static int daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (chdir("/") < 0)
		return -1;
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
	return 0;
}

/* Open the key and the image store; clean what a crash left behind. */
static int open_store(struct phosd *d)
{
	struct phos_err e = { "" };
	const char *helper = getenv("PHOS_RESTORE_HELPER");
	int n;

	if (phos_key_load(&d->key, d->cfg.key_file, &e) < 0) {
		log_err("%s", e.msg);
		return -1;
	}
	if (phos_store_open(&d->store, d->cfg.checkpoint_dir, &d->key, true, &e) < 0) {
		log_err("%s", e.msg);
		return -1;
	}
	n = phos_image_cleanup(&d->store, NULL, 0, &e);
	if (n < 0)
		log_warn("cleaning stale partial images: %s", e.msg);
	else if (n > 0)
		log_notice("removed %d partial image(s) left by an interrupted checkpoint", n);
	phos_strlcpy(d->restore_helper, helper && *helper ? helper : PHOS_RESTORE_BIN,
		     sizeof(d->restore_helper));
	if (access(d->restore_helper, X_OK) < 0)
		log_warn("restore helper %s: %m: restores will fail", d->restore_helper);
	return 0;
}

static void report_images(struct phosd *d)
{
	struct phos_image_task_info *tasks = NULL;
	size_t n = 0;

	if (phos_image_list_tasks(&d->store, NULL, NULL, &tasks, &n, NULL) == 0 && n)
		log_notice("%zu task(s) have checkpoint images under %s (phosctl list)", n,
			   d->cfg.checkpoint_dir);
	free(tasks);
}

static void *timer_main(void *arg)
{
	struct phosd *d = arg;

	while (!d->stopping) {
		sleep(1);
		if (!d->stopping)
			periodic_tick();
	}
	return NULL;
}

static void main_loop(struct phosd *d)
{
	struct pollfd p[3] = {
		{ .fd = d->listen_fd, .events = POLLIN },
		{ .fd = d->signal_fd, .events = POLLIN },
		{ .fd = d->tcp_fd, .events = POLLIN },
	};

	while (!d->stopping) {
		if (poll(p, d->tcp_fd >= 0 ? 3 : 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("poll: %m");
			break;
		}
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(d->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGHUP) {
					reload(d);
				} else {
					log_notice("signal %u: shutting down", si.ssi_signo);
					d->stopping = true;
				}
			}
		}
		if (p[0].revents & POLLIN) {
			int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);

			if (fd < 0) {
				if (errno != EINTR && errno != EAGAIN)
					log_warn("accept: %m");
				continue;
			}
			if (server_spawn(fd, false) < 0)
				log_warn("cannot serve a client: %m");
		}
		if (d->tcp_fd >= 0 && (p[2].revents & POLLIN)) {
			int fd = accept4(d->tcp_fd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0 && server_spawn(fd, true) < 0)
				log_warn("cannot serve a remote client: %m");
		}
	}
}

static void teardown(struct phosd *d)
{
	int saved = errno;

	if (d->listen_fd >= 0) {
		phos_closep(&d->listen_fd);
		unlink(d->cfg.socket);
	}
	phos_closep(&d->signal_fd);
	phos_closep(&d->tcp_fd);
	phos_store_close(&d->store);
	phos_key_clear(&d->key);
	/* Give clients in flight a moment to finish their replies. */
	for (int i = 0; i < 50; i++) {
		unsigned n;

		pthread_mutex_lock(&d->lock);
		n = d->nclients;
		pthread_mutex_unlock(&d->lock);
		if (n == 0)
			break;
		usleep(100000);
	}
	errno = saved;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "test-config", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct phosd *d = &daemon_state;
	bool foreground = false, test = false, explicit_path = false;
	int verbose = 0, c;

	d->config_path = PHOS_CONFIG_DEFAULT;
	while ((c = getopt_long(argc, argv, "c:ftvVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			d->config_path = optarg;
			explicit_path = true;
			break;
		case 'f':
			foreground = true;
			break;
		case 't':
			test = true;
			break;
		case 'v':
			verbose++;
			break;
		case 'V':
			printf("phosd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "phosd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (load_config(&d->cfg, d->config_path, explicit_path) < 0)
		return 2;
	if (test) {
		print_config(&d->cfg);
		return 0;
	}
	if (verbose)
		d->cfg.log_level = LOG_DEBUG;
	if (geteuid() != 0)
		fprintf(stderr, "phosd: warning: not running as root: checkpoints will fail\n");

	if (!foreground && daemonize() < 0) {
		fprintf(stderr, "phosd: cannot daemonize: %s\n", strerror(errno));
		return 1;
	}
	phos_log_open("phosd",
		      strcmp(d->cfg.log_target, "syslog") == 0 || !foreground ?
		      PHOS_LOG_SYSLOG : PHOS_LOG_STDERR, d->cfg.log_level);
	phosd = d;
	d->start_ms = phos_now_ms();
	d->slurm_uid = lookup_uid(d->cfg.slurm_user);
	if (gethostname(d->host, sizeof(d->host)) < 0)
		phos_strlcpy(d->host, "unknown", sizeof(d->host));
	d->host[sizeof(d->host) - 1] = '\0';

	if (setup_signals(d) < 0) {
		log_err("cannot set up signal handling: %m");
		return 1;
	}
	if (make_dirs(&d->cfg) < 0 || open_listener(d) < 0 || open_tcp(d) < 0) {
		teardown(d);
		return 1;
	}
	restore_prune_logs(d->cfg.state_dir);
	if (open_store(d) < 0) {
		teardown(d);
		return 1;
	}
	report_images(d);
	stage_start((unsigned)d->cfg.gpu_stage_pool_gib,
		    d->cfg.gpu_stage_pool_pinned ? gpu_helper() : NULL);
	if (!phos_criu_probe_breakpoints())
		log_notice("hardware breakpoints do not fire on this machine (a virtual machine?): "
			   "CRIU will trace syscalls instead (slower parasite exit, same images)");
	d->mem_track = criu_probe(&d->cfg);
	if (!d->mem_track)
		log_notice("the kernel cannot track dirty memory (no soft-dirty): pre-dump rounds are "
			   "skipped and every checkpoint is one full dump");
	pthread_t timer;
	if (pthread_create(&timer, NULL, timer_main, d) != 0) {
		log_err("cannot start the timer thread");
		teardown(d);
		return 1;
	}
	pthread_detach(timer);
	log_notice("phosd %s ready on %s (images in %s, config %s)", PACKAGE_VERSION,
		   d->cfg.socket, d->cfg.checkpoint_dir, d->config_path);
	main_loop(d);
	teardown(d);
	log_notice("phosd stopped");
	phos_log_close();
	return 0;
}
