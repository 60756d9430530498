// SPDX-License-Identifier: Apache-2.0
// Unit tests for atomic file replacement and its helpers: content, mode and inode replacement,
// no temporary files left behind on success or failure, the unchanged-content check, capped
// reads, the built-in json/yaml syntax checks with positions, and mode/owner parsing.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"

static char dir[] = "/tmp/sc-test-file-XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.' || (e->d_name[1] && e->d_name[1] != '.')) {
            char *p = sc_asprintf("%s/%s", dir, e->d_name);
            unlink(p);
            sc_free(p);
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(dir);
    return 0;
}

static size_t count_entries(void)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

static void test_write_replace_and_same(void **state)
{
    (void)state;
    char *path = sc_asprintf("%s/a.conf", dir);
    char *err = NULL;
    assert_false(sc_file_same(path, "one", 3));
    assert_int_equal(sc_file_write_atomic(path, "one", 3, 0640, (uid_t)-1, (gid_t)-1, &err), 0);
    struct stat st1, st2;
    assert_int_equal(stat(path, &st1), 0);
    assert_int_equal(st1.st_mode & 0777, 0640);
    assert_true(sc_file_same(path, "one", 3));
    assert_false(sc_file_same(path, "two", 3));
    assert_false(sc_file_same(path, "one!", 4));
    assert_int_equal(sc_file_write_atomic(path, "two!", 4, 0600, (uid_t)-1, (gid_t)-1, &err), 0);
    assert_int_equal(stat(path, &st2), 0);
    assert_int_not_equal(st1.st_ino, st2.st_ino); /* replaced by rename, never rewritten */
    assert_int_equal(st2.st_mode & 0777, 0600);
    assert_true(sc_file_same(path, "two!", 4));
    assert_int_equal(count_entries(), 1);
    /* Empty content is a valid file. */
    assert_int_equal(sc_file_write_atomic(path, "", 0, 0644, (uid_t)-1, (gid_t)-1, &err), 0);
    assert_true(sc_file_same(path, "", 0));
    sc_free(path);
}

static void test_write_failure_leaves_nothing(void **state)
{
    (void)state;
    char *path = sc_asprintf("%s/missing-dir/x", dir);
    char *err = NULL;
    assert_int_equal(sc_file_write_atomic(path, "x", 1, 0644, (uid_t)-1, (gid_t)-1, &err), -ENOENT);
    assert_non_null(strstr(err, "cannot create a temporary file"));
    sc_free(err);
    sc_free(path);
    /* A directory in the way: the rename fails and the temp file is removed. */
    char *sub = sc_asprintf("%s/isdir", dir);
    mkdir(sub, 0755);
    size_t before = count_entries();
    err = NULL;
    assert_true(sc_file_write_atomic(sub, "x", 1, 0644, (uid_t)-1, (gid_t)-1, &err) < 0);
    assert_non_null(strstr(err, "rename"));
    assert_int_equal(count_entries(), before);
    sc_free(err);
    rmdir(sub);
    sc_free(sub);
}

static void test_read_capped(void **state)
{
    (void)state;
    char *path = sc_asprintf("%s/r", dir);
    char *err = NULL;
    assert_int_equal(sc_file_write_atomic(path, "0123456789", 10, 0644, (uid_t)-1, (gid_t)-1, &err),
                     0);
    struct sc_buf b;
    sc_buf_init(&b, 10);
    assert_int_equal(sc_file_read(path, &b), 0);
    assert_int_equal(b.len, 10);
    sc_buf_cleanup(&b);
    sc_buf_init(&b, 9);
    assert_int_equal(sc_file_read(path, &b), SC_ETOOBIG);
    sc_buf_cleanup(&b);
    sc_buf_init(&b, 100);
    assert_int_equal(sc_file_read("/nonexistent/x", &b), -ENOENT);
    sc_buf_cleanup(&b);
    unlink(path);
    sc_free(path);
}

static void test_syntax_checks(void **state)
{
    (void)state;
    char *err = NULL;
    assert_int_equal(sc_file_check_syntax("json", "{\"a\": [1]}", 10, &err), 0);
    assert_int_equal(sc_file_check_syntax("json", "{\n\"a\": }", 8, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "2:"));
    assert_non_null(strstr(err, "invalid JSON"));
    sc_free(err);
    assert_int_equal(sc_file_check_syntax("yaml", "a: [1, 2]\nb: c\n", 15, &err), 0);
    err = NULL;
    assert_int_equal(sc_file_check_syntax("yaml", "a: [1, 2\nb: c\n", 14, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "invalid YAML"));
    sc_free(err);
    assert_int_equal(sc_file_check_syntax("toml", "", 0, &err), -EINVAL);
}

static void test_mode_and_owner(void **state)
{
    (void)state;
    mode_t m;
    assert_int_equal(sc_file_parse_mode("0600", &m), 0);
    assert_int_equal(m, 0600);
    assert_int_equal(sc_file_parse_mode("644", &m), 0);
    assert_int_equal(m, 0644);
    assert_int_equal(sc_file_parse_mode("0800", &m), -EINVAL);
    assert_int_equal(sc_file_parse_mode("", &m), -EINVAL);
    assert_int_equal(sc_file_parse_mode("77777", &m), -EINVAL);
    uid_t u;
    gid_t g;
    assert_int_equal(sc_file_parse_owner("1000:2000", &u, &g), 0);
    assert_int_equal(u, 1000);
    assert_int_equal(g, 2000);
    assert_int_equal(sc_file_parse_owner("root", &u, &g), 0);
    assert_int_equal(u, 0);
    assert_int_equal(g, (gid_t)-1);
    assert_int_equal(sc_file_parse_owner(":0", &u, &g), 0);
    assert_int_equal(u, (uid_t)-1);
    assert_int_equal(g, 0);
    assert_int_equal(sc_file_parse_owner(NULL, &u, &g), 0);
    assert_int_equal(sc_file_parse_owner("no-such-user-xyz", &u, &g), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_replace_and_same),
        cmocka_unit_test(test_write_failure_leaves_nothing),
        cmocka_unit_test(test_read_capped),
        cmocka_unit_test(test_syntax_checks),
        cmocka_unit_test(test_mode_and_owner),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
