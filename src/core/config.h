// SPDX-License-Identifier: Apache-2.0
// Typed configuration from YAML (libyaml) and command-line flags, driven by option tables.
//
// A module declares its options once, as a {0}-terminated array of struct sc_opt: name, type,
// offset of the field in the module's config struct, default (as text, parsed like input), help,
// flags. That one table drives loading, defaults, validation, `--help`, the `/config` JSON dump and
// the reference docs. Loading rejects unknown keys (with a did-you-mean hint), duplicate keys and
// ill-typed values; every error reads "file:line:col: message" with 1-based line and column.
// Scalars are expanded for ${NAME} and ${NAME:-default} before conversion ("$$" is a literal "$");
// an unset variable without a default is an error.
//
// Field types by option type (the struct member at <offset> must have exactly this type):
//   SC_OPT_STR       char *            (owned; NULL when unset and no default)
//   SC_OPT_BOOL      bool              (true/false, case-insensitive)
//   SC_OPT_INT       int64_t           (decimal; bounded by min/max when max > min)
//   SC_OPT_DURATION  uint64_t millis   ("250ms", "30s", "5m", "1h", "1h30m"; a bare 0 is allowed)
//   SC_OPT_SIZE      uint64_t bytes    ("512", "64KiB", "1MiB", "2GiB", also "KB/MB/GB" = 1000^n)
//   SC_OPT_DOUBLE    double            (finite)
//   SC_OPT_ENUM      int               (index into <enums>)
//   SC_OPT_STRLIST   struct sc_strv    (a YAML sequence of scalars; a flag may repeat or use
//   commas) SC_OPT_STRMAP    struct sc_kvv     (a YAML mapping of scalars; a flag takes key=value)
//   SC_OPT_OBJ       the struct <sub> describes, embedded at <offset>
//   SC_OPT_OBJLIST   struct sc_vec     (a sequence of mappings, each an element of <sub_size>
//   bytes) SC_OPT_INLINE    the keys of <sub> appear at this level; fields embedded at <offset>
#ifndef SC_CORE_CONFIG_H
#define SC_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "core/value.h" /* the value syntax options use */

enum sc_opt_type {
    SC_OPT_END = 0,
    SC_OPT_STR,
    SC_OPT_BOOL,
    SC_OPT_INT,
    SC_OPT_DURATION,
    SC_OPT_SIZE,
    SC_OPT_DOUBLE,
    SC_OPT_ENUM,
    SC_OPT_STRLIST,
    SC_OPT_STRMAP,
    SC_OPT_OBJ,
    SC_OPT_OBJLIST,
    SC_OPT_INLINE,
};

enum {
    SC_OPT_REQUIRED = 1 << 0,   /* must be set (in the file or by a flag) */
    SC_OPT_SECRET = 1 << 1,     /* redacted in the /config dump */
    SC_OPT_FLAG = 1 << 2,       /* also a command-line flag --<name with '_' as '-'> */
    SC_OPT_FLAG_ONLY = 1 << 3,  /* a flag that is not a config-file key (implies SC_OPT_FLAG) */
    SC_OPT_POSITIONAL = 1 << 4, /* a flag also given as a bare word on the command line; bare
                                   words fill such options in table order (needs SC_OPT_FLAG) */
    SC_OPT_RESTART = 1 << 5,    /* changes only with a restart: a reload that changes it is
                                   refused (sc_config_check_reload); the default is reloadable */
};

struct sc_opt;

/* Called after an option's value was parsed, with the field's address. Returns 0, or an error
 * with a new message in <*err> (no position: the loader prefixes the value's position). */
typedef int (*sc_opt_check_cb)(void *field, char **err);

struct sc_opt {
    const char *name;
    enum sc_opt_type type;
    size_t offset;
    const char *def;
    const char *help;
    unsigned flags;
    const char *const *enums; /* SC_OPT_ENUM: NULL-terminated value names */
    const struct sc_opt *sub; /* SC_OPT_OBJ / OBJLIST / INLINE: the element's table */
    size_t sub_size;          /* SC_OPT_OBJLIST: sizeof one element */
    int64_t min, max;         /* INT, DURATION (ms), SIZE, DOUBLE, STRLIST/OBJLIST counts:
                                 bounds apply when max > min */
    sc_opt_check_cb check;
    const char *flag_alias; /* optional single-letter flag, e.g. "c" for -c */
};

struct sc_strv {
    char **v;
    size_t n;
};

struct sc_kv {
    char *key;
    char *value;
};

struct sc_kvv {
    struct sc_kv *v;
    size_t n;
};

struct sc_vec {
    void *v; /* n elements of the table's sub_size bytes */
    size_t n;
};

/* Sets every field of <obj> described by <table> to its default (zero when none). <obj> must be
 * zeroed or previously freed with sc_config_free. */
void sc_config_defaults(const struct sc_opt *table, void *obj);

/* Loads YAML <text> (<len> bytes, named <name> in messages) into <obj> on top of its current
 * values: keys present replace fields, absent keys keep them. An empty document sets nothing.
 * Returns 0, or SC_ECONFIG with a new "name:line:col: message" in <*err>; on error <obj> may be
 * partly written and must still be freed with sc_config_free. Input is capped at 4 MiB and at a
 * bounded number of nodes visited (alias expansion included). */
int sc_config_load_string(const struct sc_opt *table, void *obj, const char *name, const char *text,
                          size_t len, char **err);

/* Reads <path> and loads it as sc_config_load_string does. Unreadable files are errors too. */
int sc_config_load_file(const struct sc_opt *table, void *obj, const char *path, char **err);

/* Sets the top-level option whose flag name is <flag> (without dashes, '-' or '_' alike) from the
 * text <value>, as the command line does; lists append, maps add key=value. Returns 0,
 * -ENOENT when no option has that flag (with a did-you-mean in <*err>), or SC_ECONFIG with
 * "--flag: message" in <*err>. */
int sc_config_set_flag(const struct sc_opt *table, void *obj, const char *flag, const char *value,
                       char **err);

/* Returns the option whose flag is <flag> (or whose flag_alias is <flag>), or NULL. Booleans as
 * flags take no value. */
const struct sc_opt *sc_config_find_flag(const struct sc_opt *table, const char *flag);

/* Checks that every SC_OPT_REQUIRED option of <table> is set. Returns 0 or SC_ECONFIG. */
int sc_config_check_required(const struct sc_opt *table, const void *obj, const char *name,
                             char **err);

/* Frees everything the loader allocated inside <obj> and zeroes those fields. NULL-safe. */
void sc_config_free(const struct sc_opt *table, void *obj);

/* Makes <dst> a deep copy of the string list <src> (for a struct that outlives its config). */
void sc_config_strv_copy(struct sc_strv *dst, const struct sc_strv *src);

/* Frees a list made by sc_config_strv_copy (or the loader) and empties it. */
void sc_config_strv_free(struct sc_strv *v);

/* Whether the configuration <next> may replace <cur> at a reload (both structs <table>
 * describes): every option flagged SC_OPT_RESTART must hold the same value, compared in depth
 * (an object or a list with all it holds). A list of objects whose element table has such
 * options must keep its length, and each element is checked in turn. Returns 0, or SC_ECONFIG
 * with "<key path> changes only with a restart" in a new <*err> (the first option that changed;
 * values are never quoted, so secrets stay out of messages). */
int sc_config_check_reload(const struct sc_opt *table, const void *cur, const void *next,
                           char **err);

/* Returns a new JSON object with the effective configuration, secrets as "<redacted>". */
json_t *sc_config_dump(const struct sc_opt *table, const void *obj);

/* Writes the options as `--help` text (flags first, then file keys, nested keys indented). */
void sc_config_help(const struct sc_opt *table, FILE *out);

/* Writes the options as a Markdown reference table (key, type, default, flag, description). */
void sc_config_doc(const struct sc_opt *table, FILE *out);

#endif
