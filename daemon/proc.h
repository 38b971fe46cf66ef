/*
 * proc.h - what phosd reads about a process from /proc.
 * All return -1 + errno (ESRCH when the process is gone).
 */
#ifndef PHOSD_PROC_H
#define PHOSD_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct proc_ids {
	uid_t ruid, euid, suid, fsuid;
	gid_t rgid, egid, sgid, fsgid;
	uint64_t cap_prm;	/* permitted capabilities */
	pid_t ppid;
	pid_t nspid;		/* pid in its innermost pid namespace */
	int nsdepth;		/* 0 = our namespace */
};

int proc_ids(pid_t pid, struct proc_ids *ids);
/* True if every uid and gid of the process is uid/gid's and it holds no
 * capability: what an unprivileged owner may checkpoint and get back. */
bool proc_plain_user(const struct proc_ids *ids, uid_t uid);

/* True if pid lives in another pid namespace than ours. */
int proc_other_pidns(pid_t pid, bool *other);
/* readlink /proc/pid/fd/fd into buf ("pipe:[123]", "/dev/null"...). */
int proc_fd_link(pid_t pid, int fd, char *buf, size_t size);
/* Login name of uid into buf (or the number as text). */
void proc_user_name(uid_t uid, char *buf, size_t size);
gid_t proc_user_gid(uid_t uid);
/* True if libname appears in the process's maps (e.g. "libphos.so"). */
bool proc_maps_has(pid_t pid, const char *libname);
/* pid runs, or is stopped: not gone, not a zombie waiting for its parent */
bool proc_alive(pid_t pid);
/* Queue libphos's real-time signal with value to every thread of every
 * process of root's tree that has libphos mapped.  Returns how many
 * threads were signalled. */
int proc_signal_libphos(pid_t root, int value);

/* Pids of pid and all its descendants (threads excluded); *out malloc'd. */
int proc_tree(pid_t pid, pid_t **out, size_t *n);

#endif
