#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int phos_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size == 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (n >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = '\0';
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dst, src, n + 1);
	return 0;
}

int phos_snprintf(char *dst, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(dst, size, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

ssize_t phos_read_full(int fd, void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = read(fd, (char *)buf + done, n - done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

int phos_write_full(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = write(fd, (const char *)buf + done, n - done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

void phos_closep(int *fd)
{
	int saved = errno;

	if (fd && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	errno = saved;
}

uint64_t phos_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool phos_env_on(const char *name)
{
	const char *v = secure_getenv(name);

	return v && strcmp(v, "1") == 0;
}

char **phos_env_with(const char *kv)
{
	extern char **environ;
	size_t n = 0, k = 0, name = strcspn(kv, "=") + 1;
	char **env;

	while (environ && environ[n])
		n++;
	if (!(env = calloc(n + 2, sizeof(*env))))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], kv, name) != 0)
			env[k++] = environ[i];
	env[k++] = (char *)kv;
	env[k] = NULL;
	return env;
}

uint64_t phos_now_ms(void)
{
	return phos_now_ns() / 1000000ull;
}

void phos_deadline(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int phos_mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];
	char *p;

	if (phos_strlcpy(buf, path, sizeof(buf)) < 0)
		return -1;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

int phos_parse_u64(const char *s, uint64_t *v)
{
	char *end;
	unsigned long long x;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') {
		errno = EINVAL;
		return -1;
	}
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno)
		return -1;
	if (*end) {
		errno = EINVAL;
		return -1;
	}
	*v = x;
	return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	return phos_strlcpy(sa->sun_path, path, sizeof(sa->sun_path));
}

int phos_unix_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd;

	if (unix_addr(path, &sa) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		phos_closep(&fd);
		return -1;
	}
	return fd;
}

int phos_unix_listen(const char *path, mode_t mode)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd;

	if (unix_addr(path, &sa) < 0)
		return -1;
	/* Replace a stale socket, never anything else. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			errno = EEXIST;
			return -1;
		}
		if (unlink(path) < 0)
			return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, mode) < 0 || listen(fd, 64) < 0) {
		phos_closep(&fd);
		return -1;
	}
	return fd;
}

#define RM_DEPTH_MAX	40

static int rm_tree(int dfd, const char *name, int depth)
{
	struct dirent *de;
	struct stat st;
	int fd, rc = 0, err = 0;
	DIR *d;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dfd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
	if (depth > RM_DEPTH_MAX) {
		errno = ELOOP;
		return -1;
	}
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (rm_tree(dirfd(d), de->d_name, depth + 1) < 0) {
			rc = -1;
			err = errno;
		}
	}
	closedir(d);
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
		rc = -1;
		err = errno;
	}
	if (rc < 0)
		errno = err;
	return rc;
}

int phos_rm_tree_at(int dfd, const char *name)
{
	return rm_tree(dfd, name, 0);
}
