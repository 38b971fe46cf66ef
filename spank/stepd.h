/*
 * stepd.h - the plugin in slurmstepd (S_CTX_REMOTE).
 *
 * Life of one step (each function is called from the slurm_spank_*
 * callback of the same name; tasks are forks of slurmstepd, so the state
 * set before the fork is each task's own copy, and what
 * task_init_privileged leaves in it is there for task_init):
 *
 *   init            root    remember the plugstack arguments
 *   (option callbacks, remote=1, from the launch request / job env)
 *   init_post_opt   root    decide whether this step is checkpointed, and
 *                           whether its exit ends the job (batch script)
 *   task_init_privileged    root, in the task, before its stdio is set up
 *                           and before slurmstepd puts it in the step's
 *                           container (Slurm 22.05 mgr.c):
 *       restarted job (SLURM_RESTART_COUNT > 0): RESTORE_PREPARE;
 *         image -> fork+exec phos-restore (root), keep the control socket
 *         none  -> note "no usable checkpoint ...; starting fresh"
 *       fresh: check libphos exists, REGISTER {getpid()} with phosd;
 *         refused/no phosd -> note "checkpointing disabled ...", no preload
 *   task_init       user    in the task, stdio set up, just before exec:
 *                           print the notes on the task's stderr, then
 *       fresh:     LD_PRELOAD, PHOS_*
 *       restoring: hand fds 0,1,2 to phos-restore, exec
 *                  "phos-restore --wait-fd N" in place of the program
 *   exit            root    batch script's step (or any checkpointed step
 *                           of a job without one): JOB_END; forget
 *
 * A step that is not checkpointed is left alone: no environment change, no
 * message, no phosd traffic.  Messages for the user start with "phos: ".
 * All functions return 0 (ESPANK_SUCCESS) or -1 after logging a "phos: "
 * error with slurm_error; -1 fails the task (or the step).
 */
#ifndef PHOS_SPANK_STEPD_H
#define PHOS_SPANK_STEPD_H

#include <slurm/spank.h>

#include "args.h"

/* Variables set in a checkpointed task (besides LD_PRELOAD). */
#define PHOS_ENV_SOCKET		"PHOS_SOCKET"
#define PHOS_ENV_JOB_ID		"PHOS_JOB_ID"
#define PHOS_ENV_STEP_ID	"PHOS_STEP_ID"
#define PHOS_ENV_TASK_ID	"PHOS_TASK_ID"
#define PHOS_ENV_CHECKPOINT	"PHOS_CHECKPOINT"
#define PHOS_ENV_INTERVAL	"PHOS_CHECKPOINT_INTERVAL"

/* args must stay valid until phos_stepd_exit(). */
int phos_stepd_init(spank_t sp, const struct phos_args *args);
int phos_stepd_post_opt(spank_t sp);
int phos_stepd_task_init_privileged(spank_t sp);
int phos_stepd_task_init(spank_t sp);
int phos_stepd_task_exit(spank_t sp);
int phos_stepd_exit(spank_t sp);

/*
 * Prepend argv[0..argc-1] to the task's command line (task_init only).
 * Slurm >= 23.11 has spank_prepend_task_argv; on older Slurm this returns
 * -1 with errno ENOTSUP and the caller must use another way.
 */
int phos_stepd_prepend_argv(spank_t sp, int argc, const char *argv[]);

#endif
