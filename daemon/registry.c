/*
 * registry.c - registered tasks (a short list: tasks of one node).
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "phosd.h"
#include "proc.h"
#include "registry.h"
#include "util.h"

static struct registry *reg(void)
{
	return phosd->reg;
}

int registry_add(const struct task_reg *t)
{
	struct task_reg *e, **pp;

	pthread_mutex_lock(&phosd->lock);
	for (pp = &reg()->head; *pp; pp = &(*pp)->next) {
		e = *pp;
		if ((e->job == t->job && e->step == t->step && e->task == t->task) ||
		    e->pid == t->pid) {
			*pp = e->next;
			free(e);
			reg()->n--;
			break;
		}
	}
	e = malloc(sizeof(*e));
	if (!e) {
		pthread_mutex_unlock(&phosd->lock);
		return -1;
	}
	*e = *t;
	e->busy = false;
	e->registered_ms = phos_now_ms();
	e->next_due_ms = t->interval_ms ? e->registered_ms + t->interval_ms : 0;
	e->next = reg()->head;
	reg()->head = e;
	reg()->n++;
	pthread_mutex_unlock(&phosd->lock);
	return 0;
}

unsigned registry_remove_job(uint32_t job)
{
	struct task_reg **pp = &reg()->head;
	unsigned n = 0;

	pthread_mutex_lock(&phosd->lock);
	while (*pp) {
		struct task_reg *e = *pp;

		if (e->job == job) {
			*pp = e->next;
			free(e);
			reg()->n--;
			n++;
		} else {
			pp = &e->next;
		}
	}
	pthread_mutex_unlock(&phosd->lock);
	return n;
}

/* Is pid root or a descendant of root?  Walks PPid up to 64 levels. */
static bool in_tree(pid_t pid, pid_t root)
{
	for (int i = 0; i < 64 && pid > 1; i++) {
		struct proc_ids ids;

		if (pid == root)
			return true;
		if (proc_ids(pid, &ids) < 0)
			return false;
		pid = ids.ppid;
	}
	return pid == root;
}

int registry_find_pid(pid_t pid, struct task_reg *out)
{
	struct task_reg *e;

	pthread_mutex_lock(&phosd->lock);
	for (e = reg()->head; e; e = e->next)
		if (e->pid == pid)
			break;
	if (!e)
		for (e = reg()->head; e; e = e->next)
			if (in_tree(pid, e->pid))
				break;
	if (e)
		*out = *e;
	pthread_mutex_unlock(&phosd->lock);
	if (!e) {
		errno = ENOENT;
		return -1;
	}
	return 0;
}

int registry_find(uint32_t job, uint32_t step, uint32_t task, struct task_reg *out)
{
	struct task_reg *e;
	unsigned n = 0;

	pthread_mutex_lock(&phosd->lock);
	for (e = reg()->head; e; e = e->next) {
		if (e->job != job || (step != UINT32_MAX && e->step != step) ||
		    (task != UINT32_MAX && e->task != task))
			continue;
		if (n++ == 0)
			*out = *e;
	}
	pthread_mutex_unlock(&phosd->lock);
	if (n == 0) {
		errno = ENOENT;
		return -1;
	}
	if (n > 1) {
		errno = EEXIST;
		return -1;
	}
	return 0;
}

bool registry_claim(pid_t pid)
{
	bool ok = false;

	pthread_mutex_lock(&phosd->lock);
	for (struct task_reg *e = reg()->head; e; e = e->next)
		if (e->pid == pid) {
			ok = !e->busy;
			e->busy = true;
			break;
		}
	pthread_mutex_unlock(&phosd->lock);
	return ok;
}

int registry_claim_preempt(pid_t pid)
{
	int rc = -1;

	pthread_mutex_lock(&phosd->lock);
	for (struct task_reg *e = reg()->head; e; e = e->next)
		if (e->pid == pid) {
			if (e->preempting)
				rc = -1;
			else if (e->busy)
				rc = 0;
			else
				rc = 1, e->busy = e->preempting = true;
			break;
		}
	pthread_mutex_unlock(&phosd->lock);
	return rc;
}

void registry_release(pid_t pid, uint64_t gen)
{
	pthread_mutex_lock(&phosd->lock);
	for (struct task_reg *e = reg()->head; e; e = e->next)
		if (e->pid == pid) {
			e->busy = false;
			e->preempting = false;
			if (gen)
				e->last_gen = gen;
			break;
		}
	pthread_mutex_unlock(&phosd->lock);
}

unsigned registry_reap(void)
{
	struct task_reg **pp = &reg()->head;
	unsigned n = 0;

	pthread_mutex_lock(&phosd->lock);
	while (*pp) {
		struct task_reg *e = *pp;

		if (!e->busy && kill(e->pid, 0) < 0 && errno == ESRCH) {
			*pp = e->next;
			free(e);
			reg()->n--;
			n++;
		} else {
			pp = &e->next;
		}
	}
	pthread_mutex_unlock(&phosd->lock);
	return n;
}

unsigned registry_due(uint64_t now_ms, struct task_reg *out, unsigned max)
{
	unsigned n = 0;

	pthread_mutex_lock(&phosd->lock);
	for (struct task_reg *e = reg()->head; e && n < max; e = e->next) {
		if (!e->interval_ms || e->busy || now_ms < e->next_due_ms)
			continue;
		e->next_due_ms = now_ms + e->interval_ms;
		out[n++] = *e;
	}
	pthread_mutex_unlock(&phosd->lock);
	return n;
}

int registry_snapshot(struct task_reg **out, unsigned *n)
{
	unsigned i = 0;

	pthread_mutex_lock(&phosd->lock);
	*out = calloc(reg()->n ? reg()->n : 1, sizeof(**out));
	if (!*out) {
		pthread_mutex_unlock(&phosd->lock);
		return -1;
	}
	for (struct task_reg *e = reg()->head; e; e = e->next)
		(*out)[i++] = *e;
	*n = i;
	pthread_mutex_unlock(&phosd->lock);
	return 0;
}
