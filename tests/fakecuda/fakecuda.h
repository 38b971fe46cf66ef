/*
 * fakecuda.h - test controls of the fake driver (libcuda.so.1 built from
 * fakecuda.c).  The fake implements the subset of the driver API that
 * libphos hooks, over host memory: device pointers are host pointers,
 * VMM handles are memfds, kernels are host functions.
 */
#ifndef FAKECUDA_H
#define FAKECUDA_H

#include <stddef.h>
#include <cuda.h>

enum fakecuda_kind {
	FAKECUDA_KERNEL = 1,	/* a CUkernel: cuKernelGetParamInfo answers */
	FAKECUDA_FUNCTION = 2,	/* a CUfunction: only cuFuncGetParamInfo does */
	FAKECUDA_OPAQUE = 3,	/* neither answers */
};

typedef void (*fakecuda_body)(void **params);

/* A kernel of np parameters of the given sizes (laid out at natural
 * alignment, at most 8) whose launch runs body(params) on the host. */
CUfunction fakecuda_kernel(enum fakecuda_kind kind, unsigned np, const size_t *sizes,
			   fakecuda_body body);
/* Offset of parameter i of k, as cuKernelGetParamInfo reports it. */
size_t fakecuda_param_offset(CUfunction k, unsigned i);

/* How many times the fake's entry point `name` ran (exact exported name,
 * e.g. "cuLaunchKernel_ptsz"; internal variants "name@internalN"). */
unsigned long fakecuda_calls(const char *name);
void fakecuda_reset_calls(void);

/* While set, cuStreamIsCapturing reports ACTIVE and launches run nothing. */
void fakecuda_set_capturing(int on);

/* cuGetProcAddress("cuMemsetD8", v >= 12000) answers with internal
 * function number n (0-7), not the exported symbol: models a driver
 * whose lookups return pointers of their own. */
void fakecuda_set_gpa_internal(int n);

/* What cuCtxSynchronize answers from now on (CUDA_SUCCESS: normal). */
void fakecuda_set_sync_result(CUresult r);

/* requestedHandleTypes of the last cuMemCreate the fake saw. */
int fakecuda_last_handle_types(void);

/* The global address a fake cuTensorMapEncode* put in m (fakegraph.c:
 * stored encoded, so no word of m equals it). */
void *fakecuda_tma_address(const CUtensorMap *m);

/* The fake's own address of an exported entry point (not libphos's). */
void *fakecuda_sym(const char *name);

/*
 * Checkpoint API (cuCheckpointProcess*): a per-pid state machine as the
 * driver documents it (RUNNING -lock-> LOCKED -checkpoint-> CHECKPOINTED
 * -restore-> LOCKED -unlock-> RUNNING; wrong state: ILLEGAL_STATE).  A pid
 * is unknown (INVALID_VALUE) until fakecuda_ckpt_set_state() names it.
 */
void fakecuda_ckpt_reset(void);
/* op "lock", "checkpoint", "restore" or "unlock" answers r from now on
 * (CUDA_SUCCESS: normal again) and leaves the state as it was; a lock
 * failing with CUDA_ERROR_NOT_READY models a timed-out lock. */
void fakecuda_ckpt_fail(const char *op, CUresult r);
void fakecuda_ckpt_set_state(int pid, int state);
int fakecuda_ckpt_state(int pid);	/* -1: unknown pid */
/* Successful calls in order, e.g. "lock:12(5000) checkpoint:12
 * restore:12(0) unlock:12" (lock: timeoutMs, restore: gpuPairsCount);
 * failed ones as "fail:PID". */
void fakecuda_ckpt_log(char *buf, size_t size);
unsigned fakecuda_ckpt_lock_timeout(void);

#endif
