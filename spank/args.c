/*
 * args.c - plugstack.conf argument parsing (see args.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "err.h"

#ifndef PHOS_LIBPHOS_DEFAULT
#error "PHOS_LIBPHOS_DEFAULT must be defined by the build (spank/Makefile.am)"
#endif
#ifndef PHOS_SOCKET_DEFAULT
#error "PHOS_SOCKET_DEFAULT must be defined by the build (spank/Makefile.am)"
#endif
#ifndef PHOS_RESTORE_HELPER_DEFAULT
#error "PHOS_RESTORE_HELPER_DEFAULT must be defined by the build (spank/Makefile.am)"
#endif

#define VALID_KEYS "libphos=PATH, socket=PATH, restore_helper=PATH, config=PATH, enabled=0|1"

typedef int (*arg_setter)(struct phos_args *a, const char *key, const char *val,
			  struct phos_err *e);

/* Only "%n" and "%%" may follow a '%'. */
static int check_template(const char *s)
{
	for (; *s; s++) {
		if (*s != '%')
			continue;
		s++;
		if (*s != 'n' && *s != '%')
			return -1;
	}
	return 0;
}

static int set_path(char *dst, const char *key, const char *val, struct phos_err *e)
{
	if (val[0] != '/')
		return phos_errnof(e, EINVAL, "phos: plugstack.conf: %s=%s: expected an absolute path",
				   key, val);
	if (strlen(val) >= PATH_MAX)
		return phos_errnof(e, ENAMETOOLONG, "phos: plugstack.conf: %s: path longer than %d bytes",
				   key, PATH_MAX - 1);
	strcpy(dst, val);
	return 0;
}

static int set_libphos(struct phos_args *a, const char *key, const char *val, struct phos_err *e)
{
	if (strchr(val, ':') || strchr(val, ' '))
		return phos_errnof(e, EINVAL, "phos: plugstack.conf: %s=%s: the path may not contain ':' or ' ' (it goes into LD_PRELOAD)",
				   key, val);
	return set_path(a->libphos, key, val, e);
}

/* A path that may name the node (%n): socket=, config= */
static int set_template(char *dst, const char *key, const char *val, struct phos_err *e)
{
	if (check_template(val) < 0)
		return phos_errnof(e, EINVAL, "phos: plugstack.conf: %s=%s: only %%n (node name) and %%%% may follow '%%'",
				   key, val);
	return set_path(dst, key, val, e);
}

static int set_socket(struct phos_args *a, const char *key, const char *val, struct phos_err *e)
{
	return set_template(a->socket, key, val, e);
}

static int set_config(struct phos_args *a, const char *key, const char *val, struct phos_err *e)
{
	return set_template(a->config, key, val, e);
}

static int set_restore_helper(struct phos_args *a, const char *key, const char *val,
			      struct phos_err *e)
{
	return set_path(a->restore_helper, key, val, e);
}

static int set_enabled(struct phos_args *a, const char *key, const char *val, struct phos_err *e)
{
	if (strcmp(val, "1") == 0)
		a->enabled = true;
	else if (strcmp(val, "0") == 0)
		a->enabled = false;
	else
		return phos_errnof(e, EINVAL, "phos: plugstack.conf: %s=%s: expected 0 or 1", key, val);
	return 0;
}

static const struct {
	const char *key;
	arg_setter set;
} arg_table[] = {
	{ "libphos", set_libphos },
	{ "socket", set_socket },
	{ "restore_helper", set_restore_helper },
	{ "config", set_config },
	{ "enabled", set_enabled },
};

#define NKEYS (sizeof(arg_table) / sizeof(arg_table[0]))

void phos_args_default(struct phos_args *a)
{
	*a = (struct phos_args){ .enabled = true };
	/* The defaults are compile-time strings far below PATH_MAX. */
	snprintf(a->libphos, sizeof(a->libphos), "%s", PHOS_LIBPHOS_DEFAULT);
	snprintf(a->socket, sizeof(a->socket), "%s", PHOS_SOCKET_DEFAULT);
	snprintf(a->restore_helper, sizeof(a->restore_helper), "%s", PHOS_RESTORE_HELPER_DEFAULT);
}

int phos_args_parse(struct phos_args *a, int ac, char **av, struct phos_err *e)
{
	struct phos_args tmp;
	bool seen[NKEYS] = { false };

	phos_args_default(&tmp);
	for (int i = 0; i < ac; i++) {
		const char *eq = strchr(av[i], '=');
		size_t klen = eq ? (size_t)(eq - av[i]) : strlen(av[i]);
		size_t k;

		for (k = 0; k < NKEYS; k++)
			if (strlen(arg_table[k].key) == klen &&
			    strncmp(arg_table[k].key, av[i], klen) == 0)
				break;
		if (k == NKEYS)
			return phos_errnof(e, EINVAL, "phos: plugstack.conf: unknown argument '%.*s' (valid: " VALID_KEYS ")",
					   (int)klen, av[i]);
		if (!eq || eq[1] == '\0')
			return phos_errnof(e, EINVAL, "phos: plugstack.conf: '%s' needs a value (valid: " VALID_KEYS ")",
					   av[i]);
		if (seen[k])
			return phos_errnof(e, EINVAL, "phos: plugstack.conf: '%s' given twice", arg_table[k].key);
		seen[k] = true;
		if (arg_table[k].set(&tmp, arg_table[k].key, eq + 1, e) < 0)
			return -1;
	}
	*a = tmp;
	return 0;
}

int phos_socket_expand(char *dst, size_t size, const char *tmpl, const char *nodename)
{
	size_t n = 0;

	if (size == 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (const char *s = tmpl; *s; s++) {
		const char *piece = s;
		size_t len = 1;

		if (*s == '%') {
			s++;
			if (*s == 'n') {
				piece = nodename;
				len = strlen(nodename);
			} else if (*s == '%') {
				piece = s;
			} else {
				dst[n] = '\0';
				errno = EINVAL;
				return -1;
			}
		}
		if (n + len >= size) {
			dst[n] = '\0';
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(dst + n, piece, len);
		n += len;
	}
	dst[n] = '\0';
	return 0;
}
