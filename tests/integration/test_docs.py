# SPDX-License-Identifier: Apache-2.0
"""docs/ documents every option with its default: each role page's reference table must be the
one generated from the role's option table (run `make docs` after changing options)."""
import re

from conftest import ROOT


def test_option_tables_in_docs_are_current(run_cli):
    pages = [p for p in sorted((ROOT / "docs").glob("*.md"))
             if "<!-- options:begin -->" in p.read_text()]
    assert pages, "no role page carries a generated option table"
    for page in pages:
        text = page.read_text()
        m = re.search(r"<!-- options:begin -->\n(.*?)<!-- options:end -->", text, re.S)
        assert m, page
        r = run_cli("docs", page.stem)
        assert r.returncode == 0, r.stderr
        assert m.group(1) == r.stdout, f"{page.name} is stale: run `make docs`"
