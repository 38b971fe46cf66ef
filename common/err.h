/*
 * err.h - the project's one error convention.
 *
 * Functions that can fail return -1 (or NULL) and set errno.  Where a
 * human needs to know more than errno can say, they also take a
 * `struct phos_err *` and fill it with a sentence that says what went
 * wrong and, where possible, what to do.  A NULL `struct phos_err *` is
 * always allowed.  phos_errf() never changes errno.
 */
#ifndef PHOS_ERR_H
#define PHOS_ERR_H

#include <stddef.h>

#define PHOS_ERR_MAX 512

struct phos_err {
	char msg[PHOS_ERR_MAX];
};

/* Set e->msg from fmt (truncated safely); returns -1 so callers can
 * `return phos_errf(e, ...)`.  errno is preserved. */
int phos_errf(struct phos_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Like phos_errf, then sets errno to err. */
int phos_errnof(struct phos_err *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
