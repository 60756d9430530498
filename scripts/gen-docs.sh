#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Regenerates the option reference of each role's page in docs/ from the role's option table: the
# text between the "<!-- options:begin -->" and "<!-- options:end -->" markers is replaced by the
# output of `sidecar docs <role>`. The integration suite checks that docs/ is up to date.
set -eu
bin=${1:-build/sidecar}
cd "$(dirname "$0")/.."
for page in docs/*.md; do
    role=$(basename "$page" .md)
    grep -q '<!-- options:begin -->' "$page" || continue
    table=$(mktemp)
    "$bin" docs "$role" >"$table"
    awk -v table="$table" '
        /<!-- options:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
        /<!-- options:end -->/ { skip = 0 }
        !skip { print }
    ' "$page" >"$page.tmp"
    mv "$page.tmp" "$page"
    rm -f "$table"
done
