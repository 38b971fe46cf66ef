/*
 * wset.c - write-set speculation (DESIGN.md §5): every 8-byte-aligned
 * word of a launch's parameters that falls inside a tracked allocation
 * marks that allocation written; a memcpy/memset marks the allocations
 * its destination range overlaps.  Pure functions over an amap: the
 * caller holds the map lock (for reading: marks are atomic adds).
 *
 * Misses, by design for now: pointers stored in device memory.  TMA
 * descriptors and graphs are graph.c's (it walks parameters with
 * phos_params_each, the same walk as phos_wset_scan).
 */
#include "config.h"

#include <string.h>

#include "phos_int.h"

static void mark(struct phos_wset *ws, struct phos_alloc *a, uint32_t at)
{
	unsigned i;

	for (i = 0; i < ws->n; i++)
		if (ws->base[i] == a->base)
			return;
	if (ws->n == PHOS_WSET_MAX) {
		ws->unknown = true;	/* too many to list: assume all */
		return;
	}
	ws->at[ws->n] = at;
	ws->base[ws->n++] = a->base;
	/* a diagnostic count, not an atomic add: a lock-prefixed add per
	 * buffer was a third of a launch's cost; two threads naming the
	 * same buffer at the same instant may count it once */
	__atomic_store_n(&a->writes, __atomic_load_n(&a->writes, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELAXED);
}

static void scan_bytes(const struct phos_amap *m, struct phos_wset *ws, const unsigned char *val,
		       uint32_t off, uint32_t size)
{
	/* words aligned in the parameter buffer, which is how the kernel
	 * sees them; a pointer parameter is always 8-aligned there */
	uint32_t first = (off + 7u) & ~7u;
	uint32_t p;

	for (p = first; p + 8u <= off + size; p += 8u) {
		uint64_t w;
		struct phos_alloc *a;

		memcpy(&w, val + (p - off), sizeof(w));
		a = phos_amap_find(m, w);
		if (a)
			mark(ws, a, p);
	}
}

static void *extra_buffer(void **extra, size_t *size)
{
	void *buf = NULL;
	size_t i;

	*size = 0;
	for (i = 0; i < 64 && extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
		if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER)
			buf = extra[i + 1];
		else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE && extra[i + 1])
			*size = *(size_t *)extra[i + 1];
		else if (extra[i] != CU_LAUNCH_PARAM_BUFFER_POINTER &&
			 extra[i] != CU_LAUNCH_PARAM_BUFFER_SIZE)
			return NULL;	/* an option we do not know */
	}
	return buf;
}

bool phos_params_each(const struct phos_param *p, unsigned np, void **kernel_params, void **extra,
		      phos_param_fn fn, void *ctx)
{
	unsigned i;

	if (kernel_params) {
		for (i = 0; i < np; i++)
			if (!kernel_params[i])
				return false;
		for (i = 0; i < np; i++)
			fn(ctx, kernel_params[i], p[i].offset, p[i].size);
		return true;
	}
	if (extra) {
		size_t bsize;
		const unsigned char *buf = extra_buffer(extra, &bsize);

		if (!buf)
			return false;
		for (i = 0; i < np; i++)
			if ((size_t)p[i].offset + p[i].size > bsize)
				return false;
		for (i = 0; i < np; i++)
			fn(ctx, buf + p[i].offset, p[i].offset, p[i].size);
		return true;
	}
	return np == 0;		/* parameters we were not given */
}

struct scan_ctx {
	const struct phos_amap *m;
	struct phos_wset *ws;
};

static void scan_one(void *ctx, const unsigned char *val, uint32_t off, uint32_t size)
{
	struct scan_ctx *c = ctx;

	scan_bytes(c->m, c->ws, val, off, size);
}

void phos_wset_scan(const struct phos_amap *m, struct phos_wset *ws, const struct phos_param *p,
		    unsigned np, void **kernel_params, void **extra)
{
	struct scan_ctx c = { m, ws };

	if (!phos_params_each(p, np, kernel_params, extra, scan_one, &c))
		ws->unknown = true;
}

void phos_wset_range(const struct phos_amap *m, struct phos_wset *ws, uint64_t base, uint64_t size)
{
	uint64_t end = base + size;
	size_t i;

	if (size == 0)
		return;
	if (end < base)
		end = UINT64_MAX;
	for (i = phos_amap_lower(m, base); i < m->n && m->v[i].base < end; i++)
		mark(ws, &m->v[i], UINT32_MAX);
}
