/*
 * amap.h - interval map of device allocations: a sorted array of
 * disjoint [base, base+size) ranges, O(log n) lookup of the range that
 * contains an address.
 *
 * Not thread-safe: the hook layer (alloc.c) serialises writers and
 * readers with a rwlock.  Never used from a signal handler.
 */
#ifndef PHOS_AMAP_H
#define PHOS_AMAP_H

#include <stddef.h>
#include <stdint.h>

struct phos_alloc {
	uint64_t base;
	uint64_t size;
	uint64_t writes;	/* times a write set named it (wset.c: may miss
				 * a count when threads race) */
	uint64_t aux;		/* the owner's datum (alloc.c: VMM handle size) */
	int kind;		/* enum phos_alloc_kind */
};

struct phos_amap {
	struct phos_alloc *v;
	size_t n;
	size_t cap;
};

#define PHOS_AMAP_INIT { .v = NULL, .n = 0, .cap = 0 }

/* Free the storage; the map is empty and usable afterwards.  NULL ok. */
void phos_amap_fini(struct phos_amap *m);

/* Insert [base, base+size).  Entries overlapping it are stale (their
 * free was not seen) and are evicted first.  Returns the number evicted
 * (>= 0); -1 + EINVAL if size is 0 or base+size overflows, -1 + ENOMEM. */
int phos_amap_insert(struct phos_amap *m, uint64_t base, uint64_t size, int kind);

/* Remove the entry that starts exactly at base, copying it to *out if out
 * is not NULL.  Returns 0; -1 + ENOENT if no entry starts at base. */
int phos_amap_remove(struct phos_amap *m, uint64_t base, struct phos_alloc *out);

/* Remove every entry overlapping [base, base+size).  Returns how many
 * were removed; -1 + EINVAL on size 0 or overflow. */
int phos_amap_remove_range(struct phos_amap *m, uint64_t base, uint64_t size);

/* The entry containing addr, or NULL.  The pointer is valid until the
 * next insert/remove. */
struct phos_alloc *phos_amap_find(const struct phos_amap *m, uint64_t addr);

/* Index of the first entry that ends after addr (n if none): iterate from
 * there while v[i].base < end to visit the entries overlapping a range. */
size_t phos_amap_lower(const struct phos_amap *m, uint64_t addr);

#endif
