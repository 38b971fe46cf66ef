/*
 * manifest.c - manifest.yaml (libyaml emitter / document parser), the
 * node key, HMAC-SHA256 and SHA-256 of files (OpenSSL EVP).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <yaml.h>

#include "image.h"
#include "manifest.h"

#define EXTRA_KEY_MAX	128
#define EXTRA_VAL_MAX	4096
#define NAME_DEPTH_MAX	16

/* ---- small helpers ---------------------------------------------------- */

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	if (!d)
		errno = ENOMEM;
	return d;
}

static int copy_str(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dst, src, n + 1);
	return 0;
}

/* Whole-string decimal, no sign, no leading garbage; max bounds it. */
static int parse_u64(const char *s, uint64_t max, uint64_t *v)
{
	uint64_t r = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (r > (UINT64_MAX - 9) / 10)
			return -1;
		r = r * 10 + (uint64_t)(*s - '0');
	}
	if (r > max)
		return -1;
	*v = r;
	return 0;
}

static void hex_format(const unsigned char *b, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hx[b[i] >> 4];
		out[2 * i + 1] = hx[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Exactly 2n lowercase hex digits. */
static int hex_parse(const char *s, size_t slen, unsigned char *b, size_t n)
{
	size_t i;

	if (slen != 2 * n)
		return -1;
	for (i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		b[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

void phos_sha256_format(const unsigned char sha[PHOS_SHA256_LEN], char out[2 * PHOS_SHA256_LEN + 1])
{
	hex_format(sha, PHOS_SHA256_LEN, out);
}

/* ---- manifest struct ---------------------------------------------------- */

void phos_manifest_init(struct phos_manifest *m)
{
	memset(m, 0, sizeof(*m));
	m->version = PHOS_MANIFEST_VERSION;
}

void phos_manifest_free(struct phos_manifest *m)
{
	int saved = errno;
	size_t i;

	if (!m)
		return;
	for (i = 0; i < m->n_extra; i++) {
		free(m->extra[i].key);
		free(m->extra[i].value);
	}
	free(m->extra);
	for (i = 0; i < m->n_files; i++)
		free(m->files[i].name);
	free(m->files);
	phos_manifest_init(m);
	errno = saved;
}

static bool extra_key_ok(const char *k)
{
	size_t n = strlen(k), i;

	if (n == 0 || n > EXTRA_KEY_MAX)
		return false;
	for (i = 0; i < n; i++) {
		char c = k[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* Index of key in the sorted array, or where it would go (*found false). */
static size_t extra_pos(const struct phos_manifest *m, const char *key, bool *found)
{
	size_t lo = 0, hi = m->n_extra;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->extra[mid].key, key);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static bool utf8_ok(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s++, n, cp, i;

		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		for (i = 0; i < n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		s += n;
	}
	return true;
}

int phos_manifest_set_extra(struct phos_manifest *m, const char *key, const char *value,
			    struct phos_err *e)
{
	bool found;
	size_t pos;
	char *v;

	if (!key || !value || !extra_key_ok(key))
		return phos_errnof(e, EINVAL, "manifest extra key '%s' invalid: use 1-%d of [A-Za-z0-9._:-]",
				   key ? key : "(null)", EXTRA_KEY_MAX);
	if (strlen(value) > EXTRA_VAL_MAX)
		return phos_errnof(e, EINVAL, "manifest extra value for '%s' longer than %d bytes",
				   key, EXTRA_VAL_MAX);
	if (!utf8_ok((const unsigned char *)value))
		return phos_errnof(e, EINVAL, "manifest extra value for '%s' is not valid UTF-8", key);
	pos = extra_pos(m, key, &found);
	v = xstrdup(value);
	if (!v)
		return phos_errnof(e, ENOMEM, "out of memory");
	if (found) {
		free(m->extra[pos].value);
		m->extra[pos].value = v;
		return 0;
	} else {
		struct phos_manifest_kv *a = realloc(m->extra, (m->n_extra + 1) * sizeof(*a));
		char *k = xstrdup(key);

		if (!a || !k) {
			if (a)
				m->extra = a;
			free(k);
			free(v);
			return phos_errnof(e, ENOMEM, "out of memory");
		}
		m->extra = a;
		memmove(&a[pos + 1], &a[pos], (m->n_extra - pos) * sizeof(*a));
		a[pos].key = k;
		a[pos].value = v;
		m->n_extra++;
	}
	return 0;
}

const char *phos_manifest_get_extra(const struct phos_manifest *m, const char *key)
{
	bool found;
	size_t pos = extra_pos(m, key, &found);

	return found ? m->extra[pos].value : NULL;
}

static bool name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-' || c == '+' || c == ',' || c == ':' ||
	       c == '=' || c == '@';
}

bool phos_manifest_name_ok(const char *name)
{
	const char *p = name;
	int depth = 0;

	if (!name || !*name || strlen(name) >= PHOS_REL_MAX)
		return false;
	if (!strcmp(name, PHOS_MANIFEST_NAME) || !strcmp(name, PHOS_MANIFEST_MAC_NAME))
		return false;
	while (*p) {
		size_t n = 0;

		if (*p == '.' || *p == '/')	/* ".", "..", hidden, empty component */
			return false;
		while (p[n] && p[n] != '/') {
			if (!name_char_ok(p[n]))
				return false;
			n++;
		}
		if (n > 255 || ++depth > NAME_DEPTH_MAX)
			return false;
		p += n;
		if (*p == '/') {
			p++;
			if (!*p)
				return false;	/* trailing slash */
		}
	}
	return true;
}

static size_t file_pos(const struct phos_manifest *m, const char *name, bool *found)
{
	size_t lo = 0, hi = m->n_files;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->files[mid].name, name);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int phos_manifest_add_file(struct phos_manifest *m, const char *name, uint64_t size,
			   const unsigned char sha256[PHOS_SHA256_LEN], struct phos_err *e)
{
	return phos_manifest_add_file_blocks(m, name, size, 0, sha256, e);
}

int phos_manifest_add_file_blocks(struct phos_manifest *m, const char *name, uint64_t size,
				  uint64_t block, const unsigned char sha256[PHOS_SHA256_LEN],
				  struct phos_err *e)
{
	struct phos_manifest_file *a;
	bool found;
	size_t pos;
	char *n;

	if (!phos_manifest_name_ok(name))
		return phos_errnof(e, EINVAL, "file name '%s' not allowed in an image", name ? name : "(null)");
	pos = file_pos(m, name, &found);
	if (found) {
		m->files[pos].size = size;
		m->files[pos].block = block;
		memcpy(m->files[pos].sha256, sha256, PHOS_SHA256_LEN);
		return 0;
	}
	n = xstrdup(name);
	a = n ? realloc(m->files, (m->n_files + 1) * sizeof(*a)) : NULL;
	if (!a) {
		free(n);
		return phos_errnof(e, ENOMEM, "out of memory");
	}
	m->files = a;
	memmove(&a[pos + 1], &a[pos], (m->n_files - pos) * sizeof(*a));
	a[pos].name = n;
	a[pos].size = size;
	a[pos].block = block;
	memcpy(a[pos].sha256, sha256, PHOS_SHA256_LEN);
	m->n_files++;
	return 0;
}

const struct phos_manifest_file *phos_manifest_find_file(const struct phos_manifest *m,
							 const char *name)
{
	bool found;
	size_t pos = file_pos(m, name, &found);

	return found ? &m->files[pos] : NULL;
}

/* ---- emitting ------------------------------------------------------------ */

struct outbuf {
	char *buf;
	size_t len, cap;
	bool oom;
};

static int out_write(void *data, unsigned char *buf, size_t size)
{
	struct outbuf *o = data;

	if (o->len + size + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;
		char *n;

		while (cap < o->len + size + 1)
			cap *= 2;
		n = realloc(o->buf, cap);
		if (!n) {
			o->oom = true;
			return 0;
		}
		o->buf = n;
		o->cap = cap;
	}
	memcpy(o->buf + o->len, buf, size);
	o->len += size;
	o->buf[o->len] = '\0';
	return 1;
}

static int emit(yaml_emitter_t *em, yaml_event_t *ev, int ok)
{
	if (!ok)
		return -1;
	return yaml_emitter_emit(em, ev) ? 0 : -1;
}

static int emit_scalar(yaml_emitter_t *em, const char *s)
{
	yaml_event_t ev;

	return emit(em, &ev, yaml_scalar_event_initialize(&ev, NULL, NULL,
		(yaml_char_t *)s, (int)strlen(s), 1, 1, YAML_ANY_SCALAR_STYLE));
}

static int emit_kv(yaml_emitter_t *em, const char *k, const char *v)
{
	return emit_scalar(em, k) || emit_scalar(em, v) ? -1 : 0;
}

static int emit_ku(yaml_emitter_t *em, const char *k, uint64_t v)
{
	char b[24];

	snprintf(b, sizeof(b), "%" PRIu64, v);
	return emit_kv(em, k, b);
}

static int emit_map_start(yaml_emitter_t *em)
{
	yaml_event_t ev;

	return emit(em, &ev, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
								 YAML_BLOCK_MAPPING_STYLE));
}

static int emit_map_end(yaml_emitter_t *em)
{
	yaml_event_t ev;

	return emit(em, &ev, yaml_mapping_end_event_initialize(&ev));
}

static int emit_seq(yaml_emitter_t *em, bool start)
{
	yaml_event_t ev;

	if (start)
		return emit(em, &ev, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
									  YAML_BLOCK_SEQUENCE_STYLE));
	return emit(em, &ev, yaml_sequence_end_event_initialize(&ev));
}

static int format_time(time_t t, char *buf, size_t size)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return -1;
	return 0;
}

static int emit_body(yaml_emitter_t *em, const struct phos_manifest *m)
{
	char job[32], step[16], tbuf[32], hex[2 * PHOS_SHA256_LEN + 1];
	size_t i;

	if (phos_image_job_format(&m->id, job, sizeof(job)) < 0 ||
	    phos_image_step_format(m->id.step, step, sizeof(step)) < 0 ||
	    format_time(m->created, tbuf, sizeof(tbuf)) < 0)
		return -1;
	if (emit_map_start(em) ||
	    emit_ku(em, "version", m->version) ||
	    emit_scalar(em, "owner") || emit_map_start(em) ||
	    emit_ku(em, "uid", m->uid) || emit_ku(em, "gid", m->gid) ||
	    emit_kv(em, "user", m->user) || emit_map_end(em) ||
	    emit_kv(em, "host", m->host) ||
	    emit_kv(em, "created", tbuf) ||
	    emit_kv(em, "job", job) || emit_kv(em, "step", step) ||
	    emit_ku(em, "task", m->id.task) ||
	    emit_ku(em, "generation", m->generation) ||
	    emit_ku(em, "root_pid", (uint64_t)m->root_pid) ||
	    emit_ku(em, "root_nspid", (uint64_t)m->root_nspid))
		return -1;
	if (emit_scalar(em, "extra") || emit_map_start(em))
		return -1;
	for (i = 0; i < m->n_extra; i++)
		if (emit_kv(em, m->extra[i].key, m->extra[i].value))
			return -1;
	if (emit_map_end(em) || emit_scalar(em, "files") || emit_seq(em, true))
		return -1;
	for (i = 0; i < m->n_files; i++) {
		hex_format(m->files[i].sha256, PHOS_SHA256_LEN, hex);
		if (emit_map_start(em) || emit_kv(em, "name", m->files[i].name) ||
		    emit_ku(em, "size", m->files[i].size) ||
		    (m->files[i].block && emit_ku(em, "block", m->files[i].block)) ||
		    emit_kv(em, "sha256", hex) || emit_map_end(em))
			return -1;
	}
	return emit_seq(em, false) || emit_map_end(em) ? -1 : 0;
}

static int manifest_check(const struct phos_manifest *m, struct phos_err *e)
{
	if (m->version != PHOS_MANIFEST_VERSION)
		return phos_errnof(e, EINVAL, "manifest version %u cannot be written", m->version);
	if (phos_image_id_check(&m->id, e) < 0)
		return -1;
	if (strcmp(m->user, m->id.user))
		return phos_errnof(e, EINVAL, "manifest owner '%s' differs from the image user '%s'",
				   m->user, m->id.user);
	if (m->generation == 0 || m->generation > PHOS_GEN_MAX)
		return phos_errnof(e, EINVAL, "generation %" PRIu64 " out of range", m->generation);
	if (m->root_pid < 0 || m->root_nspid < 0)
		return phos_errnof(e, EINVAL, "negative pid in manifest");
	if (!m->host[0])
		return phos_errnof(e, EINVAL, "manifest host not set");
	return 0;
}

int phos_manifest_emit(const struct phos_manifest *m, char **buf, size_t *len, struct phos_err *e)
{
	struct outbuf o = { 0 };
	yaml_emitter_t em;
	yaml_event_t ev;
	int rc = -1;

	if (manifest_check(m, e) < 0)
		return -1;
	if (!yaml_emitter_initialize(&em))
		return phos_errnof(e, ENOMEM, "yaml emitter: out of memory");
	yaml_emitter_set_output(&em, out_write, &o);
	yaml_emitter_set_unicode(&em, 1);
	yaml_emitter_set_width(&em, -1);
	if (emit(&em, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING)) ||
	    emit(&em, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 0)) ||
	    emit_body(&em, m) ||
	    emit(&em, &ev, yaml_document_end_event_initialize(&ev, 1)) ||
	    emit(&em, &ev, yaml_stream_end_event_initialize(&ev)) ||
	    !yaml_emitter_flush(&em)) {
		if (o.oom || em.error == YAML_MEMORY_ERROR)
			phos_errnof(e, ENOMEM, "yaml emitter: out of memory");
		else
			phos_errnof(e, EINVAL, "yaml emitter: %s", em.problem ? em.problem : "failed");
		goto out;
	}
	if (o.oom || !o.buf) {
		phos_errnof(e, ENOMEM, "yaml emitter: out of memory");
		goto out;
	}
	*buf = o.buf;
	*len = o.len;
	o.buf = NULL;
	rc = 0;
out:
	yaml_emitter_delete(&em);
	free(o.buf);
	return rc;
}

/* ---- parsing ------------------------------------------------------------- */

struct pctx {
	yaml_document_t *doc;
	const char *name;
	struct phos_err *e;
};

static int bad(struct pctx *c, yaml_node_t *n, const char *what)
{
	if (n)
		return phos_errnof(c->e, EBADMSG, "%s:%lu: %s", c->name,
				   (unsigned long)n->start_mark.line + 1, what);
	return phos_errnof(c->e, EBADMSG, "%s: %s", c->name, what);
}

static const char *scalar(yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return NULL;
	/* libyaml scalars may hold NUL bytes ("\0"): refuse those. */
	if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
		return NULL;
	return (const char *)n->data.scalar.value;
}

/* Get a scalar key of a mapping pair; refuse non-scalar keys. */
static const char *pair_key(struct pctx *c, yaml_node_pair_t *p, yaml_node_t **kn)
{
	*kn = yaml_document_get_node(c->doc, p->key);
	return scalar(*kn);
}

/* Find key in mapping node; refuses duplicates.  NULL if absent. */
static yaml_node_t *map_get(struct pctx *c, yaml_node_t *map, const char *key, int *dup)
{
	yaml_node_t *found = NULL, *kn;
	yaml_node_pair_t *p;

	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const char *k = pair_key(c, p, &kn);

		if (k && !strcmp(k, key)) {
			if (found)
				(*dup)++;
			found = yaml_document_get_node(c->doc, p->value);
		}
	}
	return found;
}

/* Refuse keys not in allowed[] and duplicates. */
static int map_strict(struct pctx *c, yaml_node_t *map, const char *const *allowed, size_t na)
{
	yaml_node_pair_t *p, *q;
	yaml_node_t *kn, *kn2;
	char msg[200];

	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const char *k = pair_key(c, p, &kn);
		size_t i;

		if (!k)
			return bad(c, kn, "mapping key is not a string");
		for (i = 0; i < na; i++)
			if (!strcmp(allowed[i], k))
				break;
		if (allowed && i == na) {
			snprintf(msg, sizeof(msg), "unknown key '%.100s'", k);
			return bad(c, kn, msg);
		}
		for (q = map->data.mapping.pairs.start; q < p; q++) {
			const char *k2 = pair_key(c, q, &kn2);

			if (k2 && !strcmp(k, k2)) {
				snprintf(msg, sizeof(msg), "duplicate key '%.100s'", k);
				return bad(c, kn, msg);
			}
		}
	}
	return 0;
}

static int get_str(struct pctx *c, yaml_node_t *map, const char *key, const char **out)
{
	yaml_node_t *n;
	int dup = 0;
	char msg[160];

	n = map_get(c, map, key, &dup);
	if (!n) {
		snprintf(msg, sizeof(msg), "missing key '%s'", key);
		return bad(c, map, msg);
	}
	*out = scalar(n);
	if (!*out) {
		snprintf(msg, sizeof(msg), "'%s' must be a string", key);
		return bad(c, n, msg);
	}
	return 0;
}

static int get_u64(struct pctx *c, yaml_node_t *map, const char *key, uint64_t max, uint64_t *v)
{
	const char *s;
	char msg[160];

	if (get_str(c, map, key, &s) < 0)
		return -1;
	if (parse_u64(s, max, v) < 0) {
		snprintf(msg, sizeof(msg), "'%s' must be a number <= %" PRIu64 ", not '%.40s'",
			 key, max, s);
		return bad(c, map_get(c, map, key, &(int){ 0 }), msg);
	}
	return 0;
}

static int get_node(struct pctx *c, yaml_node_t *map, const char *key, yaml_node_type_t type,
		    yaml_node_t **out)
{
	char msg[160];
	int dup = 0;

	*out = map_get(c, map, key, &dup);
	if (!*out) {
		snprintf(msg, sizeof(msg), "missing key '%s'", key);
		return bad(c, map, msg);
	}
	if ((*out)->type != type) {
		snprintf(msg, sizeof(msg), "'%s' must be a %s", key,
			 type == YAML_MAPPING_NODE ? "mapping" : "sequence");
		return bad(c, *out, msg);
	}
	return 0;
}

static int parse_time(const char *s, time_t *t)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!end || *end)
		return -1;
	*t = timegm(&tm);
	return *t == (time_t)-1 ? -1 : 0;
}

static int parse_files(struct pctx *c, yaml_node_t *seq, struct phos_manifest *m)
{
	static const char *const fkeys[] = { "name", "size", "sha256", "block" };
	yaml_node_item_t *it;

	for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
		yaml_node_t *f = yaml_document_get_node(c->doc, *it);
		unsigned char sha[PHOS_SHA256_LEN];
		const char *name, *hex;
		uint64_t size, block = 0;
		char msg[PHOS_REL_MAX + 64];

		if (!f || f->type != YAML_MAPPING_NODE)
			return bad(c, f, "each entry of 'files' must be a mapping");
		if (map_strict(c, f, fkeys, 4) < 0 || get_str(c, f, "name", &name) < 0 ||
		    get_u64(c, f, "size", UINT64_MAX, &size) < 0 || get_str(c, f, "sha256", &hex) < 0)
			return -1;
		/* block: optional, hashed in pieces of that many bytes */
		if (map_get(c, f, "block", &(int){ 0 })) {
			if (get_u64(c, f, "block", 1ull << 30, &block) < 0)
				return -1;
			if (block == 0 || block % 4096)
				return bad(c, f, "block must be a multiple of 4096 up to 1 GiB");
		}
		if (!phos_manifest_name_ok(name)) {
			snprintf(msg, sizeof(msg), "file name '%.*s' not allowed", PHOS_REL_MAX - 1, name);
			return bad(c, f, msg);
		}
		if (hex_parse(hex, strlen(hex), sha, PHOS_SHA256_LEN) < 0)
			return bad(c, f, "sha256 must be 64 lowercase hex digits");
		if (phos_manifest_find_file(m, name)) {
			snprintf(msg, sizeof(msg), "file '%.*s' listed twice", PHOS_REL_MAX - 1, name);
			return bad(c, f, msg);
		}
		if (phos_manifest_add_file_blocks(m, name, size, block, sha, c->e) < 0)
			return -1;
	}
	return 0;
}

static int parse_doc(struct pctx *c, struct phos_manifest *m)
{
	static const char *const keys[] = {
		"version", "owner", "host", "created", "job", "step", "task", "generation",
		"root_pid", "root_nspid", "extra", "files",
	};
	static const char *const okeys[] = { "uid", "gid", "user" };
	yaml_node_t *root = yaml_document_get_root_node(c->doc), *owner, *extra, *files;
	const char *s, *user, *job, *step;
	yaml_node_pair_t *p;
	uint64_t v;

	if (!root || root->type != YAML_MAPPING_NODE)
		return bad(c, root, "not a manifest (top level must be a mapping)");
	/* The version decides how to read the rest: check it first. */
	if (get_str(c, root, "version", &s) < 0)
		return -1;
	if (parse_u64(s, UINT32_MAX, &v) < 0 || v != PHOS_MANIFEST_VERSION)
		return phos_errnof(c->e, EPROTONOSUPPORT,
				   "%s: manifest format version '%.40s' is not supported (this phos reads version %d); "
				   "restore it with the phos release that wrote it", c->name, s,
				   PHOS_MANIFEST_VERSION);
	m->version = (unsigned)v;
	if (map_strict(c, root, keys, sizeof(keys) / sizeof(keys[0])) < 0)
		return -1;

	if (get_node(c, root, "owner", YAML_MAPPING_NODE, &owner) < 0 ||
	    map_strict(c, owner, okeys, 3) < 0)
		return -1;
	if (get_u64(c, owner, "uid", UINT32_MAX - 1, &v) < 0)
		return -1;
	m->uid = (uid_t)v;
	if (get_u64(c, owner, "gid", UINT32_MAX - 1, &v) < 0)
		return -1;
	m->gid = (gid_t)v;
	if (get_str(c, owner, "user", &user) < 0)
		return -1;
	if (!phos_image_user_ok(user) || copy_str(m->user, sizeof(m->user), user) < 0)
		return bad(c, owner, "invalid owner user name");

	if (get_str(c, root, "host", &s) < 0)
		return -1;
	if (!*s || copy_str(m->host, sizeof(m->host), s) < 0)
		return bad(c, root, "invalid host");
	if (get_str(c, root, "created", &s) < 0)
		return -1;
	if (parse_time(s, &m->created) < 0)
		return bad(c, root, "'created' must be YYYY-MM-DDTHH:MM:SSZ");

	if (get_str(c, root, "job", &job) < 0 || get_str(c, root, "step", &step) < 0)
		return -1;
	if (copy_str(m->id.user, sizeof(m->id.user), user) < 0 ||
	    phos_image_job_parse(job, &m->id) < 0)
		return bad(c, root, "invalid 'job' (a Slurm job id or pid-<pid>)");
	if (phos_image_step_parse(step, &m->id.step) < 0)
		return bad(c, root, "invalid 'step'");
	if (get_u64(c, root, "task", UINT32_MAX, &v) < 0)
		return -1;
	m->id.task = (uint32_t)v;
	if (phos_image_id_check(&m->id, NULL) < 0)
		return bad(c, root, "job/step/task do not form a valid image id");
	if (get_u64(c, root, "generation", PHOS_GEN_MAX, &m->generation) < 0)
		return -1;
	if (m->generation == 0)
		return bad(c, root, "'generation' must be >= 1");
	if (get_u64(c, root, "root_pid", INT32_MAX, &v) < 0)
		return -1;
	m->root_pid = (pid_t)v;
	if (get_u64(c, root, "root_nspid", INT32_MAX, &v) < 0)
		return -1;
	m->root_nspid = (pid_t)v;

	if (get_node(c, root, "extra", YAML_MAPPING_NODE, &extra) < 0 ||
	    map_strict(c, extra, NULL, 0) < 0)
		return -1;
	for (p = extra->data.mapping.pairs.start; p < extra->data.mapping.pairs.top; p++) {
		yaml_node_t *kn, *vn = yaml_document_get_node(c->doc, p->value);
		const char *k = pair_key(c, p, &kn), *val = scalar(vn);

		if (!val)
			return bad(c, vn, "extra values must be strings");
		if (phos_manifest_set_extra(m, k, val, NULL) < 0)
			return errno == ENOMEM ? phos_errnof(c->e, ENOMEM, "out of memory")
					       : bad(c, kn, "invalid extra key or value");
	}
	if (get_node(c, root, "files", YAML_SEQUENCE_NODE, &files) < 0)
		return -1;
	return parse_files(c, files, m);
}

int phos_manifest_parse(struct phos_manifest *m, const char *name, const char *buf, size_t len,
			struct phos_err *e)
{
	struct pctx c = { .name = name ? name : PHOS_MANIFEST_NAME, .e = e };
	yaml_parser_t parser;
	yaml_document_t doc;
	int rc;

	phos_manifest_free(m);
	if (len > PHOS_MANIFEST_MAX)
		return phos_errnof(e, EBADMSG, "%s: larger than %u bytes", c.name, PHOS_MANIFEST_MAX);
	if (!yaml_parser_initialize(&parser))
		return phos_errnof(e, ENOMEM, "yaml parser: out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = phos_errnof(e, EBADMSG, "%s:%lu: YAML error: %s", c.name,
				 (unsigned long)parser.problem_mark.line + 1,
				 parser.problem ? parser.problem : "unknown");
		yaml_parser_delete(&parser);
		return rc;
	}
	c.doc = &doc;
	rc = parse_doc(&c, m);
	if (rc == 0) {
		/* Exactly one document: a second one would be ignored data. */
		yaml_document_t doc2;

		if (yaml_parser_load(&parser, &doc2)) {
			if (yaml_document_get_root_node(&doc2))
				rc = bad(&c, NULL, "more than one YAML document");
			yaml_document_delete(&doc2);
		} else {
			rc = bad(&c, NULL, "trailing garbage after the manifest");
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (rc < 0)
		phos_manifest_free(m);
	return rc;
}

/* ---- key, MAC, hashes --------------------------------------------------- */

int phos_key_set(struct phos_key *k, const void *bytes, size_t len, struct phos_err *e)
{
	if (len < PHOS_KEY_MIN || len > PHOS_KEY_MAX)
		return phos_errnof(e, EINVAL, "key must be %d to %d bytes, not %zu",
				   PHOS_KEY_MIN, PHOS_KEY_MAX, len);
	memcpy(k->bytes, bytes, len);
	k->len = len;
	return 0;
}

void phos_key_clear(struct phos_key *k)
{
	if (!k)
		return;
	OPENSSL_cleanse(k->bytes, sizeof(k->bytes));
	k->len = 0;
}

int phos_key_load(struct phos_key *k, const char *path, struct phos_err *e)
{
	unsigned char buf[PHOS_KEY_MAX + 1];
	struct stat st;
	size_t got = 0;
	int fd, rc = -1;

	phos_key_clear(k);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0)
		return phos_errnof(e, errno, "key file %s: %s%s", path, strerror(errno),
				   errno == ELOOP ? " (a symlink is not accepted)" :
				   errno == ENOENT ? " (create it: head -c 64 /dev/urandom > FILE; chmod 0600 FILE)" : "");
	if (fstat(fd, &st) < 0) {
		phos_errnof(e, errno, "key file %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		phos_errnof(e, EINVAL, "key file %s is not a regular file", path);
		goto out;
	}
	if (st.st_uid != 0 || (st.st_mode & 077)) {
		phos_errnof(e, EPERM, "key file %s is owned by uid %u with mode %04o; it must be owned by root "
			    "and readable by root only: chown root:root %s && chmod 0600 %s",
			    path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), path, path);
		goto out;
	}
	while (got < sizeof(buf)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			phos_errnof(e, errno, "key file %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got < PHOS_KEY_MIN || got > PHOS_KEY_MAX) {
		phos_errnof(e, EINVAL, "key file %s holds %zu%s bytes; it must hold %d to %d "
			    "(head -c 64 /dev/urandom > %s)", path, got, got > PHOS_KEY_MAX ? "+" : "",
			    PHOS_KEY_MIN, PHOS_KEY_MAX, path);
		goto out;
	}
	memcpy(k->bytes, buf, got);
	k->len = got;
	rc = 0;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

int phos_mac_compute(const struct phos_key *k, const void *buf, size_t len,
		     unsigned char mac[PHOS_MAC_LEN], struct phos_err *e)
{
	unsigned int mlen = 0;

	if (!k || k->len == 0)
		return phos_errnof(e, EINVAL, "no node key loaded");
	if (!HMAC(EVP_sha256(), k->bytes, (int)k->len, buf, len, mac, &mlen) || mlen != PHOS_MAC_LEN)
		return phos_errnof(e, EIO, "HMAC-SHA256 failed (OpenSSL)");
	return 0;
}

int phos_gpumem_key(const struct phos_key *k, const struct phos_image_id *id, uint64_t gen,
		    uint64_t *key, struct phos_err *e)
{
	unsigned char mac[PHOS_MAC_LEN];
	char msg[64 + PHOS_USER_MAX + 80];
	int len;

	len = snprintf(msg, sizeof(msg), "phos gpumem sums 1\n%s\n%" PRIu32 "\n%" PRIu32 "\n%"
		       PRIu32 "\n%" PRIu64 "\n", id->user, id->job, id->step, id->task, gen);
	if (len < 0 || (size_t)len >= sizeof(msg))
		return phos_errnof(e, EINVAL, "the generation's identity is too long");
	if (phos_mac_compute(k, msg, (size_t)len, mac, e) < 0)
		return -1;
	*key = 0;
	for (int i = 7; i >= 0; i--)
		*key = *key << 8 | mac[i];
	if (!*key)
		*key = 1;
	OPENSSL_cleanse(mac, sizeof(mac));
	return 0;
}

void phos_gpumem_key_env(uint64_t key, char out[PHOS_GPU_SUMS_KEY_ENV_LEN])
{
	snprintf(out, PHOS_GPU_SUMS_KEY_ENV_LEN, "PHOS_GPU_SUMS_KEY=%016" PRIx64, key);
}

void phos_mac_format(const unsigned char mac[PHOS_MAC_LEN], char out[2 * PHOS_MAC_LEN + 2])
{
	hex_format(mac, PHOS_MAC_LEN, out);
	out[2 * PHOS_MAC_LEN] = '\n';
	out[2 * PHOS_MAC_LEN + 1] = '\0';
}

int phos_mac_check(const struct phos_key *k, const void *buf, size_t len,
		   const char *mac_text, size_t mac_len, struct phos_err *e)
{
	unsigned char want[PHOS_MAC_LEN], got[PHOS_MAC_LEN];

	if (phos_mac_compute(k, buf, len, want, e) < 0)
		return -1;
	if (mac_len == 2 * PHOS_MAC_LEN + 1 && mac_text[2 * PHOS_MAC_LEN] == '\n')
		mac_len--;
	if (hex_parse(mac_text, mac_len, got, PHOS_MAC_LEN) < 0)
		return phos_errnof(e, EKEYREJECTED, "%s is malformed (want 64 hex digits)",
				   PHOS_MANIFEST_MAC_NAME);
	if (CRYPTO_memcmp(want, got, PHOS_MAC_LEN) != 0)
		return phos_errnof(e, EKEYREJECTED, "%s does not match %s: the manifest was changed "
				   "or written with another node key", PHOS_MANIFEST_MAC_NAME,
				   PHOS_MANIFEST_NAME);
	return 0;
}

int phos_sha256_fd(int fd, unsigned char sha[PHOS_SHA256_LEN], uint64_t *size)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t bufsz = 1 << 20;
	unsigned char *buf = malloc(bufsz);
	uint64_t total = 0;
	unsigned int mlen = 0;
	int rc = -1, err = EIO;

	if (!ctx || !buf) {
		err = ENOMEM;
		goto out;
	}
	if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		goto out;
	for (;;) {
		ssize_t n = read(fd, buf, bufsz);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = errno;
			goto out;
		}
		if (n == 0)
			break;
		if (!EVP_DigestUpdate(ctx, buf, (size_t)n))
			goto out;
		total += (uint64_t)n;
	}
	if (!EVP_DigestFinal_ex(ctx, sha, &mlen) || mlen != PHOS_SHA256_LEN)
		goto out;
	if (size)
		*size = total;
	rc = 0;
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	if (rc < 0)
		errno = err;
	return rc;
}

struct blocks {
	int fd;
	uint64_t size, block, n;
	uint64_t next;			/* next piece to hash (atomic) */
	unsigned char (*sha)[PHOS_SHA256_LEN];
	int err;			/* first error (atomic) */
};

static void *blocks_worker(void *arg)
{
	struct blocks *b = arg;
	unsigned char *buf = malloc(b->block);
	int e = buf ? 0 : ENOMEM;

	for (uint64_t i; !e && !__atomic_load_n(&b->err, __ATOMIC_RELAXED) &&
	     (i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED)) < b->n;) {
		uint64_t off = i * b->block;
		size_t len = b->size - off < b->block ? (size_t)(b->size - off) : (size_t)b->block;
		size_t got = 0;
		unsigned int mlen = 0;

		while (got < len) {
			ssize_t r = pread(b->fd, buf + got, len - got, (off_t)(off + got));

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				e = r < 0 ? errno : EIO;	/* shorter than it was */
				break;
			}
			got += (size_t)r;
		}
		if (!e && (!EVP_Digest(buf, len, b->sha[i], &mlen, EVP_sha256(), NULL) ||
			   mlen != PHOS_SHA256_LEN))
			e = EIO;
	}
	if (e)
		__atomic_compare_exchange_n(&b->err, &(int){ 0 }, e, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED);
	free(buf);
	return NULL;
}

int phos_sha256_blocks(int fd, uint64_t size, uint64_t block, unsigned char sha[PHOS_SHA256_LEN])
{
	struct blocks b = { .fd = fd, .size = size, .block = block };
	pthread_t t[16];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned nt = cpus < 2 ? 1 : cpus > 16 ? 16 : (unsigned)cpus, started = 0;
	unsigned int mlen = 0;

	if (block == 0 || block % 4096) {
		errno = EINVAL;
		return -1;
	}
	b.n = size / block + (size % block != 0);
	b.sha = calloc(b.n ? b.n : 1, sizeof(*b.sha));
	if (!b.sha) {
		errno = ENOMEM;
		return -1;
	}
	if (nt > b.n)
		nt = b.n ? (unsigned)b.n : 1;
	for (; started < nt; started++)
		if (pthread_create(&t[started], NULL, blocks_worker, &b) != 0)
			break;
	if (started == 0)
		blocks_worker(&b);	/* no thread: this one */
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	if (!b.err && (!EVP_Digest(b.sha, b.n * PHOS_SHA256_LEN, sha, &mlen, EVP_sha256(), NULL) ||
		       mlen != PHOS_SHA256_LEN))
		b.err = EIO;
	free(b.sha);
	if (b.err) {
		errno = b.err;
		return -1;
	}
	return 0;
}
