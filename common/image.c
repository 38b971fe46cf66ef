/*
 * image.c - the checkpoint image store: layout, atomic publish, verify,
 * listing, selection, retention and cleanup.  See image.h and
 * doc/image-format.md.
 *
 * Every walk goes through directory fds (openat/fstatat with O_NOFOLLOW /
 * AT_SYMLINK_NOFOLLOW), so a symlink planted anywhere is never followed
 * and what we check is what we use.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunks.h"
#include "image.h"
#include "log.h"
#include "manifest.h"
#include "util.h"

#define PARTIAL_PREFIX	".partial-"
#define REMOVING_PREFIX	".removing-"
#define DIR_MODE	0700
#define FILE_MODE	0600
#define ROOT_MODE	0755
#define WALK_DEPTH_MAX	16
#define MAC_FILE_MAX	128

/* ---- small helpers ------------------------------------------------------ */

/* snprintf that fails with ENAMETOOLONG on truncation. */
static int bprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static void closep(int *fd)
{
	int saved = errno;

	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	errno = saved;
}

/* Canonical decimal: no sign, no leading zero (except "0"), <= max. */
static int parse_canon_u64(const char *s, uint64_t max, uint64_t *v)
{
	uint64_t r = 0;
	const char *p;

	if (!*s || (s[0] == '0' && s[1]))
		return -1;
	for (p = s; *p; p++) {
		if (*p < '0' || *p > '9' || r > (UINT64_MAX - 9) / 10)
			return -1;
		r = r * 10 + (uint64_t)(*p - '0');
	}
	if (r > max)
		return -1;
	*v = r;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* ---- ids and names ------------------------------------------------------ */

bool phos_image_user_ok(const char *user)
{
	size_t i, n;

	if (!user)
		return false;
	n = strlen(user);
	if (n == 0 || n >= PHOS_USER_MAX || user[0] == '.' || user[0] == '-')
		return false;
	for (i = 0; i < n; i++) {
		char c = user[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '@'))
			return false;
	}
	return true;
}

static bool step_ok(uint32_t step)
{
	return step < 0xfffffff0u || step == PHOS_STEP_BATCH || step == PHOS_STEP_EXTERN ||
	       step == PHOS_STEP_INTERACTIVE;
}

int phos_image_id_check(const struct phos_image_id *id, struct phos_err *e)
{
	if (!id)
		return phos_errnof(e, EINVAL, "no image id");
	if (!phos_image_user_ok(id->user))
		return phos_errnof(e, EINVAL, "user name '%.64s' cannot name an image directory",
				   id->user);
	if (id->job == 0)
		return phos_errnof(e, EINVAL, "job id 0 is not valid");
	if (id->kind == PHOS_JOB_PID) {
		if (id->job > INT32_MAX || id->step != 0 || id->task != 0)
			return phos_errnof(e, EINVAL, "an image of pid %" PRIu32 " must have step 0 and task 0",
					   id->job);
	} else if (id->kind != PHOS_JOB_SLURM) {
		return phos_errnof(e, EINVAL, "unknown job kind %d", (int)id->kind);
	}
	if (!step_ok(id->step))
		return phos_errnof(e, EINVAL, "step id %#" PRIx32 " cannot have an image", id->step);
	return 0;
}

int phos_image_id_pid(struct phos_image_id *id, const char *user, pid_t pid, struct phos_err *e)
{
	memset(id, 0, sizeof(*id));
	if (!phos_image_user_ok(user))
		return phos_errnof(e, EINVAL, "user name '%.64s' cannot name an image directory",
				   user ? user : "(null)");
	if (pid <= 0)
		return phos_errnof(e, EINVAL, "pid %d is not valid", (int)pid);
	strcpy(id->user, user);
	id->kind = PHOS_JOB_PID;
	id->job = (uint32_t)pid;
	return 0;
}

int phos_image_id_slurm(struct phos_image_id *id, const char *user, uint32_t job, uint32_t step,
			uint32_t task, struct phos_err *e)
{
	memset(id, 0, sizeof(*id));
	if (!phos_image_user_ok(user))
		return phos_errnof(e, EINVAL, "user name '%.64s' cannot name an image directory",
				   user ? user : "(null)");
	strcpy(id->user, user);
	id->kind = PHOS_JOB_SLURM;
	id->job = job;
	id->step = step;
	id->task = task;
	return phos_image_id_check(id, e);
}

int phos_image_job_format(const struct phos_image_id *id, char *buf, size_t size)
{
	if (id->job == 0 || (id->kind != PHOS_JOB_SLURM && id->kind != PHOS_JOB_PID)) {
		errno = EINVAL;
		return -1;
	}
	if (id->kind == PHOS_JOB_PID)
		return bprintf(buf, size, "pid-%" PRIu32, id->job);
	return bprintf(buf, size, "%" PRIu32, id->job);
}

int phos_image_step_format(uint32_t step, char *buf, size_t size)
{
	switch (step) {
	case PHOS_STEP_BATCH:
		return bprintf(buf, size, "batch");
	case PHOS_STEP_EXTERN:
		return bprintf(buf, size, "extern");
	case PHOS_STEP_INTERACTIVE:
		return bprintf(buf, size, "interactive");
	}
	if (!step_ok(step)) {
		errno = EINVAL;
		return -1;
	}
	return bprintf(buf, size, "%" PRIu32, step);
}

int phos_image_job_parse(const char *s, struct phos_image_id *id)
{
	uint64_t v;

	if (!strncmp(s, "pid-", 4)) {
		if (parse_canon_u64(s + 4, INT32_MAX, &v) < 0 || v == 0)
			goto bad;
		id->kind = PHOS_JOB_PID;
	} else {
		if (parse_canon_u64(s, UINT32_MAX, &v) < 0 || v == 0)
			goto bad;
		id->kind = PHOS_JOB_SLURM;
	}
	id->job = (uint32_t)v;
	return 0;
bad:
	errno = EINVAL;
	return -1;
}

int phos_image_step_parse(const char *s, uint32_t *step)
{
	uint64_t v;

	if (!strcmp(s, "batch"))
		*step = PHOS_STEP_BATCH;
	else if (!strcmp(s, "extern"))
		*step = PHOS_STEP_EXTERN;
	else if (!strcmp(s, "interactive"))
		*step = PHOS_STEP_INTERACTIVE;
	else if (parse_canon_u64(s, 0xfffffff0u - 1, &v) == 0)
		*step = (uint32_t)v;
	else {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

int phos_image_gen_format(uint64_t gen, char *buf, size_t size)
{
	if (gen == 0 || gen > PHOS_GEN_MAX) {
		errno = EINVAL;
		return -1;
	}
	return bprintf(buf, size, "%0*" PRIu64, PHOS_GEN_DIGITS, gen);
}

int phos_image_gen_parse(const char *s, uint64_t *gen)
{
	char canon[32];
	uint64_t v = 0;
	const char *p;

	for (p = s; *p; p++) {
		if (*p < '0' || *p > '9' || p - s >= 12)
			goto bad;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (phos_image_gen_format(v, canon, sizeof(canon)) < 0 || strcmp(canon, s))
		goto bad;
	*gen = v;
	return 0;
bad:
	errno = EINVAL;
	return -1;
}

/* ---- store and paths ---------------------------------------------------- */

/* Is st safe as part of the tree: owned by the store uid, not g/o-writable. */
static bool st_safe(const struct phos_store *s, const struct stat *st)
{
	return st->st_uid == s->uid && !(st->st_mode & 022);
}

static int unsafe_err(const struct phos_store *s, const struct stat *st, const char *what,
		      const char *path, struct phos_err *e)
{
	return phos_errnof(e, EPERM, "%s %s is owned by uid %u with mode %04o: image %ss must be "
			   "owned by uid %u (root) and not writable by group or others; "
			   "someone may have tampered with it (check, then chown %u %s; chmod go-w %s)",
			   what, path, (unsigned)st->st_uid, (unsigned)(st->st_mode & 07777), what,
			   (unsigned)s->uid, (unsigned)s->uid, path, path);
}

/* mkdir -p for the root, each created component with mode. */
static int mkdir_parents(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	char *p;

	if (bprintf(tmp, sizeof(tmp), "%s", path) < 0)
		return -1;
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) == 0)
			chmod(tmp, mode);	/* whatever the umask */
		else if (errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) == 0)
		return chmod(tmp, mode);
	return errno == EEXIST ? 0 : -1;
}

int phos_store_open(struct phos_store *s, const char *root, const struct phos_key *key,
		    bool create, struct phos_err *e)
{
	struct stat st;
	size_t n;

	memset(s, 0, sizeof(*s));
	s->root_fd = -1;
	s->key = key;
	s->uid = geteuid();
	if (!root || root[0] != '/')
		return phos_errnof(e, EINVAL, "checkpoint_dir '%s' must be an absolute path",
				   root ? root : "(null)");
	if (bprintf(s->root, sizeof(s->root), "%s", root) < 0)
		return phos_errnof(e, ENAMETOOLONG, "checkpoint_dir is too long");
	n = strlen(s->root);
	while (n > 1 && s->root[n - 1] == '/')
		s->root[--n] = '\0';
	if (gethostname(s->host, sizeof(s->host)) < 0)
		return phos_errnof(e, errno, "gethostname: %s", strerror(errno));
	s->host[sizeof(s->host) - 1] = '\0';
	if (create && mkdir_parents(s->root, ROOT_MODE) < 0)
		return phos_errnof(e, errno, "cannot create checkpoint_dir %s: %s", s->root,
				   strerror(errno));
	s->root_fd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->root_fd < 0)
		return phos_errnof(e, errno, "cannot open checkpoint_dir %s: %s", s->root,
				   strerror(errno));
	if (fstat(s->root_fd, &st) < 0) {
		phos_errnof(e, errno, "%s: %s", s->root, strerror(errno));
		goto fail;
	}
	if (!st_safe(s, &st)) {
		phos_errnof(e, EPERM, "checkpoint_dir %s is owned by uid %u with mode %04o; it must be owned "
			    "by uid %u and not writable by group or others: chown %u %s && chmod 0755 %s",
			    s->root, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
			    (unsigned)s->uid, (unsigned)s->uid, s->root, s->root);
		goto fail;
	}
	return 0;
fail:
	closep(&s->root_fd);
	return -1;
}

void phos_store_close(struct phos_store *s)
{
	if (!s)
		return;
	closep(&s->root_fd);
}

/* The four directory names of a task. */
struct task_names {
	char job[32], step[16], task[16];
};

static int task_names(const struct phos_image_id *id, struct task_names *t, struct phos_err *e)
{
	if (phos_image_id_check(id, e) < 0)
		return -1;
	if (phos_image_job_format(id, t->job, sizeof(t->job)) < 0 ||
	    phos_image_step_format(id->step, t->step, sizeof(t->step)) < 0 ||
	    bprintf(t->task, sizeof(t->task), "%" PRIu32, id->task) < 0)
		return phos_errnof(e, EINVAL, "invalid image id");
	return 0;
}

int phos_image_task_path(const struct phos_store *s, const struct phos_image_id *id, char *buf,
			 size_t size, struct phos_err *e)
{
	struct task_names t;

	if (task_names(id, &t, e) < 0)
		return -1;
	if (bprintf(buf, size, "%s/%s/%s/%s/%s", s->root, id->user, t.job, t.step, t.task) < 0)
		return phos_errnof(e, ENAMETOOLONG, "image path under %s is too long", s->root);
	return 0;
}

int phos_image_gen_path(const struct phos_store *s, const struct phos_image_id *id, uint64_t gen,
			char *buf, size_t size, struct phos_err *e)
{
	char task[PATH_MAX], g[24];

	if (phos_image_gen_format(gen, g, sizeof(g)) < 0)
		return phos_errnof(e, EINVAL, "generation %" PRIu64 " out of range", gen);
	if (phos_image_task_path(s, id, task, sizeof(task), e) < 0)
		return -1;
	if (bprintf(buf, size, "%s/%s", task, g) < 0)
		return phos_errnof(e, ENAMETOOLONG, "image path %s/%s is too long", task, g);
	return 0;
}

/*
 * Open directory name under dfd (never through a symlink) and check it is
 * safe.  With create, make it (mode DIR_MODE) when missing and fsync dfd.
 * path is the full path of name, for messages.
 */
static int open_dir_at(const struct phos_store *s, int dfd, const char *name, bool create,
		       const char *path, struct phos_err *e)
{
	struct stat st;
	int fd;

	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (mkdirat(dfd, name, DIR_MODE) < 0 && errno != EEXIST)
			return phos_errnof(e, errno, "cannot create %s: %s", path, strerror(errno));
		if (fsync(dfd) < 0)
			return phos_errnof(e, errno, "fsync of the parent of %s: %s", path, strerror(errno));
		fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0) {
		if (errno == ELOOP || errno == ENOTDIR)
			return phos_errnof(e, ELOOP, "%s is a symlink or not a directory; "
					   "the image tree may only hold directories and files", path);
		return phos_errnof(e, errno, "%s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0) {
		phos_errnof(e, errno, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!st_safe(s, &st)) {
		unsafe_err(s, &st, "directory", path, e);
		close(fd);
		return -1;
	}
	return fd;
}

/* Open (and with create make) the task directory chain; path gets the
 * task directory's path.  Returns the task dir fd. */
static int open_task(const struct phos_store *s, const struct phos_image_id *id, bool create,
		     char *path, size_t size, struct phos_err *e)
{
	struct task_names t;
	const char *comp[4];
	int fd = s->root_fd, i;
	size_t len;

	if (s->root_fd < 0)
		return phos_errnof(e, EBADF, "image store is not open");
	if (task_names(id, &t, e) < 0)
		return -1;
	comp[0] = id->user;
	comp[1] = t.job;
	comp[2] = t.step;
	comp[3] = t.task;
	if (bprintf(path, size, "%s", s->root) < 0)
		return phos_errnof(e, ENAMETOOLONG, "path too long");
	for (i = 0; i < 4; i++) {
		int nfd;

		len = strlen(path);
		if (bprintf(path + len, size - len, "/%s", comp[i]) < 0) {
			if (fd != s->root_fd)
				close(fd);
			return phos_errnof(e, ENAMETOOLONG, "image path under %s is too long", s->root);
		}
		nfd = open_dir_at(s, fd, comp[i], create, path, e);
		if (fd != s->root_fd)
			close(fd);
		if (nfd < 0)
			return -1;
		fd = nfd;
	}
	return fd;
}

/* ---- removal helpers ---------------------------------------------------- */

/* Rename name (under dfd) out of sight, fsync dfd, then delete it. */
static int remove_hidden(const struct phos_store *s, int dfd, const char *name, const char *path,
			 struct phos_err *e)
{
	char hidden[NAME_MAX + 1];

	if (bprintf(hidden, sizeof(hidden), REMOVING_PREFIX "%s-%.64s-%d", name, s->host,
		    (int)getpid()) < 0)
		return phos_errnof(e, ENAMETOOLONG, "name too long for %s", path);
	if (renameat(dfd, name, dfd, hidden) < 0)
		return phos_errnof(e, errno, "cannot remove %s: %s", path, strerror(errno));
	if (fsync(dfd) < 0)
		log_warn("fsync after renaming %s: %s", path, strerror(errno));
	if (phos_rm_tree_at(dfd, hidden) < 0)
		return phos_errnof(e, errno, "removing %s (now %s): %s", path, hidden, strerror(errno));
	return 0;
}

/* ---- walking a generation (publish and verify) ------------------------- */

struct walk {
	struct phos_store *s;
	struct phos_err *e;
	bool publish;
	struct phos_manifest *m;	/* publish: filled; verify: checked */
	bool *seen;			/* verify: per manifest file */
	unsigned flags;
	const char *top;		/* path of the generation, for messages */
};

static const char *type_name(mode_t m)
{
	if (S_ISFIFO(m))
		return "a fifo";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISBLK(m))
		return "a block device";
	return "not a regular file";
}

static int walk_file(struct walk *w, int dfd, const char *name, const char *rel,
		     const struct stat *lst)
{
	struct phos_err *e = w->e;
	unsigned char sha[PHOS_SHA256_LEN];
	const struct phos_manifest_file *mf = NULL;
	struct stat st;
	uint64_t size;
	int fd, rc = -1;

	if (!w->publish) {
		mf = phos_manifest_find_file(w->m, rel);
		if (!mf)
			return phos_errnof(e, EEXIST, "%s/%s is not listed in the manifest: a file was "
					   "added to the image", w->top, rel);
	} else if (!phos_manifest_name_ok(rel)) {
		return phos_errnof(e, EINVAL, "%s/%s: this file name is not allowed in an image",
				   w->top, rel);
	}
	fd = openat(dfd, name, (w->publish ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC |
		    O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return phos_errnof(e, errno == ELOOP ? ELOOP : errno, "%s/%s: %s", w->top, rel,
				   strerror(errno));
	if (fstat(fd, &st) < 0) {
		phos_errnof(e, errno, "%s/%s: %s", w->top, rel, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_ino != lst->st_ino || st.st_dev != lst->st_dev) {
		phos_errnof(e, EMEDIUMTYPE, "%s/%s changed while being checked", w->top, rel);
		goto out;
	}
	if (!st_safe(w->s, &st)) {
		unsafe_err(w->s, &st, "file", rel, e);
		goto out;
	}
	if (w->publish) {
		if (fchmod(fd, FILE_MODE) < 0 || fsync(fd) < 0) {
			phos_errnof(e, errno, "%s/%s: %s", w->top, rel, strerror(errno));
			goto out;
		}
		/* large files (CRIU's pages) in pieces, by several threads */
		uint64_t block = (uint64_t)st.st_size >= PHOS_BLOCKS_MIN ? PHOS_BLOCK : 0;
		struct stat st2;

		if (block ? phos_sha256_blocks(fd, (uint64_t)st.st_size, block, sha) :
			    phos_sha256_fd(fd, sha, &size)) {
			phos_errnof(e, errno, "reading %s/%s: %s", w->top, rel, strerror(errno));
			goto out;
		}
		if (block)
			size = (uint64_t)st.st_size;
		if (size != (uint64_t)st.st_size || fstat(fd, &st2) < 0 || st2.st_size != st.st_size) {
			phos_errnof(e, EIO, "%s/%s changed size while being hashed", w->top, rel);
			goto out;
		}
		rc = phos_manifest_add_file_blocks(w->m, rel, size, block, sha, e);
		goto out;
	}
	w->seen[mf - w->m->files] = true;
	if ((uint64_t)st.st_size != mf->size) {
		phos_errnof(e, EMSGSIZE, "%s/%s has %jd bytes but the manifest says %" PRIu64
			    ": the file was truncated or changed", w->top, rel, (intmax_t)st.st_size,
			    mf->size);
		goto out;
	}
	if (!(w->flags & PHOS_VERIFY_QUICK)) {
		size = mf->size;
		if (mf->block ? phos_sha256_blocks(fd, mf->size, mf->block, sha) :
				phos_sha256_fd(fd, sha, &size)) {
			phos_errnof(e, errno, "reading %s/%s: %s", w->top, rel, strerror(errno));
			goto out;
		}
		if (size != mf->size) {
			phos_errnof(e, EMSGSIZE, "%s/%s has %" PRIu64 " bytes but the manifest says %"
				    PRIu64, w->top, rel, size, mf->size);
			goto out;
		}
		if (memcmp(sha, mf->sha256, PHOS_SHA256_LEN)) {
			char want[2 * PHOS_SHA256_LEN + 1], got[2 * PHOS_SHA256_LEN + 1];

			phos_sha256_format(mf->sha256, want);
			phos_sha256_format(sha, got);
			phos_errnof(e, EILSEQ, "%s/%s: content does not match the manifest (SHA-256 %.16s... "
				    "instead of %.16s...): the file is corrupt", w->top, rel, got, want);
			goto out;
		}
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

static int walk_dir(struct walk *w, int dfd, const char *rel, int depth)
{
	struct phos_err *e = w->e;
	struct dirent *de;
	int fd, rc = 0;
	DIR *d;

	if (depth > WALK_DEPTH_MAX)
		return phos_errnof(e, ELOOP, "%s/%s: directories nested too deep", w->top, rel);
	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return phos_errnof(e, errno, "%s/%s: %s", w->top, rel, strerror(errno));
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return phos_errnof(e, errno, "%s/%s: %s", w->top, rel, strerror(errno));
	}
	while (rc == 0 && (errno = 0, de = readdir(d))) {
		char sub[PHOS_REL_MAX];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (depth == 0 && (!strcmp(de->d_name, PHOS_MANIFEST_NAME) ||
				   !strcmp(de->d_name, PHOS_MANIFEST_MAC_NAME))) {
			if (w->publish)
				rc = phos_errnof(e, EEXIST, "%s/%s exists before publish: only the image "
						 "store writes it", w->top, de->d_name);
			continue;
		}
		if (bprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", de->d_name) < 0) {
			rc = phos_errnof(e, ENAMETOOLONG, "%s/%s/%s: name too long", w->top, rel,
					 de->d_name);
			break;
		}
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = phos_errnof(e, errno, "%s/%s: %s", w->top, sub, strerror(errno));
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			rc = phos_errnof(e, ELOOP, "%s/%s is a symlink: images may not contain symlinks "
					 "(refused so no crafted image is restored as root)", w->top, sub);
		} else if (S_ISREG(st.st_mode)) {
			rc = walk_file(w, dfd, de->d_name, sub, &st);
		} else if (S_ISDIR(st.st_mode)) {
			int cfd;

			if (w->publish && !phos_manifest_name_ok(sub)) {
				rc = phos_errnof(e, EINVAL, "%s/%s: this name is not allowed in an image",
						 w->top, sub);
				break;
			}
			cfd = open_dir_at(w->s, dfd, de->d_name, false, sub, e);
			if (cfd < 0) {
				rc = -1;
				break;
			}
			if (w->publish && fchmod(cfd, DIR_MODE) < 0)
				rc = phos_errnof(e, errno, "%s/%s: %s", w->top, sub, strerror(errno));
			if (rc == 0)
				rc = walk_dir(w, cfd, sub, depth + 1);
			if (rc == 0 && w->publish && fsync(cfd) < 0)
				rc = phos_errnof(e, errno, "fsync %s/%s: %s", w->top, sub, strerror(errno));
			close(cfd);
		} else {
			rc = phos_errnof(e, EMEDIUMTYPE, "%s/%s is %s: images hold only regular files",
					 w->top, sub, type_name(st.st_mode));
		}
	}
	if (rc == 0 && errno != 0)
		rc = phos_errnof(e, errno, "reading directory %s/%s: %s", w->top, rel, strerror(errno));
	closedir(d);
	return rc;
}

/* ---- writing ------------------------------------------------------------ */

void phos_image_writer_init(struct phos_image_writer *w)
{
	memset(w, 0, sizeof(*w));
	w->task_fd = -1;
	w->dir_fd = -1;
	w->chunks_fd = -1;
	w->lock_fd = -1;
	phos_manifest_init(&w->manifest);
}

/* Parse ".partial-<gen>-<host>-<pid>"; host is copied into host[size]. */
static int partial_parse(const char *name, uint64_t *gen, char *host, size_t size, pid_t *pid)
{
	const char *p = name + strlen(PARTIAL_PREFIX), *dash, *last;
	char g[32];
	uint64_t v;

	if (strncmp(name, PARTIAL_PREFIX, strlen(PARTIAL_PREFIX)))
		return -1;
	dash = strchr(p, '-');
	last = strrchr(p, '-');
	if (!dash || dash == last || (size_t)(dash - p) >= sizeof(g))
		return -1;
	memcpy(g, p, (size_t)(dash - p));
	g[dash - p] = '\0';
	if (phos_image_gen_parse(g, gen) < 0 || parse_canon_u64(last + 1, INT32_MAX, &v) < 0)
		return -1;
	if ((size_t)(last - dash - 1) >= size)
		return -1;
	memcpy(host, dash + 1, (size_t)(last - dash - 1));
	host[last - dash - 1] = '\0';
	*pid = (pid_t)v;
	return 0;
}

/* Published generation numbers in task dir, ascending; partials' numbers
 * raise *max_any when not NULL. */
static int scan_gens(int task_fd, const char *path, uint64_t **out, size_t *n, uint64_t *max_any,
		     struct phos_err *e)
{
	uint64_t *v = NULL, gen;
	size_t cap = 0, cnt = 0;
	struct dirent *de;
	char host[PHOS_HOST_MAX];
	pid_t pid;
	int fd;
	DIR *d;

	fd = openat(task_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return phos_errnof(e, errno, "%s: %s", path, strerror(errno));
	}
	if (max_any)
		*max_any = 0;
	while ((errno = 0, de = readdir(d))) {
		if (de->d_name[0] == '.') {
			if (max_any && partial_parse(de->d_name, &gen, host, sizeof(host), &pid) == 0 &&
			    gen > *max_any)
				*max_any = gen;
			continue;
		}
		if (phos_image_gen_parse(de->d_name, &gen) < 0)
			continue;
		if (max_any && gen > *max_any)
			*max_any = gen;
		if (cnt == cap) {
			uint64_t *nv = realloc(v, (cap ? cap * 2 : 16) * sizeof(*v));

			if (!nv) {
				free(v);
				closedir(d);
				return phos_errnof(e, ENOMEM, "out of memory");
			}
			v = nv;
			cap = cap ? cap * 2 : 16;
		}
		v[cnt++] = gen;
	}
	if (errno) {
		int err = errno;

		free(v);
		closedir(d);
		return phos_errnof(e, err, "reading %s: %s", path, strerror(err));
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), cmp_u64);
	*out = v;
	*n = cnt;
	return 0;
}

int phos_image_begin(struct phos_store *s, const struct phos_image_id *id, uid_t uid, gid_t gid,
		     struct phos_image_writer *w, struct phos_err *e)
{
	char taskpath[PATH_MAX];
	uint64_t *gens = NULL, max = 0;
	size_t ngen = 0;

	phos_image_writer_init(w);
	w->store = s;
	w->task_fd = open_task(s, id, true, taskpath, sizeof(taskpath), e);
	if (w->task_fd < 0)
		return -1;
	if (scan_gens(w->task_fd, taskpath, &gens, &ngen, &max, e) < 0)
		goto fail;
	free(gens);
	if (max >= PHOS_GEN_MAX) {
		phos_errnof(e, EOVERFLOW, "%s: no generation number left", taskpath);
		goto fail;
	}
	w->generation = max + 1;
	w->id = *id;
	if (bprintf(w->name, sizeof(w->name), PARTIAL_PREFIX "%0*" PRIu64 "-%s-%d", PHOS_GEN_DIGITS,
		    w->generation, s->host, (int)getpid()) < 0 ||
	    bprintf(w->path, sizeof(w->path), "%s/%s", taskpath, w->name) < 0) {
		phos_errnof(e, ENAMETOOLONG, "staging path under %s is too long", taskpath);
		goto fail;
	}
	if (mkdirat(w->task_fd, w->name, DIR_MODE) < 0) {
		phos_errnof(e, errno, "cannot create %s: %s", w->path, strerror(errno));
		w->name[0] = '\0';	/* not ours: abort must not remove it */
		goto fail;
	}
	w->dir_fd = open_dir_at(s, w->task_fd, w->name, false, w->path, e);
	if (w->dir_fd < 0)
		goto fail;
	w->manifest.uid = uid;
	w->manifest.gid = gid;
	strcpy(w->manifest.user, id->user);
	if (bprintf(w->manifest.host, sizeof(w->manifest.host), "%s", s->host) < 0) {
		phos_errnof(e, ENAMETOOLONG, "host name too long");
		goto fail;
	}
	w->manifest.created = time(NULL);
	w->manifest.id = *id;
	w->manifest.generation = w->generation;
	return 0;
fail:
	phos_image_abort(w);
	return -1;
}

int phos_image_set_extra(struct phos_image_writer *w, const char *key, const char *value,
			 struct phos_err *e)
{
	return phos_manifest_set_extra(&w->manifest, key, value, e);
}

/* Create name under dfd with exactly buf, fsynced. */
static int write_new_file(int dfd, const char *name, const char *path, const void *buf, size_t len,
			  struct phos_err *e)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, FILE_MODE);

	if (fd < 0)
		return phos_errnof(e, errno, "cannot create %s/%s: %s", path, name, strerror(errno));
	if (phos_write_full(fd, buf, len) < 0 || fsync(fd) < 0) {
		phos_errnof(e, errno, "writing %s/%s: %s", path, name, strerror(errno));
		close(fd);
		return -1;
	}
	if (close(fd) < 0)
		return phos_errnof(e, errno, "writing %s/%s: %s", path, name, strerror(errno));
	return 0;
}

int phos_image_publish(struct phos_image_writer *w, struct phos_err *e)
{
	struct walk wk = { .s = w->store, .e = e, .publish = true, .m = &w->manifest, .top = w->path };
	unsigned char mac[PHOS_MAC_LEN];
	char macs[2 * PHOS_MAC_LEN + 2], gname[24];
	char *buf = NULL;
	size_t len = 0, i;
	int rc = -1;

	if (w->dir_fd < 0 || w->task_fd < 0 || !w->name[0])
		return phos_errnof(e, EINVAL, "no checkpoint is being written");
	if (!w->store->key || !w->store->key->len)
		return phos_errnof(e, EINVAL, "no node key loaded: cannot sign the manifest");
	/* Files are listed from what is on disk now, nothing else. */
	for (i = 0; i < w->manifest.n_files; i++)
		free(w->manifest.files[i].name);
	free(w->manifest.files);
	w->manifest.files = NULL;
	w->manifest.n_files = 0;

	if (walk_dir(&wk, w->dir_fd, "", 0) < 0)
		return -1;
	if (phos_manifest_emit(&w->manifest, &buf, &len, e) < 0)
		return -1;
	if (write_new_file(w->dir_fd, PHOS_MANIFEST_NAME, w->path, buf, len, e) < 0 ||
	    phos_mac_compute(w->store->key, buf, len, mac, e) < 0)
		goto out;
	phos_mac_format(mac, macs);
	if (write_new_file(w->dir_fd, PHOS_MANIFEST_MAC_NAME, w->path, macs, strlen(macs), e) < 0)
		goto out;
	if (fchmod(w->dir_fd, DIR_MODE) < 0 || fsync(w->dir_fd) < 0) {
		phos_errnof(e, errno, "fsync %s: %s", w->path, strerror(errno));
		goto out;
	}
	if (phos_image_gen_format(w->generation, gname, sizeof(gname)) < 0) {
		phos_errnof(e, EINVAL, "bad generation");
		goto out;
	}
	if (renameat2(w->task_fd, w->name, w->task_fd, gname, RENAME_NOREPLACE) < 0) {
		struct stat st;

		/* Filesystems without RENAME_NOREPLACE (NFS): check, then rename.
		 * rename(2) of a directory onto a non-empty one fails anyway. */
		if (errno != EINVAL && errno != ENOSYS)
			goto rename_err;
		if (fstatat(w->task_fd, gname, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			errno = EEXIST;
			goto rename_err;
		}
		if (renameat(w->task_fd, w->name, w->task_fd, gname) < 0)
			goto rename_err;
	}
	w->name[0] = '\0';	/* published: abort no longer removes it */
	if (fsync(w->task_fd) < 0) {
		phos_errnof(e, errno, "fsync of the directory of %s: %s", w->path, strerror(errno));
		goto out;
	}
	closep(&w->dir_fd);
	closep(&w->task_fd);
	closep(&w->chunks_fd);
	closep(&w->lock_fd);	/* its chunks are named by a generation now */
	rc = 0;
	goto out;
rename_err:
	if (errno == ENOTEMPTY)
		errno = EEXIST;
	phos_errnof(e, errno, "cannot publish %s as generation %s: %s%s", w->path, gname,
		    strerror(errno), errno == EEXIST ? " (another checkpoint of this task published it first)" : "");
out:
	free(buf);
	return rc;
}

/*
 * Normalise cur + "/" + link (a relative symlink target seen from cur) into
 * out; fails if it is absolute, escapes the staging directory or is empty.
 */
static int resolve_rel(const char *cur, const char *link, char *out, size_t size)
{
	char tmp[2 * PHOS_REL_MAX + 2], *tok, *save = NULL;
	size_t len = 0;

	if (link[0] == '/' || bprintf(tmp, sizeof(tmp), "%s/%s", cur, link) < 0)
		return -1;
	out[0] = '\0';
	for (tok = strtok_r(tmp, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (!strcmp(tok, "."))
			continue;
		if (!strcmp(tok, "..")) {
			char *slash;

			if (len == 0)
				return -1;	/* escapes the staging dir */
			slash = strrchr(out, '/');
			len = slash ? (size_t)(slash - out) : 0;
			out[len] = '\0';
			continue;
		}
		if (bprintf(out + len, size - len, "%s%s", len ? "/" : "", tok) < 0)
			return -1;
		len = strlen(out);
	}
	return len ? 0 : -1;
}

/* Every component of rel under dfd is a real directory (no symlink). */
static bool all_dirs(int dfd, const char *rel)
{
	char tmp[PHOS_REL_MAX], *p;
	struct stat st;

	if (bprintf(tmp, sizeof(tmp), "%s", rel) < 0)
		return false;
	for (p = tmp;; p++) {
		if (*p == '/' || !*p) {
			char c = *p;

			*p = '\0';
			if (fstatat(dfd, tmp, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
				return false;
			if (!c)
				return true;
			*p = c;
		}
	}
}

int phos_image_inline_parents(struct phos_image_writer *w, struct phos_err *e)
{
	char cur[PHOS_REL_MAX] = "", orig[PHOS_REL_MAX] = "";
	int depth;

	if (w->dir_fd < 0)
		return phos_errnof(e, EINVAL, "no checkpoint is being written");
	for (depth = 0; depth < WALK_DEPTH_MAX; depth++) {
		char lp[PHOS_REL_MAX], link[PHOS_REL_MAX], src[PHOS_REL_MAX];
		struct stat st;
		ssize_t n;

		if (bprintf(lp, sizeof(lp), "%s%sparent", cur, *cur ? "/" : "") < 0)
			return phos_errnof(e, ENAMETOOLONG, "%s: parent chain too long", w->path);
		if (fstatat(w->dir_fd, lp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				return 0;
			return phos_errnof(e, errno, "%s/%s: %s", w->path, lp, strerror(errno));
		}
		if (S_ISDIR(st.st_mode)) {
			memcpy(orig, lp, sizeof(orig));
			memcpy(cur, lp, sizeof(cur));
			continue;
		}
		if (!S_ISLNK(st.st_mode))
			return phos_errnof(e, EMEDIUMTYPE, "%s/%s is neither a link nor a directory",
					   w->path, lp);
		n = readlinkat(w->dir_fd, lp, link, sizeof(link) - 1);
		if (n < 0)
			return phos_errnof(e, errno, "%s/%s: %s", w->path, lp, strerror(errno));
		link[n] = '\0';
		/* The link was made relative to where its directory was made. */
		if (resolve_rel(orig, link, src, sizeof(src)) < 0 || !all_dirs(w->dir_fd, src))
			return phos_errnof(e, EINVAL, "%s/%s -> %s: a parent image must be a directory "
					   "inside the checkpoint being written", w->path, lp, link);
		if (unlinkat(w->dir_fd, lp, 0) < 0 || renameat(w->dir_fd, src, w->dir_fd, lp) < 0)
			return phos_errnof(e, errno, "moving %s/%s to %s: %s", w->path, src, lp,
					   strerror(errno));
		memcpy(orig, src, sizeof(orig));
		memcpy(cur, lp, sizeof(cur));
	}
	return phos_errnof(e, ELOOP, "%s: parent chain deeper than %d", w->path, WALK_DEPTH_MAX);
}

void phos_image_abort(struct phos_image_writer *w)
{
	int saved = errno;

	if (!w)
		return;
	closep(&w->dir_fd);
	if (w->task_fd >= 0 && w->name[0]) {
		if (phos_rm_tree_at(w->task_fd, w->name) < 0)
			log_warn("cannot remove staging directory %s: %s", w->path, strerror(errno));
		else
			fsync(w->task_fd);
	}
	w->name[0] = '\0';
	closep(&w->task_fd);
	closep(&w->chunks_fd);
	closep(&w->lock_fd);	/* and with it the lock */
	phos_manifest_free(&w->manifest);
	errno = saved;
}

/* ---- the chunk store ---------------------------------------------------- */

/* Open <task>/chunks (creating it if create) and its lock file; lock it
 * with op (LOCK_SH, LOCK_EX, | LOCK_NB). */
static int chunks_open(const struct phos_store *s, int task_fd, const char *taskpath, bool create,
		       int op, int *lock_fd, struct phos_err *e)
{
	char path[PATH_MAX];
	int dfd;

	if (bprintf(path, sizeof(path), "%s/" PHOS_CHUNKS_DIR, taskpath) < 0)
		return phos_errnof(e, ENAMETOOLONG, "path too long");
	dfd = open_dir_at(s, task_fd, PHOS_CHUNKS_DIR, create, path, e);
	if (dfd < 0)
		return -1;
	*lock_fd = openat(dfd, PHOS_CHUNKS_LOCK, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
			  FILE_MODE);
	if (*lock_fd < 0) {
		phos_errnof(e, errno, "%s/%s: %s", path, PHOS_CHUNKS_LOCK, strerror(errno));
		closep(&dfd);
		return -1;
	}
	while (flock(*lock_fd, op) < 0) {
		if (errno == EINTR)
			continue;
		phos_errnof(e, errno, "locking %s: %s", path, strerror(errno));
		closep(lock_fd);
		closep(&dfd);
		return -1;
	}
	return dfd;
}

int phos_image_chunks_open(struct phos_image_writer *w, struct phos_err *e)
{
	char taskpath[PATH_MAX];
	char *slash;

	if (w->chunks_fd >= 0)
		return w->chunks_fd;
	if (w->task_fd < 0)
		return phos_errnof(e, EINVAL, "no checkpoint is being written");
	snprintf(taskpath, sizeof(taskpath), "%s", w->path);
	if ((slash = strrchr(taskpath, '/')))
		*slash = '\0';
	w->chunks_fd = chunks_open(w->store, w->task_fd, taskpath, true, LOCK_SH, &w->lock_fd, e);
	return w->chunks_fd;
}

/* Every chunk a generation's index files name exists (no content check:
 * the loader checks each chunk's bytes as it reads them). */
static int check_chunks(const struct phos_store *s, int task_fd, const char *taskpath, int gfd,
			const char *top, const struct phos_manifest *m, struct phos_err *e)
{
	char path[PATH_MAX], err[256];
	int cfd = -1, rc = 0;

	for (size_t i = 0; rc == 0 && i < m->n_files; i++) {
		const char *name = m->files[i].name;
		struct phos_idx x;

		if (!phos_idx_name(name))
			continue;
		if (cfd < 0) {
			struct phos_err ce = { "" };

			snprintf(path, sizeof(path), "%s/%s", taskpath, PHOS_CHUNKS_DIR);
			cfd = open_dir_at(s, task_fd, PHOS_CHUNKS_DIR, false, path, &ce);
			if (cfd < 0)
				return phos_errnof(e, errno == ENOENT ? ENODATA : errno, "%s names chunks "
						   "of GPU memory, but: %s", top, ce.msg);
		}
		if (phos_idx_read(&x, gfd, name, err, sizeof(err)) < 0) {
			rc = phos_errnof(e, EBADMSG, "%s/%s", top, err);
			break;
		}
		for (uint64_t k = 0; rc == 0 && k < x.n; k++)
			if (phos_chunk_check(cfd, x.sha[k], phos_idx_len(&x, k), err, sizeof(err)) < 0)
				rc = phos_errnof(e, errno == ENOENT ? ENODATA : errno, "%s/%s, chunk %"
						 PRIu64 ": %s", top, name, k, err);
		phos_idx_free(&x);
	}
	closep(&cfd);
	return rc;
}

/* Add the chunks named by the index files of the generation directory
 * gname to *keep; -1 if one cannot be read (then nothing may be swept). */
static int mark_gen(int task_fd, const char *gname, unsigned char (**keep)[32], size_t *n,
		    size_t *cap, char *err, size_t errsz)
{
	struct dirent *de;
	int gfd, rc = 0;
	DIR *d;

	gfd = openat(task_fd, gname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (gfd < 0)
		return errno == ENOENT ? 0 : -1;
	if (!(d = fdopendir(gfd))) {
		close(gfd);
		return -1;
	}
	while (rc == 0 && (de = readdir(d))) {
		struct phos_idx x;

		if (!phos_idx_name(de->d_name))
			continue;
		if (phos_idx_read(&x, dirfd(d), de->d_name, err, errsz) < 0) {
			rc = -1;
			break;
		}
		if (*n + x.n > *cap) {
			size_t nc = (*n + x.n) * 2;
			void *p = realloc(*keep, nc * sizeof(**keep));

			if (!p) {
				phos_idx_free(&x);
				rc = -1;
				break;
			}
			*keep = p;
			*cap = nc;
		}
		memcpy(*keep + *n, x.sha, x.n * sizeof(*x.sha));
		*n += x.n;
		phos_idx_free(&x);
	}
	closedir(d);
	return rc;
}

/* Remove the chunks no generation of the task names (and dead writers'
 * temporaries), if no writer holds the store: a writer holds its lock
 * shared from phos_image_chunks_open() to its publish, so chunks it found
 * already stored (and did not write again) stay. */
static void sweep_chunks(const struct phos_store *s, int task_fd, const char *taskpath)
{
	unsigned char (*keep)[32] = NULL;
	size_t n = 0, cap = 0;
	uint64_t *gens = NULL, bytes = 0;
	size_t ngen = 0;
	struct phos_err e = { "" };
	char err[256] = "";
	int cfd, lock = -1, removed;
	struct stat st;

	if (fstatat(task_fd, PHOS_CHUNKS_DIR, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;	/* no GPU memory in this task's images */
	cfd = chunks_open(s, task_fd, taskpath, false, LOCK_EX | LOCK_NB, &lock, &e);
	if (cfd < 0) {
		if (errno != EWOULDBLOCK)
			log_warn("%s: chunk store not swept: %s", taskpath, e.msg);
		return;	/* a checkpoint is being written: the next retention sweeps */
	}
	if (scan_gens(task_fd, taskpath, &gens, &ngen, NULL, &e) < 0)
		goto out;
	for (size_t i = 0; i < ngen; i++) {
		char g[24];

		if (phos_image_gen_format(gens[i], g, sizeof(g)) < 0 ||
		    mark_gen(task_fd, g, &keep, &n, &cap, err, sizeof(err)) < 0) {
			log_warn("%s: chunk store not swept: generation %" PRIu64 ": %s", taskpath,
				 gens[i], err[0] ? err : strerror(errno));
			goto out;
		}
	}
	if (n)
		qsort(keep, n, sizeof(*keep), phos_chunk_cmp);
	removed = phos_chunks_sweep(cfd, (const unsigned char (*)[32])keep, n, &bytes, err,
				    sizeof(err));
	if (removed < 0)
		log_warn("%s: chunk store not swept: %s", taskpath, err);
	else if (removed)
		log_info("retention: removed %d chunk(s) (%" PRIu64 " bytes) no generation of %s "
			 "names", removed, bytes, taskpath);
out:
	free(keep);
	free(gens);
	closep(&lock);
	closep(&cfd);
}

/* ---- verify ------------------------------------------------------------- */

/* Read a small file of the generation (regular, safe, <= max bytes). */
static int read_small(const struct phos_store *s, int dfd, const char *name, const char *top,
		      size_t max, char **out, size_t *len, struct phos_err *e)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd;

	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		if (errno == ELOOP)
			return phos_errnof(e, ELOOP, "%s/%s is a symlink", top, name);
		return phos_errnof(e, errno, "%s/%s: %s", top, name, strerror(errno));
	}
	if (fstat(fd, &st) < 0) {
		phos_errnof(e, errno, "%s/%s: %s", top, name, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		phos_errnof(e, EMEDIUMTYPE, "%s/%s is %s", top, name, type_name(st.st_mode));
		goto fail;
	}
	if (!st_safe(s, &st)) {
		unsafe_err(s, &st, "file", name, e);
		goto fail;
	}
	if ((uint64_t)st.st_size > max) {
		phos_errnof(e, EBADMSG, "%s/%s is too large (%jd bytes)", top, name, (intmax_t)st.st_size);
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		phos_errnof(e, ENOMEM, "out of memory");
		goto fail;
	}
	while (got <= (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size + 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			phos_errnof(e, errno, "reading %s/%s: %s", top, name, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got != (size_t)st.st_size) {
		phos_errnof(e, EBADMSG, "%s/%s changed while being read", top, name);
		goto fail;
	}
	buf[got] = '\0';
	close(fd);
	*out = buf;
	*len = got;
	return 0;
fail:
	free(buf);
	close(fd);
	return -1;
}

int phos_image_parse_path(const struct phos_store *s, const char *path, struct phos_image_id *id,
			  uint64_t *gen, struct phos_err *e)
{
	const char *root = s->root;
	size_t rl = strlen(root);
	char buf[4096], *parts[6], *save = NULL, *tok;
	int n = 0;

	while (rl > 1 && root[rl - 1] == '/')
		rl--;
	if (strncmp(path, root, rl) != 0 || path[rl] != '/')
		return phos_errnof(e, EINVAL, "%s is not under the image root %s", path, root);
	if (phos_strlcpy(buf, path + rl + 1, sizeof(buf)) < 0)
		return phos_errnof(e, ENAMETOOLONG, "path too long");
	for (tok = strtok_r(buf, "/", &save); tok && n < 6; tok = strtok_r(NULL, "/", &save))
		parts[n++] = tok;
	if (n != 5 || tok)
		return phos_errnof(e, EINVAL, "%s is not a generation directory "
				   "(<root>/<user>/<job>/<step>/<task>/<generation>)", path);
	memset(id, 0, sizeof(*id));
	if (phos_strlcpy(id->user, parts[0], sizeof(id->user)) < 0 ||
	    phos_image_job_parse(parts[1], id) < 0 || phos_image_step_parse(parts[2], &id->step) < 0 ||
	    phos_image_gen_parse(parts[4], gen) < 0)
		return phos_errnof(e, EINVAL, "%s is not a generation directory", path);
	uint64_t task;
	if (phos_parse_u64(parts[3], &task) < 0 || task > UINT32_MAX)
		return phos_errnof(e, EINVAL, "%s: bad task", path);
	id->task = (uint32_t)task;
	return phos_image_id_check(id, e);
}

static bool id_equal(const struct phos_image_id *a, const struct phos_image_id *b)
{
	return !strcmp(a->user, b->user) && a->kind == b->kind && a->job == b->job &&
	       a->step == b->step && a->task == b->task;
}

/* Verify generation gen inside an already opened and checked task dir. */
static int verify_at(struct phos_store *s, int task_fd, const char *taskpath,
		     const struct phos_image_id *id, uint64_t gen, uid_t allowed_uid, unsigned flags,
		     struct phos_manifest *out, struct phos_err *e)
{
	struct phos_manifest m;
	struct walk wk = { .s = s, .e = e, .m = &m, .flags = flags };
	char gname[24], top[PATH_MAX];
	char *mbuf = NULL, *macbuf = NULL;
	size_t mlen = 0, maclen = 0, i;
	int gfd = -1, rc = -1;

	phos_manifest_init(&m);
	if (!s->key || !s->key->len)
		return phos_errnof(e, EINVAL, "no node key loaded: cannot verify images");
	if (phos_image_gen_format(gen, gname, sizeof(gname)) < 0)
		return phos_errnof(e, EINVAL, "generation %" PRIu64 " out of range", gen);
	if (bprintf(top, sizeof(top), "%s/%s", taskpath, gname) < 0)
		return phos_errnof(e, ENAMETOOLONG, "path too long");
	wk.top = top;
	gfd = openat(task_fd, gname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (gfd < 0 && errno == ENOENT)
		return phos_errnof(e, ENOENT, "generation %" PRIu64 " does not exist (%s)", gen, top);
	if (gfd < 0 && (errno == ELOOP || errno == ENOTDIR))
		return phos_errnof(e, ELOOP, "%s is a symlink or not a directory", top);
	if (gfd >= 0)
		close(gfd);
	gfd = open_dir_at(s, task_fd, gname, false, top, e);
	if (gfd < 0)
		return -1;

	if (read_small(s, gfd, PHOS_MANIFEST_MAC_NAME, top, MAC_FILE_MAX, &macbuf, &maclen, e) < 0) {
		if (errno == ENOENT)
			phos_errnof(e, ENOKEY, "%s/%s is missing: the manifest cannot be authenticated "
				    "(tampered or incomplete image)", top, PHOS_MANIFEST_MAC_NAME);
		goto out;
	}
	if (read_small(s, gfd, PHOS_MANIFEST_NAME, top, PHOS_MANIFEST_MAX, &mbuf, &mlen, e) < 0) {
		if (errno == ENOENT)
			phos_errnof(e, EBADMSG, "%s/%s is missing", top, PHOS_MANIFEST_NAME);
		goto out;
	}
	if (phos_mac_check(s->key, mbuf, mlen, macbuf, maclen, e) < 0) {
		if (errno == EKEYREJECTED)
			phos_errnof(e, EKEYREJECTED, "%s: the MAC of %s does not match: the manifest was "
				    "changed or signed with another node key; refusing it", top,
				    PHOS_MANIFEST_NAME);
		goto out;
	}
	if (phos_manifest_parse(&m, top, mbuf, mlen, e) < 0)
		goto out;
	if (!id_equal(&m.id, id) || m.generation != gen) {
		phos_errnof(e, EBADMSG, "%s: the manifest describes another task or generation "
			    "(generation %" PRIu64 ")", top, m.generation);
		goto out;
	}
	if (allowed_uid != PHOS_UID_ANY && m.uid != allowed_uid) {
		phos_errnof(e, EACCES, "%s belongs to uid %u (%s), not to uid %u: refusing to restore "
			    "another user's image", top, (unsigned)m.uid, m.user, (unsigned)allowed_uid);
		goto out;
	}
	wk.seen = calloc(m.n_files ? m.n_files : 1, sizeof(bool));
	if (!wk.seen) {
		phos_errnof(e, ENOMEM, "out of memory");
		goto out;
	}
	if (walk_dir(&wk, gfd, "", 0) < 0)
		goto out;
	for (i = 0; i < m.n_files; i++) {
		if (!wk.seen[i]) {
			phos_errnof(e, ENODATA, "%s/%s is listed in the manifest but missing", top,
				    m.files[i].name);
			goto out;
		}
	}
	if (!(flags & PHOS_VERIFY_QUICK) && check_chunks(s, task_fd, taskpath, gfd, top, &m, e) < 0)
		goto out;
	rc = 0;
	if (out) {
		phos_manifest_free(out);
		*out = m;
		phos_manifest_init(&m);
	}
out:
	free(wk.seen);
	free(mbuf);
	free(macbuf);
	phos_manifest_free(&m);
	closep(&gfd);
	return rc;
}

int phos_image_verify(struct phos_store *s, const struct phos_image_id *id, uint64_t gen,
		      uid_t allowed_uid, unsigned flags, struct phos_manifest *m, struct phos_err *e)
{
	char taskpath[PATH_MAX];
	int tfd, rc;

	tfd = open_task(s, id, false, taskpath, sizeof(taskpath), e);
	if (tfd < 0) {
		if (errno == ENOENT) {
			char g[24];

			phos_image_gen_format(gen, g, sizeof(g));
			phos_image_task_path(s, id, taskpath, sizeof(taskpath), NULL);
			return phos_errnof(e, ENOENT, "generation %" PRIu64 " does not exist (%s/%s)",
					   gen, taskpath, g);
		}
		return -1;
	}
	rc = verify_at(s, tfd, taskpath, id, gen, allowed_uid, flags, m, e);
	closep(&tfd);
	return rc;
}

/* ---- listing and selection ---------------------------------------------- */

int phos_image_list_generations(struct phos_store *s, const struct phos_image_id *id,
				uid_t allowed_uid, unsigned flags, struct phos_image_gen_info **out,
				size_t *n, struct phos_err *e)
{
	char taskpath[PATH_MAX];
	struct phos_image_gen_info *info = NULL;
	uint64_t *gens = NULL;
	size_t ngen = 0, i;
	int tfd;

	*out = NULL;
	*n = 0;
	tfd = open_task(s, id, false, taskpath, sizeof(taskpath), e);
	if (tfd < 0)
		return errno == ENOENT ? 0 : -1;
	if (scan_gens(tfd, taskpath, &gens, &ngen, NULL, e) < 0)
		goto fail;
	if (ngen) {
		info = calloc(ngen, sizeof(*info));
		if (!info) {
			phos_errnof(e, ENOMEM, "out of memory");
			goto fail;
		}
	}
	for (i = 0; i < ngen; i++) {
		struct phos_manifest m;
		struct phos_err ve = { "" };
		size_t j;

		phos_manifest_init(&m);
		info[i].generation = gens[i];
		if (verify_at(s, tfd, taskpath, id, gens[i], allowed_uid, flags, &m, &ve) < 0) {
			info[i].err = errno ? errno : EIO;
			memcpy(info[i].reason, ve.msg, sizeof(info[i].reason));
			continue;
		}
		info[i].created = m.created;
		memcpy(info[i].host, m.host, sizeof(info[i].host));
		for (j = 0; j < m.n_files; j++)
			info[i].bytes += m.files[j].size;
		phos_manifest_free(&m);
	}
	free(gens);
	closep(&tfd);
	*out = info;
	*n = ngen;
	return 0;
fail:
	free(gens);
	free(info);
	closep(&tfd);
	return -1;
}

int phos_image_select(struct phos_store *s, const struct phos_image_id *id, uid_t allowed_uid,
		      unsigned flags, uint64_t *gen, struct phos_manifest *m, struct phos_err *e)
{
	return phos_image_select_below(s, id, allowed_uid, flags, UINT64_MAX, gen, m, e);
}

int phos_image_select_below(struct phos_store *s, const struct phos_image_id *id,
			    uid_t allowed_uid, unsigned flags, uint64_t below, uint64_t *gen,
			    struct phos_manifest *m, struct phos_err *e)
{
	char taskpath[PATH_MAX];
	struct phos_err first = { "" };
	uint64_t *gens = NULL;
	size_t ngen = 0, i;
	int tfd, first_err = 0, rc = -1;

	tfd = open_task(s, id, false, taskpath, sizeof(taskpath), e);
	if (tfd < 0) {
		if (errno == ENOENT) {
			phos_image_task_path(s, id, taskpath, sizeof(taskpath), NULL);
			return phos_errnof(e, ENOENT, "no checkpoint exists for %s", taskpath);
		}
		return -1;
	}
	if (scan_gens(tfd, taskpath, &gens, &ngen, NULL, e) < 0)
		goto out;
	if (ngen == 0) {
		phos_errnof(e, ENOENT, "no checkpoint exists for %s", taskpath);
		goto out;
	}
	while (ngen && gens[ngen - 1] >= below)
		ngen--;
	if (ngen == 0) {
		phos_errnof(e, ENOENT, "no checkpoint older than generation %" PRIu64 " exists for %s",
			    below, taskpath);
		goto out;
	}
	for (i = ngen; i-- > 0;) {
		struct phos_err ve = { "" };

		if (verify_at(s, tfd, taskpath, id, gens[i], allowed_uid, flags, m, &ve) == 0) {
			*gen = gens[i];
			rc = 0;
			goto out;
		}
		if (!first_err) {
			first_err = errno ? errno : EIO;
			first = ve;
		}
		log_warn("%s: generation %" PRIu64 " skipped: %s", taskpath, gens[i], ve.msg);
	}
	if (ngen > 1)
		phos_errnof(e, first_err, "no valid checkpoint (%zu generations, older ones' reasons "
			    "are in the log); newest: %s", ngen, first.msg);
	else
		phos_errnof(e, first_err, "no valid checkpoint: %s", first.msg);
out:
	free(gens);
	closep(&tfd);
	return rc;
}

/* ---- walking tasks ------------------------------------------------------ */

typedef int (*dir_cb)(struct phos_store *s, int fd, const char *path,
		      const struct phos_image_id *id, void *arg, struct phos_err *e);

struct each {
	struct phos_store *s;
	const char *user, *job;		/* filters, NULL = all */
	dir_cb user_cb, task_cb;	/* user_cb on each user dir (may be NULL) */
	void *arg;
	struct phos_err *e;
};

/* Open each child directory of fd whose name passes accept(); calls next
 * on it.  Unsafe or vanished children are skipped with a warning. */
static int each_child(struct each *c, int fd, const char *path, struct phos_image_id *id,
		      int level);

static int each_level(struct each *c, int fd, const char *path, struct phos_image_id *id,
		      int level, const char *name)
{
	char sub[PATH_MAX];
	struct phos_err le = { "" };
	uint64_t v;
	int cfd, rc = 0;

	switch (level) {
	case 0:
		if (!phos_image_user_ok(name))
			return 0;
		strcpy(id->user, name);
		break;
	case 1:
		if (phos_image_job_parse(name, id) < 0)
			return 0;
		break;
	case 2:
		if (phos_image_step_parse(name, &id->step) < 0)
			return 0;
		break;
	case 3:
		if (parse_canon_u64(name, UINT32_MAX, &v) < 0)
			return 0;
		id->task = (uint32_t)v;
		if (phos_image_id_check(id, NULL) < 0)
			return 0;
		break;
	}
	if (bprintf(sub, sizeof(sub), "%s/%s", path, name) < 0)
		return 0;
	cfd = open_dir_at(c->s, fd, name, false, sub, &le);
	if (cfd < 0) {
		if (errno != ENOENT)	/* vanished meanwhile: not worth a word */
			log_warn("skipping %s", le.msg);
		return 0;
	}
	if (level == 0 && c->user_cb)
		rc = c->user_cb(c->s, cfd, sub, id, c->arg, c->e);
	if (rc == 0) {
		if (level == 3)
			rc = c->task_cb(c->s, cfd, sub, id, c->arg, c->e);
		else
			rc = each_child(c, cfd, sub, id, level + 1);
	}
	close(cfd);
	return rc;
}

static int each_child(struct each *c, int fd, const char *path, struct phos_image_id *id,
		      int level)
{
	const char *only = level == 0 ? c->user : level == 1 ? c->job : NULL;
	struct dirent *de;
	int dfd, rc = 0;
	DIR *d;

	if (only)
		return each_level(c, fd, path, id, level, only);
	dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || !(d = fdopendir(dfd))) {
		if (dfd >= 0)
			close(dfd);
		return phos_errnof(c->e, errno, "%s: %s", path, strerror(errno));
	}
	while (rc == 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		rc = each_level(c, fd, path, id, level, de->d_name);
	}
	closedir(d);
	return rc;
}

static int each_task(struct each *c)
{
	struct phos_image_id id;

	memset(&id, 0, sizeof(id));
	if (c->s->root_fd < 0)
		return phos_errnof(c->e, EBADF, "image store is not open");
	if (c->user && !phos_image_user_ok(c->user))
		return phos_errnof(c->e, EINVAL, "invalid user name '%.64s'", c->user);
	if (c->job && phos_image_job_parse(c->job, &id) < 0)
		return phos_errnof(c->e, EINVAL, "invalid job '%.32s' (a job id or pid-<pid>)", c->job);
	return each_child(c, c->s->root_fd, c->s->root, &id, 0);
}

struct task_list {
	struct phos_image_task_info *v;
	size_t n, cap;
};

static int list_task_cb(struct phos_store *s, int fd, const char *path,
			const struct phos_image_id *id, void *arg, struct phos_err *e)
{
	struct task_list *l = arg;
	uint64_t *gens = NULL;
	size_t ngen = 0;

	if (scan_gens(fd, path, &gens, &ngen, NULL, e) < 0)
		return -1;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct phos_image_task_info *nv = realloc(l->v, cap * sizeof(*nv));

		if (!nv) {
			free(gens);
			return phos_errnof(e, ENOMEM, "out of memory");
		}
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n].id = *id;
	l->v[l->n].n_generations = ngen;
	l->v[l->n].newest = ngen ? gens[ngen - 1] : 0;
	l->n++;
	free(gens);
	return 0;
}

static int cmp_task(const void *a, const void *b)
{
	const struct phos_image_id *x = &((const struct phos_image_task_info *)a)->id;
	const struct phos_image_id *y = &((const struct phos_image_task_info *)b)->id;
	int c = strcmp(x->user, y->user);

	if (c)
		return c;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->job != y->job)
		return x->job < y->job ? -1 : 1;
	if (x->step != y->step)
		return x->step < y->step ? -1 : 1;
	return x->task < y->task ? -1 : x->task > y->task;
}

int phos_image_list_tasks(struct phos_store *s, const char *user, const char *job,
			  struct phos_image_task_info **out, size_t *n, struct phos_err *e)
{
	struct task_list l = { 0 };
	struct each c = { .s = s, .user = user, .job = job, .task_cb = list_task_cb, .arg = &l,
			  .e = e };

	*out = NULL;
	*n = 0;
	if (each_task(&c) < 0) {
		free(l.v);
		return -1;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_task);
	*out = l.v;
	*n = l.n;
	return 0;
}

/* ---- removal, retention, cleanup ---------------------------------------- */

int phos_image_remove_job(struct phos_store *s, const struct phos_image_id *id,
			  struct phos_err *e)
{
	struct phos_image_id jid = *id;
	char path[PATH_MAX], job[32];
	int ufd, rc;

	jid.step = 0;
	jid.task = 0;
	if (phos_image_id_check(&jid, e) < 0 || phos_image_job_format(&jid, job, sizeof(job)) < 0)
		return -1;
	if (s->root_fd < 0)
		return phos_errnof(e, EBADF, "image store is not open");
	if (bprintf(path, sizeof(path), "%s/%s", s->root, id->user) < 0)
		return phos_errnof(e, ENAMETOOLONG, "path too long");
	ufd = open_dir_at(s, s->root_fd, id->user, false, path, e);
	if (ufd < 0)
		return errno == ENOENT ? 0 : -1;
	if (bprintf(path, sizeof(path), "%s/%s/%s", s->root, id->user, job) < 0) {
		close(ufd);
		return phos_errnof(e, ENAMETOOLONG, "path too long");
	}
	rc = remove_hidden(s, ufd, job, path, e);
	if (rc < 0 && errno == ENOENT)
		rc = 0;
	close(ufd);
	return rc;
}

/* Remove stale partials and removal leftovers in dir fd; returns count. */
static int clean_dir(struct phos_store *s, int fd, const char *path, time_t max_age, bool partials,
		     struct phos_err *e)
{
	time_t now = time(NULL);
	struct dirent *de;
	int dfd, count = 0;
	DIR *d;

	dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || !(d = fdopendir(dfd))) {
		if (dfd >= 0)
			close(dfd);
		return phos_errnof(e, errno, "%s: %s", path, strerror(errno));
	}
	while ((de = readdir(d))) {
		char host[PHOS_HOST_MAX];
		struct stat st;
		uint64_t gen;
		pid_t pid;
		bool stale = false;

		if (!strncmp(de->d_name, REMOVING_PREFIX, strlen(REMOVING_PREFIX))) {
			stale = true;
		} else if (partials && partial_parse(de->d_name, &gen, host, sizeof(host), &pid) == 0) {
			if (!strcmp(host, s->host) && pid != getpid() && kill(pid, 0) < 0 &&
			    errno == ESRCH)
				stale = true;
			else if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
				 now - st.st_mtime > max_age)
				stale = true;
		}
		if (!stale)
			continue;
		if (phos_rm_tree_at(fd, de->d_name) < 0) {
			log_warn("cannot remove %s/%s: %s", path, de->d_name, strerror(errno));
			continue;
		}
		log_info("removed stale %s/%s", path, de->d_name);
		count++;
	}
	closedir(d);
	if (count)
		fsync(fd);
	return count;
}

struct clean_arg {
	time_t max_age;
	int count;
};

static int clean_user_cb(struct phos_store *s, int fd, const char *path,
			 const struct phos_image_id *id, void *arg, struct phos_err *e)
{
	struct clean_arg *a = arg;
	int n = clean_dir(s, fd, path, a->max_age, false, e);

	if (n < 0)
		return -1;
	a->count += n;
	return 0;
}

static int clean_task_cb(struct phos_store *s, int fd, const char *path,
			 const struct phos_image_id *id, void *arg, struct phos_err *e)
{
	struct clean_arg *a = arg;
	int n = clean_dir(s, fd, path, a->max_age, true, e);

	if (n < 0)
		return -1;
	a->count += n;
	return 0;
}

int phos_image_cleanup(struct phos_store *s, const char *user, time_t max_age, struct phos_err *e)
{
	struct clean_arg a = { .max_age = max_age > 0 ? max_age : PHOS_PARTIAL_MAX_AGE };
	struct each c = { .s = s, .user = user, .user_cb = clean_user_cb, .task_cb = clean_task_cb,
			  .arg = &a, .e = e };

	if (each_task(&c) < 0)
		return -1;
	return a.count;
}

int phos_image_retain(struct phos_store *s, const struct phos_image_id *id, unsigned keep,
		      unsigned flags, struct phos_err *e)
{
	char taskpath[PATH_MAX];
	uint64_t *gens = NULL;
	size_t ngen = 0, i;
	unsigned valid = 0;
	int tfd, removed = 0, rc = -1;

	if (keep < 1)
		keep = 1;
	tfd = open_task(s, id, false, taskpath, sizeof(taskpath), e);
	if (tfd < 0)
		return errno == ENOENT ? 0 : -1;
	if (scan_gens(tfd, taskpath, &gens, &ngen, NULL, e) < 0)
		goto out;
	for (i = ngen; i-- > 0;) {
		char g[24], path[PATH_MAX];
		struct phos_err ve = { "" };

		if (valid < keep) {
			if (verify_at(s, tfd, taskpath, id, gens[i], PHOS_UID_ANY, flags, NULL, &ve) == 0)
				valid++;
			else
				log_info("%s: keeping invalid generation %" PRIu64 " (newer than kept ones): %s",
					 taskpath, gens[i], ve.msg);
			continue;
		}
		if (phos_image_gen_format(gens[i], g, sizeof(g)) < 0 ||
		    bprintf(path, sizeof(path), "%s/%s", taskpath, g) < 0) {
			phos_errnof(e, ENAMETOOLONG, "path too long");
			goto out;
		}
		if (remove_hidden(s, tfd, g, path, e) < 0) {
			if (errno != ENOENT)
				goto out;
			continue;	/* another node's retention was quicker */
		}
		log_info("retention: removed %s", path);
		removed++;
	}
	if (clean_dir(s, tfd, taskpath, PHOS_PARTIAL_MAX_AGE, true, e) < 0)
		goto out;
	sweep_chunks(s, tfd, taskpath);
	rc = removed;
out:
	free(gens);
	closep(&tfd);
	return rc;
}
