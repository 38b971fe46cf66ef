/*
 * cuda.h - GPU state of a checkpoint through NVIDIA's driver checkpoint
 * API (cuCheckpointProcess*, CUDA 12.8+, driver >= 570), stop-the-world.
 *
 * libcuda.so.1 is dlopen'ed on first use, so phosd and phos-restore build
 * and run on nodes without a GPU.  On such a node a process that uses the
 * GPU (holds /dev/nvidia* or maps libcuda) is still found, and its
 * checkpoint is refused: it is never dumped without its GPU state.
 *
 * Checkpoint (phosd, checkpoint.c):
 *
 *   cuda_find(root)           the CUDA processes of the tree
 *   cuda_checkpoint(timeout)  lock each (timeout: a lock that times out
 *                             leaves the process running and unlocked),
 *                             then checkpoint each: GPU memory goes to host
 *                             memory, no /dev/nvidia* fd or mapping stays
 *   cuda_record(manifest)     gpu.* extras: model, UUIDs, driver, bytes
 *   ... CRIU dump ...
 *   cuda_resume()             leave-running: restore + unlock
 *   cuda_set_free()           anything still locked/checkpointed (a failure
 *                             after the lock) is restored and unlocked, so
 *                             the app keeps running
 *
 * Restore (phos-restore, outer process in the node's pid namespace):
 *
 *   cuda_restore_check(m)     beside CRIU (its answer gates the restored
 *                             tasks at CRIU's post-restore notification):
 *                             refuse what cannot work here (no GPU/driver,
 *                             old driver, other chip, too little free
 *                             memory) and say what would
 *   ... CRIU restore: the tree runs; its CUDA calls block (still locked) ...
 *   cuda_restore_tree(root)   for each process the driver reports
 *                             CHECKPOINTED: restore (with GPU UUID pairs
 *                             when the recorded GPUs are not all here),
 *                             then unlock
 *
 * All functions return -1 + errno and fill e on failure.  Not thread-safe
 * (one checkpoint at a time calls them; the loader is guarded).
 */
#ifndef PHOSD_CUDA_H
#define PHOSD_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

struct phos_manifest;

#define CUDA_MAX_GPUS 16

/* Driver-side state of one process, as cuCheckpointProcessGetState says. */
enum cuda_pstate {
	CUDA_PS_RUNNING = 0,
	CUDA_PS_LOCKED = 1,
	CUDA_PS_CHECKPOINTED = 2,
	CUDA_PS_FAILED = 3,
	CUDA_PS_UNKNOWN = -1,
};

struct cuda_gpu {
	char uuid[64];		/* "GPU-xxxxxxxx-..." */
	char model[96];
	int minor;		/* /dev/nvidiaN */
};

struct cuda_proc {
	pid_t pid;		/* in phosd's pid namespace */
	enum cuda_pstate state;	/* what we last left it in */
	uint64_t rss_before;	/* bytes, before the driver checkpoint */
	uint64_t gpu_bytes;	/* RSS growth of the checkpoint: its GPU memory */
	int minors[CUDA_MAX_GPUS];
	int nminors;
};

struct cuda_set {
	struct cuda_proc *p;
	size_t n;
	bool done;		/* the set's final state is intended: no undo */
	uint64_t lock_ms, ckpt_ms, restore_ms, unlock_ms;	/* last durations */
};

void cuda_set_init(struct cuda_set *s);
/* Undo (restore + unlock) whatever is still locked or checkpointed unless
 * s->done, then free.  Safe twice and on an empty set; keeps errno. */
void cuda_set_free(struct cuda_set *s);

/*
 * The CUDA processes of the tree rooted at root (root and descendants):
 * those holding /dev/nvidia* fds or mapping libcuda.  Refuses (-1,
 * EOPNOTSUPP) what cannot be checkpointed here: no usable driver
 * checkpoint API on this node, MIG, MPS.
 */
int cuda_find(pid_t root, struct cuda_set *s, struct phos_err *e);

/* Lock all (each with timeout_ms, 0 = none), then checkpoint all.  On
 * failure everything already locked or checkpointed is put back running;
 * -1 + ETIMEDOUT when a lock timed out. */
int cuda_checkpoint(struct cuda_set *s, unsigned timeout_ms, struct phos_err *e);

/* Leave-running: restore + unlock all.  Sets s->done. */
int cuda_resume(struct cuda_set *s, struct phos_err *e);

/* gpu.* extras for a checkpointed set: gpu.count, gpu.N.uuid,
 * gpu.N.model, gpu.driver, gpu.bytes, gpu.processes. */
int cuda_record(const struct cuda_set *s, struct phos_manifest *m, struct phos_err *e);

/* Does m record the GPU state of any process? */
bool cuda_image_has_gpu(const struct phos_manifest *m);

/* Before the restored tasks run: can this node restore the GPU state m
 * records?  0 also when m records none.  The free memory it compares is
 * what the GPU has when it asks: the GPU buffers' loaders may have taken
 * some of it already, never more than they will hold, so a refusal is
 * never wrong (a pass can be: the driver's restore then says why). */
int cuda_restore_check(const struct phos_manifest *m, struct phos_err *e);

/* After CRIU restored the tree at root (global pid): driver restore +
 * unlock of each process of the tree the driver has CHECKPOINTED.  *n_out
 * (may be NULL): how many. */
int cuda_restore_tree(pid_t root, const struct phos_manifest *m, size_t *n_out,
		      struct phos_err *e);

/* Tests: load the driver from path (NULL: libcuda.so.1) and the node's GPU
 * table from proc_dir (NULL: /proc/driver/nvidia) from now on. */
void cuda_set_library(const char *path);
void cuda_set_proc_dir(const char *dir);

/* Driver-side state of pid (CUDA_PS_UNKNOWN if it cannot be asked). */
enum cuda_pstate cuda_state(pid_t pid);

#endif
