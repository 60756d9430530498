// SPDX-License-Identifier: Apache-2.0
// Unit tests for core/ytree: a YAML stream parsed into documents with 1-based positions, aliases
// followed by the readers, a tree built from pieces of it and loaded through an option table with
// errors at the positions of the text the pieces came from, built strings taken literally (no
// ${VAR} expansion) while copies keep it, the JSON form, and the node limit.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/error.h"
#include "core/ytree.h"

struct cfg {
    char *name;
    int64_t port;
    struct sc_strv tags;
};

static const struct sc_opt opts[] = {
    { .name = "name", .type = SC_OPT_STR, .offset = offsetof(struct cfg, name) },
    { .name = "port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct cfg, port),
      .min = 1,
      .max = 65535 },
    { .name = "tags", .type = SC_OPT_STRLIST, .offset = offsetof(struct cfg, tags) },
    { 0 },
};

static const char stream[] = "a: &x {k: v}\n"
                             "b: *x\n"
                             "---\n"
                             "# second\n"
                             "name: ${YT_NAME}\n"
                             "port: 70000\n"
                             "---\n";

static void test_parse_documents_and_positions(void **state)
{
    (void)state;
    struct sc_ytree *t = NULL;
    char *err = NULL;
    assert_int_equal(sc_ytree_parse("s.yaml", stream, strlen(stream), &t, &err), 0);
    assert_int_equal(sc_ytree_ndocs(t), 3);
    const struct sc_ynode *d0 = sc_ytree_doc(t, 0), *d1 = sc_ytree_doc(t, 1);
    assert_int_equal(sc_ynode_kind(d0), SC_Y_MAP);
    assert_int_equal(sc_ynode_kind(sc_ytree_doc(t, 2)), SC_Y_NULL);
    assert_null(sc_ytree_doc(t, 3));
    /* The alias reads as its target; its position is the alias's own. */
    const struct sc_ynode *b = sc_ynode_get(d0, "b");
    assert_int_equal(sc_ynode_kind(b), SC_Y_MAP);
    assert_string_equal(sc_ynode_str(sc_ynode_get(b, "k")), "v");
    assert_int_equal(sc_ynode_line(b), 2);
    assert_int_equal(sc_ynode_col(b), 4);
    const struct sc_ynode *port = sc_ynode_get(d1, "port");
    assert_int_equal(sc_ynode_line(port), 6);
    assert_int_equal(sc_ynode_col(port), 7);
    assert_string_equal(sc_ynode_str(sc_ynode_key(d1, 0)), "name");
    assert_null(sc_ynode_get(d1, "missing"));
    assert_null(sc_ynode_get(port, "x")); /* not a mapping */
    assert_int_equal(sc_ynode_count(port), 0);
    sc_ytree_free(t);
}

static void test_parse_error_has_position(void **state)
{
    (void)state;
    struct sc_ytree *t = NULL;
    char *err = NULL;
    const char bad[] = "a: 1\n---\nb: [1, 2\n";
    assert_int_equal(sc_ytree_parse("bad.yaml", bad, strlen(bad), &t, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "bad.yaml:4:1: "));
    sc_free(err);
}

static void test_built_tree_loads_with_source_positions(void **state)
{
    (void)state;
    setenv("YT_NAME", "from-env", 1);
    struct sc_ytree *in = NULL;
    char *err = NULL;
    assert_int_equal(sc_ytree_parse("s.yaml", stream, strlen(stream), &in, &err), 0);
    const struct sc_ynode *d1 = sc_ytree_doc(in, 1);
    struct sc_ytree *out = sc_ytree_new("s.yaml");
    struct sc_ynode *root = sc_ytree_map(out, d1);
    /* A copy keeps ${VAR} expansion; a built string is literal. */
    assert_int_equal(sc_ynode_put(out, root, "name", sc_ytree_copy(out, sc_ynode_get(d1, "name"))),
                     0);
    struct sc_ynode *tags = sc_ytree_seq(out, d1);
    assert_int_equal(sc_ynode_push(out, tags, sc_ytree_str(out, d1, "${NOT_EXPANDED}")), 0);
    assert_int_equal(sc_ynode_put(out, root, "tags", tags), 0);
    struct cfg c = { 0 };
    sc_config_defaults(opts, &c);
    assert_int_equal(sc_ytree_load(opts, &c, "s.yaml", root, &err), 0);
    assert_string_equal(c.name, "from-env");
    assert_int_equal(c.tags.n, 1);
    assert_string_equal(c.tags.v[0], "${NOT_EXPANDED}");
    /* An out-of-range value is reported where the user wrote it. */
    assert_int_equal(sc_ynode_put(out, root, "port", sc_ytree_copy(out, sc_ynode_get(d1, "port"))),
                     0);
    assert_int_equal(sc_ytree_load(opts, &c, "s.yaml", root, &err), SC_ECONFIG);
    assert_string_equal(err, "s.yaml:6:7: 70000 is out of range [1, 65535]");
    sc_free(err);
    /* Replacing a value in place. */
    sc_ynode_replace(root, 2, sc_ytree_str(out, d1, "8080"));
    assert_int_equal(sc_ytree_load(opts, &c, "s.yaml", root, &err), 0);
    assert_int_equal(c.port, 8080);
    json_t *j = sc_ynode_json(root);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(s, "{\"name\":\"${YT_NAME}\",\"tags\":[\"${NOT_EXPANDED}\"],"
                           "\"port\":\"8080\"}");
    sc_free(s);
    json_decref(j);
    sc_config_free(opts, &c);
    sc_ytree_free(out);
    sc_ytree_free(in);
}

static void test_copy_of_alias_bomb_is_bounded(void **state)
{
    (void)state;
    /* Nine levels of ten aliases each expand to 10^9 nodes: the copy stops at the node limit. */
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    sc_buf_append_cstr(&b, "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++) {
        sc_buf_appendf(&b,
                       "l%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d]\n",
                       i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    }
    struct sc_ytree *in = NULL, *out = sc_ytree_new("bomb");
    char *err = NULL;
    assert_int_equal(sc_ytree_parse("bomb", b.p, b.len, &in, &err), 0);
    assert_null(sc_ytree_copy(out, sc_ytree_doc(in, 0)));
    sc_ytree_free(out);
    sc_ytree_free(in);
    sc_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_documents_and_positions),
        cmocka_unit_test(test_parse_error_has_position),
        cmocka_unit_test(test_built_tree_loads_with_source_positions),
        cmocka_unit_test(test_copy_of_alias_bomb_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
