// SPDX-License-Identifier: Apache-2.0
// Files other processes read while we replace them. The one invariant: a reader of the
// destination sees either the whole old content or the whole new content, never a mix or a
// truncated file. A new version goes to a temporary file in the same directory, is flushed to
// disk, gets its mode and owner, and is renamed over the old one; the directory is then flushed
// so the rename survives a crash. These calls block (small files, local disks).
#ifndef SC_CORE_FILE_H
#define SC_CORE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"

/* Writes all <len> bytes at <p> to <fd>, retrying short writes and EINTR. Returns 0 or a
 * negative errno. */
int sc_file_write_all(int fd, const void *p, size_t len);

/* Atomically replaces <path> with <len> bytes of <data>, file mode <mode>, and owner <uid>:<gid>
 * when they are not -1. Returns 0, or a negative errno with a new message in <*err>; on error the
 * old file is untouched and no temporary file is left behind. */
int sc_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
                         gid_t gid, char **err);

/* Returns true when <path> exists and holds exactly <len> bytes of <data>. */
bool sc_file_same(const char *path, const void *data, size_t len);

/* Appends the contents of <path> to <out> (capped by <out>'s max). Returns 0, a negative errno,
 * or SC_ETOOBIG. */
int sc_file_read(const char *path, struct sc_buf *out);

/* Checks that <len> bytes of <data> are syntactically valid <kind> ("json" or "yaml"). Returns 0,
 * or SC_ECONFIG with a new "line:col: message" in <*err>; -EINVAL for an unknown kind. */
int sc_file_check_syntax(const char *kind, const void *data, size_t len, char **err);

/* Parses an owner "uid[:gid]" or "user[:group]" (names looked up in the system databases) into
 * <*uid> and <*gid> (-1 when absent). Returns 0 or -EINVAL. */
int sc_file_parse_owner(const char *s, uid_t *uid, gid_t *gid);

/* Parses an octal file mode such as "0600" or "644". Returns 0 or -EINVAL. */
int sc_file_parse_mode(const char *s, mode_t *mode);

#endif
