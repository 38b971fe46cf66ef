/*
 * options.c - option table and callbacks (see options.h).
 *
 * The callbacks are idempotent: sbatch calls them once for #SBATCH lines
 * and again for the command line, srun for SLURM_SPANK_* variables and then
 * the command line; each call only overwrites the state, the last value
 * wins.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <slurm/spank.h>

#include "err.h"
#include "options.h"

#define INTERVAL_FORM "minutes as an integer, or an integer with suffix s, m or h " \
	"(e.g. 30s, 10m, 2h), between 5s and 7 days"

enum { OPT_CHECKPOINT = 1, OPT_INTERVAL = 2 };

static struct phos_opts opts;

static int opt_cb(int val, const char *optarg, int remote);

static struct spank_option opt_checkpoint = {
	.name = "phos-checkpoint",
	.arginfo = NULL,
	.usage = "Checkpoint the tasks with PhOS (transparent CPU+GPU checkpoint/restore); "
		 "given to sbatch or salloc it applies to every step of the job.",
	.has_arg = 0,
	.val = OPT_CHECKPOINT,
	.cb = opt_cb,
};

static struct spank_option opt_interval = {
	.name = "phos-checkpoint-interval",
	.arginfo = "TIME",
	.usage = "Also checkpoint the job's steps periodically, every TIME (minutes, "
		 "or 30s, 10m, 2h; 5s to 7 days). Implies --phos-checkpoint.",
	.has_arg = 1,
	.val = OPT_INTERVAL,
	.cb = opt_cb,
};

int phos_interval_parse(const char *s, uint32_t *secs, struct phos_err *e)
{
	uint64_t v = 0, mult = 60;
	const char *p = s;

	if (!s || *s < '0' || *s > '9')
		goto bad;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > PHOS_INTERVAL_MAX_S)
			goto range;
	}
	switch (*p) {
	case '\0':
		break;
	case 's':
		mult = 1;
		break;
	case 'm':
		mult = 60;
		break;
	case 'h':
		mult = 3600;
		break;
	default:
		goto bad;
	}
	if (*p != '\0' && p[1] != '\0')
		goto bad;
	v *= mult;
	if (v < PHOS_INTERVAL_MIN_S || v > PHOS_INTERVAL_MAX_S)
		goto range;
	*secs = (uint32_t)v;
	return 0;
bad:
	return phos_errnof(e, EINVAL, "phos: --phos-checkpoint-interval=%s: expected " INTERVAL_FORM,
			   s ? s : "");
range:
	return phos_errnof(e, ERANGE, "phos: --phos-checkpoint-interval=%s: out of range; expected "
			   INTERVAL_FORM, s);
}

static int opt_cb(int val, const char *optarg, int remote)
{
	struct phos_err e;
	uint32_t secs;

	switch (val) {
	case OPT_CHECKPOINT:
		opts.checkpoint = true;
		return 0;
	case OPT_INTERVAL:
		if (phos_interval_parse(optarg, &secs, &e) < 0) {
			slurm_error("%s", e.msg);
			return -1;
		}
		opts.checkpoint = true;
		opts.interval_s = secs;
		return 0;
	default:
		slurm_error("phos: internal error: unknown option %d", val);
		return -1;
	}
}

static int register_one(spank_t sp, struct spank_option *o, struct phos_err *e)
{
	spank_err_t rc = spank_option_register(sp, o);

	if (rc != ESPANK_SUCCESS)
		return phos_errnof(e, EINVAL, "phos: cannot register --%s: %s", o->name,
				   spank_strerror(rc));
	return 0;
}

int phos_opts_register(spank_t sp, struct phos_err *e)
{
	switch (spank_context()) {
	case S_CTX_LOCAL:
		return register_one(sp, &opt_checkpoint, e);
	case S_CTX_ALLOCATOR:
	case S_CTX_REMOTE:
		if (register_one(sp, &opt_checkpoint, e) < 0)
			return -1;
		return register_one(sp, &opt_interval, e);
	default:
		return 0;
	}
}

int phos_opts_post_opt(spank_t sp, bool enabled)
{
	if (!opts.checkpoint)
		return 0;
	if (!enabled)
		slurm_verbose("phos: disabled on this cluster (enabled=0 in plugstack.conf); --phos-checkpoint has no effect");
	else if (opts.interval_s)
		slurm_verbose("phos: checkpointing on, every %" PRIu32 " s", opts.interval_s);
	else
		slurm_verbose("phos: checkpointing on");
	return 0;
}

const struct phos_opts *phos_opts_get(void)
{
	return &opts;
}

int phos_opts_from_env(spank_t sp, struct phos_err *e)
{
	char buf[64];
	uint32_t secs;
	spank_err_t rc;

	rc = spank_getenv(sp, PHOS_OPT_ENV_INTERVAL, buf, sizeof(buf));
	if (rc == ESPANK_SUCCESS && opts.interval_s == 0) {
		if (phos_interval_parse(buf, &secs, e) < 0)
			return -1;
		opts.interval_s = secs;
		opts.checkpoint = true;
	} else if (rc == ESPANK_NOSPACE && opts.interval_s == 0) {
		return phos_errnof(e, EINVAL, "phos: %s: value too long", PHOS_OPT_ENV_INTERVAL);
	}
	/* A flag's value is "" or "(null)": only its presence counts. */
	rc = spank_getenv(sp, PHOS_OPT_ENV_CHECKPOINT, buf, sizeof(buf));
	if (rc == ESPANK_SUCCESS || rc == ESPANK_NOSPACE)
		opts.checkpoint = true;
	return 0;
}
