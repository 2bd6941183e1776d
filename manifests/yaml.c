/* YAML to JSON through libyaml's document API.  The document is small (a
 * spec or a config), so loading it whole is fine; depth is bounded so that a
 * hostile file cannot recurse without limit.
 *
 * libyaml is loaded for each file and unloaded after it: ferryd reads YAML
 * only when it starts, and keeps no page of the parser while it runs. */
#include "ferry/yaml.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "ferry/lazylib.h"

#define LIBYAML_SONAME "libyaml-0.so.2"

/* libyaml's functions while it is loaded; `lock` makes one file at a time
 * load, use and unload it */
static struct {
	__typeof__(yaml_parser_initialize) *parser_initialize;
	__typeof__(yaml_parser_set_input_file) *parser_set_input_file;
	__typeof__(yaml_parser_load) *parser_load;
	__typeof__(yaml_parser_delete) *parser_delete;
	__typeof__(yaml_document_get_node) *document_get_node;
	__typeof__(yaml_document_get_root_node) *document_get_root_node;
	__typeof__(yaml_document_delete) *document_delete;
} y;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

#define YAML_DEPTH_MAX 16
/* Aliases let a few lines name millions of nodes ("billion laughs"). */
#define YAML_NODES_MAX 100000

static bool plain_int(const char *s, long long *v)
{
	char *end;
	if (!*s || (!(*s >= '0' && *s <= '9') && *s != '-'))
		return false;
	errno = 0;
	*v = strtoll(s, &end, 10);
	return !*end && !errno;
}

/* Where a node sits, as a JSON path, for error messages. */
typedef struct walk {
	yaml_document_t *doc;
	const char *file;
	json_t *lines; /* JSON path -> line, or NULL */
	size_t nodes;  /* converted so far: aliases can make a small file expand */
} walk;

static ferry_err node_to_json(walk *w, yaml_node_t *n, int depth, const char *jpath, json_t **out,
			      ferry_status *st);

static ferry_err scalar_to_json(walk *w, yaml_node_t *n, json_t **out, ferry_status *st)
{
	const char *s = (const char *)n->data.scalar.value;
	long long v;

	if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		if (plain_int(s, &v))
			*out = json_integer(v);
		else if (!strcmp(s, "true") || !strcmp(s, "false"))
			*out = json_boolean(!strcmp(s, "true"));
		else if (!strcmp(s, "null") || !strcmp(s, "~") || !*s)
			*out = json_null();
		else
			*out = json_stringn(s, n->data.scalar.length);
	} else {
		*out = json_stringn(s, n->data.scalar.length);
	}
	if (!*out)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: not UTF-8 text", w->file,
				  (unsigned long)n->start_mark.line + 1);
	return FERRY_OK;
}

static ferry_err seq_to_json(walk *w, yaml_node_t *n, int depth, const char *jpath, json_t **out,
			     ferry_status *st)
{
	json_t *arr = json_array();
	size_t i = 0;

	for (yaml_node_item_t *it = n->data.sequence.items.start; arr && it < n->data.sequence.items.top; it++, i++) {
		char child[512];
		json_t *v;
		ferry_err e;
		snprintf(child, sizeof(child), "%s[%zu]", jpath, i);
		if ((e = node_to_json(w, y.document_get_node(w->doc, *it), depth + 1, child, &v, st))) {
			json_decref(arr);
			return e;
		}
		json_array_append_new(arr, v);
	}
	return (*out = arr) ? FERRY_OK : ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
}

static ferry_err map_to_json(walk *w, yaml_node_t *n, int depth, const char *jpath, json_t **out,
			     ferry_status *st)
{
	json_t *obj = json_object();

	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; obj && p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = y.document_get_node(w->doc, p->key);
		unsigned long line = (unsigned long)k->start_mark.line + 1;
		char child[512];
		json_t *v;
		ferry_err e;

		if (k->type != YAML_SCALAR_NODE) {
			json_decref(obj);
			return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: keys must be plain text", w->file, line);
		}
		const char *key = (const char *)k->data.scalar.value;
		if (json_object_get(obj, key)) {
			json_decref(obj);
			return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: key \"%s\" appears twice", w->file, line, key);
		}
		snprintf(child, sizeof(child), "%s%s%s", jpath, *jpath ? "." : "", key);
		if (w->lines)
			json_object_set_new(w->lines, child, json_integer((json_int_t)line));
		if ((e = node_to_json(w, y.document_get_node(w->doc, p->value), depth + 1, child, &v, st))) {
			json_decref(obj);
			return e;
		}
		json_object_set_new(obj, key, v);
	}
	return (*out = obj) ? FERRY_OK : ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
}

static ferry_err node_to_json(walk *w, yaml_node_t *n, int depth, const char *jpath, json_t **out,
			      ferry_status *st)
{
	if (depth > YAML_DEPTH_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: nested too deeply", w->file,
				  (unsigned long)n->start_mark.line + 1);
	if (++w->nodes > YAML_NODES_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: more than %d values (aliases expanding?)", w->file,
				  (unsigned long)n->start_mark.line + 1, YAML_NODES_MAX);
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return scalar_to_json(w, n, out, st);
	case YAML_SEQUENCE_NODE:
		return seq_to_json(w, n, depth, jpath, out, st);
	case YAML_MAPPING_NODE:
		return map_to_json(w, n, depth, jpath, out, st);
	case YAML_NO_NODE:
		break;
	}
	return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: empty node", w->file, (unsigned long)n->start_mark.line + 1);
}

static ferry_err to_json(const char *path, json_t **out, json_t **lines, ferry_status *st)
{
	FILE *f = fopen(path, "rb");
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	walk w = {.doc = &doc, .file = path};
	ferry_err e;

	if (!f)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(errno));
	if (!y.parser_initialize(&parser)) {
		fclose(f);
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot start the YAML parser");
	}
	y.parser_set_input_file(&parser, f);
	if (!y.parser_load(&parser, &doc)) {
		e = ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: %s", path, (unsigned long)parser.problem_mark.line + 1,
			       parser.problem ? parser.problem : "YAML error");
		y.parser_delete(&parser);
		fclose(f);
		return e;
	}
	if (lines)
		w.lines = *lines = json_object();
	root = y.document_get_root_node(&doc);
	if (!root)
		e = ferry_fail(st, FERRY_E_MALFORMED, "%s: the file is empty", path);
	else
		e = node_to_json(&w, root, 0, "", out, st);
	if (e && lines) {
		json_decref(*lines);
		*lines = NULL;
	}
	y.document_delete(&doc);
	y.parser_delete(&parser);
	fclose(f);
	return e;
}

ferry_err ferry_yaml_to_json(const char *path, json_t **out, json_t **lines, ferry_status *st)
{
	const ferry_lazy_sym syms[] = {
		{"yaml_parser_initialize", (void **)&y.parser_initialize},
		{"yaml_parser_set_input_file", (void **)&y.parser_set_input_file},
		{"yaml_parser_load", (void **)&y.parser_load},
		{"yaml_parser_delete", (void **)&y.parser_delete},
		{"yaml_document_get_node", (void **)&y.document_get_node},
		{"yaml_document_get_root_node", (void **)&y.document_get_root_node},
		{"yaml_document_delete", (void **)&y.document_delete},
	};
	char why[200];
	ferry_err e;

	pthread_mutex_lock(&lock);
	void *h = ferry_lazy_open(LIBYAML_SONAME, syms, sizeof(syms) / sizeof(syms[0]), why, sizeof(why));
	if (!h)
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", path, why);
	else {
		/* every message is formatted before the library goes: libyaml's
		 * own texts (parser.problem) live in it */
		e = to_json(path, out, lines, st);
		dlclose(h);
	}
	pthread_mutex_unlock(&lock);
	return e;
}
