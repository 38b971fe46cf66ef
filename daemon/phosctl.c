/*
 * phosctl.c - command-line client of phosd.
 *
 * Exit status: 0 success, 1 the operation failed, 2 usage error or phosd
 * cannot be reached.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "conf.h"
#include "proto.h"
#include "util.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

static char socket_path[108];
static const char *remote_host;		/* -H HOST:PORT: munge over TCP */
static const char *munge_socket;
static bool quiet;

static const char *default_socket(void)
{
	static struct phos_config c;
	const char *env = secure_getenv("PHOS_SOCKET");

	if (env && *env)
		return env;
	/* phos.yaml is world-readable on a normal install; defaults otherwise. */
	if (phos_config_load(&c, PHOS_CONFIG_DEFAULT, NULL) < 0)
		phos_config_defaults(&c);
	return c.socket;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: phosctl [OPTION]... COMMAND [ARG]...\n"
		"Talk to phosd, the PhOS checkpoint/restore daemon of this node.\n"
		"\n"
		"Commands:\n"
		"  status                       what phosd is doing: tasks, operations, progress\n"
		"  list [--job ID]              checkpoint images you may see\n"
		"  checkpoint --pid PID | --job ID [--step ID] [--task ID]\n"
		"             [--leave-running] [--pre-dump N] [--no-wait]\n"
		"                               checkpoint a process tree or a Slurm task\n"
		"  restore IMAGE_DIR | --job ID --step ID --task ID [--generation N] [--detach]\n"
		"                               restore an image (attached to this terminal\n"
		"                               unless --detach)\n"
		"  cancel OPID                  cancel an operation in flight\n"
		"\n"
		"Options:\n"
		"  -s, --socket PATH   phosd's socket (default: $PHOS_SOCKET, else phos.yaml's,\n"
		"                      now %s)\n"
		"  -H, --host HOST:PORT  talk to phosd on another node over TCP, authenticated\n"
		"                      by munge (phos.yaml `listen` on that node)\n"
		"  -m, --munge-socket PATH  munged's socket (default: libmunge's)\n"
		"  -q, --quiet         print only errors and results\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          print this help and exit\n"
		"\n"
		"See phosctl(1).\n",
		default_socket());
}

static int die_usage(const char *what, const char *arg)
{
	fprintf(stderr, "phosctl: %s%s\nTry 'phosctl --help'.\n", what, arg);
	return EXIT_USAGE;
}

static int connect_tcp(const char *hostport)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	char host[256], *colon;
	int fd = -1, rc;

	if (phos_strlcpy(host, hostport, sizeof(host)) < 0 || !(colon = strrchr(host, ':'))) {
		fprintf(stderr, "phosctl: --host: expected HOST:PORT, got '%s'\n", hostport);
		return -1;
	}
	*colon = '\0';
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "phosctl: %s: %s\n", hostport, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		phos_closep(&fd);
	}
	freeaddrinfo(res);
	if (fd < 0)
		fprintf(stderr, "phosctl: cannot reach phosd at %s: %s (is `listen` set in its "
			"phos.yaml?)\n", hostport, strerror(errno));
	return fd;
}

static int connect_phosd(void)
{
	if (remote_host)
		return connect_tcp(remote_host);

	int fd = phos_unix_connect(socket_path);

	if (fd < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			fprintf(stderr, "phosctl: phosd is not running on this node (no socket at %s): "
				"start it with 'systemctl start phosd' or pass --socket\n", socket_path);
		else
			fprintf(stderr, "phosctl: cannot connect to phosd at %s: %s\n",
				socket_path, strerror(errno));
	}
	return fd;
}

/* Send req, print PROGRESS lines, return the REPLY (NULL on transport error). */
static struct phos_msg *transact(struct phos_msg *req, const int *fds, int nfds)
{
	struct phos_msg *m;
	int fd = connect_phosd();

	if (fd < 0)
		return NULL;
	struct phos_msg *wrapped = NULL;
	if (remote_host) {
		struct phos_err e = { "" };

		if (nfds) {
			fprintf(stderr, "phosctl: a remote restore cannot use this terminal: add --detach\n");
			close(fd);
			return NULL;
		}
		wrapped = phos_auth_wrap(req, munge_socket, &e);
		if (!wrapped) {
			fprintf(stderr, "phosctl: %s\n", e.msg);
			close(fd);
			return NULL;
		}
		req = wrapped;
	}
	int src = phos_msg_send(fd, req, fds, nfds);
	phos_msg_free(wrapped);
	if (src < 0) {
		fprintf(stderr, "phosctl: sending to phosd: %s\n", strerror(errno));
		close(fd);
		return NULL;
	}
	for (;;) {
		const char *text;
		uint64_t done = 0, total = 0;

		m = phos_msg_recv(fd, -1);
		if (!m) {
			fprintf(stderr, "phosctl: phosd closed the connection without an answer (%s): "
				"see its log\n", strerror(errno));
			break;
		}
		if (m->type != PHOS_MSG_PROGRESS)
			break;
		if (!quiet && phos_msg_get_str(m, PHOS_A_TEXT, &text) == 0) {
			phos_msg_get_u64(m, PHOS_A_DONE, &done);
			phos_msg_get_u64(m, PHOS_A_TOTAL, &total);
			if (total)
				fprintf(stderr, "phosctl: [%3llu%%] %s\n",
					(unsigned long long)(done * 100 / total), text);
			else
				fprintf(stderr, "phosctl: %s\n", text);
		}
		phos_msg_free(m);
	}
	close(fd);
	return m;
}

/* Print the reply's outcome; returns the exit status. */
static int finish(struct phos_msg *rep)
{
	uint64_t err = EPROTO;
	const char *msg, *text;

	if (!rep)
		return EXIT_USAGE;
	if (rep->type != PHOS_MSG_REPLY || phos_msg_get_u64(rep, PHOS_A_ERRNO, &err) < 0) {
		fprintf(stderr, "phosctl: unexpected answer from phosd (type %u)\n", rep->type);
		phos_msg_free(rep);
		return EXIT_FAIL;
	}
	if (phos_msg_get_str(rep, PHOS_A_TEXT, &text) == 0)
		fputs(text, stdout);
	if (phos_msg_get_str(rep, PHOS_A_MSG, &msg) == 0)
		fprintf(err ? stderr : stdout, "%s%s\n", err ? "phosctl: " : "", msg);
	else if (err)
		fprintf(stderr, "phosctl: %s\n", strerror((int)err));
	phos_msg_free(rep);
	return err ? EXIT_FAIL : 0;
}

static int put_u64_arg(struct phos_msg *m, uint16_t tag, const char *name, const char *v)
{
	uint64_t x;

	if (phos_parse_u64(v, &x) < 0) {
		fprintf(stderr, "phosctl: %s: expected a non-negative integer, got '%s'\n", name, v);
		return -1;
	}
	return phos_msg_put_u64(m, tag, x);
}

static int cmd_simple(uint16_t type, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "job", required_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct phos_msg *m = phos_msg_new(type, 1);
	int c;

	if (!m)
		return EXIT_FAIL;
	optind = 1;
	while ((c = getopt_long(argc, argv, "j:", opts, NULL)) != -1) {
		if (c == 'j' && type == PHOS_MSG_LIST) {
			if (put_u64_arg(m, PHOS_A_JOB, "--job", optarg) < 0)
				goto usage;
		} else {
			goto usage;
		}
	}
	if (optind < argc && type == PHOS_MSG_STATUS) {
		if (put_u64_arg(m, PHOS_A_OPID, "OPID", argv[optind++]) < 0)
			goto usage;
	}
	if (optind < argc) {
		fprintf(stderr, "phosctl: unexpected argument '%s'\n", argv[optind]);
		goto usage;
	}
	c = finish(transact(m, NULL, 0));
	phos_msg_free(m);
	return c;
usage:
	phos_msg_free(m);
	return EXIT_USAGE;
}

static int cmd_checkpoint(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "job", required_argument, NULL, 'j' },
		{ "step", required_argument, NULL, 's' },
		{ "task", required_argument, NULL, 't' },
		{ "leave-running", no_argument, NULL, 'l' },
		{ "pre-dump", required_argument, NULL, 'P' },
		{ "no-wait", no_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	struct phos_msg *m = phos_msg_new(PHOS_MSG_CHECKPOINT, 1);
	uint64_t flags = PHOS_F_WAIT;
	bool pid = false, job = false;
	int c;

	if (!m)
		return EXIT_FAIL;
	optind = 1;
	while ((c = getopt_long(argc, argv, "p:j:s:t:lP:n", opts, NULL)) != -1) {
		switch (c) {
		case 'p': pid = true; if (put_u64_arg(m, PHOS_A_PID, "--pid", optarg) < 0) goto usage; break;
		case 'j': job = true; if (put_u64_arg(m, PHOS_A_JOB, "--job", optarg) < 0) goto usage; break;
		case 's': if (put_u64_arg(m, PHOS_A_STEP, "--step", optarg) < 0) goto usage; break;
		case 't': if (put_u64_arg(m, PHOS_A_TASK, "--task", optarg) < 0) goto usage; break;
		case 'P': if (put_u64_arg(m, PHOS_A_PREDUMP, "--pre-dump", optarg) < 0) goto usage; break;
		case 'l': flags |= PHOS_F_LEAVE_RUNNING; break;
		case 'n': flags &= ~(uint64_t)PHOS_F_WAIT; break;
		default: goto usage;
		}
	}
	if (pid == job || optind < argc) {
		fprintf(stderr, "phosctl: checkpoint needs exactly one of --pid PID or --job ID\n");
		goto usage;
	}
	if (phos_msg_put_u64(m, PHOS_A_FLAGS, flags) < 0)
		goto usage;
	c = finish(transact(m, NULL, 0));
	phos_msg_free(m);
	return c;
usage:
	phos_msg_free(m);
	return EXIT_USAGE;
}

/* path made absolute and normalised lexically ("." "..", "//"). */
static int absolute_path(const char *path, char *out, size_t size)
{
	char buf[4096], *save = NULL, *tok;
	size_t len = 0;

	if (path[0] == '/') {
		if (phos_strlcpy(buf, path, sizeof(buf)) < 0)
			return -1;
	} else {
		char cwd[2048];

		if (!getcwd(cwd, sizeof(cwd)) || phos_snprintf(buf, sizeof(buf), "%s/%s", cwd, path) < 0)
			return -1;
	}
	out[0] = '\0';
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (strcmp(tok, ".") == 0)
			continue;
		if (strcmp(tok, "..") == 0) {
			char *slash = strrchr(out, '/');

			len = slash ? (size_t)(slash - out) : 0;
			out[len] = '\0';
			continue;
		}
		if (len + 1 + strlen(tok) + 1 > size) {
			errno = ENAMETOOLONG;
			return -1;
		}
		out[len++] = '/';
		strcpy(out + len, tok);
		len += strlen(tok);
	}
	if (!len)
		phos_strlcpy(out, "/", size);
	return 0;
}

static int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "job", required_argument, NULL, 'j' },
		{ "step", required_argument, NULL, 's' },
		{ "task", required_argument, NULL, 't' },
		{ "generation", required_argument, NULL, 'g' },
		{ "detach", no_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	struct phos_msg *m = phos_msg_new(PHOS_MSG_RESTORE, 1);
	static const int stdio[3] = { 0, 1, 2 };
	bool job = false, detach = false;
	int c;

	if (!m)
		return EXIT_FAIL;
	optind = 1;
	while ((c = getopt_long(argc, argv, "j:s:t:g:d", opts, NULL)) != -1) {
		switch (c) {
		case 'j': job = true; if (put_u64_arg(m, PHOS_A_JOB, "--job", optarg) < 0) goto usage; break;
		case 's': if (put_u64_arg(m, PHOS_A_STEP, "--step", optarg) < 0) goto usage; break;
		case 't': if (put_u64_arg(m, PHOS_A_TASK, "--task", optarg) < 0) goto usage; break;
		case 'g': if (put_u64_arg(m, PHOS_A_GEN, "--generation", optarg) < 0) goto usage; break;
		case 'd': detach = true; break;
		default: goto usage;
		}
	}
	if (!job && optind < argc) {
		char abs[4096];

		/* Users cannot search the image tree (phosd reads it for them):
		 * make the path absolute without looking at it. */
		if (absolute_path(argv[optind], abs, sizeof(abs)) < 0) {
			fprintf(stderr, "phosctl: %s: %s\n", argv[optind], strerror(errno));
			goto fail;
		}
		if (phos_msg_put_str(m, PHOS_A_PATH, abs) < 0)
			goto fail;
		optind++;
	} else if (!job) {
		fprintf(stderr, "phosctl: restore needs an IMAGE_DIR or --job ID --step ID --task ID\n");
		goto usage;
	}
	if (optind < argc) {
		fprintf(stderr, "phosctl: unexpected argument '%s'\n", argv[optind]);
		goto usage;
	}
	if (!detach && phos_msg_put_str(m, PHOS_A_FDMAP, "0,1,2") < 0)
		goto fail;
	c = finish(transact(m, detach ? NULL : stdio, detach ? 0 : 3));
	phos_msg_free(m);
	return c;
fail:
	phos_msg_free(m);
	return EXIT_FAIL;
usage:
	phos_msg_free(m);
	return EXIT_USAGE;
}

static int cmd_cancel(int argc, char **argv)
{
	struct phos_msg *m;
	int c;

	if (argc != 2) {
		fprintf(stderr, "phosctl: cancel needs exactly one OPID (see 'phosctl status')\n");
		return EXIT_USAGE;
	}
	m = phos_msg_new(PHOS_MSG_CANCEL, 1);
	if (!m)
		return EXIT_FAIL;
	if (put_u64_arg(m, PHOS_A_OPID, "OPID", argv[1]) < 0) {
		phos_msg_free(m);
		return EXIT_USAGE;
	}
	c = finish(transact(m, NULL, 0));
	phos_msg_free(m);
	return c;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "host", required_argument, NULL, 'H' },
		{ "munge-socket", required_argument, NULL, 'm' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL, *cmd;
	int c;

	/* '+': stop at the command; its options are parsed by the command. */
	while ((c = getopt_long(argc, argv, "+s:H:m:qVh", opts, NULL)) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 'H': remote_host = optarg; break;
		case 'm': munge_socket = optarg; break;
		case 'q': quiet = true; break;
		case 'V': printf("phosctl %s\n", PACKAGE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (phos_strlcpy(socket_path, sock ? sock : default_socket(), sizeof(socket_path)) < 0)
		return die_usage("socket path too long: ", sock ? sock : "");
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	/* `phosctl COMMAND --help`: the one help there is */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
	if (strcmp(cmd, "status") == 0)
		c = cmd_simple(PHOS_MSG_STATUS, argc, argv);
	else if (strcmp(cmd, "list") == 0)
		c = cmd_simple(PHOS_MSG_LIST, argc, argv);
	else if (strcmp(cmd, "checkpoint") == 0)
		c = cmd_checkpoint(argc, argv);
	else if (strcmp(cmd, "restore") == 0)
		c = cmd_restore(argc, argv);
	else if (strcmp(cmd, "cancel") == 0)
		c = cmd_cancel(argc, argv);
	else
		return die_usage("unknown command: ", cmd);
	if (c == EXIT_USAGE)
		fprintf(stderr, "Try 'phosctl --help'.\n");
	return c;
}
