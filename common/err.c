#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "err.h"

static void vset(struct phos_err *e, const char *fmt, va_list ap)
{
	int saved = errno;

	if (e)
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	errno = saved;
}

int phos_errf(struct phos_err *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(e, fmt, ap);
	va_end(ap);
	return -1;
}

int phos_errnof(struct phos_err *e, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(e, fmt, ap);
	va_end(ap);
	errno = err;
	return -1;
}
