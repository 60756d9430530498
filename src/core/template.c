// SPDX-License-Identifier: Apache-2.0
// The template engine: a lexer and recursive-descent parser for a Go text/template subset into a
// small tree, and an evaluator over jansson values. Invariants: parsing either returns a complete
// tree or a positioned error; evaluation never reads outside the tree or the data, nests no deeper
// than the parser allowed, and writes only through the caller's capped buffer.
#include "core/template.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "core/alloc.h"
#include "core/error.h"

#define TMPL_MAX_INPUT (1u << 20)
#define TMPL_MAX_DEPTH 64
#define TMPL_MAX_ARGS 16

enum node_kind { N_TEXT, N_ACTION, N_IF, N_RANGE, N_WITH };
enum arg_kind { A_DOT, A_FIELD, A_VAR, A_FUNC, A_LIT, A_PIPE };

struct pipe;

struct arg {
    enum arg_kind kind;
    int line, col;
    char *name;    /* A_VAR without '$', A_FUNC */
    char **fields; /* A_FIELD / A_VAR / A_PIPE: the chain that follows */
    size_t nfields;
    json_t *lit;       /* A_LIT */
    struct pipe *pipe; /* A_PIPE */
};

struct cmd {
    struct arg *args;
    size_t n;
};

struct pipe {
    int line, col;
    struct cmd *cmds;
    size_t n;
    char *decl[2]; /* range $k, $v := / $x := */
    size_t ndecl;
};

struct node {
    enum node_kind kind;
    int line, col;
    char *text; /* N_TEXT */
    size_t len;
    struct pipe *pipe;
    struct node *body;
    struct node *els;
    struct node *next;
};

struct sc_template {
    char *name;
    struct node *root;
    char **extra;
    size_t nextra;
};

static const char *const builtins[] = {
    "base64Encode", "base64Decode", "base64", "toJSON", "toJSONPretty", "default",
    "env",          "quote",        "upper",  "lower",  "trimSpace",    "index",
    "len",          "eq",           "ne",     "not",    "and",          "or",
    "join",         "printf",       "print",  NULL,
};

/* ---- base64 ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int sc_template_base64_encode(struct sc_buf *out, const void *p, size_t n)
{
    const unsigned char *s = p;
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n) {
            v |= (unsigned)s[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= s[i + 2];
        }
        q[0] = b64chars[(v >> 18) & 63];
        q[1] = b64chars[(v >> 12) & 63];
        q[2] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? b64chars[v & 63] : '=';
        int rc = sc_buf_append(out, q, 4);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

int sc_template_base64_decode(struct sc_buf *out, const char *s, size_t n)
{
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            break;
        }
        if (s[i] == '\n' || s[i] == '\r') {
            continue;
        }
        int v = b64val(s[i]);
        if (v < 0) {
            return -EINVAL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            int rc = sc_buf_append(out, &c, 1);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* ---- data ---- */

static json_t *yaml_node_json(yaml_document_t *d, yaml_node_t *n, int depth, size_t *budget)
{
    if (!n || depth > TMPL_MAX_DEPTH || *budget == 0) {
        return NULL;
    }
    (*budget)--;
    switch (n->type) {
    case YAML_SCALAR_NODE: {
        json_t *v = json_stringn((const char *)n->data.scalar.value, n->data.scalar.length);
        return v ? v : json_string("");
    }
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            json_t *v = yaml_node_json(d, yaml_document_get_node(d, *it), depth + 1, budget);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
             pr++) {
            yaml_node_t *k = yaml_document_get_node(d, pr->key);
            json_t *v = yaml_node_json(d, yaml_document_get_node(d, pr->value), depth + 1, budget);
            if (!k || k->type != YAML_SCALAR_NODE || !v) {
                json_decref(v);
                json_decref(o);
                return NULL;
            }
            char *key = sc_strndup((const char *)k->data.scalar.value, k->data.scalar.length);
            json_object_set_new(o, key, v);
            sc_free(key);
        }
        return o;
    }
    default:
        return NULL;
    }
}

json_t *sc_template_data_parse(const char *text, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &je);
    if (j) {
        return j;
    }
    yaml_parser_t p;
    yaml_document_t d;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (len <= TMPL_MAX_INPUT * 16 && yaml_parser_load(&p, &d)) {
        yaml_node_t *root = yaml_document_get_root_node(&d);
        if (root && root->type != YAML_SCALAR_NODE) {
            size_t budget = 100000;
            j = yaml_node_json(&d, root, 0, &budget);
        }
        yaml_document_delete(&d);
    }
    yaml_parser_delete(&p);
    if (!j) {
        j = json_stringn(text, len);
    }
    return j ? j : json_string("");
}

/* ---- freeing ---- */

static void pipe_free(struct pipe *p);

static void arg_cleanup(struct arg *a)
{
    sc_free(a->name);
    for (size_t i = 0; i < a->nfields; i++) {
        sc_free(a->fields[i]);
    }
    sc_free(a->fields);
    if (a->lit) {
        json_decref(a->lit);
    }
    pipe_free(a->pipe);
}

static void pipe_free(struct pipe *p)
{
    if (!p) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        for (size_t j = 0; j < p->cmds[i].n; j++) {
            arg_cleanup(&p->cmds[i].args[j]);
        }
        sc_free(p->cmds[i].args);
    }
    sc_free(p->cmds);
    sc_free(p->decl[0]);
    sc_free(p->decl[1]);
    sc_free(p);
}

static void nodes_free(struct node *n)
{
    while (n) {
        struct node *next = n->next;
        sc_free(n->text);
        pipe_free(n->pipe);
        nodes_free(n->body);
        nodes_free(n->els);
        sc_free(n);
        n = next;
    }
}

void sc_template_free(struct sc_template *t)
{
    if (!t) {
        return;
    }
    nodes_free(t->root);
    for (size_t i = 0; i < t->nextra; i++) {
        sc_free(t->extra[i]);
    }
    sc_free(t->extra);
    sc_free(t->name);
    sc_free(t);
}

/* ---- parser ---- */

struct parser {
    const char *name;
    const char *s;
    size_t len;
    size_t pos;
    int depth;
    char *err;
    const struct sc_template *t;
};

static void pos_of(const struct parser *p, size_t at, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->s[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

__attribute__((format(printf, 3, 4))) static int perr(struct parser *p, size_t at, const char *fmt,
                                                      ...)
{
    if (p->err) {
        return SC_ECONFIG;
    }
    int line, col;
    pos_of(p, at, &line, &col);
    va_list ap;
    va_start(ap, fmt);
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    p->err = sc_asprintf("%s:%d:%d: %s", p->name, line, col, msg);
    return SC_ECONFIG;
}

/* Writes <c> for a message: itself when printable ASCII, else \xHH, so messages stay one line. */
static const char *repr(char c, char out[8])
{
    if (c >= 0x21 && c < 0x7f) {
        out[0] = c;
        out[1] = '\0';
    } else {
        snprintf(out, 8, "\\x%02x", (unsigned char)c);
    }
    return out;
}

static bool known_func(const struct parser *p, const char *name)
{
    for (size_t i = 0; builtins[i]; i++) {
        if (strcmp(builtins[i], name) == 0) {
            return true;
        }
    }
    for (size_t i = 0; i < p->t->nextra; i++) {
        if (strcmp(p->t->extra[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static void skip_space(struct parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r')) {
        p->pos++;
    }
}

/* True at the end of an action: "}}" or " -}}" (the latter consumed separately). */
static bool at_close(const struct parser *p)
{
    if (p->pos + 1 < p->len && p->s[p->pos] == '}' && p->s[p->pos + 1] == '}') {
        return true;
    }
    return p->pos + 2 < p->len && p->s[p->pos] == '-' && p->s[p->pos + 1] == '}' &&
           p->s[p->pos + 2] == '}' && p->pos > 0 && isspace((unsigned char)p->s[p->pos - 1]);
}

static bool is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static char *read_ident(struct parser *p)
{
    size_t st = p->pos;
    while (p->pos < p->len && is_ident_char(p->s[p->pos])) {
        p->pos++;
    }
    return sc_strndup(p->s + st, p->pos - st);
}

/* Reads ".a.b.c" field chains that follow an operand. */
static int read_fields(struct parser *p, struct arg *a)
{
    while (p->pos < p->len && p->s[p->pos] == '.' && p->pos + 1 < p->len &&
           is_ident_char(p->s[p->pos + 1])) {
        p->pos++;
        if (a->nfields >= 32) {
            return perr(p, p->pos, "field chain too long");
        }
        a->fields = sc_reallocarray(a->fields, a->nfields + 1, sizeof(char *));
        a->fields[a->nfields++] = read_ident(p);
    }
    return 0;
}

static int read_string(struct parser *p, struct arg *a)
{
    char q = p->s[p->pos];
    size_t st = p->pos++;
    struct sc_buf b;
    sc_buf_init(&b, TMPL_MAX_INPUT);
    int rc = 0;
    while (p->pos < p->len && p->s[p->pos] != q) {
        char c = p->s[p->pos++];
        if (q == '"' && c == '\n') {
            rc = perr(p, st, "newline in string");
            goto out;
        }
        if (q == '"' && c == '\\') {
            if (p->pos >= p->len) {
                break;
            }
            char e = p->s[p->pos++];
            switch (e) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case '\\':
            case '"':
            case '\'':
                c = e;
                break;
            default: {
                char r[8];
                rc = perr(p, p->pos - 2, "unknown escape \\%s in string", repr(e, r));
                goto out;
            }
            }
        }
        sc_buf_append(&b, &c, 1);
    }
    if (p->pos >= p->len) {
        rc = perr(p, st, "unterminated string");
        goto out;
    }
    p->pos++;
    a->kind = A_LIT;
    a->lit = json_stringn(b.p ? b.p : "", b.len);
    if (!a->lit) {
        rc = perr(p, st, "string is not valid UTF-8");
    }
out:
    sc_buf_cleanup(&b);
    return rc;
}

static int parse_pipe(struct parser *p, bool in_paren, bool allow_decl, struct pipe **out);

static int parse_operand(struct parser *p, struct arg *a)
{
    size_t st = p->pos;
    pos_of(p, st, &a->line, &a->col);
    char c = p->s[p->pos];
    if (c == '.') {
        if (p->pos + 1 < p->len && is_ident_char(p->s[p->pos + 1])) {
            a->kind = A_FIELD;
            return read_fields(p, a);
        }
        p->pos++;
        a->kind = A_DOT;
        return 0;
    }
    if (c == '$') {
        p->pos++;
        a->kind = A_VAR;
        a->name = read_ident(p);
        return read_fields(p, a);
    }
    if (c == '"' || c == '`') {
        return read_string(p, a);
    }
    if (c == '(') {
        p->pos++;
        if (++p->depth > TMPL_MAX_DEPTH) {
            return perr(p, st, "nesting deeper than %d", TMPL_MAX_DEPTH);
        }
        a->kind = A_PIPE;
        int rc = parse_pipe(p, true, false, &a->pipe);
        p->depth--;
        if (rc < 0) {
            return rc;
        }
        return read_fields(p, a);
    }
    if (isdigit((unsigned char)c) || ((c == '-' || c == '+') && p->pos + 1 < p->len &&
                                      isdigit((unsigned char)p->s[p->pos + 1]))) {
        size_t e = p->pos + 1;
        while (e < p->len && (isalnum((unsigned char)p->s[e]) || p->s[e] == '.' ||
                              ((p->s[e] == '-' || p->s[e] == '+') &&
                               (p->s[e - 1] == 'e' || p->s[e - 1] == 'E')))) {
            e++;
        }
        char num[64];
        if (e - p->pos >= sizeof(num)) {
            return perr(p, st, "number too long");
        }
        memcpy(num, p->s + p->pos, e - p->pos);
        num[e - p->pos] = '\0';
        char *end = NULL;
        errno = 0;
        long long ll = strtoll(num, &end, 10);
        if (*end == '\0' && errno == 0) {
            a->lit = json_integer(ll);
        } else {
            errno = 0;
            double d = strtod(num, &end);
            if (*end != '\0' || errno != 0 || !isfinite(d)) {
                return perr(p, st, "bad number syntax: %s", num);
            }
            a->lit = json_real(d);
        }
        a->kind = A_LIT;
        p->pos = e;
        return 0;
    }
    if (isalpha((unsigned char)c) || c == '_') {
        char *id = read_ident(p);
        if (strcmp(id, "true") == 0 || strcmp(id, "false") == 0 || strcmp(id, "nil") == 0) {
            a->kind = A_LIT;
            a->lit = id[0] == 't' ? json_true() : id[0] == 'f' ? json_false() : json_null();
            sc_free(id);
            return 0;
        }
        if (!known_func(p, id)) {
            int rc = perr(p, st, "function \"%s\" not defined", id);
            sc_free(id);
            return rc;
        }
        a->kind = A_FUNC;
        a->name = id;
        return 0;
    }
    char r[8];
    return perr(p, st, "unexpected \"%s\" in command", repr(c, r));
}

static int parse_cmd(struct parser *p, struct cmd *c)
{
    for (;;) {
        skip_space(p);
        if (p->pos >= p->len) {
            return perr(p, p->pos, "unclosed action");
        }
        char ch = p->s[p->pos];
        if (at_close(p) || ch == '|' || ch == ')') {
            break;
        }
        if (c->n >= TMPL_MAX_ARGS) {
            return perr(p, p->pos, "too many arguments");
        }
        c->args = sc_reallocarray(c->args, c->n + 1, sizeof(struct arg));
        memset(&c->args[c->n], 0, sizeof(struct arg));
        c->n++;
        int rc = parse_operand(p, &c->args[c->n - 1]);
        if (rc < 0) {
            return rc;
        }
        if (p->pos < p->len && !isspace((unsigned char)p->s[p->pos]) && p->s[p->pos] != '|' &&
            p->s[p->pos] != ')' && !at_close(p)) {
            char r[8];
            return perr(p, p->pos, "unexpected \"%s\" in operand", repr(p->s[p->pos], r));
        }
    }
    if (c->n == 0) {
        return perr(p, p->pos, "missing value for command");
    }
    return 0;
}

/* Parses "[$k[, $v] :=] cmd | cmd ..." up to "}}" (not consumed) or ")" (consumed in parens). */
static int parse_pipe(struct parser *p, bool in_paren, bool allow_decl, struct pipe **out)
{
    struct pipe *pp = SC_NEW(struct pipe);
    *out = pp;
    skip_space(p);
    pos_of(p, p->pos, &pp->line, &pp->col);
    if (allow_decl && p->pos < p->len && p->s[p->pos] == '$') {
        size_t save = p->pos;
        char *names[2] = { NULL, NULL };
        size_t n = 0;
        while (n < 2 && p->pos < p->len && p->s[p->pos] == '$') {
            p->pos++;
            names[n++] = read_ident(p);
            skip_space(p);
            if (p->pos < p->len && p->s[p->pos] == ',' && n < 2) {
                p->pos++;
                skip_space(p);
                continue;
            }
            break;
        }
        if (p->pos + 1 < p->len && p->s[p->pos] == ':' && p->s[p->pos + 1] == '=') {
            p->pos += 2;
            pp->decl[0] = names[0];
            pp->decl[1] = names[1];
            pp->ndecl = n;
        } else {
            sc_free(names[0]);
            sc_free(names[1]);
            p->pos = save;
        }
    }
    for (;;) {
        pp->cmds = sc_reallocarray(pp->cmds, pp->n + 1, sizeof(struct cmd));
        memset(&pp->cmds[pp->n], 0, sizeof(struct cmd));
        pp->n++;
        int rc = parse_cmd(p, &pp->cmds[pp->n - 1]);
        if (rc < 0) {
            return rc;
        }
        if (p->s[p->pos] == '|') {
            p->pos++;
            if (pp->n >= TMPL_MAX_ARGS) {
                return perr(p, p->pos, "pipeline too long");
            }
            continue;
        }
        if (p->s[p->pos] == ')') {
            if (!in_paren) {
                return perr(p, p->pos, "unexpected \")\"");
            }
            p->pos++;
            return 0;
        }
        if (in_paren) {
            return perr(p, p->pos, "unclosed left paren");
        }
        return 0;
    }
}

/* Consumes the end of an action ("}}" or " -}}"); returns whether the trim marker was there. */
static int close_action(struct parser *p, bool *trim)
{
    skip_space(p);
    *trim = false;
    if (p->pos + 2 < p->len && p->s[p->pos] == '-' && p->s[p->pos + 1] == '}' &&
        p->s[p->pos + 2] == '}') {
        *trim = true;
        p->pos += 3;
        return 0;
    }
    if (p->pos + 1 < p->len && p->s[p->pos] == '}' && p->s[p->pos + 1] == '}') {
        p->pos += 2;
        return 0;
    }
    return perr(p, p->pos, "unclosed action");
}

enum stop { STOP_EOF, STOP_END, STOP_ELSE, STOP_ELSE_IF };

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses nodes until EOF or a block keyword; <*stop> says which one. */
static int parse_list(struct parser *p, struct node **list, enum stop *stop, bool *trim_next);

static struct node *add_node(struct node ***tail, enum node_kind k)
{
    struct node *n = SC_NEW(struct node);
    n->kind = k;
    **tail = n;
    *tail = &n->next;
    return n;
}

static bool keyword(struct parser *p, const char *kw)
{
    size_t n = strlen(kw);
    if (p->pos + n <= p->len && memcmp(p->s + p->pos, kw, n) == 0 &&
        (p->pos + n == p->len || !is_ident_char(p->s[p->pos + n]))) {
        p->pos += n;
        return true;
    }
    return false;
}

static int parse_block(struct parser *p, struct node *n, size_t act, bool *trim)
{
    int rc = parse_pipe(p, false, n->kind == N_RANGE, &n->pipe);
    if (rc < 0) {
        return rc;
    }
    if ((rc = close_action(p, trim)) < 0) {
        return rc;
    }
    if (++p->depth > TMPL_MAX_DEPTH) {
        return perr(p, p->pos, "nesting deeper than %d", TMPL_MAX_DEPTH);
    }
    enum stop st;
    size_t at = act;
    if ((rc = parse_list(p, &n->body, &st, trim)) < 0) {
        return rc;
    }
    if (st == STOP_ELSE) {
        if ((rc = parse_list(p, &n->els, &st, trim)) < 0) {
            return rc;
        }
        if (st != STOP_END) {
            return perr(p, at, "expected {{end}} after {{else}}");
        }
    } else if (st == STOP_ELSE_IF) {
        if (n->kind != N_IF) {
            return perr(p, at, "else if is only allowed in if");
        }
        struct node *e = SC_NEW(struct node);
        n->els = e;
        e->kind = N_IF;
        pos_of(p, p->pos, &e->line, &e->col);
        p->depth--;
        return parse_block(p, e, act, trim);
    } else if (st != STOP_END) {
        return perr(p, at, "unexpected EOF: this block has no {{end}}");
    }
    p->depth--;
    return 0;
}

static int parse_list(struct parser *p, struct node **list, enum stop *stop, bool *trim_next)
{
    struct node **tail = list;
    bool trim_lead = *trim_next;
    *trim_next = false;
    for (;;) {
        const char *open = NULL;
        if (p->pos < p->len) {
            open = memmem(p->s + p->pos, p->len - p->pos, "{{", 2);
        }
        size_t tend = open ? (size_t)(open - p->s) : p->len;
        size_t ts = p->pos, te = tend;
        bool trim_trail =
            open && tend + 3 < p->len && p->s[tend + 2] == '-' && is_ws(p->s[tend + 3]);
        if (trim_lead) {
            while (ts < te && is_ws(p->s[ts])) {
                ts++;
            }
        }
        if (trim_trail) {
            while (te > ts && is_ws(p->s[te - 1])) {
                te--;
            }
        }
        if (te > ts) {
            struct node *n = add_node(&tail, N_TEXT);
            n->text = sc_strndup(p->s + ts, te - ts);
            n->len = te - ts;
        }
        if (!open) {
            p->pos = p->len;
            *stop = STOP_EOF;
            return 0;
        }
        size_t act = tend;
        p->pos = tend + 2 + (trim_trail ? 1 : 0);
        /* comments */
        size_t cpos = p->pos;
        while (cpos < p->len && is_ws(p->s[cpos])) {
            cpos++;
        }
        if (cpos + 1 < p->len && p->s[cpos] == '/' && p->s[cpos + 1] == '*') {
            const char *ce = memmem(p->s + cpos + 2, p->len - cpos - 2, "*/", 2);
            if (!ce) {
                return perr(p, act, "unclosed comment");
            }
            p->pos = (size_t)(ce - p->s) + 2;
            int rc = close_action(p, &trim_lead);
            if (rc < 0) {
                return perr(p, act, "comment ends before closing delimiter");
            }
            continue;
        }
        skip_space(p);
        int line, col;
        pos_of(p, act, &line, &col);
        int rc;
        if (keyword(p, "end")) {
            *stop = STOP_END;
            return close_action(p, trim_next);
        }
        if (keyword(p, "else")) {
            skip_space(p);
            if (keyword(p, "if")) {
                *stop = STOP_ELSE_IF;
                return 0;
            }
            *stop = STOP_ELSE;
            return close_action(p, trim_next);
        }
        enum node_kind k = N_ACTION;
        if (keyword(p, "if")) {
            k = N_IF;
        } else if (keyword(p, "range")) {
            k = N_RANGE;
        } else if (keyword(p, "with")) {
            k = N_WITH;
        } else if (keyword(p, "define") || keyword(p, "template") || keyword(p, "block") ||
                   keyword(p, "break") || keyword(p, "continue")) {
            return perr(p, act, "this template subset has no define/template/block/break/continue");
        }
        struct node *n = add_node(&tail, k);
        n->line = line;
        n->col = col;
        if (k == N_ACTION) {
            if ((rc = parse_pipe(p, false, false, &n->pipe)) < 0) {
                return rc;
            }
            if ((rc = close_action(p, &trim_lead)) < 0) {
                return rc;
            }
        } else {
            if ((rc = parse_block(p, n, act, &trim_lead)) < 0) {
                return rc;
            }
        }
    }
}

struct sc_template *sc_template_parse(const char *name, const char *text, size_t len,
                                      const char *const *extra, char **err)
{
    struct sc_template *t = SC_NEW(struct sc_template);
    t->name = sc_strdup(name ? name : "template");
    for (size_t i = 0; extra && extra[i]; i++) {
        t->extra = sc_reallocarray(t->extra, t->nextra + 1, sizeof(char *));
        t->extra[t->nextra++] = sc_strdup(extra[i]);
    }
    struct parser p = { .name = t->name, .s = text, .len = len, .t = t };
    if (len > TMPL_MAX_INPUT) {
        *err = sc_asprintf("%s:1:1: template larger than 1 MiB", t->name);
        goto fail;
    }
    enum stop st;
    bool trim = false;
    int rc = parse_list(&p, &t->root, &st, &trim);
    if (rc == 0 && st != STOP_EOF) {
        rc = perr(&p, p.pos > 0 ? p.pos - 1 : 0, "unexpected {{%s}}",
                  st == STOP_END ? "end" : "else");
    }
    if (rc < 0 || p.err) {
        *err = p.err ? p.err : sc_asprintf("%s:1:1: invalid template", t->name);
        goto fail;
    }
    return t;
fail:
    sc_template_free(t);
    return NULL;
}

/* ---- calls ---- */

static void calls_pipe(const struct pipe *pp, const char *func, sc_template_call_cb cb, void *arg);

static void calls_nodes(const struct node *n, const char *func, sc_template_call_cb cb, void *arg)
{
    for (; n; n = n->next) {
        if (n->pipe) {
            calls_pipe(n->pipe, func, cb, arg);
        }
        calls_nodes(n->body, func, cb, arg);
        calls_nodes(n->els, func, cb, arg);
    }
}

static void calls_pipe(const struct pipe *pp, const char *func, sc_template_call_cb cb, void *arg)
{
    for (size_t i = 0; i < pp->n; i++) {
        const struct cmd *c = &pp->cmds[i];
        if (c->n >= 2 && c->args[0].kind == A_FUNC && strcmp(c->args[0].name, func) == 0 &&
            c->args[1].kind == A_LIT && json_is_string(c->args[1].lit)) {
            cb(arg, func, json_string_value(c->args[1].lit));
        }
        for (size_t j = 0; j < c->n; j++) {
            if (c->args[j].pipe) {
                calls_pipe(c->args[j].pipe, func, cb, arg);
            }
        }
    }
}

void sc_template_calls(const struct sc_template *t, const char *func, sc_template_call_cb cb,
                       void *arg)
{
    calls_nodes(t->root, func, cb, arg);
}

/* ---- evaluation ---- */

struct var {
    const char *name;
    json_t *v; /* borrowed from the evaluation that declared it */
};

struct exec {
    const struct sc_template *t;
    struct sc_buf *out;
    sc_template_func_cb fn;
    void *arg;
    json_t *root;
    struct var vars[TMPL_MAX_DEPTH * 2 + 1];
    size_t nvars;
    char *err;
    int rc;
};

__attribute__((format(printf, 4, 5))) static int xerr(struct exec *x, int line, int col,
                                                      const char *fmt, ...)
{
    if (x->err) {
        return x->rc;
    }
    va_list ap;
    va_start(ap, fmt);
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    x->err = sc_asprintf("%s:%d:%d: %s", x->t->name, line, col, msg);
    x->rc = SC_ECONFIG;
    return x->rc;
}

static bool truthy(const json_t *v)
{
    if (!v) {
        return false;
    }
    switch (json_typeof(v)) {
    case JSON_NULL:
    case JSON_FALSE:
        return false;
    case JSON_TRUE:
        return true;
    case JSON_STRING:
        return json_string_length(v) > 0;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    case JSON_REAL:
        return json_real_value(v) != 0;
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_OBJECT:
        return json_object_size(v) > 0;
    }
    return false;
}

/* Appends the text form of <v>: strings raw, numbers and booleans as Go prints them, null as
 * nothing, arrays and objects as compact JSON. */
static int print_value(struct sc_buf *out, const json_t *v)
{
    if (!v || json_is_null(v)) {
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        return sc_buf_append(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return sc_buf_appendf(out, "%lld", (long long)json_integer_value(v));
    case JSON_REAL:
        return sc_buf_appendf(out, "%.15g", json_real_value(v));
    case JSON_TRUE:
        return sc_buf_append_cstr(out, "true");
    case JSON_FALSE:
        return sc_buf_append_cstr(out, "false");
    default: {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        int rc = s ? sc_buf_append_cstr(out, s) : 0;
        sc_free_zeroed(s);
        return rc;
    }
    }
}

static json_t *as_text(const json_t *v)
{
    struct sc_buf b;
    sc_buf_init(&b, 16u << 20);
    b.sensitive = true; /* rendered values may be secrets */
    print_value(&b, v);
    json_t *s = json_stringn(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return s ? s : json_string("");
}

static json_t *field_chain(json_t *v, char *const *fields, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        v = json_is_object(v) ? json_object_get(v, fields[i]) : NULL;
    }
    return v ? json_incref(v) : json_null();
}

static json_t *eval_pipe(struct exec *x, const struct pipe *pp, json_t *dot);

static bool values_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        return json_number_value(a) == json_number_value(b);
    }
    return json_equal((json_t *)a, (json_t *)b);
}

static json_t *call_builtin(struct exec *x, const struct arg *f, json_t **av, size_t n)
{
    const char *name = f->name;
    int line = f->line, col = f->col;
#define NEED(k)                                                                                    \
    do {                                                                                           \
        if (n != (k)) {                                                                            \
            xerr(x, line, col, "%s: wrong number of arguments: want %d, got %zu", name, (k), n);   \
            return NULL;                                                                           \
        }                                                                                          \
    } while (0)
    struct sc_buf b;
    sc_buf_init(&b, 16u << 20);
    b.sensitive = true; /* rendered values may be secrets */
    json_t *r = NULL;
    if (strcmp(name, "base64Encode") == 0 || strcmp(name, "base64") == 0) {
        NEED(1);
        json_t *s = as_text(av[0]);
        sc_template_base64_encode(&b, json_string_value(s), json_string_length(s));
        json_decref(s);
        r = json_stringn(b.p ? b.p : "", b.len);
    } else if (strcmp(name, "base64Decode") == 0) {
        NEED(1);
        json_t *s = as_text(av[0]);
        int rc = sc_template_base64_decode(&b, json_string_value(s), json_string_length(s));
        json_decref(s);
        if (rc < 0) {
            xerr(x, line, col, "base64Decode: invalid base64 input");
        } else {
            r = json_stringn(b.p ? b.p : "", b.len);
            if (!r) {
                xerr(x, line, col, "base64Decode: result is not valid UTF-8 text");
            }
        }
    } else if (strcmp(name, "toJSON") == 0 || strcmp(name, "toJSONPretty") == 0) {
        NEED(1);
        size_t fl =
            JSON_ENCODE_ANY | JSON_SORT_KEYS | (name[6] == 'P' ? JSON_INDENT(2) : JSON_COMPACT);
        char *s = json_dumps(av[0], fl);
        r = json_string(s ? s : "null");
        sc_free_zeroed(s);
    } else if (strcmp(name, "default") == 0) {
        NEED(2);
        r = json_incref(truthy(av[1]) ? av[1] : av[0]);
    } else if (strcmp(name, "env") == 0) {
        NEED(1);
        json_t *s = as_text(av[0]);
        const char *e = getenv(json_string_value(s));
        json_decref(s);
        r = e ? json_string(e) : NULL;
        if (!r) {
            r = json_string("");
        }
    } else if (strcmp(name, "quote") == 0) {
        NEED(1);
        json_t *s = as_text(av[0]);
        char *q = json_dumps(s, JSON_ENCODE_ANY);
        json_decref(s);
        r = json_string(q ? q : "\"\"");
        sc_free_zeroed(q);
    } else if (strcmp(name, "upper") == 0 || strcmp(name, "lower") == 0 ||
               strcmp(name, "trimSpace") == 0) {
        NEED(1);
        json_t *s = as_text(av[0]);
        const char *p = json_string_value(s);
        size_t len = json_string_length(s);
        if (name[0] == 't') {
            while (len > 0 && is_ws(*p)) {
                p++;
                len--;
            }
            while (len > 0 && is_ws(p[len - 1])) {
                len--;
            }
            sc_buf_append(&b, p, len);
        } else {
            for (size_t i = 0; i < len; i++) {
                char c = name[0] == 'u' ? (char)toupper((unsigned char)p[i])
                                        : (char)tolower((unsigned char)p[i]);
                sc_buf_append(&b, &c, 1);
            }
        }
        json_decref(s);
        r = json_stringn(b.p ? b.p : "", b.len);
    } else if (strcmp(name, "index") == 0) {
        if (n < 1) {
            NEED(2);
        }
        json_t *v = av[0];
        for (size_t i = 1; i < n && v; i++) {
            if (json_is_object(v) && json_is_string(av[i])) {
                v = json_object_get(v, json_string_value(av[i]));
            } else if (json_is_array(v) && json_is_integer(av[i])) {
                json_int_t k = json_integer_value(av[i]);
                if (k < 0 || (size_t)k >= json_array_size(v)) {
                    xerr(x, line, col, "index: index out of range: %lld", (long long)k);
                    v = NULL;
                    break;
                }
                v = json_array_get(v, (size_t)k);
            } else if (json_is_null(v)) {
                v = NULL;
            } else {
                xerr(x, line, col, "index: cannot index %s",
                     json_is_array(v) ? "list with "
                                        "non-integer"
                                      : "this value");
                v = NULL;
                break;
            }
        }
        if (!x->err) {
            r = v ? json_incref(v) : json_null();
        }
    } else if (strcmp(name, "len") == 0) {
        NEED(1);
        size_t l = json_is_string(av[0])   ? json_string_length(av[0])
                   : json_is_array(av[0])  ? json_array_size(av[0])
                   : json_is_object(av[0]) ? json_object_size(av[0])
                                           : 0;
        r = json_integer((json_int_t)l);
    } else if (strcmp(name, "eq") == 0 || strcmp(name, "ne") == 0) {
        NEED(2);
        bool eq = values_equal(av[0], av[1]);
        r = json_boolean(name[0] == 'e' ? eq : !eq);
    } else if (strcmp(name, "not") == 0) {
        NEED(1);
        r = json_boolean(!truthy(av[0]));
    } else if (strcmp(name, "and") == 0 || strcmp(name, "or") == 0) {
        if (n < 1) {
            NEED(1);
        }
        size_t i = 0;
        for (; i + 1 < n; i++) {
            if (truthy(av[i]) != (name[0] == 'a')) {
                break;
            }
        }
        r = json_incref(av[i]);
    } else if (strcmp(name, "join") == 0) {
        NEED(2);
        json_t *sep = as_text(av[0]);
        if (json_is_array(av[1])) {
            for (size_t i = 0; i < json_array_size(av[1]); i++) {
                if (i > 0) {
                    sc_buf_append(&b, json_string_value(sep), json_string_length(sep));
                }
                print_value(&b, json_array_get(av[1], i));
            }
        }
        json_decref(sep);
        r = json_stringn(b.p ? b.p : "", b.len);
    } else if (strcmp(name, "print") == 0 || strcmp(name, "printf") == 0) {
        /* printf supports only %s and %v verbs and %%: enough for "%s:%s" joins. */
        size_t i = 0;
        if (name[5] == 'f') {
            if (n < 1) {
                NEED(1);
            }
            json_t *fmt = as_text(av[0]);
            const char *fp = json_string_value(fmt);
            i = 1;
            for (size_t k = 0; fp[k]; k++) {
                if (fp[k] == '%' && (fp[k + 1] == 's' || fp[k + 1] == 'v' || fp[k + 1] == 'd')) {
                    if (i < n) {
                        print_value(&b, av[i++]);
                    }
                    k++;
                } else if (fp[k] == '%' && fp[k + 1] == '%') {
                    sc_buf_append(&b, "%", 1);
                    k++;
                } else {
                    sc_buf_append(&b, &fp[k], 1);
                }
            }
            json_decref(fmt);
        } else {
            for (; i < n; i++) {
                print_value(&b, av[i]);
            }
        }
        r = json_stringn(b.p ? b.p : "", b.len);
        if (!r) {
            r = json_string("");
        }
    }
#undef NEED
    sc_buf_cleanup(&b);
    return r;
}

static json_t *eval_arg(struct exec *x, const struct arg *a, json_t *dot)
{
    switch (a->kind) {
    case A_DOT:
        return json_incref(dot);
    case A_FIELD:
        return field_chain(dot, a->fields, a->nfields);
    case A_VAR: {
        if (a->name[0] == '\0') {
            return field_chain(x->root, a->fields, a->nfields);
        }
        for (size_t i = x->nvars; i > 0; i--) {
            if (strcmp(x->vars[i - 1].name, a->name) == 0) {
                return field_chain(x->vars[i - 1].v, a->fields, a->nfields);
            }
        }
        xerr(x, a->line, a->col, "undefined variable: $%s", a->name);
        return NULL;
    }
    case A_LIT:
        return json_incref(a->lit);
    case A_PIPE: {
        json_t *v = eval_pipe(x, a->pipe, dot);
        if (!v) {
            return NULL;
        }
        json_t *r = field_chain(v, a->fields, a->nfields);
        json_decref(v);
        return r;
    }
    case A_FUNC:
        break;
    }
    return NULL;
}

/* Evaluates one command; <prev> (borrowed, may be NULL) is the previous command's value, passed
 * as the final argument. Returns a new reference or NULL with x->err set. */
static json_t *eval_cmd(struct exec *x, const struct cmd *c, json_t *dot, json_t *prev)
{
    const struct arg *f = &c->args[0];
    if (f->kind != A_FUNC) {
        if (c->n > 1 || prev) {
            xerr(x, f->line, f->col, "can't give argument to non-function");
            return NULL;
        }
        return eval_arg(x, f, dot);
    }
    json_t *av[TMPL_MAX_ARGS + 1];
    size_t n = 0;
    json_t *r = NULL;
    for (size_t i = 1; i < c->n; i++) {
        json_t *v = eval_arg(x, &c->args[i], dot);
        if (!v) {
            goto out;
        }
        av[n++] = v;
    }
    if (prev) {
        av[n++] = json_incref(prev);
    }
    bool builtin = false;
    for (size_t i = 0; builtins[i]; i++) {
        builtin = builtin || strcmp(builtins[i], f->name) == 0;
    }
    if (builtin) {
        r = call_builtin(x, f, av, n);
    } else if (x->fn) {
        char *e = NULL;
        int rc = x->fn(x->arg, f->name, av, n, &r, &e);
        if (rc < 0) {
            xerr(x, f->line, f->col, "%s: %s", f->name, e ? e : sc_strerror(rc));
            r = NULL;
        }
        sc_free(e);
    } else {
        xerr(x, f->line, f->col, "function \"%s\" not available here", f->name);
    }
out:
    for (size_t i = 0; i < n; i++) {
        json_decref(av[i]);
    }
    return r;
}

static json_t *eval_pipe(struct exec *x, const struct pipe *pp, json_t *dot)
{
    json_t *v = NULL;
    for (size_t i = 0; i < pp->n; i++) {
        json_t *nv = eval_cmd(x, &pp->cmds[i], dot, v);
        if (v) {
            json_decref(v);
        }
        if (!nv) {
            return NULL;
        }
        v = nv;
    }
    return v;
}

static int exec_nodes(struct exec *x, const struct node *n, json_t *dot);

static int push_var(struct exec *x, const char *name, json_t *v)
{
    if (x->nvars >= SC_ARRAY_LEN(x->vars)) {
        return xerr(x, 1, 1, "too many variables");
    }
    x->vars[x->nvars].name = name;
    x->vars[x->nvars].v = v;
    x->nvars++;
    return 0;
}

/* Runs one iteration of a range body with <e> as dot, binding the declared variables to <k> (the
 * index or key) and <e> as Go does. Takes a reference to <k>. */
static int range_one(struct exec *x, const struct node *n, size_t saved, json_t *k, json_t *e)
{
    const struct pipe *pp = n->pipe;
    int rc = 0;
    x->nvars = saved;
    if (pp->ndecl == 1) {
        rc = push_var(x, pp->decl[0], e);
    } else if (pp->ndecl == 2) {
        rc = push_var(x, pp->decl[0], k);
        if (rc == 0) {
            rc = push_var(x, pp->decl[1], e);
        }
    }
    if (rc == 0) {
        rc = exec_nodes(x, n->body, e);
    }
    json_decref(k);
    return rc;
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int exec_range(struct exec *x, const struct node *n, json_t *v, json_t *dot)
{
    size_t saved = x->nvars;
    int rc = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && rc == 0; i++) {
            rc = range_one(x, n, saved, json_integer((json_int_t)i), json_array_get(v, i));
        }
    } else if (json_is_object(v)) {
        /* Go ranges over maps in sorted key order. */
        size_t cnt = json_object_size(v), i = 0;
        const char **keys = sc_calloc(cnt ? cnt : 1, sizeof(char *));
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val)
        {
            keys[i++] = key;
        }
        qsort(keys, cnt, sizeof(*keys), cmp_keys);
        for (i = 0; i < cnt && rc == 0; i++) {
            rc = range_one(x, n, saved, json_string(keys[i]), json_object_get(v, keys[i]));
        }
        sc_free(keys);
    } else if (json_is_integer(v) && json_integer_value(v) > 0) {
        return xerr(x, n->line, n->col, "range over an integer is not supported");
    }
    x->nvars = saved;
    if (rc == 0 && !truthy(v) && n->els) {
        rc = exec_nodes(x, n->els, dot);
    }
    return rc;
}

static int exec_nodes(struct exec *x, const struct node *n, json_t *dot)
{
    for (; n; n = n->next) {
        int rc = 0;
        if (n->kind == N_TEXT) {
            rc = sc_buf_append(x->out, n->text, n->len);
            if (rc < 0) {
                xerr(x, n->line, n->col, "output larger than its limit");
                x->rc = SC_ETOOBIG;
                return x->rc;
            }
            continue;
        }
        json_t *v = eval_pipe(x, n->pipe, dot);
        if (!v) {
            return x->rc ? x->rc : xerr(x, n->line, n->col, "evaluation failed");
        }
        switch (n->kind) {
        case N_ACTION:
            rc = print_value(x->out, v);
            if (rc < 0) {
                rc = xerr(x, n->line, n->col, "output larger than its limit");
                x->rc = SC_ETOOBIG;
            }
            break;
        case N_IF:
            if (truthy(v)) {
                rc = exec_nodes(x, n->body, dot);
            } else if (n->els) {
                rc = exec_nodes(x, n->els, dot);
            }
            break;
        case N_WITH:
            if (truthy(v)) {
                rc = exec_nodes(x, n->body, v);
            } else if (n->els) {
                rc = exec_nodes(x, n->els, dot);
            }
            break;
        case N_RANGE:
            rc = exec_range(x, n, v, dot);
            break;
        case N_TEXT:
            break;
        }
        json_decref(v);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

int sc_template_render(const struct sc_template *t, json_t *data, sc_template_func_cb fn, void *arg,
                       struct sc_buf *out, char **err)
{
    json_t *nul = json_null();
    struct exec x = { .t = t, .out = out, .fn = fn, .arg = arg, .root = data ? data : nul };
    int rc = exec_nodes(&x, t->root, x.root);
    json_decref(nul);
    if (rc < 0 || x.err) {
        *err = x.err ? x.err : sc_asprintf("%s: render failed", t->name);
        return x.rc ? x.rc : SC_ECONFIG;
    }
    return 0;
}
