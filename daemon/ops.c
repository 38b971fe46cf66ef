/*
 * ops.c - operations in flight.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "phosd.h"
#include "util.h"

static struct op *find(uint64_t id)
{
	for (struct op *o = phosd->ops->head; o; o = o->next)
		if (o->id == id)
			return o;
	return NULL;
}

uint64_t op_start(const char *kind, const char *target, uid_t uid)
{
	struct op *o = calloc(1, sizeof(*o));
	uint64_t id;

	if (!o)
		return 0;
	snprintf(o->kind, sizeof(o->kind), "%s", kind);
	snprintf(o->target, sizeof(o->target), "%s", target);
	snprintf(o->phase, sizeof(o->phase), "queued");
	o->uid = uid;
	o->started_ms = phos_now_ms();
	o->cancellable = true;
	pthread_mutex_lock(&phosd->lock);
	id = o->id = ++phosd->ops->next_id;
	o->next = phosd->ops->head;
	phosd->ops->head = o;
	pthread_mutex_unlock(&phosd->lock);
	return id;
}

void op_phase(uint64_t id, bool cancellable, uint64_t done, uint64_t total, const char *fmt, ...)
{
	struct op *o;
	va_list ap;

	pthread_mutex_lock(&phosd->lock);
	o = find(id);
	if (o) {
		va_start(ap, fmt);
		vsnprintf(o->phase, sizeof(o->phase), fmt, ap);
		va_end(ap);
		o->cancellable = cancellable;
		o->done = done;
		o->total = total;
	}
	pthread_mutex_unlock(&phosd->lock);
}

bool op_cancelled(uint64_t id)
{
	struct op *o;
	bool c = false;

	pthread_mutex_lock(&phosd->lock);
	o = find(id);
	if (o)
		c = o->cancel;
	pthread_mutex_unlock(&phosd->lock);
	return c;
}

void op_end(uint64_t id)
{
	pthread_mutex_lock(&phosd->lock);
	for (struct op **pp = &phosd->ops->head; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct op *o = *pp;

			*pp = o->next;
			free(o);
			break;
		}
	}
	pthread_mutex_unlock(&phosd->lock);
}

int op_cancel(uint64_t id, uid_t uid, bool privileged)
{
	struct op *o;
	int rc = 0;

	pthread_mutex_lock(&phosd->lock);
	o = find(id);
	if (!o) {
		errno = ENOENT;
		rc = -1;
	} else if (!privileged && o->uid != uid) {
		errno = EPERM;
		rc = -1;
	} else if (!o->cancellable) {
		errno = EBUSY;
		rc = -1;
	} else {
		o->cancel = true;
	}
	pthread_mutex_unlock(&phosd->lock);
	return rc;
}

int op_snapshot(uid_t uid, bool privileged, struct op **out, unsigned *n)
{
	unsigned cap = 0, i = 0;

	pthread_mutex_lock(&phosd->lock);
	for (struct op *o = phosd->ops->head; o; o = o->next)
		cap++;
	*out = calloc(cap ? cap : 1, sizeof(**out));
	if (!*out) {
		pthread_mutex_unlock(&phosd->lock);
		return -1;
	}
	for (struct op *o = phosd->ops->head; o; o = o->next)
		if (privileged || o->uid == uid)
			(*out)[i++] = *o;
	*n = i;
	pthread_mutex_unlock(&phosd->lock);
	return 0;
}
