#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Style checks CI runs: clang-format conformance and the calls STYLE.md bans outside their one
# wrapper file (src/core/alloc.c for the allocator), and no source file over 1,500 lines.
set -eu
cd "$(dirname "$0")/.."
status=0

files=$(git ls-files '*.c' '*.h')
if ! echo "$files" | xargs clang-format --dry-run --Werror 2>/tmp/sidecar-fmt.$$; then
    cat /tmp/sidecar-fmt.$$ | head -40
    echo "lint: files need formatting: run 'make fmt'"
    status=1
fi
rm -f /tmp/sidecar-fmt.$$

banned='\b(sprintf|vsprintf|strcpy|strcat|strncpy|strtok|atoi|atol|gmtime|localtime|gets)[[:space:]]*\('
if git ls-files 'src/*.c' 'src/*.h' | xargs grep -nE "$banned" | grep -v '_r[[:space:]]*('; then
    echo "lint: banned calls above (STYLE.md); use snprintf, sc_strdup, sc_str_to_u64, gmtime_r"
    status=1
fi
alloc='(^|[^_[:alnum:]])(malloc|calloc|realloc|free|strdup|strndup)[[:space:]]*\('
if git ls-files 'src/*.c' 'src/*.h' | grep -v '^src/core/alloc\.c$' | xargs grep -nE "$alloc" \
    | grep -vE '^\S+:[0-9]+:\s*(//|/?\*)'; then
    echo "lint: raw allocator calls above; use sc_malloc/sc_free and friends (core/alloc.h)"
    status=1
fi
long=$(git ls-files '*.c' '*.h' | xargs wc -l | awk '$2 != "total" && $1 > 1500')
if [ -n "$long" ]; then
    echo "$long"
    echo "lint: source files over 1,500 lines above; split them along their seams"
    status=1
fi
[ $status -eq 0 ] && echo "lint: ok"
exit $status
