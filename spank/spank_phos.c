/*
 * spank_phos.c - entry points of the PhOS SPANK plugin.
 *
 * This file only parses the plugstack.conf arguments and dispatches on
 * spank_context() to one module per context:
 *
 *   S_CTX_LOCAL (srun), S_CTX_ALLOCATOR (sbatch, salloc)  options.c
 *   S_CTX_REMOTE (slurmstepd)                             stepd.c, which
 *                                 talks to phosd (client.c) and starts the
 *                                 restore helper (restore.c)
 *   S_CTX_SLURMD, S_CTX_JOB_SCRIPT                        nothing yet
 *
 * Options are registered with spank_option_register() from slurm_spank_init
 * (the only way they reach sbatch).  With enabled=0 the options are still
 * registered, so job scripts that use them keep working, but nothing else
 * happens.  Only slurm_spank_* and plugin_* are exported (spank_phos.lds).
 */
#include "config.h"

#include <slurm/spank.h>

#include "args.h"
#include "err.h"
#include "options.h"
#include "stepd.h"

SPANK_PLUGIN(phos, 1)

static struct phos_args args;

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	struct phos_err e;

	if (phos_args_parse(&args, ac, av, &e) < 0 || phos_opts_register(sp, &e) < 0) {
		slurm_error("%s", e.msg);
		return -1;
	}
	if (!args.enabled)
		return 0;

	switch (spank_context()) {
	case S_CTX_REMOTE:
		return phos_stepd_init(sp, &args);
	default:
		return 0;
	}
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	switch (spank_context()) {
	case S_CTX_LOCAL:
	case S_CTX_ALLOCATOR:
		return phos_opts_post_opt(sp, args.enabled);
	case S_CTX_REMOTE:
		return args.enabled ? phos_stepd_post_opt(sp) : 0;
	default:
		return 0;
	}
}

int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	if (!args.enabled || spank_context() != S_CTX_REMOTE)
		return 0;
	return phos_stepd_task_init_privileged(sp);
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	if (!args.enabled || spank_context() != S_CTX_REMOTE)
		return 0;
	return phos_stepd_task_init(sp);
}

int slurm_spank_task_exit(spank_t sp, int ac, char **av)
{
	if (!args.enabled || spank_context() != S_CTX_REMOTE)
		return 0;
	return phos_stepd_task_exit(sp);
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	if (!args.enabled || spank_context() != S_CTX_REMOTE)
		return 0;
	return phos_stepd_exit(sp);
}
