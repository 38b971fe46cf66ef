/*
 * stats.c - per-process counters: phos_stats() for tests (phos.h) and
 * the PHOS_STATS_FILE dump at exit, for programs we cannot modify.  Counts
 * are kept per thread (gate.c's slots, PHOS_COUNT) and summed here.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "phos_int.h"

struct phos_stats phos_st;

PHOS_EXPORT int phos_stats(struct phos_stats *st, size_t size)
{
	struct phos_stats snap;
	uint64_t *dst = (uint64_t *)&snap;
	unsigned k, nslots = phos_slots_used();
	size_t i;

	if (!st) {
		errno = EINVAL;
		return -1;
	}
	/* the gauges, plus every thread's counts */
	for (i = 0; i < sizeof(snap) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&((const uint64_t *)&phos_st)[i], __ATOMIC_RELAXED) +
			 __atomic_load_n(&((const uint64_t *)&phos_slot_shared.n)[i],
					 __ATOMIC_RELAXED);
	for (k = 0; k < nslots; k++)
		for (i = 0; i < sizeof(snap) / sizeof(uint64_t); i++)
			dst[i] += __atomic_load_n(&((const uint64_t *)&phos_slots[k].n)[i],
						  __ATOMIC_RELAXED);
	memcpy(st, &snap, size < sizeof(snap) ? size : sizeof(snap));
	return 0;
}

/* Expand one "%p" to the pid; other text is copied as is. */
static int stats_path(char *out, size_t size, const char *tmpl)
{
	const char *p = strstr(tmpl, "%p");
	int n;

	if (p)
		n = snprintf(out, size, "%.*s%ld%s", (int)(p - tmpl), tmpl, (long)getpid(), p + 2);
	else
		n = snprintf(out, size, "%s", tmpl);
	return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

__attribute__((destructor)) static void phos_stats_dump(void)
{
	static const char *const names[] = {
		"initialized", "launches", "graph_launches", "launches_captured",
		"launches_unknown", "allocs", "frees", "bytes_allocated", "bytes_freed",
		"maps", "unmaps", "allocs_device", "allocs_host", "allocs_async", "allocs_create",
		"vmm_allocs", "vmm_fallbacks", "vmm_owned", "vmm_exportable",
		"detaches", "reattaches", "copies", "memsets", "wset_marks", "map_entries",
		"gpa_lookups", "gpa_wrapped", "dlsym_wrapped", "slot_conflicts", "sigterms",
		"graph_launches_known", "tma_marks", "cow_waits",
	};
	_Static_assert(sizeof(names) / sizeof(names[0]) == sizeof(struct phos_stats) / sizeof(uint64_t),
		       "one name per counter");
	struct phos_stats st;
	const uint64_t *v = (const uint64_t *)&st;
	char path[4096], buf[2048];
	size_t i, off = 0;
	int fd, saved = errno;

	if (!phos_initialized() || !phos_env.stats_file)
		return;
	if (stats_path(path, sizeof(path), phos_env.stats_file) < 0)
		goto out;
	phos_stats(&st, sizeof(st));
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int n = snprintf(buf + off, sizeof(buf) - off, "%s %llu\n", names[i],
				 (unsigned long long)v[i]);
		if (n < 0 || (size_t)n >= sizeof(buf) - off)
			goto out;
		off += (size_t)n;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		phos_dbg("cannot write stats to %s: %s", path, strerror(errno));
		goto out;
	}
	if (write(fd, buf, off) != (ssize_t)off)
		phos_dbg("short write of stats to %s", path);
	close(fd);
out:
	errno = saved;
}
