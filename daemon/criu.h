/*
 * criu.h - run CRIU through its RPC service (`criu swrk`).
 *
 * We speak CRIU's RPC directly (the protobuf-c code ships in libcriu)
 * rather than through libcriu's setters, because we need options libcriu
 * does not expose (leave_stopped) and control of the service process
 * (entering a pid/mount namespace before exec, restoring the tree as our
 * child with rst_sibling).
 */
#ifndef PHOSD_CRIU_H
#define PHOSD_CRIU_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "err.h"

#define PHOS_CRIU_MAX_INHERIT 16

enum phos_criu_op {
	PHOS_CRIU_DUMP,
	PHOS_CRIU_PRE_DUMP,
	PHOS_CRIU_RESTORE,
};

struct phos_criu_req {
	const char *criu_path;		/* the criu binary */
	int images_fd;			/* directory of the images */
	int work_fd;			/* directory for the log; -1 = images_fd */
	const char *log_name;		/* log file name inside the work dir */
	int log_level;			/* 0-4, CRIU's */
	pid_t pid;			/* dump: root of the tree, as CRIU will see it */
	bool leave_running;		/* dump: thaw the tree afterwards */
	bool leave_stopped;		/* dump: leave the tree stopped (preemption) */
	bool track_mem;			/* dump/pre-dump: soft-dirty tracking */
	const char *parent_img;		/* dump/pre-dump: path of the previous pre-dump, relative to images */
	unsigned timeout;		/* seconds; 0 = CRIU's default */
	/* dump: files CRIU must not dump but expect to be inherited at restore
	 * ("file[MNT:INO]": our stdio) */
	int nexternal;
	const char *external[PHOS_CRIU_MAX_INHERIT];
	/* restore */
	bool rst_sibling;		/* restore the tree as a child of the caller */
	bool lazy_pages;		/* private anonymous memory is served later, by
					 * phos_criu_lazy_start()'s daemon (work_fd's
					 * directory must be that daemon's) */
	int ninherit;
	struct {
		int fd;			/* our fd, given to the restored tree */
		const char *key;	/* e.g. "pipe:[1234]" */
	} inherit[PHOS_CRIU_MAX_INHERIT];
	/* dump of a tree living in another pid namespace: CRIU runs inside it,
	 * with a /proc of that namespace; CRIU finds our fds through
	 * /proc/<peer pid>, which it cannot see from there, so the directories
	 * are passed by path too */
	int pidns_fd;			/* -1 or an fd of /proc/PID/ns/pid */
	int mntns_fd;			/* -1 or an fd of /proc/PID/ns/mnt */
	const char *images_path;	/* with pidns_fd: path of images_fd */
	/* called for each CRIU notification ("pre-dump", "post-dump", "pre-resume"...);
	 * a non-zero return fails the operation */
	int (*notify)(void *arg, const char *script, pid_t pid);
	void *notify_arg;
};

/* Initialise r with safe defaults (fds -1, log level 4). */
void phos_criu_req_init(struct phos_criu_req *r);

/*
 * Run one CRIU operation and wait for it.  0 on success; for a restore,
 * *restored is the root's pid (as seen by the caller's pid namespace when
 * rst_sibling is set).  -1 with errno and e->msg on failure, which names
 * CRIU's log file.  Never leaves a CRIU process behind.
 */
int phos_criu_run(enum phos_criu_op op, const struct phos_criu_req *r, pid_t *restored,
		  struct phos_err *e);

/*
 * Probe the kernel once (at daemon start): do x86 hardware breakpoints
 * set through ptrace fire?  CRIU uses one to catch the end of its
 * parasite; some virtual machines accept the debug registers but never
 * fire them, and CRIU then hangs.  When they do not work every CRIU run
 * is told to single-step through syscalls instead (CRIU's fault-injection
 * switch FI_NO_BREAKPOINTS, CRIU_FAULT=130), which is slower but sound.
 * Returns true if breakpoints work.
 */
bool phos_criu_probe_breakpoints(void);

/*
 * Start `criu lazy-pages` for a restore with lazy_pages: it reads the pages
 * of images_path and listens on lazy-pages.socket in work_path (the
 * restore's work directory), serves the restored tasks' page faults and
 * copies the rest in behind them, and exits once every page is in.  Returns
 * its pid once it listens; -1 with e->msg if it did not start.
 */
pid_t phos_criu_lazy_start(const char *criu_path, const char *images_path, const char *work_path,
			   struct phos_err *e);

/* Ask criu whether it can track memory changes (soft-dirty), needed for
 * pre-dump rounds.  1 yes, 0 no, -1 cannot tell.  files (NULL: not
 * wanted): where to write the files criu maps once it has started (its
 * executable, the loader, its libraries and plugins), one "0 SIZE PATH"
 * line each (hex, prefetch.h's format), for the restores' read-ahead. */
int phos_criu_has_mem_track(const char *criu_path, FILE *files);

/* Version of the criu binary as major*10000+minor*100+sublevel, or -1. */
int phos_criu_version(const char *criu_path, struct phos_err *e);

#endif
