/*
 * fakeint.h - what the files of the fake driver share (not for tests:
 * they use fakecuda.h).
 */
#ifndef FAKEINT_H
#define FAKEINT_H

#include <cuda.h>

#define EXPORT __attribute__((visibility("default")))
/* declare and define an exported entry point */
#define FAKE(name, params) \
	EXPORT CUresult name params; \
	EXPORT CUresult name params

/* count a call of the fake's entry point `name` (fakecuda_calls) */
void hit(const char *name);
/* run kernel f's host body as a launch would (nothing while capturing) */
CUresult fakecuda_run(CUfunction f, void **kp, void **extra);

/* fakegraph.c: graphs and tensor maps */
CUresult fakegraph_launch(CUgraphExec g, CUstream s);
/* the fake's own graph/tensor-map entry point `name`, or NULL */
void *fakegraph_sym(const char *name);

#endif
