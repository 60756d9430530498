# SPDX-License-Identifier: Apache-2.0
"""`sidecar iptables` against the real iptables and nft, each test in a network namespace of its
own (never the host's tables): --cleanup returns iptables-save and nft list ruleset to exactly what
they were, verification after applying fails the command when a rule did not land, --dry-run
prints the golden rules (and those are what gets applied), and bad options are refused."""
import os
import stat
from pathlib import Path

import pytest

from conftest import BIN, ROOT
from iptables_util import Netns, nat_snapshot, need_netns, sh

GOLDEN = ROOT / "tests" / "integration" / "golden"
GOLDEN_ARGS = ["--ipv6", "true", "--exclude-inbound-ports", "8082", "--exclude-outbound-ports",
               "9999", "--exclude-outbound-cidrs", "10.213.3.0/24,fd00:213:3::/64"]


@pytest.fixture
def ns():
    need_netns()
    n = Netns("pod")
    yield n
    n.close()


def add_foreign_rules(ns):
    """Rules someone else (a CNI, the user) owns: they must survive our apply and cleanup."""
    for tool, a, b in (("iptables", "192.0.2.1", "192.0.2.2"), ("ip6tables", "2001:db8::1",
                                                                 "2001:db8::2")):
        ns.run("pod", tool, "-t", "nat", "-A", "PREROUTING", "-d", a, "-p", "tcp", "-j", "RETURN")
        ns.run("pod", tool, "-t", "nat", "-A", "OUTPUT", "-d", b, "-j", "RETURN")
    ns.run("pod", "nft", "-f", "-", input="table inet other {\n chain c {\n  tcp dport 1 accept\n"
                                          " }\n}\n")


def sidecar(ns, *args, env=None):
    return ns.run("pod", BIN, "iptables", *args, env=env, check=False)


@pytest.mark.parametrize("backend,foreign", [("iptables", True), ("nft", True), ("nft", False),
                                             ("auto", True)])
def test_cleanup_restores_exactly(ns, backend, foreign):
    if foreign:
        add_foreign_rules(ns)
    before = nat_snapshot(ns, "pod")
    r = sidecar(ns, "--backend", backend)
    assert r.returncode == 0, r.stderr
    applied = nat_snapshot(ns, "pod")
    assert applied != before
    if backend == "nft":
        assert "table inet sidecar" in applied["nft"]
    else:
        assert "-A PREROUTING -p tcp -j SIDECAR_INBOUND" in applied["iptables-save"]
        assert "-A OUTPUT -p tcp -j SIDECAR_OUTPUT" in applied["ip6tables-save"]
    # Twice is once.
    assert sidecar(ns, "--backend", backend).returncode == 0
    assert nat_snapshot(ns, "pod") == applied

    r = sidecar(ns, "--cleanup", "--backend", backend)
    assert r.returncode == 0, r.stderr
    assert nat_snapshot(ns, "pod") == before
    # Cleaning up what is not there is not an error and changes nothing.
    r = sidecar(ns, "--cleanup", "--backend", backend)
    assert r.returncode == 0, r.stderr
    assert nat_snapshot(ns, "pod") == before


def lo6(ns):
    return "inet6 ::6/128" in ns.run("pod", "ip", "-6", "addr", "show", "dev", "lo").stdout


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_ipv6_adds_inbound_passthrough_address_to_lo_and_cleanup_removes_it(ns, backend):
    assert not lo6(ns)
    r = sidecar(ns, "--backend", backend, "--ipv6", "true")
    assert r.returncode == 0, r.stderr
    assert "::6/128 on lo" in r.stderr
    assert lo6(ns)
    # Twice is once: the address already there is not an error.
    assert sidecar(ns, "--backend", backend, "--ipv6", "true").returncode == 0
    assert ns.run("pod", "ip", "-6", "addr", "show", "dev", "lo").stdout.count("::6/128") == 1
    r = sidecar(ns, "--cleanup", "--backend", backend)
    assert r.returncode == 0, r.stderr
    assert not lo6(ns)


def test_ipv4_only_leaves_lo_alone(ns):
    r = sidecar(ns, "--backend", "nft", "--ipv6", "false")
    assert r.returncode == 0, r.stderr
    assert not lo6(ns)
    r = sidecar(ns, "--dry-run", "--ipv6", "true")
    assert "would add ::6/128 to lo" in r.stderr and not lo6(ns)


def test_cleanup_with_auto_removes_both_backends(ns):
    add_foreign_rules(ns)
    before = nat_snapshot(ns, "pod")
    assert sidecar(ns, "--backend", "iptables").returncode == 0
    assert sidecar(ns, "--backend", "nft").returncode == 0
    r = sidecar(ns, "--cleanup", "--dry-run")
    assert r.returncode == 0
    assert "-X SIDECAR_OUTPUT" in r.stdout and "delete table inet sidecar" in r.stdout
    assert nat_snapshot(ns, "pod") != before  # a dry run removes nothing
    r = sidecar(ns, "--cleanup")
    assert r.returncode == 0, r.stderr
    assert nat_snapshot(ns, "pod") == before


FAKE_NOTE = "# A fake, for the test only: the real tool, but one rule never reaches the kernel.\n"


def fake_tools(tmp_path):
    """A directory of wrappers that lose one rule on the way to the real tool, as a broken or
    racing setup would (fakes: no real tool misbehaves on cue)."""
    d = tmp_path / "fakebin"
    d.mkdir()
    for tool in ("iptables-restore", "ip6tables-restore"):
        real = sh("sh", "-c", f"command -v {tool}").stdout.strip()
        (d / tool).write_text("#!/bin/sh\n" + FAKE_NOTE +
                              f"grep -v -- '-m owner --uid-owner 1337 -j RETURN' | {real} \"$@\"\n")
    real = sh("sh", "-c", "command -v nft").stdout.strip()
    (d / "nft").write_text("#!/bin/sh\n" + FAKE_NOTE +
                           f'if [ "$1" = -f ]; then sed "/meta skuid 1337 return/d" | {real} "$@";'
                           f' else exec {real} "$@"; fi\n')
    for f in d.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return d


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_verification_failure_exits_nonzero(ns, tmp_path, backend):
    env = dict(os.environ, PATH=f"{fake_tools(tmp_path)}:{os.environ['PATH']}")
    r = sidecar(ns, "--backend", backend, env=env)
    assert r.returncode == 1, r.stderr
    assert "verification failed" in r.stderr
    assert "1337" in r.stderr and "return" in r.stderr.lower()
    assert "in place and verified" not in r.stderr
    # With the real tools the same command succeeds and fixes the rules up.
    r = sidecar(ns, "--backend", backend)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_tool_failures_exit_nonzero(ns, tmp_path, backend):
    # Not installed.
    r = sidecar(ns, "--backend", backend, env=dict(os.environ, PATH=str(tmp_path)))
    assert r.returncode == 1
    assert "not found in PATH" in r.stderr
    # Installed but refusing (no privilege): its error is shown.
    r = ns.run("pod", BIN, "iptables", "--backend", backend, uid=1000, check=False)
    assert r.returncode == 1
    assert "sidecar iptables:" in r.stderr and ("exit status" in r.stderr)
    # Nothing applied by either failure.
    assert "SIDECAR" not in ns.run("pod", "iptables-save").stdout
    assert "sidecar" not in ns.run("pod", "nft", "list", "ruleset").stdout


def test_auto_without_any_tool_exits_nonzero(tmp_path):
    r = sh(BIN, "iptables", check=False, env=dict(os.environ, PATH=str(tmp_path)))
    assert r.returncode == 1
    assert "neither iptables" in r.stderr


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_dry_run_matches_golden(backend):
    r = sh(BIN, "iptables", "--dry-run", "--backend", backend, *GOLDEN_ARGS)
    golden = (GOLDEN / f"iptables-dry-run-{backend}.txt").read_text()
    assert r.stdout == golden


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_dry_run_output_is_what_gets_applied(ns, backend):
    # Feed the printed rules to the real tools by hand; then the command finds them exactly as it
    # would have written them, and re-applying changes nothing.
    out = sh(BIN, "iptables", "--dry-run", "--backend", backend, *GOLDEN_ARGS).stdout
    if backend == "nft":
        ns.run("pod", "nft", "-f", "-", input=out)
    else:
        v4, v6 = out.split("# ip6tables-restore", 1)
        ns.run("pod", "iptables-restore", "--noflush", input=v4)
        ns.run("pod", "ip6tables-restore", "--noflush", input="#" + v6)
    before = nat_snapshot(ns, "pod")
    r = sidecar(ns, "--backend", backend, *GOLDEN_ARGS)
    assert r.returncode == 0, r.stderr
    assert nat_snapshot(ns, "pod") == before


@pytest.mark.parametrize("args,message", [
    (["--exclude-outbound-cidrs", "10.0.0.0/33"], "--exclude-outbound-cidrs: invalid CIDR"),
    (["--include-outbound-cidrs", "*,10.0.0.0/8"], "cannot be combined"),
    (["--include-inbound-ports", "*,80"], "cannot be combined"),
    (["--exclude-inbound-ports", "0"], "invalid port \"0\""),
    (["--exclude-outbound-ports", "http"], "invalid port \"http\""),
    (["--proxy-uid", "-1"], "out of range"),
    (["--inbound-port", "15001"], "inbound_port and outbound_port must differ"),
    (["--backend", "ebtables"], "one of: auto, iptables, nft"),
])
def test_bad_options_are_refused(args, message):
    r = sh(BIN, "iptables", "--dry-run", *args, check=False)
    assert r.returncode == 1, r.stdout
    assert message in r.stderr
    assert r.stdout == ""


def test_config_file_errors_have_positions(tmp_path):
    cfg = tmp_path / "ipt.yaml"
    cfg.write_text("backend: nft\nexclude_outbound_ports:\n  - 22\n  - 70000\n")
    r = sh(BIN, "iptables", "-c", cfg, "--check", check=False)
    assert r.returncode == 1
    # (a list's check reports the position of the list, naming the offending entry)
    assert f"{cfg}:3:3:" in r.stderr and 'invalid port "70000"' in r.stderr
    cfg.write_text("backend: nft\nexclude_inbound_ports: [22]\ninclude_outbound_cidrs: [10.0.0.0/8]\n")
    r = sh(BIN, "iptables", "-c", cfg, "--dry-run")
    # A config file key replaces the default list.
    assert "tcp dport 22 return" in r.stdout and "15020" not in r.stdout
    assert "ip daddr 10.0.0.0/8 jump out_redirect" in r.stdout
