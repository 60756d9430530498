# SPDX-License-Identifier: Apache-2.0
"""The command line: role dispatch, help, version, --check and usage errors."""
import re


def test_help_lists_roles(run_cli):
    r = run_cli("--help")
    assert r.returncode == 0
    assert "Usage: sidecar <role>" in r.stdout
    assert re.search(r"^\s+proxy\s+\S", r.stdout, re.M), r.stdout


def test_no_arguments_is_a_usage_error(run_cli):
    r = run_cli()
    assert r.returncode == 2
    assert "Usage:" in r.stderr


def test_version(run_cli):
    r = run_cli("version")
    assert r.returncode == 0
    assert re.match(r"sidecar \d+\.\d+\.\d+ \(\S+\) libuv \d+\.\d+", r.stdout), r.stdout


def test_role_help_is_generated_from_the_options_table(run_cli):
    r = run_cli("proxy", "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("Usage: sidecar proxy")
    for flag in ("--admin", "--log-format", "--log-level", "--drain-timeout", "-c, --config",
                 "--check"):
        assert flag in out, flag
    assert "127.0.0.1:15000" in out  # the proxy's admin default


def test_unknown_role(run_cli):
    r = run_cli("proxi")
    assert r.returncode == 2
    assert 'unknown role "proxi"' in r.stderr
    assert 'did you mean "proxy"' in r.stderr


def test_unknown_option_with_hint(run_cli):
    r = run_cli("proxy", "--log-levl", "debug")
    assert r.returncode == 2
    assert "log-levl" in r.stderr and "log-level" in r.stderr, r.stderr


def test_option_missing_value(run_cli):
    r = run_cli("proxy", "--admin")
    assert r.returncode == 2
    assert "--admin needs a value" in r.stderr


def test_bad_flag_value(run_cli):
    r = run_cli("proxy", "--check", "--log-format", "xml")
    assert r.returncode != 0
    assert "xml" in r.stderr and "json" in r.stderr, r.stderr


def test_check_valid_config(run_cli, tmp_path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("log_level: debug\nadmin: 127.0.0.1:15999\n")
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_check_typo_reports_position_and_hint(run_cli, tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("admin: 127.0.0.1:15999\n\nlog_levle: debug\n")
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode == 1
    assert f"{cfg}:3:1: " in r.stderr, r.stderr
    assert 'unknown key "log_levle"' in r.stderr
    assert 'did you mean "log_level"' in r.stderr


def test_check_bad_value_position(run_cli, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("log_level: info\ndrain_timeout: 10 parsecs\n")
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode == 1
    assert f"{cfg}:2:16: " in r.stderr, r.stderr


def test_check_bad_address(run_cli, tmp_path):
    cfg = tmp_path / "addr.yaml"
    cfg.write_text("admin: nowhere\n")
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode == 1
    assert f"{cfg}:1:8: " in r.stderr and "invalid address" in r.stderr, r.stderr


def test_check_env_expansion(run_cli, tmp_path):
    cfg = tmp_path / "env.yaml"
    cfg.write_text("admin: ${ADMIN_ADDR:-127.0.0.1:15000}\nlog_level: ${LEVEL}\n")
    r = run_cli("proxy", "-c", str(cfg), "--check", env={"LEVEL": "warn"})
    assert r.returncode == 0, r.stderr
    r = run_cli("proxy", "-c", str(cfg), "--check", env={"LEVEL": ""})
    assert r.returncode == 1
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode == 1
    assert "LEVEL" in r.stderr and f"{cfg}:2:" in r.stderr, r.stderr


def test_missing_config_file(run_cli, tmp_path):
    r = run_cli("proxy", "-c", str(tmp_path / "absent.yaml"), "--check")
    assert r.returncode == 1
    assert "absent.yaml" in r.stderr


def test_wait_until_a_url_answers_2xx(run_cli, sidecar_run):
    """`sidecar wait` exits 0 once the URL answers 2xx; 1 with the last answer or error when the
    timeout passes first (a refused port, a 404)."""
    import socket
    from conftest import free_port
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{free_port()}",
                               "--upstream", f"127.0.0.1:{free_port()}"])
    r = run_cli("wait", "--url", f"http://127.0.0.1:{sc.admin_port}/ready", "--timeout", "5s")
    assert r.returncode == 0, r.stderr
    r = run_cli("wait", "--url", f"http://127.0.0.1:{sc.admin_port}/nope", "--timeout", "300ms")
    assert r.returncode == 1 and "answered 404" in r.stderr, r.stderr
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    r = run_cli("wait", "--url", f"http://127.0.0.1:{port}/ready", "--timeout", "300ms")
    assert r.returncode == 1 and "refused" in r.stderr, r.stderr
