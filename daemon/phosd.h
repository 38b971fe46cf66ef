/*
 * phosd.h - the node daemon's shared state.
 *
 * One `struct phosd` per process.  Fields below `lock` are guarded by it;
 * the config is replaced only under the lock (SIGHUP reload) and read by
 * copying the fields needed while holding it.
 */
#ifndef PHOSD_H
#define PHOSD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf.h"
#include "image.h"
#include "manifest.h"

struct registry;
struct oplist;

struct phosd {
	const char *config_path;
	int listen_fd;
	int tcp_fd;			/* -1 unless `listen` is set */
	int signal_fd;
	uint64_t start_ms;
	char host[64];
	volatile bool stopping;

	pthread_mutex_t lock;
	struct phos_config cfg;
	uid_t slurm_uid;		/* (uid_t)-1 if slurm_user is unknown */
	unsigned nclients;
	struct registry *reg;
	struct oplist *ops;

	/* Set at start; the store's root and key do not change on reload. */
	struct phos_key key;
	struct phos_store store;
	char restore_helper[4096];	/* phos-restore */
	bool mem_track;			/* CRIU can pre-dump (soft-dirty tracking) */
};

/* The daemon (one per process). */
extern struct phosd *phosd;

#endif
