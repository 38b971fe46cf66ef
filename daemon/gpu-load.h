/*
 * gpu-load.h - phos-restore's side of loading GPU buffers (doc/concurrent-
 * restore.md, doc/protocol.md "GPU memory").
 *
 * One phos-gpu helper per gpumem-TAG.map of the image (TAG: the pid the
 * process had in its namespace).  The helpers are started before CRIU
 * runs: each makes its CUDA context, creates the buffers and, for a
 * concurrent load, begins filling them in first-use order while CRIU and
 * the driver restore the process.  Once the process exists its buffers
 * are handed to it through phosd.
 */
#ifndef PHOS_GPU_LOAD_H
#define PHOS_GPU_LOAD_H

#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

struct gpu_loads;

/* Start a helper per map in the image directory dirfd (none: *out is an
 * empty set).  Call it in the node's pid namespace (the driver needs a
 * /proc that matches).  stage_fd >= 0: phosd's staging pool, which holds
 * the buffers of the maps pieces names ("TAG OFFSET" lines, STAGE_GET):
 * those helpers load from it; cuda (NULL or .fd NULL: none): the pieces of
 * a driver-pinned pool.  env: the helpers' environment (NULL: ours), with
 * the generation's PHOS_GPU_SUMS_KEY.  0, or -1 with e (no helper left
 * running). */
struct stage_cuda;
int gpu_load_start(int dirfd, bool concurrent, int stage_fd, const struct stage_cuda *cuda,
		   const char *pieces, char *const *env, struct gpu_loads **out,
		   struct phos_err *e);

/* The restored tree is root's: hand each helper's buffers to the process
 * of its TAG through phosd at socket, then wait for every helper to end.
 * 0, or -1 with e (the helpers are stopped; the caller kills the tree). */
int gpu_load_finish(struct gpu_loads *l, pid_t root, const char *socket, struct phos_err *e);

/* What the helpers said last ("" if nothing): for the restore's report. */
const char *gpu_load_said(const struct gpu_loads *l);

/* Stop the helpers still running and free the set (NULL: nothing). */
void gpu_load_free(struct gpu_loads *l);

#endif
