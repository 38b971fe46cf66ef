/*
 * args.h - the plugin's plugstack.conf arguments.
 *
 *   required /usr/lib/slurm/spank_phos.so libphos=PATH socket=PATH
 *            restore_helper=PATH enabled=0|1
 *
 * Every argument is key=value; an unknown key, a key given twice, an empty
 * or relative path or a bad boolean is an error, and the plugin then fails
 * to load (a "required" plugin stops srun/sbatch/slurmstepd), so a typo never
 * silently turns checkpointing off.  Defaults live in phos_args_default().
 */
#ifndef PHOS_SPANK_ARGS_H
#define PHOS_SPANK_ARGS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct phos_args {
	bool enabled;			/* enabled=0 makes the plugin a no-op */
	char libphos[PATH_MAX];		/* interposer preloaded into tasks */
	char socket[PATH_MAX];		/* phosd socket; may hold %n and %% */
	char restore_helper[PATH_MAX];	/* phos-restore, run in restored tasks */
	char config[PATH_MAX];		/* phos.yaml phos-restore reads ("": its
					 * default); may hold %n and %% */
};

/* Fill a with the built-in defaults (PHOS_LIBPHOS_DEFAULT, PHOS_SOCKET_DEFAULT,
 * PHOS_RESTORE_HELPER_DEFAULT). */
void phos_args_default(struct phos_args *a);

/*
 * Parse plugstack.conf arguments av[0..ac-1] into *a.  *a is written only
 * on success (parsing goes through a temporary).  On failure returns -1,
 * sets errno to EINVAL (or ENAMETOOLONG) and fills e with a sentence that
 * names the offending argument and the accepted form.
 */
int phos_args_parse(struct phos_args *a, int ac, char **av, struct phos_err *e);

/*
 * Expand the socket template tmpl into dst[size]: "%n" becomes nodename,
 * "%%" becomes "%".  Returns -1 with errno EINVAL for any other "%"
 * sequence (phos_args_parse() already rejects those) and ENAMETOOLONG when
 * the result does not fit.
 */
int phos_socket_expand(char *dst, size_t size, const char *tmpl, const char *nodename);

#endif
