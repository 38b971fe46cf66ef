/*
 * image_writer.c - writes generations of one task into an image store, for
 * the crash-safety test (tests/unit/test_image_crash.c), which kills it
 * before each of its store-changing calls in turn and at random moments.
 *
 *   image_writer [-n COUNT] [-r EVERY] [-k CALL] [-s FD] ROOT KEYFILE SEED
 *
 *   ROOT     the store (created if missing), as checkpoint_dir
 *   KEYFILE  the node key (phos_key_load(); when not run as root, whose
 *            key files cannot be root's, its bytes are taken as they are)
 *   SEED     decides how many files each generation has and their sizes
 *   -n       write COUNT generations, then exit 0 (default: forever)
 *   -r       run retention (keep 3) after generations whose number is a
 *            multiple of EVERY (default 1: after each)
 *   -k       SIGKILL ourselves just before the CALL-th store-changing
 *            system call (1 = the first): write, fsync, fdatasync, fchmod,
 *            mkdirat, openat creating a file, renameat, renameat2,
 *            unlinkat, made by this file or by libphoscommon (linked
 *            statically, with -Wl,--wrap for each; see tests/image.am)
 *   -s       write one letter to FD as each phase starts (never blocks):
 *            S store open, B begin, W writing files, C writing chunks,
 *            P publish, R retention, D generation done
 *
 * What a generation G of task crash/4242/0/0 holds (test_image_crash.c
 * checks exactly this, with its own copy of the content rule):
 *
 *   - n files, 3 <= n <= 6, and the manifest extra "test.files" = n;
 *   - file k (0 <= k < n) is "fK-SIZE.img", SIZE its length in bytes
 *     (0 to 4 MiB), at the top when k % 3 == 0, in "sub/" when 1 and in
 *     "sub/deep/" when 2;
 *   - its bytes are the little-endian 64-bit words
 *     word(G, k, j) = mix64((G << 40) ^ (k << 32) ^ j), j = 0, 1, ...
 *     cut at SIZE, with mix64 the splitmix64 finaliser (image_content.h);
 *   - the index file IMAGE_GPU_IDX at the top, naming the chunks of one
 *     buffer of GPU memory whose pieces image_gpu_piece() defines, stored
 *     in the task's chunk store after the files with phos_chunk_put()
 *     (the compressible piece with phos_chunk_put_z(), zstd level 1); the
 *     chunk directory is synced before the index is written.
 *
 * The wrappers also check the order the chunk store's rules ask for
 * (doc/image-format.md, "Chunks"), which no kill can show: a chunk's
 * temporary is renamed only after its bytes were synced, and an index is
 * created only after the chunk directory was synced since its last
 * rename.  A breach ends the writer with status 4 and a message.
 *
 * Exit status: 0 after COUNT generations, 1 when the store refused
 * something (message on stderr), 2 on bad usage, 4 on a breach of the
 * chunk store's order.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunks.h"
#include "image.h"
#include "log.h"
#include "manifest.h"
#include "util.h"

#include "image_content.h"

#define KEEP		3		/* generations retention keeps */
#define CHUNK		(1u << 20)	/* bytes per write(2) of a file */

/* ---- kill points and order checks --------------------------------------- */

static unsigned long kill_at;	/* -k: die before this call; 0 = never */
static unsigned long n_calls;	/* store-changing calls so far */
static int status_fd = -1;	/* -s */

/* The chunk temporaries being written, and a directory with renames not
 * yet synced (its device and inode; dirty_dir false when none). */
#define N_TMP	4
static struct tmp_file {
	bool used;
	int fd;
	bool unsynced;			/* written since its last (fdata)sync */
	dev_t dev;			/* its directory */
	ino_t ino;
	char name[PHOS_CHUNK_HEX + 64];
} tmps[N_TMP];
static bool dirty_dir;
static dev_t dirty_dev;
static ino_t dirty_ino;

/* Count one store-changing call; at the chosen one, die as a crash would:
 * no cleanup, no atexit, nothing flushed. */
static void step(void)
{
	if (kill_at && ++n_calls == kill_at) {
		kill(getpid(), SIGKILL);
		_exit(3);	/* not reached */
	}
}

/* A breach of the chunk store's order: say so and end (status 4). */
static void breach(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void breach(const char *fmt, ...)
{
	va_list ap;

	fputs("image_writer: chunk store order broken: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	_exit(4);
}

static bool is_tmp(const char *name)
{
	const char *base = strrchr(name, '/');

	base = base ? base + 1 : name;
	return !strncmp(base, PHOS_CHUNK_TMP_PREFIX, strlen(PHOS_CHUNK_TMP_PREFIX));
}

static bool is_idx(const char *name)
{
	size_t len = strlen(name);

	return len > strlen(PHOS_IDX_SUFFIX) &&
	       !strcmp(name + len - strlen(PHOS_IDX_SUFFIX), PHOS_IDX_SUFFIX);
}

/* The directory dfd names (device and inode); false if unknown. */
static bool dir_id(int dfd, dev_t *dev, ino_t *ino)
{
	struct stat st;

	if (fstat(dfd, &st) < 0)
		return false;
	*dev = st.st_dev;
	*ino = st.st_ino;
	return true;
}

static struct tmp_file *tmp_by_fd(int fd)
{
	for (int i = 0; i < N_TMP; i++)
		if (tmps[i].used && tmps[i].fd == fd)
			return &tmps[i];
	return NULL;
}

/* A temporary was created as fd (a new fd: any old slot of it is stale). */
static void tmp_created(int dfd, const char *name, int fd)
{
	struct tmp_file *t = tmp_by_fd(fd);

	for (int i = 0; !t && i < N_TMP; i++)
		if (!tmps[i].used)
			t = &tmps[i];
	if (!t)
		t = &tmps[0];	/* more than N_TMP abandoned: forget one */
	t->fd = fd;
	t->unsynced = false;
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->used = dir_id(dfd, &t->dev, &t->ino);
}

/* The temporary name in dfd (whose fd may be closed by now). */
static struct tmp_file *tmp_by_name(int dfd, const char *name)
{
	dev_t dev;
	ino_t ino;

	if (!dir_id(dfd, &dev, &ino))
		return NULL;
	for (int i = 0; i < N_TMP; i++)
		if (tmps[i].used && tmps[i].dev == dev && tmps[i].ino == ino &&
		    !strcmp(tmps[i].name, name))
			return &tmps[i];
	return NULL;
}

/* fd was synced: its data if a temporary, its entries if the directory
 * with unsynced renames. */
static void synced(int fd, bool data_only)
{
	struct tmp_file *t = tmp_by_fd(fd);
	dev_t dev;
	ino_t ino;

	if (t)
		t->unsynced = false;
	else if (!data_only && dirty_dir && dir_id(fd, &dev, &ino) && dev == dirty_dev &&
		 ino == dirty_ino)
		dirty_dir = false;
}

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);
int __real_fchmod(int fd, mode_t mode);
int __wrap_fchmod(int fd, mode_t mode);
int __real_mkdirat(int dfd, const char *name, mode_t mode);
int __wrap_mkdirat(int dfd, const char *name, mode_t mode);
int __real_openat(int dfd, const char *name, int flags, ...);
int __wrap_openat(int dfd, const char *name, int flags, ...);
int __real_renameat(int ofd, const char *old, int nfd, const char *new);
int __wrap_renameat(int ofd, const char *old, int nfd, const char *new);
int __real_renameat2(int ofd, const char *old, int nfd, const char *new, unsigned flags);
int __wrap_renameat2(int ofd, const char *old, int nfd, const char *new, unsigned flags);
int __real_unlinkat(int dfd, const char *name, int flags);
int __wrap_unlinkat(int dfd, const char *name, int flags);

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	struct tmp_file *t = tmp_by_fd(fd);

	step();
	if (t)
		t->unsynced = true;
	return __real_write(fd, buf, n);
}

int __wrap_fsync(int fd)
{
	int rc;

	step();
	rc = __real_fsync(fd);
	if (rc == 0)
		synced(fd, false);
	return rc;
}

int __wrap_fdatasync(int fd)
{
	int rc;

	step();
	rc = __real_fdatasync(fd);
	if (rc == 0)
		synced(fd, true);
	return rc;
}

int __wrap_fchmod(int fd, mode_t mode)
{
	step();
	return __real_fchmod(fd, mode);
}

int __wrap_mkdirat(int dfd, const char *name, mode_t mode)
{
	step();
	return __real_mkdirat(dfd, name, mode);
}

int __wrap_openat(int dfd, const char *name, int flags, ...)
{
	mode_t mode = 0;
	int fd;

	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_list ap;

		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
		if ((flags & O_CREAT) && is_idx(name) && dirty_dir)
			breach("index %s created before the chunk directory was synced after "
			       "its renames", name);
		step();
	}
	fd = __real_openat(dfd, name, flags, mode);
	if (fd >= 0 && (flags & O_CREAT) && is_tmp(name))
		tmp_created(dfd, name, fd);
	return fd;
}

/* A rename of a chunk temporary: its bytes synced before, and the
 * directory to be synced after. */
static void renaming(int ofd, const char *old, int nfd)
{
	struct tmp_file *t;

	if (!is_tmp(old) || !(t = tmp_by_name(ofd, old)))
		return;
	if (t->unsynced)
		breach("%s renamed before its bytes were synced", old);
	t->used = false;
	dirty_dir = dir_id(nfd, &dirty_dev, &dirty_ino);
}

int __wrap_renameat(int ofd, const char *old, int nfd, const char *new)
{
	renaming(ofd, old, nfd);
	step();
	return __real_renameat(ofd, old, nfd, new);
}

int __wrap_renameat2(int ofd, const char *old, int nfd, const char *new, unsigned flags)
{
	renaming(ofd, old, nfd);
	step();
	return __real_renameat2(ofd, old, nfd, new, flags);
}

int __wrap_unlinkat(int dfd, const char *name, int flags)
{
	struct tmp_file *t = is_tmp(name) ? tmp_by_name(dfd, name) : NULL;

	if (t)
		t->used = false;
	step();
	return __real_unlinkat(dfd, name, flags);
}

/* Tell the test which phase starts; not a kill point, never blocks. */
static void say(char phase)
{
	if (status_fd >= 0 && __real_write(status_fd, &phase, 1) < 0) {
		/* the test stopped listening: keep going */
	}
}

/* ---- what a generation holds --------------------------------------------- */

/* A size: a quarter empty, most small, some up to 256 KiB, one in 16
 * 1..4 MiB. */
static uint64_t pick_size(uint64_t *rng)
{
	uint64_t r = image_mix64((*rng)++), v = r >> 8;

	switch (r % 16) {
	case 0: case 1: case 2: case 3:
		return 0;
	case 4: case 5: case 6: case 7: case 8: case 9: case 10:
		return 1 + v % 8192;
	case 11: case 12: case 13: case 14:
		return 8192 + v % (256u << 10);
	default:
		return (1u << 20) + v % (3u << 20);
	}
}

/* Create file k of generation gen (size bytes) in the staging directory. */
static int write_file(int dir_fd, uint64_t gen, unsigned k, uint64_t size, unsigned char *buf,
		      struct phos_err *e)
{
	static const char *const dirs[] = { "", "sub/", "sub/deep/" };
	char name[64];
	uint64_t off;
	int fd;

	snprintf(name, sizeof(name), "%sf%u-%" PRIu64 ".img", dirs[k % 3], k, size);
	fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return phos_errnof(e, errno, "create %s: %s", name, strerror(errno));
	for (off = 0; off < size; off += CHUNK) {
		size_t len = size - off < CHUNK ? (size_t)(size - off) : CHUNK;

		image_content(buf, len, gen, k, off);
		if (phos_write_full(fd, buf, len) < 0) {
			phos_errnof(e, errno, "write %s: %s", name, strerror(errno));
			close(fd);
			return -1;
		}
	}
	if (close(fd) < 0)
		return phos_errnof(e, errno, "close %s: %s", name, strerror(errno));
	return 0;
}

/* The GPU memory of w's generation into the task's chunk store, named by
 * the index IMAGE_GPU_IDX in w's staging directory. */
static int write_chunks(struct phos_image_writer *w, unsigned char *buf, struct phos_err *e)
{
	unsigned char sha[IMAGE_GPU_PIECES][32];
	struct phos_idx x = { .size = IMAGE_GPU_SIZE, .chunk = IMAGE_GPU_CHUNK,
			      .n = IMAGE_GPU_PIECES, .sha = sha };
	char err[256];
	int cfd;

	cfd = phos_image_chunks_open(w, e);
	if (cfd < 0)
		return -1;
	for (unsigned i = 0; i < IMAGE_GPU_PIECES; i++) {
		size_t len = image_gpu_len(i), stored;
		bool written;
		int rc;

		image_gpu_piece(buf, w->generation, i);
		if (image_gpu_slot(i) == IMAGE_GPU_ZSLOT)
			rc = phos_chunk_put_z(cfd, buf, len, false, 1, sha[i], &stored, err,
					      sizeof(err));
		else
			rc = phos_chunk_put(cfd, buf, len, false, sha[i], &written, err, sizeof(err));
		if (rc < 0)
			return phos_errnof(e, errno, "piece %u: %s", i, err);
	}
	if (fsync(cfd) < 0)
		return phos_errnof(e, errno, "syncing the chunk store: %s", strerror(errno));
	if (phos_idx_write(&x, w->dir_fd, IMAGE_GPU_IDX, err, sizeof(err)) < 0)
		return phos_errnof(e, errno, "%s", err);
	return 0;
}

/* Begin, fill, publish one generation; then retention when its turn. */
static int one_generation(struct phos_store *s, const struct phos_image_id *id, uint64_t seed,
			  unsigned every, unsigned char *buf, struct phos_err *e)
{
	struct phos_image_writer w;
	char v[24];
	uint64_t rng;
	unsigned n, k;
	int rc = -1;

	phos_image_writer_init(&w);
	say('B');
	if (phos_image_begin(s, id, getuid(), getgid(), &w, e) < 0)
		goto out;
	say('W');
	rng = image_mix64(image_mix64(seed) ^ w.generation);	/* draws: mix64(rng++) */
	n = 3 + (unsigned)(image_mix64(rng++) % 4);
	if (mkdirat(w.dir_fd, "sub", 0755) < 0 || mkdirat(w.dir_fd, "sub/deep", 0755) < 0) {
		phos_errnof(e, errno, "mkdir in %s: %s", w.path, strerror(errno));
		goto out;
	}
	for (k = 0; k < n; k++)
		if (write_file(w.dir_fd, w.generation, k, pick_size(&rng), buf, e) < 0)
			goto out;
	say('C');
	if (write_chunks(&w, buf, e) < 0)
		goto out;
	snprintf(v, sizeof(v), "%u", n);
	if (phos_image_set_extra(&w, "test.files", v, e) < 0)
		goto out;
	w.manifest.root_pid = getpid();
	w.manifest.root_nspid = 1;
	say('P');
	if (phos_image_publish(&w, e) < 0)
		goto out;
	if (w.generation % every == 0) {
		say('R');
		if (phos_image_retain(s, id, KEEP, PHOS_VERIFY_QUICK, e) < 0)
			goto out;
	}
	say('D');
	rc = 0;
out:
	phos_image_abort(&w);
	return rc;
}

/* The node key; as non-root (no root-owned key file possible) its bytes. */
static int load_key(struct phos_key *key, const char *path, struct phos_err *e)
{
	unsigned char bytes[PHOS_KEY_MAX + 1];
	ssize_t n;
	int fd;

	if (phos_key_load(key, path, e) == 0)
		return 0;
	if (errno != EPERM || geteuid() == 0)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return phos_errnof(e, errno, "%s: %s", path, strerror(errno));
	n = read(fd, bytes, sizeof(bytes));
	close(fd);
	if (n < 0)
		return phos_errnof(e, errno, "%s: %s", path, strerror(errno));
	return phos_key_set(key, bytes, (size_t)n, e);
}

static unsigned long number(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end) {
		fprintf(stderr, "image_writer: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static struct phos_key key;
	struct phos_store s = { .root_fd = -1 };
	struct phos_err e = { "" };
	struct phos_image_id id;
	unsigned long count = 0, i;
	unsigned every = 1;
	unsigned char *buf = NULL;
	uint64_t seed;
	int opt, rc = 1;

	while ((opt = getopt(argc, argv, "n:r:k:s:")) != -1) {
		switch (opt) {
		case 'n':
			count = number(optarg, "count");
			break;
		case 'r':
			every = (unsigned)number(optarg, "retention period");
			break;
		case 'k':
			kill_at = number(optarg, "kill point");
			break;
		case 's':
			status_fd = (int)number(optarg, "status fd");
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind != 3 || every == 0)
		goto usage;
	seed = number(argv[optind + 2], "seed");
	if (status_fd >= 0) {
		int fl = fcntl(status_fd, F_GETFL);

		if (fl < 0 || fcntl(status_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
			fprintf(stderr, "image_writer: status fd %d: %s\n", status_fd, strerror(errno));
			return 2;
		}
	}
	phos_log_open("image_writer", PHOS_LOG_STDERR, LOG_WARNING);

	buf = malloc(CHUNK);
	if (!buf) {
		phos_errnof(&e, ENOMEM, "out of memory");
		goto out;
	}
	if (load_key(&key, argv[optind + 1], &e) < 0 ||
	    phos_store_open(&s, argv[optind], &key, true, &e) < 0 ||
	    phos_image_id_slurm(&id, "crash", 4242, 0, 0, &e) < 0)
		goto out;
	say('S');
	for (i = 0; count == 0 || i < count; i++)
		if (one_generation(&s, &id, seed, every, buf, &e) < 0)
			goto out;
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "image_writer: %s\n", e.msg);
	free(buf);
	phos_store_close(&s);
	phos_key_clear(&key);
	phos_log_close();
	return rc;
usage:
	fprintf(stderr, "usage: image_writer [-n COUNT] [-r EVERY] [-k CALL] [-s FD] ROOT KEYFILE SEED\n");
	return 2;
}
