/*
 * restore.h - restoring a Slurm task from a checkpoint image, the
 * plugin's half (the other half is daemon/phos-restore.c).
 *
 *   task_init_privileged (root, in the forked task, before stdio):
 *     phos_restore_spawn: socketpair + fork + exec, still root,
 *       phos-restore --image PATH --control-fd N --socket SOCK --job J
 *                    --step S --task T --uid UID --gid GID
 *     the task keeps its end of the socket (CLOEXEC) and returns.
 *   task_init (user, stdio set up, just before Slurm's execve):
 *     phos_restore_handover: a PHOS_MSG_RESTORE with FDMAP "0,1,2" and
 *       the task's fds 0, 1, 2 as SCM_RIGHTS on the control socket;
 *     phos_restore_exec_wait: exec phos-restore --wait-fd N in place of
 *       the task's program: it waits for the restorer (its child),
 *       forwards signals to it and exits the way the restored tree did.
 *
 * The restorer is forked before slurmstepd places the task in the step's
 * container; phos-restore moves itself into its parent's cgroup once it
 * has the stdio (that happens after the placement).
 *
 * Nothing here calls Slurm (unit-testable); errors are -1 + errno with a
 * sentence in e (no "phos: " prefix).
 */
#ifndef PHOS_SPANK_RESTORE_H
#define PHOS_SPANK_RESTORE_H

#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* The restorer's end of the control socket, in the restorer. */
#define PHOS_RESTORE_CONTROL_FD 3

struct phos_restore_args {
	const char *helper;	/* absolute path of phos-restore */
	const char *image;	/* generation directory from RESTORE_PREPARE */
	const char *socket;	/* phosd socket (for RESTORE_DONE) */
	const char *config;	/* phos.yaml for phos-restore (NULL, "": its default) */
	uint32_t job, step, task, uid, gid;
};

/*
 * Parse the value of SLURM_RESTART_COUNT: a decimal integer, no sign, no
 * blanks, <= UINT32_MAX.  0 and *n, or -1 with errno EINVAL or ERANGE.
 */
int phos_restart_count_parse(const char *s, uint32_t *n);

/*
 * Fork and exec the root restorer.  Its stdin/stdout/stderr are inherited
 * as they are (slurmstepd's: the task's own come later by handover), every
 * other fd but the control socket (PHOS_RESTORE_CONTROL_FD) is closed,
 * the signal mask is emptied and every disposition reset.  Returns the
 * caller's end of the control socket (O_CLOEXEC) and *pid, once the exec
 * succeeded; -1 + errno and e if it did not (fork, socketpair, or the
 * exec's own errno, e.g. ENOENT for a missing helper: nothing is left
 * running then).
 */
int phos_restore_spawn(const struct phos_restore_args *a, pid_t *pid, struct phos_err *e);

/* Send fds 0, 1, 2 to the restorer on ctl.  -1 + errno, e: EPIPE or
 * ECONNRESET when the restorer is gone. */
int phos_restore_handover(int ctl, struct phos_err *e);

/* Exec "helper --wait-fd ctl" (ctl's CLOEXEC cleared).  Returns only on
 * failure: -1 + errno, e. */
int phos_restore_exec_wait(const char *helper, int ctl, struct phos_err *e);

#endif
