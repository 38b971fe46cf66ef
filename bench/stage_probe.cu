// stage_probe.cu - how fast can GPU memory be moved into host memory that
// outlives the CUDA context (the design question of a preemption
// checkpoint's "GPU free" time, doc/concurrent-checkpoint.md)?
//
// A buffer of GIB GiB on the GPU is copied device to host by THREADS
// threads in CHUNK_MB pieces, each thread with its own stream, into:
//   pinned     memory pinned beforehand (cudaHostAlloc, not timed): the
//              PCIe ceiling
//   register   fresh anonymous memory (mmap), each piece registered
//              (cudaHostRegister) just before its copy: the cost of pinning
//              on the way, memory that stays valid after the context goes
//   populate   the same, the mapping made with MAP_POPULATE beforehand (not
//              timed): what pinning costs when the pages already exist
//   pageable   fresh anonymous memory, not registered: the driver's own
//              staging
//   thp        as register, the mapping 2 MiB-aligned and madvise(
//              MADV_HUGEPAGE): pinning walks 512 times fewer pages, if the
//              kernel gives transparent huge pages
//   thp_pop    as thp, the pages faulted in beforehand (not timed)
//   hugetlb    2 MiB pages of the kernel's reserved pool (memfd
//              MFD_HUGETLB, faulted in beforehand, not timed; needs
//              vm.nr_hugepages): what a staging pool phosd keeps without a
//              CUDA context would give; skipped when the pool is too small
// and, for reference, the time cudaHostAlloc takes for the same bytes.
//   stage_probe [GIB [THREADS [CHUNK_MB]]]
// Prints "STAGE mode=M GB/s=R seconds=S" lines, then DONE.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#include <cstdint>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/memfd.h>
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(2); } } while (0)

static double now(void)
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

enum mode { PINNED, REGISTER, POPULATE, PAGEABLE, THP, THP_POP, HUGETLB };
static const char *names[] = { "pinned", "register", "populate", "pageable", "thp", "thp_pop",
			       "hugetlb" };

// per bytes of 2 MiB hugetlb pages, faulted in; NULL if the pool is short
static char *hugetlb_map(size_t per)
{
	int fd = memfd_create("stage", MFD_HUGETLB | MFD_HUGE_2MB);
	char *p;

	if (fd < 0 || ftruncate(fd, (off_t)per) < 0)
		return NULL;
	p = (char *)mmap(NULL, per, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

// per bytes of anonymous memory on 2 MiB huge pages where the kernel can
static char *thp_map(size_t per, bool populate)
{
	size_t huge = (size_t)2 << 20, len = per + huge;
	char *p = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		printf("mmap of %zu bytes failed\n", len);
		exit(2);
	}
	char *a = (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	if (madvise(a, per, MADV_HUGEPAGE) != 0)
		printf("madvise(MADV_HUGEPAGE) failed: small pages\n");
	if (populate)
		for (size_t off = 0; off < per; off += 4096)
			a[off] = 0;
	return a;	// the slack around it is left mapped: a probe
}

static bool registered(mode m)
{
	return m == REGISTER || m == POPULATE || m == THP || m == THP_POP || m == HUGETLB;
}

static void run(mode m, char *dev, size_t total, int threads, size_t chunk)
{
	std::vector<char *> host(threads);
	size_t per = total / threads;
	double t0, t1;

	for (int t = 0; t < threads; t++) {
		if (m == PINNED) {
			CK(cudaHostAlloc((void **)&host[t], per, cudaHostAllocPortable));
		} else if (m == THP || m == THP_POP) {
			host[t] = thp_map(per, m == THP_POP);
		} else if (m == HUGETLB) {
			if (!(host[t] = hugetlb_map(per))) {
				printf("STAGE mode=hugetlb skipped: %zu bytes of 2 MiB pages not "
				       "available (vm.nr_hugepages)\n", per);
				for (int k = 0; k < t; k++)
					munmap(host[k], per);
				return;
			}
		} else {
			int fl = MAP_PRIVATE | MAP_ANONYMOUS | (m == POPULATE ? MAP_POPULATE : 0);
			void *p = mmap(NULL, per, PROT_READ | PROT_WRITE, fl, -1, 0);
			if (p == MAP_FAILED) {
				printf("mmap of %zu bytes failed\n", per);
				exit(2);
			}
			host[t] = (char *)p;
		}
	}
	t0 = now();
	std::vector<std::thread> th;
	for (int t = 0; t < threads; t++)
		th.emplace_back([&, t] {
			cudaStream_t s;
			CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
			for (size_t off = 0; off < per; off += chunk) {
				size_t len = per - off < chunk ? per - off : chunk;
				char *h = host[t] + off;
				if (registered(m))
					CK(cudaHostRegister(h, len, cudaHostRegisterPortable));
				CK(cudaMemcpyAsync(h, dev + (size_t)t * per + off, len,
						   cudaMemcpyDeviceToHost, s));
				CK(cudaStreamSynchronize(s));
			}
			CK(cudaStreamDestroy(s));
		});
	for (auto &x : th)
		x.join();
	t1 = now();
	printf("STAGE mode=%s GB/s=%.2f seconds=%.3f threads=%d chunk_MiB=%zu GiB=%.0f\n", names[m],
	       (double)per * threads / 1e9 / (t1 - t0), t1 - t0, threads, chunk >> 20,
	       (double)total / (1 << 30));
	// undo: the unregistration's cost is reported too (it is paid before
	// the context may go)
	t0 = now();
	for (int t = 0; t < threads; t++) {
		if (m == PINNED) {
			CK(cudaFreeHost(host[t]));
			continue;
		}
		if (registered(m))
			for (size_t off = 0; off < per; off += chunk)
				CK(cudaHostUnregister(host[t] + off));
		if (m != THP && m != THP_POP)
			munmap(host[t], per);	// hugetlb: back to the pool
		else
			madvise(host[t], per, MADV_DONTNEED);
	}
	t1 = now();
	printf("STAGE mode=%s release_seconds=%.3f\n", names[m], t1 - t0);
}

int main(int argc, char **argv)
{
	double gib = argc > 1 ? atof(argv[1]) : 16;
	int threads = argc > 2 ? atoi(argv[2]) : 8;
	size_t chunk = (size_t)(argc > 3 ? atoi(argv[3]) : 8) << 20;
	size_t total = (size_t)(gib * (1 << 30));
	char *dev;

	setvbuf(stdout, NULL, _IOLBF, 0);
	total -= total % ((size_t)threads * chunk);
	CK(cudaMalloc(&dev, total));
	CK(cudaMemset(dev, 1, total));
	CK(cudaDeviceSynchronize());

	double t0 = now();
	std::vector<void *> v;
	for (size_t off = 0; off < total; off += (size_t)1 << 30) {
		void *p;
		CK(cudaHostAlloc(&p, (size_t)1 << 30, cudaHostAllocPortable));
		v.push_back(p);
	}
	double t1 = now();
	printf("STAGE mode=hostalloc_1GiB GB/s=%.2f seconds=%.3f\n", total / 1e9 / (t1 - t0), t1 - t0);
	for (void *p : v)
		CK(cudaFreeHost(p));

	run(PINNED, dev, total, threads, chunk);
	run(POPULATE, dev, total, threads, chunk);
	run(REGISTER, dev, total, threads, chunk);
	run(REGISTER, dev, total, threads, chunk * 8);
	run(PAGEABLE, dev, total, threads, chunk);
	{
		char thp[128] = "?";
		FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

		if (f && fgets(thp, sizeof(thp), f))
			thp[strcspn(thp, "\n")] = 0;
		if (f)
			fclose(f);
		printf("STAGE transparent_hugepage=%s\n", thp);
	}
	run(THP, dev, total, threads, chunk);
	run(THP, dev, total, threads, chunk * 8);
	run(THP_POP, dev, total, threads, chunk);
	run(THP_POP, dev, total, threads, chunk * 8);
	run(THP_POP, dev, total, threads, chunk * 32);
	run(HUGETLB, dev, total, threads, chunk);
	run(HUGETLB, dev, total, threads, chunk * 8);
	run(HUGETLB, dev, total, threads, chunk * 32);
	printf("DONE\n");
	return 0;
}
