/*
 * proc.c - reading /proc.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proto.h"

#include "proc.h"
#include "util.h"

int proc_ids(pid_t pid, struct proc_ids *ids)
{
	char path[64], line[512];
	FILE *f;
	int got = 0;

	memset(ids, 0, sizeof(*ids));
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? (errno = ESRCH, -1) : -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned a, b, c, d;
		unsigned long long cap;

		if (sscanf(line, "Uid: %u %u %u %u", &a, &b, &c, &d) == 4) {
			ids->ruid = a;
			ids->euid = b;
			ids->suid = c;
			ids->fsuid = d;
			got |= 1;
		} else if (sscanf(line, "Gid: %u %u %u %u", &a, &b, &c, &d) == 4) {
			ids->rgid = a;
			ids->egid = b;
			ids->sgid = c;
			ids->fsgid = d;
			got |= 2;
		} else if (sscanf(line, "CapPrm: %llx", &cap) == 1) {
			ids->cap_prm = cap;
		} else if (sscanf(line, "PPid: %u", &a) == 1) {
			ids->ppid = (pid_t)a;
		} else if (strncmp(line, "NSpid:", 6) == 0) {
			char *p = line + 6, *end;
			int depth = -1;

			for (;;) {
				long v = strtol(p, &end, 10);

				if (end == p)
					break;
				ids->nspid = (pid_t)v;
				depth++;
				p = end;
			}
			ids->nsdepth = depth < 0 ? 0 : depth;
			got |= 4;
		}
	}
	fclose(f);
	if ((got & 3) != 3) {
		errno = ESRCH;
		return -1;
	}
	if (!(got & 4))
		ids->nspid = pid;
	return 0;
}

bool proc_plain_user(const struct proc_ids *ids, uid_t uid)
{
	return ids->ruid == uid && ids->euid == uid && ids->suid == uid && ids->fsuid == uid &&
	       ids->rgid == ids->egid && ids->rgid == ids->sgid && ids->rgid == ids->fsgid &&
	       ids->cap_prm == 0;
}

int proc_other_pidns(pid_t pid, bool *other)
{
	char path[64];
	struct stat a, b;

	snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)pid);
	if (stat(path, &a) < 0 || stat("/proc/self/ns/pid", &b) < 0)
		return -1;
	*other = a.st_ino != b.st_ino || a.st_dev != b.st_dev;
	return 0;
}

int proc_fd_link(pid_t pid, int fd, char *buf, size_t size)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
	n = readlink(path, buf, size - 1);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

void proc_user_name(uid_t uid, char *buf, size_t size)
{
	struct passwd pw, *res = NULL;
	char tmp[4096];

	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res)
		snprintf(buf, size, "%s", pw.pw_name);
	else
		snprintf(buf, size, "%u", (unsigned)uid);
}

gid_t proc_user_gid(uid_t uid)
{
	struct passwd pw, *res = NULL;
	char tmp[4096];

	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res)
		return pw.pw_gid;
	return (gid_t)uid;
}

bool proc_maps_has(pid_t pid, const char *libname)
{
	char path[64], line[1024];
	FILE *f;
	bool found = false;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, libname) != NULL;
	fclose(f);
	return found;
}

/* Append the children of every thread of pid, recursively. */
static int add_tree(pid_t pid, pid_t **v, size_t *n, size_t *cap)
{
	char path[64];
	DIR *d;
	struct dirent *de;

	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		pid_t *nv = realloc(*v, nc * sizeof(*nv));

		if (!nv)
			return -1;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = pid;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return 0;	/* exited meanwhile */
	while ((de = readdir(d))) {
		char cpath[300];
		FILE *f;
		int c;

		if (de->d_name[0] == '.')
			continue;
		snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", (int)pid, de->d_name);
		f = fopen(cpath, "re");
		if (!f)
			continue;
		while (fscanf(f, "%d", &c) == 1) {
			if (add_tree((pid_t)c, v, n, cap) < 0) {
				fclose(f);
				closedir(d);
				return -1;
			}
		}
		fclose(f);
	}
	closedir(d);
	return 0;
}

int proc_tree(pid_t pid, pid_t **out, size_t *n)
{
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	if (add_tree(pid, out, n, &cap) < 0) {
		free(*out);
		*out = NULL;
		*n = 0;
		return -1;
	}
	return 0;
}

int proc_signal_libphos(pid_t root, int value)
{
	pid_t *tree = NULL;
	size_t n = 0;
	int sent = 0;

	if (proc_tree(root, &tree, &n) < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char dir[64];
		struct dirent *de;
		DIR *d;

		if (!proc_maps_has(tree[i], "libphos.so"))
			continue;
		snprintf(dir, sizeof(dir), "/proc/%d/task", (int)tree[i]);
		d = opendir(dir);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			siginfo_t si;
			long tid = strtol(de->d_name, NULL, 10);

			if (tid <= 0)
				continue;
			memset(&si, 0, sizeof(si));
			si.si_signo = SIGRTMIN + PHOS_SIGNAL_OFFSET;
			si.si_code = SI_QUEUE;
			si.si_pid = getpid();
			si.si_uid = getuid();
			si.si_value.sival_int = value;
			if (syscall(SYS_rt_tgsigqueueinfo, tree[i], (pid_t)tid, si.si_signo, &si) == 0)
				sent++;
		}
		closedir(d);
	}
	free(tree);
	return sent;
}

bool proc_alive(pid_t pid)
{
	char path[64], buf[512], *rp;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno != ENOENT && errno != ESRCH;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* "PID (COMM) STATE ...": COMM may hold ')' */
	rp = strrchr(buf, ')');
	return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}
