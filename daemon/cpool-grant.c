/*
 * cpool-grant.c - a staging pool's access granted behind the copies
 * (cpool-grant.h).
 */
#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpool-grant.h"

enum { P_TODO, P_ASKED, P_DONE };

struct cpool_grant {
	const struct cpool_grant_ops *ops;
	CUcontext ctx;
	CUdeviceptr base;
	uint64_t piece;
	unsigned n, next;	/* next: the next of order[] to grant */
	CUmemAccessDesc acc[64];
	size_t na;
	unsigned *order;
	unsigned char *st;	/* P_*, by piece */
	pthread_mutex_t lock;
	pthread_cond_t cv;	/* a piece granted, asked for, or the end */
	pthread_t th;
	bool stop, failed, done;
	char err[200];
};

/* Grant piece k (lock not held): true if the driver took it. */
static bool grant(struct cpool_grant *g, unsigned k)
{
	CUresult r = g->ops->set_access(g->base + (CUdeviceptr)k * g->piece, g->piece, g->acc,
					g->na);

	if (r == CUDA_SUCCESS)
		return true;
	pthread_mutex_lock(&g->lock);
	if (!g->failed)
		snprintf(g->err, sizeof(g->err), "granting access to piece %u of %u of the "
			 "staging pool: %s", k + 1, g->n, g->ops->err(r));
	g->failed = true;
	pthread_mutex_unlock(&g->lock);
	return false;
}

/* The next piece to grant (lock held): one a copy asked for, else the
 * next in order; -1 when none is left. */
static int pick(struct cpool_grant *g)
{
	for (unsigned k = 0; k < g->n; k++)
		if (g->st[k] == P_ASKED)
			return (int)k;
	while (g->next < g->n && g->st[g->order[g->next]] == P_DONE)
		g->next++;
	return g->next < g->n ? (int)g->order[g->next] : -1;
}

static void *granter(void *arg)
{
	struct cpool_grant *g = arg;

	if (g->ctx)
		g->ops->set_current(g->ctx);
	pthread_mutex_lock(&g->lock);
	for (int k; !g->stop && !g->failed && (k = pick(g)) >= 0;) {
		g->st[k] = P_ASKED;	/* not picked again */
		pthread_mutex_unlock(&g->lock);
		bool ok = grant(g, (unsigned)k);
		pthread_mutex_lock(&g->lock);
		if (ok)
			g->st[k] = P_DONE;
		pthread_cond_broadcast(&g->cv);
	}
	g->done = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

static void grant_free(struct cpool_grant *g)
{
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cv);
	free(g->order);
	free(g->st);
	free(g);
}

struct cpool_grant *cpool_grant_start(const struct cpool_grant_ops *ops, CUcontext ctx,
				      CUdeviceptr base, uint64_t piece, unsigned n,
				      const CUmemAccessDesc *acc, size_t na, const unsigned *order,
				      unsigned norder, char *why, size_t whysz)
{
	struct cpool_grant *g = calloc(1, sizeof(*g));
	unsigned m = 0;

	if (!g || !n || !na || na > 64 || !(g->order = calloc(n, sizeof(*g->order))) ||
	    !(g->st = calloc(n, 1))) {
		snprintf(why, whysz, "%s", g && n && na && na <= 64 ? "out of memory" :
			 "no pieces or no access to grant");
		if (g) {
			free(g->order);
			free(g);
		}
		return NULL;
	}
	*g = (struct cpool_grant){ .ops = ops, .ctx = ctx, .base = base, .piece = piece, .n = n,
				   .na = na, .order = g->order, .st = g->st };
	memcpy(g->acc, acc, na * sizeof(*acc));
	/* order[] first, then what it left out, each piece once */
	for (unsigned i = 0; order && i < norder; i++)
		if (order[i] < n && !g->st[order[i]]) {
			g->st[order[i]] = 1;
			g->order[m++] = order[i];
		}
	for (unsigned k = 0; k < n; k++)
		if (!g->st[k])
			g->order[m++] = k;
	memset(g->st, P_TODO, n);
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cv, NULL);
	/* the first piece here: a pool the driver will not open to us is
	 * known before anything depends on it */
	if (!grant(g, g->order[0])) {
		snprintf(why, whysz, "%s", g->err);
		grant_free(g);
		return NULL;
	}
	g->st[g->order[0]] = P_DONE;
	if (pthread_create(&g->th, NULL, granter, g) != 0) {
		snprintf(why, whysz, "cannot start the thread that grants access to the staging pool");
		grant_free(g);
		return NULL;
	}
	return g;
}

int cpool_grant_wait(struct cpool_grant *g, uintptr_t p, size_t len, char *err, size_t errsz)
{
	uint64_t lo = (p - g->base) / g->piece, hi = (p + len - 1 - g->base) / g->piece;
	int rc = 0;

	if (!len)
		return 0;
	if (p < g->base || hi >= g->n) {
		snprintf(err, errsz, "%zu bytes at %#lx are outside the staging pool's mapping", len,
			 (unsigned long)p);
		return -1;
	}
	pthread_mutex_lock(&g->lock);
	for (uint64_t k = lo; k <= hi; k++) {
		if (g->st[k] == P_TODO) {
			g->st[k] = P_ASKED;	/* the granter takes it next */
			pthread_cond_broadcast(&g->cv);
		}
		while (g->st[k] != P_DONE && !g->failed && !g->done)
			pthread_cond_wait(&g->cv, &g->lock);
		if (g->st[k] != P_DONE) {
			snprintf(err, errsz, "%s", g->failed ? g->err : "the staging pool's access "
				 "was no longer being granted");
			rc = -1;
			break;
		}
	}
	pthread_mutex_unlock(&g->lock);
	return rc;
}

int cpool_grant_end(struct cpool_grant *g, char *why, size_t whysz)
{
	int rc = 0;

	if (!g)
		return 0;
	pthread_mutex_lock(&g->lock);
	g->stop = true;
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->th, NULL);
	for (unsigned k = 0; k < g->n && !rc; k++)
		if (g->st[k] != P_DONE) {
			snprintf(why, whysz, "%s", g->failed ? g->err : "not every piece of the "
				 "staging pool was granted");
			rc = -1;
		}
	grant_free(g);
	return rc;
}
