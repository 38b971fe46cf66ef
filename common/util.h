/*
 * util.h - small helpers: safe copies, full reads/writes, fds, time.
 * All return -1 and set errno on failure unless noted.
 */
#ifndef PHOS_UTIL_H
#define PHOS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Copy src into dst[size]; -1 + ENAMETOOLONG if it does not fit
 * (dst then holds a truncated, terminated copy). */
int phos_strlcpy(char *dst, const char *src, size_t size);
/* snprintf that fails with ENAMETOOLONG on truncation. */
int phos_snprintf(char *dst, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

ssize_t phos_read_full(int fd, void *buf, size_t n);	/* < n only at EOF */
int phos_write_full(int fd, const void *buf, size_t n);

/* Close *fd if >= 0 and set it to -1, keeping errno. */
void phos_closep(int *fd);

/* NAME=1 in the environment: the on/off switches of phosd(8) and its
 * helpers (secure_getenv: none counts in a process running with more
 * privilege than its caller). */
bool phos_env_on(const char *name);

/* The environment with kv ("NAME=VALUE") in place of any NAME= there, as
 * a NULL-terminated array for execve (built before fork: the child of a
 * threaded process must not allocate).  free() the array only; NULL on
 * ENOMEM. */
char **phos_env_with(const char *kv);

/* Monotonic time in milliseconds / nanoseconds. */
uint64_t phos_now_ms(void);
/* ts = now + ms on CLOCK_REALTIME: the deadline pthread_cond_timedwait()
 * takes. */
struct timespec;
void phos_deadline(struct timespec *ts, unsigned ms);
uint64_t phos_now_ns(void);

/* mkdir -p with mode for each created component. */
int phos_mkdir_p(const char *path, mode_t mode);

/* rm -rf name under dfd (AT_FDCWD: a path), never following a symlink;
 * a name that is not there is success.  -1 with errno otherwise. */
int phos_rm_tree_at(int dfd, const char *name);

/* Parse a decimal unsigned integer (whole string, no sign); -1 + EINVAL/ERANGE. */
int phos_parse_u64(const char *s, uint64_t *v);

/* Connect to / listen on a unix stream socket (CLOEXEC). */
int phos_unix_connect(const char *path);
int phos_unix_listen(const char *path, mode_t mode);

#endif
