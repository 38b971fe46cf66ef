/* Unit tests: phos.yaml parsing (common/conf.c). */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "conf.h"
#include "log.h"

static int parse(struct phos_config *c, const char *text, struct phos_err *e)
{
	return phos_config_parse(c, "test.yaml", text, strlen(text), e);
}

static void test_defaults(void **state)
{
	struct phos_config c;
	struct phos_err e;

	(void)state;
	assert_int_equal(parse(&c, "", &e), 0);
	assert_int_equal(c.keep_generations, 2);
	assert_int_equal(c.log_level, LOG_INFO);
	assert_false(c.keep_images_after_job);
	assert_false(c.gpu_concurrent_restore);
	assert_int_equal(c.gpu_compress_level, 0);
	assert_int_equal(c.gpu_stage_pool_gib, 0);
	assert_int_equal(c.gpu_rank_ms, 0);
	assert_string_equal(c.listen, "");
	assert_string_equal(c.slurm_user, "slurm");
	assert_string_equal(c.log_target, "syslog");
}

static void test_all_keys(void **state)
{
	struct phos_config c;
	struct phos_err e;
	const char *y =
		"# comment\n"
		"socket: /run/x.sock\n"
		"checkpoint_dir: /nfs/phos\n"
		"state_dir: /var/lib/x\n"
		"key_file: /etc/k\n"
		"criu_path: /usr/sbin/criu\n"
		"log_target: stderr\n"
		"log_level: debug\n"
		"keep_generations: 5\n"
		"keep_images_after_job: yes\n"
		"gpu_concurrent_restore: true\n"
		"gpu_compress_level: 3\n"
		"gpu_stage_pool_gib: 80\n"
		"gpu_rank_ms: 250\n"
		"predump_rounds: 2\n"
		"checkpoint_timeout: 30\n"
		"listen: \"0.0.0.0:7070\"\n"
		"slurm_user: slurm\n";

	(void)state;
	assert_int_equal(parse(&c, y, &e), 0);
	assert_string_equal(c.socket, "/run/x.sock");
	assert_string_equal(c.checkpoint_dir, "/nfs/phos");
	assert_string_equal(c.log_target, "stderr");
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.keep_generations, 5);
	assert_true(c.keep_images_after_job);
	assert_true(c.gpu_concurrent_restore);
	assert_int_equal(c.gpu_compress_level, 3);
	assert_int_equal(c.gpu_stage_pool_gib, 80);
	assert_int_equal(c.gpu_rank_ms, 250);
	assert_int_equal(c.predump_rounds, 2);
	assert_int_equal(c.checkpoint_timeout, 30);
	assert_string_equal(c.listen, "0.0.0.0:7070");
}

/* Each bad input: the error must name the line and the key (or say why). */
static const struct {
	const char *yaml;
	const char *want1;
	const char *want2;
} bad[] = {
	{ "bogus: 1\n", "test.yaml:1:", "unknown key 'bogus'" },
	{ "socket: /a\nsoket: /b\n", "test.yaml:2:", "unknown key 'soket'" },
	{ "keep_generations: 0\n", "test.yaml:1:", "keep_generations: expected an integer 1..1000" },
	{ "keep_generations: 1001\n", ":1:", "keep_generations" },
	{ "gpu_compress_level: 20\n", ":1:", "gpu_compress_level: expected an integer 0..19" },
	{ "gpu_stage_pool_gib: -1\n", ":1:", "gpu_stage_pool_gib: expected an integer 0..65536" },
	{ "gpu_stage_pool_gib: 64G\n", ":1:", "got '64G'" },
	{ "keep_generations: -1\n", ":1:", "keep_generations" },
	{ "keep_generations: 3x\n", ":1:", "got '3x'" },
	{ "predump_rounds: 11\n", ":1:", "predump_rounds" },
	{ "checkpoint_timeout: 0\n", ":1:", "checkpoint_timeout" },
	{ "log_level: loud\n", ":1:", "log_level: expected error, warning" },
	{ "log_target: file\n", ":1:", "log_target" },
	{ "keep_images_after_job: maybe\n", ":1:", "expected true or false" },
	{ "gpu_stage_pool_pinned: 66\n", ":1:", "gpu_stage_pool_pinned: expected true or false" },
	{ "gpu_rank_ms: 10001\n", ":1:", "gpu_rank_ms: expected an integer 0..10000" },
	{ "checkpoint_dir: relative/path\n", ":1:", "absolute path" },
	{ "listen: nohostport\n", ":1:", "HOST:PORT" },
	{ "listen: \"h:70000\"\n", ":1:", "HOST:PORT" },
	{ "slurm_user: \"\"\n", ":1:", "must not be empty" },
	{ "socket: /a\nsocket: /b\n", ":2:", "given twice" },
	{ "socket: [a, b]\n", ":1:", "expected a single value" },
	{ "- a\n- b\n", ":1:", "expected a mapping" },
	{ "just a string\n", ":1:", "expected a mapping" },
	{ "socket: /a\n  bad indent: x\n", "test.yaml:", "YAML syntax error" },
};

static void test_bad_input(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct phos_config c;
		struct phos_err e = { "" };

		phos_config_defaults(&c);
		c.keep_generations = 77;	/* must survive a failed parse */
		errno = 0;
		if (parse(&c, bad[i].yaml, &e) != -1)
			fail_msg("case %zu accepted: %s", i, bad[i].yaml);
		assert_int_equal(errno, EINVAL);
		if (!strstr(e.msg, bad[i].want1) || !strstr(e.msg, bad[i].want2))
			fail_msg("case %zu: message '%s' lacks '%s' / '%s'", i, e.msg,
				 bad[i].want1, bad[i].want2);
		assert_int_equal(c.keep_generations, 77);
	}
}

static void test_too_long(void **state)
{
	char y[8192];
	struct phos_config c;
	struct phos_err e;
	int n = snprintf(y, sizeof(y), "key_file: /");

	(void)state;
	memset(y + n, 'a', 5000);
	strcpy(y + n + 5000, "\n");
	assert_int_equal(parse(&c, y, &e), -1);
	assert_non_null(strstr(e.msg, "key_file: value longer than"));
}

static void test_load_file(void **state)
{
	char path[] = "/tmp/phos-test-conf-XXXXXX";
	struct phos_config c;
	struct phos_err e;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep_generations: 9\n", 20), 20);
	close(fd);
	assert_int_equal(phos_config_load(&c, path, &e), 0);
	assert_int_equal(c.keep_generations, 9);
	unlink(path);
	assert_int_equal(phos_config_load(&c, path, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_non_null(strstr(e.msg, path));
	assert_int_equal(phos_config_load(&c, "/", &e), -1);
	assert_non_null(strstr(e.msg, "not a regular file"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_keys),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_load_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
