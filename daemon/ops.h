/*
 * ops.h - operations in flight (checkpoints, restores), for status,
 * progress and cancel.  All functions lock phosd->lock.
 */
#ifndef PHOSD_OPS_H
#define PHOSD_OPS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct op {
	uint64_t id;
	char kind[16];			/* "checkpoint", "restore" */
	char target[128];		/* "pid 123", "job 7 step 0 task 0" */
	char phase[128];		/* what it does now */
	uid_t uid;			/* whose it is */
	uint64_t started_ms;
	uint64_t done, total;		/* progress, bytes or steps */
	bool cancel;			/* cancel requested */
	bool cancellable;		/* still before the point of no return */
	struct op *next;
};

struct oplist {
	struct op *head;
	uint64_t next_id;
};

/* New operation (copied in); returns its id, 0 on ENOMEM. */
uint64_t op_start(const char *kind, const char *target, uid_t uid);
void op_phase(uint64_t id, bool cancellable, uint64_t done, uint64_t total, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* True if a cancel was requested (checked between phases). */
bool op_cancelled(uint64_t id);
void op_end(uint64_t id);
/* Request a cancel: 0, -1 + ENOENT (no such op), EPERM (not the caller's),
 * EBUSY (past the point where it can stop safely). */
int op_cancel(uint64_t id, uid_t uid, bool privileged);
/* Copy all operations visible to uid (caller frees). */
int op_snapshot(uid_t uid, bool privileged, struct op **out, unsigned *n);

#endif
