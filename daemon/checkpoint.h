/*
 * checkpoint.h - checkpoint a process tree into a new image generation.
 */
#ifndef PHOSD_CHECKPOINT_H
#define PHOSD_CHECKPOINT_H

#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "manifest.h"

struct client;

struct ckpt_req {
	pid_t pid;			/* root of the tree, our pid namespace */
	struct phos_image_id id;	/* where the image goes */
	uid_t uid;			/* owner (manifest) */
	gid_t gid;
	unsigned flags;			/* PHOS_F_LEAVE_RUNNING | PHOS_F_PREEMPT */
	unsigned predump;		/* pre-dump rounds before the final dump */
	uint64_t interval_ms;		/* recorded for the restored task */
	uid_t check_uid;		/* unprivileged requester: re-checked while frozen */
	uint32_t seq;			/* request seq, for PROGRESS */
	struct client *client;		/* NULL: no progress messages */
};

struct ckpt_result {
	uint64_t generation;
	char path[4096];
	uint64_t bytes;
	uint64_t stall_ms;		/* the tree was frozen this long */
	uint64_t total_ms;
	/* PREEMPT that failed after its dump: the tree stays stopped, held at
	 * its checkpoint (libphos's HOLD was queued at the dump), for Slurm
	 * to end; it never runs again */
	bool held;
};

/*
 * Checkpoint r->pid.  Without PHOS_F_LEAVE_RUNNING or PHOS_F_PREEMPT the
 * tree is killed after a successful dump (CRIU's default); with
 * LEAVE_RUNNING it goes on; with PREEMPT it is left stopped (Slurm kills
 * it at the end of the grace time).  On failure no generation is
 * published and the tree keeps running, unless a PREEMPT failed after its
 * dump (res->held).  0 or -1 + errno and e->msg.
 */
int checkpoint_run(const struct ckpt_req *r, struct ckpt_result *res, struct phos_err *e);

#endif
