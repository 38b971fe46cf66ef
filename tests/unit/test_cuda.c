/*
 * test_cuda.c - phosd's GPU checkpoint steps (daemon/cuda.c) against the
 * fake driver (fakecuda/): real process trees that map "libcuda", the
 * driver's state machine in the fake.  Checks the order of the driver
 * calls, that a lock that times out leaves the process running, that any
 * failure after the lock restores + unlocks, that a node without a driver
 * refuses CUDA processes, and the restore-side GPU matching.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cuda.h"
#include "manifest.h"
#include "proc.h"

#define FAKE_LIB FAKECUDA_DIR "/libcuda.so.1"
#define UUID_A "GPU-550b5ede-d9bd-e4d1-6217-0237bd6b40f1"
#define UUID_B "GPU-4c307ce6-5fc4-79b0-2361-dcca937eb3ac"
#define H100 "NVIDIA H100 80GB HBM3"
/* CUresult values (the driver's cuda.h) */
#define CUDA_SUCCESS 0
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_NOT_READY 600
#define CUDA_ERROR_NOT_SUPPORTED 801

static struct {
	void (*reset)(void);
	void (*fail_op)(const char *, int);
	void (*set_state)(int, int);
	int (*state)(int);
	void (*log)(char *, size_t);
	unsigned (*timeout)(void);
} fk;
static char procdir[] = "/tmp/phos-test-cuda.XXXXXX";

static bool same_exe(pid_t pid)
{
	char a[4096], b[4096], path[64];
	ssize_t na, nb;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	na = readlink(path, a, sizeof(a) - 1);
	nb = readlink("/proc/self/exe", b, sizeof(b) - 1);
	return na > 0 && nb > 0 && na == nb && memcmp(a, b, (size_t)na) == 0;
}

/* pid runs /bin/sleep (or /usr/bin/sleep): its exec is over. */
static bool is_sleep(pid_t pid)
{
	char a[4096], path[64];
	ssize_t na;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	na = readlink(path, a, sizeof(a) - 1);
	if (na <= 0)
		return false;
	a[na] = '\0';
	return strlen(a) >= 6 && strcmp(a + strlen(a) - 6, "/sleep") == 0;
}

/* A process tree as a CUDA job: sh (+ one sleep child if two) with the
 * fake libcuda preloaded, so both map it.  Waits until all of it is there. */
static pid_t spawn(bool cuda, int nprocs)
{
	pid_t p = fork();

	if (p == 0) {
		if (cuda)
			setenv("LD_PRELOAD", FAKE_LIB, 1);
		unsetenv("ASAN_OPTIONS");
		if (nprocs == 2)
			execl("/bin/sh", "sh", "-c", "sleep 60 & wait", (char *)NULL);
		else
			execl("/bin/sleep", "sleep", "60", (char *)NULL);
		_exit(127);
	}
	assert_true(p > 0);
	for (int i = 0; i < 500; i++) {
		pid_t *t = NULL;
		size_t n = 0, ok = 0;

		/* exec'ed (the fork of this test maps the fake too) and mapping
		 * the preloaded fake; the sleep too (sh's fork is sh until its
		 * exec, during which its maps are briefly without the fake) */
		size_t sleeps = 0;

		if (proc_tree(p, &t, &n) == 0)
			for (size_t k = 0; k < n; k++) {
				ok += !same_exe(t[k]) && (!cuda || proc_maps_has(t[k], "libcuda.so"));
				sleeps += is_sleep(t[k]);
			}
		free(t);
		if (n == (size_t)nprocs && ok == n && sleeps == 1)
			return p;
		usleep(10000);
	}
	fail_msg("process tree of %d did not come up", (int)p);
	return -1;
}

static void reap(pid_t p)
{
	kill(p, SIGKILL);
	waitpid(p, NULL, 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* the node's GPU table (/proc/driver/nvidia layout): one GPU */
static void node_gpu(const char *uuid, const char *model)
{
	char path[512], text[512];

	snprintf(path, sizeof(path), "%s/gpus/0000:00:06.0", procdir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/gpus/0000:00:06.0/information", procdir);
	snprintf(text, sizeof(text), "Model: \t\t %s\nIRQ:   \t\t 41\nGPU UUID: \t %s\n"
		 "Device Minor: \t 0\nBus Type: \t PCIe\n", model, uuid);
	write_file(path, text);
}

static int setup(void **state)
{
	char path[512];
	void *h;

	(void)state;
	if (!mkdtemp(procdir))
		return -1;
	snprintf(path, sizeof(path), "%s/gpus", procdir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/version", procdir);
	write_file(path, "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  "
		   "Release Build\nGCC version: gcc\n");
	node_gpu(UUID_A, H100);
	cuda_set_proc_dir(procdir);
	cuda_set_library(FAKE_LIB);
	h = dlopen(FAKE_LIB, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return -1;
	*(void **)&fk.reset = dlsym(h, "fakecuda_ckpt_reset");
	*(void **)&fk.fail_op = dlsym(h, "fakecuda_ckpt_fail");
	*(void **)&fk.set_state = dlsym(h, "fakecuda_ckpt_set_state");
	*(void **)&fk.state = dlsym(h, "fakecuda_ckpt_state");
	*(void **)&fk.log = dlsym(h, "fakecuda_ckpt_log");
	*(void **)&fk.timeout = dlsym(h, "fakecuda_ckpt_lock_timeout");
	return fk.reset && fk.fail_op && fk.set_state && fk.state && fk.log && fk.timeout ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[600];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", procdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int each(void **state)
{
	(void)state;
	fk.reset();
	cuda_set_library(FAKE_LIB);
	node_gpu(UUID_A, H100);
	return 0;
}

static const char *fklog(void)
{
	static char buf[4096];

	fk.log(buf, sizeof(buf));
	return buf;
}

/* every pid of the tree known to the fake driver as running */
static void register_tree(pid_t root, int state, pid_t out[2])
{
	pid_t *t = NULL;
	size_t n = 0;

	assert_int_equal(proc_tree(root, &t, &n), 0);
	for (size_t i = 0; i < n; i++) {
		fk.set_state((int)t[i], state);
		if (out && i < 2)
			out[i] = t[i];
	}
	free(t);
}

static void test_find(void **state)
{
	struct cuda_set s;
	struct phos_err e = { "" };
	pid_t plain = spawn(false, 1), gpu = spawn(true, 2);

	(void)state;
	register_tree(gpu, CUDA_PS_RUNNING, NULL);
	cuda_set_init(&s);
	assert_int_equal(cuda_find(plain, &s, &e), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	assert_int_equal(s.n, 2);
	cuda_set_free(&s);
	/* a process that maps libcuda but has no context (unknown to the
	 * driver) and holds no /dev/nvidia*: nothing on the GPU, not listed */
	fk.reset();
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	assert_int_equal(s.n, 0);
	cuda_set_free(&s);
	/* already locked by someone else: refused */
	register_tree(gpu, CUDA_PS_LOCKED, NULL);
	assert_int_equal(cuda_find(gpu, &s, &e), -1);
	assert_int_equal(errno, EBUSY);
	assert_non_null(strstr(e.msg, "locked"));
	cuda_set_free(&s);
	reap(plain);
	reap(gpu);
}

static void test_leave_running_order(void **state)
{
	struct cuda_set s;
	struct phos_err e = { "" };
	struct phos_manifest m;
	pid_t gpu = spawn(true, 2), t[2];
	char want[512];

	(void)state;
	register_tree(gpu, CUDA_PS_RUNNING, t);
	cuda_set_init(&s);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	assert_int_equal(cuda_checkpoint(&s, 5000, &e), 0);
	assert_int_equal(fk.timeout(), 5000);
	/* every process locked before any is checkpointed */
	snprintf(want, sizeof(want), "lock:%d(5000) lock:%d(5000) checkpoint:%d checkpoint:%d",
		 (int)t[0], (int)t[1], (int)t[0], (int)t[1]);
	assert_string_equal(fklog(), want);
	assert_int_equal(fk.state(t[0]), CUDA_PS_CHECKPOINTED);
	assert_int_equal(fk.state(t[1]), CUDA_PS_CHECKPOINTED);

	phos_manifest_init(&m);
	assert_int_equal(cuda_record(&s, &m, &e), 0);
	assert_string_equal(phos_manifest_get_extra(&m, "gpu.processes"), "2");
	assert_string_equal(phos_manifest_get_extra(&m, "gpu.driver"), "580.159.04");
	assert_string_equal(phos_manifest_get_extra(&m, "gpu.cuda_api"), "13000");
	assert_non_null(phos_manifest_get_extra(&m, "gpu.bytes"));
	/* no /dev/nvidia* held by the fake's processes: no GPU named */
	assert_string_equal(phos_manifest_get_extra(&m, "gpu.count"), "0");
	phos_manifest_free(&m);

	assert_int_equal(cuda_resume(&s, &e), 0);
	snprintf(want, sizeof(want), "checkpoint:%d restore:%d(0) unlock:%d", (int)t[1], (int)t[0],
		 (int)t[0]);
	assert_non_null(strstr(fklog(), want));
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);
	assert_int_equal(fk.state(t[1]), CUDA_PS_RUNNING);
	cuda_set_free(&s);
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);
	reap(gpu);
}

static void test_lock_timeout_leaves_running(void **state)
{
	struct cuda_set s;
	struct phos_err e = { "" };
	pid_t gpu = spawn(true, 2), t[2];
	char want[256];

	(void)state;
	register_tree(gpu, CUDA_PS_RUNNING, t);
	cuda_set_init(&s);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	/* the first lock goes through, the second times out */
	fk.fail_op("lock", CUDA_ERROR_NOT_READY);
	fk.set_state(t[0], CUDA_PS_RUNNING);
	fk.fail_op("lock", CUDA_SUCCESS);
	assert_int_equal(cuda_checkpoint(&s, 1000, &e), 0);
	cuda_set_free(&s);	/* not done: everything back to running */
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);

	fk.reset();
	register_tree(gpu, CUDA_PS_RUNNING, t);
	cuda_set_init(&s);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	fk.fail_op("lock", CUDA_ERROR_NOT_READY);
	assert_int_equal(cuda_checkpoint(&s, 1000, &e), -1);
	assert_int_equal(errno, ETIMEDOUT);
	assert_non_null(strstr(e.msg, "keeps running"));
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);
	assert_int_equal(fk.state(t[1]), CUDA_PS_RUNNING);
	snprintf(want, sizeof(want), "fail:%d", (int)t[0]);
	assert_string_equal(fklog(), want);
	cuda_set_free(&s);
	reap(gpu);
}

static void test_second_lock_fails_unlocks_first(void **state)
{
	struct cuda_set s;
	struct phos_err e = { "" };
	pid_t gpu = spawn(true, 2), t[2];
	char want[256];

	(void)state;
	register_tree(gpu, CUDA_PS_RUNNING, t);
	cuda_set_init(&s);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	/* the second process is busy in another lock: ILLEGAL_STATE */
	fk.set_state(t[1], CUDA_PS_LOCKED);
	assert_int_equal(cuda_checkpoint(&s, 1000, &e), -1);
	snprintf(want, sizeof(want), "lock:%d(1000) fail:%d unlock:%d", (int)t[0], (int)t[1],
		 (int)t[0]);
	assert_string_equal(fklog(), want);
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);
	cuda_set_free(&s);
	reap(gpu);
}

static void test_checkpoint_failure_unlocks(void **state)
{
	struct cuda_set s;
	struct phos_err e = { "" };
	pid_t gpu = spawn(true, 1), t[2];
	char want[256];

	(void)state;
	register_tree(gpu, CUDA_PS_RUNNING, t);
	cuda_set_init(&s);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	assert_int_equal(s.n, 1);
	fk.fail_op("checkpoint", CUDA_ERROR_NOT_SUPPORTED);
	assert_int_equal(cuda_checkpoint(&s, 0, &e), -1);
	assert_int_equal(errno, EIO);
	assert_non_null(strstr(e.msg, "keeps running"));
	snprintf(want, sizeof(want), "lock:%d(0) fail:%d unlock:%d", (int)t[0], (int)t[0], (int)t[0]);
	assert_string_equal(fklog(), want);
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);
	cuda_set_free(&s);
	reap(gpu);
}

/* The CRIU dump failed after the driver checkpoint: cuda_set_free of a set
 * not marked done restores + unlocks; a stop checkpoint marks it done and
 * leaves it checkpointed. */
static void test_failure_after_checkpoint_restores(void **state)
{
	struct cuda_set s;
	struct phos_err e = { "" };
	pid_t gpu = spawn(true, 1), t[2];
	char want[256];

	(void)state;
	register_tree(gpu, CUDA_PS_RUNNING, t);
	cuda_set_init(&s);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	assert_int_equal(cuda_checkpoint(&s, 0, &e), 0);
	cuda_set_free(&s);
	snprintf(want, sizeof(want), "lock:%d(0) checkpoint:%d restore:%d(0) unlock:%d", (int)t[0],
		 (int)t[0], (int)t[0], (int)t[0]);
	assert_string_equal(fklog(), want);
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);

	cuda_set_init(&s);
	assert_int_equal(cuda_find(gpu, &s, &e), 0);
	assert_int_equal(cuda_checkpoint(&s, 0, &e), 0);
	s.done = true;		/* stop / preempt: stays checkpointed */
	cuda_set_free(&s);
	assert_int_equal(fk.state(t[0]), CUDA_PS_CHECKPOINTED);
	reap(gpu);
}

static void gpu_manifest(struct phos_manifest *m, const char *uuid, const char *model)
{
	phos_manifest_init(m);
	assert_int_equal(phos_manifest_set_extra(m, "gpu.processes", "1", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "gpu.count", "1", NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "gpu.0.uuid", uuid, NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "gpu.0.model", model, NULL), 0);
	assert_int_equal(phos_manifest_set_extra(m, "gpu.bytes", "1048576", NULL), 0);
}

static void test_no_driver_refuses(void **state)
{
	struct cuda_set s;
	struct phos_err e = { "" };
	struct phos_manifest m;
	pid_t gpu = spawn(true, 1), plain = spawn(false, 1);

	(void)state;
	cuda_set_library("/nonexistent/libcuda.so.1");
	cuda_set_init(&s);
	/* a process without CUDA is none of the driver's business */
	assert_int_equal(cuda_find(plain, &s, &e), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(cuda_find(gpu, &s, &e), -1);
	assert_int_equal(errno, EOPNOTSUPP);
	assert_non_null(strstr(e.msg, "maps libcuda"));
	assert_non_null(strstr(e.msg, "no NVIDIA driver"));
	assert_non_null(strstr(e.msg, "refused"));
	cuda_set_free(&s);
	gpu_manifest(&m, UUID_A, H100);
	assert_int_equal(cuda_restore_check(&m, &e), -1);
	assert_non_null(strstr(e.msg, H100));
	assert_non_null(strstr(e.msg, ">= 570"));
	phos_manifest_free(&m);
	/* an image without GPU state restores anywhere */
	phos_manifest_init(&m);
	assert_int_equal(cuda_restore_check(&m, &e), 0);
	phos_manifest_free(&m);
	reap(gpu);
	reap(plain);
}

static void test_restore_same_gpu(void **state)
{
	struct phos_err e = { "" };
	struct phos_manifest m;
	pid_t gpu = spawn(true, 1), t[2];
	size_t n = 9;
	char want[256];

	(void)state;
	/* after CRIU restore the driver has the process checkpointed */
	register_tree(gpu, CUDA_PS_CHECKPOINTED, t);
	gpu_manifest(&m, UUID_A, H100);
	assert_int_equal(cuda_restore_check(&m, &e), 0);
	assert_int_equal(cuda_restore_tree(gpu, &m, &n, &e), 0);
	assert_int_equal(n, 1);
	snprintf(want, sizeof(want), "restore:%d(0) unlock:%d", (int)t[0], (int)t[0]);
	assert_string_equal(fklog(), want);
	assert_int_equal(fk.state(t[0]), CUDA_PS_RUNNING);
	/* nothing left waiting: an error that says so */
	assert_int_equal(cuda_restore_tree(gpu, &m, &n, &e), -1);
	assert_int_equal(errno, ESRCH);
	phos_manifest_free(&m);
	reap(gpu);
}

static void test_restore_other_gpu_same_chip(void **state)
{
	struct phos_err e = { "" };
	struct phos_manifest m;
	pid_t gpu = spawn(true, 1), t[2];
	char want[256];

	(void)state;
	register_tree(gpu, CUDA_PS_CHECKPOINTED, t);
	node_gpu(UUID_B, H100);		/* this node: another H100 */
	gpu_manifest(&m, UUID_A, H100);
	assert_int_equal(cuda_restore_check(&m, &e), 0);
	assert_int_equal(cuda_restore_tree(gpu, &m, NULL, &e), 0);
	snprintf(want, sizeof(want), "restore:%d(1) unlock:%d", (int)t[0], (int)t[0]);
	assert_string_equal(fklog(), want);
	phos_manifest_free(&m);
	reap(gpu);
}

static void test_restore_other_chip_refused(void **state)
{
	struct phos_err e = { "" };
	struct phos_manifest m;
	pid_t gpu = spawn(true, 1), t[2];

	(void)state;
	register_tree(gpu, CUDA_PS_CHECKPOINTED, t);
	node_gpu(UUID_B, "NVIDIA A100-SXM4-80GB");
	gpu_manifest(&m, UUID_A, H100);
	assert_int_equal(cuda_restore_check(&m, &e), -1);
	assert_int_equal(errno, ENODEV);
	assert_non_null(strstr(e.msg, H100));
	assert_int_equal(cuda_restore_tree(gpu, &m, NULL, &e), -1);
	assert_string_equal(fklog(), "");
	assert_int_equal(fk.state(t[0]), CUDA_PS_CHECKPOINTED);
	phos_manifest_free(&m);
	reap(gpu);
}

static void test_restore_failure_reported(void **state)
{
	struct phos_err e = { "" };
	struct phos_manifest m;
	pid_t gpu = spawn(true, 1), t[2];

	(void)state;
	register_tree(gpu, CUDA_PS_CHECKPOINTED, t);
	gpu_manifest(&m, UUID_A, H100);
	fk.fail_op("restore", CUDA_ERROR_OUT_OF_MEMORY);
	assert_int_equal(cuda_restore_tree(gpu, &m, NULL, &e), -1);
	assert_int_equal(errno, EIO);
	assert_non_null(strstr(e.msg, "cannot restore"));
	phos_manifest_free(&m);
	reap(gpu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_find, each),
		cmocka_unit_test_setup(test_leave_running_order, each),
		cmocka_unit_test_setup(test_lock_timeout_leaves_running, each),
		cmocka_unit_test_setup(test_second_lock_fails_unlocks_first, each),
		cmocka_unit_test_setup(test_checkpoint_failure_unlocks, each),
		cmocka_unit_test_setup(test_failure_after_checkpoint_restores, each),
		cmocka_unit_test_setup(test_no_driver_refuses, each),
		cmocka_unit_test_setup(test_restore_same_gpu, each),
		cmocka_unit_test_setup(test_restore_other_gpu_same_chip, each),
		cmocka_unit_test_setup(test_restore_other_chip_refused, each),
		cmocka_unit_test_setup(test_restore_failure_reported, each),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
