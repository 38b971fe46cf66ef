/* Unit tests: manifest YAML, MAC, node key, ids and names (common/manifest.c, image.c). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#if defined(__has_include)
#if __has_include(<slurm/slurm.h>)
#include <slurm/slurm.h>
#define HAVE_SLURM_H 1
#endif
#endif

#include "image.h"
#include "log.h"
#include "manifest.h"

static const unsigned char KEY[40] = "0123456789abcdef0123456789abcdef-key-40";

static void fill(struct phos_manifest *m)
{
	unsigned char sha[PHOS_SHA256_LEN];
	int i;

	phos_manifest_init(m);
	m->uid = 1000;
	m->gid = 1001;
	strcpy(m->user, "alice");
	strcpy(m->host, "node-01.example");
	m->created = 1795000000;
	assert_int_equal(phos_image_id_slurm(&m->id, "alice", 1234, PHOS_STEP_BATCH, 3, NULL), 0);
	m->generation = 7;
	m->root_pid = 4242;
	m->root_nspid = 1;
	for (i = 0; i < PHOS_SHA256_LEN; i++)
		sha[i] = (unsigned char)i;
	assert_int_equal(phos_manifest_add_file(m, "pages-1.img", 4096, sha, NULL), 0);
	sha[0] = 0xff;
	assert_int_equal(phos_manifest_add_file(m, "core-4242.img", 0, sha, NULL), 0);
	assert_int_equal(phos_manifest_add_file_blocks(m, "parent/pages-1.img", 1ull << 40, 8 << 20,
						       sha, NULL), 0);
	/* Values that YAML would read as other types or syntax if unquoted. */
	assert_int_equal(phos_manifest_set_extra(m, "stdio.1", "pipe:[12345]", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "criu.version", "4.1.1", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.yes", "yes", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.null", "null", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.empty", "", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.num", "0012", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.syntax", "a: b # c\n- d\t\"e' ", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.utf8", "gr\xc3\xbc\xc3\x9f \xf0\x9f\x98\x80", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.ctl", "bell\x07 esc\x1b del\x7f cr\r", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "t.space", "  lead and trail  ", NULL), 0);
}

static void test_round_trip(void **state)
{
	struct phos_manifest m, r;
	struct phos_err e = { "" };
	char *buf = NULL, *buf2 = NULL;
	size_t len, len2, i;

	(void)state;
	fill(&m);
	assert_int_equal(phos_manifest_emit(&m, &buf, &len, &e), 0);
	assert_int_equal(strlen(buf), len);
	phos_manifest_init(&r);
	if (phos_manifest_parse(&r, "rt", buf, len, &e) < 0)
		fail_msg("%s\n%s", e.msg, buf);
	assert_int_equal(r.version, 1);
	assert_int_equal(r.uid, 1000);
	assert_int_equal(r.gid, 1001);
	assert_string_equal(r.user, "alice");
	assert_string_equal(r.host, "node-01.example");
	assert_int_equal(r.created, 1795000000);
	assert_string_equal(r.id.user, "alice");
	assert_int_equal(r.id.kind, PHOS_JOB_SLURM);
	assert_int_equal(r.id.job, 1234);
	assert_int_equal(r.id.step, PHOS_STEP_BATCH);
	assert_int_equal(r.id.task, 3);
	assert_int_equal(r.generation, 7);
	assert_int_equal(r.root_pid, 4242);
	assert_int_equal(r.root_nspid, 1);
	assert_int_equal(r.n_files, m.n_files);
	for (i = 0; i < m.n_files; i++) {
		assert_string_equal(r.files[i].name, m.files[i].name);
		assert_true(r.files[i].size == m.files[i].size);
		assert_true(r.files[i].block == m.files[i].block);
		assert_memory_equal(r.files[i].sha256, m.files[i].sha256, PHOS_SHA256_LEN);
	}
	assert_int_equal(r.n_extra, m.n_extra);
	for (i = 0; i < m.n_extra; i++) {
		assert_string_equal(r.extra[i].key, m.extra[i].key);
		assert_string_equal(r.extra[i].value, m.extra[i].value);
	}
	assert_string_equal(phos_manifest_get_extra(&r, "stdio.1"), "pipe:[12345]");
	assert_null(phos_manifest_get_extra(&r, "nope"));
	/* Emitting what was parsed gives the same bytes (the MAC is over bytes). */
	assert_int_equal(phos_manifest_emit(&r, &buf2, &len2, &e), 0);
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	free(buf);
	free(buf2);
	phos_manifest_free(&m);
	phos_manifest_free(&r);
	phos_manifest_free(&r);	/* twice is safe */
	phos_manifest_free(NULL);
}

static void test_pid_job_round_trip(void **state)
{
	struct phos_manifest m, r;
	char *buf;
	size_t len;

	(void)state;
	phos_manifest_init(&m);
	phos_manifest_init(&r);
	assert_int_equal(phos_image_id_pid(&m.id, "bob", 31337, NULL), 0);
	strcpy(m.user, "bob");
	strcpy(m.host, "h");
	m.generation = 1;
	assert_int_equal(phos_manifest_emit(&m, &buf, &len, NULL), 0);
	assert_non_null(strstr(buf, "job: pid-31337\n"));
	assert_non_null(strstr(buf, "files: []"));
	assert_int_equal(phos_manifest_parse(&r, "p", buf, len, NULL), 0);
	assert_int_equal(r.id.kind, PHOS_JOB_PID);
	assert_int_equal(r.id.job, 31337);
	assert_int_equal(r.n_files, 0);
	free(buf);
	phos_manifest_free(&r);
}

/* Replace the first occurrence of from by to in a malloc'd copy. */
static char *replace(const char *s, const char *from, const char *to)
{
	const char *p = strstr(s, from);
	char *r;

	assert_non_null(p);
	r = malloc(strlen(s) - strlen(from) + strlen(to) + 1);
	assert_non_null(r);
	memcpy(r, s, (size_t)(p - s));
	strcpy(r + (p - s), to);
	strcat(r, p + strlen(from));
	return r;
}

static void test_parse_refusals(void **state)
{
	static const struct {
		const char *from, *to;
		int err;
		const char *msg;
	} cases[] = {
		{ "version: 1\n", "version: 2\n", EPROTONOSUPPORT, "version '2' is not supported" },
		{ "version: 1\n", "version: 1.0\n", EPROTONOSUPPORT, "not supported" },
		{ "version: 1\n", "", EBADMSG, "missing key 'version'" },
		{ "version: 1\n", "version: 1\nversion: 1\n", EBADMSG, "duplicate key 'version'" },
		{ "host: ", "colour: red\nhost: ", EBADMSG, "unknown key 'colour'" },
		{ "  uid: 1000\n", "  uid: -1\n", EBADMSG, "'uid' must be a number" },
		{ "  uid: 1000\n", "  uid: 1000\n  shell: sh\n", EBADMSG, "unknown key 'shell'" },
		{ "generation: 7", "generation: 0", EBADMSG, "'generation' must be >= 1" },
		{ "generation: 7", "generation: seven", EBADMSG, "'generation' must be a number" },
		{ "job: 1234", "job: pid-0", EBADMSG, "invalid 'job'" },
		{ "job: 1234", "job: 01234", EBADMSG, "invalid 'job'" },
		{ "step: batch", "step: pending", EBADMSG, "invalid 'step'" },
		{ "created: 2026", "created: yesterday", EBADMSG, "'created' must be" },
		{ "name: pages-1.img", "name: ../../etc/shadow", EBADMSG, "not allowed" },
		{ "name: pages-1.img", "name: /etc/shadow", EBADMSG, "not allowed" },
		{ "name: pages-1.img", "name: manifest.mac", EBADMSG, "not allowed" },
		{ "name: pages-1.img", "name: core-4242.img", EBADMSG, "listed twice" },
		{ "sha256: 00", "sha256: 0G", EBADMSG, "sha256 must be 64" },
		{ "block: 8388608", "block: 1000", EBADMSG, "block must be a multiple of 4096" },
		{ "block: 8388608", "block: 0", EBADMSG, "block must be a multiple of 4096" },
		{ "block: 8388608", "block: 2147483648", EBADMSG, "'block' must be a number" },
		{ "block: 8388608", "block: 8388608\n  block: 4096", EBADMSG, "duplicate key 'block'" },
		{ "  size: 4096\n", "  size: 4096\n  mode: 0644\n", EBADMSG, "unknown key 'mode'" },
		{ "stdio.1: ", "stdio.1: [1, 2]\n  x: ", EBADMSG, "extra values must be strings" },
		{ "root_pid: 4242", "root_pid: 99999999999", EBADMSG, "'root_pid' must be a number" },
		{ "root_nspid: 1\n", "root_nspid: [1]\n", EBADMSG, "'root_nspid' must be a string" },
		{ "extra:\n", "extra: []\nxtra:\n", EBADMSG, "unknown key 'xtra'" },
		{ "version: 1\n", "version: 1\n...\n---\nversion: 1\n", EBADMSG, "missing key" },
		{ "host: node", "host: [node", EBADMSG, "YAML error" },
	};
	struct phos_manifest m, r;
	char *buf;
	size_t len, i;

	(void)state;
	fill(&m);
	assert_int_equal(phos_manifest_emit(&m, &buf, &len, NULL), 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct phos_err e = { "" };
		char *bad = replace(buf, cases[i].from, cases[i].to);
		int rc;

		phos_manifest_init(&r);
		errno = 0;
		rc = phos_manifest_parse(&r, "case", bad, strlen(bad), &e);
		if (rc != -1 || errno != cases[i].err || !strstr(e.msg, cases[i].msg))
			fail_msg("case %zu (%s -> %s): rc %d errno %d msg '%s'", i, cases[i].from,
				 cases[i].to, rc, errno, e.msg);
		assert_int_equal(r.n_files, 0);	/* left empty */
		free(bad);
	}
	/* Not a mapping at all / empty / NUL inside a scalar. */
	{
		static const char *texts[] = { "- a\n- b\n", "", "just text\n" };
		struct phos_err e;

		for (i = 0; i < 3; i++) {
			errno = 0;
			assert_int_equal(phos_manifest_parse(&r, "t", texts[i], strlen(texts[i]), &e), -1);
			assert_int_equal(errno, EBADMSG);
		}
	}
	free(buf);
	phos_manifest_free(&m);
}

static void test_emit_refusals(void **state)
{
	struct phos_manifest m;
	struct phos_err e;
	char *buf;
	size_t len;

	(void)state;
	fill(&m);
	m.generation = 0;
	errno = 0;
	assert_int_equal(phos_manifest_emit(&m, &buf, &len, &e), -1);
	assert_int_equal(errno, EINVAL);
	m.generation = 1;
	strcpy(m.user, "mallory");
	assert_int_equal(phos_manifest_emit(&m, &buf, &len, &e), -1);
	assert_non_null(strstr(e.msg, "differs"));
	phos_manifest_free(&m);
}

static void test_extra_and_names(void **state)
{
	static const struct {
		const char *name;
		bool ok;
	} names[] = {
		{ "pages-1.img", true }, { "parent/pages-1.img", true }, { "a/b/c", true },
		{ "irmap-cache", true }, { "tmpfs-dev-12.tar.gz.img", true }, { "x+y,z:w=v@u", true },
		{ "", false }, { ".hidden", false }, { "a/.b", false }, { "..", false },
		{ "a/../b", false }, { "/abs", false }, { "a//b", false }, { "a/", false },
		{ "sp ace", false }, { "new\nline", false }, { "manifest.yaml", false },
		{ "manifest.mac", false }, { "sub/manifest.yaml", true }, { "a*b", false },
		{ "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p", true },
		{ "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q", false },
	};
	struct phos_manifest m;
	unsigned char sha[PHOS_SHA256_LEN] = { 0 };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (phos_manifest_name_ok(names[i].name) != names[i].ok)
			fail_msg("name '%s' should be %s", names[i].name, names[i].ok ? "ok" : "refused");
	phos_manifest_init(&m);
	errno = 0;
	assert_int_equal(phos_manifest_add_file(&m, "../x", 1, sha, NULL), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(phos_manifest_set_extra(&m, "bad key", "v", NULL), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(phos_manifest_set_extra(&m, "", "v", NULL), -1);
	{
		static const char *bad_utf8[] = { "\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80",
						  "\xf4\x90\x80\x80", "ok\x80" };
		size_t j;

		for (j = 0; j < sizeof(bad_utf8) / sizeof(bad_utf8[0]); j++) {
			errno = 0;
			if (phos_manifest_set_extra(&m, "k", bad_utf8[j], NULL) != -1 || errno != EINVAL)
				fail_msg("invalid UTF-8 %zu accepted", j);
		}
	}
	assert_int_equal(phos_manifest_set_extra(&m, "k", "1", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(&m, "k", "2", NULL), 0);	/* replaces */
	assert_int_equal(m.n_extra, 1);
	assert_string_equal(phos_manifest_get_extra(&m, "k"), "2");
	assert_int_equal(phos_manifest_add_file(&m, "b", 1, sha, NULL), 0);
	assert_int_equal(phos_manifest_add_file(&m, "a", 2, sha, NULL), 0);
	assert_int_equal(phos_manifest_add_file(&m, "b", 3, sha, NULL), 0);	/* replaces */
	assert_int_equal(m.n_files, 2);
	assert_string_equal(m.files[0].name, "a");
	assert_true(phos_manifest_find_file(&m, "b")->size == 3);
	phos_manifest_free(&m);
}

/* the key of a generation's GPU buffer sums: the node key's, one per
 * generation, the same every time it is derived, never without the key */
static void test_gpumem_key(void **state)
{
	struct phos_key k, k2;
	struct phos_image_id id = { .user = "alice", .job = 42, .step = 0, .task = 3 }, id2 = id;
	uint64_t a, b, c, d, e2;
	char env[PHOS_GPU_SUMS_KEY_ENV_LEN];
	struct phos_err e;

	(void)state;
	memset(&k, 0, sizeof(k));
	errno = 0;
	assert_int_equal(phos_gpumem_key(&k, &id, 1, &a, &e), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(phos_key_set(&k, KEY, sizeof(KEY), &e), 0);
	assert_int_equal(phos_key_set(&k2, "another key of at least 32 bytes!!", 34, NULL), 0);
	assert_int_equal(phos_gpumem_key(&k, &id, 1, &a, &e), 0);
	assert_int_equal(phos_gpumem_key(&k, &id, 1, &b, &e), 0);
	assert_int_equal(a, b);
	assert_true(a != 0);
	assert_int_equal(phos_gpumem_key(&k, &id, 2, &c, &e), 0);
	assert_true(c != a);
	id2.task = 4;
	assert_int_equal(phos_gpumem_key(&k, &id2, 1, &d, &e), 0);
	assert_true(d != a);
	assert_int_equal(phos_gpumem_key(&k2, &id, 1, &e2, &e), 0);
	assert_true(e2 != a);
	phos_gpumem_key_env(0x0123456789abcdefull, env);
	assert_string_equal(env, "PHOS_GPU_SUMS_KEY=0123456789abcdef");
}

static void test_mac(void **state)
{
	struct phos_key k, k2;
	unsigned char mac[PHOS_MAC_LEN];
	char text[2 * PHOS_MAC_LEN + 2];
	const char *msg = "version: 1\n";
	struct phos_err e;

	(void)state;
	memset(&k, 0, sizeof(k));
	errno = 0;
	assert_int_equal(phos_mac_compute(&k, msg, strlen(msg), mac, &e), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(phos_key_set(&k, KEY, 31, &e), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(phos_key_set(&k, KEY, sizeof(KEY), &e), 0);
	assert_int_equal(phos_mac_compute(&k, msg, strlen(msg), mac, &e), 0);
	phos_mac_format(mac, text);
	assert_int_equal(strlen(text), 65);
	assert_int_equal(text[64], '\n');
	/* good, with and without the newline */
	assert_int_equal(phos_mac_check(&k, msg, strlen(msg), text, 65, &e), 0);
	assert_int_equal(phos_mac_check(&k, msg, strlen(msg), text, 64, &e), 0);
	/* bad: changed message */
	errno = 0;
	assert_int_equal(phos_mac_check(&k, "version: 2\n", 11, text, 65, &e), -1);
	assert_int_equal(errno, EKEYREJECTED);
	assert_non_null(strstr(e.msg, "does not match"));
	/* bad: another key */
	assert_int_equal(phos_key_set(&k2, "another key of at least 32 bytes!!", 34, NULL), 0);
	errno = 0;
	assert_int_equal(phos_mac_check(&k2, msg, strlen(msg), text, 65, &e), -1);
	assert_int_equal(errno, EKEYREJECTED);
	/* malformed / missing MAC text */
	errno = 0;
	assert_int_equal(phos_mac_check(&k, msg, strlen(msg), "", 0, &e), -1);
	assert_int_equal(errno, EKEYREJECTED);
	assert_non_null(strstr(e.msg, "malformed"));
	text[3] = 'X';
	assert_int_equal(phos_mac_check(&k, msg, strlen(msg), text, 65, &e), -1);
	assert_non_null(strstr(e.msg, "malformed"));
	phos_key_clear(&k);
	assert_int_equal(k.len, 0);
	phos_key_clear(&k);
	phos_key_clear(NULL);
	phos_key_clear(&k2);
}

static void test_sha256(void **state)
{
	unsigned char sha[PHOS_SHA256_LEN];
	char hex[65], path[] = "/tmp/phos-sha-XXXXXX";
	uint64_t size;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, "abc", 3), 3);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(phos_sha256_fd(fd, sha, &size), 0);
	phos_sha256_format(sha, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(size, 3);
	close(fd);
	errno = 0;
	assert_int_equal(phos_sha256_fd(fd, sha, &size), -1);
	assert_int_equal(errno, EBADF);
}

/* ---- key file ---------------------------------------------------------- */

static char keydir[] = "/tmp/phos-key-XXXXXX";

static int key_setup(void **state)
{
	(void)state;
	return mkdtemp(keydir) ? 0 : -1;
}

static int key_teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", keydir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_key(const char *path, size_t len, mode_t mode, uid_t uid)
{
	unsigned char buf[PHOS_KEY_MAX + 8];
	int fd;

	memset(buf, 'k', sizeof(buf));
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	if (uid != (uid_t)-1)
		assert_int_equal(fchown(fd, uid, (gid_t)-1), 0);
	close(fd);
}

static void test_key_file(void **state)
{
	static const struct {
		size_t len;
		mode_t mode;
		bool other_owner;	/* owned by 65534 (needs root) */
		int err;		/* 0 = loads */
		const char *msg;
	} cases[] = {
		{ 64, 0600, false, 0, NULL },
		{ 32, 0400, false, 0, NULL },
		{ PHOS_KEY_MAX, 0600, false, 0, NULL },
		{ 64, 0644, false, EPERM, "chmod 0600" },
		{ 64, 0640, false, EPERM, "chmod 0600" },
		{ 64, 0602, false, EPERM, "chown root:root" },
		{ 64, 0600, true, EPERM, "owned by uid 65534" },
		{ 31, 0600, false, EINVAL, "holds 31 bytes" },
		{ 0, 0600, false, EINVAL, "holds 0 bytes" },
		{ PHOS_KEY_MAX + 1, 0600, false, EINVAL, "must hold 32 to 4096" },
	};
	char path[64], link[80];
	struct phos_key k;
	struct phos_err e;
	size_t i;

	(void)state;
	snprintf(path, sizeof(path), "%s/key", keydir);
	if (geteuid() != 0) {
		/* Not root: a key we own is refused for its owner; the rest needs root. */
		write_key(path, 64, 0600, (uid_t)-1);
		errno = 0;
		assert_int_equal(phos_key_load(&k, path, &e), -1);
		assert_int_equal(errno, EPERM);
		skip();
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		write_key(path, cases[i].len, cases[i].mode, cases[i].other_owner ? 65534 : 0);
		errno = 0;
		e.msg[0] = '\0';
		rc = phos_key_load(&k, path, &e);
		if (cases[i].err == 0) {
			if (rc != 0)
				fail_msg("case %zu: %s", i, e.msg);
			assert_int_equal(k.len, cases[i].len);
		} else if (rc != -1 || errno != cases[i].err || !strstr(e.msg, cases[i].msg)) {
			fail_msg("case %zu: rc %d errno %d msg '%s'", i, rc, errno, e.msg);
		} else {
			assert_int_equal(k.len, 0);
		}
	}
	/* A symlink to a good key is refused; a missing file and a directory too. */
	write_key(path, 64, 0600, 0);
	snprintf(link, sizeof(link), "%s/link", keydir);
	assert_int_equal(symlink(path, link), 0);
	errno = 0;
	assert_int_equal(phos_key_load(&k, link, &e), -1);
	assert_int_equal(errno, ELOOP);
	assert_non_null(strstr(e.msg, "symlink"));
	snprintf(link, sizeof(link), "%s/missing", keydir);
	assert_int_equal(phos_key_load(&k, link, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(phos_key_load(&k, keydir, &e), -1);
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(e.msg, "not a regular file"));
}

/* ---- ids and names ------------------------------------------------------- */

static void test_ids(void **state)
{
	static const struct {
		enum phos_job_kind kind;
		uint32_t job, step, task;
		const char *user;
		int err;
		const char *job_s, *step_s;
	} cases[] = {
		{ PHOS_JOB_SLURM, 1234, 0, 0, "alice", 0, "1234", "0" },
		{ PHOS_JOB_SLURM, 1234, 17, 5, "alice", 0, "1234", "17" },
		{ PHOS_JOB_SLURM, 99, PHOS_STEP_BATCH, 0, "a.b-c_d", 0, "99", "batch" },
		{ PHOS_JOB_SLURM, 99, PHOS_STEP_EXTERN, 0, "u@realm", 0, "99", "extern" },
		{ PHOS_JOB_SLURM, 99, PHOS_STEP_INTERACTIVE, 0, "u", 0, "99", "interactive" },
		{ PHOS_JOB_SLURM, 4294967295u, 0xffffffefu, 0, "u", 0, "4294967295", "4294967279" },
		{ PHOS_JOB_PID, 42, 0, 0, "bob", 0, "pid-42", "0" },
		{ PHOS_JOB_PID, 42, 1, 0, "bob", EINVAL, NULL, NULL },
		{ PHOS_JOB_PID, 42, 0, 1, "bob", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 0, 0, 0, "bob", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 1, PHOS_STEP_PENDING, 0, "bob", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 1, 0xfffffff0u, 0, "bob", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 1, 0, 0, "../x", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 1, 0, 0, ".x", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 1, 0, 0, "-x", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 1, 0, 0, "a/b", EINVAL, NULL, NULL },
		{ PHOS_JOB_SLURM, 1, 0, 0, "", EINVAL, NULL, NULL },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct phos_image_id id, back;
		char j[32], s[16];
		uint32_t st;

		memset(&id, 0, sizeof(id));
		snprintf(id.user, sizeof(id.user), "%s", cases[i].user);
		id.kind = cases[i].kind;
		id.job = cases[i].job;
		id.step = cases[i].step;
		id.task = cases[i].task;
		errno = 0;
		if (cases[i].err) {
			assert_int_equal(phos_image_id_check(&id, NULL), -1);
			assert_int_equal(errno, cases[i].err);
			continue;
		}
		if (phos_image_id_check(&id, NULL) != 0)
			fail_msg("case %zu refused", i);
		assert_int_equal(phos_image_job_format(&id, j, sizeof(j)), 0);
		assert_string_equal(j, cases[i].job_s);
		assert_int_equal(phos_image_step_format(id.step, s, sizeof(s)), 0);
		assert_string_equal(s, cases[i].step_s);
		memset(&back, 0, sizeof(back));
		assert_int_equal(phos_image_job_parse(j, &back), 0);
		assert_int_equal(back.kind, id.kind);
		assert_int_equal(back.job, id.job);
		assert_int_equal(phos_image_step_parse(s, &st), 0);
		assert_int_equal(st, id.step);
	}
}

static void test_name_parsing(void **state)
{
	static const char *bad_jobs[] = { "", "0", "01", "-1", "+1", "1x", "pid-", "pid-0",
					  "pid-01", "PID-1", "4294967296", "pid-2147483648", " 1" };
	static const char *bad_steps[] = { "", "01", "Batch", "pending", "4294967280", "-0" };
	static const char *bad_gens[] = { "", "1", "00001", "0000001", "000000", "00000a",
					  "1000000000", "0000000001" };
	struct phos_image_id id;
	uint64_t g;
	uint32_t st;
	char buf[16];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_jobs) / sizeof(bad_jobs[0]); i++)
		if (phos_image_job_parse(bad_jobs[i], &id) != -1 || errno != EINVAL)
			fail_msg("job '%s' accepted", bad_jobs[i]);
	for (i = 0; i < sizeof(bad_steps) / sizeof(bad_steps[0]); i++)
		if (phos_image_step_parse(bad_steps[i], &st) != -1)
			fail_msg("step '%s' accepted", bad_steps[i]);
	for (i = 0; i < sizeof(bad_gens) / sizeof(bad_gens[0]); i++)
		if (phos_image_gen_parse(bad_gens[i], &g) != -1 || errno != EINVAL)
			fail_msg("generation '%s' accepted", bad_gens[i]);
	assert_int_equal(phos_image_gen_format(1, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "000001");
	assert_int_equal(phos_image_gen_parse("000001", &g), 0);
	assert_int_equal(g, 1);
	assert_int_equal(phos_image_gen_format(1234567, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1234567");
	assert_int_equal(phos_image_gen_parse("1234567", &g), 0);
	assert_int_equal(g, 1234567);
	assert_int_equal(phos_image_gen_format(0, buf, sizeof(buf)), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(phos_image_gen_format(1, buf, 6), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	assert_int_equal(phos_image_step_format(PHOS_STEP_BATCH, buf, 5), -1);
	assert_int_equal(errno, ENAMETOOLONG);
}

static void test_slurm_constants(void **state)
{
	(void)state;
#ifdef HAVE_SLURM_H
	assert_int_equal(PHOS_STEP_BATCH, SLURM_BATCH_SCRIPT);
	assert_int_equal(PHOS_STEP_EXTERN, SLURM_EXTERN_CONT);
	assert_int_equal(PHOS_STEP_INTERACTIVE, SLURM_INTERACTIVE_STEP);
	assert_int_equal(PHOS_STEP_PENDING, SLURM_PENDING_STEP);
#else
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_pid_job_round_trip),
		cmocka_unit_test(test_parse_refusals),
		cmocka_unit_test(test_emit_refusals),
		cmocka_unit_test(test_extra_and_names),
		cmocka_unit_test(test_gpumem_key),
		cmocka_unit_test(test_mac),
		cmocka_unit_test(test_sha256),
		cmocka_unit_test_setup_teardown(test_key_file, key_setup, key_teardown),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_name_parsing),
		cmocka_unit_test(test_slurm_constants),
	};

	phos_log_open("test_manifest", PHOS_LOG_STDERR, LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
