# SPDX-License-Identifier: Apache-2.0
"""`sidecar logs` parsing and enrichment, end to end through the file output: hostile input
(malformed JSON, invalid UTF-8, a 10 MiB line, empty lines, CRLF), the parsers, multiline
stack traces and the enrichment rules. Counts lines written against records received."""
import json
import socket

from logs_util import file_output, logs_config, metric, wait_lines


def run(sidecar_run, tmp_path, data, n_expected, fmt="ndjson", env=None, **kw):
    d = tmp_path / "in"
    d.mkdir()
    out = tmp_path / "out.log"
    outputs = kw.pop("outputs", None) or [file_output(out, format=fmt)]
    cfg = logs_config([str(d / "*.log")], outputs,
                      db=str(tmp_path / "pos.db"), **kw)
    sc = sidecar_run("logs", config=cfg, env=env)
    (d / "app.log").write_bytes(data)
    got = wait_lines(out, n_expected, timeout=30)
    return sc, got


def test_hostile_lines_json_parser(sidecar_run, tmp_path):
    big = b"x" * (10 << 20)
    lines = [b'{"a":1}', b"{bad json", b"\xff\xfe invalid utf8 \xc3", b"", b'{"b":"crlf"}\r',
             big, b'{"c":3}']
    sc, got = run(sidecar_run, tmp_path, b"\n".join(lines) + b"\n", len(lines), parser="json")
    print(f"hostile: written={len(lines)} received={len(got)}")
    assert len(got) == len(lines)
    ev = [json.loads(x) for x in got]
    assert ev[0] == {"a": 1}
    assert ev[1] == {"message": "{bad json", "parse_error": True}
    assert ev[2] == {"message": "\ufffd\ufffd invalid utf8 \ufffd", "parse_error": True}
    assert ev[3] == {"message": "", "parse_error": True}
    assert ev[4] == {"b": "crlf"}
    assert ev[5]["truncated"] is True and ev[5]["parse_error"] is True
    assert ev[5]["message"] == "x" * (1 << 20)  # max_line_size, flagged, never dropped
    assert ev[6] == {"c": 3}
    assert metric(sc, "sidecar_logs_parse_errors_total") == 4
    assert metric(sc, "sidecar_logs_lines_truncated_total") == 1


def test_ten_mib_line_whole_and_crlf_raw_byte_for_byte(sidecar_run, tmp_path):
    big = bytes(range(32, 127)) * ((10 << 20) // 95)
    lines = [b"first", big, b"", b"crlf", b"last"]
    data = b"first\n" + big + b"\n\ncrlf\r\nlast\n"
    _, got = run(sidecar_run, tmp_path, data, len(lines), fmt="raw", max_line_size="16MiB")
    assert got == lines  # CR of CRLF endings is removed, everything else byte for byte


def test_logfmt_regex_and_time(sidecar_run, tmp_path):
    data = (b'level=info msg="hello world" n=3 ok\n'
            b"not logfmt \"\n"
            b'ts=2024-05-06T07:08:09.5Z msg=t\n')
    _, got = run(sidecar_run, tmp_path, data, 3, parser="logfmt", time_key="ts",
                 keep_time_key=False,
                 outputs=[file_output(tmp_path / "out.log", format="ndjson",
                                      timestamp_field="@t")])
    ev = [json.loads(x) for x in got]
    assert ev[0]["level"] == "info" and ev[0]["msg"] == "hello world" and ev[0]["n"] == "3"
    assert ev[0]["ok"] is True
    assert ev[1]["parse_error"] is True and ev[1]["message"] == 'not logfmt "'
    assert ev[2]["@t"] == "2024-05-06T07:08:09.500000000Z" and "ts" not in ev[2]


def test_regex_parser(sidecar_run, tmp_path):
    data = b"GET /a 200\nPOST /b 500\ngarbage\n"
    _, got = run(sidecar_run, tmp_path, data, 3, parser="regex",
                 regex=r"^(?<method>[A-Z]+) (?<path>\S+) (?<status>\d+)$")
    ev = [json.loads(x) for x in got]
    assert ev[0] == {"method": "GET", "path": "/a", "status": "200"}
    assert ev[1] == {"method": "POST", "path": "/b", "status": "500"}
    assert ev[2] == {"message": "garbage", "parse_error": True}


def test_cri_joins_partials(sidecar_run, tmp_path):
    data = (b"2024-01-01T00:00:00.000000001Z stdout F whole line\n"
            b"2024-01-01T00:00:01Z stderr P part one, \n"
            b"2024-01-01T00:00:01Z stderr P part two, \n"
            b"2024-01-01T00:00:01Z stderr F end\n"
            b"broken\n")
    _, got = run(sidecar_run, tmp_path, data, 3, parser="cri", stream_field="stream",
                 outputs=[file_output(tmp_path / "out.log", format="ndjson",
                                      timestamp_field="t")])
    ev = [json.loads(x) for x in got]
    assert ev[0] == {"t": "2024-01-01T00:00:00.000000001Z", "message": "whole line",
                     "stream": "stdout"}
    assert ev[1] == {"t": "2024-01-01T00:00:01.000000000Z",
                     "message": "part one, part two, end", "stream": "stderr"}
    assert ev[2]["message"] == "broken" and ev[2]["parse_error"] is True  # not CRI framing


def test_enrichment_rename_remove_grep(sidecar_run, tmp_path):
    data = b"\n".join(json.dumps(x).encode() for x in [
        {"lvl": "info", "msg": "a", "secret": "s"},
        {"lvl": "debug", "msg": "b"},
        {"lvl": "error", "msg": "healthcheck"},
        {"lvl": "error", "msg": "c"},
    ]) + b"\n"
    sc, got = run(sidecar_run, tmp_path, data, 2, parser="json",
                  env={"POD_NAME": "web-1"},
                  fields={"pod": "${POD_NAME}", "ns": "${POD_NAMESPACE:-default}"},
                  rename={"lvl": "level"}, remove=["secret"],
                  grep_drop=["msg=^health"], grep_keep=["level=^(info|error)$"],
                  host_field="host", file_field="file")
    ev = [json.loads(x) for x in got]
    assert [e["msg"] for e in ev] == ["a", "c"]
    assert ev[0]["level"] == "info" and "lvl" not in ev[0] and "secret" not in ev[0]
    assert ev[0]["pod"] == "web-1" and ev[0]["ns"] == "default"
    assert ev[0]["host"] == socket.gethostname()
    assert ev[0]["file"].endswith("/in/app.log")
    assert metric(sc, "sidecar_logs_filtered_total") == 2


JAVA = b"""2024-01-01 12:00:00 ERROR boom
java.lang.IllegalStateException: bad
\tat com.example.A.f(A.java:10)
\tat com.example.B.g(B.java:20)
Caused by: java.io.IOException: disk
\tat com.example.C.h(C.java:30)
\t... 5 more
2024-01-01 12:00:01 INFO next
"""


def test_multiline_start_pattern(sidecar_run, tmp_path):
    sc, got = run(sidecar_run, tmp_path, JAVA, 8, fmt="raw",
                  multiline_start=r"^\d{4}-\d\d-\d\d ", multiline_timeout="200ms")
    # raw format writes each record's text: the stack trace is one record of 7 lines
    assert b"\n".join(got) + b"\n" == JAVA
    assert metric(sc, "sidecar_logs_lines_shipped_total", {"output": "file"}) == 2


def test_multiline_indent_rule_json_records(sidecar_run, tmp_path):
    sc, got = run(sidecar_run, tmp_path, JAVA, 3, multiline_indent=True,
                  multiline_timeout="200ms")
    ev = [json.loads(x)["message"] for x in got]
    assert ev[0] == "2024-01-01 12:00:00 ERROR boom"
    assert ev[1].startswith("java.lang.IllegalStateException: bad\n\tat com.example.A")
    assert ev[1].endswith("\t... 5 more")
    assert ev[2] == "2024-01-01 12:00:01 INFO next"  # flushed by the timeout
    assert metric(sc, "sidecar_logs_lines_read_total") == 8


def test_reload_applies_filters_and_refuses_output_changes(sidecar_run, tmp_path):
    import signal
    import time

    from conftest import wait_until
    from logs_util import read_lines
    d = tmp_path / "in"
    d.mkdir()
    out = tmp_path / "out.log"
    base = dict(db=str(tmp_path / "pos.db"))
    sc = sidecar_run("logs", config=logs_config([str(d / "*.log")], [file_output(out)], **base))
    (d / "a.log").write_bytes(b"keep 1\ndrop 1\n")
    wait_lines(out, 2)
    sc.config_path.write_text(logs_config([str(d / "*.log")], [file_output(out)],
                                          grep_drop=["message=^drop"], **base))
    sc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "logs reloaded" in sc.logs(), timeout=10)
    with open(d / "a.log", "ab") as f:
        f.write(b"keep 2\ndrop 2\nkeep 3\n")
    wait_lines(out, 4)
    time.sleep(0.3)
    assert read_lines(out) == [b"keep 1", b"drop 1", b"keep 2", b"keep 3"]
    # Changing the outputs needs a restart: refused, the old config keeps running.
    sc.config_path.write_text(logs_config([str(d / "*.log")],
                                          [file_output(tmp_path / "other.log")], **base))
    status, body, _ = sc.get("/reload", method="POST")
    assert status == 400 and b"restart" in body
    with open(d / "a.log", "ab") as f:
        f.write(b"keep 4\n")
    assert wait_lines(out, 5)[-1] == b"keep 4"


def test_check_rejects_bad_config(run_cli, tmp_path):
    ok = run_cli("logs", "--check", "--path", str(tmp_path / "*.log"), "--parser", "json",
                 "--label", "app=demo", "--output", "loki=http://127.0.0.1:3100")
    assert ok.returncode == 0, ok.stderr
    for args, msg in [(["--parser", "regex"], "needs regex"),
                      (["--output", "kafka=x"], "expected stdout"),
                      (["--grep-drop", "msg=("], "missing closing parenthesis"),
                      (["--multiline-start", "["], "multiline_start"),
                      ([], None)]:
        r = run_cli("logs", "--check", *(["--path", "/x/*.log"] if args else []), *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        if msg:
            assert msg in r.stderr, r.stderr
