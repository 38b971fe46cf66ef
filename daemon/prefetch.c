/*
 * prefetch.c - record the file pages a process tree has in memory at a
 * checkpoint; read them ahead at its restore (prefetch.h).
 *
 * Record (phosd, before the tree is frozen: no part of the stall): for
 * each file-backed mapping in /proc/PID/maps, /proc/PID/pagemap's present
 * bit says which of its pages the process has mapped; those pages, as
 * byte ranges of the file, go into prefetch.list, which the publish then
 * hashes and signs with the rest of the generation.  The pages of private
 * mappings that the process wrote come first (scan_vma).
 *
 * Restore (phos-restore, before CRIU starts): a detached process, with
 * the image owner's credentials, reads the ranges ahead while CRIU and the
 * driver restore the process, and exits.  Nothing waits for it: it only
 * warms the cache.  It reads with pread(2), PREFETCH_CHUNK at most at a
 * time in each of PREFETCH_THREADS threads, so that no more than
 * PREFETCH_THREADS chunks are ever queued at the disk: CRIU's own reads
 * (its executable, each mapped file's ELF headers) wait behind that much
 * and no more.  readahead(2) returned as soon as its reads were queued, so
 * the whole list was queued within milliseconds and CRIU's reads waited
 * behind all of it (PHOS_PREFETCH_READAHEAD=1 still reads that way, for
 * the A/B).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "prefetch.h"
#include "util.h"

#define PREFETCH_GAP_PAGES 16		/* runs this close read as one */
#define PREFETCH_MAX_LINES (1u << 18)	/* per generation */
#define PREFETCH_MAX_BYTES (2ull << 30)	/* what a restore reads ahead at most */
#define PREFETCH_THREADS 4
#define PREFETCH_CHUNK (1u << 20)	/* the most one thread has queued */
#define PREFETCH_HEAD (64u << 10)	/* of each file, read before the rest */
#define PAGEMAP_BATCH 8192		/* entries per pread (64 KiB) */
#define PM_PRESENT (1ull << 63)
#define PM_FILE (1ull << 61)		/* a page of the file (or shared anon) */

/* ---- record --------------------------------------------------------------- */

/* A mapping worth recording: a regular file by absolute path, not a
 * device (the GPU's), not deleted, nothing the list's format cannot
 * carry. */
static bool wanted_path(const char *path)
{
	size_t l = strlen(path);

	return path[0] == '/' && strncmp(path, "/dev/", 5) != 0 && !strchr(path, '\\') &&
	       !(l > 10 && strcmp(path + l - 10, " (deleted)") == 0);
}

struct rec {
	FILE *out;
	size_t lines;
	uint64_t bytes;
	long page;
};

/* Full: a tree mapping big files (a memory-mapped data set) gets its
 * first PREFETCH_MAX_BYTES read ahead, and the scan stops there. */
static bool full(const struct rec *r)
{
	return r->lines >= PREFETCH_MAX_LINES || r->bytes >= PREFETCH_MAX_BYTES;
}

static void emit(struct rec *r, uint64_t off, uint64_t len, const char *path)
{
	if (full(r))
		return;
	fprintf(r->out, "%" PRIx64 " %" PRIx64 " %s\n", off, len, path);
	r->lines++;
	r->bytes += len;
}

/*
 * The present pages of [start, end), file offset off, as ranges: with
 * cow, only the private copies (a page present but not the file's, which
 * the process wrote), else only the file's pages.  CRIU writes each
 * private copy back at its restore, and the kernel reads the file's page
 * first to copy it: a read from disk in CRIU's page restore for each, on
 * a cold cache, so those ranges go first in the list.
 */
static void scan_vma(struct rec *r, int pm, uint64_t start, uint64_t end, uint64_t off,
		     const char *path, bool cow)
{
	static uint64_t e[PAGEMAP_BATCH];
	uint64_t ps = (uint64_t)r->page, run = 0, run_end = 0;
	bool in = false;

	for (uint64_t a = start; a < end && !full(r);) {
		size_t want = (size_t)((end - a) / ps);
		ssize_t got;

		if (want > PAGEMAP_BATCH)
			want = PAGEMAP_BATCH;
		got = pread(pm, e, want * sizeof(e[0]), (off_t)(a / ps * sizeof(e[0])));
		if (got <= 0)
			break;
		for (size_t i = 0; i < (size_t)got / sizeof(e[0]); i++, a += ps) {
			if (!(e[i] & PM_PRESENT) || !(e[i] & PM_FILE) != cow)
				continue;
			if (in && a - run_end <= PREFETCH_GAP_PAGES * ps) {
				run_end = a + ps;
				continue;
			}
			if (in)
				emit(r, off + (run - start), run_end - run, path);
			in = true;
			run = a;
			run_end = a + ps;
		}
	}
	if (in)
		emit(r, off + (run - start), run_end - run, path);
}

/* A process's file mappings: with cow, the private ones' written pages
 * only (scan_vma). */
static void scan_process(struct rec *r, pid_t pid, bool cow)
{
	char p[64], *line = NULL;
	size_t cap = 0;
	FILE *maps;
	int pm;

	snprintf(p, sizeof(p), "/proc/%d/maps", (int)pid);
	if (!(maps = fopen(p, "re")))
		return;
	snprintf(p, sizeof(p), "/proc/%d/pagemap", (int)pid);
	if ((pm = open(p, O_RDONLY | O_CLOEXEC)) < 0) {
		fclose(maps);
		return;
	}
	while (!full(r) && getline(&line, &cap, maps) > 0) {
		unsigned long long start, end, off, ino;
		unsigned maj, min;
		char perms[8];
		int at = 0;

		if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &off, &maj,
			   &min, &ino, &at) < 7 || !ino || !at)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (wanted_path(line + at) && (!cow || perms[3] == 'p'))
			scan_vma(r, pm, start, end, off, line + at, cow);
	}
	free(line);
	close(pm);
	fclose(maps);
}

int prefetch_record(int dir_fd, const pid_t *tree, size_t n, size_t *ranges, uint64_t *bytes)
{
	struct rec r = { .page = sysconf(_SC_PAGESIZE) };
	int fd;

	*ranges = 0;
	*bytes = 0;
	fd = openat(dir_fd, PHOS_PREFETCH_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return -1;
	if (!(r.out = fdopen(fd, "w"))) {
		close(fd);
		return -1;
	}
	/* the pages CRIU's restore reads through its writes first, then
	 * the rest (the restored process's first step) */
	for (size_t i = 0; i < n; i++)
		scan_process(&r, tree[i], true);
	for (size_t i = 0; i < n; i++)
		scan_process(&r, tree[i], false);
	if (fclose(r.out) != 0)
		return -1;
	*ranges = r.lines;
	*bytes = r.bytes;
	return 0;
}

/* ---- restore ------------------------------------------------------------- */

struct item {
	uint64_t off, len;
	char *path;
	bool head;	/* a file's first pages, ahead of the ranges (heads_first) */
};

struct pf {
	struct item *it;
	size_t n, alloc, next, from;	/* from: the first item of the process's list */
	uint64_t part;			/* of it[next], handed out already */
	bool heads;			/* heads_first() ran: each file counted at its head */
	bool queue_all;			/* readahead(2): everything queued at once */
	uint64_t bytes;
	unsigned files;
	pthread_mutex_t lock;
};

/* The next piece of the list to read: item *i, PREFETCH_CHUNK of it at
 * most (with queue_all, the whole item), so that the threads share a
 * large range.  false at the end. */
static bool next_piece(struct pf *f, size_t *i, uint64_t *off, uint64_t *len)
{
	bool more;

	pthread_mutex_lock(&f->lock);
	more = f->next < f->n;
	if (more) {
		const struct item *t = &f->it[f->next];
		uint64_t left = t->len - f->part;

		*i = f->next;
		*off = t->off + f->part;
		*len = f->queue_all || left < PREFETCH_CHUNK ? left : PREFETCH_CHUNK;
		f->part += *len;
		if (f->part >= t->len) {
			f->next++;
			f->part = 0;
		}
	}
	pthread_mutex_unlock(&f->lock);
	return more;
}

/* Read [off, off + len) of fd into the page cache; the bytes read. */
static uint64_t read_piece(int fd, char *buf, uint64_t off, uint64_t len)
{
	uint64_t got = 0;

	if (!buf)
		return readahead(fd, (off_t)off, (size_t)len) == 0 ? len : 0;
	while (got < len) {
		ssize_t r = pread(fd, buf, (size_t)(len - got), (off_t)(off + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (uint64_t)r;
	}
	return got;
}

static void *reader(void *arg)
{
	struct pf *f = arg;
	const char *cur = NULL;
	char *buf = f->queue_all ? NULL : malloc(PREFETCH_CHUNK);
	uint64_t off, len;
	size_t i;
	int fd = -1;

	if (!buf && !f->queue_all)
		return NULL;	/* the other threads read on */
	while (next_piece(f, &i, &off, &len)) {
		const struct item *t = &f->it[i];

		if (!cur || strcmp(cur, t->path) != 0) {
			struct stat st;

			phos_closep(&fd);
			cur = t->path;
			fd = open(cur, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)))
				phos_closep(&fd);
			/* ours are the only reads of this fd: no kernel read-ahead
			 * beyond them, which would queue more than PREFETCH_CHUNK */
			if (fd >= 0 && buf)
				(void)posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
			/* each file once: criu's, and the process's by their head
			 * (without heads, each switch to a file counts) */
			if (fd >= 0 && off == t->off && (t->head || i < f->from || !f->heads))
				__atomic_add_fetch(&f->files, 1, __ATOMIC_RELAXED);
		}
		if (fd < 0)
			continue;
		uint64_t got = read_piece(fd, buf, off, len);

		if (!t->head)
			__atomic_add_fetch(&f->bytes, got, __ATOMIC_RELAXED);
	}
	phos_closep(&fd);
	free(buf);
	return NULL;
}

/* Add the ranges of a list (NULL: none) to f's; closes it. */
static void read_list(struct pf *f, FILE *in)
{
	char *line = NULL;
	size_t cap = 0;

	while (in && getline(&line, &cap, in) > 0 && f->n < PREFETCH_MAX_LINES) {
		unsigned long long off, len;
		int at = 0;

		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "%llx %llx %n", &off, &len, &at) < 2 || !at || line[at] != '/')
			continue;
		if (f->n == f->alloc) {
			size_t na = f->alloc ? f->alloc * 2 : 1024;
			struct item *ni = realloc(f->it, na * sizeof(*ni));

			if (!ni)
				break;
			f->it = ni;
			f->alloc = na;
		}
		if (!(f->it[f->n].path = strdup(line + at)))
			break;
		f->it[f->n].off = off;
		f->it[f->n].len = len;
		f->it[f->n].head = false;
		f->n++;
	}
	free(line);
	if (in)
		fclose(in);
}

/* indexes of items (arg), ordered by path, then by place in the list */
static int by_path(const void *a, const void *b, void *arg)
{
	const struct item *it = arg;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	int c = strcmp(it[i].path, it[j].path);

	return c ? c : (i > j) - (i < j);
}

/*
 * CRIU opens the file of each file-backed mapping and reads its ELF
 * headers (the build-id check) before it maps it, one file after another;
 * on a cold cache each of those small reads waited behind the bulk of the
 * read-ahead (250-330 ms of a PyTorch restore on the H200, session 14).
 * So the first PREFETCH_HEAD bytes of every file of the list from item
 * f->from on go before the list's ranges, each file once, in the order
 * the list first names them (a tree's processes map the same libraries).
 * Returns the number of files.
 */
static unsigned heads_first(struct pf *f)
{
	size_t from = f->from, m = f->n - from, k = from, files = 0;
	struct item *ni = NULL;
	size_t *ix;
	bool *first;

	if (!m)
		return 0;
	ix = malloc(m * sizeof(*ix));
	first = calloc(m, sizeof(*first));
	if (!ix || !first)
		goto out;
	for (size_t i = 0; i < m; i++)
		ix[i] = from + i;
	qsort_r(ix, m, sizeof(*ix), by_path, f->it);
	for (size_t i = 0; i < m; i++)
		if (i == 0 || strcmp(f->it[ix[i]].path, f->it[ix[i - 1]].path) != 0) {
			first[ix[i] - from] = true;
			files++;
		}
	if (!(ni = malloc((f->n + files) * sizeof(*ni)))) {
		files = 0;
		goto out;
	}
	memcpy(ni, f->it, from * sizeof(*ni));
	for (size_t i = 0; i < m; i++)
		if (first[i])
			ni[k++] = (struct item){ .len = PREFETCH_HEAD, .path = f->it[from + i].path,
						 .head = true };
	memcpy(ni + k, f->it + from, m * sizeof(*ni));
	free(f->it);	/* (the paths are the new list's) */
	f->it = ni;
	f->n += files;
	f->alloc = f->n;
out:
	free(ix);
	free(first);
	return (unsigned)files;
}

/* The order of a restore's reads: criu's list (first; NULL: none), the
 * head of each file of the process's list (in; NULL: none), its ranges.
 * Closes both. */
static unsigned plan(struct pf *f, FILE *first, FILE *in, bool heads)
{
	read_list(f, first);
	f->from = f->n;
	read_list(f, in);
	f->heads = heads;
	return heads ? heads_first(f) : 0;
}

size_t prefetch_order(FILE *first, FILE *in,
		      void (*each)(void *arg, uint64_t off, uint64_t len, const char *path),
		      void *arg)
{
	struct pf f = { .n = 0 };

	plan(&f, first, in, true);
	for (size_t i = 0; i < f.n; i++)
		each(arg, f.it[i].off, f.it[i].len, f.it[i].path);
	/* the heads share their paths with the items after them */
	for (size_t i = 0; i < f.n; i++)
		if (!f.it[i].head)
			free(f.it[i].path);
	free(f.it);
	return f.n;
}

static void prefetch_run(FILE *first, FILE *in, uid_t uid, gid_t gid) __attribute__((noreturn));
static void prefetch_run(FILE *first, FILE *in, uid_t uid, gid_t gid)
{
	struct pf f = { .lock = PTHREAD_MUTEX_INITIALIZER };
	pthread_t t[PREFETCH_THREADS];
	uint64_t t0 = phos_now_ms();
	unsigned nt = 0, heads;

	/* the owner's view of the files: nothing root alone may read */
	if (uid != 0 && (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0))
		_exit(1);
	/* PHOS_PREFETCH_NO_HEADS=1: the ranges alone, as before session 14
	 * (bench/criu_open_ab.sh) */
	heads = plan(&f, first, in, !phos_env_on("PHOS_PREFETCH_NO_HEADS"));
	/* PHOS_PREFETCH_READAHEAD=1: readahead(2), as before session 15 */
	f.queue_all = phos_env_on("PHOS_PREFETCH_READAHEAD");
	/* nothing of phos-restore's stays open in a process that may outlive
	 * it (phosd's report pipe would not see its EOF) */
	closefrom(3);
	for (; nt < PREFETCH_THREADS; nt++)
		if (pthread_create(&t[nt], NULL, reader, &f) != 0)
			break;
	if (nt == 0)
		reader(&f);
	for (unsigned i = 0; i < nt; i++)
		pthread_join(t[i], NULL);
	char how[48] = "readahead(2), all queued at once";

	if (!f.queue_all)
		snprintf(how, sizeof(how), "pread, %u KiB a thread at most", PREFETCH_CHUNK >> 10);
	log_debug("prefetch: %" PRIu64 " MiB of %u file(s) read ahead (%zu range(s); the first "
		  "%u KiB of the process's %u file(s) before them; %s) in %" PRIu64 " ms",
		  f.bytes >> 20, f.files, f.n - heads, PREFETCH_HEAD >> 10, heads, how,
		  phos_now_ms() - t0);
	_exit(0);
}

void prefetch_start(int dir_fd, const char *state_dir, uid_t uid, gid_t gid)
{
	char path[PATH_MAX];
	pid_t c;
	int fd, cfd = -1;

	if (phos_env_on("PHOS_NO_PREFETCH"))
		return;
	fd = openat(dir_fd, PHOS_PREFETCH_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (state_dir && phos_snprintf(path, sizeof(path), "%s/" PHOS_PREFETCH_CRIU,
				       state_dir) == 0)
		cfd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && cfd < 0)
		return;
	c = fork();
	if (c == 0) {
		/* detached: nobody waits for it, nothing is left to reap */
		if (fork() != 0)
			_exit(0);
		prefetch_run(cfd >= 0 ? fdopen(cfd, "r") : NULL, fd >= 0 ? fdopen(fd, "r") : NULL,
			     uid, gid);
	}
	phos_closep(&fd);
	phos_closep(&cfd);
	if (c > 0)
		while (waitpid(c, NULL, 0) < 0 && errno == EINTR)
			;
}
