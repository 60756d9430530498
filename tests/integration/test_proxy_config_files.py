# SPDX-License-Identifier: Apache-2.0
"""Several -c files: `sidecar proxy -c own.json -c istio.yaml -c more/` joins them, in the order
given (a directory stands for its configuration files in name order), into one stream as a
directory is joined; messages name the file and its own line; --check and --check --print read
them all; a reload reads them all again. Other roles take one -c file."""
import json

from conftest import free_port, http_get
from test_proxy_istio import CANARY, DR_SUBSETS, named, own, request, service_entry, stream


def test_several_files_join_check_print_and_reload(sidecar_run, run_cli, tmp_path):
    v1, v2 = named("v1"), named("v2")
    port = free_port()
    a = tmp_path / "proxy.json"
    a.write_text(own(port))
    b = tmp_path / "services.yaml"
    b.write_text(stream(service_entry("reviews", 9080, [(v1, {"version": "v1"}),
                                                        (v2, {"version": "v2"})])))
    d = tmp_path / "routing"
    d.mkdir()
    (d / "10-dr.yaml").write_text(DR_SUBSETS)
    (d / "20-vs.yaml").write_text(CANARY.replace("weight: 10\n", "weight: 0\n").replace(
        "weight: 90", "weight: 100"))
    args = ["-c", str(a), "-c", str(b), "-c", str(d)]

    p = run_cli("proxy", *args, "--check")
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{a},{b},{d}: configuration is valid\n"
    p = run_cli("proxy", *args, "--check", "--print")
    assert p.returncode == 0, p.stderr
    derived = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
    assert derived["listeners"][0]["address"] == f"127.0.0.1:{port}"
    assert derived["listeners"][0]["routes"][0]["name"] == "reviews.0"

    sc = sidecar_run("proxy", args=args)
    assert {body for _, body in request(port, "reviews", n=20)} == {b"v1"}
    # An edit of one file, reloaded: the others are read again with it.
    (d / "20-vs.yaml").write_text(CANARY.replace("weight: 10\n", "weight: 100\n").replace(
        "weight: 90", "weight: 0"))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert {body for _, body in request(port, "reviews", n=20)} == {b"v2"}
    # A broken edit of another file is refused, naming that file and its own line.
    b.write_text(b.read_text().replace("resolution: STATIC", "resolution: STATIC\n  extra: 1"))
    code, body, _ = http_get(sc.admin + "/reload", method="POST")
    assert code != 200
    assert f"{b}:13:3: ServiceEntry/reviews.spec: extra is not supported".encode() in body, body
    assert {body for _, body in request(port, "reviews", n=5)} == {b"v2"}
    v1.close()
    v2.close()


def test_errors_name_the_file_among_several(run_cli, tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(own(free_port()))
    b = tmp_path / "b.yaml"
    b.write_text(DR_SUBSETS.replace("  subsets:", "  bogus: 1\n  subsets:"))
    p = run_cli("proxy", "-c", str(a), f"--config={b}", "--check")
    assert p.returncode == 1
    assert p.stderr == f"sidecar proxy: {b}:7:3: DestinationRule/reviews.spec: bogus is not " \
        "supported\n", p.stderr
    # Two documents of the proxy's own, one per file, are refused as in a directory.
    p = run_cli("proxy", "-c", str(a), "-c", str(a), "--check")
    assert p.returncode == 1
    assert f"{a}:1:1:" in p.stderr, p.stderr
    p = run_cli("proxy", "-c", str(a), "-c", str(tmp_path / "missing.yaml"), "--check")
    assert p.returncode == 1
    assert "missing.yaml: cannot read" in p.stderr, p.stderr


def test_other_roles_take_one_file(run_cli, tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("{}\n")
    p = run_cli("metrics", "-c", str(f), "-c", str(f), "--check")
    assert p.returncode == 2
    assert "one -c file only" in p.stderr, p.stderr
