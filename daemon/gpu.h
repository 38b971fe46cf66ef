/*
 * gpu.h - phosd's side of GPU memory detach/reattach (doc/protocol.md,
 * "GPU memory: detach and reattach").
 *
 *   gpu_detach(pid)      DETACH signal, wait for the pid's GPU_DETACH:
 *                        phosd then holds its large buffers (fds)
 *   gpu_save_start/finish(hold, dir)
 *                        phos-gpu save: the buffers into the image
 *   gpu_reattach(hold)   REATTACH signal, hand them back on GPU_REATTACH
 *   gpu_hold_release()   close the fds (the memory goes with the last)
 *
 * The handlers run on client threads; a checkpoint thread waits in
 * gpu_detach/gpu_reattach for them (one pending request per pid).
 */
#ifndef PHOS_GPU_H
#define PHOS_GPU_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>

#include "err.h"
#include "proto.h"

struct client;

struct gpu_hold {
	pid_t pid;		/* the process they belong to (phosd's pid namespace) */
	pid_t nspid;		/* ... in its own pid namespace */
	int n;
	struct phos_gpubuf bufs[PHOS_GPUBUF_MAX];
	int fds[PHOS_GPUBUF_MAX];
	uint64_t bytes;
	int tab_fd;		/* a concurrent save's table, handed back with the
				 * buffers (GPU_REATTACH); -1: none */
};

void gpu_hold_init(struct gpu_hold *h);
void gpu_hold_release(struct gpu_hold *h);

/* Tell pid's libphos that a detach is coming (PHOS_SIGVAL_RANK): it ranks
 * its buffers by first use until then.  No answer; -1 + errno if the
 * signal could not be sent. */
int gpu_rank(pid_t pid);

/* 1: h holds pid's buffers (n > 0); 0: nothing detached (why in e: the
 * caller checkpoints with the buffers attached); -1: nothing detached and
 * the process must not be checkpointed with them attached (its memory is
 * imported: the driver checkpoint could not restore it). */
int gpu_detach(pid_t pid, unsigned timeout_ms, struct gpu_hold *h, struct phos_err *e);
/* Hand h back to pid; 0 once it took them, -1 + e (h unchanged). */
int gpu_reattach(struct gpu_hold *h, pid_t pid, unsigned timeout_ms, struct phos_err *e);
/*
 * Write h's buffers into dir_fd (gpumem-TAG.map, gpumem-TAG-N.bin) with the
 * phos-gpu helper: gpu_save_start() runs it and returns once the helper
 * says how it copies.  As `how` allows (leave-running), it may answer
 *  - sv->snapshot: it took a copy of every buffer on the GPU (room for it);
 *  - sv->cow: it hashed every buffer on the GPU and copies them while the
 *    process runs on, coordinating through the save table, which
 *    gpu_save_start() put in h->tab_fd for the process
 *    (doc/concurrent-checkpoint.md);
 * either way the process may have its buffers back at once.  Otherwise
 * the copy reads them and they stay detached until gpu_save_finish(),
 * which waits for the helper and reports; sv->mismatch then says a cow
 * save failed because a buffer changed before it was saved (the caller
 * checkpoints again without cow).
 */
struct gpu_save {
	pid_t pid;		/* the helper */
	int err_fd;		/* its stderr */
	bool snapshot;		/* the helper made one (it may run on) */
	bool cow;		/* it copies while the process runs on */
	bool mismatch;		/* cow: a buffer changed before it was saved */
	unsigned how;		/* GPU_SAVE_* asked for */
	struct phos_savetab *tab;	/* the save table (concurrent), mapped */
	int tab_fd;
	pid_t tag;
	const struct gpu_hold *h;
	int n;			/* h's count and bytes at the start */
	uint64_t bytes;
	uint64_t t0;
	bool direct;		/* it copies from the GPU to storage */
	bool staged;		/* the helper copies into the staging pool first
				 * and says "released" when the GPU memory may
				 * go (gpu_save_released) */
	int out_fd;		/* its stdout, while "released" is to come */
};
/* Nothing under way (what gpu_save_abort() may be given). */
void gpu_save_init(struct gpu_save *sv);
#define GPU_SAVE_SNAPSHOT 1u	/* a snapshot on the GPU if there is room */
#define GPU_SAVE_COW 2u		/* else a copy while the process runs */
#define GPU_SAVE_ZSTD(level) ((unsigned)(level) << 8)	/* compress chunks (1-19) */
/* stage_fd >= 0 (stop and preempt only): the staging pool's fd, of which
 * the helper may use stage_span() bytes from stage_off (stage.h); cuda
 * (NULL, or .fd NULL: none) the pieces of a driver-pinned pool */
struct stage_cuda;
/* sums_key: the generation's (phos_gpumem_key()), for the map's keyed sums;
 * 0: unkeyed */
int gpu_save_start(struct gpu_hold *h, int dir_fd, pid_t tag, unsigned how, int stage_fd,
		   uint64_t stage_off, const struct stage_cuda *cuda, uint64_t sums_key,
		   struct gpu_save *sv, struct phos_err *e);
/* A staged save: wait until the helper has the buffers in the pool and
 * has let go of them; true then (the caller closes its fds: the GPU memory
 * is free), false when it failed first (gpu_save_finish says why). */
bool gpu_save_released(struct gpu_save *sv, uint64_t *ms);
int gpu_save_finish(struct gpu_save *sv, struct phos_err *e);
/* Kill a helper still running (failure paths). */
void gpu_save_abort(struct gpu_save *sv);

/* The phos-gpu helper (phosd and phos-restore): $PHOS_GPU_HELPER, else the
 * one beside the running program (phos-restore installed, a build tree, a
 * copied set of binaries), else the installed one. */
static inline const char *gpu_helper(void)
{
	static char beside[PATH_MAX];
	const char *p = getenv("PHOS_GPU_HELPER");
	ssize_t n;
	char *slash;

	if (p && *p)
		return p;
	n = readlink("/proc/self/exe", beside, sizeof(beside) - sizeof("/phos-gpu"));
	if (n <= 0 || !(slash = memrchr(beside, '/', (size_t)n)))
		return PHOS_GPU_BIN;
	strcpy(slash, "/phos-gpu");
	return access(beside, X_OK) == 0 ? beside : PHOS_GPU_BIN;
}

void handle_gpu_detach(struct client *c, struct phos_msg *req);
void handle_gpu_reattach(struct client *c, struct phos_msg *req);

#endif
