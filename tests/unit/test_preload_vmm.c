/*
 * test_preload_vmm.c - libphos.so over the fake driver: large allocations
 * served as exportable VMM memory, what the app sees of them, and the
 * GPU detach/reattach exchange with phosd.  This program plays phosd on
 * the socket PHOS_SOCKET names: it sends the real-time signals phosd
 * sends and answers GPU_DETACH/GPU_REATTACH with the real protocol code.
 * Re-executes itself under LD_PRELOAD with PHOS_CHECKPOINT=1.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <cmocka.h>

#include "fakecuda.h"
#include "preload_test.h"
#include "preload_cuda.h"
#include "proto.h"

#define MiB (1024 * 1024)
#define D(field) (after.field - before.field)

static char sock_path[108];
static int listen_fd = -1;

static int setup(void **state)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	(void)state;
	preload_ctx();
	memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(listen_fd >= 0);
	unlink(sock_path);
	assert_int_equal(bind(listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(listen_fd, 4), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	close(listen_fd);
	unlink(sock_path);
	return 0;
}

/* The protection of the page at p in /proc/self/maps ("rw-p", "---p"). */
static void prot_of(CUdeviceptr p, char out[5])
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");

	strcpy(out, "?");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perm[5];

		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) == 3 && p >= lo && p < hi) {
			memcpy(out, perm, 5);
			break;
		}
	}
	fclose(f);
}

static void fill(CUdeviceptr p, size_t n, uint8_t seed)
{
	uint8_t *h = malloc(n);

	for (size_t i = 0; i < n; i++)
		h[i] = (uint8_t)(seed + i * 7);
	assert_int_equal(cuMemcpyHtoD(p, h, n), CUDA_SUCCESS);
	free(h);
}

static int check(CUdeviceptr p, size_t n, uint8_t seed)
{
	uint8_t *h = malloc(n);
	int ok = cuMemcpyDtoH(h, p, n) == CUDA_SUCCESS;

	for (size_t i = 0; ok && i < n; i++)
		ok = h[i] == (uint8_t)(seed + i * 7);
	free(h);
	return ok;
}

static void test_large_is_vmm(void **state)
{
	struct phos_stats before = preload_stats(), after;
	unsigned long creates = fakecuda_calls("cuMemCreate");
	CUdeviceptr big = 0, small = 0, base = 0;
	uint64_t qbase = 0;
	size_t size = 0;

	(void)state;
	assert_int_equal(cuMemAlloc(&big, 3 * MiB), CUDA_SUCCESS);
	assert_int_equal(cuMemAlloc(&small, MiB), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(vmm_allocs), 1);
	assert_int_equal(D(allocs), 2);
	assert_int_equal(fakecuda_calls("cuMemCreate") - creates, 1);
	assert_int_equal(fakecuda_last_handle_types(), CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	assert_int_equal(big % (2 * MiB), 0);
	/* the range is what the app asked for, not the 4 MiB mapped */
	assert_int_equal(cuMemGetAddressRange(&base, &size, big + 5), CUDA_SUCCESS);
	assert_int_equal(base, big);
	assert_int_equal(size, 3 * MiB);
	assert_int_equal(cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, big + 9),
			 CUDA_SUCCESS);
	assert_int_equal(size, 3 * MiB);
	{
		CUpointer_attribute at[3] = { CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
					      CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
					      CU_POINTER_ATTRIBUTE_RANGE_SIZE };
		unsigned int type = 0;
		CUdeviceptr start = 0;
		size_t rsize = 0;
		void *data[3] = { &type, &start, &rsize };

		assert_int_equal(cuPointerGetAttributes(3, at, data, big + 77), CUDA_SUCCESS);
		assert_int_equal(type, CU_MEMORYTYPE_DEVICE);
		assert_int_equal(start, big);
		assert_int_equal(rsize, 3 * MiB);
	}
	fill(big, 3 * MiB, 1);
	assert_true(check(big, 3 * MiB, 1));
	/* the map has it, for write sets */
	assert_int_equal(preload_alloc_query(big + MiB, &qbase, NULL, NULL, NULL), 0);
	assert_int_equal(qbase, big);

	unsigned long unmaps = fakecuda_calls("cuMemUnmap"), frees = fakecuda_calls("cuMemAddressFree");
	assert_int_equal(cuMemFree(big), CUDA_SUCCESS);
	assert_int_equal(cuMemFree(small), CUDA_SUCCESS);
	assert_int_equal(fakecuda_calls("cuMemUnmap") - unmaps, 1);
	assert_int_equal(fakecuda_calls("cuMemAddressFree") - frees, 1);
	after = preload_stats();
	assert_int_equal(after.vmm_owned, before.vmm_owned);
	assert_int_equal(D(frees), 2);
	assert_int_not_equal(preload_alloc_query(big, NULL, NULL, NULL, NULL), 0);
}

static void test_app_create_exportable(void **state)
{
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 } };
	struct phos_stats before = preload_stats(), after;
	CUmemGenericAllocationHandle h;

	(void)state;
	assert_int_equal(cuMemCreate(&h, 2 * MiB, &prop, 0), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(vmm_exportable), 1);
	assert_int_equal(fakecuda_last_handle_types(), CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	/* the app's prop is left as it was */
	assert_int_equal(prop.requestedHandleTypes, 0);
	assert_int_equal(cuMemRelease(h), CUDA_SUCCESS);
}

/* ---- phosd's side ---- */

static void send_sig(int value)
{
	union sigval v = { .sival_int = value };

	assert_int_equal(sigqueue(getpid(), SIGRTMIN + PHOS_SIGNAL_OFFSET, v), 0);
}

/* Accept libphos's connection and read its request. */
static struct phos_msg *serve(int *client)
{
	struct pollfd p = { .fd = listen_fd, .events = POLLIN };

	assert_int_equal(poll(&p, 1, 10000), 1);
	*client = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(*client >= 0);
	return phos_msg_recv(*client, 10000);
}

static void reply(int client, int err, const void *blob, size_t len, const int *fds, int nfds)
{
	struct phos_msg *r = phos_reply_new(1, err, err ? "refused by the test" : NULL);

	assert_non_null(r);
	if (blob)
		assert_int_equal(phos_msg_put_blob(r, PHOS_A_GPUBUFS, blob, len), 0);
	assert_int_equal(phos_msg_send(client, r, fds, nfds), 0);
	phos_msg_free(r);
	close(client);
}

static volatile int memset_done;
static CUdeviceptr memset_ptr;

static void *memsetter(void *arg)
{
	CUcontext ctx = arg;

	cuCtxSetCurrent(ctx);
	cuMemsetD8(memset_ptr, 0x5a, 4096);
	memset_done = 1;
	return NULL;
}

static void test_detach_reattach(void **state)
{
	struct phos_stats before = preload_stats(), after;
	CUdeviceptr a = 0, b = 0;
	struct phos_msg *m;
	const void *blob;
	size_t len;
	uint8_t saved[2 * PHOS_GPUBUF_LEN];
	int client, fds[2];
	char prot[5];
	pthread_t t;
	CUcontext ctx;

	(void)state;
	assert_int_equal(cuMemAlloc(&a, 4 * MiB), CUDA_SUCCESS);
	assert_int_equal(cuMemAlloc(&b, 6 * MiB), CUDA_SUCCESS);
	fill(a, 4 * MiB, 3);
	fill(b, 6 * MiB, 9);

	send_sig(PHOS_SIGVAL_DETACH);
	m = serve(&client);
	assert_non_null(m);
	assert_int_equal(m->type, PHOS_MSG_GPU_DETACH);
	assert_int_equal(m->nfds, 2);
	assert_int_equal(phos_msg_get_blob(m, PHOS_A_GPUBUFS, &blob, &len), 0);
	assert_int_equal(len, 2 * PHOS_GPUBUF_LEN);
	memcpy(saved, blob, len);
	for (int i = 0; i < 2; i++) {
		struct phos_gpubuf g;

		phos_gpubuf_get(saved + i * PHOS_GPUBUF_LEN, &g);
		assert_true((g.va == a && g.size == 4 * MiB) || (g.va == b && g.size == 6 * MiB));
		assert_int_equal(g.dev, 0);
		fds[i] = fcntl(m->fds[i], F_DUPFD_CLOEXEC, 3);	/* phosd keeps them */
		/* the memory behind the fd holds what the app wrote */
		uint8_t *p = mmap(NULL, g.size, PROT_READ, MAP_SHARED, fds[i], 0);
		assert_true(p != MAP_FAILED);
		assert_int_equal(p[100], (uint8_t)((g.va == a ? 3 : 9) + 100 * 7));
		munmap(p, g.size);
	}
	phos_msg_free(m);
	reply(client, 0, NULL, 0, NULL, 0);

	/* the app's VAs are reservations only now (the fake: PROT_NONE) */
	for (int i = 0; i < 100; i++) {
		prot_of(a, prot);
		if (strcmp(prot, "---p") == 0)
			break;
		usleep(10000);
	}
	assert_string_equal(prot, "---p");
	prot_of(b, prot);
	assert_string_equal(prot, "---p");
	/* libphos counts the detach once it has read our answer */
	after = preload_stats();
	for (int i = 0; i < 500 && D(detaches) == 0; i++) {
		usleep(10000);
		after = preload_stats();
	}
	assert_int_equal(D(detaches), 1);

	/* a CUDA call made now waits at the gate */
	cuCtxGetCurrent(&ctx);
	memset_ptr = a;
	memset_done = 0;
	assert_int_equal(pthread_create(&t, NULL, memsetter, ctx), 0);
	usleep(300000);
	assert_int_equal(memset_done, 0);

	send_sig(PHOS_SIGVAL_REATTACH);
	m = serve(&client);
	assert_non_null(m);
	assert_int_equal(m->type, PHOS_MSG_GPU_REATTACH);
	phos_msg_free(m);
	reply(client, 0, saved, sizeof(saved), fds, 2);
	close(fds[0]);
	close(fds[1]);
	pthread_join(t, NULL);
	assert_int_equal(memset_done, 1);
	after = preload_stats();
	assert_int_equal(D(reattaches), 1);
	/* same addresses, same contents (but the 4 KiB the memset wrote) */
	assert_true(check(b, 6 * MiB, 9));
	uint8_t h[8192];
	assert_int_equal(cuMemcpyDtoH(h, a, sizeof(h)), CUDA_SUCCESS);
	assert_int_equal(h[0], 0x5a);
	assert_int_equal(h[4095], 0x5a);
	assert_int_equal(h[4096], (uint8_t)(3 + 4096 * 7));
	assert_int_equal(cuMemFree(a), CUDA_SUCCESS);
	assert_int_equal(cuMemFree(b), CUDA_SUCCESS);
}

static void test_detach_refused(void **state)
{
	struct phos_stats before = preload_stats(), after;
	CUdeviceptr a = 0;
	struct phos_msg *m;
	int client;
	char prot[5];

	(void)state;
	assert_int_equal(cuMemAlloc(&a, 2 * MiB), CUDA_SUCCESS);
	fill(a, 2 * MiB, 5);
	send_sig(PHOS_SIGVAL_DETACH);
	m = serve(&client);
	assert_non_null(m);
	assert_int_equal(m->nfds, 1);
	phos_msg_free(m);
	reply(client, EBUSY, NULL, 0, NULL, 0);
	/* mapped again from libphos's own fds, calls go on */
	assert_int_equal(cuMemsetD8(a, 0x11, 16), CUDA_SUCCESS);
	prot_of(a, prot);
	assert_string_equal(prot, "rw-s");
	uint8_t h[32];
	assert_int_equal(cuMemcpyDtoH(h, a, sizeof(h)), CUDA_SUCCESS);
	assert_int_equal(h[0], 0x11);
	assert_int_equal(h[16], (uint8_t)(5 + 16 * 7));
	after = preload_stats();
	assert_int_equal(D(detaches), 0);
	assert_int_equal(cuMemFree(a), CUDA_SUCCESS);
}

static void test_detach_nothing(void **state)
{
	struct phos_msg *m;
	const void *blob;
	size_t len = 1;
	uint64_t err = 1;
	int client;

	(void)state;
	/* no large buffer: libphos says so and keeps running */
	send_sig(PHOS_SIGVAL_DETACH);
	m = serve(&client);
	assert_non_null(m);
	assert_int_equal(m->type, PHOS_MSG_GPU_DETACH);
	assert_int_equal(m->nfds, 0);
	assert_int_equal(phos_msg_get_u64(m, PHOS_A_ERRNO, &err), 0);
	assert_int_equal(err, 0);
	assert_int_equal(phos_msg_get_blob(m, PHOS_A_GPUBUFS, &blob, &len), 0);
	assert_int_equal(len, 0);
	phos_msg_free(m);
	reply(client, 0, NULL, 0, NULL, 0);
	CUdeviceptr p;
	assert_int_equal(cuMemAlloc(&p, 4096), CUDA_SUCCESS);
	assert_int_equal(cuMemFree(p), CUDA_SUCCESS);
}

/* After a reattach the buffers are imported memory, which the driver does
 * not export again (the fake refuses as an H100 does): the next detach
 * hands over the fds libphos kept; a detach that fails says the memory is
 * imported, so that phosd does not fall back to the driver checkpoint. */
static void test_detach_imported(void **state)
{
	struct phos_stats before = preload_stats(), after;
	CUdeviceptr a = 0;
	struct phos_msg *m;
	const void *blob;
	size_t len;
	uint8_t rec[PHOS_GPUBUF_LEN];
	uint64_t err = 0, fl = 0;
	int client, fd;

	(void)state;
	assert_int_equal(cuMemAlloc(&a, 2 * MiB), CUDA_SUCCESS);
	fill(a, 2 * MiB, 7);
	for (int round = 0; round < 2; round++) {
		send_sig(PHOS_SIGVAL_DETACH);
		m = serve(&client);
		assert_non_null(m);
		assert_int_equal(m->nfds, 1);	/* round 1: the kept fd, not an export */
		assert_int_equal(phos_msg_get_blob(m, PHOS_A_GPUBUFS, &blob, &len), 0);
		memcpy(rec, blob, sizeof(rec));
		fd = fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3);
		phos_msg_free(m);
		reply(client, 0, NULL, 0, NULL, 0);
		send_sig(PHOS_SIGVAL_REATTACH);
		m = serve(&client);
		assert_non_null(m);
		phos_msg_free(m);
		reply(client, 0, rec, sizeof(rec), &fd, 1);
		close(fd);
		assert_true(check(a, 2 * MiB, 7));
	}
	after = preload_stats();
	assert_int_equal(D(detaches), 2);
	assert_int_equal(D(reattaches), 2);

	/* a detach that cannot synchronise: refused, flagged as imported */
	fakecuda_set_sync_result(CUDA_ERROR_LAUNCH_FAILED);
	send_sig(PHOS_SIGVAL_DETACH);
	m = serve(&client);
	fakecuda_set_sync_result(CUDA_SUCCESS);
	assert_non_null(m);
	assert_int_equal(m->nfds, 0);
	assert_int_equal(phos_msg_get_u64(m, PHOS_A_ERRNO, &err), 0);
	assert_int_not_equal(err, 0);
	assert_int_equal(phos_msg_get_u64(m, PHOS_A_FLAGS, &fl), 0);
	assert_int_equal(fl & PHOS_F_GPU_IMPORTED, PHOS_F_GPU_IMPORTED);
	phos_msg_free(m);
	reply(client, 0, NULL, 0, NULL, 0);
	assert_true(check(a, 2 * MiB, 7));
	assert_int_equal(cuMemFree(a), CUDA_SUCCESS);
}

/*
 * The gate under load: LOADERS threads launch kernels that add to their
 * own word of a VMM buffer, without pause, while the buffer is detached
 * and reattached ROUNDS times.  A launch that slipped past the closed
 * gate would run on the unmapped range (the fake: PROT_NONE, SIGSEGV) or
 * write memory phosd already holds; every increment must survive.
 */
#define LOADERS 4
#define ROUNDS 20

static volatile int load_stop;
static CUdeviceptr load_buf;
static CUcontext load_ctx;

static void body_add(void **params)
{
	uint64_t *w = (uint64_t *)(uintptr_t)*(CUdeviceptr *)params[0];

	w[*(int *)params[1]]++;
}

static void *loader(void *arg)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 2, (const size_t[]){ 8, 4 }, body_add);
	int idx = (int)(intptr_t)arg;
	uintptr_t n = 0;
	void *kp[2] = { &load_buf, &idx };

	cuCtxSetCurrent(load_ctx);
	while (!__atomic_load_n(&load_stop, __ATOMIC_RELAXED)) {
		if (cuLaunchKernel(k, 1, 1, 1, 1, 1, 1, 0, NULL, kp, NULL) != CUDA_SUCCESS)
			return (void *)UINTPTR_MAX;
		n++;
	}
	return (void *)n;
}

static void test_gate_under_load(void **state)
{
	struct phos_stats before = preload_stats(), after;
	uint8_t rec[PHOS_GPUBUF_LEN];
	uint64_t words[LOADERS];
	pthread_t t[LOADERS];
	uint64_t total = 0;
	struct phos_msg *m;
	const void *blob;
	size_t len;
	int client, fd;

	(void)state;
	assert_int_equal(cuMemAlloc(&load_buf, 2 * MiB), CUDA_SUCCESS);
	assert_int_equal(cuMemsetD8(load_buf, 0, 2 * MiB), CUDA_SUCCESS);
	cuCtxGetCurrent(&load_ctx);
	load_stop = 0;
	for (int i = 0; i < LOADERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, loader, (void *)(intptr_t)i), 0);
	for (int round = 0; round < ROUNDS; round++) {
		usleep(5000);
		send_sig(PHOS_SIGVAL_DETACH);
		m = serve(&client);
		assert_non_null(m);
		assert_int_equal(m->nfds, 1);
		assert_int_equal(phos_msg_get_blob(m, PHOS_A_GPUBUFS, &blob, &len), 0);
		memcpy(rec, blob, sizeof(rec));
		fd = fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3);
		phos_msg_free(m);
		reply(client, 0, NULL, 0, NULL, 0);
		usleep(2000);		/* detached: the loaders wait at the gate */
		send_sig(PHOS_SIGVAL_REATTACH);
		m = serve(&client);
		assert_non_null(m);
		phos_msg_free(m);
		reply(client, 0, rec, sizeof(rec), &fd, 1);
		close(fd);
	}
	__atomic_store_n(&load_stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < LOADERS; i++) {
		void *ret;

		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_true((uintptr_t)ret != UINTPTR_MAX);
		total += (uintptr_t)ret;
		assert_int_equal(cuMemcpyDtoH(&words[i], load_buf + 8 * i, 8), CUDA_SUCCESS);
		assert_int_equal(words[i], (uintptr_t)ret);
	}
	after = preload_stats();
	assert_int_equal(D(detaches), ROUNDS);
	assert_int_equal(D(reattaches), ROUNDS);
	/* per-thread counts summed: every launch counted once */
	assert_int_equal(D(launches), total);
	/* and no write set computed: nothing consumed one (no concurrent
	 * save or load), so the launches only passed the gate */
	assert_int_equal(D(wset_marks), 0);
	assert_true(total > 0);
	assert_int_equal(cuMemFree(load_buf), CUDA_SUCCESS);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_large_is_vmm),
		cmocka_unit_test(test_app_create_exportable),
		cmocka_unit_test(test_detach_reattach),
		cmocka_unit_test(test_detach_refused),
		cmocka_unit_test(test_detach_nothing),
		cmocka_unit_test(test_detach_imported),
		cmocka_unit_test(test_gate_under_load),
	};

	if (!getenv("PHOS_TEST_PRELOADED")) {
		snprintf(sock_path, sizeof(sock_path), "/tmp/phos-test-vmm-%d.sock", (int)getpid());
		setenv("PHOS_SOCKET", sock_path, 1);
		setenv("PHOS_CHECKPOINT", "1", 1);
	}
	preload_reexec(argv);
	snprintf(sock_path, sizeof(sock_path), "%s", getenv("PHOS_SOCKET"));
	/* a test that fails between a detach and its reattach leaves every
	 * CUDA call waiting at the gate: end as a failure, never hang */
	alarm(120);
	return cmocka_run_group_tests(tests, setup, teardown);
}
