/*
 * image.h - the checkpoint image store (see doc/image-format.md).
 *
 * Layout on the shared root (checkpoint_dir in phos.yaml):
 *
 *   <root>/<user>/<job>/<step>/<task>/<generation>/
 *
 *   user        login name of the job's owner
 *   job         Slurm job id ("1234"), or "pid-<pid>" for a process
 *               checkpointed outside Slurm (step "0", task "0")
 *   step        as Slurm prints it: "0", "1"... "batch", "extern", "interactive"
 *   task        global task id (SLURM_PROCID)
 *   generation  "000001", "000002"... (zero-padded to 6 digits so they sort)
 *
 * Ownership: <root> is 0755 root; everything below is 0700 (directories)
 * or 0600 (files), owned by root.  We chose 0700 root over 0750
 * root:<user's gid> because images hold whole process memory (keys,
 * tokens) and primary groups are often shared ("users"); users list
 * their images through phosd (`phosctl list`), which authenticates them.
 * Every reader refuses a directory or file not owned by the store's uid
 * (root in phosd) or writable by group/other: a user can never place a
 * file that phosd would restore as root.
 *
 * Lifecycle of a checkpoint (phosd):
 *
 *   phos_store_open()                     once, at start (and on reload)
 *   phos_image_begin(&w)                  -> w.path / w.dir_fd: staging dir
 *      CRIU dumps into w.path; phosd may add files there
 *      w.manifest.root_pid = ...; phos_image_set_extra(&w, ...)
 *   phos_image_publish(&w)                fsync all, manifest + MAC, rename
 *   (or phos_image_abort(&w) on failure)  removes the staging dir
 *   phos_image_retain(keep N)
 *
 * Restore: phos_image_select() (newest valid generation, full verify),
 * then phos_image_gen_path() for CRIU.
 *
 * Errors: -1 + errno and a message in the optional `struct phos_err *`.
 * phos_image_verify() uses one errno per way an image can be bad:
 *
 *   ENOENT           the generation (or the task) does not exist
 *   EPERM            a directory or file not owned by root (the store
 *                    uid) or writable by group/other
 *   ELOOP            a symlink in the generation (or as the generation)
 *   EMEDIUMTYPE      a non-regular file (fifo, device, socket)
 *   ENOKEY           manifest.mac missing
 *   EKEYREJECTED     MAC mismatch (manifest changed, or another key)
 *   EPROTONOSUPPORT  unknown manifest format version
 *   EBADMSG          manifest.yaml missing, malformed, or describing
 *                    another job/step/task/generation than its path
 *   EACCES           image owner is not the allowed requester
 *   ENODATA          a file listed in the manifest is missing
 *   EEXIST           a file present but not listed in the manifest
 *   EMSGSIZE         a file's size differs from the manifest (truncated)
 *   EILSEQ           a file's SHA-256 differs (flipped byte)
 *   other            I/O errors of open/read/fstat
 */
#ifndef PHOS_IMAGE_H
#define PHOS_IMAGE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "manifest.h"

#define PHOS_GEN_MAX		999999999ull	/* generations 1..PHOS_GEN_MAX */
#define PHOS_GEN_DIGITS		6		/* zero padding of directory names */
#define PHOS_UID_ANY		((uid_t)-1)	/* allowed_uid: root / SlurmUser */
#define PHOS_PARTIAL_MAX_AGE	(24 * 3600)	/* default age limit for cleanup */

/* flags of phos_image_verify() and the functions that call it */
#define PHOS_VERIFY_QUICK	0x1u	/* skip SHA-256 of file contents (sizes,
					 * MAC, owners, types still checked) */

/* ---- ids and names ------------------------------------------------------ */

/* True if user is usable as a directory name: 1-63 of [A-Za-z0-9._@-],
 * not starting with '.' or '-'. */
bool phos_image_user_ok(const char *user);

/* Check id: valid user, job != 0, step a normal step (< 0xfffffff0) or
 * batch/extern/interactive; PHOS_JOB_PID needs step 0, task 0.
 * -1 + EINVAL with message. */
int phos_image_id_check(const struct phos_image_id *id, struct phos_err *e);

/* Fill id for a process outside Slurm: job "pid-<pid>", step 0, task 0.
 * -1 + EINVAL on bad user/pid. */
int phos_image_id_pid(struct phos_image_id *id, const char *user, pid_t pid,
		      struct phos_err *e);

/* Fill id for a Slurm task.  -1 + EINVAL on bad values. */
int phos_image_id_slurm(struct phos_image_id *id, const char *user, uint32_t job,
			uint32_t step, uint32_t task, struct phos_err *e);

/* Directory names of the job ("1234", "pid-42") and the step ("0",
 * "batch", "extern", "interactive").  -1 + EINVAL (bad value) or
 * ENAMETOOLONG (buf too small). */
int phos_image_job_format(const struct phos_image_id *id, char *buf, size_t size);
int phos_image_step_format(uint32_t step, char *buf, size_t size);

/* Parse those names (canonical forms only: "01" is refused, so one id has
 * one directory).  job sets id->kind and id->job.  -1 + EINVAL. */
int phos_image_job_parse(const char *s, struct phos_image_id *id);
int phos_image_step_parse(const char *s, uint32_t *step);

/* Generation directory name ("000042").  -1 + EINVAL / ENAMETOOLONG. */
int phos_image_gen_format(uint64_t gen, char *buf, size_t size);
/* Parse a generation directory name (>= 6 digits, canonical).  -1 + EINVAL. */
int phos_image_gen_parse(const char *s, uint64_t *gen);

/* ---- the store ---------------------------------------------------------- */

struct phos_store {
	char root[PATH_MAX];
	int root_fd;			/* directory fd of root, -1 when closed */
	uid_t uid;			/* owner of the tree: geteuid() at open (root in phosd) */
	char host[PHOS_HOST_MAX];	/* this node (gethostname) */
	const struct phos_key *key;	/* not owned; must outlive the store */
};

/*
 * Open the image root.  With create, a missing root is created (parents
 * too) 0755.  The root must be a directory owned by geteuid() and not
 * writable by group/other (EPERM with a chown/chmod hint otherwise).
 * key may be NULL only for read-only listing without MAC checks being
 * wanted: verify/publish then fail with EINVAL.  Safe to close twice.
 */
int phos_store_open(struct phos_store *s, const char *root, const struct phos_key *key,
		    bool create, struct phos_err *e);

/* Close s->root_fd.  Safe on NULL, on a zeroed-then-closed store and twice. */
void phos_store_close(struct phos_store *s);

/* "<root>/<user>/<job>/<step>/<task>" and ".../<generation>" into buf.
 * -1 + EINVAL (bad id) or ENAMETOOLONG (does not fit). */
int phos_image_task_path(const struct phos_store *s, const struct phos_image_id *id,
			 char *buf, size_t size, struct phos_err *e);
int phos_image_gen_path(const struct phos_store *s, const struct phos_image_id *id,
			uint64_t gen, char *buf, size_t size, struct phos_err *e);

/* ---- writing a generation ----------------------------------------------- */

struct phos_image_writer {
	struct phos_store *store;	/* not owned */
	struct phos_image_id id;
	uint64_t generation;		/* the number it will be published as */
	int task_fd;			/* the task directory */
	int dir_fd;			/* the staging directory: CRIU images_dir_fd */
	char name[NAME_MAX + 1];	/* ".partial-<gen>-<host>-<pid>" */
	char path[PATH_MAX];		/* full path of the staging directory */
	struct phos_manifest manifest;	/* phosd sets root_pid, root_nspid, extra;
					 * uid/gid/user/host/created/id/gen are
					 * set by begin, files by publish */
	int chunks_fd;			/* <task>/chunks, once asked for */
	int lock_fd;			/* its lock, held shared until the end */
};

/*
 * Start a generation of id owned by uid/gid: create the task directory
 * chain (0700 root) if needed and the staging directory
 * `<taskdir>/.partial-<gen>-<host>-<pid>/`, with gen = newest existing
 * (published or partial) + 1.  On success w owns two fds and must be
 * ended with phos_image_publish() or phos_image_abort().  On failure w
 * holds nothing (abort is still safe).  Errors: EINVAL (bad id), EPERM
 * (unsafe directory on the way), ENOSPC/EIO... from mkdir/open.
 */
int phos_image_begin(struct phos_store *s, const struct phos_image_id *id, uid_t uid,
		     gid_t gid, struct phos_image_writer *w, struct phos_err *e);

/* Set a free-form manifest string (e.g. "stdio.1" -> "pipe:[12345]",
 * "criu.version").  As phos_manifest_set_extra(). */
int phos_image_set_extra(struct phos_image_writer *w, const char *key, const char *value,
			 struct phos_err *e);

/*
 * Publish: walk the staging directory (refusing symlinks, non-regular
 * files, names not allowed by phos_manifest_name_ok(), and files/dirs not
 * owned by the store uid), make files 0600 and directories 0700, fsync
 * and hash every file, fsync every directory, write manifest.yaml then
 * manifest.mac (each fsynced), fsync the staging dir, rename it to
 * "<gen>" (never replacing an existing one: EEXIST) and fsync the task
 * directory.  On success the fds are closed (-1) and w->manifest (with
 * the file list) stays readable until phos_image_abort(), which the
 * caller calls in every case to free it.  On failure the
 * staging directory is left for phos_image_abort() and nothing is visible
 * as a generation.  Errors: EINVAL, ELOOP, EMEDIUMTYPE, EPERM, EEXIST,
 * ENOSPC, EIO...
 */
int phos_image_publish(struct phos_image_writer *w, struct phos_err *e);

/*
 * For pre-dump rounds: CRIU links an images directory to its parent
 * (--prev-images-dir) with a symlink named "parent", which publish would
 * refuse.  Do the pre-dumps into subdirectories of w->path (e.g.
 * "pre-1", then "pre-2" with --prev-images-dir ../pre-1) and the final
 * dump into w->path with --prev-images-dir pre-2; then call this: it
 * replaces each "parent" symlink along the chain by the directory it
 * points to (w->path/parent/parent/...), which CRIU's restore reads the
 * same way.  Targets must be relative and stay inside w->path.  0 when
 * there is no parent.  Errors: EINVAL (target outside or not a
 * directory), EMEDIUMTYPE, ELOOP (chain too deep), rename/unlink errnos.
 */
int phos_image_inline_parents(struct phos_image_writer *w, struct phos_err *e);

/*
 * The task's chunk store (common/chunks.h), created if needed: the
 * directory `<task>/chunks` (0700), whose lock the writer then holds
 * shared until publish or abort, so that no retention sweep removes a
 * chunk this generation is about to name.  Returns the directory fd
 * (owned by w), or -1.  Helpers reach it as "../chunks" from the staging
 * directory.
 */
int phos_image_chunks_open(struct phos_image_writer *w, struct phos_err *e);

/* End a writer: remove the staging directory if it was not published,
 * close the fds, free the manifest.  Call it after publish too (then it
 * removes nothing).  Safe after phos_image_writer_init(), twice; keeps errno. */
void phos_image_abort(struct phos_image_writer *w);

/* Zero w with fds -1 (so abort is safe before begin).  Never fails. */
void phos_image_writer_init(struct phos_image_writer *w);

/* ---- reading ------------------------------------------------------------ */

/*
 * Verify generation gen of id for a requester: every directory from the
 * per-user one down (owner, mode), every entry in the generation (type,
 * owner, mode), MAC, manifest version and content, that the manifest
 * describes this id and gen, owner (m.uid == allowed_uid unless
 * allowed_uid == PHOS_UID_ANY), the file list, sizes and (without
 * PHOS_VERIFY_QUICK) SHA-256 of every file.  On success the manifest is
 * returned in m if not NULL (caller frees with phos_manifest_free()).
 * Errors: the errno table at the top of this file.
 */
int phos_image_verify(struct phos_store *s, const struct phos_image_id *id, uint64_t gen,
		      uid_t allowed_uid, unsigned flags, struct phos_manifest *m,
		      struct phos_err *e);

struct phos_image_gen_info {
	uint64_t generation;
	int err;			/* 0 = valid, else phos_image_verify()'s errno */
	char reason[PHOS_ERR_MAX];	/* "" or why it is not valid */
	time_t created;			/* from the manifest when it was readable */
	uint64_t bytes;			/* sum of file sizes in the manifest */
	char host[PHOS_HOST_MAX];	/* writer host, when readable */
};

/*
 * All published generations of id, ascending, each verified with flags
 * (valid or not, with a reason).  Staging/removal dirs are not listed.
 * *out is malloc'd (caller frees; NULL when *n == 0).  A task without
 * images gives 0 and *n = 0.  Errors: EPERM (unsafe directory above the
 * generations), ENOMEM, I/O.
 */
int phos_image_list_generations(struct phos_store *s, const struct phos_image_id *id,
				uid_t allowed_uid, unsigned flags,
				struct phos_image_gen_info **out, size_t *n, struct phos_err *e);

/*
 * Pick the newest valid generation of id for a restore (full verify
 * unless flags say otherwise); newer invalid ones are skipped with a
 * log_warn() giving the reason.  On success *gen is set and the manifest
 * returned in m if not NULL.  Errors: ENOENT when there is no generation
 * at all; otherwise, when none is valid, the newest one's errno with all
 * reasons in the message.
 */
int phos_image_select(struct phos_store *s, const struct phos_image_id *id, uid_t allowed_uid,
		      unsigned flags, uint64_t *gen, struct phos_manifest *m, struct phos_err *e);
/* The same among the generations older than below (ENOENT: none). */
int phos_image_select_below(struct phos_store *s, const struct phos_image_id *id,
			    uid_t allowed_uid, unsigned flags, uint64_t below, uint64_t *gen,
			    struct phos_manifest *m, struct phos_err *e);

/*
 * Parse "<checkpoint_dir>/<user>/<job>/<step>/<task>/<generation>" (a
 * generation directory under s's root) into id and gen; EINVAL with a
 * message when path is not one.
 */
int phos_image_parse_path(const struct phos_store *s, const char *path, struct phos_image_id *id,
			  uint64_t *gen, struct phos_err *e);

struct phos_image_task_info {
	struct phos_image_id id;
	size_t n_generations;		/* published (listed, not verified) */
	uint64_t newest;		/* 0 when none */
};

/*
 * Tasks having an image directory under user (NULL: all users) and job
 * (directory form "1234" / "pid-42"; NULL: all jobs), sorted by user,
 * job, step, task.  Names that are not canonical ids are skipped.
 * *out malloc'd, caller frees.  Errors: EINVAL (bad filter), EPERM,
 * ENOMEM, I/O.  A missing user/job directory gives 0 and *n = 0.
 */
int phos_image_list_tasks(struct phos_store *s, const char *user, const char *job,
			  struct phos_image_task_info **out, size_t *n, struct phos_err *e);

/* ---- removal ------------------------------------------------------------ */

/*
 * Remove all images of id's job (user, kind, job; step and task are
 * ignored): the job directory is first renamed to a hidden
 * ".removing-..." name (so it vanishes at once for readers), then
 * deleted without following symlinks.  A missing job is not an error.
 */
int phos_image_remove_job(struct phos_store *s, const struct phos_image_id *id,
			  struct phos_err *e);

/*
 * Retention for one task: keep the newest `keep` valid generations
 * (keep < 1 counts as 1) and any invalid generation newer than the
 * oldest kept one; remove older ones, valid or not.  Without any valid
 * generation nothing is removed.  Stale staging directories of the task
 * are cleaned as by phos_image_cleanup().  flags as phos_image_verify()
 * (PHOS_VERIFY_QUICK avoids rehashing big images).  Returns the number
 * of generations removed, or -1 + errno.
 */
int phos_image_retain(struct phos_store *s, const struct phos_image_id *id, unsigned keep,
		      unsigned flags, struct phos_err *e);

/*
 * Remove stale staging (".partial-<gen>-<host>-<pid>") directories under
 * user (NULL: all users): those written on this host by a pid that no
 * longer exists, and any older than max_age seconds (0: the default
 * PHOS_PARTIAL_MAX_AGE); and leftovers of interrupted removals.  Returns
 * the number of directories removed, or -1 + errno.
 */
int phos_image_cleanup(struct phos_store *s, const char *user, time_t max_age,
		       struct phos_err *e);

#endif
