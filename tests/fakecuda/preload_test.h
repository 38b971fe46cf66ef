/*
 * preload_test.h - helpers for the tests that run under
 * LD_PRELOAD=libphos.so (test_preload_hooks, _signal, _noncuda).
 */
#ifndef PRELOAD_TEST_H
#define PRELOAD_TEST_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "phos.h"

/* Re-exec this program under LD_PRELOAD=libphos.so with the fake driver
 * first in LD_LIBRARY_PATH, once. */
static inline void preload_reexec(char **argv)
{
	char path[8192];
	const char *old = getenv("LD_LIBRARY_PATH");

	if (getenv("PHOS_TEST_PRELOADED"))
		return;
	snprintf(path, sizeof(path), "%s%s%s", FAKECUDA_DIR, old ? ":" : "", old ? old : "");
	setenv("LD_LIBRARY_PATH", path, 1);
	setenv("LD_PRELOAD", PHOS_SO, 1);
	setenv("PHOS_TEST_PRELOADED", "1", 1);
	execv("/proc/self/exe", argv);
	perror("execv /proc/self/exe");
	exit(99);
}

/* libphos's counters, through its exported getter. */
static inline struct phos_stats preload_stats(void)
{
	int (*get)(struct phos_stats *, size_t) =
		(int (*)(struct phos_stats *, size_t))dlsym(RTLD_DEFAULT, "phos_stats");
	struct phos_stats st;

	memset(&st, 0xff, sizeof(st));
	if (!get || get(&st, sizeof(st)) != 0) {
		fprintf(stderr, "phos_stats not found: is libphos.so preloaded?\n");
		abort();
	}
	return st;
}

/* libphos's phos_alloc_query, through dlsym (never linked). */
static inline int preload_alloc_query(uint64_t addr, uint64_t *base, uint64_t *size, int *kind,
				      uint64_t *writes)
{
	int (*q)(uint64_t, uint64_t *, uint64_t *, int *, uint64_t *) =
		(int (*)(uint64_t, uint64_t *, uint64_t *, int *, uint64_t *))dlsym(RTLD_DEFAULT,
										      "phos_alloc_query");

	if (!q)
		abort();
	return q(addr, base, size, kind, writes);
}

/* True if addr lies in libphos.so. */
static inline int in_libphos(const void *addr)
{
	Dl_info di;

	return addr && dladdr(addr, &di) && di.dli_fname && strstr(di.dli_fname, "libphos");
}

#endif
