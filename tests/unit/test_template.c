// SPDX-License-Identifier: Apache-2.0
// Unit tests for the template engine: the Go text/template subset (fields, pipelines, functions,
// if/else, range over lists and maps, with, variables, trim markers, comments), positioned parse
// and render errors, unknown functions, caller functions, base64, output caps.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/template.h"

static char *render(const char *tmpl, const char *json)
{
    char *err = NULL;
    struct sc_template *t = sc_template_parse("t", tmpl, strlen(tmpl), NULL, &err);
    if (!t) {
        return err;
    }
    json_error_t je;
    json_t *d = json ? json_loads(json, JSON_DECODE_ANY, &je) : NULL;
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    int rc = sc_template_render(t, d, NULL, NULL, &b, &err);
    char *out = rc == 0 ? sc_strndup(b.p ? b.p : "", b.len) : err;
    sc_buf_cleanup(&b);
    json_decref(d);
    sc_template_free(t);
    return out;
}

#define EXPECT(tmpl, json, want)                                                                   \
    do {                                                                                           \
        char *got_ = render((tmpl), (json));                                                       \
        assert_string_equal(got_, (want));                                                         \
        sc_free(got_);                                                                             \
    } while (0)

static void test_text_and_fields(void **state)
{
    (void)state;
    EXPECT("plain", NULL, "plain");
    EXPECT("", NULL, "");
    EXPECT("export DB_USER=\"{{ .Data.username }}\"", "{\"Data\":{\"username\":\"app\"}}",
           "export DB_USER=\"app\"");
    EXPECT("{{.a.b.c}}", "{\"a\":{\"b\":{\"c\":3}}}", "3");
    EXPECT("[{{.missing.deep}}]", "{\"a\":1}", "[]");
    EXPECT("{{.}}", "[1,\"x\"]", "[1,\"x\"]");
    EXPECT("{{.f}} {{.t}} {{.n}} {{.r}}", "{\"f\":false,\"t\":true,\"n\":null,\"r\":1.5}",
           "false true  1.5");
    EXPECT("{{ \"a}}b\" }}", NULL, "a}}b");
    EXPECT("{{ `raw\\n` }}", NULL, "raw\\n");
}

static void test_functions(void **state)
{
    (void)state;
    EXPECT("{{ .p | base64Encode }}", "{\"p\":\"hello\"}", "aGVsbG8=");
    EXPECT("{{ .p | base64Decode }}", "{\"p\":\"aGVsbG8\"}", "hello");
    EXPECT("{{ .o | toJSON }}", "{\"o\":{\"b\":1,\"a\":[true]}}", "{\"a\":[true],\"b\":1}");
    EXPECT("{{ .x | default \"d\" }}", "{}", "d");
    EXPECT("{{ .x | default \"d\" }}", "{\"x\":\"v\"}", "v");
    EXPECT("{{ default \"d\" .x }}", "{\"x\":\"\"}", "d");
    setenv("SC_TEST_ENV", "from-env", 1);
    EXPECT("{{ env \"SC_TEST_ENV\" }}", NULL, "from-env");
    EXPECT("{{ .s | quote }}", "{\"s\":\"a\\\"b\"}", "\"a\\\"b\"");
    EXPECT("{{ .s | upper }}/{{ .s | lower }}", "{\"s\":\"AbC\"}", "ABC/abc");
    EXPECT("{{ index .l 1 }} {{ index .m \"k\" }}", "{\"l\":[1,2],\"m\":{\"k\":\"v\"}}", "2 v");
    EXPECT("{{ len .l }}", "{\"l\":[1,2,3]}", "3");
    EXPECT("{{ join \",\" .l }}", "{\"l\":[\"a\",\"b\"]}", "a,b");
    EXPECT("{{ printf \"%s:%d\" .h .p }}", "{\"h\":\"x\",\"p\":80}", "x:80");
    EXPECT("{{ (index .l 0).name }}", "{\"l\":[{\"name\":\"n\"}]}", "n");
}

static void test_control(void **state)
{
    (void)state;
    EXPECT("{{if .a}}yes{{else}}no{{end}}", "{\"a\":1}", "yes");
    EXPECT("{{if .a}}yes{{else}}no{{end}}", "{\"a\":0}", "no");
    EXPECT("{{if eq .a \"x\"}}1{{else if eq .a \"y\"}}2{{else}}3{{end}}", "{\"a\":\"y\"}", "2");
    EXPECT("{{if and .a (not .b)}}ok{{end}}", "{\"a\":1,\"b\":false}", "ok");
    EXPECT("{{range .l}}<{{.}}>{{end}}", "{\"l\":[1,2,3]}", "<1><2><3>");
    EXPECT("{{range $k, $v := .m}}{{$k}}={{$v}};{{end}}", "{\"m\":{\"b\":2,\"a\":1}}", "a=1;b=2;");
    EXPECT("{{range $i, $v := .l}}{{$i}}{{$v}}{{end}}", "{\"l\":[\"x\",\"y\"]}", "0x1y");
    EXPECT("{{range .l}}x{{else}}empty{{end}}", "{\"l\":[]}", "empty");
    EXPECT("{{with .d}}{{.u}}{{else}}none{{end}}", "{\"d\":{\"u\":\"me\"}}", "me");
    EXPECT("{{with .d}}{{.u}}{{else}}none{{end}}", "{}", "none");
    EXPECT("{{range .l}}{{$.top}}{{end}}", "{\"l\":[1,2],\"top\":\"T\"}", "TT");
    EXPECT("a  {{- .x -}}  b", "{\"x\":\"X\"}", "aXb");
    EXPECT("{{/* a comment */}}x", NULL, "x");
    EXPECT("line1\n{{- /* c */ -}}\nline2", NULL, "line1line2");
}

static void test_vault_example(void **state)
{
    (void)state;
    EXPECT("{{- with .Data -}}\nexport DB_USER=\"{{ .username }}\"\nexport DB_PASS=\"{{ .password "
           "}}\"\n{{- end }}\n",
           "{\"Data\":{\"username\":\"u1\",\"password\":\"p1\"}}",
           "export DB_USER=\"u1\"\nexport DB_PASS=\"p1\"\n");
}

static void test_errors_have_positions(void **state)
{
    (void)state;
    EXPECT("ab\n  {{ nosuch .x }}", NULL, "t:2:6: function \"nosuch\" not defined");
    EXPECT("{{ .x ", NULL, "t:1:7: unclosed action");
    EXPECT("{{if .x}}never closed", NULL, "t:1:1: unexpected EOF: this block has no {{end}}");
    EXPECT("x{{end}}", NULL, "t:1:8: unexpected {{end}}");
    EXPECT("{{ \"unterminated }}", NULL, "t:1:4: unterminated string");
    EXPECT("{{ (.x }}", NULL, "t:1:8: unclosed left paren");
    EXPECT("{{ $nope }}", NULL, "t:1:4: undefined variable: $nope");
    EXPECT("\n{{ index .l 5 }}", "{\"l\":[1]}", "t:2:4: index: index out of range: 5");
    EXPECT("{{ .x | base64Decode }}", "{\"x\":\"!!\"}",
           "t:1:9: base64Decode: invalid base64 input");
    EXPECT("{{ define \"x\" }}{{ end }}", NULL,
           "t:1:1: this template subset has no define/template/block/break/continue");
}

static int secret_fn(void *arg, const char *name, json_t *const *args, size_t nargs, json_t **out,
                     char **err)
{
    (void)arg;
    if (strcmp(name, "secret") != 0 || nargs != 1 || !json_is_string(args[0])) {
        *err = sc_strdup("want one path");
        return SC_ECONFIG;
    }
    *out = json_pack("{s:{s:s}}", "Data", "username", json_string_value(args[0]));
    return 0;
}

static void on_call(void *arg, const char *func, const char *first)
{
    (void)func;
    int *n = arg;
    assert_string_equal(first, "database/creds/app");
    (*n)++;
}

static void test_caller_functions(void **state)
{
    (void)state;
    static const char *const extra[] = { "secret", NULL };
    const char *src = "{{ with secret \"database/creds/app\" }}{{ .Data.username }}{{ end }}";
    char *err = NULL;
    assert_null(sc_template_parse("t", src, strlen(src), NULL, &err));
    assert_string_equal(err, "t:1:9: function \"secret\" not defined");
    sc_free(err);
    err = NULL;
    struct sc_template *t = sc_template_parse("t", src, strlen(src), extra, &err);
    assert_non_null(t);
    int calls = 0;
    sc_template_calls(t, "secret", on_call, &calls);
    assert_int_equal(calls, 1);
    struct sc_buf b;
    sc_buf_init(&b, 1024);
    assert_int_equal(sc_template_render(t, NULL, secret_fn, NULL, &b, &err), 0);
    assert_int_equal(b.len, strlen("database/creds/app"));
    sc_buf_cleanup(&b);
    sc_template_free(t);
}

static void test_output_cap(void **state)
{
    (void)state;
    const char *src = "{{range .l}}0123456789{{end}}";
    char *err = NULL;
    struct sc_template *t = sc_template_parse("t", src, strlen(src), NULL, &err);
    json_t *d = json_pack("{s:[iiiiiiiiii]}", "l", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    struct sc_buf b;
    sc_buf_init(&b, 50);
    assert_int_equal(sc_template_render(t, d, NULL, NULL, &b, &err), SC_ETOOBIG);
    assert_true(b.len <= 50);
    assert_non_null(strstr(err, "output larger than its limit"));
    sc_free(err);
    sc_buf_cleanup(&b);
    json_decref(d);
    sc_template_free(t);
}

static void test_base64_roundtrip(void **state)
{
    (void)state;
    for (size_t n = 0; n < 40; n++) {
        char in[40];
        for (size_t i = 0; i < n; i++) {
            in[i] = (char)(i * 37 + n);
        }
        struct sc_buf e, d;
        sc_buf_init(&e, 1024);
        sc_buf_init(&d, 1024);
        assert_int_equal(sc_template_base64_encode(&e, in, n), 0);
        assert_int_equal(e.len, (n + 2) / 3 * 4);
        assert_int_equal(sc_template_base64_decode(&d, e.p ? e.p : "", e.len), 0);
        assert_int_equal(d.len, n);
        assert_true(n == 0 || memcmp(d.p, in, n) == 0);
        sc_buf_cleanup(&e);
        sc_buf_cleanup(&d);
    }
}

static void test_data_parse(void **state)
{
    (void)state;
    const char *y = "db:\n  host: h1\n  ports: [1, 2]\nname: app\n";
    json_t *j = sc_template_data_parse(y, strlen(y));
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "db"), "host")), "h1");
    assert_int_equal(json_array_size(json_object_get(json_object_get(j, "db"), "ports")), 2);
    json_decref(j);
    j = sc_template_data_parse("{\"a\": 1}", 8);
    assert_int_equal(json_integer_value(json_object_get(j, "a")), 1);
    json_decref(j);
    j = sc_template_data_parse("plain text: [", 13);
    assert_string_equal(json_string_value(j), "plain text: [");
    json_decref(j);
    /* An alias bomb stays bounded: kept as text. */
    const char *bomb =
        "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
    j = sc_template_data_parse(bomb, strlen(bomb));
    assert_true(json_is_string(j));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_and_fields),
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_control),
        cmocka_unit_test(test_vault_example),
        cmocka_unit_test(test_errors_have_positions),
        cmocka_unit_test(test_caller_functions),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_base64_roundtrip),
        cmocka_unit_test(test_data_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
