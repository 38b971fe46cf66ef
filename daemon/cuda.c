/*
 * cuda.c - GPU state through NVIDIA's driver checkpoint API.  See cuda.h.
 *
 * The driver is dlopen'ed; cuInit(0) is called once (the API answers
 * CUDA_ERROR_NOT_INITIALIZED without it, and Restore needs it unless
 * persistence mode is on).  cuInit creates no context: phosd never
 * creates one on an application's GPU here.  The node's GPUs are read
 * from /proc/driver/nvidia/gpus (model, UUID, minor); free memory, for the
 * restore check only, from NVML when libnvidia-ml.so.1 is there.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda.h"
#include "log.h"
#include "manifest.h"
#include "proc.h"
#include "util.h"

/* The driver API types we need, declared here so phosd builds without
 * the CUDA headers' version of the checkpoint API. */
typedef int curesult;
typedef struct { char bytes[16]; } cu_uuid;
struct cu_lock_args { unsigned timeout_ms, reserved0; uint64_t reserved1[7]; };
struct cu_ckpt_args { uint64_t reserved[8]; };
struct cu_gpu_pair { cu_uuid old_uuid, new_uuid; };
struct cu_restore_args {
	struct cu_gpu_pair *pairs;
	unsigned npairs;
	char reserved[52 - sizeof(void *)];
	uint64_t reserved1;
};
struct cu_unlock_args { uint64_t reserved[8]; };

#define CU_SUCCESS 0
#define CU_MIN_DRIVER_API 12080		/* cuDriverGetVersion of driver 570 */

static struct {
	pthread_mutex_t lock;
	bool tried, ok;
	char why[256];			/* why the driver cannot be used */
	int api_version;
	char lib[4096];
	char proc_dir[4096];
	curesult (*init)(unsigned);
	curesult (*version)(int *);
	curesult (*err_name)(curesult, const char **);
	curesult (*get_state)(int, int *);
	curesult (*plock)(int, struct cu_lock_args *);
	curesult (*pckpt)(int, struct cu_ckpt_args *);
	curesult (*prestore)(int, struct cu_restore_args *);
	curesult (*punlock)(int, struct cu_unlock_args *);
} drv = { .lock = PTHREAD_MUTEX_INITIALIZER, .lib = "libcuda.so.1",
	  .proc_dir = "/proc/driver/nvidia" };

void cuda_set_library(const char *path)
{
	pthread_mutex_lock(&drv.lock);
	snprintf(drv.lib, sizeof(drv.lib), "%s", path ? path : "libcuda.so.1");
	drv.tried = drv.ok = false;
	pthread_mutex_unlock(&drv.lock);
}

void cuda_set_proc_dir(const char *dir)
{
	snprintf(drv.proc_dir, sizeof(drv.proc_dir), "%s", dir ? dir : "/proc/driver/nvidia");
}

/* Load the driver once; false (with drv.why) if the API is unusable. */
static bool driver(void)
{
	void *h;
	curesult r;

	pthread_mutex_lock(&drv.lock);
	if (drv.tried)
		goto out;
	drv.tried = true;
	drv.ok = false;
	h = dlopen(drv.lib, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(drv.why, sizeof(drv.why), "no NVIDIA driver library on this node (%s)",
			 dlerror());
		goto out;
	}
#define SYM(field, name) (*(void **)&drv.field = dlsym(h, name))
	SYM(init, "cuInit");
	SYM(version, "cuDriverGetVersion");
	SYM(err_name, "cuGetErrorName");
	SYM(get_state, "cuCheckpointProcessGetState");
	SYM(plock, "cuCheckpointProcessLock");
	SYM(pckpt, "cuCheckpointProcessCheckpoint");
	SYM(prestore, "cuCheckpointProcessRestore");
	SYM(punlock, "cuCheckpointProcessUnlock");
#undef SYM
	if (!drv.init || !drv.version || !drv.get_state || !drv.plock || !drv.pckpt ||
	    !drv.prestore || !drv.punlock) {
		snprintf(drv.why, sizeof(drv.why), "the NVIDIA driver on this node has no checkpoint "
			 "API (cuCheckpointProcess*: driver >= 570 needed)");
		goto out;
	}
	if ((r = drv.init(0)) != CU_SUCCESS) {
		snprintf(drv.why, sizeof(drv.why), "the NVIDIA driver does not initialise (cuInit: "
			 "error %d): no usable GPU on this node", r);
		goto out;
	}
	if (drv.version(&drv.api_version) != CU_SUCCESS || drv.api_version < CU_MIN_DRIVER_API) {
		snprintf(drv.why, sizeof(drv.why), "the NVIDIA driver supports CUDA %d.%d; the "
			 "checkpoint API needs driver >= 570 (CUDA 12.8)", drv.api_version / 1000,
			 drv.api_version % 1000 / 10);
		goto out;
	}
	drv.ok = true;
out:
	pthread_mutex_unlock(&drv.lock);
	return drv.ok;
}

static const char *cu_err(curesult r)
{
	static __thread char buf[48];
	const char *s = NULL;

	if (drv.err_name && drv.err_name(r, &s) == CU_SUCCESS && s)
		return s;
	snprintf(buf, sizeof(buf), "CUDA error %d", r);
	return buf;
}

enum cuda_pstate cuda_state(pid_t pid)
{
	int st;

	if (!driver() || drv.get_state((int)pid, &st) != CU_SUCCESS)
		return CUDA_PS_UNKNOWN;
	return (enum cuda_pstate)st;
}

static const char *state_name(enum cuda_pstate s)
{
	switch (s) {
	case CUDA_PS_RUNNING: return "running";
	case CUDA_PS_LOCKED: return "locked";
	case CUDA_PS_CHECKPOINTED: return "checkpointed";
	case CUDA_PS_FAILED: return "failed";
	default: return "unknown";
	}
}

/* ---- the node's GPUs ---------------------------------------------------- */

struct node_gpus {
	struct cuda_gpu g[CUDA_MAX_GPUS];
	int n;
	char driver[64];
};

static void trim(char *s)
{
	size_t l = strlen(s);

	while (l && isspace((unsigned char)s[l - 1]))
		s[--l] = '\0';
}

/* From <proc_dir>/gpus/<bus>/information and <proc_dir>/version. */
static void node_gpus(struct node_gpus *ng)
{
	char path[4400], line[512];
	struct dirent *d;
	DIR *dir;
	FILE *f;

	memset(ng, 0, sizeof(*ng));
	snprintf(path, sizeof(path), "%s/version", drv.proc_dir);
	if ((f = fopen(path, "re"))) {
		/* "NVRM version: NVIDIA UNIX ... Kernel Module for x86_64  580.159.04  Release..." */
		if (fgets(line, sizeof(line), f)) {
			for (char *t = strtok(line, " \t\n"); t; t = strtok(NULL, " \t\n"))
				if (isdigit((unsigned char)t[0]) && strchr(t, '.')) {
					snprintf(ng->driver, sizeof(ng->driver), "%s", t);
					break;
				}
		}
		fclose(f);
	}
	snprintf(path, sizeof(path), "%s/gpus", drv.proc_dir);
	if (!(dir = opendir(path)))
		return;
	while ((d = readdir(dir)) && ng->n < CUDA_MAX_GPUS) {
		struct cuda_gpu *g = &ng->g[ng->n];

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/gpus/%s/information", drv.proc_dir, d->d_name);
		if (!(f = fopen(path, "re")))
			continue;
		memset(g, 0, sizeof(*g));
		g->minor = -1;
		while (fgets(line, sizeof(line), f)) {
			char *v = strchr(line, ':');

			if (!v)
				continue;
			*v++ = '\0';
			v += strspn(v, " \t");
			trim(v);
			if (strcmp(line, "Model") == 0)
				snprintf(g->model, sizeof(g->model), "%s", v);
			else if (strcmp(line, "GPU UUID") == 0)
				snprintf(g->uuid, sizeof(g->uuid), "%s", v);
			else if (strcmp(line, "Device Minor") == 0)
				g->minor = atoi(v);
		}
		fclose(f);
		if (g->uuid[0])
			ng->n++;
	}
	closedir(dir);
}

static const struct cuda_gpu *gpu_by_minor(const struct node_gpus *ng, int minor)
{
	for (int i = 0; i < ng->n; i++)
		if (ng->g[i].minor == minor)
			return &ng->g[i];
	return NULL;
}

/* "GPU-01234567-89ab-cdef-0123-456789abcdef" -> 16 bytes */
static int parse_uuid(const char *s, cu_uuid *u)
{
	int k = 0;

	if (strncmp(s, "GPU-", 4) == 0)
		s += 4;
	for (; *s && k < 32; s++) {
		int v;

		if (*s == '-')
			continue;
		if (!isxdigit((unsigned char)*s))
			return -1;
		v = isdigit((unsigned char)*s) ? *s - '0' : tolower((unsigned char)*s) - 'a' + 10;
		if (k % 2 == 0)
			u->bytes[k / 2] = (char)(v << 4);
		else
			u->bytes[k / 2] = (char)(u->bytes[k / 2] | v);
		k++;
	}
	return k == 32 ? 0 : -1;
}

/* Free bytes of a GPU by UUID through NVML, if it is there (-1: unknown). */
static int64_t gpu_free_bytes(const char *uuid)
{
	struct { unsigned long long total, free, used; } mem;
	int (*init)(void), (*by_uuid)(const char *, void **), (*info)(void *, void *);
	void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL), *dev;
	int64_t r = -1;

	if (!h)
		return -1;
	*(void **)&init = dlsym(h, "nvmlInit_v2");
	*(void **)&by_uuid = dlsym(h, "nvmlDeviceGetHandleByUUID");
	*(void **)&info = dlsym(h, "nvmlDeviceGetMemoryInfo");
	if (init && by_uuid && info && init() == 0 && by_uuid(uuid, &dev) == 0 &&
	    info(dev, &mem) == 0)
		r = (int64_t)mem.free;
	/* NVML stays loaded: nvmlShutdown/dlclose buy nothing here */
	return r;
}

/* ---- finding CUDA processes ------------------------------------------- */

static uint64_t rss_bytes(pid_t pid)
{
	char path[64], line[256];
	unsigned long long kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %llu", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

/* Does any GPU of this node have MIG GPU instances? */
static bool mig_instances(void)
{
	char pat[4200];
	glob_t g;
	bool any;

	snprintf(pat, sizeof(pat), "%s/capabilities/gpu*/mig/gi*", drv.proc_dir);
	any = glob(pat, GLOB_NOSORT, NULL, &g) == 0 && g.gl_pathc > 0;
	globfree(&g);
	return any;
}

/* GPU fds of pid: minors of /dev/nvidiaN into p; *mig if it holds
 * /dev/nvidia-caps/... (a MIG instance); true if any /dev/nvidia* fd. */
static bool gpu_fds(pid_t pid, struct cuda_proc *p, bool *mig)
{
	char path[64], link[256];
	struct dirent *d;
	bool any = false;
	DIR *dir;

	*mig = false;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if (!(dir = opendir(path)))
		return false;
	while ((d = readdir(dir))) {
		char fp[320];
		ssize_t n;

		if (d->d_name[0] == '.')
			continue;
		snprintf(fp, sizeof(fp), "/proc/%d/fd/%s", (int)pid, d->d_name);
		n = readlink(fp, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strncmp(link, "/dev/nvidia", 11) != 0)
			continue;
		any = true;
		/* MIG instance access goes through /dev/nvidia-caps/nvidia-capN,
		 * but CUDA 13 opens a capability there on a GPU without MIG too
		 * (seen on an H100): MIG only if MIG instances exist. */
		if (strncmp(link, "/dev/nvidia-caps", 16) == 0) {
			*mig = mig_instances();
		} else if (isdigit((unsigned char)link[11])) {
			int minor = atoi(link + 11), dup = 0;

			for (int i = 0; i < p->nminors; i++)
				dup |= p->minors[i] == minor;
			if (!dup && p->nminors < CUDA_MAX_GPUS)
				p->minors[p->nminors++] = minor;
		}
	}
	closedir(dir);
	return any;
}

/* Is an MPS server running on this node?  Its clients' GPU state lives in
 * the server, which the driver checkpoint cannot take. */
static bool mps_running(void)
{
	struct dirent *d;
	bool found = false;
	DIR *dir = opendir("/proc");

	if (!dir)
		return false;
	while (!found && (d = readdir(dir))) {
		char path[300], comm[64] = "";
		FILE *f;

		if (!isdigit((unsigned char)d->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", d->d_name);
		if (!(f = fopen(path, "re")))
			continue;
		if (fgets(comm, sizeof(comm), f))
			found = strncmp(comm, "nvidia-cuda-mps", 15) == 0;
		fclose(f);
	}
	closedir(dir);
	return found;
}

void cuda_set_init(struct cuda_set *s)
{
	memset(s, 0, sizeof(*s));
}

int cuda_find(pid_t root, struct cuda_set *s, struct phos_err *e)
{
	pid_t *tree = NULL;
	size_t n = 0;

	if (proc_tree(root, &tree, &n) < 0)
		return phos_errf(e, "cannot list the processes of pid %d: %s", (int)root,
				 strerror(errno));
	free(s->p);
	s->p = calloc(n ? n : 1, sizeof(*s->p));
	s->n = 0;
	if (!s->p) {
		free(tree);
		return phos_errnof(e, ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		struct cuda_proc *p = &s->p[s->n];
		bool mig, fds, lib;

		memset(p, 0, sizeof(*p));
		p->pid = tree[i];
		fds = gpu_fds(tree[i], p, &mig);
		lib = proc_maps_has(tree[i], "libcuda.so");
		if (!fds && !lib)
			continue;
		if (mig) {
			free(tree);
			return phos_errnof(e, EOPNOTSUPP, "pid %d uses a MIG GPU instance: the NVIDIA "
					   "driver cannot checkpoint MIG; checkpoint refused, the "
					   "job keeps running", (int)p->pid);
		}
		if (!driver()) {
			free(tree);
			return phos_errnof(e, EOPNOTSUPP, "pid %d uses CUDA (%s), but %s: its GPU "
					   "state cannot be saved here, so the checkpoint is refused "
					   "and the job keeps running", (int)p->pid,
					   fds ? "holds /dev/nvidia*" : "maps libcuda", drv.why);
		}
		p->state = cuda_state(p->pid);
		if (p->state == CUDA_PS_UNKNOWN && !fds) {
			/* libcuda loaded, no context and no device open: nothing
			 * of it is on the GPU; CRIU takes it as it is. */
			log_debug("pid %d maps libcuda but has no CUDA context", (int)p->pid);
			continue;
		}
		if (p->state != CUDA_PS_RUNNING) {
			free(tree);
			return phos_errnof(e, EBUSY, "pid %d uses CUDA but the driver reports it %s, "
					   "not running: is another checkpoint of it under way?",
					   (int)p->pid, state_name(p->state));
		}
		s->n++;
	}
	free(tree);
	if (s->n && mps_running())
		return phos_errnof(e, EOPNOTSUPP, "an NVIDIA MPS server runs on this node: the "
				   "driver checkpoint cannot take GPU state held by MPS; checkpoint "
				   "refused, the job keeps running");
	return 0;
}

/* Put p back to running from whatever state it is in.  0 if it runs. */
static int undo_one(struct cuda_set *s, struct cuda_proc *p)
{
	enum cuda_pstate st = cuda_state(p->pid);
	curesult r;

	if (st == CUDA_PS_UNKNOWN)
		st = p->state;
	if (st == CUDA_PS_CHECKPOINTED) {
		struct cu_restore_args ra;
		uint64_t t = phos_now_ms();

		memset(&ra, 0, sizeof(ra));
		if ((r = drv.prestore((int)p->pid, &ra)) != CU_SUCCESS) {
			log_err("pid %d: driver restore failed (%s): its GPU state is lost",
				(int)p->pid, cu_err(r));
			p->state = CUDA_PS_FAILED;
			return -1;
		}
		s->restore_ms = phos_now_ms() - t;
		st = CUDA_PS_LOCKED;
	}
	if (st == CUDA_PS_LOCKED) {
		struct cu_unlock_args ua;
		uint64_t t = phos_now_ms();

		memset(&ua, 0, sizeof(ua));
		if ((r = drv.punlock((int)p->pid, &ua)) != CU_SUCCESS) {
			log_err("pid %d: driver unlock failed (%s)", (int)p->pid, cu_err(r));
			p->state = CUDA_PS_LOCKED;
			return -1;
		}
		s->unlock_ms = phos_now_ms() - t;
	}
	p->state = CUDA_PS_RUNNING;
	return 0;
}

static void undo_all(struct cuda_set *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->p[i].state == CUDA_PS_LOCKED || s->p[i].state == CUDA_PS_CHECKPOINTED)
			undo_one(s, &s->p[i]);
}

void cuda_set_free(struct cuda_set *s)
{
	int saved = errno;

	if (!s)
		return;
	if (!s->done && s->p && drv.ok)
		undo_all(s);
	free(s->p);
	s->p = NULL;
	s->n = 0;
	errno = saved;
}

int cuda_checkpoint(struct cuda_set *s, unsigned timeout_ms, struct phos_err *e)
{
	uint64_t t;
	curesult r;

	if (!s->n)
		return 0;
	if (!driver())
		return phos_errnof(e, EOPNOTSUPP, "%s", drv.why);
	t = phos_now_ms();
	for (size_t i = 0; i < s->n; i++) {
		struct cuda_proc *p = &s->p[i];
		struct cu_lock_args la;

		memset(&la, 0, sizeof(la));
		la.timeout_ms = timeout_ms;
		r = drv.plock((int)p->pid, &la);
		if (r != CU_SUCCESS) {
			int err = cuda_state(p->pid) == CUDA_PS_RUNNING && timeout_ms ? ETIMEDOUT : EIO;

			/* A lock that failed (or timed out) leaves the process as
			 * it was: not ours to unlock.  Those locked before it are. */
			p->state = CUDA_PS_UNKNOWN;
			undo_all(s);
			return phos_errnof(e, err, "cannot lock the CUDA state of pid %d (%s)%s; "
					   "the job keeps running", (int)p->pid, cu_err(r),
					   err == ETIMEDOUT ? ": a CUDA call did not return within "
					   "checkpoint_timeout (a long kernel?)" : "");
		}
		p->state = CUDA_PS_LOCKED;
	}
	s->lock_ms = phos_now_ms() - t;
	t = phos_now_ms();
	for (size_t i = 0; i < s->n; i++) {
		struct cuda_proc *p = &s->p[i];
		struct cu_ckpt_args ca;

		memset(&ca, 0, sizeof(ca));
		p->rss_before = rss_bytes(p->pid);
		r = drv.pckpt((int)p->pid, &ca);
		if (r != CU_SUCCESS) {
			p->state = cuda_state(p->pid);
			if (p->state == CUDA_PS_UNKNOWN)
				p->state = CUDA_PS_LOCKED;
			undo_all(s);
			return phos_errnof(e, EIO, "the NVIDIA driver cannot checkpoint the GPU state "
					   "of pid %d (%s; managed memory, CUDA IPC and peer mappings "
					   "are not supported by the driver checkpoint); the job keeps "
					   "running", (int)p->pid, cu_err(r));
		}
		p->state = CUDA_PS_CHECKPOINTED;
		uint64_t after = rss_bytes(p->pid);
		p->gpu_bytes = after > p->rss_before ? after - p->rss_before : 0;
		/* What it still holds of the GPU must be gone now, or CRIU
		 * would dump the process without its GPU state. */
		struct cuda_proc chk = { .pid = p->pid };
		bool mig;
		if (gpu_fds(p->pid, &chk, &mig) && chk.nminors) {
			undo_all(s);
			return phos_errnof(e, EIO, "pid %d still holds /dev/nvidia%d after the driver "
					   "checkpoint; the job keeps running", (int)p->pid,
					   chk.minors[0]);
		}
	}
	s->ckpt_ms = phos_now_ms() - t;
	log_info("CUDA state of %zu process(es) checkpointed: lock %" PRIu64 " ms, checkpoint %"
		 PRIu64 " ms", s->n, s->lock_ms, s->ckpt_ms);
	return 0;
}

int cuda_resume(struct cuda_set *s, struct phos_err *e)
{
	int rc = 0;

	s->done = true;
	if (!s->n)
		return 0;
	for (size_t i = 0; i < s->n; i++) {
		if (undo_one(s, &s->p[i]) < 0 && rc == 0)
			rc = phos_errnof(e, EIO, "the CUDA state of pid %d could not be restored after "
					 "its checkpoint (driver state %s): the image is good, the "
					 "running process is not", (int)s->p[i].pid,
					 state_name(cuda_state(s->p[i].pid)));
	}
	return rc;
}

static int set_extra(struct phos_manifest *m, const char *key, const char *val,
		     struct phos_err *e)
{
	return phos_manifest_set_extra(m, key, val, e);
}

int cuda_record(const struct cuda_set *s, struct phos_manifest *m, struct phos_err *e)
{
	struct node_gpus ng;
	char key[64], val[512];
	const struct cuda_gpu *used[CUDA_MAX_GPUS];
	int nused = 0;
	uint64_t bytes = 0;

	if (!s->n)
		return 0;
	node_gpus(&ng);
	for (size_t i = 0; i < s->n; i++) {
		const struct cuda_proc *p = &s->p[i];
		struct proc_ids ids;
		size_t l = 0;

		bytes += p->gpu_bytes;
		val[0] = '\0';
		for (int j = 0; j < p->nminors; j++) {
			const struct cuda_gpu *g = gpu_by_minor(&ng, p->minors[j]);
			int k;

			if (!g)
				continue;
			for (k = 0; k < nused && used[k] != g; k++)
				;
			if (k == nused)
				used[nused++] = g;
			l += (size_t)snprintf(val + l, sizeof(val) - l, "%s%d", l ? "," : "", k);
			if (l >= sizeof(val))
				break;
		}
		if (proc_ids(p->pid, &ids) == 0 && val[0]) {
			snprintf(key, sizeof(key), "gpu.pid.%d", (int)ids.nspid);
			if (set_extra(m, key, val, e) < 0)
				return -1;
		}
	}
	/* No GPU table (no /proc/driver/nvidia/gpus): the image is still
	 * good, but a restore can only go back onto the same GPUs. */
	snprintf(val, sizeof(val), "%d", nused);
	if (set_extra(m, "gpu.count", val, e) < 0)
		return -1;
	for (int k = 0; k < nused; k++) {
		snprintf(key, sizeof(key), "gpu.%d.uuid", k);
		if (set_extra(m, key, used[k]->uuid, e) < 0)
			return -1;
		snprintf(key, sizeof(key), "gpu.%d.model", k);
		if (set_extra(m, key, used[k]->model[0] ? used[k]->model : "unknown", e) < 0)
			return -1;
	}
	snprintf(val, sizeof(val), "%zu", s->n);
	if (set_extra(m, "gpu.processes", val, e) < 0)
		return -1;
	snprintf(val, sizeof(val), "%" PRIu64, bytes);
	if (set_extra(m, "gpu.bytes", val, e) < 0)
		return -1;
	snprintf(val, sizeof(val), "%s", ng.driver[0] ? ng.driver : "unknown");
	if (set_extra(m, "gpu.driver", val, e) < 0)
		return -1;
	snprintf(val, sizeof(val), "%d", drv.api_version);
	return set_extra(m, "gpu.cuda_api", val, e);
}

/* ---- restore ------------------------------------------------------------ */

struct plan {
	int count;
	char old_uuid[CUDA_MAX_GPUS][64];
	const struct cuda_gpu *to[CUDA_MAX_GPUS];
	bool remap;			/* some GPU is not the recorded one */
	struct node_gpus ng;
};

/* Map each recorded GPU onto one of this node's: itself if here, else an
 * unused GPU of the same model.  -1 with a message saying what would do. */
static int make_plan(const struct phos_manifest *m, struct plan *pl, struct phos_err *e)
{
	const char *v = phos_manifest_get_extra(m, "gpu.count");
	bool taken[CUDA_MAX_GPUS] = { false };
	char key[64];

	memset(pl, 0, sizeof(*pl));
	pl->count = v ? atoi(v) : 0;
	if (pl->count <= 0)
		return 0;
	if (pl->count > CUDA_MAX_GPUS)
		return phos_errnof(e, EINVAL, "the image records %d GPUs, more than %d",
				   pl->count, CUDA_MAX_GPUS);
	node_gpus(&pl->ng);
	for (int k = 0; k < pl->count; k++) {
		const char *u, *model;

		snprintf(key, sizeof(key), "gpu.%d.uuid", k);
		u = phos_manifest_get_extra(m, key);
		snprintf(key, sizeof(key), "gpu.%d.model", k);
		model = phos_manifest_get_extra(m, key);
		if (!u || !model)
			return phos_errnof(e, EINVAL, "the image's GPU record %d is incomplete", k);
		snprintf(pl->old_uuid[k], sizeof(pl->old_uuid[k]), "%s", u);
		for (int i = 0; i < pl->ng.n; i++)
			if (!taken[i] && strcmp(pl->ng.g[i].uuid, u) == 0) {
				taken[i] = true;
				pl->to[k] = &pl->ng.g[i];
			}
	}
	for (int k = 0; k < pl->count; k++) {
		const char *model;

		if (pl->to[k])
			continue;
		snprintf(key, sizeof(key), "gpu.%d.model", k);
		model = phos_manifest_get_extra(m, key);
		for (int i = 0; i < pl->ng.n && !pl->to[k]; i++)
			if (!taken[i] && strcmp(pl->ng.g[i].model, model) == 0) {
				taken[i] = true;
				pl->to[k] = &pl->ng.g[i];
				pl->remap = true;
			}
		if (!pl->to[k])
			return phos_errnof(e, ENODEV, "the image holds GPU state of a %s (%s); this "
					   "node has no free GPU of that chip (%d GPU(s) seen): restore "
					   "it on a node with %d %s GPU(s)", model, pl->old_uuid[k],
					   pl->ng.n, pl->count, model);
	}
	return 0;
}

bool cuda_image_has_gpu(const struct phos_manifest *m)
{
	const char *v = phos_manifest_get_extra(m, "gpu.processes");

	return v && atoi(v) > 0;
}

int cuda_restore_check(const struct phos_manifest *m, struct phos_err *e)
{
	const char *v = phos_manifest_get_extra(m, "gpu.processes");
	const char *model = phos_manifest_get_extra(m, "gpu.0.model");
	struct plan pl;

	if (!cuda_image_has_gpu(m))
		return 0;
	if (!driver())
		return phos_errnof(e, EOPNOTSUPP, "the image holds the GPU state of %s CUDA "
				   "process(es)%s%s, but %s: restore it on a node with %s GPU and an "
				   "NVIDIA driver >= 570", v, model ? " on a " : "", model ? model : "",
				   drv.why, model ? model : "an NVIDIA");
	if (make_plan(m, &pl, e) < 0)
		return -1;
	/* Free memory: only where NVML can say; the driver refuses otherwise.
	 * The loaders of the GPU buffers may hold part of it by now: what they
	 * hold stays taken, so too little here is too little for the driver. */
	v = phos_manifest_get_extra(m, "gpu.bytes");
	if (v && pl.count == 1 && pl.to[0]) {
		int64_t free_b = gpu_free_bytes(pl.to[0]->uuid);
		uint64_t need = strtoull(v, NULL, 10);

		if (free_b >= 0 && need > (uint64_t)free_b)
			return phos_errnof(e, ENOSPC, "the image needs about %" PRIu64 " MiB on the "
					   "GPU; %s has %" PRId64 " MiB free: free the GPU or restore "
					   "elsewhere", need >> 20, pl.to[0]->uuid, free_b >> 20);
	}
	return 0;
}

/* Pairs for process nspid: its recorded GPUs (gpu.pid.N), else all. */
static unsigned pairs_for(const struct phos_manifest *m, const struct plan *pl, pid_t nspid,
			  struct cu_gpu_pair *pairs)
{
	char key[64];
	const char *list;
	unsigned n = 0;

	snprintf(key, sizeof(key), "gpu.pid.%d", (int)nspid);
	list = phos_manifest_get_extra(m, key);
	for (int k = 0; k < pl->count; k++) {
		if (list) {
			bool in = false;
			const char *p = list;

			while (*p) {
				char *end;
				long v = strtol(p, &end, 10);

				if (end == p)
					break;
				in |= v == k;
				p = *end ? end + 1 : end;
			}
			if (!in)
				continue;
		}
		if (parse_uuid(pl->old_uuid[k], &pairs[n].old_uuid) < 0 ||
		    parse_uuid(pl->to[k]->uuid, &pairs[n].new_uuid) < 0)
			continue;
		n++;
	}
	return n;
}

int cuda_restore_tree(pid_t root, const struct phos_manifest *m, size_t *n_out,
		      struct phos_err *e)
{
	const char *v = phos_manifest_get_extra(m, "gpu.processes");
	struct cuda_set s;
	struct plan pl;
	pid_t *tree = NULL;
	size_t n = 0, done = 0;
	int rc = 0;

	if (n_out)
		*n_out = 0;
	if (!v || atoi(v) <= 0)
		return 0;
	if (!driver())
		return phos_errnof(e, EOPNOTSUPP, "%s", drv.why);
	if (make_plan(m, &pl, e) < 0)
		return -1;
	if (proc_tree(root, &tree, &n) < 0)
		return phos_errf(e, "cannot list the restored processes of pid %d: %s", (int)root,
				 strerror(errno));
	cuda_set_init(&s);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct cu_gpu_pair pairs[CUDA_MAX_GPUS];
		struct cu_restore_args ra;
		struct cu_unlock_args ua;
		struct proc_ids ids;
		curesult r;
		uint64_t t;

		if (cuda_state(tree[i]) != CUDA_PS_CHECKPOINTED)
			continue;
		memset(&ra, 0, sizeof(ra));
		if (pl.remap && proc_ids(tree[i], &ids) == 0) {
			ra.npairs = pairs_for(m, &pl, ids.nspid, pairs);
			ra.pairs = ra.npairs ? pairs : NULL;
		}
		t = phos_now_ms();
		if ((r = drv.prestore((int)tree[i], &ra)) != CU_SUCCESS) {
			rc = phos_errnof(e, EIO, "the NVIDIA driver cannot restore the GPU state of "
					 "restored pid %d (%s)%s", (int)tree[i], cu_err(r),
					 ra.npairs ? " onto another GPU of the same chip" : "");
			break;
		}
		s.restore_ms += phos_now_ms() - t;
		memset(&ua, 0, sizeof(ua));
		if ((r = drv.punlock((int)tree[i], &ua)) != CU_SUCCESS) {
			rc = phos_errnof(e, EIO, "cannot unlock the CUDA state of restored pid %d (%s)",
					 (int)tree[i], cu_err(r));
			break;
		}
		done++;
	}
	free(tree);
	if (rc == 0 && done == 0)
		rc = phos_errnof(e, ESRCH, "the image holds the GPU state of %s CUDA process(es), "
				 "but none of the restored processes is waiting for it", v);
	if (rc == 0)
		log_info("GPU state of %zu restored process(es) restored in %" PRIu64 " ms%s", done,
			 s.restore_ms, pl.remap ? " (onto other GPUs of the same chip)" : "");
	if (n_out)
		*n_out = done;
	return rc;
}
