#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Turns bench/proxy.sh's raw figures into the proxy section of bench/RESULTS.md.

Input: proxy.tsv (target, round, metric, value per line), proxy-notes.tsv (target, text) and
proxy-meta.txt (key=value). Every figure is reported as the median over the rounds with the
spread (min-max); added latency is computed per round against the direct upstream of the same
round before taking the median. The sidecar's medians are then compared with the peers' and
with the targets of issue 4. Usage: report.py PROXY_TSV NOTES_TSV META_TXT > proxy.md
"""

import statistics
import sys
from collections import defaultdict

HOW = """How (bench/README.md has the details):

- One upstream nginx (fixed 13-byte body, keep-alive, one worker) on CPU {cl}. Each proxy has one
  worker and an upstream keep-alive pool; nginx and HAProxy allow 1,024 connections (a larger
  nginx connection table would inflate its RSS).
- (a) `wrk -t1 -c{lc}`, the proxy pinned alone on CPU {cp}, wrk and upstream on CPU {cl}. A proxy
  busy well below 100 % was not the bottleneck: CPU {cl} and cross-CPU wake-ups were.
- (b) Proxy, upstream and wrk all on CPU {cl}: the proxy's utime+stime (/proc/PID/stat) over the
  run divided by the requests completed.
- (c) {rc} connections each pausing ~{pm} ms between requests (wrk.lua, ~2,000 req/s), in both
  placements; added = the proxy's percentile minus the direct upstream's in the same round.
- (d) RSS of the serving process (nginx: its worker; the Pss row counts all its processes,
  shared pages split): one second after start, and VmHWM after (a)-(c). Then the proxy is
  restarted with room for {ic} connections (nginx, HAProxy: {ic} + 1,024) and its RSS read
  after one request and again while {ic} idle keep-alive client connections are held open.
- (e) `strace -c -f` attached during {ss} s of (a)'s load: total syscalls / requests (strace
  slows the proxy, so only this ratio means anything)."""

TARGETS = ["direct", "nginx", "haproxy", "haproxy_busy", "caddy", "sidecar", "sidecar_policy",
           "sidecar_busy"]
LABELS = {"direct": "direct (no proxy)", "nginx": "nginx", "haproxy": "HAProxy",
          "haproxy_busy": "HAProxy busy-polling", "caddy": "Caddy", "sidecar": "sidecar",
          "sidecar_policy": "sidecar + policy", "sidecar_busy": "sidecar busy_poll"}
MIB = 1024.0
# Qualifies a throughput FAIL when the proxy was far from busy: the load side set the pace.
LOAD_BOUND = " (the proxy was only %.0f%% busy: wrk, the upstream and wake-ups set the pace)"

# (metric, row label, scale applied to the raw value, decimals)
ROWS = [
    ("rps", "(a) throughput, proxy alone on CPU 1 (req/s)", 1, 0),
    ("busy_pct", "(a) proxy CPU busy during (a) (%)", 1, 0),
    ("cpu_us_per_req", "(b) proxy CPU per request, all on CPU 0 (us)", 1, 1),
    ("p50_us", "(c) p50 at ~2,000 req/s, proxy on CPU 1 (us)", 1, 0),
    ("p99_us", "(c) p99 at ~2,000 req/s, proxy on CPU 1 (us)", 1, 0),
    ("added_p50_us", "(c) added p50 over direct, proxy on CPU 1 (us)", 1, 0),
    ("added_p99_us", "(c) added p99 over direct, proxy on CPU 1 (us)", 1, 0),
    ("p50_us_1cpu", "(c) p50 at ~2,000 req/s, all on CPU 0 (us)", 1, 0),
    ("p99_us_1cpu", "(c) p99 at ~2,000 req/s, all on CPU 0 (us)", 1, 0),
    ("added_p50_us_1cpu", "(c) added p50 over direct, all on CPU 0 (us)", 1, 0),
    ("added_p99_us_1cpu", "(c) added p99 over direct, all on CPU 0 (us)", 1, 0),
    ("paced_rps", "(c) rate achieved by the paced runs (req/s)", 1, 0),
    ("rss_idle_kib", "(d) idle RSS after start (MiB)", 1 / MIB, 1),
    ("rss_idle_anon_kib", "(d) of which anonymous, not file-backed (MiB)", 1 / MIB, 1),
    ("rss_peak_kib", "(d) peak RSS after the loads, VmHWM (MiB)", 1 / MIB, 1),
    ("pss_total_kib", "(d) Pss of all its processes after the loads (MiB)", 1 / MIB, 1),
    ("rss_conns_kib", "(d) RSS holding the idle connections (MiB)", 1 / MIB, 1),
    ("rss_conns_added_kib", "(d) RSS added by the idle connections (MiB)", 1 / MIB, 1),
    ("syscalls_per_req", "(e) syscalls per request (strace -c)", 1, 1),
]
NOISE_ROWS = [("background_pct", "machine busy before the runs, both CPUs (%): noise", 1, 0)]
TOTALS = [("errors", "wrk socket errors + timeouts, all runs"),
          ("non2xx", "non-2xx responses, all runs")]


def load(tsv):
    """Returns figures[target][metric] = {round: value}, with the added latencies derived."""
    figures = defaultdict(lambda: defaultdict(dict))
    with open(tsv) as f:
        for line in f:
            target, rnd, metric, value = line.rstrip("\n").split("\t")
            if value != "":
                figures[target][metric][int(rnd)] = float(value)
    direct = figures.get("direct", {})
    for target in TARGETS:
        if target == "direct" or target not in figures:
            continue
        for pct in ("p50_us", "p99_us", "p50_us_1cpu", "p99_us_1cpu"):
            for rnd, value in figures[target][pct].items():
                base = direct.get(pct, {}).get(rnd)
                if base is not None:
                    figures[target]["added_" + pct][rnd] = value - base
    return figures


def median(figures, target, metric):
    values = list(figures.get(target, {}).get(metric, {}).values())
    return statistics.median(values) if values else None


def cell(figures, target, metric, scale, decimals):
    values = sorted(v * scale for v in figures.get(target, {}).get(metric, {}).values())
    if not values:
        return "-"
    fmt = "{:,.%df}" % decimals
    text = fmt.format(statistics.median(values))
    if len(values) > 1:
        text += " (" + fmt.format(values[0]) + "-" + fmt.format(values[-1]) + ")"
    return text


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt_ratio(r):
    return "-" if r is None else "%.2f" % r


def verdict(ok, aim=False):
    if ok is None:
        return "not measured"
    if ok:
        return "PASS"
    return "NOT-MET" if aim else "FAIL"


def targets_table(figures):
    """The sidecar against the peers and the issue's targets, on the medians."""
    m = lambda t, k: median(figures, t, k)
    sc = lambda k: m("sidecar", k)
    peers_cpu = [v for v in (m("nginx", "cpu_us_per_req"), m("haproxy", "cpu_us_per_req")) if v]
    best_cpu = min(peers_cpu) if peers_cpu else None
    peers_sys = [v for v in (m("nginx", "syscalls_per_req"), m("haproxy", "syscalls_per_req"))
                 if v]

    def check(value, limit):
        return None if value is None or limit is None else value <= limit

    def at_least(value, floor):
        return None if value is None or floor is None else value >= floor

    def scaled(factor, value):
        return None if value is None else factor * value

    cpu_r = ratio(sc("cpu_us_per_req"), best_cpu)
    sys_ok = None if sc("syscalls_per_req") is None or not peers_sys else \
        sc("syscalls_per_req") < min(peers_sys)
    rows = [
        ("rps", "throughput (req/s)", ">= 0.85 x direct",
         at_least(sc("rps"), scaled(0.85, m("direct", "rps"))), False),
        ("cpu_us_per_req", "CPU per request (us)", "<= 0.75 x min(nginx, HAProxy)",
         None if cpu_r is None else cpu_r <= 0.75, False),
        ("cpu_us_per_req", "CPU per request (us)", "aim: <= 0.6 x min(nginx, HAProxy)",
         None if cpu_r is None else cpu_r <= 0.6, True),
        ("syscalls_per_req", "syscalls per request", "aim: fewer than nginx and HAProxy",
         sys_ok, True),
        ("added_p50_us", "added p50 latency, proxy on CPU 1 (us)", "<= 0.5 x HAProxy's",
         check(sc("added_p50_us"), scaled(0.5, m("haproxy", "added_p50_us"))), False),
        ("added_p99_us", "added p99 latency, proxy on CPU 1 (us)", "<= HAProxy's",
         check(sc("added_p99_us"), m("haproxy", "added_p99_us")), False),
        ("added_p50_us_1cpu", "added p50 latency, all on CPU 0 (us)", "<= 0.5 x HAProxy's",
         check(sc("added_p50_us_1cpu"), scaled(0.5, m("haproxy", "added_p50_us_1cpu"))), False),
        ("added_p99_us_1cpu", "added p99 latency, all on CPU 0 (us)", "<= HAProxy's",
         check(sc("added_p99_us_1cpu"), m("haproxy", "added_p99_us_1cpu")), False),
        ("rss_idle_kib", "idle RSS (MiB)", "<= 3 MiB", check(sc("rss_idle_kib"), 3 * MIB), False),
        ("rss_peak_kib", "peak RSS (MiB)", "<= 6 MiB", check(sc("rss_peak_kib"), 6 * MIB), False),
        ("rss_conns_added_kib", "added by the idle connections (MiB)", "<= 40 MiB",
         check(sc("rss_conns_added_kib"), 40 * MIB), False),
    ]
    out = ["| figure (medians) | sidecar | sidecar/nginx | sidecar/HAProxy | sidecar/direct "
           "| target (issue 4) | verdict |",
           "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    busy = sc("busy_pct")
    for metric, label, target, ok, aim in rows:
        scale = 1 / MIB if metric.endswith("_kib") else 1
        decimals = 1 if scale != 1 or metric in ("cpu_us_per_req", "syscalls_per_req") else 0
        value = sc(metric)
        shown = "-" if value is None else ("{:,.%df}" % decimals).format(value * scale)
        direct = fmt_ratio(ratio(value, m("direct", metric))) \
            if metric in ("rps", "cpu_us_per_req", "syscalls_per_req") else "-"
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, shown, fmt_ratio(ratio(value, m("nginx", metric))),
            fmt_ratio(ratio(value, m("haproxy", metric))), direct, target,
            verdict(ok, aim) + (LOAD_BOUND % busy if metric == "rps" and ok is False and busy
                                is not None and busy < 90 else "")))
    return out


def busy_table(figures):
    """Busy polling on the proxy's own CPU: the sidecar's busy_poll against HAProxy with and
    without its busy-polling, on the latency rows it is for."""
    m = lambda t, k: median(figures, t, k)
    out = ["| figure (medians) | sidecar busy_poll | / HAProxy | / HAProxy busy-polling "
           "| / sidecar | target (issue 4, against HAProxy's default) | verdict |",
           "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for metric, label, factor, target in (
            ("added_p50_us", "added p50 latency, proxy on CPU 1 (us)", 0.5, "<= 0.5 x HAProxy's"),
            ("added_p99_us", "added p99 latency, proxy on CPU 1 (us)", 1, "<= HAProxy's"),
            ("rps", "throughput, proxy alone on CPU 1 (req/s)", None, "-"),
            ("busy_pct", "proxy CPU busy during (a) (%)", None, "-")):
        value = m("sidecar_busy", metric)
        limit = m("haproxy", metric)
        ok = None if factor is None or value is None or limit is None else value <= factor * limit
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, "-" if value is None else "{:,.0f}".format(value),
            fmt_ratio(ratio(value, limit)), fmt_ratio(ratio(value, m("haproxy_busy", metric))),
            fmt_ratio(ratio(value, m("sidecar", metric))), target,
            "-" if factor is None else verdict(ok)))
    return out


def main():
    tsv, notes_path, meta_path = sys.argv[1:4]
    figures = load(tsv)
    meta = {}
    with open(meta_path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    notes = []
    with open(notes_path) as f:
        for line in f:
            target, _, text = line.rstrip("\n").partition("\t")
            notes.append("%s: %s" % (LABELS.get(target, target), text))

    shown = [t for t in TARGETS if t in figures]
    p = print
    p("%s round(s) of %s s runs, interleaved across the targets, started %s; each cell is "
      "the median (min-max) over the rounds." % (meta.get("rounds"), meta.get("seconds"),
                                                  meta.get("date")))
    p()
    p("Versions: nginx %s, HAProxy %s, Caddy %s, wrk %s, sidecar %s." % (
        meta.get("version_nginx"), meta.get("version_haproxy"), meta.get("version_caddy"),
        meta.get("version_wrk"), meta.get("version_sidecar", "not built")))
    if "sidecar_cmd" in meta:
        p("The sidecar ran as `%s`." % meta["sidecar_cmd"])
    if "sidecar_policy_cmd" in meta:
        p("With the traffic policy (issue 5) it ran as `%s`." % meta["sidecar_policy_cmd"])
    if "sidecar_busy_cmd" in meta:
        p("With busy polling it ran as `%s`; HAProxy busy-polling is `peers/haproxy.cfg` with "
          "`busy-polling` in its global section." % meta["sidecar_busy_cmd"])
    p()
    p("| figure | " + " | ".join(LABELS[t] for t in shown) + " |")
    p("| --- |" + " ---: |" * len(shown))
    for metric, label, scale, decimals in ROWS:
        if any(figures[t].get(metric) for t in shown):
            p("| %s | %s |" % (label, " | ".join(cell(figures, t, metric, scale, decimals)
                                                  for t in shown)))
    for metric, label, scale, decimals in NOISE_ROWS:
        p("| %s | %s |" % (label, " | ".join(cell(figures, t, metric, scale, decimals)
                                              for t in shown)))
    for metric, label in TOTALS:
        p("| %s | %s |" % (label, " | ".join(
            "%d" % sum(figures[t].get(metric, {}).values()) for t in shown)))
    p()
    if "sidecar" in figures and "sidecar_policy" in figures:
        rps = ratio(median(figures, "sidecar_policy", "rps"), median(figures, "sidecar", "rps"))
        cpu = ratio(median(figures, "sidecar_policy", "cpu_us_per_req"),
                    median(figures, "sidecar", "cpu_us_per_req"))
        p("Traffic policy on (a per-client-IP rate limit never hit, two endpoints, health checks, "
          "outlier detection, breakers) against "
          "the plain data path, on the medians: throughput %s of plain (issue 5: within 5%%: %s), "
          "CPU per request %s of plain." % (
              fmt_ratio(rps), verdict(None if rps is None else rps >= 0.95), fmt_ratio(cpu)))
        p()
    if "sidecar" in figures:
        p("\n".join(targets_table(figures)))
        p()
        p("Verdicts on the medians: PASS meets the target; FAIL misses it; NOT-MET misses an "
          "aim (a stretch goal, not a target).")
        if "sidecar_busy" in figures:
            p()
            p("Busy polling, for a proxy with a CPU of its own (`busy_poll`, off by default; "
              "HAProxy's `busy-polling` likewise). Only the placement with the proxy alone on "
              "CPU 1 is meant for it:")
            p()
            p("\n".join(busy_table(figures)))
    else:
        why = "it did not start or did not proxy; see the notes" if "version_sidecar" in meta \
            else "did not build"
        p("**sidecar: not measured (%s)**; the peers' figures above are the reference it "
          "will be held to." % why)
    p()
    if notes:
        p("Notes from the run:")
        p()
        for n in notes:
            p("- " + n)
        p()
    p(HOW.format(cl=meta.get("cpu_load"), cp=meta.get("cpu_proxy"), lc=meta.get("load_conns"),
                 rc=meta.get("rate_conns"), pm=meta.get("pace_ms"), ic=meta.get("idle_conns"),
                 ss=meta.get("strace_seconds")))


if __name__ == "__main__":
    main()
