// SPDX-License-Identifier: Apache-2.0
// Read and build access to the configuration loader's YAML tree, for front ends that translate
// other people's formats (an Envoy bootstrap, Kubernetes-style resources) into a role's own
// options. A parsed tree keeps every document of a stream with the 1-based line and column of
// each node; a built tree holds nodes that carry the position of the input they came from, so the
// option tables that load it report errors at the user's own text. Invariant: the same limits as
// the loader (4 MiB of input, 1,000,000 nodes, 64 levels); aliases are followed by the readers and
// expanded by sc_ytree_copy within the node limit, never into cycles.
#ifndef SC_CORE_YTREE_H
#define SC_CORE_YTREE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/config.h"

struct sc_ytree;
struct sc_ynode;

enum sc_ykind { SC_Y_NULL, SC_Y_STR, SC_Y_SEQ, SC_Y_MAP };

/* Parses the YAML (or JSON) stream <text> of <len> bytes, named <name> in messages. Returns 0 and
 * a new tree in <*out>, or SC_ECONFIG with "name:line:col: message" in a new <*err>. */
int sc_ytree_parse(const char *name, const char *text, size_t len, struct sc_ytree **out,
                   char **err);

/* Returns a new, empty tree to build into, named <name> (copied). */
struct sc_ytree *sc_ytree_new(const char *name);

/* Frees <t> and every node in it. NULL-safe. */
void sc_ytree_free(struct sc_ytree *t);

const char *sc_ytree_name(const struct sc_ytree *t);
size_t sc_ytree_ndocs(const struct sc_ytree *t);
/* Returns document <i> of a parsed stream (borrowed from <t>). */
const struct sc_ynode *sc_ytree_doc(const struct sc_ytree *t, size_t i);

/* The kind of <n> (aliases followed): a plain "", "~" or "null" is SC_Y_NULL. */
enum sc_ykind sc_ynode_kind(const struct sc_ynode *n);
/* The text of a scalar (aliases followed), or NULL for a list or a mapping. */
const char *sc_ynode_str(const struct sc_ynode *n);
/* Whether a scalar was quoted in the source (a quoted "80" is a string, not a number). */
bool sc_ynode_quoted(const struct sc_ynode *n);
/* 1-based position of <n> itself (of the alias, not its target). */
unsigned sc_ynode_line(const struct sc_ynode *n);
unsigned sc_ynode_col(const struct sc_ynode *n);
/* Elements of a list, or pairs of a mapping (0 for a scalar). */
size_t sc_ynode_count(const struct sc_ynode *n);
/* Element <i> of a list. */
const struct sc_ynode *sc_ynode_at(const struct sc_ynode *n, size_t i);
/* Key and value of pair <i> of a mapping; the key's text is sc_ynode_str(key). */
const struct sc_ynode *sc_ynode_key(const struct sc_ynode *n, size_t i);
const struct sc_ynode *sc_ynode_val(const struct sc_ynode *n, size_t i);
/* The value of <key> in mapping <n>, or NULL (also when <n> is not a mapping). */
const struct sc_ynode *sc_ynode_get(const struct sc_ynode *n, const char *key);

/* Builders: each returns a new node of <t> placed at <at>'s position (1:1 when <at> is NULL), or
 * NULL past the node limit. A built string is taken literally (no ${VAR} expansion). */
struct sc_ynode *sc_ytree_map(struct sc_ytree *t, const struct sc_ynode *at);
struct sc_ynode *sc_ytree_seq(struct sc_ytree *t, const struct sc_ynode *at);
struct sc_ynode *sc_ytree_str(struct sc_ytree *t, const struct sc_ynode *at, const char *s);
/* Deep copy of <src> (from any tree) into <t>, aliases expanded, positions and ${VAR} expansion
 * kept; NULL past the node limit. */
struct sc_ynode *sc_ytree_copy(struct sc_ytree *t, const struct sc_ynode *src);
/* Appends <v> (a node of <t>) to list <seq>, or the pair <key> (copied), <v> to mapping <map>;
 * the key takes <v>'s position. Returns 0, or -ENOMEM past the node limit. */
int sc_ynode_push(struct sc_ytree *t, struct sc_ynode *seq, struct sc_ynode *v);
int sc_ynode_put(struct sc_ytree *t, struct sc_ynode *map, const char *key, struct sc_ynode *v);
/* Replaces the value of pair <i> of mapping <map> with <v> (both of the tree being built). */
void sc_ynode_replace(struct sc_ynode *map, size_t i, struct sc_ynode *v);
/* The value of <key> in mapping <map> of a tree being built, for adding to it, or NULL. */
struct sc_ynode *sc_ynode_get_mut(struct sc_ynode *map, const char *key);

/* Loads mapping <root> into <obj> through <table> as sc_config_load_string loads a document, with
 * errors at the nodes' positions under <name>. Returns 0 or SC_ECONFIG with a new <*err>. */
int sc_ytree_load(const struct sc_opt *table, void *obj, const char *name,
                  const struct sc_ynode *root, char **err);

/* Returns <n> as new JSON (scalars as strings, null as null), which the loader reads back. */
json_t *sc_ynode_json(const struct sc_ynode *n);

#endif
