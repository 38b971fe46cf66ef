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
};

void gpu_hold_init(struct gpu_hold *h);
void gpu_hold_release(struct gpu_hold *h);

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
 * says how it copies: sv->snapshot when it took a copy of every buffer on
 * the GPU (snapshot asked, room for it): the process may have its buffers
 * back at once; else the copy reads them and they must stay detached until
 * gpu_save_finish(), which waits for the helper and reports.
 */
struct gpu_save {
	pid_t pid;		/* the helper */
	int err_fd;		/* its stderr */
	bool snapshot;		/* the helper made one (it may run on) */
	bool asked;		/* one was asked for (leave-running) */
	pid_t tag;
	const struct gpu_hold *h;
	int n;			/* h's count and bytes at the start */
	uint64_t bytes;
	uint64_t t0;
};
/* Nothing under way (what gpu_save_abort() may be given). */
void gpu_save_init(struct gpu_save *sv);
int gpu_save_start(const struct gpu_hold *h, int dir_fd, pid_t tag, bool snapshot,
		   struct gpu_save *sv, struct phos_err *e);
int gpu_save_finish(struct gpu_save *sv, struct phos_err *e);
/* Kill a helper still running (failure paths). */
void gpu_save_abort(struct gpu_save *sv);

/* The phos-gpu helper: $PHOS_GPU_HELPER or the installed one (phosd and
 * phos-restore). */
static inline const char *gpu_helper(void)
{
	const char *p = getenv("PHOS_GPU_HELPER");

	return p && *p ? p : PHOS_GPU_BIN;
}

void handle_gpu_detach(struct client *c, struct phos_msg *req);
void handle_gpu_reattach(struct client *c, struct phos_msg *req);

#endif
