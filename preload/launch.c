/*
 * launch.c - kernel launches and the copies/memsets that write device
 * memory: each computes its write set (alloc.c, wset.c) and calls the
 * driver.  Copies count when their destination may be device memory
 * (device, unified, or pinned host reachable through UVA).
 */
#include "config.h"

#include "phos_int.h"


/* ---- launches ---------------------------------------------------------- */

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
			      unsigned, unsigned, CUstream, void **, void **);
static CUresult impl_launch(launch_fn real, int pt, CUfunction f, unsigned gx, unsigned gy,
			    unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shm,
			    CUstream s, void **kp, void **extra)
{
	uint64_t t0 = __builtin_expect(__atomic_load_n(&phos_watch_left, __ATOMIC_RELAXED) > 0, 0) ?
		      phos_watch_begin() : 0;
	PHOS_PROLOGUE();
	phos_write_launch(f, pt, s, kp, extra, false);
	phos_tma_launch(f, pt, s, kp, extra);
	CUresult r = real(f, gx, gy, gz, bx, by, bz, shm, s, kp, extra);

	if (t0)
		phos_watch_end(t0);
	return r;
}
#define LAUNCH_PARAMS (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, \
		       unsigned by, unsigned bz, unsigned shm, CUstream s, void **kp, void **extra)
#define LAUNCH_ARGS (f, gx, gy, gz, bx, by, bz, shm, s, kp, extra)
PHOS_DEFINE_HOOK(cuLaunchKernel, impl_launch, 0, LAUNCH_PARAMS, LAUNCH_ARGS);
PHOS_DEFINE_HOOK(cuLaunchKernel_ptsz, impl_launch, 1, LAUNCH_PARAMS, LAUNCH_ARGS);

typedef CUresult (*launchex_fn)(const CUlaunchConfig *, CUfunction, void **, void **);
static CUresult impl_launchex(launchex_fn real, int pt, const CUlaunchConfig *cfg, CUfunction f,
			      void **kp, void **extra)
{
	uint64_t t0 = __builtin_expect(__atomic_load_n(&phos_watch_left, __ATOMIC_RELAXED) > 0, 0) ?
		      phos_watch_begin() : 0;
	PHOS_PROLOGUE();
	phos_write_launch(f, pt, cfg ? cfg->hStream : NULL, kp, extra, false);
	phos_tma_launch(f, pt, cfg ? cfg->hStream : NULL, kp, extra);
	CUresult r = real(cfg, f, kp, extra);

	if (t0)
		phos_watch_end(t0);
	return r;
}
PHOS_DEFINE_HOOK(cuLaunchKernelEx, impl_launchex, 0,
		 (const CUlaunchConfig *cfg, CUfunction f, void **kp, void **extra),
		 (cfg, f, kp, extra));
PHOS_DEFINE_HOOK(cuLaunchKernelEx_ptsz, impl_launchex, 1,
		 (const CUlaunchConfig *cfg, CUfunction f, void **kp, void **extra),
		 (cfg, f, kp, extra));

typedef CUresult (*coop_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
			    unsigned, unsigned, CUstream, void **);
static CUresult impl_coop(coop_fn real, int pt, CUfunction f, unsigned gx, unsigned gy,
			  unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shm,
			  CUstream s, void **kp)
{
	PHOS_PROLOGUE();
	phos_write_launch(f, pt, s, kp, NULL, false);
	phos_tma_launch(f, pt, s, kp, NULL);
	return real(f, gx, gy, gz, bx, by, bz, shm, s, kp);
}
#define COOP_PARAMS (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, \
		     unsigned by, unsigned bz, unsigned shm, CUstream s, void **kp)
#define COOP_ARGS (f, gx, gy, gz, bx, by, bz, shm, s, kp)
PHOS_DEFINE_HOOK(cuLaunchCooperativeKernel, impl_coop, 0, COOP_PARAMS, COOP_ARGS);
PHOS_DEFINE_HOOK(cuLaunchCooperativeKernel_ptsz, impl_coop, 1, COOP_PARAMS, COOP_ARGS);

typedef CUresult (*graph_fn)(CUgraphExec, CUstream);
static CUresult impl_graph(graph_fn real, int pt, CUgraphExec g, CUstream s)
{
	PHOS_PROLOGUE();
	/* a walked exec (graph.c); otherwise its write set is unknown */
	if (!phos_graph_launch(g, pt, s))
		phos_write_launch(NULL, pt, s, NULL, NULL, true);
	return real(g, s);
}
PHOS_DEFINE_HOOK(cuGraphLaunch, impl_graph, 0, (CUgraphExec g, CUstream s), (g, s));
PHOS_DEFINE_HOOK(cuGraphLaunch_ptsz, impl_graph, 1, (CUgraphExec g, CUstream s), (g, s));

/* ---- copies ------------------------------------------------------------ */

/* The destination range of a 2D/3D copy: rows of width bytes, pitch
 * apart, height rows per slice, depth slices. */
static void copy_to_3d(CUmemorytype type, uint64_t dev, const void *host, size_t x, size_t y,
		       size_t z, size_t pitch, size_t hgt, size_t width, size_t height, size_t depth)
{
	uint64_t start, len;

	PHOS_COUNT(copies, 1);
	if (type == CU_MEMORYTYPE_ARRAY || width == 0 || height == 0 || depth == 0)
		return;		/* arrays are not tracked allocations */
	if (type == CU_MEMORYTYPE_HOST)
		dev = (uint64_t)(uintptr_t)host;	/* pinned host via UVA */
	if (pitch == 0)
		pitch = width;
	if (hgt == 0)
		hgt = height;
	start = dev + x + (uint64_t)y * pitch + (uint64_t)z * hgt * pitch;
	len = (uint64_t)(depth - 1) * hgt * pitch + (uint64_t)(height - 1) * pitch + width;
	phos_write_range(start, len);
}

/*
 * DEF_RANGE(name, pt, params, args, counter, before, dst, n): a hook whose
 * write set is the range [dst, dst+n) computed from its arguments; before
 * runs first.  DEF_WRITE: nothing before.  DEF_COPY(..., src): copies that
 * also read device memory (device to device, peer): during a concurrent
 * load they wait for the buffers their source range [src, src+n) lies in
 * (a host source lies in none).
 */
#define DEF_RANGE(name, pt, params, args, counter, before, dst, n)	\
	typedef CUresult (*w_fn_##name) params;				\
	static CUresult impl_##name(w_fn_##name real, int ptv, PHOS_UNPAREN params) \
	{								\
		(void)ptv;						\
		PHOS_PROLOGUE();					\
		PHOS_COUNT(counter, 1);					\
		before;							\
		phos_write_range((dst), (n));				\
		return real(PHOS_UNPAREN args);				\
	}								\
	PHOS_DEFINE_HOOK(name, impl_##name, pt, params, args)

#define COPY_READS() do { if (phos_cow_active()) phos_cow_read_all("a 2D or 3D copy"); } while (0)
#define COPY_READ(src, n) do { if (phos_cow_active()) phos_cow_read((src), (n)); } while (0)
#define DEF_WRITE(name, pt, params, args, counter, dst, n) \
	DEF_RANGE(name, pt, params, args, counter, (void)0, dst, n)
#define DEF_COPY(name, pt, params, args, counter, dst, n, src) \
	DEF_RANGE(name, pt, params, args, counter, COPY_READ(src, n), dst, n)

/* DEF_WRITE3D(name, pt, params, args, desc): 2D/3D copies by descriptor
 * (their source may be device memory: during a load they wait for all). */
#define DEF_WRITE3D(name, pt, params, args, expr)			\
	typedef CUresult (*w_fn_##name) params;				\
	static CUresult impl_##name(w_fn_##name real, int ptv, PHOS_UNPAREN params) \
	{								\
		(void)ptv;						\
		PHOS_PROLOGUE();					\
		COPY_READS();						\
		expr;							\
		return real(PHOS_UNPAREN args);				\
	}								\
	PHOS_DEFINE_HOOK(name, impl_##name, pt, params, args)

#define C2D(p) if (p) copy_to_3d(p->dstMemoryType, p->dstDevice, p->dstHost, p->dstXInBytes, \
				 p->dstY, 0, p->dstPitch, 0, p->WidthInBytes, p->Height, 1)
#define C3D(p) if (p) copy_to_3d(p->dstMemoryType, p->dstDevice, p->dstHost, p->dstXInBytes, \
				 p->dstY, p->dstZ, p->dstPitch, p->dstHeight, p->WidthInBytes, \
				 p->Height, p->Depth)

/* 1D copies: (dst, ..., n) */
#define HTOD_P (CUdeviceptr dst, const void *src, size_t n)
#define HTOD_A (dst, src, n)
DEF_WRITE(cuMemcpyHtoD_v2, 0, HTOD_P, HTOD_A, copies, dst, n);
DEF_WRITE(cuMemcpyHtoD_v2_ptds, 1, HTOD_P, HTOD_A, copies, dst, n);
#define HTODA_P (CUdeviceptr dst, const void *src, size_t n, CUstream s)
#define HTODA_A (dst, src, n, s)
DEF_WRITE(cuMemcpyHtoDAsync_v2, 0, HTODA_P, HTODA_A, copies, dst, n);
DEF_WRITE(cuMemcpyHtoDAsync_v2_ptsz, 1, HTODA_P, HTODA_A, copies, dst, n);
#define DTOD_P (CUdeviceptr dst, CUdeviceptr src, size_t n)
#define DTOD_A (dst, src, n)
DEF_COPY(cuMemcpyDtoD_v2, 0, DTOD_P, DTOD_A, copies, dst, n, src);
DEF_COPY(cuMemcpyDtoD_v2_ptds, 1, DTOD_P, DTOD_A, copies, dst, n, src);
DEF_COPY(cuMemcpy, 0, DTOD_P, DTOD_A, copies, dst, n, src);
DEF_COPY(cuMemcpy_ptds, 1, DTOD_P, DTOD_A, copies, dst, n, src);
#define DTODA_P (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
#define DTODA_A (dst, src, n, s)
DEF_COPY(cuMemcpyDtoDAsync_v2, 0, DTODA_P, DTODA_A, copies, dst, n, src);
DEF_COPY(cuMemcpyDtoDAsync_v2_ptsz, 1, DTODA_P, DTODA_A, copies, dst, n, src);
DEF_COPY(cuMemcpyAsync, 0, DTODA_P, DTODA_A, copies, dst, n, src);
DEF_COPY(cuMemcpyAsync_ptsz, 1, DTODA_P, DTODA_A, copies, dst, n, src);
#define ATOD_P (CUdeviceptr dst, CUarray src, size_t off, size_t n)
#define ATOD_A (dst, src, off, n)
DEF_WRITE(cuMemcpyAtoD_v2, 0, ATOD_P, ATOD_A, copies, dst, n);
DEF_WRITE(cuMemcpyAtoD_v2_ptds, 1, ATOD_P, ATOD_A, copies, dst, n);
#define PEER_P (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n)
#define PEER_A (dst, dctx, src, sctx, n)
DEF_COPY(cuMemcpyPeer, 0, PEER_P, PEER_A, copies, dst, n, src);
DEF_COPY(cuMemcpyPeer_ptds, 1, PEER_P, PEER_A, copies, dst, n, src);
#define PEERA_P (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n, \
		 CUstream s)
#define PEERA_A (dst, dctx, src, sctx, n, s)
DEF_COPY(cuMemcpyPeerAsync, 0, PEERA_P, PEERA_A, copies, dst, n, src);
DEF_COPY(cuMemcpyPeerAsync_ptsz, 1, PEERA_P, PEERA_A, copies, dst, n, src);

/* 2D and 3D copies */
DEF_WRITE3D(cuMemcpy2D_v2, 0, (const CUDA_MEMCPY2D *p), (p), C2D(p));
DEF_WRITE3D(cuMemcpy2D_v2_ptds, 1, (const CUDA_MEMCPY2D *p), (p), C2D(p));
DEF_WRITE3D(cuMemcpy2DUnaligned_v2, 0, (const CUDA_MEMCPY2D *p), (p), C2D(p));
DEF_WRITE3D(cuMemcpy2DUnaligned_v2_ptds, 1, (const CUDA_MEMCPY2D *p), (p), C2D(p));
DEF_WRITE3D(cuMemcpy2DAsync_v2, 0, (const CUDA_MEMCPY2D *p, CUstream s), (p, s), C2D(p));
DEF_WRITE3D(cuMemcpy2DAsync_v2_ptsz, 1, (const CUDA_MEMCPY2D *p, CUstream s), (p, s), C2D(p));
DEF_WRITE3D(cuMemcpy3D_v2, 0, (const CUDA_MEMCPY3D *p), (p), C3D(p));
DEF_WRITE3D(cuMemcpy3D_v2_ptds, 1, (const CUDA_MEMCPY3D *p), (p), C3D(p));
DEF_WRITE3D(cuMemcpy3DAsync_v2, 0, (const CUDA_MEMCPY3D *p, CUstream s), (p, s), C3D(p));
DEF_WRITE3D(cuMemcpy3DAsync_v2_ptsz, 1, (const CUDA_MEMCPY3D *p, CUstream s), (p, s), C3D(p));
DEF_WRITE3D(cuMemcpy3DPeer, 0, (const CUDA_MEMCPY3D_PEER *p), (p), C3D(p));
DEF_WRITE3D(cuMemcpy3DPeer_ptds, 1, (const CUDA_MEMCPY3D_PEER *p), (p), C3D(p));
DEF_WRITE3D(cuMemcpy3DPeerAsync, 0, (const CUDA_MEMCPY3D_PEER *p, CUstream s), (p, s), C3D(p));
DEF_WRITE3D(cuMemcpy3DPeerAsync_ptsz, 1, (const CUDA_MEMCPY3D_PEER *p, CUstream s), (p, s),
	    C3D(p));

/* ---- memsets: N elements of 1, 2 or 4 bytes; 2D: Height rows of Width
 * elements, dstPitch bytes apart ------------------------------------------ */

#define SET_P(T) (CUdeviceptr dst, T v, size_t n)
#define SETA_P(T) (CUdeviceptr dst, T v, size_t n, CUstream s)
#define SET2_P(T) (CUdeviceptr dst, size_t pitch, T v, size_t w, size_t h)
#define SET2A_P(T) (CUdeviceptr dst, size_t pitch, T v, size_t w, size_t h, CUstream s)
#define SET_A (dst, v, n)
#define SETA_A (dst, v, n, s)
#define SET2_A (dst, pitch, v, w, h)
#define SET2A_A (dst, pitch, v, w, h, s)
#define RANGE2D(es) (h ? (uint64_t)(h - 1) * pitch + (uint64_t)w * (es) : 0)

DEF_WRITE(cuMemsetD8_v2, 0, SET_P(unsigned char), SET_A, memsets, dst, n);
DEF_WRITE(cuMemsetD8_v2_ptds, 1, SET_P(unsigned char), SET_A, memsets, dst, n);
DEF_WRITE(cuMemsetD16_v2, 0, SET_P(unsigned short), SET_A, memsets, dst, (uint64_t)n * 2);
DEF_WRITE(cuMemsetD16_v2_ptds, 1, SET_P(unsigned short), SET_A, memsets, dst, (uint64_t)n * 2);
DEF_WRITE(cuMemsetD32_v2, 0, SET_P(unsigned int), SET_A, memsets, dst, (uint64_t)n * 4);
DEF_WRITE(cuMemsetD32_v2_ptds, 1, SET_P(unsigned int), SET_A, memsets, dst, (uint64_t)n * 4);
DEF_WRITE(cuMemsetD8Async, 0, SETA_P(unsigned char), SETA_A, memsets, dst, n);
DEF_WRITE(cuMemsetD8Async_ptsz, 1, SETA_P(unsigned char), SETA_A, memsets, dst, n);
DEF_WRITE(cuMemsetD16Async, 0, SETA_P(unsigned short), SETA_A, memsets, dst, (uint64_t)n * 2);
DEF_WRITE(cuMemsetD16Async_ptsz, 1, SETA_P(unsigned short), SETA_A, memsets, dst,
	  (uint64_t)n * 2);
DEF_WRITE(cuMemsetD32Async, 0, SETA_P(unsigned int), SETA_A, memsets, dst, (uint64_t)n * 4);
DEF_WRITE(cuMemsetD32Async_ptsz, 1, SETA_P(unsigned int), SETA_A, memsets, dst,
	  (uint64_t)n * 4);
DEF_WRITE(cuMemsetD2D8_v2, 0, SET2_P(unsigned char), SET2_A, memsets, dst, RANGE2D(1));
DEF_WRITE(cuMemsetD2D8_v2_ptds, 1, SET2_P(unsigned char), SET2_A, memsets, dst, RANGE2D(1));
DEF_WRITE(cuMemsetD2D16_v2, 0, SET2_P(unsigned short), SET2_A, memsets, dst, RANGE2D(2));
DEF_WRITE(cuMemsetD2D16_v2_ptds, 1, SET2_P(unsigned short), SET2_A, memsets, dst, RANGE2D(2));
DEF_WRITE(cuMemsetD2D32_v2, 0, SET2_P(unsigned int), SET2_A, memsets, dst, RANGE2D(4));
DEF_WRITE(cuMemsetD2D32_v2_ptds, 1, SET2_P(unsigned int), SET2_A, memsets, dst, RANGE2D(4));
DEF_WRITE(cuMemsetD2D8Async, 0, SET2A_P(unsigned char), SET2A_A, memsets, dst, RANGE2D(1));
DEF_WRITE(cuMemsetD2D8Async_ptsz, 1, SET2A_P(unsigned char), SET2A_A, memsets, dst,
	  RANGE2D(1));
DEF_WRITE(cuMemsetD2D16Async, 0, SET2A_P(unsigned short), SET2A_A, memsets, dst, RANGE2D(2));
DEF_WRITE(cuMemsetD2D16Async_ptsz, 1, SET2A_P(unsigned short), SET2A_A, memsets, dst,
	  RANGE2D(2));
DEF_WRITE(cuMemsetD2D32Async, 0, SET2A_P(unsigned int), SET2A_A, memsets, dst, RANGE2D(4));
DEF_WRITE(cuMemsetD2D32Async_ptsz, 1, SET2A_P(unsigned int), SET2A_A, memsets, dst,
	  RANGE2D(4));
