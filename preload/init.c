/*
 * init.c - lazy initialisation, environment, debug log, and the only
 * ways libphos resolves symbols (phos_real_dlsym, phos_cuda_sym).
 *
 * libphos is preloaded into every task of a job, CUDA or not, so loading
 * it must change nothing: the constructor only resolves a few libc
 * symbols, and everything else waits for the first CUDA call, except
 * that PHOS_CHECKPOINT=1 (set by the SPANK plugin) initialises at once
 * so that SIGTERM is caught from the start.
 *
 * Environment (read once, with secure_getenv):
 *   PHOS_DEBUG=1        debug lines on stderr, prefixed "phos[pid]: "
 *   PHOS_CHECKPOINT=1   catch SIGTERM for checkpointing (signal.c)
 *   PHOS_STATS_FILE=F   write the counters to F at exit (stats.c)
 *   PHOS_WSET_ALWAYS=1  compute every launch's write set, not only while a
 *                       concurrent save or load needs them (diagnostics:
 *                       wset_marks and phos_alloc_query's write counts
 *                       then cover every launch; costs ~100-200 ns each)
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "phos_int.h"

struct phos_env phos_env;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_done;
static char stats_path[PATH_MAX];

static phos_dlsym_fn real_dlsym;
static void *cuda_handle;

static bool env_true(const char *v)
{
	return v && *v && strcmp(v, "0") != 0;
}

static const char *bad_vmm_min;	/* an unusable PHOS_VMM_MIN */

static void read_env(void)
{
	const char *v;

	phos_env.debug = env_true(secure_getenv("PHOS_DEBUG"));
	v = secure_getenv("PHOS_CHECKPOINT");
	phos_env.checkpoint = v && strcmp(v, "1") == 0;
	/* large buffers as exportable VMM: with checkpointing, unless
	 * PHOS_VMM=0; PHOS_VMM=1 forces it on */
	v = secure_getenv("PHOS_VMM");
	phos_env.vmm = v && *v ? env_true(v) : phos_env.checkpoint;
	phos_env.vmm_min = 2u << 20;
	v = secure_getenv("PHOS_VMM_MIN");
	if (v && *v) {
		char *end;
		unsigned long long n = strtoull(v, &end, 10);

		if (end != v && *end == '\0' && n > 0)
			phos_env.vmm_min = (size_t)n;
		else
			bad_vmm_min = v;	/* said once debug output is set up */
	}
	phos_env.wset_always = env_true(secure_getenv("PHOS_WSET_ALWAYS"));
	v = secure_getenv("PHOS_STATS_FILE");
	if (v && *v && strlen(v) < sizeof(stats_path)) {
		memcpy(stats_path, v, strlen(v) + 1);
		phos_env.stats_file = stats_path;
	}
}

static void do_init(void)
{
	int saved = errno;

	read_env();
	phos_gate_init();
	pthread_atfork(NULL, NULL, phos_gate_atfork_child);
	phos_sig_resolve();
	if (phos_env.checkpoint && phos_sig_start() < 0)
		phos_dbg("cannot catch SIGTERM: %s", strerror(errno));
	__atomic_store_n(&init_done, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&phos_st.initialized, 1, __ATOMIC_RELAXED);
	if (bad_vmm_min)
		phos_dbg("PHOS_VMM_MIN=%s: not a positive number of bytes, using %zu", bad_vmm_min,
			 phos_env.vmm_min);
	phos_dbg("initialised (checkpoint=%d, vmm=%d from %zu bytes)", phos_env.checkpoint,
		 phos_env.vmm, phos_env.vmm_min);
	errno = saved;
}

void phos_init(void)
{
	if (__atomic_load_n(&init_done, __ATOMIC_ACQUIRE))
		return;
	pthread_once(&init_once, do_init);
}

bool phos_initialized(void)
{
	return __atomic_load_n(&init_done, __ATOMIC_ACQUIRE);
}

void phos_dbg(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int saved = errno;
	int n, m;

	if (!phos_env.debug)
		return;
	n = snprintf(buf, sizeof(buf), "phos[%ld]: ", (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(buf))
		goto out;
	va_start(ap, fmt);
	m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		goto out;
	n += m;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0)
		goto out;
out:
	errno = saved;
}

phos_dlsym_fn phos_real_dlsym_fn(void)
{
	static const char *const vers[] = { "GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17" };
	phos_dlsym_fn f = __atomic_load_n(&real_dlsym, __ATOMIC_ACQUIRE);
	size_t i;

	for (i = 0; !f && i < sizeof(vers) / sizeof(vers[0]); i++) {
		f = (phos_dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", vers[i]);
		if (f)
			__atomic_store_n(&real_dlsym, f, __ATOMIC_RELEASE);
	}
	return f;
}

void *phos_real_dlsym(void *handle, const char *name)
{
	phos_dlsym_fn f = phos_real_dlsym_fn();

	return f ? f(handle, name) : NULL;
}

void *phos_cuda_sym(const char *name)
{
	void *h = __atomic_load_n(&cuda_handle, __ATOMIC_ACQUIRE);
	void *sym = NULL;

	if (!h) {
		/* never load the driver ourselves: only find it if the
		 * application (or its cudart) already did */
		h = dlopen("libcuda.so.1", RTLD_NOLOAD | RTLD_LAZY);
		if (h && !__atomic_compare_exchange_n(&cuda_handle, &(void *){ NULL }, h, false,
						      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			dlclose(h);	/* another thread stored it first */
		h = __atomic_load_n(&cuda_handle, __ATOMIC_ACQUIRE);
	}
	if (h)
		sym = phos_real_dlsym(h, name);
	if (!sym)
		sym = phos_real_dlsym(RTLD_NEXT, name);
	return sym;
}

__attribute__((constructor)) static void phos_ctor(void)
{
	const char *v = secure_getenv("PHOS_CHECKPOINT");
	int saved = errno;

	phos_sig_resolve();
	if (v && strcmp(v, "1") == 0)
		phos_init();
	errno = saved;
}
