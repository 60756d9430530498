// SPDX-License-Identifier: Apache-2.0
// What the files of the configuration module share and nothing else includes: the limits every
// walk over a table obeys, small table predicates, and the helpers the loader (config.c), the
// value syntax (value.c), the flags (config_flags.c) and the dump and reference generators
// (config_doc.c) have in common. Invariant: tables are code, so a malformed table aborts at once
// (bad_table); input never does.
#ifndef SC_CORE_CONFIG_INT_H
#define SC_CORE_CONFIG_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/buf.h"
#include "core/config.h"

#define MAX_EXPAND ((size_t)16 << 20) /* one scalar after ${VAR} expansion */
/* Data-following recursions (free, dump, required) go as deep as a load could nest (MAX_DEPTH
 * YAML levels) plus embedded objects; deeper means a table that refers to itself through OBJ or
 * INLINE, which no C struct can match. */
#define MAX_TABLE_DEPTH 128
#define HELP_DEPTH 8 /* help and doc stop here, so self-referencing OBJLIST tables still print */
#define MSG_MAX 4096

static inline _Noreturn void bad_table(const struct sc_opt *o, const char *why)
{
    /* Tables are code, not input: a bad one is a bug that every test run catches at once. */
    fprintf(stderr, "sidecar: config table bug at option \"%s\": %s\n", o ? o->name : "?", why);
    abort();
}

static inline bool bounded(const struct sc_opt *o)
{
    return o->max > o->min;
}

static inline bool is_flag(const struct sc_opt *o)
{
    return (o->flags & (SC_OPT_FLAG | SC_OPT_FLAG_ONLY)) != 0;
}

static inline bool is_key(const struct sc_opt *o)
{
    return (o->flags & SC_OPT_FLAG_ONLY) == 0;
}

static inline void *at_off(void *base, size_t off)
{
    return (char *)base + off;
}

static inline const void *cat_off(const void *base, size_t off)
{
    return (const char *)base + off;
}

static inline char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
}

/* Names gathered for a did-you-mean suggestion (borrowed from the tables). */
struct names {
    const char **v;
    size_t n;
};

/* ---- the YAML tree (config.c builds and loads it; ytree.c gives it to other modules) ---- */

#define MAX_NODES 1000000

/* A string-keyed hash set (anchors, keys seen in one mapping). Keys are borrowed. */
struct hent {
    const char *k;
    size_t len;
    const void *v;
};

struct hset {
    struct hent *e;
    size_t cap; /* 0 or a power of two */
    size_t n;
};

enum { N_SCALAR, N_SEQ, N_MAP, N_ALIAS };
enum { ST_PLAIN, ST_SINGLE, ST_OTHER };

struct node {
    unsigned char kind;
    unsigned char style;
    bool null;          /* plain "", "~" or "null" without a !!str tag: "not set" */
    bool one_line;      /* a scalar that starts and ends on one line */
    bool raw;           /* translated from another format: no ${VAR} expansion */
    uint32_t line, col; /* libyaml's 0-based start mark (input <= 4 MiB, so these fit) */
    char *anchor;       /* registered once the node is complete, so aliases never form cycles */
    union {
        struct {
            char *s; /* NUL-terminated; NUL bytes inside are rejected while building */
            size_t len;
        } sc;
        struct {
            struct node **v; /* a mapping holds key, value, key, value... */
            size_t n, cap;
        } co;
        const struct node *target;
    } u;
};

#define CHUNK_NODES 256

struct chunk {
    struct chunk *next;
    size_t used;
    struct node nodes[CHUNK_NODES];
};

struct tree {
    struct chunk *chunks;
    size_t count;
    struct node *root;
    struct node **docs; /* every document of a stream (sc_config_tree_parse) */
    size_t ndocs;
    struct hset anchors;
};

struct ld {
    const char *name;
    char *err; /* the first error, complete with its position */
    size_t visits;
    size_t bytes;
};

/* Returns a new node of <kind> at the 0-based <line>, <col> in <t>, or NULL past MAX_NODES. */
struct node *sc_config_tree_node(struct tree *t, int kind, size_t line, size_t col);

/* Parses every document of the YAML stream <text> into <t> (zeroed; its docs in order). Returns 0,
 * or SC_ECONFIG with "name:line:col: message" in a new <*err>; <t> must be freed either way. */
int sc_config_tree_parse(const char *name, const char *text, size_t len, struct tree *t,
                         char **err);

/* Loads the mapping <root> (of any tree) into <obj> as sc_config_load_string loads a document;
 * errors carry <name> and the nodes' own positions. */
int sc_config_tree_load(const struct sc_opt *table, void *obj, const char *name,
                        const struct node *root, char **err);

/* Frees every node of <t> and zeroes it. */
void sc_config_tree_free(struct tree *t);

/* ---- value syntax (value.c) ---- */

/* Parses "true" or "false" (any case). Returns 0 or -EINVAL. */
int sc_value_parse_bool(const char *s, bool *out);

/* Parses a decimal integer with an optional sign within int64_t. Returns 0 or -EINVAL. */
int sc_value_parse_int(const char *s, int64_t *out);

/* Parses a finite decimal number (no "inf", "nan" or hex floats). Returns 0 or -EINVAL. */
int sc_value_parse_double(const char *s, double *out);

/* Writes the shortest exact rendering of <bytes> ("512", "64KiB", "10MB") into <out> (>= 32);
 * binary units win ties. */
void sc_value_render_size(uint64_t bytes, char *out);

/* Writes <v> in decimal to <out> (at least 21 bytes, not terminated); returns the length. */
size_t sc_value_put_u64(char *out, uint64_t v);

/* ---- the loader's helpers (config.c) ---- */

/* Returns the buffer's contents as a new NUL-terminated string and leaves the buffer empty. */
char *sc_config_buf_take(struct sc_buf *b);

/* Appends <enums> (NULL-terminated) separated by <sep> to <m>. */
void sc_config_append_enums(struct sc_buf *m, const char *const *enums, const char *sep);

/* Appends <s> quoted for a message, cut at a bounded length, control bytes escaped. */
void sc_config_append_quoted(struct sc_buf *b, const char *s);

/* Returns 0 when <n> elements are within <o>'s bounds, else SC_ECONFIG with a message in <m>. */
int sc_config_check_count(const struct sc_opt *o, size_t n, struct sc_buf *m);

/* Frees the string at <p> (wiping it first for a SECRET option) and sets it to NULL. */
void sc_config_free_str(const struct sc_opt *o, char **p);

/* Sets <key> to <value> (both taken), replacing the value of an existing key. */
void sc_config_kvv_set(const struct sc_opt *o, struct sc_kvv *m, char *key, char *value);

/* Runs <o>'s check on <field>, if it has one. Returns 0, or SC_ECONFIG with the check's message
 * (or "invalid value") appended to <m>. */
int sc_config_run_check(const struct sc_opt *o, void *field, struct sc_buf *m);

/* Parses <s> into the field of a BOOL, INT, DURATION, SIZE, DOUBLE or ENUM option, bounds
 * included. Returns 0, or SC_ECONFIG with a message appended to <m>. */
int sc_config_set_scalar(const struct sc_opt *o, void *field, const char *s, struct sc_buf *m);

/* Appends <s> (taken) to <v>. */
void sc_config_strv_push(struct sc_strv *v, char *s);

/* ---- flags (config_flags.c) ---- */

/* Returns "--<name>" with underscores as dashes (returns new). */
char *sc_config_flag_name(const char *name);

#endif
