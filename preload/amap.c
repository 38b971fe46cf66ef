/*
 * amap.c - interval map of device allocations (see amap.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "amap.h"

void phos_amap_fini(struct phos_amap *m)
{
	if (!m)
		return;
	free(m->v);
	m->v = NULL;
	m->n = m->cap = 0;
}

size_t phos_amap_lower(const struct phos_amap *m, uint64_t addr)
{
	size_t lo = 0, hi = m->n;

	/* first i with v[i].base + v[i].size > addr (ends are sorted too,
	 * since the ranges are disjoint) */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->v[mid].base + m->v[mid].size > addr)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

struct phos_alloc *phos_amap_find(const struct phos_amap *m, uint64_t addr)
{
	size_t i = phos_amap_lower(m, addr);

	if (i < m->n && m->v[i].base <= addr)
		return &m->v[i];
	return NULL;
}

static int range_ok(uint64_t base, uint64_t size)
{
	if (size == 0 || base + size < base) {
		errno = EINVAL;
		return 0;
	}
	return 1;
}

int phos_amap_remove_range(struct phos_amap *m, uint64_t base, uint64_t size)
{
	size_t i, j;

	if (!range_ok(base, size))
		return -1;
	i = phos_amap_lower(m, base);
	for (j = i; j < m->n && m->v[j].base < base + size; j++)
		;
	if (j > i)
		memmove(&m->v[i], &m->v[j], (m->n - j) * sizeof(m->v[0]));
	m->n -= j - i;
	return (int)(j - i);
}

int phos_amap_insert(struct phos_amap *m, uint64_t base, uint64_t size, int kind)
{
	int evicted;
	size_t i;

	if (!range_ok(base, size))
		return -1;
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct phos_alloc *v = realloc(m->v, cap * sizeof(*v));

		if (!v) {
			errno = ENOMEM;
			return -1;
		}
		m->v = v;
		m->cap = cap;
	}
	evicted = phos_amap_remove_range(m, base, size);
	i = phos_amap_lower(m, base);
	memmove(&m->v[i + 1], &m->v[i], (m->n - i) * sizeof(m->v[0]));
	m->v[i] = (struct phos_alloc){ .base = base, .size = size, .kind = kind };
	m->n++;
	return evicted;
}

int phos_amap_remove(struct phos_amap *m, uint64_t base, struct phos_alloc *out)
{
	size_t i = phos_amap_lower(m, base);

	if (i >= m->n || m->v[i].base != base) {
		errno = ENOENT;
		return -1;
	}
	if (out)
		*out = m->v[i];
	memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(m->v[0]));
	m->n--;
	return 0;
}
