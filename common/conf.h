/*
 * conf.h - phos.yaml: phosd's configuration (see phos.yaml(5)).
 *
 * Defaults live in phos_config_defaults() and nowhere else.  Parsing
 * fills a temporary and only a fully valid file is committed to the
 * caller's struct, so a failed reload leaves the running config intact.
 * Unknown keys and bad values are rejected with "FILE:LINE: key: why".
 */
#ifndef PHOS_CONF_H
#define PHOS_CONF_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define PHOS_CONFIG_DEFAULT SYSCONFDIR "/phos/phos.yaml"

struct phos_config {
	char socket[108];		/* sun_path of the local socket */
	char checkpoint_dir[PATH_MAX];	/* shared image root */
	char state_dir[PATH_MAX];	/* node-local state */
	char key_file[PATH_MAX];	/* MAC key, root-only */
	char criu_path[PATH_MAX];	/* criu binary used by libcriu */
	char log_target[16];		/* "syslog" | "stderr" */
	int log_level;			/* LOG_* */
	int keep_generations;		/* newest N generations kept */
	bool keep_images_after_job;	/* keep images when a job ends for good */
	bool gpu_concurrent_restore;	/* restored processes run while their GPU
					 * buffers load (doc/concurrent-restore.md) */
	int gpu_compress_level;		/* zstd level of GPU memory chunks, 0: off */
	int gpu_stage_pool_gib;		/* host memory a stop/preempt checkpoint's GPU
					 * copy goes through (doc/concurrent-
					 * checkpoint.md), 0: off */
	bool gpu_stage_pool_pinned;	/* the pool is host memory the NVIDIA driver
					 * pins once (phos-gpu pool-create) */
	int gpu_rank_ms;		/* ms a process ranks its GPU buffers by
					 * first use before a detach, 0: off */
	int predump_rounds;		/* default pre-dump rounds */
	int checkpoint_timeout;		/* seconds for one checkpoint */
	char listen[64];		/* "host:port" for munge-authenticated TCP, "" = off */
	char slurm_user[64];		/* may act on every job, like root */
	char munge_socket[108];		/* munged's socket, "" = libmunge's default */
};

/* Fill c with the built-in defaults. */
void phos_config_defaults(struct phos_config *c);

/*
 * Load path into c.  0 on success.  -1 with errno (ENOENT when the file
 * does not exist, EINVAL for invalid content) and e->msg naming the file,
 * line and key.  c is untouched on failure.
 */
int phos_config_load(struct phos_config *c, const char *path, struct phos_err *e);

/* Parse YAML from a memory buffer (for tests); name is used in messages. */
int phos_config_parse(struct phos_config *c, const char *name,
		      const char *buf, size_t len, struct phos_err *e);

#endif
