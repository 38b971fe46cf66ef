/*
 * stage.c - phosd's staging pool (stage.h).
 *
 * The pool is a memfd: hugetlb 2 MiB pages when the node has enough of
 * them reserved (vm.nr_hugepages), else shared memory, faulted in with
 * MADV_HUGEPAGE (huge pages as /sys/kernel/mm/transparent_hugepage/
 * shmem_enabled allows).  Filling it writes every page once, which takes
 * seconds per 10 GiB: a thread does it while phosd serves.  phos-gpu maps
 * the fd it is given and registers (pins) each piece only for its copy.
 *
 * gpu_stage_pool_pinned: the pool is host memory the NVIDIA driver pins
 * when it is made, by a one-shot `phos-gpu pool-create`, exported as fds
 * that phosd holds (the memory lives as long as one of them does); the
 * memfd is then empty, a token whose locks count borrowers.  phos-gpu
 * imports and maps those pieces, and nothing is pinned on the way.  Any
 * failure to make it: logged, and the memfd pool as above.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/file.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "stage.h"
#include "util.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif

enum pool_state { POOL_OFF, POOL_FILLING, POOL_READY, POOL_TAKEN };

static struct {
	pthread_mutex_t lock;
	enum pool_state st;
	int fd;
	uint64_t size;
	/* what it holds, for one restore of that generation (stage_keep) */
	char held[PATH_MAX];
	char pieces[1024];
	char kind[64];		/* of memory, for phosctl status */
	const char *pin;	/* phos-gpu, for a driver-pinned pool */
	int cfd[STAGE_CUDA_MAX];
	struct stage_cuda cuda;	/* .fd = cfd once it is made */
} pool = { PTHREAD_MUTEX_INITIALIZER, POOL_OFF, -1, 0, "", "", "", NULL, { 0 }, { NULL, 0, 0 } };

/* The bracketed choice of a sysfs setting ("always [advise] never"). */
static void sysfs_choice(const char *path, char *out, size_t n)
{
	char buf[128] = "", *l, *r;
	FILE *f = fopen(path, "re");

	phos_strlcpy(out, "unknown", n);
	if (!f)
		return;
	if (fgets(buf, sizeof(buf), f) && (l = strchr(buf, '[')) && (r = strchr(l, ']'))) {
		*r = '\0';
		phos_strlcpy(out, l + 1, n);
	}
	fclose(f);
}

/* hugetlb: all or nothing (fallocate fails when too few pages are
 * reserved). */
static int fill_hugetlb(uint64_t size)
{
	int fd = memfd_create("phos-stage", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);

	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)size) < 0 || fallocate(fd, 0, 0, (off_t)size) < 0) {
		log_debug("staging pool: no hugetlb pages for it (%m); shared memory instead");
		close(fd);
		return -1;
	}
	return fd;
}

/* shared memory, every page written once (MADV_POPULATE_WRITE fails
 * instead of raising SIGBUS when memory runs out) */
static int fill_shmem(uint64_t size, char *why, size_t whysz)
{
	int fd = memfd_create("phos-stage", MFD_CLOEXEC);
	void *p = MAP_FAILED;

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
	    (p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		snprintf(why, whysz, "%s", strerror(errno));
		goto fail;
	}
	(void)madvise(p, size, MADV_HUGEPAGE);
	if (madvise(p, size, MADV_POPULATE_WRITE) < 0) {
		if (errno != EINVAL) {
			snprintf(why, whysz, "%s", strerror(errno));
			goto fail;
		}
		/* before Linux 5.14: allocate through the file instead */
		if (fallocate(fd, 0, 0, (off_t)size) < 0) {
			snprintf(why, whysz, "%s", strerror(errno));
			goto fail;
		}
	}
	munmap(p, size);
	return fd;
fail:
	if (p != MAP_FAILED)
		munmap(p, size);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* The pool as host memory the driver pins: `phos-gpu pool-create N
 * PIECE_GIB`, its socket on fd 3 (one REPLY: the N fds, BYTES a piece's
 * size), its stderr to us (the last line says what it made, or why not).
 * 0, or -1 with why. */
static int make_pinned(unsigned gib, char *why, size_t whysz, char *how, size_t howsz)
{
	unsigned pg = (gib + STAGE_CUDA_MAX - 1) / STAGE_CUDA_MAX, n = (gib + pg - 1) / pg, got = 0;
	struct phos_msg *m;
	uint64_t piece = 0;
	int sv[2] = { -1, -1 }, ep[2] = { -1, -1 }, st = 0;
	char a1[16], a2[16], last[512];
	pid_t c;

	snprintf(a1, sizeof(a1), "%u", n);
	snprintf(a2, sizeof(a2), "%u", pg);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ep, O_CLOEXEC) < 0 ||
	    (c = fork()) < 0) {
		snprintf(why, whysz, "%s", strerror(errno));
		for (int i = 0; i < 2; i++) {
			if (sv[i] >= 0)
				close(sv[i]);
			if (ep[i] >= 0)
				close(ep[i]);
		}
		return -1;
	}
	if (c == 0) {
		if (dup2(sv[1], 3) < 0 || dup2(ep[1], 2) < 0)
			_exit(127);
		execl(pool.pin, "phos-gpu", "pool-create", a1, a2, (char *)NULL);
		dprintf(2, "cannot run %s: %s\n", pool.pin, strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	close(ep[1]);
	/* pinning takes seconds per 10 GiB: up to checkpoint_timeout's
	 * default, 10 minutes */
	if ((m = phos_msg_recv(sv[0], 600000))) {
		if (m->nfds == (int)n && phos_msg_get_u64(m, PHOS_A_BYTES, &piece) == 0 &&
		    piece == (uint64_t)pg << 30) {
			for (unsigned i = 0; i < n; i++) {
				pool.cfd[i] = m->fds[i];
				m->fds[i] = -1;	/* ours now */
			}
			m->nfds = 0;
			got = n;
		}
		phos_msg_free(m);
	}
	close(sv[0]);
	if (got != n)
		kill(c, SIGKILL);	/* a helper that hangs or said something else */
	phos_log_lines(ep[0], "phos-gpu pool-create", last, sizeof(last));
	close(ep[0]);
	while (waitpid(c, &st, 0) < 0 && errno == EINTR)
		;
	if (got != n || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		for (unsigned i = 0; i < got; i++)
			close(pool.cfd[i]);
		snprintf(why, whysz, "%s", *last ? last : "phos-gpu pool-create failed");
		return -1;
	}
	pool.cuda = (struct stage_cuda){ .fd = pool.cfd, .n = n, .piece = (uint64_t)pg << 30 };
	pool.size = pool.cuda.piece * n;
	snprintf(how, howsz, "%s", *last ? last : "host memory pinned by the NVIDIA driver");
	return 0;
}

static void *fill_main(void *arg)
{
	uint64_t size = pool.size, t0 = phos_now_ms();
	char why[512] = "", how[512];
	int fd = -1;

	(void)arg;
	if (pool.pin) {
		if (make_pinned((unsigned)(size >> 30), why, sizeof(why), how, sizeof(how)) == 0 &&
		    (fd = memfd_create("phos-stage-token", MFD_CLOEXEC)) < 0) {
			for (unsigned i = 0; i < pool.cuda.n; i++)
				close(pool.cfd[i]);
			pool.cuda = (struct stage_cuda){ NULL, 0, 0 };
			snprintf(why, sizeof(why), "%s", strerror(errno));
		}
		if (fd < 0) {
			log_warn("staging pool: no host memory pinned by the NVIDIA driver for it (%s): "
				 "a pool pinned piece by piece instead (gpu_stage_pool_pinned)", why);
			pool.size = size;
			why[0] = '\0';
		}
	}
	if (fd >= 0) {
		size = pool.size;
	} else if ((fd = fill_hugetlb(size)) >= 0) {
		snprintf(how, sizeof(how), "hugetlb 2 MiB pages");
	} else if ((fd = fill_shmem(size, why, sizeof(why))) >= 0) {
		char thp[32];

		sysfs_choice("/sys/kernel/mm/transparent_hugepage/shmem_enabled", thp, sizeof(thp));
		snprintf(how, sizeof(how), "shared memory; transparent huge pages for it: %s%s", thp,
			 strcmp(thp, "never") ? "" : " (4 KiB pages: about half the copy rate of "
			 "huge pages; reserve hugetlb pages, vm.nr_hugepages, for more)");
	}
	pthread_mutex_lock(&pool.lock);
	if (fd < 0) {
		pool.st = POOL_OFF;
		log_err("staging pool: cannot have %" PRIu64 " GiB of memory for it (%s): stop and "
			"preempt checkpoints copy GPU memory straight to storage (lower "
			"gpu_stage_pool_gib)", size >> 30, why);
	} else {
		pool.fd = fd;
		pool.st = POOL_READY;
		snprintf(pool.kind, sizeof(pool.kind), "%s", pool.cuda.fd ?
			 "host memory pinned by the NVIDIA driver" : strncmp(how, "hugetlb", 7) == 0 ?
			 "hugetlb 2 MiB pages" : "shared memory");
		log_notice("staging pool: %" PRIu64 " GiB ready in %" PRIu64 " ms (%s)", size >> 30,
			   phos_now_ms() - t0, how);
	}
	pthread_mutex_unlock(&pool.lock);
	return NULL;
}

void stage_start(unsigned gib, const char *pin)
{
	pthread_t t;

	if (!gib)
		return;
	pool.size = (uint64_t)gib << 30;
	pool.pin = pin;
	pool.st = POOL_FILLING;
	log_info("staging pool: filling %u GiB", gib);
	if (pthread_create(&t, NULL, fill_main, NULL) != 0) {
		pool.st = POOL_OFF;
		log_err("staging pool: cannot start the thread that fills it");
		return;
	}
	pthread_detach(t);
}

/* A restore loads from the pool: it holds a shared lock on it (stage_lend).
 * Called with pool.lock held and the pool ready. */
static bool lent(void)
{
	if (flock(pool.fd, LOCK_EX | LOCK_NB) < 0)
		return true;
	flock(pool.fd, LOCK_UN);
	return false;
}

int stage_take(struct stage_lease *l, char *why, size_t whysz)
{
	int ok = 0;

	l->fd = -1;
	l->size = l->used = 0;
	l->cuda = (struct stage_cuda){ NULL, 0, 0 };
	pthread_mutex_lock(&pool.lock);
	switch (pool.st) {
	case POOL_OFF:
		snprintf(why, whysz, "none (gpu_stage_pool_gib: 0, or it could not be made)");
		break;
	case POOL_FILLING:
		snprintf(why, whysz, "still being filled");
		break;
	case POOL_TAKEN:
		snprintf(why, whysz, "in use by another checkpoint");
		break;
	case POOL_READY:
		if (lent()) {
			snprintf(why, whysz, "in use by a restore that loads from it");
			break;
		}
		if ((l->fd = fcntl(pool.fd, F_DUPFD_CLOEXEC, 3)) < 0) {
			snprintf(why, whysz, "%s", strerror(errno));
			break;
		}
		pool.held[0] = '\0';	/* overwritten from here on */
		l->size = pool.size;
		l->cuda = pool.cuda;
		pool.st = POOL_TAKEN;
		ok = 1;
		break;
	}
	pthread_mutex_unlock(&pool.lock);
	return ok;
}

int64_t stage_piece(struct stage_lease *l, uint64_t span, char *why, size_t whysz)
{
	int64_t off;

	if (l->fd < 0 || span > l->size - l->used) {
		snprintf(why, whysz, "%" PRIu64 " MiB needed, %" PRIu64 " MiB left of %" PRIu64
			 " MiB", span >> 20, (l->size - l->used) >> 20, l->size >> 20);
		return -1;
	}
	off = (int64_t)l->used;
	l->used += span;
	return off;
}

void stage_give(struct stage_lease *l)
{
	if (l->fd < 0)
		return;
	phos_closep(&l->fd);
	pthread_mutex_lock(&pool.lock);
	if (pool.st == POOL_TAKEN)
		pool.st = POOL_READY;
	pthread_mutex_unlock(&pool.lock);
}

void stage_keep(struct stage_lease *l, const char *path, const char *pieces)
{
	if (l->fd < 0 || !pieces[0])
		return;
	pthread_mutex_lock(&pool.lock);
	if (!realpath(path, pool.held) || phos_strlcpy(pool.pieces, pieces, sizeof(pool.pieces)) < 0)
		pool.held[0] = '\0';
	pthread_mutex_unlock(&pool.lock);
}

int stage_lend(const char *path, char *pieces, size_t n, struct stage_cuda *cuda, char *why,
	       size_t whysz)
{
	char real[PATH_MAX], self[64];
	int fd = -1;

	if (!realpath(path, real)) {
		snprintf(why, whysz, "%s: %s", path, strerror(errno));
		return -1;
	}
	pthread_mutex_lock(&pool.lock);
	if (pool.st != POOL_READY || !pool.held[0] || strcmp(real, pool.held)) {
		snprintf(why, whysz, "the staging pool does not hold %s", real);
		goto out;
	}
	/* a description of its own: its lock is the borrower's */
	snprintf(self, sizeof(self), "/proc/self/fd/%d", pool.fd);
	if ((fd = open(self, O_RDWR | O_CLOEXEC)) < 0 || flock(fd, LOCK_SH | LOCK_NB) < 0 ||
	    phos_strlcpy(pieces, pool.pieces, n) < 0) {
		snprintf(why, whysz, "the staging pool cannot be lent: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
		goto out;
	}
	pool.held[0] = '\0';	/* one restore: a retry reads storage */
	*cuda = pool.cuda;
out:
	pthread_mutex_unlock(&pool.lock);
	return fd;
}

void stage_describe(char *buf, size_t n, bool held)
{
	pthread_mutex_lock(&pool.lock);
	switch (pool.st) {
	case POOL_OFF:
		snprintf(buf, n, "%s", pool.size ? "none (it could not be made: see the log)" : "off");
		break;
	case POOL_FILLING:
		snprintf(buf, n, "%" PRIu64 " GiB, being filled", pool.size >> 30);
		break;
	default:
		snprintf(buf, n, "%" PRIu64 " GiB of %s, %s%s%s", pool.size >> 30, pool.kind,
			 pool.st == POOL_TAKEN ? "in use by a checkpoint" :
			 lent() ? "read by a restore" : "free",
			 held && pool.held[0] ? "; holds " : "", held ? pool.held : "");
		break;
	}
	pthread_mutex_unlock(&pool.lock);
}
