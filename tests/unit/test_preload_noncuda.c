/*
 * test_preload_noncuda.c - libphos.so loads into programs that have
 * nothing to do with CUDA without changing what they do: same stdout,
 * same stderr, same exit status as without it.  With PHOS_DEBUG set it
 * logs, and only lines prefixed "phos[pid]: ".
 */
#include "config.h"

#include <fcntl.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "preload_test.h"

struct result {
	char out[8192];
	char err[8192];
	int status;
};

static void slurp(int fd, char *buf, size_t size)
{
	ssize_t n;
	size_t off = 0;

	lseek(fd, 0, SEEK_SET);
	while (off < size - 1 && (n = read(fd, buf + off, size - 1 - off)) > 0)
		off += (size_t)n;
	buf[off] = 0;
	close(fd);
}

/* Run argv with env entries "K=V" set (or "K" unset); NULL-terminated. */
static void run(char *const argv[], const char *const env[], struct result *r)
{
	char o[] = "/tmp/phos-noncuda-XXXXXX", e[] = "/tmp/phos-noncuda-XXXXXX";
	int fo = mkstemp(o), fe = mkstemp(e);
	pid_t pid;

	assert_true(fo >= 0 && fe >= 0);
	unlink(o);
	unlink(e);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		size_t i;

		dup2(fo, STDOUT_FILENO);
		dup2(fe, STDERR_FILENO);
		unsetenv("LD_PRELOAD");
		unsetenv("PHOS_DEBUG");
		unsetenv("PHOS_CHECKPOINT");
		unsetenv("PHOS_STATS_FILE");
		for (i = 0; env && env[i]; i++) {
			char kv[4096], *eq;

			snprintf(kv, sizeof(kv), "%s", env[i]);
			eq = strchr(kv, '=');
			if (eq) {
				*eq = 0;
				setenv(kv, eq + 1, 1);
			} else {
				unsetenv(kv);
			}
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &r->status, 0), pid);
	slurp(fo, r->out, sizeof(r->out));
	slurp(fe, r->err, sizeof(r->err));
}

static char *const cmds[][8] = {
	{ "/bin/true", NULL },
	{ "/bin/false", NULL },
	{ "sh", "-c", "echo out; echo err >&2; exit 3", NULL },
	{ "sh", "-c", "kill -TERM $$; echo not reached", NULL },
	{ "sh", "-c", "trap 'echo trapped' TERM; kill -TERM $$; echo after", NULL },
	{ "ls", "-ln", "/usr/include/stdio.h", "/bin/sh", "/usr", NULL },
	{ "python3", "-c", "import os, sys; print(sys.version_info[0], os.getpid() > 0)", NULL },
	/* ctypes: dlopen(NULL) + dlsym through our dlsym */
	{ "python3", "-c",
	  "import ctypes, os; l = ctypes.CDLL(None); print(l.getpid() == os.getpid())", NULL },
	{ "python3", "-c",
	  "import signal; signal.signal(signal.SIGTERM, lambda *a: None); "
	  "print(signal.getsignal(signal.SIGTERM).__name__)", NULL },
	/* libphos never loads a driver itself */
	{ "sh", "-c", "grep -c libcuda /proc/$$/maps; true", NULL },
	{ "sh", "-c", "exit 42", NULL },
};

static const char *const with_phos[] = { "LD_PRELOAD=" PHOS_SO, NULL };
/* checkpoint mode delays SIGTERM by design: only signal-free commands */
static const char *const with_ckpt[] = { "LD_PRELOAD=" PHOS_SO, "PHOS_CHECKPOINT=1", NULL };

static void compare(const char *const env[], int skip_signals)
{
	size_t i;

	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct result *plain = calloc(1, sizeof(*plain)), *phos = calloc(1, sizeof(*phos));
		char line[512];
		int j;

		assert_non_null(plain);
		assert_non_null(phos);
		if (skip_signals && (strstr(cmds[i][2] ? cmds[i][2] : "", "TERM") ||
				     strstr(cmds[i][2] ? cmds[i][2] : "", "SIGTERM"))) {
			free(plain);
			free(phos);
			continue;
		}
		line[0] = 0;
		for (j = 0; cmds[i][j]; j++) {
			strncat(line, cmds[i][j], sizeof(line) - strlen(line) - 2);
			strcat(line, " ");
		}
		run(cmds[i], NULL, plain);
		run(cmds[i], env, phos);
		if (strcmp(plain->out, phos->out) != 0)
			fail_msg("%s: stdout differs:\n--- plain\n%s--- libphos\n%s", line, plain->out,
				 phos->out);
		if (strcmp(plain->err, phos->err) != 0)
			fail_msg("%s: stderr differs:\n--- plain\n%s--- libphos\n%s", line, plain->err,
				 phos->err);
		if (plain->status != phos->status)
			fail_msg("%s: status %#x, with libphos %#x", line, plain->status, phos->status);
		free(plain);
		free(phos);
	}
}

static void test_unchanged(void **state)
{
	(void)state;
	compare(with_phos, 0);
}

static void test_unchanged_checkpoint_mode(void **state)
{
	(void)state;
	compare(with_ckpt, 1);
}

/* PHOS_DEBUG: libphos speaks, only on stderr, only with its prefix. */
static void test_debug_prefix(void **state)
{
	static const char *const env[] = { "LD_PRELOAD=" PHOS_SO, "PHOS_CHECKPOINT=1",
					   "PHOS_DEBUG=1", NULL };
	char *const argv[] = { "/bin/true", NULL };
	struct result r;
	regex_t re;
	char *line, *save = NULL;
	int lines = 0;

	(void)state;
	run(argv, env, &r);
	assert_true(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
	assert_string_equal(r.out, "");
	assert_int_equal(regcomp(&re, "^phos\\[[0-9]+\\]: ", REG_EXTENDED | REG_NOSUB), 0);
	for (line = strtok_r(r.err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (regexec(&re, line, 0, NULL, 0) != 0)
			fail_msg("stderr line without the prefix: \"%s\"", line);
		lines++;
	}
	regfree(&re);
	assert_true(lines > 0);
}

/* An unusable PHOS_VMM_MIN is named, with the size used instead. */
static void test_bad_vmm_min(void **state)
{
	static const char *const env[] = { "LD_PRELOAD=" PHOS_SO, "PHOS_CHECKPOINT=1",
					   "PHOS_DEBUG=1", "PHOS_VMM_MIN=2M", NULL };
	char *const argv[] = { "/bin/true", NULL };
	struct result r;

	(void)state;
	run(argv, env, &r);
	assert_true(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
	assert_non_null(strstr(r.err, "PHOS_VMM_MIN=2M: not a positive number of bytes, "
				      "using 2097152"));
}

/* PHOS_STATS_FILE: written at exit, only once libphos initialised. */
static void test_stats_file(void **state)
{
	char path[] = "/tmp/phos-stats-XXXXXX", file[64], env_file[96], buf[2048];
	const char *env[] = { "LD_PRELOAD=" PHOS_SO, env_file, "PHOS_CHECKPOINT=1", NULL };
	char *const argv[] = { "/bin/true", NULL };
	struct result r;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(path));
	snprintf(file, sizeof(file), "%s/stats", path);
	snprintf(env_file, sizeof(env_file), "PHOS_STATS_FILE=%s", file);
	env[2] = NULL;		/* not initialised: no file */
	run(argv, env, &r);
	assert_int_equal(access(file, F_OK), -1);
	env[2] = "PHOS_CHECKPOINT=1";	/* initialised at load */
	run(argv, env, &r);
	fd = open(file, O_RDONLY);
	assert_true(fd >= 0);
	slurp(fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "initialized 1\n"));
	assert_non_null(strstr(buf, "launches 0\n"));
	unlink(file);
	rmdir(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unchanged),
		cmocka_unit_test(test_unchanged_checkpoint_mode),
		cmocka_unit_test(test_debug_prefix),
		cmocka_unit_test(test_bad_vmm_min),
		cmocka_unit_test(test_stats_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
