# SPDX-License-Identifier: Apache-2.0
"""`sidecar config` with file and ConfigMap-directory sources: atomic writes under a hammering
reader, --once for init containers, the `..data` symlink swap, template errors with positions."""
import json
import os
import threading
import time

from config_peers import metric, write_atomic
from conftest import wait_until


def test_reader_never_sees_a_partial_file(sidecar_run, tmp_path):
    """A reader thread parses the destination as fast as it can during 1,000 updates."""
    src = tmp_path / "src.json"
    dest = tmp_path / "app" / "app.json"
    dest.parent.mkdir()
    pad = "x" * 20000  # large enough that a non-atomic write would be seen half-done

    def doc(i):
        return json.dumps({"version": i, "pad": pad})

    write_atomic(src, doc(0))
    sc = sidecar_run("config", ["--source", f"file://{src}", "--dest", str(dest),
                                "--interval", "1h", "--validate", "json"])
    assert json.loads(dest.read_text())["version"] == 0

    stop = threading.Event()
    stats = {"reads": 0, "errors": [], "versions": set()}

    def reader():
        while not stop.is_set():
            try:
                with open(dest) as f:
                    text = f.read()
                stats["versions"].add(json.loads(text)["version"])
                stats["reads"] += 1
            except Exception as e:  # noqa: BLE001 - any failure is the bug we look for
                stats["errors"].append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 1001):
            write_atomic(src, doc(i))
            wait_until(lambda: json.loads(dest.read_text())["version"] == i, timeout=10,
                       interval=0.001, what=f"version {i}")
    finally:
        stop.set()
        t.join()
    assert stats["errors"] == []
    assert stats["reads"] > 1000
    # Every update reached the destination, each by one atomic replacement.
    assert len(stats["versions"]) > 900, len(stats["versions"])
    oct_mode = oct(os.stat(dest).st_mode & 0o777)
    assert oct_mode == "0o644"
    # No temporary files are left next to the destination.
    assert sorted(p.name for p in dest.parent.iterdir()) == ["app.json"]
    writes = metric(sc, "sidecar_config_fetch_total", {"source": "app.json", "result": "success"})
    print(f"reads={stats['reads']} versions_seen={len(stats['versions'])} fetches={writes}")


def test_once_writes_and_exits(run_cli, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("hello\n")
    dest = tmp_path / "out.txt"
    r = run_cli("config", "--admin", "127.0.0.1:0", "--once", "--source", f"file://{src}",
                "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    assert dest.read_text() == "hello\n"


def test_once_fails_the_init_step_when_a_source_is_missing(run_cli, tmp_path):
    dest = tmp_path / "out.txt"
    t0 = time.monotonic()
    r = run_cli("config", "--admin", "127.0.0.1:0", "--once", "--retries", "2",
                "--retry-backoff", "50ms", "--source", f"file://{tmp_path}/missing.json",
                "--dest", str(dest))
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert "required source failed; the init step fails" in r.stderr
    assert "missing.json" in r.stderr
    assert "attempts=3" in r.stderr
    assert not dest.exists()
    assert took < 10


def test_once_fails_when_an_http_source_is_down(run_cli, tmp_path):
    from conftest import free_port
    r = run_cli("config", "--admin", "127.0.0.1:0", "--once", "--retries", "1",
                "--retry-backoff", "50ms", "--source", f"http://127.0.0.1:{free_port()}/cfg",
                "--dest", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "required source failed" in r.stderr


def make_configmap(root, version, files):
    """Lays out a directory as the kubelet does: ..<ts>/ with the files, ..data -> ..<ts>, and
    each key a symlink through ..data; a new version swaps ..data with one rename."""
    ts = root / f"..2026_11_23_{version:06d}"
    ts.mkdir()
    for k, v in files.items():
        (ts / k).write_text(v)
    tmp = root / "..data_tmp"
    os.symlink(ts.name, tmp)
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.replace(tmp, root / "..data")
    for k in files:
        if not (root / k).is_symlink():
            os.symlink(f"..data/{k}", root / k)
    if old:
        for p in (root / old).iterdir():
            p.unlink()
        (root / old).rmdir()


def test_configmap_data_symlink_swap_is_detected(sidecar_run, tmp_path):
    cm = tmp_path / "cm"
    cm.mkdir()
    make_configmap(cm, 1, {"db_host": "db1", "log_level": "info"})
    dest = tmp_path / "app.conf"
    reloads = tmp_path / "reloads"
    cfg = f"""
interval: 1h
reload_command: ["/bin/sh", "-c", "echo x >> {reloads}"]
reload_debounce: 50ms
sources:
  - url: file://{cm}
    dest: {dest}
    template: |
      {{{{- range $k, $v := .Data }}}}
      {{{{ $k }}}}={{{{ $v }}}}
      {{{{- end }}}}
"""
    sc = sidecar_run("config", config=cfg)
    assert dest.read_text() == "\ndb_host=db1\nlog_level=info\n"
    make_configmap(cm, 2, {"db_host": "db2", "log_level": "debug"})
    # The poll interval is an hour: only the directory watch can see this.
    wait_until(lambda: dest.read_text() == "\ndb_host=db2\nlog_level=debug\n", timeout=5,
               what="the swapped ConfigMap rendered")
    wait_until(lambda: reloads.exists() and reloads.read_text().count("x") == 1, timeout=5,
               what="one reload")
    assert metric(sc, "sidecar_config_reload_total", {"result": "success"}) == 1


def test_configmap_watch_only_triggers_reload(sidecar_run, tmp_path):
    """configmap-reload's job: no destination, a reload when the mounted directory changes."""
    cm = tmp_path / "cm"
    cm.mkdir()
    make_configmap(cm, 1, {"a": "1"})
    reloads = tmp_path / "reloads"
    sidecar_run("config", ["--source", f"file://{cm}", "--interval", "1h",
                           "--reload-debounce", "20ms", "--reload-command", "/bin/sh",
                           "--reload-command", "-c", "--reload-command",
                           f"echo x >> {reloads}"])
    time.sleep(0.3)
    assert not reloads.exists()
    make_configmap(cm, 2, {"a": "2"})
    wait_until(lambda: reloads.exists(), timeout=5, what="a reload")


def test_template_errors_carry_a_position(run_cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
sources:
  - url: file://{tmp_path}/x
    dest: {tmp_path}/y
    template: "line one\\n  {{{{ .Data | nosuch }}}}"
""")
    r = run_cli("config", "-c", str(cfg), "--check")
    assert r.returncode == 1
    assert 'sources[0].template:2:14: function "nosuch" not defined' in r.stderr, r.stderr
    cfg.write_text(f"""
sources:
  - url: file://{tmp_path}/x
    dest: {tmp_path}/y
    template: "{{{{ if .Data }}}}never closed"
""")
    r = run_cli("config", "-c", str(cfg), "--check")
    assert r.returncode == 1
    assert "sources[0].template:1:1: unexpected EOF: this block has no {{end}}" in r.stderr, r.stderr


def test_mode_owner_and_unchanged_content(sidecar_run, tmp_path):
    src = tmp_path / "s"
    src.write_text("a")
    dest = tmp_path / "d"
    sc = sidecar_run("config", ["--source", f"file://{src}", "--dest", str(dest),
                                "--mode", "0640", "--owner", f"{os.getuid()}:{os.getgid()}",
                                "--interval", "50ms"])
    st = os.stat(dest)
    assert st.st_mode & 0o777 == 0o640
    ino = st.st_ino
    time.sleep(0.5)
    # Polled about ten times, never rewritten: the same inode.
    assert os.stat(dest).st_ino == ino
    assert metric(sc, "sidecar_config_fetch_total", {"source": "d", "result": "success"}) >= 5


def test_sigterm_waits_for_the_write_in_flight(sidecar_run, tmp_path):
    """A validation command is running when SIGTERM arrives: the write completes, then exit 0."""
    src = tmp_path / "s"
    src.write_text("one")
    dest = tmp_path / "d"
    marker = tmp_path / "validating"
    cfg = f"""
interval: 1h
validate: ["/bin/sh", "-c", "touch {marker}; sleep 1"]
sources:
  - url: file://{src}
    dest: {dest}
"""
    sc = sidecar_run("config", config=cfg)
    assert dest.read_text() == "one"
    marker.unlink()
    write_atomic(src, "two")
    wait_until(lambda: marker.exists(), timeout=5, what="validation running")
    t0 = time.monotonic()
    assert sc.stop() == 0
    assert time.monotonic() - t0 > 0.5
    assert dest.read_text() == "two"


def test_yaml_source_values_by_path(sidecar_run, tmp_path):
    src = tmp_path / "app.yaml"
    src.write_text("db:\n  host: db.internal\n  hosts: [a, b]\nfeatures:\n  x: on\n")
    dest = tmp_path / "app.env"
    cfg = f"""
interval: 1h
sources:
  - url: file://{src}
    dest: {dest}
    template: |
      DB_HOST={{{{ .Data.db.host }}}}
      DB_HOSTS={{{{ join "," .Data.db.hosts }}}}
      TIMEOUT={{{{ .Data.timeout | default "30s" }}}}
      HOME_SET={{{{ if env "HOME" }}}}yes{{{{ end }}}}
"""
    sidecar_run("config", config=cfg)
    assert dest.read_text() == ("DB_HOST=db.internal\nDB_HOSTS=a,b\nTIMEOUT=30s\n"
                                "HOME_SET=yes\n")


def test_a_burst_of_changes_gives_one_reload(sidecar_run, tmp_path):
    src = tmp_path / "s"
    src.write_text("0")
    dest = tmp_path / "d"
    reloads = tmp_path / "reloads"
    sc = sidecar_run("config", ["--source", f"file://{src}", "--dest", str(dest),
                                "--interval", "1h", "--reload-debounce", "400ms",
                                "--reload-command", "/bin/sh", "--reload-command", "-c",
                                "--reload-command", f"echo x >> {reloads}"])
    time.sleep(0.6)  # the first write's reload
    base = reloads.read_text().count("x") if reloads.exists() else 0
    for i in range(1, 21):
        write_atomic(src, str(i))
        time.sleep(0.02)
    wait_until(lambda: dest.read_text() == "20", timeout=5, what="last version")
    time.sleep(0.8)
    assert reloads.read_text().count("x") == base + 1
    assert metric(sc, "sidecar_config_fetch_total", {"source": "d", "result": "success"}) > 5


def test_reload_replaces_the_sources(sidecar_run, tmp_path):
    """POST /reload (as SIGHUP) with a changed file: the new sources start, the old ones stop;
    an invalid config is refused and the old sources keep running."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a1")
    b.write_text("b1")
    da, db = tmp_path / "da", tmp_path / "db"
    cfg = "interval: 1h\nsources:\n  - url: file://{src}\n    dest: {dest}\n"
    sc = sidecar_run("config", config=cfg.format(src=a, dest=da))
    assert da.read_text() == "a1"
    sc.config_path.write_text(cfg.format(src=a, dest=da) + "    template: '{{ nosuch }}'\n")
    status, body, _ = sc.get("/reload", method="POST")
    assert status == 400 and b"nosuch" in body
    write_atomic(a, "a2")
    wait_until(lambda: da.read_text() == "a2", timeout=5, what="old source still running")
    sc.config_path.write_text(cfg.format(src=b, dest=db))
    status, body, _ = sc.get("/reload", method="POST")
    assert status == 200, body
    wait_until(lambda: db.exists() and db.read_text() == "b1", timeout=5, what="new source")
    write_atomic(a, "a3")
    write_atomic(b, "b2")
    wait_until(lambda: db.read_text() == "b2", timeout=5, what="new source watched")
    time.sleep(0.2)
    assert da.read_text() == "a2"  # the old source was retired


def test_reload_during_a_write_in_flight(sidecar_run, tmp_path):
    """The old source's validation is still running when a reload retires it: its write
    finishes, then the old source is freed (ASan checks the lifetime), the new one runs."""
    a = tmp_path / "a"
    a.write_text("a1")
    d = tmp_path / "d"
    marker = tmp_path / "validating"
    cfg = f"""
interval: 1h
validate: ["/bin/sh", "-c", "touch {marker}; sleep 0.5"]
sources:
  - url: file://{a}
    dest: {d}
"""
    sc = sidecar_run("config", config=cfg)
    marker.unlink()
    write_atomic(a, "a2")
    wait_until(lambda: marker.exists(), timeout=5, what="validation running")
    sc.config_path.write_text(cfg.replace("sleep 0.5", "true"))
    assert sc.get("/reload", method="POST")[0] == 200
    wait_until(lambda: d.read_text() == "a2", timeout=5, what="write finished")
    write_atomic(a, "a3")
    wait_until(lambda: d.read_text() == "a3", timeout=5, what="new source")


def test_each_source_has_its_own_reload_action(sidecar_run, tmp_path):
    """A source with its own reload_* action runs it (debounced on its own) instead of the
    top-level one; a source without one runs the top-level action."""
    import subprocess
    src = {k: tmp_path / f"src-{k}" for k in "abc"}
    dest = {k: tmp_path / f"dest-{k}" for k in "abc"}
    for k, p in src.items():
        p.write_text(f"{k}0")
    top, ra, rb = tmp_path / "top", tmp_path / "ra", tmp_path / "rb"
    pid_file = tmp_path / "app-b.pid"
    app_b = subprocess.Popen(["/bin/sh", "-c", f"trap 'echo u >> {rb}' USR1; "
                              "while :; do sleep 0.05; done"])
    pid_file.write_text(f"{app_b.pid}\n")
    time.sleep(0.2)  # the trap is set before the first signal can come
    cfg = f"""
interval: 1h
reload_command: ["/bin/sh", "-c", "echo x >> {top}"]
reload_debounce: 50ms
sources:
  - url: file://{src['a']}
    dest: {dest['a']}
    reload_command: ["/bin/sh", "-c", "echo a >> {ra}"]
    reload_debounce: 1s
  - url: file://{src['b']}
    dest: {dest['b']}
    reload_pid_file: {pid_file}
    reload_signal: SIGUSR1
    reload_debounce: 50ms
  - url: file://{src['c']}
    dest: {dest['c']}
"""

    def count(p):
        return len(p.read_text().split()) if p.exists() else 0

    try:
        sidecar_run("config", config=cfg)
        # The first write of each source runs its action once.
        wait_until(lambda: (count(top), count(ra), count(rb)) == (1, 1, 1), timeout=10,
                   what="one reload per action after the first writes")
        for i in range(1, 6):
            write_atomic(src["a"], f"a{i}")
            time.sleep(0.02)
        wait_until(lambda: dest["a"].read_text() == "a5", timeout=5, what="a5")
        wait_until(lambda: count(ra) == 2, timeout=5, what="a's own reload")
        write_atomic(src["c"], "c1")
        wait_until(lambda: count(top) == 2, timeout=5, what="the top-level reload for c")
        write_atomic(src["b"], "b1")
        wait_until(lambda: count(rb) == 2, timeout=5, what="b's signal")
        time.sleep(1.2)
        assert (count(top), count(ra), count(rb)) == (2, 2, 2)
    finally:
        app_b.kill()
        app_b.wait()


def test_reload_keeps_a_pending_reload_action(sidecar_run, tmp_path):
    """A file changed and its reload action waits for its debounce when the sidecar's own config
    is reloaded: the app still gets its reload (by the new action), exactly once."""
    src, dest, reloads = tmp_path / "s", tmp_path / "d", tmp_path / "reloads"
    src.write_text("v1")
    cfg = f"""
interval: 1h
reload_command: ["/bin/sh", "-c", "echo x >> {reloads}"]
reload_debounce: 3s
sources:
  - url: file://{src}
    dest: {dest}
"""

    def count():
        return len(reloads.read_text().split()) if reloads.exists() else 0

    sc = sidecar_run("config", config=cfg)
    wait_until(lambda: count() == 1, timeout=15, what="the first write's reload")
    write_atomic(src, "v2")
    wait_until(lambda: dest.read_text() == "v2", timeout=5, what="v2 written")
    assert count() == 1  # still debouncing
    assert sc.get("/reload", method="POST")[0] == 200
    wait_until(lambda: count() == 2, timeout=15, what="the owed reload")
    time.sleep(1.5)
    assert count() == 2


def test_file_source_does_not_load_libcurl(sidecar_run, tmp_path):
    """A file source with no HTTP reload never needs the HTTP client: libcurl (and the OpenSSL it
    links) stays out of the process, so the role idles as small as the others."""
    src = tmp_path / "in.yaml"
    src.write_text("key: value\n")
    dest = tmp_path / "out.yaml"
    sc = sidecar_run("config", ["--source", f"file://{src}", "--dest", str(dest)])
    wait_until(lambda: dest.exists())
    maps = open(f"/proc/{sc.proc.pid}/maps").read()
    assert "libcurl" not in maps and "libssl" not in maps
