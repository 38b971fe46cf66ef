/*
 * manifest.h - the manifest of one checkpoint generation, its MAC and the
 * node key (see doc/image-format.md).
 *
 * A generation directory holds CRIU's image files, files phosd adds, and
 * two files of ours written last:
 *   manifest.yaml  what the generation holds (owner, ids, every file with
 *                  its size and SHA-256), emitted and parsed with libyaml;
 *   manifest.mac   HMAC-SHA256 over the exact bytes of manifest.yaml with
 *                  the node key, as 64 lowercase hex digits and a newline.
 *
 * Conventions: functions return 0 (or a pointer) on success, -1 (or NULL)
 * with errno set on failure, and fill the optional `struct phos_err *`.
 * Strings in a struct phos_manifest are owned by it (heap copies) and freed
 * by phos_manifest_free().
 */
#ifndef PHOS_MANIFEST_H
#define PHOS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>

#include "err.h"

#define PHOS_MANIFEST_VERSION	1
#define PHOS_MANIFEST_NAME	"manifest.yaml"
#define PHOS_MANIFEST_MAC_NAME	"manifest.mac"
#define PHOS_MANIFEST_MAX	(16u << 20)	/* refuse larger manifests */
#define PHOS_SHA256_LEN		32
#define PHOS_MAC_LEN		32
#define PHOS_KEY_MIN		32		/* bytes */
#define PHOS_KEY_MAX		4096
#define PHOS_USER_MAX		64		/* login name + NUL */
#define PHOS_HOST_MAX		256
#define PHOS_REL_MAX		1024		/* relative file name + NUL */

/*
 * Step ids that Slurm prints as words (values of slurm.h, 22.05-24.11);
 * copied here so libphoscommon does not need slurm.h.  The unit tests
 * check them against slurm.h when it is available.
 */
#define PHOS_STEP_INTERACTIVE	0xfffffffau	/* SLURM_INTERACTIVE_STEP */
#define PHOS_STEP_BATCH		0xfffffffbu	/* SLURM_BATCH_SCRIPT */
#define PHOS_STEP_EXTERN	0xfffffffcu	/* SLURM_EXTERN_CONT */
#define PHOS_STEP_PENDING	0xfffffffdu	/* SLURM_PENDING_STEP (never stored) */

/* What kind of job an image belongs to. */
enum phos_job_kind {
	PHOS_JOB_SLURM = 0,	/* job = Slurm job id, directory "<job>" */
	PHOS_JOB_PID = 1,	/* a process outside Slurm: job = its pid,
				 * directory "pid-<pid>", step 0, task 0 */
};

/*
 * Which task an image belongs to.  One struct for Slurm tasks and for
 * processes outside Slurm (`phosctl checkpoint --pid P`).
 */
struct phos_image_id {
	char user[PHOS_USER_MAX];	/* login name of the owner */
	enum phos_job_kind kind;
	uint32_t job;			/* Slurm job id, or pid for PHOS_JOB_PID */
	uint32_t step;			/* Slurm step id (PHOS_STEP_* included) */
	uint32_t task;			/* global task id (SLURM_PROCID) */
};

/* One file of a generation; name is relative ("pages-1.img", "parent/x"). */
struct phos_manifest_file {
	char *name;
	uint64_t size;
	uint64_t block;		/* 0: sha256 of the bytes; else of the SHA-256s of
				 * its pieces of this many bytes (hashed in
				 * parallel: phos_sha256_blocks) */
	unsigned char sha256[PHOS_SHA256_LEN];
};

/* One free-form key/value string pair set by phosd ("criu.version"...). */
struct phos_manifest_kv {
	char *key;
	char *value;
};

struct phos_manifest {
	unsigned version;		/* PHOS_MANIFEST_VERSION */
	uid_t uid;			/* owner of the checkpointed process */
	gid_t gid;
	char user[PHOS_USER_MAX];	/* owner's login name */
	char host[PHOS_HOST_MAX];	/* node that wrote the generation */
	time_t created;			/* UTC, seconds */
	struct phos_image_id id;
	uint64_t generation;
	pid_t root_pid;			/* root of the dumped tree, as phosd sees it */
	pid_t root_nspid;		/* the same in its own pid namespace */
	struct phos_manifest_kv *extra;	/* kept sorted by key */
	size_t n_extra;
	struct phos_manifest_file *files; /* kept sorted by name */
	size_t n_files;
};

/* Zero m and set version = PHOS_MANIFEST_VERSION.  Never fails. */
void phos_manifest_init(struct phos_manifest *m);

/* Free what m owns and re-init it.  Safe on NULL and twice; keeps errno. */
void phos_manifest_free(struct phos_manifest *m);

/*
 * Set extra[key] = value (both copied; replaces an existing value).
 * Keys are 1-128 chars of [A-Za-z0-9._:-]; values any UTF-8 up to 4096
 * bytes without NUL.  -1 + EINVAL (bad key/value) or ENOMEM.
 */
int phos_manifest_set_extra(struct phos_manifest *m, const char *key,
			    const char *value, struct phos_err *e);

/* Value of extra key, or NULL (errno untouched).  Owned by m. */
const char *phos_manifest_get_extra(const struct phos_manifest *m, const char *key);

/*
 * Add (or replace) a file entry; name copied.  name must be a valid
 * relative name (phos_manifest_name_ok()).  -1 + EINVAL or ENOMEM.
 */
int phos_manifest_add_file(struct phos_manifest *m, const char *name, uint64_t size,
			   const unsigned char sha256[PHOS_SHA256_LEN], struct phos_err *e);
/* The same for a file hashed in pieces of block bytes (0: whole). */
int phos_manifest_add_file_blocks(struct phos_manifest *m, const char *name, uint64_t size,
				  uint64_t block, const unsigned char sha256[PHOS_SHA256_LEN],
				  struct phos_err *e);

/* File entry by name, or NULL.  Owned by m. */
const struct phos_manifest_file *phos_manifest_find_file(const struct phos_manifest *m,
							 const char *name);

/*
 * True if name is a relative name we accept in a generation: components
 * separated by single '/', each 1-255 chars of [A-Za-z0-9._+,:=@-], not
 * starting with '.', at most 16 deep, < PHOS_REL_MAX; and not one of our
 * own manifest.yaml / manifest.mac at top level.
 */
bool phos_manifest_name_ok(const char *name);

/*
 * Emit m as YAML (libyaml emitter).  On success *buf is a malloc'd,
 * NUL-terminated buffer the caller frees, *len its length without NUL.
 * -1 + EINVAL (m invalid) or ENOMEM.
 */
int phos_manifest_emit(const struct phos_manifest *m, char **buf, size_t *len,
		       struct phos_err *e);

/*
 * Parse YAML into m (which is freed and re-initialised first; on failure
 * m is left initialised and empty).  Strict: unknown keys, duplicates,
 * missing fields and bad values are refused with EBADMSG; a version other
 * than PHOS_MANIFEST_VERSION is refused with EPROTONOSUPPORT before
 * anything else is looked at.  name is used in messages.
 */
int phos_manifest_parse(struct phos_manifest *m, const char *name, const char *buf,
			size_t len, struct phos_err *e);

/* ---- node key and MAC ------------------------------------------------ */

struct phos_key {
	unsigned char bytes[PHOS_KEY_MAX];
	size_t len;			/* 0 = no key */
};

/*
 * Load the node key from path.  The file must be a regular file (not a
 * symlink) owned by root with no group/other permission bits (0600 or
 * 0400), and hold PHOS_KEY_MIN..PHOS_KEY_MAX bytes (all of it is the
 * key).  Errors: the open(2)/read(2) errno; EPERM for wrong owner/mode
 * (message says the chown/chmod that fixes it); EINVAL for a key too
 * short/long or not a regular file.
 */
int phos_key_load(struct phos_key *k, const char *path, struct phos_err *e);

/* Set the key from memory (tests, or a key phosd got elsewhere).
 * -1 + EINVAL when len is outside PHOS_KEY_MIN..PHOS_KEY_MAX. */
int phos_key_set(struct phos_key *k, const void *bytes, size_t len, struct phos_err *e);

/* Wipe the key (OPENSSL_cleanse).  Safe on NULL and twice. */
void phos_key_clear(struct phos_key *k);

/*
 * HMAC-SHA256 of buf with k into mac.  -1 + EINVAL (no key) or EIO
 * (OpenSSL failure).
 */
int phos_mac_compute(const struct phos_key *k, const void *buf, size_t len,
		     unsigned char mac[PHOS_MAC_LEN], struct phos_err *e);

/*
 * The key of a generation's GPU buffer sums (common/savetab.h, the map's
 * "k1"): the first 8 bytes, little-endian, of HMAC-SHA256 with k of
 * "phos gpumem sums 1" and the generation's identity (owner, job, step,
 * task, generation), never 0.  phosd derives it for phos-gpu save,
 * phos-restore for phos-gpu load.  -1 + e as phos_mac_compute().
 */
int phos_gpumem_key(const struct phos_key *k, const struct phos_image_id *id, uint64_t gen,
		    uint64_t *key, struct phos_err *e);

/* "PHOS_GPU_SUMS_KEY=<16 hex digits>" for phos-gpu's environment. */
#define PHOS_GPU_SUMS_KEY_ENV_LEN 35
void phos_gpumem_key_env(uint64_t key, char out[PHOS_GPU_SUMS_KEY_ENV_LEN]);

/*
 * Format mac as the manifest.mac content (64 hex digits + '\n' + NUL;
 * out must hold 66 bytes).
 */
void phos_mac_format(const unsigned char mac[PHOS_MAC_LEN], char out[2 * PHOS_MAC_LEN + 2]);

/*
 * Check the manifest.mac content text (len bytes) against buf in constant
 * time.  -1 + EKEYREJECTED when the MAC does not match or the text is
 * malformed; EINVAL/EIO as phos_mac_compute().
 */
int phos_mac_check(const struct phos_key *k, const void *buf, size_t len,
		   const char *mac_text, size_t mac_len, struct phos_err *e);

/*
 * SHA-256 of the rest of fd (read from its current offset to EOF) into
 * sha; *size gets the number of bytes read.  -1 + read(2) errno or EIO.
 */
int phos_sha256_fd(int fd, unsigned char sha[PHOS_SHA256_LEN], uint64_t *size);

/*
 * Files of at least PHOS_BLOCKS_MIN bytes are hashed in pieces of
 * PHOS_BLOCK bytes by several threads: the digest is the SHA-256 of the
 * concatenated SHA-256s of the pieces (the last one shorter).  size bytes
 * of fd from offset 0 (pread; the offset is not used).  -1 + errno.
 */
#define PHOS_BLOCKS_MIN	(64ull << 20)
#define PHOS_BLOCK	(8ull << 20)
int phos_sha256_blocks(int fd, uint64_t size, uint64_t block,
		       unsigned char sha[PHOS_SHA256_LEN]);

/* Lowercase hex of sha (65 bytes with NUL). */
void phos_sha256_format(const unsigned char sha[PHOS_SHA256_LEN], char out[2 * PHOS_SHA256_LEN + 1]);

#endif
