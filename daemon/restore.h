/*
 * restore.h - start phos-restore for a verified generation.
 */
#ifndef PHOSD_RESTORE_H
#define PHOSD_RESTORE_H

#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

/*
 * Restore the generation at path, owned by uid/gid, with stdio[0..2] as
 * the tree's stdin/stdout/stderr (-1: /dev/null).  phos-restore runs
 * detached from phosd (re-parented to init); its error messages go to the
 * given stderr.  verify: only the manifest was checked (PHOS_VERIFY_QUICK);
 * phos-restore hashes the image while CRIU restores it and lets no
 * restored task run before that passed.  On success *pid is the restored
 * root.  -1 + errno/e.
 */
int restore_spawn(const char *path, uid_t uid, gid_t gid, const int stdio[3], bool new_netns,
		  bool verify, pid_t *pid, struct phos_err *e);

/*
 * Remove the work directories (restore.XXXXXX) that failed restores left
 * in state_dir with CRIU's log, and root's /tmp/phos-restore.* (the
 * fallback, and what earlier versions left after every restore), once
 * older than PHOS_RESTORE_LOG_DAYS; the number removed.  phosd calls it
 * at start and once an hour (not on a restore's way).
 */
#define PHOS_RESTORE_LOG_DAYS 7
int restore_prune_logs(const char *state_dir);

#endif
