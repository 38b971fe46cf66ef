/*
 * conf.c - phos.yaml parsing with libyaml.
 *
 * The file is one YAML mapping of scalar values.  Each key has one entry
 * in `keys` below (name, parser, limits); that table is the whole schema.
 * Parsing goes into a copy of the defaults, so the caller's config is
 * replaced only when the whole file is valid.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "conf.h"
#include "log.h"
#include "util.h"

#ifndef RUNSTATEDIR
#define RUNSTATEDIR "/run"
#endif
#ifndef LOCALSTATEDIR
#define LOCALSTATEDIR "/var"
#endif
#ifndef PHOS_CRIU_BIN
#define PHOS_CRIU_BIN "/usr/local/sbin/criu"
#endif

#define PHOS_CONF_MAX_BYTES (1024 * 1024)

void phos_config_defaults(struct phos_config *c)
{
	memset(c, 0, sizeof(*c));
	phos_strlcpy(c->socket, RUNSTATEDIR "/phos/phosd.sock", sizeof(c->socket));
	phos_strlcpy(c->checkpoint_dir, LOCALSTATEDIR "/lib/phos/images", sizeof(c->checkpoint_dir));
	phos_strlcpy(c->state_dir, LOCALSTATEDIR "/lib/phos", sizeof(c->state_dir));
	phos_strlcpy(c->key_file, SYSCONFDIR "/phos/phos.key", sizeof(c->key_file));
	phos_strlcpy(c->criu_path, PHOS_CRIU_BIN, sizeof(c->criu_path));
	phos_strlcpy(c->log_target, "syslog", sizeof(c->log_target));
	c->log_level = LOG_INFO;
	c->keep_generations = 2;
	c->keep_images_after_job = false;
	c->gpu_concurrent_restore = false;
	c->gpu_compress_level = 0;
	c->gpu_stage_pool_gib = 0;
	c->gpu_rank_ms = 0;
	c->predump_rounds = 0;
	c->checkpoint_timeout = 600;
	c->listen[0] = '\0';
	phos_strlcpy(c->slurm_user, "slurm", sizeof(c->slurm_user));
}

enum key_kind { K_PATH, K_STR, K_INT, K_BOOL, K_LEVEL, K_TARGET, K_LISTEN };

struct key {
	const char *name;
	enum key_kind kind;
	size_t off;
	size_t size;		/* for strings */
	long min, max;		/* for ints */
};

#define STR(kind, field) kind, offsetof(struct phos_config, field), \
	sizeof(((struct phos_config *)0)->field), 0, 0
#define INT(field, lo, hi) K_INT, offsetof(struct phos_config, field), 0, lo, hi

static const struct key keys[] = {
	{ "socket", STR(K_PATH, socket) },
	{ "checkpoint_dir", STR(K_PATH, checkpoint_dir) },
	{ "state_dir", STR(K_PATH, state_dir) },
	{ "key_file", STR(K_PATH, key_file) },
	{ "criu_path", STR(K_PATH, criu_path) },
	{ "log_target", STR(K_TARGET, log_target) },
	{ "log_level", K_LEVEL, offsetof(struct phos_config, log_level), 0, 0, 0 },
	{ "keep_generations", INT(keep_generations, 1, 1000) },
	{ "keep_images_after_job", K_BOOL, offsetof(struct phos_config, keep_images_after_job), 0, 0, 0 },
	{ "gpu_concurrent_restore", K_BOOL, offsetof(struct phos_config, gpu_concurrent_restore), 0, 0, 0 },
	{ "gpu_compress_level", INT(gpu_compress_level, 0, 19) },
	{ "gpu_stage_pool_gib", INT(gpu_stage_pool_gib, 0, 65536) },
	{ "gpu_stage_pool_pinned", K_BOOL, offsetof(struct phos_config, gpu_stage_pool_pinned), 0, 0, 0 },
	{ "gpu_rank_ms", INT(gpu_rank_ms, 0, 10000) },
	{ "predump_rounds", INT(predump_rounds, 0, 10) },
	{ "checkpoint_timeout", INT(checkpoint_timeout, 1, 86400) },
	{ "listen", STR(K_LISTEN, listen) },
	{ "slurm_user", STR(K_STR, slurm_user) },
	{ "munge_socket", STR(K_PATH, munge_socket) },
};

static const struct key *key_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static void key_names(char *buf, size_t n)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(keys) && used < n; i++) {
		int r = snprintf(buf + used, n - used, "%s%s", i ? ", " : "", keys[i].name);

		if (r < 0)
			break;
		used += (size_t)r;
	}
}

static int parse_bool(const char *v, bool *out)
{
	static const char *yes[] = { "true", "yes", "on", "1" };
	static const char *no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* Apply one key: value pair to c; message in e on error. */
static int key_set(struct phos_config *c, const struct key *k, const char *v,
		   const char *where, struct phos_err *e)
{
	char *field = (char *)c + k->off;
	uint64_t u;

	switch (k->kind) {
	case K_PATH:
		if (v[0] != '/')
			return phos_errnof(e, EINVAL, "%s: %s: expected an absolute path, got '%s'",
					   where, k->name, v);
		/* fallthrough */
	case K_STR:
		if (k->kind == K_STR && !v[0])
			return phos_errnof(e, EINVAL, "%s: %s: must not be empty", where, k->name);
		if (phos_strlcpy(field, v, k->size) < 0)
			return phos_errnof(e, EINVAL, "%s: %s: value longer than %zu characters",
					   where, k->name, k->size - 1);
		return 0;
	case K_LISTEN: {
		const char *colon = strrchr(v, ':');

		if (v[0] && (!colon || colon == v || phos_parse_u64(colon + 1, &u) < 0 ||
			     u == 0 || u > 65535))
			return phos_errnof(e, EINVAL,
					   "%s: %s: expected HOST:PORT (port 1-65535) or empty, got '%s'",
					   where, k->name, v);
		if (phos_strlcpy(field, v, k->size) < 0)
			return phos_errnof(e, EINVAL, "%s: %s: value too long", where, k->name);
		return 0;
	}
	case K_TARGET:
		if (strcmp(v, "syslog") && strcmp(v, "stderr"))
			return phos_errnof(e, EINVAL, "%s: %s: expected 'syslog' or 'stderr', got '%s'",
					   where, k->name, v);
		phos_strlcpy(field, v, k->size);
		return 0;
	case K_LEVEL: {
		int lvl = phos_log_level_parse(v);

		if (lvl < 0)
			return phos_errnof(e, EINVAL,
					   "%s: %s: expected error, warning, notice, info or debug, got '%s'",
					   where, k->name, v);
		*(int *)(void *)field = lvl;
		return 0;
	}
	case K_INT:
		if (phos_parse_u64(v, &u) < 0 || u < (uint64_t)k->min || u > (uint64_t)k->max)
			return phos_errnof(e, EINVAL, "%s: %s: expected an integer %ld..%ld, got '%s'",
					   where, k->name, k->min, k->max, v);
		*(int *)(void *)field = (int)u;
		return 0;
	case K_BOOL:
		if (parse_bool(v, (bool *)(void *)field) < 0)
			return phos_errnof(e, EINVAL, "%s: %s: expected true or false, got '%s'",
					   where, k->name, v);
		return 0;
	}
	return phos_errnof(e, EINVAL, "%s: %s: internal error", where, k->name);
}

static const char *event_what(yaml_event_type_t t)
{
	switch (t) {
	case YAML_SEQUENCE_START_EVENT: return "a list";
	case YAML_MAPPING_START_EVENT: return "a mapping";
	case YAML_ALIAS_EVENT: return "an alias";
	default: return "something else";
	}
}

int phos_config_parse(struct phos_config *out, const char *name, const char *buf,
		      size_t len, struct phos_err *e)
{
	struct phos_config c;
	yaml_parser_t parser;
	yaml_event_t ev;
	bool seen[ARRAY_SIZE(keys)] = { false };
	int depth = 0, rc = -1, err = EINVAL;
	bool done = false;
	char key[128] = "";
	bool have_key = false;
	char where[PATH_MAX + 32];

	phos_config_defaults(&c);
	if (!yaml_parser_initialize(&parser))
		return phos_errnof(e, ENOMEM, "%s: cannot initialise the YAML parser", name);
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			phos_errf(e, "%s:%zu: YAML syntax error: %s", name,
				  parser.problem_mark.line + 1,
				  parser.problem ? parser.problem : "unknown");
			goto out;
		}
		snprintf(where, sizeof(where), "%s:%zu", name, ev.start_mark.line + 1);
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_MAPPING_START_EVENT:
			if (depth == 0) {
				depth = 1;
				break;
			}
			/* fallthrough */
		case YAML_SEQUENCE_START_EVENT:
		case YAML_ALIAS_EVENT:
			if (depth == 0)
				phos_errf(e, "%s: expected a mapping of 'key: value' lines, got %s",
					  where, event_what(ev.type));
			else
				phos_errf(e, "%s: %s: expected a single value, got %s", where,
					  have_key ? key : "?", event_what(ev.type));
			yaml_event_delete(&ev);
			goto out;
		case YAML_MAPPING_END_EVENT:
			depth = 0;
			break;
		case YAML_SCALAR_EVENT: {
			const char *v = (const char *)ev.data.scalar.value;

			if (depth == 0) {
				if (v[0] == '\0')
					break;	/* empty document */
				phos_errf(e, "%s: expected a mapping of 'key: value' lines", where);
				yaml_event_delete(&ev);
				goto out;
			}
			if (!have_key) {
				const struct key *k = key_find(v);
				char names[512];

				if (!k) {
					key_names(names, sizeof(names));
					phos_errf(e, "%s: unknown key '%s' (valid keys: %s)", where, v, names);
					yaml_event_delete(&ev);
					goto out;
				}
				if (seen[k - keys]) {
					phos_errf(e, "%s: %s: key given twice", where, v);
					yaml_event_delete(&ev);
					goto out;
				}
				seen[k - keys] = true;
				phos_strlcpy(key, v, sizeof(key));
				have_key = true;
			} else {
				if (key_set(&c, key_find(key), v, where, e) < 0) {
					yaml_event_delete(&ev);
					goto out;
				}
				have_key = false;
			}
			break;
		}
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	*out = c;
	rc = 0;
	err = 0;
out:
	yaml_parser_delete(&parser);
	if (rc < 0)
		errno = err;
	return rc;
}

int phos_config_load(struct phos_config *c, const char *path, struct phos_err *e)
{
	struct stat st;
	char *buf = NULL;
	ssize_t n;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return phos_errf(e, "%s: cannot open: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		phos_closep(&fd);
		return phos_errnof(e, EINVAL, "%s: not a regular file", path);
	}
	if (st.st_size > PHOS_CONF_MAX_BYTES) {
		phos_closep(&fd);
		return phos_errnof(e, EFBIG, "%s: larger than %d bytes", path, PHOS_CONF_MAX_BYTES);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		phos_closep(&fd);
		return phos_errnof(e, ENOMEM, "%s: out of memory", path);
	}
	n = phos_read_full(fd, buf, (size_t)st.st_size);
	phos_closep(&fd);
	if (n < 0) {
		rc = phos_errf(e, "%s: read: %s", path, strerror(errno));
		free(buf);
		return rc;
	}
	buf[n] = '\0';
	rc = phos_config_parse(c, path, buf, (size_t)n, e);
	free(buf);
	return rc;
}
