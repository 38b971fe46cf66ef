/*
 * options.h - the plugin's command-line options.
 *
 *   --phos-checkpoint                srun, sbatch, salloc
 *   --phos-checkpoint-interval=TIME  sbatch, salloc (implies --phos-checkpoint)
 *
 * How a value reaches slurmstepd in Slurm 22.05 (src/common/plugstack.c;
 * unchanged in 24.11's src/common/spank.c).  Slurm names an option's
 * variable "_SLURM_SPANK_OPTION_<plugin>_<option>", every character that is
 * not alphanumeric turned into '_'; a flag's value is "":
 *
 *  - srun sends the options it saw in the launch request (job->options);
 *    slurmstepd calls our callback with remote=1 before init_post_opt.
 *  - sbatch/salloc set "_SLURM_SPANK_OPTION_phos_phos_checkpoint" in their
 *    own environment and put it in the job's SPANK environment, which
 *    reaches the job as "SLURM_SPANK__SLURM_SPANK_OPTION_phos_phos_checkpoint"
 *    (sbatch.c/salloc.c add the "SLURM_SPANK_" prefix).  The batch step's
 *    slurmstepd finds the unprefixed one in the job env, calls our callback
 *    with remote=1, and removes it.
 *  - srun inside that allocation reads the "SLURM_SPANK_" variables of the
 *    options it has registered (spank_process_env_options) as if given on
 *    its command line and forwards them as above.  srun does not register
 *    --phos-checkpoint-interval, so that one is never forwarded: slurmstepd
 *    reads PHOS_OPT_ENV_INTERVAL (and PHOS_OPT_ENV_CHECKPOINT, for an srun
 *    without the plugin) from the step's environment instead
 *    (phos_opts_from_env).  SLURM_* variables pass even "srun
 *    --export=NONE" (seen on 22.05.8).
 *
 * Checked on a 22.05.8 cluster: "sbatch --phos-checkpoint" gives the job
 * "SLURM_SPANK__SLURM_SPANK_OPTION_phos_phos_checkpoint=(null)",
 * "--phos-checkpoint-interval=30s" gives "..._phos_checkpoint_interval=30s".
 */
#ifndef PHOS_SPANK_OPTIONS_H
#define PHOS_SPANK_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <slurm/spank.h>

#include "err.h"

#define PHOS_OPT_ENV_CHECKPOINT "SLURM_SPANK__SLURM_SPANK_OPTION_phos_phos_checkpoint"
#define PHOS_OPT_ENV_INTERVAL "SLURM_SPANK__SLURM_SPANK_OPTION_phos_phos_checkpoint_interval"

#define PHOS_INTERVAL_MIN_S 5u
#define PHOS_INTERVAL_MAX_S (7u * 24 * 3600)

struct phos_opts {
	bool checkpoint;	/* --phos-checkpoint, or implied by an interval */
	uint32_t interval_s;	/* --phos-checkpoint-interval in seconds; 0 = none */
};

/*
 * Register the options that belong to the current context (srun: the flag;
 * sbatch/salloc and slurmstepd: both).  Returns 0, or -1 with e filled.
 * Call from slurm_spank_init only.
 */
int phos_opts_register(spank_t sp, struct phos_err *e);

/*
 * srun/sbatch/salloc, init_post_opt: report what was asked for (verbose);
 * enabled is the plugstack.conf switch.  Returns 0.
 */
int phos_opts_post_opt(spank_t sp, bool enabled);

/* The options as the callbacks left them (never NULL). */
const struct phos_opts *phos_opts_get(void);

/*
 * Parse TIME: minutes as a decimal integer, or an integer with suffix s, m
 * or h ("30s", "10m", "2h"); the result must lie in [5 s, 7 days].
 * Returns 0 and *secs, or -1 with errno EINVAL/ERANGE and e filled with a
 * sentence naming the accepted form.
 */
int phos_interval_parse(const char *s, uint32_t *secs, struct phos_err *e);

/*
 * Slurmstepd only: merge the job-inherited options found in the step's
 * environment (PHOS_OPT_ENV_*) into the option state.  Options already set
 * by callbacks win.  Returns 0, or -1 with e filled for a malformed
 * interval.
 */
int phos_opts_from_env(spank_t sp, struct phos_err *e);

#endif
