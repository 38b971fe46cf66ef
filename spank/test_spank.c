/*
 * Unit tests of the plugin's phosd client (client.c) and restore launcher
 * (restore.c), without Slurm: request building, replies from a scripted
 * phosd on a real unix socket, SLURM_RESTART_COUNT parsing, and the
 * spawn / stdio handover / exec-the-waiter sequence of a restored task with
 * t-restore-helper standing in for phos-restore ($T_RESTORE_HELPER).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "client.h"
#include "proto.h"
#include "restore.h"
#include "util.h"

static char tmpdir[] = "/tmp/phos-test-spank.XXXXXX";
static char sock[256];

static const struct phos_task_ref ref = { .job = 4242, .step = 3, .task = 17, .uid = 1000, .gid = 100 };

/* Encode and decode m, as phosd would see it. */
static struct phos_msg *wire(struct phos_msg *m)
{
	struct phos_msg *d;
	uint8_t *buf;
	size_t n, used;

	assert_non_null(m);
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	d = phos_msg_decode(buf, n, &used);
	assert_non_null(d);
	assert_int_equal(used, n);
	free(buf);
	phos_msg_free(m);
	return d;
}

static void assert_u64(struct phos_msg *m, uint16_t tag, uint64_t want)
{
	uint64_t v;

	assert_int_equal(phos_msg_get_u64(m, tag, &v), 0);
	assert_int_equal(v, want);
}

static void test_restart_count(void **state)
{
	static const struct {
		const char *s;
		int err;	/* 0: valid */
		uint32_t n;
	} cases[] = {
		{ "0", 0, 0 }, { "1", 0, 1 }, { "12", 0, 12 }, { "007", 0, 7 },
		{ "4294967295", 0, UINT32_MAX },
		{ "4294967296", ERANGE, 0 }, { "99999999999999999999999", ERANGE, 0 },
		{ "", EINVAL, 0 }, { NULL, EINVAL, 0 }, { "-1", EINVAL, 0 }, { "+1", EINVAL, 0 },
		{ " 1", EINVAL, 0 }, { "1 ", EINVAL, 0 }, { "0x1", EINVAL, 0 }, { "1.0", EINVAL, 0 },
		{ "(null)", EINVAL, 0 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint32_t n = 0xdead;

		errno = 0;
		if (cases[i].err) {
			assert_int_equal(phos_restart_count_parse(cases[i].s, &n), -1);
			assert_int_equal(errno, cases[i].err);
			assert_int_equal(n, 0xdead);
		} else {
			assert_int_equal(phos_restart_count_parse(cases[i].s, &n), 0);
			assert_int_equal(n, cases[i].n);
		}
	}
}

static void test_register_msg(void **state)
{
	struct phos_msg *m = wire(phos_client_register_msg(31337, &ref, 90));

	(void)state;
	assert_int_equal(m->type, PHOS_MSG_REGISTER);
	assert_u64(m, PHOS_A_PID, 31337);
	assert_u64(m, PHOS_A_JOB, 4242);
	assert_u64(m, PHOS_A_STEP, 3);
	assert_u64(m, PHOS_A_TASK, 17);
	assert_u64(m, PHOS_A_UID, 1000);
	assert_u64(m, PHOS_A_GID, 100);
	assert_u64(m, PHOS_A_MS, 90000);
	phos_msg_free(m);

	m = wire(phos_client_register_msg(1, &ref, 0));
	assert_u64(m, PHOS_A_MS, 0);
	phos_msg_free(m);
}

static void test_prepare_and_job_end_msg(void **state)
{
	struct phos_msg *m = wire(phos_client_prepare_msg(&ref));

	(void)state;
	assert_int_equal(m->type, PHOS_MSG_RESTORE_PREPARE);
	assert_u64(m, PHOS_A_JOB, 4242);
	assert_u64(m, PHOS_A_STEP, 3);
	assert_u64(m, PHOS_A_TASK, 17);
	assert_u64(m, PHOS_A_UID, 1000);
	assert_false(phos_msg_has(m, PHOS_A_PID));
	phos_msg_free(m);

	m = wire(phos_client_job_end_msg(4242, PHOS_F_KEEP_IMAGES));
	assert_int_equal(m->type, PHOS_MSG_JOB_END);
	assert_u64(m, PHOS_A_JOB, 4242);
	assert_u64(m, PHOS_A_FLAGS, PHOS_F_KEEP_IMAGES);
	phos_msg_free(m);
}

/*
 * A scripted phosd: a forked process that accepts one connection, checks
 * the request's type, sends a PROGRESS and then reply (or, for reply
 * NULL, closes without answering), and exits 0 if all went as expected.
 */
static pid_t fake_phosd(uint16_t want_type, struct phos_msg *reply)
{
	int lfd = phos_unix_listen(sock, 0600);
	pid_t p;

	assert_true(lfd >= 0);
	p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		struct phos_msg *req = NULL, *prog = NULL;
		int c = accept(lfd, NULL, NULL), rc = 0;

		if (c < 0 || !(req = phos_msg_recv(c, 10000)) || req->type != want_type)
			rc = 1;
		else if (reply) {
			reply->seq = req->seq;
			prog = phos_msg_new(PHOS_MSG_PROGRESS, req->seq);
			if (!prog || phos_msg_put_str(prog, PHOS_A_TEXT, "working") < 0 ||
			    phos_msg_send(c, prog, NULL, 0) < 0 || phos_msg_send(c, reply, NULL, 0) < 0)
				rc = 2;
		}
		phos_msg_free(prog);
		phos_msg_free(req);
		phos_msg_free(reply);
		_exit(rc);
	}
	close(lfd);
	phos_msg_free(reply);
	return p;
}

static void reap(pid_t p)
{
	int st;

	assert_int_equal(waitpid(p, &st, 0), p);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	unlink(sock);
}

static void test_register_ok(void **state)
{
	struct phos_err e = { "" };
	pid_t p = fake_phosd(PHOS_MSG_REGISTER, phos_reply_new(0, 0, NULL));

	(void)state;
	assert_int_equal(phos_client_register(sock, getpid(), &ref, 60, &e), 0);
	reap(p);
}

static void test_register_refused(void **state)
{
	struct phos_err e = { "" };
	pid_t p = fake_phosd(PHOS_MSG_REGISTER,
			     phos_reply_new(0, EPERM, "REGISTER is for root only"));

	(void)state;
	assert_int_equal(phos_client_register(sock, getpid(), &ref, 0, &e), -1);
	assert_int_equal(errno, EPERM);
	assert_string_equal(e.msg, "REGISTER is for root only");
	reap(p);

	/* Without MSG the errno's text stands in. */
	p = fake_phosd(PHOS_MSG_REGISTER, phos_reply_new(0, ENOSPC, NULL));
	assert_int_equal(phos_client_register(sock, getpid(), &ref, 0, &e), -1);
	assert_int_equal(errno, ENOSPC);
	assert_string_equal(e.msg, strerror(ENOSPC));
	reap(p);
}

static void test_no_phosd(void **state)
{
	struct phos_err e = { "" };

	(void)state;
	unlink(sock);
	assert_int_equal(phos_client_register(sock, getpid(), &ref, 0, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_non_null(strstr(e.msg, "cannot reach phosd at "));
	assert_non_null(strstr(e.msg, sock));
}

static void test_no_answer(void **state)
{
	struct phos_err e = { "" };
	pid_t p = fake_phosd(PHOS_MSG_JOB_END, NULL);

	(void)state;
	assert_int_equal(phos_client_job_end(sock, 4242, 0, &e), -1);
	assert_int_equal(errno, ECONNRESET);
	assert_non_null(strstr(e.msg, "no answer from phosd"));
	reap(p);
}

static void test_reply_without_errno(void **state)
{
	struct phos_err e = { "" };
	pid_t p = fake_phosd(PHOS_MSG_JOB_END, phos_msg_new(PHOS_MSG_REPLY, 0));

	(void)state;
	assert_int_equal(phos_client_job_end(sock, 4242, 0, &e), -1);
	assert_int_equal(errno, EBADMSG);
	reap(p);
}

static void test_job_end(void **state)
{
	struct phos_err e = { "" };
	pid_t p = fake_phosd(PHOS_MSG_JOB_END, phos_reply_new(0, 0, NULL));

	(void)state;
	assert_int_equal(phos_client_job_end(sock, 4242, 0, &e), 0);
	reap(p);
}

static void test_prepare_ok(void **state)
{
	struct phos_err e = { "" };
	struct phos_msg *r = phos_reply_new(0, 0, NULL);
	char path[64];
	uint64_t gen = 0;
	pid_t p;

	(void)state;
	assert_int_equal(phos_msg_put_str(r, PHOS_A_PATH, "/nfs/phos/4242/3/17/gen-5"), 0);
	assert_int_equal(phos_msg_put_u64(r, PHOS_A_GEN, 5), 0);
	p = fake_phosd(PHOS_MSG_RESTORE_PREPARE, r);
	assert_int_equal(phos_client_restore_prepare(sock, &ref, path, sizeof(path), &gen, NULL, &e), 0);
	assert_string_equal(path, "/nfs/phos/4242/3/17/gen-5");
	assert_int_equal(gen, 5);
	reap(p);

	/* A path that does not fit is refused, not truncated. */
	r = phos_reply_new(0, 0, NULL);
	assert_int_equal(phos_msg_put_str(r, PHOS_A_PATH, "/nfs/phos/4242/3/17/gen-5"), 0);
	assert_int_equal(phos_msg_put_u64(r, PHOS_A_GEN, 5), 0);
	p = fake_phosd(PHOS_MSG_RESTORE_PREPARE, r);
	assert_int_equal(phos_client_restore_prepare(sock, &ref, path, 10, &gen, NULL, &e), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	reap(p);

	/* Success without a PATH is a protocol error. */
	r = phos_reply_new(0, 0, NULL);
	assert_int_equal(phos_msg_put_u64(r, PHOS_A_GEN, 5), 0);
	p = fake_phosd(PHOS_MSG_RESTORE_PREPARE, r);
	assert_int_equal(phos_client_restore_prepare(sock, &ref, path, sizeof(path), &gen, NULL, &e), -1);
	assert_int_equal(errno, EBADMSG);
	reap(p);
}

static void test_prepare_none(void **state)
{
	struct phos_err e = { "" };
	char path[64];
	uint64_t gen;
	pid_t p = fake_phosd(PHOS_MSG_RESTORE_PREPARE,
			     phos_reply_new(0, ENOENT, "job 4242 has no checkpoint of step 3 task 17"));

	(void)state;
	assert_int_equal(phos_client_restore_prepare(sock, &ref, path, sizeof(path), &gen, NULL, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_string_equal(e.msg, "job 4242 has no checkpoint of step 3 task 17");
	reap(p);
}

static const char *helper(void)
{
	const char *h = getenv("T_RESTORE_HELPER");

	if (!h)
		fail_msg("T_RESTORE_HELPER is not set");
	return h;
}

static char *slurp(const char *path)
{
	static char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return buf;
}

/*
 * The whole sequence in a forked "task": spawn (as in task_init_privileged)
 * with a stray inheritable fd open, then, with stdout/stderr switched to
 * files (as Slurm does before task_init), hand over the stdio and exec the
 * waiter.  The task must end with the restorer's status and the restorer
 * must have written into the task's stdout/stderr.
 */
static void test_spawn_handover_wait(void **state)
{
	char out[300], o1[300], o2[300], want[1024];
	struct phos_restore_args a = {
		.helper = helper(), .image = "/nfs/phos/4242/3/17/gen-5", .socket = "/run/phos.sock",
		.config = "/etc/phos/n1.yaml",
		.job = 4242, .step = 3, .task = 17, .uid = 1000, .gid = 100,
	};
	int st;
	pid_t t;

	(void)state;
	snprintf(out, sizeof(out), "%s/helper.out", tmpdir);
	snprintf(o1, sizeof(o1), "%s/task.stdout", tmpdir);
	snprintf(o2, sizeof(o2), "%s/task.stderr", tmpdir);
	setenv("T_HELPER_OUT", out, 1);
	fflush(NULL);
	t = fork();
	assert_true(t >= 0);
	if (t == 0) {
		struct phos_err e;
		int stray = open("/dev/null", O_RDONLY), ctl, f1, f2;
		pid_t pid;

		if (stray < 0 || (ctl = phos_restore_spawn(&a, &pid, &e)) < 0)
			_exit(50);
		if (ctl <= 2 || (fcntl(ctl, F_GETFD) & FD_CLOEXEC) == 0)
			_exit(51);
		f1 = open(o1, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		f2 = open(o2, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (f1 < 0 || f2 < 0 || dup2(f1, 1) < 0 || dup2(f2, 2) < 0)
			_exit(52);
		close(f1);
		close(f2);
		if (phos_restore_handover(ctl, &e) < 0)
			_exit(53);
		phos_restore_exec_wait(a.helper, ctl, &e);
		_exit(54);
	}
	assert_int_equal(waitpid(t, &st, 0), t);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 7);
	snprintf(want, sizeof(want),
		 "%s\n--image\n/nfs/phos/4242/3/17/gen-5\n--control-fd\n3\n--socket\n/run/phos.sock\n"
		 "--job\n4242\n--step\n3\n--task\n17\n--uid\n1000\n--gid\n100\n"
		 "--config\n/etc/phos/n1.yaml\nfds: 3\n", a.helper);
	assert_string_equal(slurp(out), want);
	assert_string_equal(slurp(o1), "restored stdout\n");
	assert_string_equal(slurp(o2), "restored stderr\n");
}

static void test_spawn_missing_helper(void **state)
{
	struct phos_restore_args a = {
		.helper = "/nonexistent/phos-restore", .image = "/x", .socket = "/y",
	};
	struct phos_err e = { "" };
	pid_t pid = 0;

	(void)state;
	assert_int_equal(phos_restore_spawn(&a, &pid, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_non_null(strstr(e.msg, "/nonexistent/phos-restore"));
	/* The failed child was reaped. */
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

static void test_handover_to_dead_helper(void **state)
{
	struct phos_restore_args a = { .helper = helper(), .image = "/x", .socket = "/y" };
	struct phos_err e = { "" };
	pid_t pid;
	int ctl, st;

	(void)state;
	unsetenv("T_HELPER_OUT");	/* the helper exits 99 at once */
	setenv("T_HELPER_NO_OUT", "1", 1);
	ctl = phos_restore_spawn(&a, &pid, &e);
	assert_true(ctl > 2);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(WEXITSTATUS(st), 99);
	assert_int_equal(phos_restore_handover(ctl, &e), -1);
	assert_true(errno == EPIPE || errno == ECONNRESET);
	assert_non_null(strstr(e.msg, "has exited"));
	close(ctl);
	unsetenv("T_HELPER_NO_OUT");
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(sock, sizeof(sock), "%s/phosd.sock", tmpdir);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restart_count),
		cmocka_unit_test(test_register_msg),
		cmocka_unit_test(test_prepare_and_job_end_msg),
		cmocka_unit_test(test_register_ok),
		cmocka_unit_test(test_register_refused),
		cmocka_unit_test(test_no_phosd),
		cmocka_unit_test(test_no_answer),
		cmocka_unit_test(test_reply_without_errno),
		cmocka_unit_test(test_job_end),
		cmocka_unit_test(test_prepare_ok),
		cmocka_unit_test(test_prepare_none),
		cmocka_unit_test(test_spawn_handover_wait),
		cmocka_unit_test(test_spawn_missing_helper),
		cmocka_unit_test(test_handover_to_dead_helper),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests(tests, setup, teardown);
}
