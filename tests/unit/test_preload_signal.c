/*
 * test_preload_signal.c - SIGTERM under PHOS_CHECKPOINT=1: libphos keeps
 * it, the application's own disposition still runs afterwards exactly as
 * without libphos (handler with the sender's siginfo and its own mask,
 * SIG_DFL kills, SIG_IGN ignores, SA_RESETHAND resets).  Runs
 * test_preload_sigapp with LD_PRELOAD=libphos.so.
 */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "preload_test.h"

struct app {
	pid_t pid;
	FILE *out;
};

static void app_start(struct app *a, const char *mode, int checkpoint)
{
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	a->pid = fork();
	assert_true(a->pid >= 0);
	if (a->pid == 0) {
		char *argv[] = { SIGAPP, (char *)mode, NULL };

		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		setenv("LD_PRELOAD", PHOS_SO, 1);
		if (checkpoint)
			setenv("PHOS_CHECKPOINT", "1", 1);
		else
			unsetenv("PHOS_CHECKPOINT");
		unsetenv("PHOS_DEBUG");
		execv(SIGAPP, argv);
		_exit(127);
	}
	close(fds[1]);
	a->out = fdopen(fds[0], "r");
	assert_non_null(a->out);
}

static void expect_line(struct app *a, const char *want)
{
	char line[256] = "";

	if (!fgets(line, sizeof(line), a->out))
		fail_msg("expected \"%s\", got EOF", want);
	line[strcspn(line, "\n")] = 0;
	if (strcmp(line, want) != 0)
		fail_msg("expected \"%s\", got \"%s\"", want, line);
}

static int app_wait(struct app *a)
{
	int status;

	assert_int_equal(waitpid(a->pid, &status, 0), a->pid);
	fclose(a->out);
	return status;
}

static void test_handler_runs_with_siginfo(void **state)
{
	struct app a;
	char want[128];
	int st;

	(void)state;
	app_start(&a, "handler", 1);
	expect_line(&a, "ready");
	assert_int_equal(kill(a.pid, SIGTERM), 0);
	/* the sender's pid and SI_USER, with the app's sa_mask applied */
	snprintf(want, sizeof(want), "handled sig=%d pid=%ld code=%d masked=1", SIGTERM,
		 (long)getpid(), SI_USER);
	expect_line(&a, want);
	st = app_wait(&a);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_signal_handler(void **state)
{
	struct app a;
	char want[64];
	int st;

	(void)state;
	app_start(&a, "signal", 1);
	expect_line(&a, "ready");
	assert_int_equal(kill(a.pid, SIGTERM), 0);
	snprintf(want, sizeof(want), "handled sig=%d", SIGTERM);
	expect_line(&a, want);
	st = app_wait(&a);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_resethand(void **state)
{
	struct app a;
	char want[128];
	int st;

	(void)state;
	app_start(&a, "resethand", 1);
	expect_line(&a, "ready");
	assert_int_equal(kill(a.pid, SIGTERM), 0);
	snprintf(want, sizeof(want), "handled sig=%d pid=%ld code=%d masked=1", SIGTERM,
		 (long)getpid(), SI_USER);
	expect_line(&a, want);
	expect_line(&a, "reset");
	assert_int_equal(kill(a.pid, SIGTERM), 0);
	st = app_wait(&a);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGTERM);
}

static void test_default_kills(void **state)
{
	int checkpoint;

	(void)state;
	for (checkpoint = 0; checkpoint <= 1; checkpoint++) {
		struct app a;
		int st;

		app_start(&a, "dfl", checkpoint);
		expect_line(&a, "ready");
		assert_int_equal(kill(a.pid, SIGTERM), 0);
		st = app_wait(&a);
		assert_true(WIFSIGNALED(st));
		assert_int_equal(WTERMSIG(st), SIGTERM);
	}
}

static void test_ignored_survives(void **state)
{
	struct app a;
	int st;

	(void)state;
	app_start(&a, "ign", 1);
	expect_line(&a, "ready");
	assert_int_equal(kill(a.pid, SIGTERM), 0);
	expect_line(&a, "survived");
	st = app_wait(&a);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* Who really holds SIGTERM: libphos only with PHOS_CHECKPOINT=1. */
static void test_kernel_view(void **state)
{
	struct app a;

	(void)state;
	app_start(&a, "kernel", 1);
	expect_line(&a, "kernel_is_app=0");
	assert_int_equal(app_wait(&a), 0);
	app_start(&a, "kernel", 0);
	expect_line(&a, "kernel_is_app=1");
	assert_int_equal(app_wait(&a), 0);
}

/* Without PHOS_CHECKPOINT the app's handler is the kernel's: same story. */
static void test_handler_without_checkpoint(void **state)
{
	struct app a;
	char want[128];

	(void)state;
	app_start(&a, "handler", 0);
	expect_line(&a, "ready");
	assert_int_equal(kill(a.pid, SIGTERM), 0);
	snprintf(want, sizeof(want), "handled sig=%d pid=%ld code=%d masked=1", SIGTERM,
		 (long)getpid(), SI_USER);
	expect_line(&a, want);
	assert_int_equal(app_wait(&a), 0);
}

/* A forked child has no libphos thread: it must still get its SIGTERM
 * disposition, in the signal handler itself. */
static void test_forked_child(void **state)
{
	struct app a;
	char line[128], want[128];
	long child;

	(void)state;
	app_start(&a, "fork", 1);
	assert_non_null(fgets(line, sizeof(line), a.out));
	assert_int_equal(sscanf(line, "child %ld", &child), 1);
	assert_int_equal(kill((pid_t)child, SIGTERM), 0);
	snprintf(want, sizeof(want), "handled sig=%d pid=%ld code=%d masked=1", SIGTERM,
		 (long)getpid(), SI_USER);
	expect_line(&a, want);
	assert_int_equal(app_wait(&a), 0);

	app_start(&a, "forkdfl", 1);
	assert_non_null(fgets(line, sizeof(line), a.out));
	assert_int_equal(sscanf(line, "child %ld", &child), 1);
	assert_int_equal(kill((pid_t)child, SIGTERM), 0);
	{
		int st = app_wait(&a);

		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 100 + SIGTERM);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handler_runs_with_siginfo),
		cmocka_unit_test(test_signal_handler),
		cmocka_unit_test(test_resethand),
		cmocka_unit_test(test_default_kills),
		cmocka_unit_test(test_ignored_survives),
		cmocka_unit_test(test_kernel_view),
		cmocka_unit_test(test_handler_without_checkpoint),
		cmocka_unit_test(test_forked_child),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
