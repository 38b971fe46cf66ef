/*
 * Unit tests: the content-addressed chunk store (common/chunks.c) on a
 * real directory: put/get and every way get refuses a chunk, index files
 * (round trip and malformed ones), the sweep; and its use by the image
 * store (common/image.c): full verify checks the chunks exist, retention
 * sweeps the chunks no generation names unless a writer holds the store.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/sha.h>

#include "chunks.h"
#include "image.h"
#include "log.h"

#define CHUNK	8192	/* chunk size of the indexes the tests write */

/* ---- fixtures ----------------------------------------------------------- */

/* A bare chunk directory. */
struct dir_fx {
	char tmp[64];
	int dfd;
};

static int dir_setup(void **state)
{
	struct dir_fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->tmp, "/tmp/phos-chunks-XXXXXX");
	if (!mkdtemp(f->tmp))
		return -1;
	f->dfd = open(f->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->dfd < 0)
		return -1;
	*state = f;
	return 0;
}

static int rm_rf(const char *path)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	return system(cmd) == 0 ? 0 : -1;
}

static int dir_teardown(void **state)
{
	struct dir_fx *f = *state;
	int rc;

	close(f->dfd);
	rc = rm_rf(f->tmp);
	free(f);
	return rc;
}

/* An image store, as in test_image.c. */
struct fx {
	char tmp[64];
	char root[128];
	char task[PATH_MAX];
	struct phos_key key;
	struct phos_store s;
	struct phos_image_id id;
};

static int store_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct phos_err e = { "" };

	if (!f)
		return -1;
	strcpy(f->tmp, "/tmp/phos-chunks-XXXXXX");
	if (!mkdtemp(f->tmp))
		return -1;
	snprintf(f->root, sizeof(f->root), "%s/ckpt/root", f->tmp);
	if (phos_key_set(&f->key, "unit-test node key, 32 bytes or more", 36, &e) < 0)
		return -1;
	if (phos_store_open(&f->s, f->root, &f->key, true, &e) < 0) {
		fprintf(stderr, "store: %s\n", e.msg);
		return -1;
	}
	if (phos_image_id_slurm(&f->id, "alice", 1234, 0, 0, &e) < 0 ||
	    phos_image_task_path(&f->s, &f->id, f->task, sizeof(f->task), &e) < 0)
		return -1;
	*state = f;
	return 0;
}

static int store_teardown(void **state)
{
	struct fx *f = *state;
	int rc;

	phos_store_close(&f->s);
	rc = rm_rf(f->tmp);
	free(f);
	return rc;
}

/* ---- helpers ------------------------------------------------------------ */

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)((i * 31 + seed * 101 + (i >> 8)) ^ seed);
}

static bool exists_at(int dfd, const char *name)
{
	struct stat st;

	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Number of entries of dfd other than . and .. */
static int count_entries(int dfd)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), n = 0;
	struct dirent *de;
	DIR *d;

	assert_true(fd >= 0);
	d = fdopendir(fd);
	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void write_file(int dfd, const char *name, const void *data, size_t len, mode_t mode)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* put that must succeed; returns *written */
static bool put_ok(int dfd, const void *data, size_t len, unsigned char sha[32])
{
	char err[256] = "";
	bool written = true;

	if (phos_chunk_put(dfd, data, len, false, sha, &written, err, sizeof(err)) < 0)
		fail_msg("put: %s", err);
	return written;
}

/* get that must fail with errno want */
static void get_fails(int dfd, const unsigned char sha[32], size_t len, int want)
{
	unsigned char *buf = malloc(len + 1);
	char err[256] = "";
	int rc;

	assert_non_null(buf);
	errno = 0;
	rc = phos_chunk_get(dfd, sha, buf, len, false, err, sizeof(err));
	free(buf);
	if (rc != -1 || errno != want)
		fail_msg("get: rc %d errno %d (%s), want errno %d", rc, errno, err, want);
	assert_true(err[0] != '\0');
}

/* ---- put / get ---------------------------------------------------------- */

static void test_hex(void **state)
{
	unsigned char sha[32], back[32];
	char h[PHOS_CHUNK_HEX + 1];

	(void)state;
	for (int i = 0; i < 32; i++)
		sha[i] = (unsigned char)(i * 8 + 7);
	phos_chunk_hex(sha, h);
	assert_int_equal(strlen(h), PHOS_CHUNK_HEX);
	assert_string_equal(h, "070f171f272f373f474f575f676f777f"
			    "878f979fa7afb7bfc7cfd7dfe7eff7ff");
	assert_int_equal(phos_chunk_unhex(h, back), 0);
	assert_memory_equal(back, sha, 32);
	h[5] = 'F';	/* lowercase only: one name per digest */
	assert_int_equal(phos_chunk_unhex(h, back), -1);
	h[5] = 'f';
	assert_int_equal(phos_chunk_unhex(".lock", back), -1);
	assert_int_equal(phos_chunk_unhex("", back), -1);
	{
		char longer[PHOS_CHUNK_HEX + 2];

		snprintf(longer, sizeof(longer), "%s0", h);
		assert_int_equal(phos_chunk_unhex(longer, back), -1);
		longer[PHOS_CHUNK_HEX - 1] = '\0';
		assert_int_equal(phos_chunk_unhex(longer, back), -1);
	}
}

static void test_put_get(void **state)
{
	struct dir_fx *f = *state;
	static unsigned char data[3 * 4096 + 123], back[sizeof(data)];
	unsigned char sha[32], sha2[32], want[32];
	char name[PHOS_CHUNK_HEX + 1], err[256] = "";
	struct stat st;

	fill(data, sizeof(data), 1);
	SHA256(data, sizeof(data), want);
	assert_true(put_ok(f->dfd, data, sizeof(data), sha));
	assert_memory_equal(sha, want, 32);
	/* exactly one file, named by the lowercase hex digest, 0600 */
	phos_chunk_hex(want, name);
	assert_int_equal(strspn(name, "0123456789abcdef"), PHOS_CHUNK_HEX);
	assert_int_equal(count_entries(f->dfd), 1);
	assert_int_equal(fstatat(f->dfd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, sizeof(data));
	/* round trip */
	memset(back, 0, sizeof(back));
	if (phos_chunk_get(f->dfd, want, back, sizeof(back), false, err, sizeof(err)) < 0)
		fail_msg("get: %s", err);
	assert_memory_equal(back, data, sizeof(data));
	assert_int_equal(phos_chunk_check(f->dfd, want, sizeof(data), err, sizeof(err)), 0);
	/* the same bytes again: deduplicated, still one file, same inode */
	{
		ino_t ino = st.st_ino;

		assert_false(put_ok(f->dfd, data, sizeof(data), sha2));
		assert_memory_equal(sha2, want, 32);
		assert_int_equal(count_entries(f->dfd), 1);
		assert_int_equal(fstatat(f->dfd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
		assert_int_equal(st.st_ino, ino);
	}
	/* other bytes: a second chunk */
	data[0] ^= 1;
	assert_true(put_ok(f->dfd, data, sizeof(data), sha2));
	assert_memory_not_equal(sha2, want, 32);
	assert_int_equal(count_entries(f->dfd), 2);
	/* an empty chunk round-trips too (no index names one: a buffer's last
	 * piece has at least one byte, so *written is not asserted) */
	put_ok(f->dfd, "", 0, sha2);
	SHA256((const unsigned char *)"", 0, want);
	assert_memory_equal(sha2, want, 32);
	assert_int_equal(phos_chunk_get(f->dfd, want, back, 0, false, err, sizeof(err)), 0);
}

/* O_DIRECT where the file system has it, the plain path where it refuses */
static void test_put_get_direct(void **state)
{
	struct dir_fx *f = *state;
	unsigned char *data, *back, sha[32], want[32];
	char err[256] = "";
	bool written = false;
	void *p = NULL, *q = NULL;

	assert_int_equal(posix_memalign(&p, 4096, 4 * 4096), 0);
	assert_int_equal(posix_memalign(&q, 4096, 4 * 4096), 0);
	data = p;
	back = q;
	fill(data, 4 * 4096, 2);
	SHA256(data, 4 * 4096, want);
	if (phos_chunk_put(f->dfd, data, 4 * 4096, true, sha, &written, err, sizeof(err)) < 0)
		fail_msg("put: %s", err);
	assert_true(written);
	assert_memory_equal(sha, want, 32);
	assert_int_equal(count_entries(f->dfd), 1);	/* no temporary left behind */
	memset(back, 0, 4 * 4096);
	if (phos_chunk_get(f->dfd, want, back, 4 * 4096, true, err, sizeof(err)) < 0)
		fail_msg("get: %s", err);
	assert_memory_equal(back, data, 4 * 4096);
	free(data);
	free(back);
}

static void test_get_refusals(void **state)
{
	struct dir_fx *f = *state;
	static unsigned char data[2 * 4096 + 7], back[sizeof(data)];
	unsigned char sha[32], other[32];
	char name[PHOS_CHUNK_HEX + 1], err[256], outside[128];
	bool written;
	int fd;

	fill(data, sizeof(data), 3);
	assert_true(put_ok(f->dfd, data, sizeof(data), sha));
	phos_chunk_hex(sha, name);

	/* missing */
	memcpy(other, sha, 32);
	other[31] ^= 0x80;
	get_fails(f->dfd, other, sizeof(data), ENOENT);
	errno = 0;
	assert_int_equal(phos_chunk_check(f->dfd, other, sizeof(data), NULL, 0), -1);
	assert_int_equal(errno, ENOENT);

	/* a size other than the index says */
	get_fails(f->dfd, sha, sizeof(data) - 1, EMSGSIZE);
	get_fails(f->dfd, sha, sizeof(data) + 1, EMSGSIZE);
	errno = 0;
	assert_int_equal(phos_chunk_check(f->dfd, sha, sizeof(data) + 4096, NULL, 0), -1);
	assert_int_equal(errno, EMSGSIZE);

	/* group-writable: not trusted, even with the right bytes */
	assert_int_equal(fchmodat(f->dfd, name, 0620, 0), 0);
	get_fails(f->dfd, sha, sizeof(data), EPERM);
	errno = 0;
	assert_int_equal(phos_chunk_check(f->dfd, sha, sizeof(data), NULL, 0), -1);
	assert_int_equal(errno, EPERM);
	/* and put does not take it for a stored chunk: it writes a safe one */
	assert_int_equal(phos_chunk_put(f->dfd, data, sizeof(data), false, other, &written,
					err, sizeof(err)), 0);
	assert_true(written);
	assert_int_equal(phos_chunk_get(f->dfd, sha, back, sizeof(back), false, err, sizeof(err)),
			 0);
	assert_memory_equal(back, data, sizeof(data));

	/* one flipped byte: the bytes differ from the name */
	fd = openat(f->dfd, name, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	{
		unsigned char c = data[4096] ^ 0x10;

		assert_int_equal(pwrite(fd, &c, 1, 4096), 1);
	}
	close(fd);
	get_fails(f->dfd, sha, sizeof(data), EILSEQ);
	/* unchecked, the same read hands over the flipped bytes (its reader
	 * checks them another way); the size is still checked */
	memset(back, 0, sizeof(back));
	assert_int_equal(phos_chunk_get_unchecked(f->dfd, sha, back, sizeof(back), false, err,
						  sizeof(err)), 0);
	assert_int_equal(back[4096], data[4096] ^ 0x10);
	assert_memory_equal(back, data, 4096);
	errno = 0;
	assert_int_equal(phos_chunk_get_unchecked(f->dfd, sha, back, sizeof(data) - 1, false, err,
						  sizeof(err)), -1);
	assert_int_equal(errno, EMSGSIZE);
	/* check looks at names and sizes only */
	assert_int_equal(phos_chunk_check(f->dfd, sha, sizeof(data), NULL, 0), 0);

	/* a symlink in place of the chunk, to a file holding exactly the right
	 * bytes: following it would succeed */
	snprintf(outside, sizeof(outside), "%s/outside", f->tmp);
	write_file(f->dfd, "outside", data, sizeof(data), 0600);
	assert_int_equal(unlinkat(f->dfd, name, 0), 0);
	assert_int_equal(symlinkat(outside, f->dfd, name), 0);
	memset(back, 0, sizeof(back));
	get_fails(f->dfd, sha, sizeof(data), EPERM);
	assert_int_equal(phos_chunk_get(f->dfd, sha, back, sizeof(back), true, err, sizeof(err)),
			 -1);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_equal(phos_chunk_check(f->dfd, sha, sizeof(data), NULL, 0), -1);
	assert_int_equal(errno, EPERM);
	/* put replaces the link by a chunk, and leaves its target alone */
	assert_true(put_ok(f->dfd, data, sizeof(data), other));
	{
		struct stat st;

		assert_int_equal(fstatat(f->dfd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
		assert_true(S_ISREG(st.st_mode));
	}
	assert_int_equal(phos_chunk_get(f->dfd, sha, back, sizeof(back), false, err, sizeof(err)),
			 0);
	assert_memory_equal(back, data, sizeof(data));
	assert_true(exists_at(f->dfd, "outside"));

	/* a directory in place of the chunk */
	assert_int_equal(unlinkat(f->dfd, name, 0), 0);
	assert_int_equal(mkdirat(f->dfd, name, 0700), 0);
	errno = 0;
	assert_int_equal(phos_chunk_check(f->dfd, sha, sizeof(data), NULL, 0), -1);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_equal(phos_chunk_get(f->dfd, sha, back, sizeof(back), false, err, sizeof(err)),
			 -1);
	assert_int_equal(errno, EPERM);
}

/* ---- index files -------------------------------------------------------- */

/* zstd: a chunk that compresses is stored as <sha256>.zst, one that does
 * not as it is; both read back checked; a damaged .zst is refused; the
 * sweep knows the suffix */
static void test_zstd(void **state)
{
	struct dir_fx *f = *state;
	static unsigned char zeros[65536], rnd[65536], back[65536];
	unsigned char sha[32], sha2[32];
	char hex[PHOS_CHUNK_HEX + 1], name[PHOS_CHUNK_HEX + 8], err[256] = "";
	size_t stored = 0;
	struct stat st;

	memset(zeros, 7, sizeof(zeros));
	for (size_t i = 0; i < sizeof(rnd); i++)
		rnd[i] = (unsigned char)(random() >> 7);
	assert_int_equal(phos_chunk_put_z(f->dfd, zeros, sizeof(zeros), false, 3, sha, &stored, err,
					  sizeof(err)), 0);
	assert_true(stored > 0 && stored < 1024);
	phos_chunk_hex(sha, hex);
	snprintf(name, sizeof(name), "%s.zst", hex);
	assert_true(exists_at(f->dfd, name));
	assert_false(exists_at(f->dfd, hex));
	assert_int_equal(fstatat(f->dfd, name, &st, 0), 0);
	assert_int_equal((size_t)st.st_size, stored);
	/* found again, in either form */
	assert_int_equal(phos_chunk_put_z(f->dfd, zeros, sizeof(zeros), false, 0, sha, &stored, err,
					  sizeof(err)), 0);
	assert_int_equal(stored, 0);
	assert_int_equal(phos_chunk_check(f->dfd, sha, sizeof(zeros), err, sizeof(err)), 0);
	memset(back, 0, sizeof(back));
	assert_int_equal(phos_chunk_get(f->dfd, sha, back, sizeof(back), false, err, sizeof(err)), 0);
	assert_memory_equal(back, zeros, sizeof(zeros));
	/* asked for a size it does not decompress to: refused */
	get_fails(f->dfd, sha, sizeof(zeros) - 4096, EILSEQ);
	/* incompressible: stored as it is */
	assert_int_equal(phos_chunk_put_z(f->dfd, rnd, sizeof(rnd), false, 3, sha2, &stored, err,
					  sizeof(err)), 0);
	assert_int_equal(stored, sizeof(rnd));
	phos_chunk_hex(sha2, hex);
	assert_true(exists_at(f->dfd, hex));
	/* a damaged compressed chunk */
	{
		unsigned char z[1024];
		int fd = openat(f->dfd, name, O_RDWR);
		ssize_t n;

		assert_true(fd >= 0);
		n = pread(fd, z, sizeof(z), 0);
		assert_true(n > 8);
		z[n - 1] ^= 0x55;
		assert_int_equal(pwrite(fd, z, (size_t)n, 0), n);
		close(fd);
	}
	get_fails(f->dfd, sha, sizeof(zeros), EILSEQ);
	/* the sweep: keep the raw one, the .zst goes */
	assert_int_equal(phos_chunks_sweep(f->dfd, (const unsigned char (*)[32])sha2, 1, NULL, err,
					   sizeof(err)), 1);
	assert_false(exists_at(f->dfd, name));
	assert_true(exists_at(f->dfd, hex));
}

static void test_idx_count_len(void **state)
{
	static const struct {
		uint64_t size, chunk, n, last;
	} cases[] = {
		{ 0, 4096, 0, 0 },
		{ 1, 4096, 1, 1 },
		{ 4095, 4096, 1, 4095 },
		{ 4096, 4096, 1, 4096 },
		{ 4097, 4096, 2, 1 },
		{ 3 * 8192, 8192, 3, 8192 },
		{ 3 * 8192 + 5, 8192, 4, 5 },
		{ 12345, 0, 0, 0 },
		/* no overflow near the top of the range */
		{ UINT64_MAX, 4096, (UINT64_MAX >> 12) + 1, 4095 },
		{ UINT64_MAX - 4095, 4096, UINT64_MAX >> 12, 4096 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct phos_idx x = { .size = cases[i].size, .chunk = cases[i].chunk };

		x.n = phos_idx_count(x.size, x.chunk);
		if (x.n != cases[i].n)
			fail_msg("case %zu: %" PRIu64 " chunks, want %" PRIu64, i, x.n, cases[i].n);
		if (x.n) {
			assert_int_equal(phos_idx_len(&x, 0), x.n > 1 ? x.chunk : cases[i].last);
			assert_int_equal(phos_idx_len(&x, x.n - 1), cases[i].last);
		}
	}
}

static void test_idx_round_trip(void **state)
{
	struct dir_fx *f = *state;
	struct phos_idx x = { .size = 4 * CHUNK + 1000, .chunk = CHUNK }, y;
	char err[256] = "", text[1024], *p;
	struct stat st;
	int fd;

	x.n = phos_idx_count(x.size, x.chunk);
	assert_int_equal(x.n, 5);
	x.sha = calloc(x.n, sizeof(*x.sha));
	assert_non_null(x.sha);
	for (uint64_t i = 0; i < x.n; i++) {
		char s[16];

		snprintf(s, sizeof(s), "piece %u", (unsigned)i);
		SHA256((const unsigned char *)s, strlen(s), x.sha[i]);
	}
	if (phos_idx_write(&x, f->dfd, "buf.idx", err, sizeof(err)) < 0)
		fail_msg("write: %s", err);
	assert_int_equal(fstatat(f->dfd, "buf.idx", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* the text is exactly the documented format */
	p = text + sprintf(text, "phos-chunks 1 %d %d\n", 4 * CHUNK + 1000, CHUNK);
	for (uint64_t i = 0; i < x.n; i++) {
		phos_chunk_hex(x.sha[i], p);
		p += PHOS_CHUNK_HEX;
		*p++ = '\n';
	}
	assert_int_equal(st.st_size, p - text);
	{
		char got[1024];

		fd = openat(f->dfd, "buf.idx", O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(read(fd, got, sizeof(got)), p - text);
		close(fd);
		assert_memory_equal(got, text, (size_t)(p - text));
	}
	if (phos_idx_read(&y, f->dfd, "buf.idx", err, sizeof(err)) < 0)
		fail_msg("read: %s", err);
	assert_int_equal(y.size, x.size);
	assert_int_equal(y.chunk, x.chunk);
	assert_int_equal(y.n, x.n);
	assert_memory_equal(y.sha, x.sha, x.n * sizeof(*x.sha));
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(phos_idx_len(&y, i), CHUNK);
	assert_int_equal(phos_idx_len(&y, 4), 1000);
	phos_idx_free(&y);
	assert_null(y.sha);
	assert_int_equal(y.n, 0);
	phos_idx_free(&y);	/* twice */

	/* a new file only */
	errno = 0;
	assert_int_equal(phos_idx_write(&x, f->dfd, "buf.idx", err, sizeof(err)), -1);
	assert_int_equal(errno, EEXIST);
	/* reading: no such file, a symlink, a directory */
	errno = 0;
	assert_int_equal(phos_idx_read(&y, f->dfd, "none.idx", err, sizeof(err)), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(symlinkat("buf.idx", f->dfd, "link.idx"), 0);
	errno = 0;
	assert_int_equal(phos_idx_read(&y, f->dfd, "link.idx", err, sizeof(err)), -1);
	assert_int_equal(errno, ELOOP);
	assert_int_equal(mkdirat(f->dfd, "dir.idx", 0700), 0);
	errno = 0;
	assert_int_equal(phos_idx_read(&y, f->dfd, "dir.idx", err, sizeof(err)), -1);
	assert_int_equal(errno, EBADMSG);
	/* a malformed one is refused by read as by parse */
	write_file(f->dfd, "bad.idx", text, (size_t)(p - text) - 1, 0600);
	errno = 0;
	assert_int_equal(phos_idx_read(&y, f->dfd, "bad.idx", err, sizeof(err)), -1);
	assert_int_equal(errno, EBADMSG);
	assert_null(y.sha);
	phos_idx_free(&x);
}

#define H1 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define H2 "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

static void test_idx_parse(void **state)
{
	static const struct {
		const char *name, *text;
	} bad[] = {
		{ "empty", "" },
		{ "no header", H1 "\n" },
		{ "other magic", "phos-chunkz 1 4096 4096\n" H1 "\n" },
		{ "other version", "phos-chunks 2 4096 4096\n" H1 "\n" },
		{ "header only magic", "phos-chunks 1 " },
		{ "unterminated header", "phos-chunks 1 4096 4096" },
		{ "size missing", "phos-chunks 1 4096\n" H1 "\n" },
		{ "size zero", "phos-chunks 1 0 4096\n" },
		{ "size leading zero", "phos-chunks 1 04096 4096\n" H1 "\n" },
		{ "size not a number", "phos-chunks 1 x 4096\n" H1 "\n" },
		{ "size with a sign", "phos-chunks 1 +4096 4096\n" H1 "\n" },
		{ "size negative", "phos-chunks 1 -1 4096\n" },
		{ "size after two spaces", "phos-chunks 1  4096 4096\n" H1 "\n" },
		{ "size too big", "phos-chunks 1 18446744073709551616 4096\n" },
		{ "size 2^64-1, no chunks", "phos-chunks 1 18446744073709551615 4096\n" },
		{ "size 2^64-1, one chunk", "phos-chunks 1 18446744073709551615 4096\n" H1 "\n" },
		{ "chunk zero", "phos-chunks 1 4096 0\n" H1 "\n" },
		{ "chunk 4095", "phos-chunks 1 4096 4095\n" H1 "\n" },
		{ "chunk 6144", "phos-chunks 1 4096 6144\n" H1 "\n" },
		{ "chunk 100", "phos-chunks 1 100 100\n" H1 "\n" },
		{ "chunk 2 GiB", "phos-chunks 1 4096 2147483648\n" H1 "\n" },
		{ "chunk with a sign", "phos-chunks 1 4096 +4096\n" H1 "\n" },
		{ "chunk then a space", "phos-chunks 1 4096 4096 \n" H1 "\n" },
		{ "CRLF header", "phos-chunks 1 4096 4096\r\n" H1 "\n" },
		{ "too few lines", "phos-chunks 1 8193 4096\n" H1 "\n" H2 "\n" },
		{ "too many lines", "phos-chunks 1 4096 4096\n" H1 "\n" H2 "\n" },
		{ "no lines", "phos-chunks 1 4096 4096\n" },
		{ "uppercase digest", "phos-chunks 1 8192 4096\n" H1 "\n"
		  "FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210\n" },
		{ "one uppercase digit", "phos-chunks 1 4096 4096\n"
		  "0123456789abcdef0123456789abcdeF0123456789abcdef0123456789abcdef\n" },
		{ "non-hex digit", "phos-chunks 1 4096 4096\n"
		  "0123456789abcdef0123456789abcdeg0123456789abcdef0123456789abcdef\n" },
		{ "digest with a space", "phos-chunks 1 4096 4096\n"
		  " 123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n" },
		{ "short digest, long line", "phos-chunks 1 4096 4096\n" "0" H1 "\n" },
		{ "63 digits and 2 newlines", "phos-chunks 1 4096 4096\n"
		  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n\n" },
		{ "no final newline", "phos-chunks 1 4096 4096\n" H1 },
		{ "trailing newline", "phos-chunks 1 4096 4096\n" H1 "\n\n" },
		{ "trailing garbage", "phos-chunks 1 4096 4096\n" H1 "\nx" },
		{ "trailing line", "phos-chunks 1 4096 4096\n" H1 "\n# comment\n" },
	};
	struct phos_idx x;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc;

		err[0] = '\0';
		errno = 0;
		rc = phos_idx_parse(&x, bad[i].text, strlen(bad[i].text), err, sizeof(err));
		if (rc != -1 || errno != EBADMSG)
			fail_msg("'%s' accepted (rc %d, errno %d, %" PRIu64 " chunks)", bad[i].name,
				 rc, errno, rc == 0 ? x.n : 0);
		if (!err[0])
			fail_msg("'%s': no message", bad[i].name);
		assert_null(x.sha);
	}
	/* a NUL inside a digest (the length says where the text ends) */
	{
		char t[] = "phos-chunks 1 4096 4096\n" H1 "\n";

		t[24 + 10] = '\0';
		errno = 0;
		assert_int_equal(phos_idx_parse(&x, t, sizeof(t) - 1, err, sizeof(err)), -1);
		assert_int_equal(errno, EBADMSG);
		/* and the text need not be NUL-terminated: a length short by one */
		t[24 + 10] = 'a';
		errno = 0;
		assert_int_equal(phos_idx_parse(&x, t, sizeof(t) - 2, err, sizeof(err)), -1);
		assert_int_equal(errno, EBADMSG);
	}
	/* the valid ones */
	{
		static const char t1[] = "phos-chunks 1 12288 8192\n" H1 "\n" H2 "\n";
		static const char t2[] = "phos-chunks 1 1073741824 1073741824\n" H2 "\n";
		unsigned char h1[32], h2[32];

		assert_int_equal(phos_chunk_unhex(H1, h1), 0);
		assert_int_equal(phos_chunk_unhex(H2, h2), 0);
		if (phos_idx_parse(&x, t1, strlen(t1), err, sizeof(err)) < 0)
			fail_msg("parse: %s", err);
		assert_int_equal(x.size, 12288);
		assert_int_equal(x.chunk, 8192);
		assert_int_equal(x.n, 2);
		assert_memory_equal(x.sha[0], h1, 32);
		assert_memory_equal(x.sha[1], h2, 32);
		assert_int_equal(phos_idx_len(&x, 0), 8192);
		assert_int_equal(phos_idx_len(&x, 1), 4096);
		phos_idx_free(&x);
		if (phos_idx_parse(&x, t2, strlen(t2), err, sizeof(err)) < 0)
			fail_msg("parse: %s", err);
		assert_int_equal(x.n, 1);
		assert_int_equal(phos_idx_len(&x, 0), 1u << 30);
		phos_idx_free(&x);
	}
}

/* ---- sweep -------------------------------------------------------------- */

static int cmp_sha(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static void test_sweep(void **state)
{
	struct dir_fx *f = *state;
	static unsigned char data[4][3000];
	unsigned char sha[4][32], keep[2][32], other[32];
	char name[4][PHOS_CHUNK_HEX + 1], upper[PHOS_CHUNK_HEX + 1], err[256] = "";
	uint64_t bytes = 12345;
	size_t len[4];

	for (int i = 0; i < 4; i++) {
		len[i] = 1000 + 500 * (size_t)i;
		fill(data[i], len[i], 10 + (unsigned)i);
		assert_true(put_ok(f->dfd, data[i], len[i], sha[i]));
		phos_chunk_hex(sha[i], name[i]);
	}
	/* keep chunks 1 and 3, sorted as the caller must */
	memcpy(keep[0], sha[1], 32);
	memcpy(keep[1], sha[3], 32);
	qsort(keep, 2, 32, cmp_sha);
	/* what is not a chunk, and a dead writer's temporaries */
	write_file(f->dfd, PHOS_CHUNKS_LOCK, "", 0, 0600);
	write_file(f->dfd, ".tmp-dead-writer", "12345", 5, 0600);
	write_file(f->dfd, ".tmp-", "1234567", 7, 0600);
	write_file(f->dfd, "unrelated", "x", 1, 0600);
	write_file(f->dfd, ".hidden", "x", 1, 0600);
	snprintf(upper, sizeof(upper), "%s", name[0]);
	for (char *p = upper; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	if (strcmp(upper, name[0]))	/* a digest of digits only is not impossible */
		write_file(f->dfd, upper, "x", 1, 0600);
	{
		char longer[PHOS_CHUNK_HEX + 8];

		snprintf(longer, sizeof(longer), "%s.bak", name[0]);
		write_file(f->dfd, longer, "x", 1, 0600);
	}
	/* a chunk name that is a directory, or a symlink: not ours to remove */
	memcpy(other, sha[0], 32);
	other[0] ^= 1;
	{
		char n[PHOS_CHUNK_HEX + 1];

		phos_chunk_hex(other, n);
		assert_int_equal(mkdirat(f->dfd, n, 0700), 0);
		other[0] ^= 2;
		phos_chunk_hex(other, n);
		assert_int_equal(symlinkat("unrelated", f->dfd, n), 0);
	}
	/* 4 chunks, 5 files, .bak, the directory and the link, and upper */
	assert_int_equal(count_entries(f->dfd), 12 + (strcmp(upper, name[0]) ? 1 : 0));

	assert_int_equal(phos_chunks_sweep(f->dfd, (const unsigned char (*)[32])keep, 2, &bytes,
					   err, sizeof(err)), 4);
	assert_int_equal(bytes, len[0] + len[2] + 5 + 7);
	assert_false(exists_at(f->dfd, name[0]));
	assert_true(exists_at(f->dfd, name[1]));
	assert_false(exists_at(f->dfd, name[2]));
	assert_true(exists_at(f->dfd, name[3]));
	assert_false(exists_at(f->dfd, ".tmp-dead-writer"));
	assert_false(exists_at(f->dfd, ".tmp-"));
	assert_true(exists_at(f->dfd, PHOS_CHUNKS_LOCK));
	assert_true(exists_at(f->dfd, "unrelated"));
	assert_true(exists_at(f->dfd, ".hidden"));
	if (strcmp(upper, name[0]))
		assert_true(exists_at(f->dfd, upper));
	/* the kept ones are intact */
	{
		unsigned char back[3000];

		assert_int_equal(phos_chunk_get(f->dfd, sha[1], back, len[1], false, err,
						sizeof(err)), 0);
		assert_int_equal(phos_chunk_get(f->dfd, sha[3], back, len[3], false, err,
						sizeof(err)), 0);
	}
	/* nothing left to remove */
	assert_int_equal(phos_chunks_sweep(f->dfd, (const unsigned char (*)[32])keep, 2, &bytes,
					   err, sizeof(err)), 0);
	assert_int_equal(bytes, 0);
	/* keep nothing: every chunk goes (bytes may be NULL) */
	assert_int_equal(phos_chunks_sweep(f->dfd, NULL, 0, NULL, err, sizeof(err)), 2);
	assert_false(exists_at(f->dfd, name[1]));
	assert_false(exists_at(f->dfd, name[3]));
	assert_true(exists_at(f->dfd, PHOS_CHUNKS_LOCK));
	assert_true(exists_at(f->dfd, "unrelated"));
}

/* ---- the image store ---------------------------------------------------- */

/* The pieces of GPU memory the generations below are made of: a buffer of
 * CHUNK + LAST bytes is two chunks, the second one shorter. */
#define LAST	(4096 + 100)
static unsigned char piece[4][CHUNK];
static unsigned char piece_sha[4][32];

static void pieces_init(void)
{
	for (unsigned i = 0; i < 4; i++) {
		fill(piece[i], CHUNK, 40 + i);
		SHA256(piece[i], i % 2 ? LAST : CHUNK, piece_sha[i]);	/* 1, 3: last chunks */
	}
}

static void chunk_path(struct fx *f, unsigned i, char *buf, size_t size)
{
	char h[PHOS_CHUNK_HEX + 1];

	phos_chunk_hex(piece_sha[i], h);
	assert_true((size_t)snprintf(buf, size, "%s/%s/%s", f->task, PHOS_CHUNKS_DIR, h) < size);
}

static bool chunk_exists(struct fx *f, unsigned i)
{
	char path[PATH_MAX + 80];
	struct stat st;

	chunk_path(f, i, path, sizeof(path));
	return lstat(path, &st) == 0;
}

/* Begin a generation holding one buffer made of pieces first (CHUNK
 * bytes) and last (LAST bytes), stored through the writer's chunk store,
 * with its index gpumem-1-0.idx.  written says which pieces were new. */
static void stage(struct fx *f, struct phos_image_writer *w, unsigned first, unsigned last,
		  bool written[2])
{
	struct phos_err e = { "" };
	unsigned char sha[2][32];
	struct phos_idx x = { .size = CHUNK + LAST, .chunk = CHUNK, .n = 2, .sha = sha };
	char err[256] = "";
	struct stat st;
	int cfd;

	if (phos_image_begin(&f->s, &f->id, 1000, 100, w, &e) < 0)
		fail_msg("begin: %s", e.msg);
	cfd = phos_image_chunks_open(w, &e);
	if (cfd < 0)
		fail_msg("chunks: %s", e.msg);
	assert_int_equal(w->chunks_fd, cfd);
	assert_true(w->lock_fd >= 0);
	assert_int_equal(phos_image_chunks_open(w, &e), cfd);	/* once per writer */
	assert_int_equal(fstat(cfd, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(st.st_uid, geteuid());
	if (phos_chunk_put(cfd, piece[first], CHUNK, false, sha[0], &written[0], err,
			   sizeof(err)) < 0 ||
	    phos_chunk_put(cfd, piece[last], LAST, false, sha[1], &written[1], err,
			   sizeof(err)) < 0)
		fail_msg("put: %s", err);
	assert_memory_equal(sha[0], piece_sha[first], 32);
	assert_memory_equal(sha[1], piece_sha[last], 32);
	assert_int_equal(phos_idx_count(x.size, x.chunk), 2);
	if (phos_idx_write(&x, w->dir_fd, "gpumem-1-0.idx", err, sizeof(err)) < 0)
		fail_msg("idx: %s", err);
}

static uint64_t publish(struct phos_image_writer *w)
{
	struct phos_err e = { "" };
	uint64_t gen;

	if (phos_image_publish(w, &e) < 0)
		fail_msg("publish: %s", e.msg);
	assert_int_equal(w->chunks_fd, -1);
	assert_int_equal(w->lock_fd, -1);
	gen = w->generation;
	phos_image_abort(w);
	return gen;
}

static int verify(struct fx *f, uint64_t gen, unsigned flags, struct phos_err *e)
{
	e->msg[0] = '\0';
	errno = 0;
	return phos_image_verify(&f->s, &f->id, gen, PHOS_UID_ANY, flags, NULL, e);
}

/* Can a retention take the store's lock now? */
static bool store_lockable(struct fx *f)
{
	char path[PATH_MAX + 32];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s/%s", f->task, PHOS_CHUNKS_DIR, PHOS_CHUNKS_LOCK);
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	assert_true(fd >= 0);
	rc = flock(fd, LOCK_EX | LOCK_NB);
	if (rc < 0)
		assert_int_equal(errno, EWOULDBLOCK);
	close(fd);
	return rc == 0;
}

static void test_image_verify(void **state)
{
	struct fx *f = *state;
	struct phos_image_writer w;
	struct phos_err e = { "" };
	char path[PATH_MAX + 80], moved[PATH_MAX + 96];
	bool written[2];

	pieces_init();
	/* no writer yet */
	phos_image_writer_init(&w);
	errno = 0;
	assert_int_equal(phos_image_chunks_open(&w, &e), -1);
	assert_int_equal(errno, EINVAL);
	phos_image_abort(&w);

	stage(f, &w, 0, 1, written);
	assert_true(written[0] && written[1]);
	assert_false(store_lockable(f));	/* the writer holds it shared */
	assert_int_equal(publish(&w), 1);
	assert_true(store_lockable(f));		/* and lets go at publish */
	assert_true(chunk_exists(f, 0) && chunk_exists(f, 1));
	if (verify(f, 1, 0, &e) < 0)
		fail_msg("verify: %s", e.msg);

	/* a chunk missing: the full verify says so, the quick one does not look */
	chunk_path(f, 1, path, sizeof(path));
	snprintf(moved, sizeof(moved), "%s/moved", f->tmp);
	assert_int_equal(rename(path, moved), 0);
	assert_int_equal(verify(f, 1, 0, &e), -1);
	assert_int_equal(errno, ENODATA);
	assert_non_null(strstr(e.msg, "gpumem-1-0.idx"));
	if (verify(f, 1, PHOS_VERIFY_QUICK, &e) < 0)
		fail_msg("quick verify: %s", e.msg);
	/* and selecting an image for a restore skips it */
	{
		uint64_t sel = 0;

		errno = 0;
		assert_int_equal(phos_image_select(&f->s, &f->id, PHOS_UID_ANY, 0, &sel, NULL, &e),
				 -1);
		assert_int_equal(errno, ENODATA);
	}
	/* a truncated chunk */
	assert_int_equal(rename(moved, path), 0);
	assert_int_equal(truncate(path, LAST - 1), 0);
	assert_int_equal(verify(f, 1, 0, &e), -1);
	assert_int_equal(errno, EMSGSIZE);
	/* the whole store missing */
	{
		char dir[PATH_MAX + 16];

		snprintf(dir, sizeof(dir), "%s/%s", f->task, PHOS_CHUNKS_DIR);
		assert_int_equal(rename(dir, moved), 0);
		assert_int_equal(verify(f, 1, 0, &e), -1);
		assert_int_equal(errno, ENODATA);
		assert_int_equal(verify(f, 1, PHOS_VERIFY_QUICK, &e), 0);
		assert_int_equal(rename(moved, dir), 0);
	}
}

static void test_image_retain(void **state)
{
	struct fx *f = *state;
	struct phos_image_writer w;
	struct phos_err e = { "" };
	bool written[2];

	pieces_init();
	stage(f, &w, 0, 1, written);
	assert_int_equal(publish(&w), 1);
	/* generation 2 shares piece 1 with generation 1: it is not written again */
	stage(f, &w, 2, 1, written);
	assert_true(written[0]);
	assert_false(written[1]);
	assert_int_equal(publish(&w), 2);
	if (verify(f, 2, 0, &e) < 0)
		fail_msg("verify: %s", e.msg);

	if (phos_image_retain(&f->s, &f->id, 1, 0, &e) != 1)
		fail_msg("retain: %s", e.msg);
	assert_int_equal(verify(f, 1, PHOS_VERIFY_QUICK, &e), -1);
	assert_int_equal(errno, ENOENT);
	assert_false(chunk_exists(f, 0));	/* only generation 1 named it */
	assert_true(chunk_exists(f, 1));	/* shared */
	assert_true(chunk_exists(f, 2));
	if (verify(f, 2, 0, &e) < 0)
		fail_msg("verify after retention: %s", e.msg);
	{
		char path[PATH_MAX + 32];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s/%s", f->task, PHOS_CHUNKS_DIR,
			 PHOS_CHUNKS_LOCK);
		assert_int_equal(lstat(path, &st), 0);
	}
	/* nothing more to remove */
	assert_int_equal(phos_image_retain(&f->s, &f->id, 1, 0, &e), 0);
	assert_true(chunk_exists(f, 1) && chunk_exists(f, 2));
	assert_int_equal(verify(f, 2, 0, &e), 0);
}

static void test_image_retain_locked(void **state)
{
	struct fx *f = *state;
	struct phos_image_writer w, w3;
	struct phos_err e = { "" };
	char path[PATH_MAX + 80];
	bool written[2];
	struct stat st;

	pieces_init();
	stage(f, &w, 0, 1, written);
	assert_int_equal(publish(&w), 1);
	stage(f, &w, 2, 1, written);
	assert_int_equal(publish(&w), 2);
	/* a third writer holds the store; it stores piece 3 (and reuses 2) */
	stage(f, &w3, 2, 3, written);
	assert_false(written[0]);
	assert_true(written[1]);
	assert_int_equal(w3.generation, 3);

	/* retention removes generation 1, but sweeps nothing */
	if (phos_image_retain(&f->s, &f->id, 1, 0, &e) != 1)
		fail_msg("retain: %s", e.msg);
	assert_int_equal(verify(f, 1, PHOS_VERIFY_QUICK, &e), -1);
	assert_int_equal(errno, ENOENT);
	for (unsigned i = 0; i < 4; i++)
		assert_true(chunk_exists(f, i));
	assert_int_equal(stat(w3.path, &st), 0);	/* the live writer's staging stays */
	/* and again: still held */
	assert_int_equal(phos_image_retain(&f->s, &f->id, 1, 0, &e), 0);
	assert_true(chunk_exists(f, 0));

	/* a dead writer's temporary, to be swept with the rest */
	snprintf(path, sizeof(path), "%s/%s/%sdead", f->task, PHOS_CHUNKS_DIR,
		 PHOS_CHUNK_TMP_PREFIX);
	{
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

		assert_true(fd >= 0);
		close(fd);
	}

	phos_image_abort(&w3);
	assert_int_equal(w3.chunks_fd, -1);
	assert_int_equal(w3.lock_fd, -1);
	assert_true(store_lockable(f));
	assert_int_equal(phos_image_retain(&f->s, &f->id, 1, 0, &e), 0);
	assert_false(chunk_exists(f, 0));	/* generation 1's own */
	assert_false(chunk_exists(f, 3));	/* the aborted writer's */
	assert_true(chunk_exists(f, 1));
	assert_true(chunk_exists(f, 2));
	assert_int_equal(lstat(path, &st), -1);
	if (verify(f, 2, 0, &e) < 0)
		fail_msg("verify: %s", e.msg);
}

/* A generation that names no chunks (its index gone with it): every
 * chunk is swept once the only one naming them is removed. */
static void test_image_retain_all(void **state)
{
	struct fx *f = *state;
	struct phos_image_writer w;
	struct phos_err e = { "" };
	bool written[2];

	pieces_init();
	stage(f, &w, 0, 1, written);
	assert_int_equal(publish(&w), 1);
	/* generation 2 without GPU memory */
	if (phos_image_begin(&f->s, &f->id, 1000, 100, &w, &e) < 0)
		fail_msg("begin: %s", e.msg);
	write_file(w.dir_fd, "inventory.img", "inventory", 9, 0600);
	assert_int_equal(publish(&w), 2);
	if (phos_image_retain(&f->s, &f->id, 1, 0, &e) != 1)
		fail_msg("retain: %s", e.msg);
	assert_false(chunk_exists(f, 0));
	assert_false(chunk_exists(f, 1));
	assert_int_equal(verify(f, 2, 0, &e), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hex),
		cmocka_unit_test_setup_teardown(test_put_get, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_put_get_direct, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_get_refusals, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_zstd, dir_setup, dir_teardown),
		cmocka_unit_test(test_idx_count_len),
		cmocka_unit_test_setup_teardown(test_idx_round_trip, dir_setup, dir_teardown),
		cmocka_unit_test(test_idx_parse),
		cmocka_unit_test_setup_teardown(test_sweep, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_image_verify, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_image_retain, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_image_retain_locked, store_setup,
						store_teardown),
		cmocka_unit_test_setup_teardown(test_image_retain_all, store_setup, store_teardown),
	};

	phos_log_open("test_chunks", PHOS_LOG_STDERR, LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
