/*
 * Crash safety of the image store (common/image.c): a writer killed at
 * any point leaves every published generation readable and its partial
 * one ignored, and the next writer carries on.
 *
 * progs/image_writer writes generations of one task in a loop (3 to 6
 * files of 0 bytes to 4 MiB in three directory levels, contents derived
 * from the generation and the file's index; then the chunks of one
 * buffer of GPU memory into the task's chunk store, some new and some
 * shared with the generation before, and their index file), publishes
 * each and runs retention (keep 3, which sweeps the chunks no generation
 * names).  This test kills it, on one store throughout:
 *
 *   test_kill_each_call  from one state (3 generations, restored before
 *                        each run), a run of two generations killed
 *                        before its store-changing system call 1, 2, ...
 *                        (image_writer -k) until a run ends by itself:
 *                        every point where begin, the files, the chunks,
 *                        publish or retention can be cut, each once;
 *   test_kill_random     the endless writer, SIGKILLed from here after a
 *                        seeded random delay (0 included) once it has
 *                        opened the store, PHOS_CRASH_KILLS times
 *                        (default 200), on the store the sweep left; then
 *                        a run that ends by itself leaves exactly 3.
 *
 * After every kill (check_store):
 *   - every generation phos_image_list_generations() lists passes
 *     phos_image_verify() in full mode, and its files are exactly those
 *     the writer meant, byte for byte (check_contents; one compared at an
 *     earlier check is not compared again while its manifest is the same,
 *     since the full check has just matched its files to their hashes);
 *   - phos_image_select() picks the newest; phos_image_list_tasks()
 *     counts the same;
 *   - the task directory holds only those generations, at most one
 *     .partial-* (this host, the dead writer's pid, a number above every
 *     published one) and at most one .removing-*, each only in a phase of
 *     the writer that can leave it (the writer reports each phase through
 *     a pipe before starting it);
 *   - phos_image_cleanup() removes exactly those leftovers;
 *   - generation numbers only grow: a new generation is above every
 *     earlier one, the newest published one is never lost, and retention
 *     removed only generations with at least 3 newer ones;
 *   - chunks (check_gen_chunks, scan_chunks): the full check above
 *     includes that every chunk a generation's index names exists; each
 *     is read with phos_chunk_get() (checked against its name) and holds
 *     the bytes the writer meant for that piece of that generation, the
 *     compressible one as <sha256>.zst; every file in chunks/ under a
 *     chunk's name is a chunk some generation of the writer meant, with
 *     those bytes (never a partial one); the others are only .lock and
 *     the dead writer's .tmp-* (from a kill while it wrote chunks, at most
 *     one); chunks no generation names only after a kill in the chunks,
 *     publish or retention phases; none of either after a run that ended
 *     by itself, nor after leftovers were swept;
 *   - then (every check of the exhaustive runs, every second random kill,
 *     so that writers also meet a dead one's chunks and temporaries) a
 *     retention from here that removes no generation sweeps the chunk
 *     store: it then holds exactly the chunks the generations name, and
 *     .lock.  Leftovers of a check without the sweep stay allowed at the
 *     next one.
 * The writer itself stops with status 4 (a failure here) when a chunk's
 * temporary is renamed before its bytes were synced or an index is
 * created before the chunk directory was synced: the order no kill shows.
 * What is asserted does not depend on timing; where the random kills
 * land is only printed.  PHOS_CRASH_SEED changes the seed of the sizes and
 * delays (failures name the writer run, its seed and last phase).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "chunks.h"
#include "image.h"
#include "log.h"
#include "manifest.h"

#include "../progs/image_content.h"

#define KEEP		3		/* image_writer's retention */
#define SWEEP_MAX	5000		/* a run of 1 or 2 generations makes far fewer calls */
#define READY_MS	30000		/* for the writer to open the store */
#define DELAY_MAX_US	50000		/* about two generations of the writer */
#define CHUNK		(1u << 20)

/* The phases image_writer reports (its -s letters, in this order). */
enum phase { PH_START, PH_BEGIN, PH_WRITE, PH_CHUNKS, PH_PUBLISH, PH_RETAIN, PH_DONE, N_PHASES };
static const char phase_letters[] = "SBWCPRD";
static const char *const phase_names[N_PHASES] = {
	"before the first begin", "in begin", "writing files", "writing chunks", "in publish",
	"in retention", "after a generation",
};

/* A chunk the writer makes: its name, and which piece of which generation
 * first had its bytes. */
struct known {
	unsigned char sha[32];
	uint64_t gen;
	unsigned piece;
};

/* A name in chunks/ (a chunk or a temporary). */
typedef char entry_name[PHOS_CHUNK_HEX + 64];

struct crash {
	char tmp[64], root[128], keyfile[128], writer[PATH_MAX], taskpath[PATH_MAX];
	struct phos_key key;
	struct phos_store s;
	struct phos_image_id id;
	uint64_t seed;			/* image_writer's SEED */
	uint64_t rng;			/* delays: a counter for image_mix64() */
	uint64_t *gens;			/* published at the last check, ascending */
	uint64_t *prints;		/* their manifests' fingerprints */
	size_t n_gens;
	uint64_t *next_gens, *next_prints;	/* being checked (freed by teardown) */
	uint64_t newest;		/* newest generation at the last check */
	unsigned char *want, *got;	/* CHUNK each */
	struct known *known;		/* every chunk of generations 1..known_upto */
	size_t n_known, cap_known;
	uint64_t known_upto;
	unsigned char (*refs)[32];	/* the chunks the listed generations name */
	size_t n_refs, cap_refs;
	entry_name *carried;		/* leftovers in chunks/ the last check allowed */
	size_t n_carried, cap_carried;
	entry_name *next_carried;	/* ... being found */
	size_t n_next_carried, cap_next_carried;
	/* what happened, for the summary */
	unsigned kills[N_PHASES], publish_before_rename, publish_after_rename;
	unsigned partials, removings, published, removed, files, verified;
	unsigned chunks_read, tmp_left, unref_left, swept;
	uint64_t bytes;
	char what[160];			/* the writer run the store is checked after */
};

/* fail_msg() after a TAP comment saying which writer run left the store so. */
#define store_fail(c, ...)						\
	do {								\
		print_message("# after %s\n", (c)->what);		\
		fail_msg(__VA_ARGS__);					\
	} while (0)

/* ---- the writer's contract (see progs/image_writer.c) ------------------- */

/* Parse "fK-SIZE.img" strictly (the writer's spelling only). */
static int parse_file_name(const char *base, unsigned *k, uint64_t *size)
{
	char canon[64];
	int end = -1;

	if (sscanf(base, "f%u-%" SCNu64 ".img%n", k, size, &end) != 2 || end < 0 ||
	    base[end] != '\0')
		return -1;
	snprintf(canon, sizeof(canon), "f%u-%" PRIu64 ".img", *k, *size);
	return strcmp(canon, base) ? -1 : 0;
}

/*
 * The files of generation gen (manifest m, verified) are those the writer
 * meant: "test.files" of them, each name once, in its directory, with its
 * size and bytes.
 */
static void check_contents(struct crash *c, uint64_t gen, const struct phos_manifest *m)
{
	static const char *const dirs[] = { "", "sub", "sub/deep" };
	const char *nv = phos_manifest_get_extra(m, "test.files");
	char gpath[PATH_MAX];
	bool seen[64] = { false }, idx = false;
	unsigned n = 0, i;

	if (!nv || sscanf(nv, "%u", &n) != 1 || n < 3 || n > 6)
		store_fail(c, "generation %" PRIu64 ": test.files is %s", gen,
			   nv ? nv : "missing");
	if (m->n_files != n + 1)
		store_fail(c, "generation %" PRIu64 ": %zu files in the manifest, the writer "
			   "made %u and an index", gen, m->n_files, n);
	assert_int_equal(phos_image_gen_path(&c->s, &c->id, gen, gpath, sizeof(gpath), NULL), 0);
	for (i = 0; i < m->n_files; i++) {
		const struct phos_manifest_file *f = &m->files[i];
		const char *slash = strrchr(f->name, '/'), *base = slash ? slash + 1 : f->name;
		char path[PATH_MAX], dir[PHOS_REL_MAX];
		uint64_t size, off;
		struct stat st;
		unsigned k;
		int fd;

		if (!strcmp(f->name, IMAGE_GPU_IDX) && !idx) {
			idx = true;	/* its chunks: check_gen_chunks() */
			continue;
		}
		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - f->name) : 0, f->name);
		if (parse_file_name(base, &k, &size) < 0 || k >= n || seen[k] ||
		    strcmp(dir, dirs[k % 3]) || size != f->size)
			store_fail(c, "generation %" PRIu64 ": file %s (%" PRIu64 " bytes) is not "
				   "one the writer made", gen, f->name, f->size);
		seen[k] = true;
		assert_true((size_t)snprintf(path, sizeof(path), "%s/%s", gpath, f->name) <
			    sizeof(path));
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			store_fail(c, "%s: %s", path, strerror(errno));
		assert_int_equal(fstat(fd, &st), 0);
		assert_int_equal((uint64_t)st.st_size, size);
		for (off = 0; off < size; off += CHUNK) {
			size_t len = size - off < CHUNK ? (size_t)(size - off) : CHUNK;

			image_content(c->want, len, gen, k, off);
			if (pread(fd, c->got, len, (off_t)off) != (ssize_t)len ||
			    memcmp(c->want, c->got, len))
				store_fail(c, "%s: bytes %" PRIu64 "..%" PRIu64 " are not what the "
					   "writer wrote", path, off, off + len - 1);
		}
		close(fd);
		c->files++;
		c->bytes += size;
	}
	if (!idx)
		store_fail(c, "generation %" PRIu64 " has no %s", gen, IMAGE_GPU_IDX);
}

/* ---- chunks -------------------------------------------------------------- */

/* SHA-256 of len bytes at buf, as the chunk store names them. */
static void sha_of(const void *buf, size_t len, unsigned char sha[32])
{
	uint64_t size = 0;
	int fd = memfd_create("chunk", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(phos_sha256_fd(fd, sha, &size), 0);
	assert_int_equal(size, len);
	close(fd);
}

static const struct known *known_find(const struct crash *c, const unsigned char sha[32])
{
	size_t i;

	for (i = 0; i < c->n_known; i++)
		if (!memcmp(c->known[i].sha, sha, 32))
			return &c->known[i];
	return NULL;
}

/* Learn the chunks of generations up to upto. */
static void known_extend(struct crash *c, uint64_t upto)
{
	unsigned char sha[32];
	unsigned i;

	for (; c->known_upto < upto; c->known_upto++) {
		uint64_t gen = c->known_upto + 1;

		for (i = 0; i < IMAGE_GPU_PIECES; i++) {
			image_gpu_piece(c->want, gen, i);
			sha_of(c->want, image_gpu_len(i), sha);
			if (known_find(c, sha))
				continue;
			if (c->n_known == c->cap_known) {
				c->cap_known = c->cap_known ? 2 * c->cap_known : 64;
				c->known = realloc(c->known, c->cap_known * sizeof(*c->known));
				assert_non_null(c->known);
			}
			memcpy(c->known[c->n_known].sha, sha, 32);
			c->known[c->n_known].gen = gen;
			c->known[c->n_known++].piece = i;
		}
	}
}

static bool is_ref(const struct crash *c, const unsigned char sha[32])
{
	size_t i;

	for (i = 0; i < c->n_refs; i++)
		if (!memcmp(c->refs[i], sha, 32))
			return true;
	return false;
}

static void add_ref(struct crash *c, const unsigned char sha[32])
{
	if (is_ref(c, sha))
		return;
	if (c->n_refs == c->cap_refs) {
		c->cap_refs = c->cap_refs ? 2 * c->cap_refs : 16;
		c->refs = realloc(c->refs, c->cap_refs * sizeof(*c->refs));
		assert_non_null(c->refs);
	}
	memcpy(c->refs[c->n_refs++], sha, 32);
}

/* The task's chunk directory, or -1 when there is none yet. */
static int open_chunks(const struct crash *c)
{
	char path[PATH_MAX];
	int fd;

	assert_true((size_t)snprintf(path, sizeof(path), "%s/" PHOS_CHUNKS_DIR, c->taskpath) <
		    sizeof(path));
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		assert_int_equal(errno, ENOENT);
	return fd;
}

/* Read the chunk sha (len bytes) with phos_chunk_get() and compare it with
 * piece of generation gen; where says what names it, for messages. */
static void check_chunk(struct crash *c, int cfd, const unsigned char sha[32], size_t len,
			uint64_t gen, unsigned piece, const char *where)
{
	char err[256], hex[PHOS_CHUNK_HEX + 1];

	phos_chunk_hex(sha, hex);
	if (phos_chunk_get(cfd, sha, c->got, len, false, err, sizeof(err)) < 0)
		store_fail(c, "%s: chunk %s cannot be read: %s", where, hex, err);
	image_gpu_piece(c->want, gen, piece);
	if (memcmp(c->want, c->got, len))
		store_fail(c, "%s: chunk %s does not hold piece %u of generation %" PRIu64, where,
			   hex, piece, gen);
	c->chunks_read++;
}

/*
 * The chunks generation gen's index names (cfd: the chunk directory, -1
 * if missing) are there with the bytes the writer meant; add them to the
 * chunks in use.
 */
static void check_gen_chunks(struct crash *c, uint64_t gen, int cfd)
{
	char gpath[PATH_MAX], err[256], where[64];
	struct phos_idx x;
	struct stat st;
	unsigned i;
	int gfd;

	snprintf(where, sizeof(where), "generation %" PRIu64 "/%s", gen, IMAGE_GPU_IDX);
	if (cfd < 0)
		store_fail(c, "%s: there is no chunk directory", where);
	assert_int_equal(phos_image_gen_path(&c->s, &c->id, gen, gpath, sizeof(gpath), NULL), 0);
	gfd = open(gpath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	assert_true(gfd >= 0);
	if (phos_idx_read(&x, gfd, IMAGE_GPU_IDX, err, sizeof(err)) < 0)
		store_fail(c, "%s: %s", where, err);
	close(gfd);
	if (x.size != IMAGE_GPU_SIZE || x.chunk != IMAGE_GPU_CHUNK || x.n != IMAGE_GPU_PIECES)
		store_fail(c, "%s: %" PRIu64 " bytes in %" PRIu64 " pieces of %" PRIu64 ", not the "
			   "writer's", where, x.size, x.n, x.chunk);
	for (i = 0; i < IMAGE_GPU_PIECES; i++) {
		char hex[PHOS_CHUNK_HEX + sizeof(PHOS_CHUNK_ZST)];
		bool zst = image_gpu_slot(i) == IMAGE_GPU_ZSLOT;

		assert_int_equal(phos_idx_len(&x, i), image_gpu_len(i));
		check_chunk(c, cfd, x.sha[i], image_gpu_len(i), gen, i, where);
		/* stored in the form put_z chose: compressed for that piece only */
		phos_chunk_hex(x.sha[i], hex);
		if (zst)
			strcat(hex, PHOS_CHUNK_ZST);
		if (fstatat(cfd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			store_fail(c, "%s: piece %u is not stored as %s", where, i, hex);
		add_ref(c, x.sha[i]);
	}
	phos_idx_free(&x);
}

static bool was_carried(const struct crash *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->n_carried; i++)
		if (!strcmp(c->carried[i], name))
			return true;
	return false;
}

static void carry(struct crash *c, const char *name)
{
	if (c->n_next_carried == c->cap_next_carried) {
		c->cap_next_carried = c->cap_next_carried ? 2 * c->cap_next_carried : 16;
		c->next_carried = realloc(c->next_carried,
					  c->cap_next_carried * sizeof(*c->next_carried));
		assert_non_null(c->next_carried);
	}
	snprintf(c->next_carried[c->n_next_carried++], sizeof(entry_name), "%s", name);
}

/*
 * Everything in the chunk directory (cfd; -1: none) after the writer pid
 * died in phase or finished (done), or (swept) after a retention with no
 * writer: .lock, chunks of the writer's with their bytes, and only the
 * leftovers that may be there (see the top).  The leftovers go to
 * next_carried.  Returns how many there were.
 */
static unsigned scan_chunks(struct crash *c, int cfd, pid_t pid, int phase, bool done,
			    bool swept)
{
	bool old = !done && !swept;	/* an earlier check's leftovers may stay */
	bool may_tmp = !done && !swept && phase == PH_CHUNKS;
	bool may_unref = !done && !swept &&
			 (phase == PH_CHUNKS || phase == PH_PUBLISH || phase == PH_RETAIN);
	unsigned refs = 0, tmps = 0, left = 0;
	struct dirent *de;
	DIR *d;

	c->n_next_carried = 0;
	if (cfd < 0) {
		if (c->n_refs)
			store_fail(c, "the chunk directory is gone");
		return 0;
	}
	d = fdopendir(dup(cfd));
	assert_non_null(d);
	rewinddir(d);	/* the offset is cfd's: from the start again */
	while ((de = readdir(d))) {
		const char *name = de->d_name;
		size_t len = strlen(name);
		char hex[PHOS_CHUNK_HEX + 1], other[PHOS_CHUNK_HEX + sizeof(PHOS_CHUNK_ZST)];
		unsigned char sha[32];
		const struct known *k;
		struct stat st;
		bool zst;

		if (!strcmp(name, ".") || !strcmp(name, ".."))
			continue;
		if (!strcmp(name, PHOS_CHUNKS_LOCK)) {
			assert_int_equal(fstatat(cfd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
			if (!S_ISREG(st.st_mode))
				store_fail(c, "chunks/%s is not a regular file", name);
			continue;
		}
		if (!strncmp(name, PHOS_CHUNK_TMP_PREFIX, strlen(PHOS_CHUNK_TMP_PREFIX))) {
			const char *p = name + strlen(PHOS_CHUNK_TMP_PREFIX), *rest;
			int tpid = -1, end = -1;
			long tid;

			/* .tmp-<sha256>[.zst]-<pid>-<tid> of a chunk of ours */
			snprintf(hex, sizeof(hex), "%.*s", PHOS_CHUNK_HEX, p);
			rest = p + strlen(hex);
			if (!strncmp(rest, PHOS_CHUNK_ZST, strlen(PHOS_CHUNK_ZST)))
				rest += strlen(PHOS_CHUNK_ZST);
			if (phos_chunk_unhex(hex, sha) < 0 || !known_find(c, sha) ||
			    sscanf(rest, "-%d-%ld%n", &tpid, &tid, &end) != 2 || rest[end])
				store_fail(c, "chunks/%s is not a temporary of the writer's chunks",
					   name);
			if (!(old && was_carried(c, name)) && (!may_tmp || tpid != (int)pid || tmps++))
				store_fail(c, "chunks/%s: a temporary %s", name, swept ?
					   "that retention did not remove" : done ?
					   "after a run that ended by itself" :
					   "the dead writer cannot have left");
			carry(c, name);
			c->tmp_left++;
			left++;
			continue;
		}
		/* <sha256> or <sha256>.zst, in one form only */
		snprintf(hex, sizeof(hex), "%.*s", PHOS_CHUNK_HEX, name);
		zst = len == PHOS_CHUNK_HEX + strlen(PHOS_CHUNK_ZST) &&
		      !strcmp(name + PHOS_CHUNK_HEX, PHOS_CHUNK_ZST);
		if ((len != PHOS_CHUNK_HEX && !zst) || phos_chunk_unhex(hex, sha) < 0)
			store_fail(c, "unexpected entry chunks/%s", name);
		if (!(k = known_find(c, sha)))
			store_fail(c, "chunks/%s is not a chunk of any generation the writer "
				   "made (up to %" PRIu64 ")", name, c->known_upto);
		snprintf(other, sizeof(other), "%s%s", hex, zst ? "" : PHOS_CHUNK_ZST);
		if (fstatat(cfd, other, &st, AT_SYMLINK_NOFOLLOW) == 0)
			store_fail(c, "chunks/%s and chunks/%s both exist", name, other);
		check_chunk(c, cfd, sha, image_gpu_len(k->piece), k->gen, k->piece, "chunks/");
		if (is_ref(c, sha)) {
			refs++;
			continue;
		}
		if (!(old && was_carried(c, name)) && !may_unref)
			store_fail(c, "chunks/%s: no generation names it, and the writer %s", name,
				   swept ? "is gone and the store was swept" : done ?
				   "ended by itself" : "was not killed where it can leave one");
		carry(c, name);
		c->unref_left++;
		left++;
	}
	closedir(d);
	if (refs != c->n_refs)
		store_fail(c, "%zu chunks are named by the generations, %u of them are there",
			   c->n_refs, refs);
	return left;
}

/* Make the leftovers found the ones allowed at the next check. */
static void carry_on(struct crash *c)
{
	entry_name *t = c->carried;
	size_t cap = c->cap_carried;

	c->carried = c->next_carried;
	c->n_carried = c->n_next_carried;
	c->cap_carried = c->cap_next_carried;
	c->next_carried = t;
	c->n_next_carried = 0;
	c->cap_next_carried = cap;
}

/* A digest of what a manifest says of the files (names, sizes, SHA-256). */
static uint64_t fingerprint(const struct phos_manifest *m)
{
	uint64_t h = image_mix64(m->n_files);
	size_t i, b;

	for (i = 0; i < m->n_files; i++) {
		const struct phos_manifest_file *f = &m->files[i];
		const char *p;

		for (p = f->name; *p; p++)
			h = image_mix64(h ^ (unsigned char)*p);
		h = image_mix64(h ^ f->size);
		for (b = 0; b < PHOS_SHA256_LEN; b++)
			h = image_mix64(h ^ f->sha256[b]);
	}
	return h;
}

/* ---- the store after a kill --------------------------------------------- */

static bool listed(const uint64_t *gens, size_t n, uint64_t gen)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (gens[i] == gen)
			return true;
	return false;
}

/* Hidden entries of the task directory; everything else must be a listed
 * generation.  *partial_gen gets the partial's generation. */
static void scan_task(struct crash *c, const uint64_t *gens, size_t n, pid_t writer,
		      unsigned *partials, unsigned *removings, uint64_t *partial_gen)
{
	struct dirent *de;
	DIR *d;

	*partials = *removings = 0;
	d = opendir(c->taskpath);
	if (!d) {
		assert_int_equal(errno, ENOENT);	/* nothing written yet */
		assert_int_equal(n, 0);
		return;
	}
	while ((de = readdir(d))) {
		char want[32 + PHOS_HOST_MAX + 16], g[24];
		uint64_t gen;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, PHOS_CHUNKS_DIR))	/* scan_chunks() */
			continue;
		if (phos_image_gen_parse(de->d_name, &gen) == 0) {
			if (!listed(gens, n, gen))
				store_fail(c, "%s/%s is not listed as a generation", c->taskpath,
					   de->d_name);
			continue;
		}
		if (!strncmp(de->d_name, ".removing-", 10)) {
			(*removings)++;
			continue;
		}
		/* ".partial-<gen>-<host>-<pid>": ours, numbered above the published ones */
		if (strncmp(de->d_name, ".partial-", 9) ||
		    sscanf(de->d_name + 9, "%23[0-9]", g) != 1 || phos_image_gen_parse(g, &gen) < 0)
			store_fail(c, "unexpected entry %s/%s", c->taskpath, de->d_name);
		snprintf(want, sizeof(want), ".partial-%s-%s-%d", g, c->s.host, (int)writer);
		if (strcmp(de->d_name, want) || (n && gen <= gens[n - 1]))
			store_fail(c, "%s/%s: not the partial the writer (pid %d) could leave after "
				   "generation %" PRIu64, c->taskpath, de->d_name, (int)writer,
				   n ? gens[n - 1] : 0);
		*partial_gen = gen;
		(*partials)++;
	}
	closedir(d);
}

/* The task listing (phosctl list) counts the same generations (no task
 * before its directories are all made). */
static void check_task_list(struct crash *c, const uint64_t *gens, size_t n)
{
	struct phos_image_task_info *tasks = NULL;
	struct phos_err e = { "" };
	size_t nt = 0;

	if (phos_image_list_tasks(&c->s, NULL, NULL, &tasks, &nt, &e) < 0)
		store_fail(c, "list tasks: %s", e.msg);
	if (nt == 0) {
		assert_int_equal(n, 0);
		return;
	}
	assert_int_equal(nt, 1);
	assert_int_equal(tasks[0].n_generations, n);
	assert_int_equal(tasks[0].newest, n ? gens[n - 1] : 0);
	free(tasks);
}

/*
 * Check the store after the writer (pid) died in phase (index in
 * phase_letters, or -1 if it never said a word) or finished (done);
 * what says which run that was, for messages.  sweep: end with a
 * retention from here, after which the chunk store holds no leftovers.
 */
static void check_store(struct crash *c, const char *what, pid_t pid, int phase, bool done,
			bool sweep)
{
	struct phos_image_gen_info *info = NULL;
	struct phos_err e = { "" };
	unsigned partials, removings, again_p, again_r, left;
	uint64_t *gens, sel = 0, partial_gen = 0;
	size_t n = 0, i;
	int rc, cfd;

	snprintf(c->what, sizeof(c->what), "%s (writer pid %d, last phase: %s)", what, (int)pid,
		 phase < 0 ? "none" : phase_names[phase]);
	if (phos_image_list_generations(&c->s, &c->id, PHOS_UID_ANY, PHOS_VERIFY_QUICK, &info, &n,
					&e) < 0)
		store_fail(c, "list: %s", e.msg);
	free(c->next_gens);	/* left by a failed check */
	free(c->next_prints);
	c->next_gens = gens = calloc(n ? n : 1, sizeof(*gens));
	c->next_prints = calloc(n ? n : 1, sizeof(*c->next_prints));
	assert_non_null(gens);
	assert_non_null(c->next_prints);
	for (i = 0; i < n; i++) {
		gens[i] = info[i].generation;
		if (info[i].err)
			store_fail(c, "generation %" PRIu64 " listed as bad: %s", gens[i],
				   info[i].reason);
		if (i)
			assert_true(gens[i] > gens[i - 1]);
	}
	free(info);

	/* Every one passes the full check and holds what the writer wrote.  The
	 * bytes of one checked before are known good when its manifest is the
	 * same: the full check just matched them against its hashes.  Not so
	 * its chunks, which are outside: all are read every time. */
	cfd = open_chunks(c);
	c->n_refs = 0;
	for (i = 0; i < n; i++) {
		struct phos_manifest m;
		size_t j;

		phos_manifest_init(&m);
		if (phos_image_verify(&c->s, &c->id, gens[i], PHOS_UID_ANY, 0, &m, &e) < 0)
			store_fail(c, "generation %" PRIu64 " fails the full check: %s", gens[i],
				   e.msg);
		c->next_prints[i] = fingerprint(&m);
		for (j = 0; j < c->n_gens && c->gens[j] != gens[i]; j++)
			;
		if (j == c->n_gens)
			check_contents(c, gens[i], &m);
		else if (c->prints[j] != c->next_prints[i])
			store_fail(c, "the manifest of generation %" PRIu64 " changed", gens[i]);
		phos_manifest_free(&m);
		known_extend(c, gens[i]);
		check_gen_chunks(c, gens[i], cfd);
		c->verified++;
	}

	/* Numbers only grow, and retention leaves KEEP newer ones. */
	if (c->newest && (!n || gens[n - 1] < c->newest))
		store_fail(c, "the newest generation %" PRIu64 " was lost", c->newest);
	for (i = 0; i < c->n_gens; i++) {
		size_t newer = 0, j;

		if (listed(gens, n, c->gens[i]))
			continue;
		for (j = 0; j < n; j++)
			newer += gens[j] > c->gens[i];
		if (newer < KEEP)
			store_fail(c, "generation %" PRIu64 " was removed with only %zu newer ones",
				   c->gens[i], newer);
		c->removed++;
	}
	for (i = 0; i < n; i++) {
		if (listed(c->gens, c->n_gens, gens[i]))
			continue;
		if (gens[i] <= c->newest)
			store_fail(c, "generation %" PRIu64 " appeared after %" PRIu64 " was "
				   "published", gens[i], c->newest);
		c->published++;
	}

	/* A restore picks the newest (quick: all were fully checked above). */
	rc = phos_image_select(&c->s, &c->id, PHOS_UID_ANY, PHOS_VERIFY_QUICK, &sel, NULL, &e);
	if (n) {
		if (rc < 0)
			store_fail(c, "select: %s", e.msg);
		assert_int_equal(sel, gens[n - 1]);
	} else {
		assert_int_equal(rc, -1);
		assert_int_equal(errno, ENOENT);
	}

	check_task_list(c, gens, n);

	/* Leftovers: only what the phase can leave, and cleanup takes them. */
	scan_task(c, gens, n, pid, &partials, &removings, &partial_gen);
	if (partials > 1 || removings > 1)
		store_fail(c, "%u partial and %u removal directories after one writer", partials,
			   removings);
	if (done && (partials || removings))
		store_fail(c, "the writer finished but left %u partial and %u removal directories",
			   partials, removings);
	if (phase >= 0 && !done) {
		/* a partial only from begin to the rename; a removal leftover only
		 * from retention */
		if (partials && phase != PH_BEGIN && phase != PH_WRITE && phase != PH_CHUNKS &&
		    phase != PH_PUBLISH)
			store_fail(c, "a partial generation %" PRIu64 " left by a kill %s",
				   partial_gen, phase_names[phase]);
		if (!partials && (phase == PH_WRITE || phase == PH_CHUNKS))
			store_fail(c, "no partial generation left by a kill %s", phase_names[phase]);
		if (removings && phase != PH_RETAIN)
			store_fail(c, "a removal leftover after a kill %s", phase_names[phase]);
		if (phase == PH_PUBLISH) {
			/* cut after the rename: the generation is there */
			if (!partials && (!n || gens[n - 1] <= c->newest))
				store_fail(c, "killed in publish without a partial, but nothing "
					   "new published");
			if (partials)
				c->publish_before_rename++;
			else
				c->publish_after_rename++;
		}
	}
	c->partials += partials;
	c->removings += removings;

	/* The chunk store: only the leftovers the phase can leave. */
	known_extend(c, partials && partial_gen > c->known_upto ? partial_gen : c->known_upto);
	left = scan_chunks(c, cfd, pid, phase, done, false);

	rc = phos_image_cleanup(&c->s, NULL, 0, &e);
	if (rc < 0)
		store_fail(c, "cleanup: %s", e.msg);
	if ((unsigned)rc != partials + removings)
		store_fail(c, "cleanup removed %d directories, %u were left by the dead writer", rc,
			   partials + removings);
	scan_task(c, gens, n, pid, &again_p, &again_r, &partial_gen);
	assert_int_equal(again_p + again_r, 0);

	/* Retention with no writer (removing no generation) sweeps exactly the
	 * chunks no generation names. */
	if (sweep) {
		rc = phos_image_retain(&c->s, &c->id, UINT_MAX, PHOS_VERIFY_QUICK, &e);
		if (rc != 0)
			store_fail(c, "retention keeping all: %d (%s)", rc, rc < 0 ? e.msg : "removed");
		if (cfd < 0)
			cfd = open_chunks(c);
		if (scan_chunks(c, cfd, pid, phase, done, true) != 0)
			store_fail(c, "leftovers in the chunk store after retention");
		c->swept += left;
	}
	carry_on(c);
	if (cfd >= 0)
		close(cfd);

	free(c->gens);
	free(c->prints);
	c->gens = gens;
	c->prints = c->next_prints;
	c->next_gens = c->next_prints = NULL;
	c->n_gens = n;
	if (n)
		c->newest = gens[n - 1];
}

/* ---- running the writer ------------------------------------------------- */

/* Read the phases to EOF (the writer is gone); the last one as an index
 * in phase_letters, -1 when there was none. */
static int last_phase(int fd, char last)
{
	char buf[256];
	ssize_t r;

	while ((r = read(fd, buf, sizeof(buf))) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		assert_true(r > 0);
		last = buf[r - 1];
	}
	close(fd);
	if (!last)
		return -1;
	assert_non_null(strchr(phase_letters, last));
	return (int)(strchr(phase_letters, last) - phase_letters);
}

/*
 * Run image_writer with opts (NULL-terminated) and SEED seed.  With
 * delay_us >= 0 we SIGKILL it that long after it has opened the store;
 * otherwise it dies (-k) or ends by itself.  Returns its wait status;
 * *pid and *phase (its last phase, -1 if none) for check_store().
 */
static int run_writer(struct crash *c, const char *const *opts, uint64_t seed, long delay_us,
		      pid_t *pid, int *phase)
{
	char fdarg[16], seedarg[32], first = 0;
	const char *argv[16];
	size_t a = 0;
	int p[2], err, wstatus;

	/* The write end goes to the writer, and only to it: one runs at a time. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fcntl(p[1], F_SETFD, 0), 0);
	snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
	snprintf(seedarg, sizeof(seedarg), "%" PRIu64, seed);
	argv[a++] = c->writer;
	argv[a++] = "-s";
	argv[a++] = fdarg;
	while (*opts && a < 12)
		argv[a++] = *opts++;
	argv[a++] = c->root;
	argv[a++] = c->keyfile;
	argv[a++] = seedarg;
	argv[a] = NULL;
	/* posix_spawn, not fork: no copy of our (sanitizer-sized) address space */
	err = posix_spawn(pid, c->writer, NULL, NULL, (char *const *)argv, environ);
	close(p[1]);
	if (err)
		fail_msg("%s: %s", c->writer, strerror(err));
	if (delay_us >= 0) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };

		/* before the store is open nothing can happen to it */
		if (poll(&pfd, 1, READY_MS) != 1 || read(p[0], &first, 1) != 1 || first != 'S') {
			kill(*pid, SIGKILL);
			fail_msg("the writer did not start");
		}
		if (delay_us)
			usleep((useconds_t)delay_us);
		assert_int_equal(kill(*pid, SIGKILL), 0);
	}
	*phase = last_phase(p[0], first);
	while (waitpid(*pid, &wstatus, 0) < 0)
		assert_int_equal(errno, EINTR);
	return wstatus;
}

/* The writer's end: SIGKILL (want_kill) or a clean exit. */
static void expect_end(int wstatus, bool want_kill, const char *what)
{
	if (want_kill && WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
		return;
	if (!want_kill && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)
		return;
	if (WIFEXITED(wstatus))
		fail_msg("%s: the writer exited with %d (its stderr is above)", what,
			 WEXITSTATUS(wstatus));
	fail_msg("%s: the writer died of signal %d", what, WTERMSIG(wstatus));
}

/* Make gens/prints (n of them, newest newest) what check_store() expects. */
static void remember(struct crash *c, const uint64_t *gens, const uint64_t *prints, size_t n,
		     uint64_t newest)
{
	free(c->gens);
	free(c->prints);
	c->gens = calloc(n ? n : 1, sizeof(*c->gens));
	c->prints = calloc(n ? n : 1, sizeof(*c->prints));
	assert_non_null(c->gens);
	assert_non_null(c->prints);
	if (n) {
		memcpy(c->gens, gens, n * sizeof(*gens));
		memcpy(c->prints, prints, n * sizeof(*prints));
	}
	c->n_gens = n;
	c->newest = newest;
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

static void summary(struct crash *c, const char *what, unsigned runs)
{
	size_t i;

	print_message("# %s: %u writer runs; kills ", what, runs);
	for (i = 0; i < N_PHASES; i++)
		print_message("%s%s %u", i ? ", " : "", phase_names[i], c->kills[i]);
	print_message("\n# publish cut before the rename %u times, after it %u times; "
		      "cleanup removed %u partial and %u removal directories\n",
		      c->publish_before_rename, c->publish_after_rename, c->partials, c->removings);
	print_message("# store: %u new generations seen, %u of them removed by retention, newest %"
		      PRIu64 "; %u full checks, %u files (%.1f MiB) compared byte by byte\n",
		      c->published, c->removed, c->newest, c->verified, c->files,
		      (double)c->bytes / (1 << 20));
	print_message("# chunks: %u read and compared; leftovers after kills: %u temporaries, %u "
		      "chunks no generation named; %u swept by retention from here\n",
		      c->chunks_read, c->tmp_left, c->unref_left, c->swept);
	memset(c->kills, 0, sizeof(c->kills));
	c->publish_before_rename = c->publish_after_rename = 0;
	c->partials = c->removings = c->published = c->removed = c->files = c->verified = 0;
	c->chunks_read = c->tmp_left = c->unref_left = c->swept = 0;
	c->bytes = 0;
}

/* ---- tests -------------------------------------------------------------- */

/*
 * Run image_writer -n<gens> from the store as it is now, killed before its
 * call 1, 2, ... in turn until a run ends by itself.  The store (the
 * user's directory) is restored before each run and the seed is the same,
 * so every run makes the same calls: each point is hit once.  Returns the
 * number of calls; the store is left as the complete run made it.
 */
static unsigned long sweep(struct crash *c, unsigned gens)
{
	char user[PATH_MAX], snap[PATH_MAX], narg[16];
	uint64_t *base_gens = c->gens, *base_prints = c->prints, base_newest = c->newest;
	size_t base_n = c->n_gens;
	struct stat st;
	bool empty;
	unsigned long k;

	snprintf(user, sizeof(user), "%s/%s", c->root, c->id.user);
	snprintf(snap, sizeof(snap), "%s/snapshot", c->tmp);
	snprintf(narg, sizeof(narg), "-n%u", gens);
	empty = stat(user, &st) < 0;
	sh("rm -rf '%s'", snap);
	if (!empty)
		sh("cp -a '%s' '%s'", user, snap);
	c->gens = c->prints = NULL;
	for (k = 1; k <= SWEEP_MAX; k++) {
		char karg[32], what[96];
		const char *opts[] = { narg, "-k", karg, NULL };
		int wstatus, phase;
		pid_t pid;

		if (k > 1 && empty)
			sh("rm -rf '%s'", user);
		else if (k > 1)		/* one shell for both */
			sh("rm -rf '%s' && cp -a '%s' '%s'", user, snap, user);
		remember(c, base_gens, base_prints, base_n, base_newest);
		snprintf(karg, sizeof(karg), "%lu", k);
		snprintf(what, sizeof(what), "image_writer %s -k %lu ... %" PRIu64, narg, k, c->seed);
		wstatus = run_writer(c, opts, c->seed, -1, &pid, &phase);
		if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
			check_store(c, what, pid, phase, true, true);
			break;
		}
		expect_end(wstatus, true, what);
		assert_true(phase >= 0);
		c->kills[phase]++;
		check_store(c, what, pid, phase, false, true);
	}
	free(base_gens);
	free(base_prints);
	if (k > SWEEP_MAX)
		fail_msg("image_writer %s never ended by itself in %d calls", narg, SWEEP_MAX);
	return k - 1;
}

/*
 * Every kill point of the first generation of a task (from an empty store:
 * the task's directories are made too), then of two generations with
 * retention from KEEP (with removals).
 */
static void test_kill_each_call(void **state)
{
	static const char *const prep[] = { "-n2", NULL };
	struct crash *c = *state;
	unsigned long first, two;
	int wstatus, phase;
	pid_t pid;

	first = sweep(c, 1);
	assert_int_equal(c->n_gens, 1);
	wstatus = run_writer(c, prep, c->seed, -1, &pid, &phase);
	expect_end(wstatus, false, "image_writer -n2");
	check_store(c, "image_writer -n2", pid, phase, true, true);
	assert_int_equal(c->n_gens, KEEP);
	two = sweep(c, 2);
	assert_int_equal(c->n_gens, KEEP);

	/* Each stage was cut (what the writer does, not timing). */
	assert_true(c->kills[PH_BEGIN] && c->kills[PH_WRITE] && c->kills[PH_CHUNKS] &&
		    c->kills[PH_RETAIN]);
	assert_true(c->publish_before_rename && c->publish_after_rename);
	assert_true(c->partials && c->removings);
	assert_true(c->tmp_left && c->unref_left && c->swept);
	print_message("# each call: the first generation of a task makes %lu store-changing "
		      "calls, two more with retention %lu; killed before each in turn\n", first, two);
	summary(c, "each call", (unsigned)(first + two + 3));
}

/*
 * The writer in its endless loop, killed by us at seeded random moments
 * after it opened the store (0 included), on the store as the sweep left
 * it; then one run that ends by itself.
 */
static void test_kill_random(void **state)
{
	static const char *const none[] = { NULL };
	static const char *const last[] = { "-n4", NULL };
	struct crash *c = *state;
	const char *env = getenv("PHOS_CRASH_KILLS");
	unsigned kills = env ? (unsigned)strtoul(env, NULL, 10) : 200, i, zero = 0;
	int wstatus, phase;
	pid_t pid;

	for (i = 0; i < kills; i++) {
		uint64_t r = image_mix64(c->rng++);
		long delay = r % 8 == 0 ? 0 : (long)((r >> 8) % DELAY_MAX_US);
		char what[128];

		zero += delay == 0;
		snprintf(what, sizeof(what), "random kill %u: image_writer ... %" PRIu64 " killed %ld us "
			 "after it opened the store", i + 1, c->seed + 1 + i, delay);
		wstatus = run_writer(c, none, c->seed + 1 + i, delay, &pid, &phase);
		expect_end(wstatus, true, what);
		assert_true(phase >= 0);	/* it said 'S' at least */
		c->kills[phase]++;
		check_store(c, what, pid, phase, false, i % 2 == 0);
	}
	print_message("# random: delays 0..%u us after the store is open, %u of them 0\n",
		      DELAY_MAX_US, zero);
	summary(c, "random kills", kills);

	/* And after all that, a writer finishes with exactly KEEP generations. */
	wstatus = run_writer(c, last, c->seed, -1, &pid, &phase);
	expect_end(wstatus, false, "last run");
	check_store(c, "the last run", pid, phase, true, true);
	assert_int_equal(c->n_gens, KEEP);
}

/* ---- fixture ------------------------------------------------------------ */

/* Where progs/image_writer is: IMAGE_WRITER, else beside our unit/ directory. */
static int find_writer(struct crash *c)
{
	const char *env = getenv("IMAGE_WRITER");
	char self[PATH_MAX];
	ssize_t n;

	if (env) {
		snprintf(c->writer, sizeof(c->writer), "%s", env);
	} else {
		n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n < 0)
			return -1;
		self[n] = '\0';
		*strrchr(self, '/') = '\0';
		if ((size_t)snprintf(c->writer, sizeof(c->writer), "%s/../progs/image_writer", self) >=
		    sizeof(c->writer))
			return -1;
	}
	if (access(c->writer, X_OK) < 0) {
		fprintf(stderr, "%s: %s\n", c->writer, strerror(errno));
		return -1;
	}
	return 0;
}

/* A fresh store with a key file for the writer and the same key for us. */
static int make_store(struct crash *c)
{
	static const char keybytes[] = "crash test node key, 32 bytes or more, fixed";
	struct phos_err e = { "" };
	int fd;

	strcpy(c->tmp, "/tmp/phos-crash-XXXXXX");
	if (!mkdtemp(c->tmp)) {
		c->tmp[0] = '\0';
		return -1;
	}
	snprintf(c->root, sizeof(c->root), "%s/root", c->tmp);
	snprintf(c->keyfile, sizeof(c->keyfile), "%s/key", c->tmp);
	fd = open(c->keyfile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (write(fd, keybytes, sizeof(keybytes) - 1) != (ssize_t)sizeof(keybytes) - 1) {
		close(fd);
		return -1;
	}
	if (close(fd) < 0)
		return -1;
	if (phos_key_set(&c->key, keybytes, sizeof(keybytes) - 1, &e) < 0 ||
	    phos_store_open(&c->s, c->root, &c->key, true, &e) < 0 ||
	    phos_image_id_slurm(&c->id, "crash", 4242, 0, 0, &e) < 0 ||
	    phos_image_task_path(&c->s, &c->id, c->taskpath, sizeof(c->taskpath), &e) < 0) {
		fprintf(stderr, "setup: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	struct crash *c = *state;
	char cmd[160];
	int rc = 0;

	phos_store_close(&c->s);
	phos_key_clear(&c->key);
	if (c->tmp[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->tmp);
		rc = system(cmd) == 0 ? 0 : -1;
	}
	free(c->gens);
	free(c->prints);
	free(c->next_gens);
	free(c->next_prints);
	free(c->want);
	free(c->got);
	free(c->known);
	free(c->refs);
	free(c->carried);
	free(c->next_carried);
	free(c);
	return rc;
}

static int setup(void **state)
{
	struct crash *c = calloc(1, sizeof(*c));
	const char *env = getenv("PHOS_CRASH_SEED");

	if (!c)
		return -1;
	c->s.root_fd = -1;
	*state = c;
	c->seed = env ? strtoull(env, NULL, 0) : 8;
	c->rng = image_mix64(c->seed);
	print_message("# seed %" PRIu64 " (PHOS_CRASH_SEED)\n", c->seed);
	c->want = malloc(CHUNK);
	c->got = malloc(CHUNK);
	if (!c->want || !c->got || find_writer(c) < 0 || make_store(c) < 0) {
		teardown(state);
		return -1;
	}
	return 0;
}

int main(void)
{
	/* One store for both: numbers must keep growing across all runs. */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill_each_call),
		cmocka_unit_test(test_kill_random),
	};

	phos_log_open("test_image_crash", PHOS_LOG_STDERR, LOG_ERR);
	return cmocka_run_group_tests(tests, setup, teardown);
}
