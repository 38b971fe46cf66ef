/*
 * chunks.c - the content-addressed chunk store (chunks.h).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zstd.h>

#include "chunks.h"
#include "util.h"

#define IDX_MAGIC	"phos-chunks 1 "
#define IDX_MAX		(16u << 20)

static int errf(char *err, size_t errsz, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int errf(char *err, size_t errsz, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errsz) {
		va_start(ap, fmt);
		vsnprintf(err, errsz, fmt, ap);
		va_end(ap);
	}
	errno = code;
	return -1;
}

void phos_chunk_hex(const unsigned char sha[32], char out[PHOS_CHUNK_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[sha[i] >> 4];
		out[2 * i + 1] = hex[sha[i] & 15];
	}
	out[PHOS_CHUNK_HEX] = '\0';
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;	/* lowercase only: one name per digest */
}

int phos_chunk_unhex(const char *s, unsigned char sha[32])
{
	for (int i = 0; i < 32; i++) {
		int hi = nibble(s[2 * i]), lo = hi < 0 ? -1 : nibble(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		sha[i] = (unsigned char)(hi << 4 | lo);
	}
	return s[PHOS_CHUNK_HEX] == '\0' ? 0 : -1;
}

static int sha256(const void *data, size_t len, unsigned char sha[32])
{
	unsigned int n = 0;

	return EVP_Digest(data, len, sha, &n, EVP_sha256(), NULL) && n == 32 ? 0 : -1;
}

/* A chunk file we may trust to be ours: a regular file of the store's
 * owner that nobody else may write. */
static bool safe(const struct stat *st)
{
	return S_ISREG(st->st_mode) && st->st_uid == geteuid() && !(st->st_mode & 022);
}

/* Its file: "<hex>" or, compressed, "<hex>.zst"; *zst says which. */
static int chunk_stat(int dir_fd, const char *hex, struct stat *st, bool *zst)
{
	char zname[PHOS_CHUNK_HEX + sizeof(PHOS_CHUNK_ZST)];

	*zst = false;
	if (fstatat(dir_fd, hex, st, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	snprintf(zname, sizeof(zname), "%s" PHOS_CHUNK_ZST, hex);
	*zst = true;
	return fstatat(dir_fd, zname, st, AT_SYMLINK_NOFOLLOW);
}

/* A stored chunk of len bytes: its file's size must fit. */
static bool size_ok(const struct stat *st, bool zst, size_t len)
{
	return zst ? st->st_size > 0 && (size_t)st->st_size <= ZSTD_compressBound(len) :
		     (uint64_t)st->st_size == len;
}

/* The checks of a chunk's file before it is used: ours, and a size that
 * can hold len bytes (exactly them, uncompressed). */
static int stat_ok(const struct stat *st, const char *hex, bool zst, size_t len, char *err,
		   size_t errsz)
{
	const char *sfx = zst ? PHOS_CHUNK_ZST : "";

	if (!safe(st))
		return errf(err, errsz, EPERM, "chunk %.16s...%s is not a regular file of uid %u "
			    "closed to others", hex, sfx, (unsigned)geteuid());
	if (!size_ok(st, zst, len))
		return errf(err, errsz, EMSGSIZE, "chunk %.16s...%s has %jd bytes, not %s%zu", hex,
			    sfx, (intmax_t)st->st_size, zst ? "1 to " : "",
			    zst ? ZSTD_compressBound(len) : len);
	return 0;
}

int phos_chunk_check(int dir_fd, const unsigned char sha[32], size_t len, char *err,
		     size_t errsz)
{
	char name[PHOS_CHUNK_HEX + 1];
	struct stat st;
	bool zst;

	phos_chunk_hex(sha, name);
	if (chunk_stat(dir_fd, name, &st, &zst) < 0)
		return errf(err, errsz, errno, "chunk %.16s...: %s", name, strerror(errno));
	return stat_ok(&st, name, zst, len, err, errsz);
}

int phos_chunk_put(int dir_fd, const void *data, size_t len, bool direct, unsigned char sha[32],
		   bool *written, char *err, size_t errsz)
{
	size_t stored = 0;
	int rc = phos_chunk_put_z(dir_fd, data, len, direct, 0, sha, &stored, err, errsz);

	*written = stored > 0;
	return rc;
}

int phos_chunk_put_z(int dir_fd, const void *data, size_t len, bool direct, int zstd,
		     unsigned char sha[32], size_t *stored, char *err, size_t errsz)
{
	char name[PHOS_CHUNK_HEX + sizeof(PHOS_CHUNK_ZST)], tmp[PHOS_CHUNK_HEX + 64];
	void *z = NULL;
	int fd = -1, e;

	*stored = 0;
	if (sha256(data, len, sha) < 0)
		return errf(err, errsz, EIO, "SHA-256 failed");
	phos_chunk_hex(sha, name);
	if (phos_chunk_check(dir_fd, sha, len, NULL, 0) == 0)
		return 0;	/* stored by an earlier generation (or thread) */
	if (zstd > 0) {
		size_t bound = ZSTD_compressBound(len), zl;

		if (!(z = malloc(bound)))
			return errf(err, errsz, ENOMEM, "out of memory");
		zl = ZSTD_compress(z, bound, data, len, zstd);
		if (!ZSTD_isError(zl) && zl < len) {	/* else stored as it is */
			data = z;
			len = zl;
			direct = false;
			strcat(name, PHOS_CHUNK_ZST);
		}
	}
	snprintf(tmp, sizeof(tmp), PHOS_CHUNK_TMP_PREFIX "%s-%d-%ld", name, (int)getpid(),
		 (long)syscall(SYS_gettid));
	if (direct)
		fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
			    O_DIRECT, 0600);
	if (fd < 0 && direct && errno == EINVAL)
		unlinkat(dir_fd, tmp, 0);	/* O_CREAT made it before O_DIRECT was refused */
	if (fd < 0)
		fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		e = errno;
		free(z);
		return errf(err, errsz, e, "creating chunk %.16s...: %s", name, strerror(e));
	}
	if (phos_write_full(fd, data, len) < 0 || fdatasync(fd) < 0) {
		e = errno;
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		e = errno;
		goto fail;
	}
	fd = -1;
	/* the same bytes may have arrived meanwhile: rename replaces them
	 * with identical ones */
	if (renameat(dir_fd, tmp, dir_fd, name) < 0) {
		e = errno;
		goto fail;
	}
	*stored = len;
	free(z);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(dir_fd, tmp, 0);
	free(z);
	return errf(err, errsz, e, "writing chunk %.16s...: %s", name, strerror(e));
}

static int chunk_read(int dir_fd, const unsigned char sha[32], void *buf, size_t len, bool direct,
		      bool verify, char *err, size_t errsz)
{
	char hex[PHOS_CHUNK_HEX + 1], zname[PHOS_CHUNK_HEX + sizeof(PHOS_CHUNK_ZST)];
	const char *sfx = "";
	unsigned char got[32];
	struct stat st;
	void *z = NULL, *dst = buf;
	size_t flen;
	ssize_t n;
	int fd = -1, e;

	/* "<hex>", else "<hex>.zst" */
	phos_chunk_hex(sha, hex);
	if (direct)
		fd = openat(dir_fd, hex, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_DIRECT);
	if (fd < 0)
		fd = openat(dir_fd, hex, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		sfx = PHOS_CHUNK_ZST;
		snprintf(zname, sizeof(zname), "%s%s", hex, sfx);
		fd = openat(dir_fd, zname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return errf(err, errsz, errno == ELOOP ? EPERM : errno, "chunk %.16s...: %s", hex,
			    strerror(errno));
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		return errf(err, errsz, e, "chunk %.16s...%s: %s", hex, sfx, strerror(e));
	}
	if (stat_ok(&st, hex, *sfx != '\0', len, err, errsz) < 0) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	flen = (size_t)st.st_size;	/* len, or the compressed size */
	if (*sfx != '\0' && !(dst = z = malloc(flen))) {
		close(fd);
		return errf(err, errsz, ENOMEM, "out of memory");
	}
	n = phos_read_full(fd, dst, flen);
	e = errno;
	close(fd);
	if (n < 0 || (size_t)n != flen) {
		free(z);
		if (n < 0)
			return errf(err, errsz, e, "reading chunk %.16s...%s: %s", hex, sfx,
				    strerror(e));
		return errf(err, errsz, EMSGSIZE, "chunk %.16s...%s ended after %zd bytes", hex,
			    sfx, n);
	}
	if (z) {
		size_t out = ZSTD_decompress(buf, len, z, flen);

		free(z);
		if (ZSTD_isError(out) || out != len)
			return errf(err, errsz, EILSEQ, "chunk %.16s...%s does not decompress to %zu "
				    "bytes (corrupt)", hex, sfx, len);
	}
	if (!verify)
		return 0;
	if (sha256(buf, len, got) < 0)
		return errf(err, errsz, EIO, "SHA-256 failed");
	if (memcmp(got, sha, 32))
		return errf(err, errsz, EILSEQ, "chunk %.16s...%s does not hold the bytes its name "
			    "says (corrupt)", hex, sfx);
	return 0;
}

int phos_chunk_get(int dir_fd, const unsigned char sha[32], void *buf, size_t len, bool direct,
		   char *err, size_t errsz)
{
	return chunk_read(dir_fd, sha, buf, len, direct, true, err, errsz);
}

int phos_chunk_get_unchecked(int dir_fd, const unsigned char sha[32], void *buf, size_t len,
			     bool direct, char *err, size_t errsz)
{
	return chunk_read(dir_fd, sha, buf, len, direct, false, err, errsz);
}

/* ---- index files -------------------------------------------------------- */

bool phos_idx_name(const char *name)
{
	size_t len = strlen(name), sl = strlen(PHOS_IDX_SUFFIX);

	return len > sl && !strchr(name, '/') && !strcmp(name + len - sl, PHOS_IDX_SUFFIX);
}

uint64_t phos_idx_count(uint64_t size, uint64_t chunk)
{
	return chunk ? size / chunk + (size % chunk != 0) : 0;	/* no overflow near 2^64 */
}

size_t phos_idx_len(const struct phos_idx *x, uint64_t i)
{
	uint64_t off = i * x->chunk;

	return (size_t)(x->size - off < x->chunk ? x->size - off : x->chunk);
}

void phos_idx_free(struct phos_idx *x)
{
	free(x->sha);
	x->sha = NULL;
	x->n = 0;
}

int phos_idx_parse(struct phos_idx *x, const char *text, size_t len, char *err, size_t errsz)
{
	const char *p = text, *end = text + len;
	char *stop;

	memset(x, 0, sizeof(*x));
	if (len < strlen(IDX_MAGIC) || memcmp(p, IDX_MAGIC, strlen(IDX_MAGIC)))
		return errf(err, errsz, EBADMSG, "not a chunk index (no \"%s\" header)", IDX_MAGIC);
	p += strlen(IDX_MAGIC);
	/* SIZE CHUNK\n: canonical decimal numbers */
	if (!memchr(p, '\n', (size_t)(end - p)))
		return errf(err, errsz, EBADMSG, "chunk index: unterminated header");
	errno = 0;
	x->size = strtoull(p, &stop, 10);	/* which would take " +4096" or "-1" */
	if (errno || *p < '1' || *p > '9' || *stop != ' ')
		return errf(err, errsz, EBADMSG, "chunk index: bad size");
	p = stop + 1;
	x->chunk = strtoull(p, &stop, 10);
	if (errno || *p < '1' || *p > '9' || *stop != '\n' || x->chunk % 4096 ||
	    x->chunk > (1ull << 30))
		return errf(err, errsz, EBADMSG, "chunk index: bad chunk size");
	p = stop + 1;
	x->n = phos_idx_count(x->size, x->chunk);
	if ((uint64_t)(end - p) != x->n * (PHOS_CHUNK_HEX + 1))
		return errf(err, errsz, EBADMSG, "chunk index: %" PRIu64 " chunks expected, the "
			    "file has %zu bytes of them", x->n, (size_t)(end - p));
	x->sha = calloc(x->n ? x->n : 1, sizeof(*x->sha));
	if (!x->sha)
		return errf(err, errsz, ENOMEM, "out of memory");
	for (uint64_t i = 0; i < x->n; i++, p += PHOS_CHUNK_HEX + 1) {
		char h[PHOS_CHUNK_HEX + 1];

		memcpy(h, p, PHOS_CHUNK_HEX);
		h[PHOS_CHUNK_HEX] = '\0';
		if (p[PHOS_CHUNK_HEX] != '\n' || phos_chunk_unhex(h, x->sha[i]) < 0) {
			phos_idx_free(x);
			return errf(err, errsz, EBADMSG, "chunk index: line %" PRIu64 " is not a "
				    "SHA-256", i + 2);
		}
	}
	return 0;
}

int phos_idx_read(struct phos_idx *x, int dir_fd, const char *name, char *err, size_t errsz)
{
	struct stat st;
	char *buf;
	ssize_t n;
	int fd, rc;

	memset(x, 0, sizeof(*x));
	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errf(err, errsz, errno, "%s: %s", name, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > IDX_MAX) {
		close(fd);
		return errf(err, errsz, EBADMSG, "%s: not a chunk index", name);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return errf(err, errsz, ENOMEM, "out of memory");
	}
	n = phos_read_full(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return errf(err, errsz, EIO, "%s: short read", name);
	}
	rc = phos_idx_parse(x, buf, (size_t)n, err, errsz);
	free(buf);
	return rc;
}

int phos_idx_write(const struct phos_idx *x, int dir_fd, const char *name, char *err,
		   size_t errsz)
{
	size_t len = 64 + x->n * (PHOS_CHUNK_HEX + 1), off;
	char *buf = malloc(len);
	int fd, e;

	if (!buf)
		return errf(err, errsz, ENOMEM, "out of memory");
	off = (size_t)snprintf(buf, len, IDX_MAGIC "%" PRIu64 " %" PRIu64 "\n", x->size, x->chunk);
	for (uint64_t i = 0; i < x->n; i++) {
		phos_chunk_hex(x->sha[i], buf + off);
		off += PHOS_CHUNK_HEX;
		buf[off++] = '\n';
	}
	fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		e = errno;
		free(buf);
		return errf(err, errsz, e, "creating %s: %s", name, strerror(e));
	}
	if (phos_write_full(fd, buf, off) < 0 || fsync(fd) < 0) {
		e = errno;
		close(fd);
		free(buf);
		return errf(err, errsz, e, "writing %s: %s", name, strerror(e));
	}
	free(buf);
	if (close(fd) < 0)
		return errf(err, errsz, errno, "writing %s: %s", name, strerror(errno));
	return 0;
}

/* ---- sweeping ----------------------------------------------------------- */

int phos_chunk_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

int phos_chunks_sweep(int dir_fd, const unsigned char (*keep)[32], size_t n, uint64_t *bytes,
		      char *err, size_t errsz)
{
	struct dirent *de;
	int fd, removed = 0;
	DIR *d;

	if (bytes)
		*bytes = 0;
	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return errf(err, errsz, e, "chunk store: %s", strerror(e));
	}
	while ((errno = 0, de = readdir(d))) {
		unsigned char sha[32];
		struct stat st;
		bool tmp = !strncmp(de->d_name, PHOS_CHUNK_TMP_PREFIX, strlen(PHOS_CHUNK_TMP_PREFIX));

		size_t nl = strlen(de->d_name);
		char hex[PHOS_CHUNK_HEX + 1];

		/* "<hex>" or "<hex>.zst" */
		memcpy(hex, de->d_name, nl < PHOS_CHUNK_HEX ? nl : PHOS_CHUNK_HEX);
		hex[nl < PHOS_CHUNK_HEX ? nl : PHOS_CHUNK_HEX] = '\0';
		if (!tmp && ((nl != PHOS_CHUNK_HEX && (nl != PHOS_CHUNK_HEX + strlen(PHOS_CHUNK_ZST) ||
						      strcmp(de->d_name + PHOS_CHUNK_HEX,
							     PHOS_CHUNK_ZST))) ||
			     phos_chunk_unhex(hex, sha) < 0 ||
			     (n && bsearch(sha, keep, n, sizeof(*keep), phos_chunk_cmp))))
			continue;	/* in use, or not a chunk (the lock, ...) */
		if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (unlinkat(dir_fd, de->d_name, 0) < 0)
			continue;
		removed++;
		if (bytes)
			*bytes += (uint64_t)st.st_size;
	}
	closedir(d);
	if (removed)
		fsync(dir_fd);
	return removed;
}
