/*
 * Unit tests: the image store (common/image.c) on a real directory tree:
 * layout, atomic publish, verify (each corruption refused with its own
 * errno and message), selection, listing, retention, cleanup.
 * Ownership cases need root (CI runs as root) and skip otherwise.
 */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "image.h"
#include "log.h"
#include "manifest.h"

struct fx {
	char tmp[64];
	char root[128];
	struct phos_key key;
	struct phos_store s;
	struct phos_image_id id;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct phos_err e = { "" };

	if (!f)
		return -1;
	strcpy(f->tmp, "/tmp/phos-image-XXXXXX");
	if (!mkdtemp(f->tmp))
		return -1;
	snprintf(f->root, sizeof(f->root), "%s/ckpt/root", f->tmp);
	if (phos_key_set(&f->key, "unit-test node key, 32 bytes or more", 36, &e) < 0)
		return -1;
	if (phos_store_open(&f->s, f->root, &f->key, true, &e) < 0) {
		fprintf(stderr, "store: %s\n", e.msg);
		return -1;
	}
	if (phos_image_id_slurm(&f->id, "alice", 1234, 0, 0, &e) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[160];

	phos_store_close(&f->s);
	phos_store_close(&f->s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->tmp);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void put(int dfd, const char *name, const char *content)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

/* Publish one generation of id with a few CRIU-like files; returns its number. */
static uint64_t publish(struct fx *f, const struct phos_image_id *id, uid_t uid)
{
	struct phos_image_writer w;
	struct phos_err e = { "" };
	uint64_t gen;
	int sub;

	if (phos_image_begin(&f->s, id, uid, 100, &w, &e) < 0)
		fail_msg("begin: %s", e.msg);
	put(w.dir_fd, "inventory.img", "inventory");
	put(w.dir_fd, "pages-1.img", "page data page data page data");
	put(w.dir_fd, "core-4242.img", "");
	assert_int_equal(mkdirat(w.dir_fd, "parent", 0755), 0);
	sub = openat(w.dir_fd, "parent", O_RDONLY | O_DIRECTORY);
	assert_true(sub >= 0);
	put(sub, "pages-1.img", "older pages");
	close(sub);
	w.manifest.root_pid = 4242;
	w.manifest.root_nspid = 1;
	assert_int_equal(phos_image_set_extra(&w, "stdio.1", "pipe:[12345]", &e), 0);
	assert_int_equal(phos_image_set_extra(&w, "criu.version", "4.1.1", &e), 0);
	if (phos_image_publish(&w, &e) < 0)
		fail_msg("publish: %s", e.msg);
	assert_int_equal(w.dir_fd, -1);
	assert_int_equal(w.task_fd, -1);
	gen = w.generation;
	phos_image_abort(&w);	/* after publish: only frees */
	return gen;
}

static void gen_path(struct fx *f, const struct phos_image_id *id, uint64_t gen, const char *rel,
		     char *buf, size_t size)
{
	char g[PATH_MAX];

	assert_int_equal(phos_image_gen_path(&f->s, id, gen, g, sizeof(g), NULL), 0);
	assert_true((size_t)snprintf(buf, size, "%s%s%s", g, rel ? "/" : "", rel ? rel : "") < size);
}

static int verify(struct fx *f, uint64_t gen, uid_t uid, unsigned flags, struct phos_err *e)
{
	e->msg[0] = '\0';
	errno = 0;
	return phos_image_verify(&f->s, &f->id, gen, uid, flags, NULL, e);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

/* ---- layout ------------------------------------------------------------- */

static void test_layout(void **state)
{
	static const struct {
		const char *user;
		enum phos_job_kind kind;
		uint32_t job, step, task;
		uint64_t gen;
		const char *want;	/* relative to root; NULL = EINVAL */
	} cases[] = {
		{ "alice", PHOS_JOB_SLURM, 1234, 0, 0, 1, "alice/1234/0/0/000001" },
		{ "alice", PHOS_JOB_SLURM, 1234, 2, 15, 42, "alice/1234/2/15/000042" },
		{ "bob", PHOS_JOB_SLURM, 7, PHOS_STEP_BATCH, 0, 999999, "bob/7/batch/0/999999" },
		{ "bob", PHOS_JOB_SLURM, 7, PHOS_STEP_EXTERN, 0, 1000000, "bob/7/extern/0/1000000" },
		{ "bob", PHOS_JOB_SLURM, 7, PHOS_STEP_INTERACTIVE, 1, 3, "bob/7/interactive/1/000003" },
		{ "carol", PHOS_JOB_PID, 31337, 0, 0, 2, "carol/pid-31337/0/0/000002" },
		{ "carol", PHOS_JOB_PID, 31337, 1, 0, 2, NULL },
		{ "../etc", PHOS_JOB_SLURM, 1, 0, 0, 1, NULL },
		{ "alice", PHOS_JOB_SLURM, 1, 0, 0, 0, NULL },
		{ "alice", PHOS_JOB_SLURM, 1, PHOS_STEP_PENDING, 0, 1, NULL },
	};
	struct fx *f = *state;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct phos_image_id id;
		char got[PATH_MAX], want[PATH_MAX];
		int rc;

		memset(&id, 0, sizeof(id));
		snprintf(id.user, sizeof(id.user), "%s", cases[i].user);
		id.kind = cases[i].kind;
		id.job = cases[i].job;
		id.step = cases[i].step;
		id.task = cases[i].task;
		errno = 0;
		rc = phos_image_gen_path(&f->s, &id, cases[i].gen, got, sizeof(got), NULL);
		if (!cases[i].want) {
			if (rc != -1 || errno != EINVAL)
				fail_msg("case %zu accepted: %s", i, got);
			continue;
		}
		assert_int_equal(rc, 0);
		snprintf(want, sizeof(want), "%s/%s", f->root, cases[i].want);
		assert_string_equal(got, want);
		/* The task path is the same without the generation. */
		assert_int_equal(phos_image_task_path(&f->s, &id, got, sizeof(got), NULL), 0);
		*strrchr(want, '/') = '\0';
		assert_string_equal(got, want);
		/* Bounded: one byte short fails with ENAMETOOLONG. */
		errno = 0;
		assert_int_equal(phos_image_task_path(&f->s, &id, got, strlen(want), NULL), -1);
		assert_int_equal(errno, ENAMETOOLONG);
	}
	/* pid jobs via the helper */
	{
		struct phos_image_id id;
		char p[PATH_MAX];

		assert_int_equal(phos_image_id_pid(&id, "dave", 77, NULL), 0);
		assert_int_equal(phos_image_gen_path(&f->s, &id, 1, p, sizeof(p), NULL), 0);
		assert_non_null(strstr(p, "/dave/pid-77/0/0/000001"));
		assert_int_equal(phos_image_id_pid(&id, "dave", 0, NULL), -1);
	}
}

static void test_store_open(void **state)
{
	struct fx *f = *state;
	struct phos_store s;
	struct phos_err e;
	struct stat st;
	char p[256];

	assert_int_equal(stat(f->root, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	/* trailing slashes are dropped */
	snprintf(p, sizeof(p), "%s//", f->root);
	assert_int_equal(phos_store_open(&s, p, &f->key, false, &e), 0);
	assert_string_equal(s.root, f->root);
	phos_store_close(&s);
	/* relative, missing */
	assert_int_equal(phos_store_open(&s, "relative/dir", &f->key, true, &e), -1);
	assert_int_equal(errno, EINVAL);
	snprintf(p, sizeof(p), "%s/missing", f->tmp);
	assert_int_equal(phos_store_open(&s, p, &f->key, false, &e), -1);
	assert_int_equal(errno, ENOENT);
	/* group-writable root refused with a hint */
	assert_int_equal(chmod(f->root, 0775), 0);
	errno = 0;
	assert_int_equal(phos_store_open(&s, f->root, &f->key, false, &e), -1);
	assert_int_equal(errno, EPERM);
	assert_non_null(strstr(e.msg, "chmod 0755"));
	assert_int_equal(chmod(f->root, 0755), 0);
	phos_store_close(&s);
}

/* ---- publish and verify ----------------------------------------------- */

static void test_publish_verify(void **state)
{
	struct fx *f = *state;
	struct phos_manifest m;
	struct phos_err e = { "" };
	char p[PATH_MAX];
	struct stat st;
	uint64_t gen;

	gen = publish(f, &f->id, 1000);
	assert_int_equal(gen, 1);
	assert_int_equal(publish(f, &f->id, 1000), 2);
	phos_manifest_init(&m);
	if (phos_image_verify(&f->s, &f->id, 1, 1000, 0, &m, &e) < 0)
		fail_msg("verify: %s", e.msg);
	assert_int_equal(m.uid, 1000);
	assert_int_equal(m.gid, 100);
	assert_string_equal(m.user, "alice");
	assert_int_equal(m.generation, 1);
	assert_int_equal(m.root_pid, 4242);
	assert_int_equal(m.root_nspid, 1);
	assert_string_equal(phos_manifest_get_extra(&m, "stdio.1"), "pipe:[12345]");
	assert_int_equal(m.n_files, 4);
	assert_non_null(phos_manifest_find_file(&m, "parent/pages-1.img"));
	assert_true(phos_manifest_find_file(&m, "pages-1.img")->size == 29);
	assert_true(phos_manifest_find_file(&m, "core-4242.img")->size == 0);
	phos_manifest_free(&m);
	/* any uid allowed (root / SlurmUser) */
	assert_int_equal(verify(f, 2, PHOS_UID_ANY, 0, &e), 0);
	/* modes: dirs 0700, files 0600 */
	gen_path(f, &f->id, 1, NULL, p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(st.st_uid, geteuid());
	gen_path(f, &f->id, 1, "pages-1.img", p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	gen_path(f, &f->id, 1, "parent", p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	snprintf(p, sizeof(p), "%s/alice", f->root);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	gen_path(f, &f->id, 1, "manifest.mac", p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 65);
}

typedef void (*mutate_fn)(struct fx *f, const char *gdir);

static void m_truncate(struct fx *f, const char *g)
{
	sh("truncate -s 5 %s/pages-1.img", g);
}

static void m_flip(struct fx *f, const char *g)
{
	sh("printf 'X' | dd of=%s/parent/pages-1.img bs=1 seek=3 conv=notrunc status=none", g);
}

static void m_rm_mac(struct fx *f, const char *g)
{
	sh("rm %s/manifest.mac", g);
}

static void m_rm_manifest(struct fx *f, const char *g)
{
	sh("rm %s/manifest.yaml", g);
}

static void m_tamper(struct fx *f, const char *g)
{
	sh("sed -i 's/uid: 1000/uid: 1001/' %s/manifest.yaml", g);
}

/* Rewrite the manifest with another version and a valid MAC (as if a
 * future phos with the same key wrote it). */
static void remac(struct fx *f, const char *g)
{
	unsigned char mac[PHOS_MAC_LEN];
	char path[PATH_MAX], text[2 * PHOS_MAC_LEN + 2], buf[65536];
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "%s/manifest.yaml", g);
	fp = fopen(path, "r");
	assert_non_null(fp);
	n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	assert_int_equal(phos_mac_compute(&f->key, buf, n, mac, NULL), 0);
	phos_mac_format(mac, text);
	snprintf(path, sizeof(path), "%s/manifest.mac", g);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void m_version(struct fx *f, const char *g)
{
	sh("sed -i 's/^version: 1$/version: 2/' %s/manifest.yaml", g);
	remac(f, g);
}

static void m_wrong_gen(struct fx *f, const char *g)
{
	sh("sed -i 's/^generation: .*/generation: 9/' %s/manifest.yaml", g);
	remac(f, g);
}

static void m_delete_gen(struct fx *f, const char *g)
{
	sh("rm -rf %s", g);
}

static void m_symlink(struct fx *f, const char *g)
{
	sh("ln -s /etc/shadow %s/evil.img", g);
}

static void m_symlink_replaces(struct fx *f, const char *g)
{
	sh("mv %s/pages-1.img %s/real && ln -s %s/real %s/pages-1.img", g, f->tmp, f->tmp, g);
}

static void m_fifo(struct fx *f, const char *g)
{
	sh("mkfifo %s/parent/fifo", g);
}

static void m_extra(struct fx *f, const char *g)
{
	sh("echo x > %s/added.img", g);
}

static void m_missing(struct fx *f, const char *g)
{
	sh("rm %s/inventory.img", g);
}

static void m_chmod_dir(struct fx *f, const char *g)
{
	sh("chmod g+w %s", g);
}

static void m_chmod_file(struct fx *f, const char *g)
{
	sh("chmod o+w %s/core-4242.img", g);
}

static void m_chmod_task(struct fx *f, const char *g)
{
	sh("chmod o+w %s/..", g);
}

static void m_chown_file(struct fx *f, const char *g)
{
	sh("chown 65534 %s/pages-1.img", g);
}

static void m_chown_dir(struct fx *f, const char *g)
{
	sh("chown 65534 %s/parent", g);
}

static void m_chown_user(struct fx *f, const char *g)
{
	sh("chown 65534 %s/alice", f->root);
}

static void m_gen_symlink(struct fx *f, const char *g)
{
	/* the generation itself replaced by a symlink to a valid one */
	sh("mv %s %s.x && ln -s %s.x %s", g, g, g, g);
}

static void test_corruptions(void **state)
{
	static const struct {
		const char *name;
		mutate_fn fn;
		bool root_only;
		uid_t uid;		/* requester */
		int err;
		const char *msg;
	} cases[] = {
		{ "untouched", NULL, false, 1000, 0, NULL },
		{ "truncated file", m_truncate, false, 1000, EMSGSIZE, "truncated" },
		{ "flipped byte", m_flip, false, 1000, EILSEQ, "content does not match" },
		{ "MAC missing", m_rm_mac, false, 1000, ENOKEY, "manifest.mac is missing" },
		{ "manifest missing", m_rm_manifest, false, 1000, EBADMSG, "manifest.yaml is missing" },
		{ "manifest tampered", m_tamper, false, 1000, EKEYREJECTED, "MAC of manifest.yaml does not match" },
		{ "unknown version", m_version, false, 1000, EPROTONOSUPPORT, "version '2' is not supported" },
		{ "manifest of another generation", m_wrong_gen, false, 1000, EBADMSG, "another task or generation" },
		{ "generation deleted", m_delete_gen, false, 1000, ENOENT, "does not exist" },
		{ "symlink added", m_symlink, false, 1000, ELOOP, "evil.img is a symlink" },
		{ "file replaced by symlink", m_symlink_replaces, false, 1000, ELOOP, "is a symlink" },
		{ "generation is a symlink", m_gen_symlink, false, 1000, ELOOP, "symlink or not a directory" },
		{ "fifo added", m_fifo, false, 1000, EMEDIUMTYPE, "parent/fifo is a fifo" },
		{ "file added", m_extra, false, 1000, EEXIST, "added.img is not listed" },
		{ "file deleted", m_missing, false, 1000, ENODATA, "inventory.img is listed in the manifest but missing" },
		{ "foreign owner", NULL, false, 1001, EACCES, "belongs to uid 1000" },
		{ "generation group-writable", m_chmod_dir, false, 1000, EPERM, "not writable by group" },
		{ "file world-writable", m_chmod_file, false, 1000, EPERM, "file core-4242.img is owned" },
		{ "task dir world-writable", m_chmod_task, false, 1000, EPERM, "directory" },
		{ "file chowned", m_chown_file, true, 1000, EPERM, "owned by uid 65534" },
		{ "subdir chowned", m_chown_dir, true, 1000, EPERM, "owned by uid 65534" },
		{ "user dir chowned", m_chown_user, true, 1000, EPERM, "owned by uid 65534" },
	};
	struct fx *f = *state;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct phos_err e = { "" };
		char g[PATH_MAX];
		uint64_t gen;
		int rc;

		if (cases[i].root_only && geteuid() != 0) {
			print_message("# skip '%s': needs root\n", cases[i].name);
			continue;
		}
		/* A fresh user and job per case. */
		assert_int_equal(phos_image_id_slurm(&f->id, "alice", (uint32_t)(100 + i), 0, 0, NULL), 0);
		gen = publish(f, &f->id, 1000);
		gen_path(f, &f->id, gen, NULL, g, sizeof(g));
		if (cases[i].fn)
			cases[i].fn(f, g);
		rc = verify(f, gen, cases[i].uid, 0, &e);
		if (cases[i].err == 0) {
			if (rc != 0)
				fail_msg("'%s': %s", cases[i].name, e.msg);
		} else if (rc != -1 || errno != cases[i].err || !strstr(e.msg, cases[i].msg)) {
			fail_msg("'%s': rc %d errno %d (%s) msg '%s'", cases[i].name, rc, errno,
				 strerror(errno), e.msg);
		}
		/* select refuses it too, with the same errno */
		if (cases[i].err) {
			uint64_t sel = 0;

			errno = 0;
			assert_int_equal(phos_image_select(&f->s, &f->id, cases[i].uid, 0, &sel, NULL, &e), -1);
			assert_int_equal(errno, cases[i].err);
		}
		if (cases[i].fn == m_chown_user || cases[i].fn == m_chmod_task) {
			/* put the shared directories back for the next cases */
			sh("chown %u %s/alice && chmod 0700 %s/alice %s/..", (unsigned)geteuid(),
			   f->root, f->root, g);
		}
	}
}

static void test_quick_verify(void **state)
{
	struct fx *f = *state;
	struct phos_err e;
	char g[PATH_MAX];
	uint64_t gen = publish(f, &f->id, 1000);

	gen_path(f, &f->id, gen, NULL, g, sizeof(g));
	m_flip(f, g);
	/* sizes are right: a quick check passes, the full one does not */
	assert_int_equal(verify(f, gen, 1000, PHOS_VERIFY_QUICK, &e), 0);
	assert_int_equal(verify(f, gen, 1000, 0, &e), -1);
	assert_int_equal(errno, EILSEQ);
	m_truncate(f, g);
	assert_int_equal(verify(f, gen, 1000, PHOS_VERIFY_QUICK, &e), -1);
	assert_int_equal(errno, EMSGSIZE);
	/* no key: refuse rather than skip the MAC */
	{
		struct phos_store s2 = f->s;

		s2.key = NULL;
		errno = 0;
		assert_int_equal(phos_image_verify(&s2, &f->id, gen, 1000, 0, NULL, &e), -1);
		assert_int_equal(errno, EINVAL);
	}
}

/* A file of PHOS_BLOCKS_MIN bytes or more is hashed in pieces by several
 * threads (manifest "block"): the same digest every time, and a byte
 * changed in any piece fails the full check. */
static void test_large_file_blocks(void **state)
{
	struct fx *f = *state;
	struct phos_image_writer w;
	struct phos_manifest m;
	struct phos_err e = { "" };
	char g[PATH_MAX];
	uint64_t size = PHOS_BLOCKS_MIN + 12345;	/* a short last piece */
	const struct phos_manifest_file *mf;
	unsigned char sha[PHOS_SHA256_LEN], sha2[PHOS_SHA256_LEN];
	int fd;

	if (phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e) < 0)
		fail_msg("begin: %s", e.msg);
	fd = openat(w.dir_fd, "pages-1.img", O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_int_equal(pwrite(fd, "first", 5, 0), 5);
	assert_int_equal(pwrite(fd, "last", 4, (off_t)size - 4), 4);
	/* the digest is the hash of the pieces' hashes, the same each time */
	assert_int_equal(phos_sha256_blocks(fd, size, PHOS_BLOCK, sha), 0);
	assert_int_equal(phos_sha256_blocks(fd, size, PHOS_BLOCK, sha2), 0);
	assert_memory_equal(sha, sha2, sizeof(sha));
	assert_int_equal(phos_sha256_blocks(fd, size, 1000, sha2), -1);	/* not 4096-aligned */
	assert_int_equal(errno, EINVAL);
	close(fd);
	put(w.dir_fd, "inventory.img", "inventory");
	if (phos_image_publish(&w, &e) < 0)
		fail_msg("publish: %s", e.msg);
	phos_image_abort(&w);
	phos_manifest_init(&m);
	assert_int_equal(phos_image_verify(&f->s, &f->id, 1, 1000, 0, &m, &e), 0);
	mf = phos_manifest_find_file(&m, "pages-1.img");
	assert_non_null(mf);
	assert_int_equal(mf->block, PHOS_BLOCK);
	assert_int_equal(mf->size, size);
	assert_memory_equal(mf->sha256, sha, sizeof(sha));
	mf = phos_manifest_find_file(&m, "inventory.img");
	assert_non_null(mf);
	assert_int_equal(mf->block, 0);	/* small files: one SHA-256 */
	phos_manifest_free(&m);
	/* a byte in the last, short piece */
	gen_path(f, &f->id, 1, NULL, g, sizeof(g));
	sh("printf 'X' | dd of=%s/pages-1.img bs=1 seek=%llu conv=notrunc status=none", g,
	   (unsigned long long)size - 2);
	assert_int_equal(verify(f, 1, 1000, PHOS_VERIFY_QUICK, &e), 0);
	assert_int_equal(verify(f, 1, 1000, 0, &e), -1);
	assert_int_equal(errno, EILSEQ);
	assert_non_null(strstr(e.msg, "pages-1.img"));
}

/* ---- atomic publish ------------------------------------------------------ */

static size_t count_gens(struct fx *f, const struct phos_image_id *id)
{
	struct phos_image_gen_info *info;
	size_t n;

	assert_int_equal(phos_image_list_generations(&f->s, id, PHOS_UID_ANY, 0, &info, &n, NULL), 0);
	free(info);
	return n;
}

static void test_partial_invisible(void **state)
{
	struct fx *f = *state;
	struct phos_image_writer w;
	struct phos_err e;
	struct stat st;
	uint64_t sel;
	pid_t pid;
	int status;
	char task[PATH_MAX], partial[PATH_MAX + 128];

	/* A checkpoint in progress: files, even a manifest-looking file, but no rename. */
	assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
	assert_int_equal(w.generation, 1);
	assert_non_null(strstr(w.path, "/.partial-000001-"));
	put(w.dir_fd, "pages-1.img", "data");
	assert_int_equal(count_gens(f, &f->id), 0);
	errno = 0;
	assert_int_equal(phos_image_select(&f->s, &f->id, 1000, 0, &sel, NULL, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_non_null(strstr(e.msg, "no checkpoint exists"));
	assert_int_equal(verify(f, 1, 1000, 0, &e), -1);
	assert_int_equal(errno, ENOENT);
	/* the cleanup leaves a live writer's dir alone */
	assert_int_equal(phos_image_cleanup(&f->s, NULL, 0, &e), 0);
	assert_int_equal(stat(w.path, &st), 0);
	phos_image_abort(&w);
	assert_int_equal(stat(w.path, &st), -1);
	phos_image_abort(&w);	/* twice */

	/* A writer that dies before publishing (a phosd killed mid-checkpoint). */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct phos_image_writer cw;

		if (phos_image_begin(&f->s, &f->id, 1000, 100, &cw, NULL) < 0)
			_exit(1);
		put(cw.dir_fd, "pages-1.img", "data");
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(count_gens(f, &f->id), 0);
	/* the next checkpoint does not reuse its number, and is published fine */
	assert_int_equal(publish(f, &f->id, 1000), 2);
	assert_int_equal(count_gens(f, &f->id), 1);
	assert_int_equal(phos_image_select(&f->s, &f->id, 1000, 0, &sel, NULL, &e), 0);
	assert_int_equal(sel, 2);
	/* dead pid on this host: removed */
	assert_int_equal(phos_image_task_path(&f->s, &f->id, task, sizeof(task), NULL), 0);
	snprintf(partial, sizeof(partial), "%s/.partial-000001-%.64s-%d", task, f->s.host, (int)pid);
	assert_int_equal(stat(partial, &st), 0);
	assert_int_equal(phos_image_cleanup(&f->s, "alice", 0, &e), 1);
	assert_int_equal(stat(partial, &st), -1);
	assert_int_equal(count_gens(f, &f->id), 1);
}

static void test_partial_other_host(void **state)
{
	struct fx *f = *state;
	struct phos_err e;
	struct timespec old[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
	char task[PATH_MAX], a[PATH_MAX + 64], b[PATH_MAX + 64];
	struct stat st;

	publish(f, &f->id, 1000);
	assert_int_equal(phos_image_task_path(&f->s, &f->id, task, sizeof(task), NULL), 0);
	/* another host's partial: we cannot see its pid; only age removes it */
	snprintf(a, sizeof(a), "%s/.partial-000005-other-node-7-1", task);
	snprintf(b, sizeof(b), "%s/.partial-000006-other-node-7-2", task);
	assert_int_equal(mkdir(a, 0700), 0);
	assert_int_equal(mkdir(b, 0700), 0);
	assert_int_equal(utimensat(AT_FDCWD, a, old, 0), 0);
	assert_int_equal(phos_image_cleanup(&f->s, NULL, 3600, &e), 1);
	assert_int_equal(stat(a, &st), -1);
	assert_int_equal(stat(b, &st), 0);
	/* the next generation is numbered after partials too */
	assert_int_equal(publish(f, &f->id, 1000), 7);
	/* leftovers of an interrupted removal are cleaned too */
	snprintf(a, sizeof(a), "%s/.removing-000003-other-9", task);
	assert_int_equal(mkdir(a, 0700), 0);
	assert_int_equal(phos_image_cleanup(&f->s, NULL, 3600, &e), 1);
	assert_int_equal(stat(a, &st), -1);
}

static void test_publish_refusals(void **state)
{
	struct fx *f = *state;
	struct phos_image_writer w;
	struct phos_err e;
	char p[PATH_MAX];
	struct stat st;

	/* a symlink in the staging dir: refused, nothing published */
	assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
	put(w.dir_fd, "pages-1.img", "data");
	assert_int_equal(symlinkat("/etc/passwd", w.dir_fd, "passwd.img"), 0);
	errno = 0;
	assert_int_equal(phos_image_publish(&w, &e), -1);
	assert_int_equal(errno, ELOOP);
	assert_int_equal(count_gens(f, &f->id), 0);
	phos_image_abort(&w);

	/* a manifest already in the staging dir: refused */
	assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
	put(w.dir_fd, "manifest.yaml", "version: 1\n");
	assert_int_equal(phos_image_publish(&w, &e), -1);
	assert_int_equal(errno, EEXIST);
	phos_image_abort(&w);

	/* a hidden name, a fifo */
	assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
	put(w.dir_fd, ".hidden", "x");
	assert_int_equal(phos_image_publish(&w, &e), -1);
	assert_int_equal(errno, EINVAL);
	phos_image_abort(&w);
	assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
	assert_int_equal(mkfifoat(w.dir_fd, "fifo", 0600), 0);
	assert_int_equal(phos_image_publish(&w, &e), -1);
	assert_int_equal(errno, EMEDIUMTYPE);
	phos_image_abort(&w);

	/* someone else published this number first: EEXIST, never replaced */
	assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
	put(w.dir_fd, "pages-1.img", "mine");
	{
		struct phos_image_writer w2;

		assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w2, &e), 0);
		assert_true(w2.generation == w.generation + 1);
		w2.generation = w.generation;	/* force the clash */
		w2.manifest.generation = w.generation;
		put(w2.dir_fd, "pages-1.img", "theirs");
		assert_int_equal(phos_image_publish(&w2, &e), 0);
		phos_image_abort(&w2);	/* frees the manifest */
	}
	errno = 0;
	assert_int_equal(phos_image_publish(&w, &e), -1);
	assert_int_equal(errno, EEXIST);
	assert_non_null(strstr(e.msg, "published it first"));
	assert_int_equal(stat(w.path, &st), 0);	/* left for abort */
	snprintf(p, sizeof(p), "%s", w.path);
	phos_image_abort(&w);
	assert_int_equal(stat(p, &st), -1);
	assert_int_equal(count_gens(f, &f->id), 1);
	/* no key: refused */
	{
		struct phos_store s2 = f->s;

		s2.key = NULL;
		assert_int_equal(phos_image_begin(&s2, &f->id, 1000, 100, &w, &e), 0);
		assert_int_equal(phos_image_publish(&w, &e), -1);
		assert_int_equal(errno, EINVAL);
		phos_image_abort(&w);
	}
	/* publish without begin */
	phos_image_writer_init(&w);
	assert_int_equal(phos_image_publish(&w, &e), -1);
	assert_int_equal(errno, EINVAL);
	phos_image_abort(&w);
}

static void test_inline_parents(void **state)
{
	static const struct {
		const char *link;	/* the final dump's parent link */
		int err;
	} bad[] = {
		{ "/etc", EINVAL }, { "../x", EINVAL }, { "pre-2/../../x", EINVAL },
		{ "missing", EINVAL }, { "file.img", EINVAL }, { ".", EINVAL },
	};
	struct fx *f = *state;
	struct phos_image_writer w;
	struct phos_manifest m;
	struct phos_err e;
	char p[PATH_MAX + 64];
	struct stat st;
	size_t i;
	int d;

	/* pre-1 <- pre-2 <- final, linked the way CRIU does */
	assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
	assert_int_equal(phos_image_inline_parents(&w, &e), 0);	/* no parent: nothing */
	assert_int_equal(mkdirat(w.dir_fd, "pre-1", 0700), 0);
	assert_int_equal(mkdirat(w.dir_fd, "pre-2", 0700), 0);
	d = openat(w.dir_fd, "pre-1", O_RDONLY | O_DIRECTORY);
	put(d, "pages-1.img", "round 1");
	close(d);
	d = openat(w.dir_fd, "pre-2", O_RDONLY | O_DIRECTORY);
	put(d, "pages-1.img", "round 2");
	assert_int_equal(symlinkat("../pre-1", d, "parent"), 0);
	close(d);
	put(w.dir_fd, "pages-1.img", "final");
	assert_int_equal(symlinkat("pre-2", w.dir_fd, "parent"), 0);
	if (phos_image_inline_parents(&w, &e) < 0)
		fail_msg("%s", e.msg);
	snprintf(p, sizeof(p), "%s/parent/parent/pages-1.img", w.path);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	snprintf(p, sizeof(p), "%s/pre-1", w.path);
	assert_int_equal(lstat(p, &st), -1);
	assert_int_equal(phos_image_inline_parents(&w, &e), 0);	/* idempotent */
	assert_int_equal(phos_image_publish(&w, &e), 0);
	phos_image_abort(&w);
	phos_manifest_init(&m);
	assert_int_equal(phos_image_verify(&f->s, &f->id, 1, 1000, 0, &m, &e), 0);
	assert_int_equal(m.n_files, 3);
	assert_non_null(phos_manifest_find_file(&m, "parent/parent/pages-1.img"));
	assert_true(phos_manifest_find_file(&m, "parent/pages-1.img")->size == 7);
	phos_manifest_free(&m);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e), 0);
		assert_int_equal(mkdirat(w.dir_fd, "pre-2", 0700), 0);
		put(w.dir_fd, "file.img", "x");
		assert_int_equal(symlinkat(bad[i].link, w.dir_fd, "parent"), 0);
		errno = 0;
		if (phos_image_inline_parents(&w, &e) != -1 || errno != bad[i].err)
			fail_msg("link '%s' accepted", bad[i].link);
		/* the symlink is still there, so publish refuses too */
		assert_int_equal(phos_image_publish(&w, &e), -1);
		assert_int_equal(errno, ELOOP);
		phos_image_abort(&w);
	}
	assert_int_equal(count_gens(f, &f->id), 1);
}

/* ---- selection, listing, retention -------------------------------------- */

static void corrupt(struct fx *f, uint64_t gen)
{
	char g[PATH_MAX];

	gen_path(f, &f->id, gen, NULL, g, sizeof(g));
	m_flip(f, g);
}

static void test_select(void **state)
{
	struct fx *f = *state;
	struct phos_image_gen_info *info;
	struct phos_manifest m;
	struct phos_err e;
	uint64_t sel = 0;
	size_t n;

	assert_int_equal(publish(f, &f->id, 1000), 1);
	assert_int_equal(publish(f, &f->id, 1000), 2);
	assert_int_equal(publish(f, &f->id, 1000), 3);
	corrupt(f, 3);
	phos_manifest_init(&m);
	assert_int_equal(phos_image_select(&f->s, &f->id, 1000, 0, &sel, &m, &e), 0);
	assert_int_equal(sel, 2);
	assert_int_equal(m.generation, 2);
	phos_manifest_free(&m);
	/* a quick check (phosctl restore: the hash runs beside CRIU) does not
	 * see generation 3's content; below it, the full check picks 2, and
	 * below 1 there is nothing */
	assert_int_equal(phos_image_select(&f->s, &f->id, 1000, PHOS_VERIFY_QUICK, &sel, NULL, &e), 0);
	assert_int_equal(sel, 3);
	assert_int_equal(phos_image_select_below(&f->s, &f->id, 1000, 0, 3, &sel, NULL, &e), 0);
	assert_int_equal(sel, 2);
	assert_int_equal(phos_image_select_below(&f->s, &f->id, 1000, 0, 2, &sel, NULL, &e), 0);
	assert_int_equal(sel, 1);
	errno = 0;
	assert_int_equal(phos_image_select_below(&f->s, &f->id, 1000, 0, 1, &sel, NULL, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_non_null(strstr(e.msg, "older than generation 1"));
	/* a generation's path names its id and number, and nothing else does */
	{
		struct phos_image_id pid;
		char gp[PATH_MAX], bad[PATH_MAX + 16];
		uint64_t g = 0;

		assert_int_equal(phos_image_gen_path(&f->s, &f->id, 2, gp, sizeof(gp), &e), 0);
		assert_int_equal(phos_image_parse_path(&f->s, gp, &pid, &g, &e), 0);
		assert_int_equal(g, 2);
		assert_string_equal(pid.user, f->id.user);
		assert_int_equal(pid.job, f->id.job);
		assert_int_equal(pid.task, f->id.task);
		snprintf(bad, sizeof(bad), "%s/x", gp);
		assert_int_equal(phos_image_parse_path(&f->s, bad, &pid, &g, &e), -1);
		assert_int_equal(phos_image_parse_path(&f->s, "/elsewhere/a/1/0/0/000001", &pid, &g, &e), -1);
		assert_non_null(strstr(e.msg, "not under the image root"));
	}
	/* listing shows all with reasons */
	assert_int_equal(phos_image_list_generations(&f->s, &f->id, 1000, 0, &info, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_int_equal(info[0].generation, 1);
	assert_int_equal(info[0].err, 0);
	assert_true(info[0].bytes > 0);
	assert_string_equal(info[0].host, f->s.host);
	assert_int_equal(info[2].generation, 3);
	assert_int_equal(info[2].err, EILSEQ);
	assert_non_null(strstr(info[2].reason, "content does not match"));
	free(info);
	/* none valid: the newest one's errno, every reason in the message */
	corrupt(f, 2);
	corrupt(f, 1);
	errno = 0;
	assert_int_equal(phos_image_select(&f->s, &f->id, 1000, 0, &sel, NULL, &e), -1);
	assert_int_equal(errno, EILSEQ);
	assert_non_null(strstr(e.msg, "no valid checkpoint"));
	if (!strstr(e.msg, "3 generations"))
		fail_msg("%s", e.msg);
	assert_non_null(strstr(e.msg, "000003/parent/pages-1.img"));
	/* another user gets EACCES */
	errno = 0;
	assert_int_equal(phos_image_select(&f->s, &f->id, 2000, PHOS_VERIFY_QUICK, &sel, NULL, &e), -1);
	assert_int_equal(errno, EACCES);
	/* missing task */
	f->id.task = 9;
	assert_int_equal(phos_image_select(&f->s, &f->id, 1000, 0, &sel, NULL, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(phos_image_list_generations(&f->s, &f->id, 1000, 0, &info, &n, &e), 0);
	assert_int_equal(n, 0);
}

static void expect_gens(struct fx *f, const uint64_t *want, size_t nwant)
{
	struct phos_image_gen_info *info;
	size_t n, i;

	assert_int_equal(phos_image_list_generations(&f->s, &f->id, PHOS_UID_ANY, 0, &info, &n, NULL), 0);
	if (n != nwant)
		fail_msg("%zu generations, want %zu", n, nwant);
	for (i = 0; i < n; i++)
		assert_int_equal(info[i].generation, want[i]);
	free(info);
}

static void test_retention(void **state)
{
	struct fx *f = *state;
	struct phos_err e;
	uint64_t sel, i;
	char task[PATH_MAX], p[PATH_MAX + 128];
	struct stat st;

	for (i = 1; i <= 5; i++)
		assert_int_equal(publish(f, &f->id, 1000), i);
	/* newest corrupt: it is kept (newer than the kept ones), 4 and 3 kept */
	corrupt(f, 5);
	assert_int_equal(phos_image_task_path(&f->s, &f->id, task, sizeof(task), NULL), 0);
	snprintf(p, sizeof(p), "%s/.partial-000009-%.64s-999999999", task, f->s.host);
	assert_int_equal(mkdir(p, 0700), 0);	/* pid that cannot exist */
	if (phos_image_retain(&f->s, &f->id, 2, 0, &e) != 2)
		fail_msg("retain: %s", e.msg);
	expect_gens(f, (const uint64_t[]){ 3, 4, 5 }, 3);
	assert_int_equal(stat(p, &st), -1);	/* stale partial cleaned */
	/* keep 0 counts as 1: the newest valid (4) is never removed */
	assert_int_equal(phos_image_retain(&f->s, &f->id, 0, 0, &e), 1);
	expect_gens(f, (const uint64_t[]){ 4, 5 }, 2);
	assert_int_equal(phos_image_select(&f->s, &f->id, 1000, 0, &sel, NULL, &e), 0);
	assert_int_equal(sel, 4);
	/* keeping more than there are removes nothing */
	assert_int_equal(phos_image_retain(&f->s, &f->id, 10, 0, &e), 0);
	expect_gens(f, (const uint64_t[]){ 4, 5 }, 2);
	/* no valid generation at all: nothing is removed */
	corrupt(f, 4);
	assert_int_equal(publish(f, &f->id, 1000), 6);
	corrupt(f, 6);
	assert_int_equal(phos_image_retain(&f->s, &f->id, 1, 0, &e), 0);
	expect_gens(f, (const uint64_t[]){ 4, 5, 6 }, 3);
	/* a new valid one: everything older goes */
	assert_int_equal(publish(f, &f->id, 1000), 7);
	assert_int_equal(phos_image_retain(&f->s, &f->id, 1, PHOS_VERIFY_QUICK, &e), 3);
	expect_gens(f, (const uint64_t[]){ 7 }, 1);
	/* no removal leftovers */
	assert_int_equal(phos_image_cleanup(&f->s, NULL, 0, &e), 0);
}

static void test_list_and_remove(void **state)
{
	static const struct {
		const char *user;
		enum phos_job_kind kind;
		uint32_t job, step, task;
	} ids[] = {
		{ "alice", PHOS_JOB_SLURM, 100, 0, 1 },
		{ "alice", PHOS_JOB_SLURM, 100, 0, 0 },
		{ "alice", PHOS_JOB_SLURM, 100, PHOS_STEP_BATCH, 0 },
		{ "alice", PHOS_JOB_SLURM, 20, 1, 0 },
		{ "alice", PHOS_JOB_PID, 4242, 0, 0 },
		{ "bob", PHOS_JOB_SLURM, 100, 0, 0 },
	};
	struct fx *f = *state;
	struct phos_image_task_info *t;
	struct phos_image_id id;
	struct phos_err e;
	size_t n, i;

	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		memset(&id, 0, sizeof(id));
		strcpy(id.user, ids[i].user);
		id.kind = ids[i].kind;
		id.job = ids[i].job;
		id.step = ids[i].step;
		id.task = ids[i].task;
		publish(f, &id, 1000);
		if (i == 0)
			publish(f, &id, 1000);
	}
	/* junk that must not be listed */
	sh("mkdir -p %s/alice/notajob/0/0 %s/alice/100/0/007 %s/alice/100/0/.partial-x "
	   "%s/.hidden/1/0/0 %s/alice/0100/0/0", f->root, f->root, f->root, f->root, f->root);
	sh("chmod 0700 %s/alice/notajob %s/alice/100/0/007 %s/alice/0100", f->root, f->root, f->root);

	assert_int_equal(phos_image_list_tasks(&f->s, "alice", NULL, &t, &n, &e), 0);
	assert_int_equal(n, 5);
	/* sorted: slurm jobs 20, 100 (step 0 tasks 0,1, batch), then pid jobs */
	assert_int_equal(t[0].id.job, 20);
	assert_int_equal(t[1].id.job, 100);
	assert_int_equal(t[1].id.task, 0);
	assert_int_equal(t[2].id.task, 1);
	assert_int_equal(t[2].n_generations, 2);
	assert_int_equal(t[2].newest, 2);
	assert_int_equal(t[3].id.step, PHOS_STEP_BATCH);
	assert_int_equal(t[4].id.kind, PHOS_JOB_PID);
	assert_int_equal(t[4].id.job, 4242);
	assert_string_equal(t[4].id.user, "alice");
	free(t);
	assert_int_equal(phos_image_list_tasks(&f->s, "alice", "100", &t, &n, &e), 0);
	assert_int_equal(n, 3);
	free(t);
	assert_int_equal(phos_image_list_tasks(&f->s, "alice", "pid-4242", &t, &n, &e), 0);
	assert_int_equal(n, 1);
	free(t);
	assert_int_equal(phos_image_list_tasks(&f->s, NULL, NULL, &t, &n, &e), 0);
	assert_int_equal(n, 6);
	assert_string_equal(t[5].id.user, "bob");
	free(t);
	assert_int_equal(phos_image_list_tasks(&f->s, "nobody", NULL, &t, &n, &e), 0);
	assert_int_equal(n, 0);
	errno = 0;
	assert_int_equal(phos_image_list_tasks(&f->s, "../x", NULL, &t, &n, &e), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(phos_image_list_tasks(&f->s, "alice", "01", &t, &n, &e), -1);
	assert_int_equal(errno, EINVAL);

	/* job end: all of alice's job 100 goes, bob's job 100 stays */
	assert_int_equal(phos_image_id_slurm(&id, "alice", 100, 0, 0, NULL), 0);
	assert_int_equal(phos_image_remove_job(&f->s, &id, &e), 0);
	assert_int_equal(phos_image_remove_job(&f->s, &id, &e), 0);	/* again: fine */
	assert_int_equal(phos_image_list_tasks(&f->s, "alice", NULL, &t, &n, &e), 0);
	assert_int_equal(n, 2);
	free(t);
	assert_int_equal(phos_image_list_tasks(&f->s, "bob", "100", &t, &n, &e), 0);
	assert_int_equal(n, 1);
	free(t);
	/* a pid job */
	assert_int_equal(phos_image_id_pid(&id, "alice", 4242, NULL), 0);
	assert_int_equal(phos_image_remove_job(&f->s, &id, &e), 0);
	assert_int_equal(phos_image_list_tasks(&f->s, "alice", NULL, &t, &n, &e), 0);
	assert_int_equal(n, 1);
	free(t);
	/* nothing hidden is left behind by the removals */
	assert_int_equal(phos_image_cleanup(&f->s, NULL, 0, &e), 0);
}

static void test_remove_no_follow(void **state)
{
	struct fx *f = *state;
	struct phos_err e;
	struct stat st;
	char outside[PATH_MAX];

	/* a symlink planted in a job dir must be removed, not followed */
	publish(f, &f->id, 1000);
	snprintf(outside, sizeof(outside), "%s/outside", f->tmp);
	sh("mkdir %s && echo keep > %s/file", outside, outside);
	sh("ln -s %s %s/alice/1234/0/link", outside, f->root);
	assert_int_equal(phos_image_remove_job(&f->s, &f->id, &e), 0);
	assert_int_equal(stat(outside, &st), 0);
	sh("test -f %s/file", outside);
	assert_int_equal(count_gens(f, &f->id), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_verify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corruptions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quick_verify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_file_blocks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_invisible, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_other_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inline_parents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_select, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_and_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_no_follow, setup, teardown),
	};

	phos_log_open("test_image", PHOS_LOG_STDERR, LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
