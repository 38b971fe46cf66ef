/*
 * registry.h - the Slurm tasks phosd protects on this node.
 *
 * A task is registered by the SPANK plugin (REGISTER) before its program
 * starts, or by phos-restore after a restore (RESTORE_DONE).  Entries are
 * dropped when their process is gone.  All functions lock phosd->lock
 * themselves unless named *_locked.
 */
#ifndef PHOSD_REGISTRY_H
#define PHOSD_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct task_reg {
	pid_t pid;			/* root of the task's tree, our pid namespace */
	uint32_t job, step, task;
	uid_t uid;
	gid_t gid;
	uint64_t interval_ms;		/* periodic checkpoints; 0 = none */
	uint64_t next_due_ms;		/* monotonic */
	uint64_t registered_ms;
	uint64_t last_gen;		/* newest generation written by us */
	unsigned restored;		/* times this task was restored here */
	bool busy;			/* an operation is running on it */
	bool preempting;		/* a preemption checkpoint was asked for */
	struct task_reg *next;
};

struct registry {
	struct task_reg *head;
	unsigned n;
};

/* Add or replace (same job/step/task) an entry; copies t.  -1 + ENOMEM. */
int registry_add(const struct task_reg *t);
/* Remove entries of job (all steps/tasks); returns how many. */
unsigned registry_remove_job(uint32_t job);
/* Copy the entry whose tree contains pid (pid itself or a descendant);
 * -1 + ENOENT. */
int registry_find_pid(pid_t pid, struct task_reg *out);
/* Copy the entry of job/step/task; step/task may be UINT32_MAX for "any"
 * (then exactly one must match: EEXIST if several).  -1 + ENOENT. */
int registry_find(uint32_t job, uint32_t step, uint32_t task, struct task_reg *out);
/* Mark busy (false if already busy or gone). */
bool registry_claim(pid_t pid);
/* For a preemption: 1 = claimed, 0 = busy with another operation (try
 * again), -1 = a preemption checkpoint is already under way or the task
 * is gone. */
int registry_claim_preempt(pid_t pid);
void registry_release(pid_t pid, uint64_t gen);
/* Drop entries whose process is gone; returns how many. */
unsigned registry_reap(void);
/* Copy up to max entries due for a periodic checkpoint at now_ms and push
 * their next due time forward.  Returns the count. */
unsigned registry_due(uint64_t now_ms, struct task_reg *out, unsigned max);
/* Copy all entries (caller frees *out). */
int registry_snapshot(struct task_reg **out, unsigned *n);

#endif
