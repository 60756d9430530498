#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Turns bench/tls.sh's raw figures into the TLS section of bench/RESULTS.md.

Input: tls.tsv (target, round, metric, value per line), tls-notes.tsv (target, text) and
tls-meta.txt (key=value). As in report.py, every figure is the median over the rounds with the
spread (min-max); figures that combine two measurements (a target's handshakes/s over the
physical limit of the same round, the mTLS pair's latency over the plaintext pair's of the same
round) are computed per round before taking the median. The sidecar's medians are then compared
with the peers' and with the targets of issue 14. Usage: tls_report.py TLS_TSV NOTES_TSV META_TXT
"""

import statistics
import sys
from collections import defaultdict

from report import cell, median, verdict

PEERS = ["nginx", "haproxy"]
TERMINATING = ["nginx", "haproxy", "sidecar"]
PAIRS = ["pair_plain", "pair_mtls"]
LABELS = {"nginx": "nginx", "haproxy": "HAProxy", "sidecar": "sidecar",
          "pair_plain": "sidecar pair, plaintext", "pair_mtls": "sidecar pair, mTLS",
          "openssl": "openssl speed"}
MIB = 1024.0
IDLE_TARGET_CONNS = 10000
# Istio's published cost of its sidecar with mTLS: 0.20 vCPU per 1,000 requests/s.
ISTIO_US_PER_REQ = 200

HOW = """How (bench/README.md has the details):

- Every server has the same ECDSA P-256 certificate (leaf and intermediate sent) and the system
  OpenSSL ({openssl}), one worker/thread, and proxies to one plain upstream nginx (fixed 13-byte
  body, keep-alive) on CPU {cl}. nginx and HAProxy keep their TLS defaults otherwise (session
  tickets on); the sidecar runs with its quick-start flags `--tls-cert`/`--tls-key`.
- (s) `openssl speed -seconds {sp} ecdsap256` and `ecdhx25519` pinned to CPU {cp} every round: the
  physical limit of full handshakes on that core is 1 / (1/signs + 1/derivations) (a server signs
  once and derives one X25519 secret per handshake; its key generation is left out).
- (h) `bench_tls_handshakes` (bench/tls_handshakes.c) on CPU {cl} keeps {hc} connections in flight,
  each a new TCP connection with a full TLS 1.3 handshake (X25519, no session offered: none is
  resumed) and one `GET /` with `Connection: close`; the proxy alone on CPU {cp}. Its CPU per
  handshake is utime+stime (/proc/PID/stat) over the run divided by the handshakes. When the client
  is near 100 % busy and the proxy is not, the client set the pace, and the capacity row (what one
  fully busy core of the proxy would do at the CPU per handshake measured) is the comparable one.
- (k) `wrk -t1 -c{lc}` over https (one handshake per connection, then keep-alive), proxy, upstream
  and wrk all on CPU {cl}: the proxy's CPU over the run divided by the requests.
- (i) RSS of the serving process (nginx: its worker) one second after start, VmHWM after (h) and
  (k); then (in the first {ir} round(s)) the proxy restarted with room for {ic} connections and its
  RSS read after one request and again while {ic} idle TLS connections (one request each, Python's
  ssl) are held open.
- (m) Two sidecars in a chain, wrk -> "out" (a `tls: {{mode: mesh}}` cluster with the caller's
  SPIFFE identity) -> "in" (`mtls: strict` with its own) -> upstream, against the same two
  sidecars in plaintext: {rc} connections each pausing ~{pm} ms between requests (wrk.lua, ~2,000
  req/s), both sidecars on CPU {cp} and then all on CPU {cl}; each sidecar's CPU over the run
  divided by the requests. The mTLS connection between the sidecars is pooled (keep-alive), as
  between Istio's sidecars."""

ROWS = [
    ("hs_per_s", "(h) full TLS 1.3 handshakes/s, proxy alone on CPU 1", 1, 0),
    ("hs_busy_pct", "(h) proxy CPU busy during (h) (%)", 1, 0),
    ("client_busy_pct", "(h) client CPU busy during (h) (%): ~100 = the client set the pace", 1, 0),
    ("cpu_us_per_hs", "(h) proxy CPU per handshake + request (us)", 1, 0),
    ("hs_capacity", "(h) capacity: handshakes/s of one busy core (1e6 / CPU per handshake)", 1, 0),
    ("hs_of_limit", "(h) measured handshakes/s / physical limit", 1, 3),
    ("capacity_of_limit", "(h) capacity / physical limit", 1, 3),
    ("client_cpu_us_per_hs", "(h) client CPU per handshake + request (us)", 1, 0),
    ("ka_cpu_us_per_req", "(k) proxy CPU per keep-alive HTTPS request, all on CPU 0 (us)", 1, 1),
    ("ka_rps", "(k) requests/s during (k), all on CPU 0", 1, 0),
    ("rss_idle_kib", "(i) idle RSS after start, TLS configured (MiB)", 1 / MIB, 1),
    ("rss_idle_anon_kib", "(i) of which anonymous, not file-backed (MiB)", 1 / MIB, 1),
    ("rss_peak_kib", "(i) peak RSS after (h) and (k), VmHWM (MiB)", 1 / MIB, 1),
    ("rss_conns_kib", "(i) RSS holding the idle TLS connections (MiB)", 1 / MIB, 1),
    ("rss_conns_added_kib", "(i) RSS added by the idle TLS connections (MiB)", 1 / MIB, 1),
    ("rss_per_conn_kib", "(i) RSS added per idle TLS connection (KiB)", 1, 1),
]
PAIR_ROWS = [
    ("p50_us", "(m) p50 at ~2,000 req/s, sidecars on CPU 1 (us)", 1, 0),
    ("p99_us", "(m) p99 at ~2,000 req/s, sidecars on CPU 1 (us)", 1, 0),
    ("cpu_us_out", "(m) CPU per request, caller's sidecar \"out\", on CPU 1 (us)", 1, 1),
    ("cpu_us_in", "(m) CPU per request, callee's sidecar \"in\", on CPU 1 (us)", 1, 1),
    ("p50_us_1cpu", "(m) p50 at ~2,000 req/s, all on CPU 0 (us)", 1, 0),
    ("p99_us_1cpu", "(m) p99 at ~2,000 req/s, all on CPU 0 (us)", 1, 0),
    ("cpu_us_out_1cpu", "(m) CPU per request, \"out\", all on CPU 0 (us)", 1, 1),
    ("cpu_us_in_1cpu", "(m) CPU per request, \"in\", all on CPU 0 (us)", 1, 1),
    ("paced_rps", "(m) rate achieved by the paced runs, sidecars on CPU 1 (req/s)", 1, 0),
    ("rss_idle_kib", "(m) RSS of the larger sidecar after start (MiB)", 1 / MIB, 1),
    ("rss_peak_kib", "(m) peak RSS of the larger sidecar after the runs (MiB)", 1 / MIB, 1),
]
SPEED_ROWS = [
    ("sign_per_s", "ECDSA P-256 signs/s (openssl speed ecdsap256)", 1, 0),
    ("x25519_per_s", "X25519 derivations/s (openssl speed ecdhx25519)", 1, 0),
    ("limit_hs_per_s", "physical limit: 1 / (1/signs + 1/derivations), handshakes/s", 1, 0),
]
NOISE_ROW = ("background_pct", "machine busy before the runs, both CPUs (%): noise", 1, 0)
TOTALS = [("errors", "client errors (connect, TLS, read, timeouts), all runs"),
          ("non2xx", "non-2xx responses, all runs"),
          ("resumed", "handshakes resumed in (h) (must be 0: full handshakes only)")]


def load(tsv):
    """Returns figures[target][metric] = {round: value}, with the per-round derived figures."""
    figures = defaultdict(lambda: defaultdict(dict))
    with open(tsv) as f:
        for line in f:
            target, rnd, metric, value = line.rstrip("\n").split("\t")
            if value != "":
                figures[target][metric][int(rnd)] = float(value)
    limits = figures.get("openssl", {}).get("limit_hs_per_s", {})
    for target in TERMINATING:
        if target not in figures:
            continue
        fig = figures[target]
        for rnd, us in fig.get("cpu_us_per_hs", {}).items():
            if us > 0:
                fig["hs_capacity"][rnd] = 1e6 / us
        for rnd, hs in fig.get("hs_per_s", {}).items():
            if limits.get(rnd):
                fig["hs_of_limit"][rnd] = hs / limits[rnd]
        for rnd, cap in list(fig.get("hs_capacity", {}).items()):
            if limits.get(rnd):
                fig["capacity_of_limit"][rnd] = cap / limits[rnd]
    plain, mtls = figures.get("pair_plain", {}), figures.get("pair_mtls", {})
    for metric, _, _, _ in PAIR_ROWS:
        if metric == "paced_rps":
            continue
        for rnd, value in mtls.get(metric, {}).items():
            base = plain.get(metric, {}).get(rnd)
            if base is not None:
                figures["pair_added"][metric][rnd] = value - base
    return figures


def table(figures, shown, rows, out):
    out.append("| figure | " + " | ".join(LABELS.get(t, t) for t in shown) + " |")
    out.append("| --- |" + " ---: |" * len(shown))
    for metric, label, scale, decimals in rows:
        if any(figures[t].get(metric) for t in shown):
            out.append("| %s | %s |" % (label, " | ".join(
                cell(figures, t, metric, scale, decimals) for t in shown)))


def totals(figures, shown, out):
    """The noise and the error counts; "-" in the derived pair_added column."""
    metric, label, scale, decimals = NOISE_ROW
    out.append("| %s | %s |" % (label, " | ".join(
        "-" if t == "pair_added" else cell(figures, t, metric, scale, decimals) for t in shown)))
    for metric, label in TOTALS:
        if metric == "resumed" and not any(t in TERMINATING for t in shown):
            continue
        out.append("| %s | %s |" % (label, " | ".join(
            "-" if t == "pair_added" else "%d" % sum(figures[t].get(metric, {}).values())
            for t in shown)))


def spread(values, decimals):
    """A dict of per-round values as "median (min-max)"; "-" when empty."""
    vals = sorted(values.values())
    if not vals:
        return "-"
    fmt = "{:,.%df}" % decimals
    text = fmt.format(statistics.median(vals))
    if len(vals) > 1:
        text += " (" + fmt.format(vals[0]) + "-" + fmt.format(vals[-1]) + ")"
    return text


def per_round(figures, metric, peers, pick=None):
    """{round: the sidecar's figure over the peer's (pick: over the better of the peers) in the
    same round}: ratios whose spread says how steady the comparison was."""
    out = {}
    for rnd, value in figures.get("sidecar", {}).get(metric, {}).items():
        theirs = [figures.get(p, {}).get(metric, {}).get(rnd) for p in peers]
        theirs = [v for v in theirs if v]
        if theirs and (pick is not None or len(theirs) == 1):
            out[rnd] = value / (pick(theirs) if pick else theirs[0])
    return out


def targets_table(figures, meta):
    """The sidecar against the peers and the targets of issue 14: ratios taken round by round
    (median and min-max over the rounds), verdicts on their medians."""
    sc = figures.get("sidecar", {})
    out = ["| figure | sidecar | sidecar/nginx | sidecar/HAProxy | sidecar/better peer "
           "| target (issue 14) | verdict |", "| --- | ---: | ---: | ---: | ---: | --- | --- |"]

    def row(label, values, target, ok, decimals=0, extra="", metric=None, pick=None,
            scale=1):
        """values: {round: figure}; metric: the raw figure set against the peers round by round,
        pick: max or min, which peer is the better one."""
        ratios = [{}, {}, {}]
        if metric is not None:
            ratios = [per_round(figures, metric, ["nginx"]),
                      per_round(figures, metric, ["haproxy"]),
                      per_round(figures, metric, PEERS, pick)]
        shown = spread({r: v * scale for r, v in values.items()}, decimals)
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, shown, spread(ratios[0], 2), spread(ratios[1], 2), spread(ratios[2], 2),
            target, ("-" if ok == "-" else verdict(ok)) + extra))

    def med(values):
        return statistics.median(values.values()) if values else None

    def holds(values, test):
        v = med(values)
        return None if v is None else test(v)

    hs_better = per_round(figures, "hs_per_s", PEERS, max)
    extra = ""
    busy, cbusy = median(figures, "sidecar", "hs_busy_pct"), \
        median(figures, "sidecar", "client_busy_pct")
    if busy is not None and cbusy is not None and busy < 90:
        if cbusy >= 90:
            extra = (" (client-bound: the client was %.0f%% busy, the sidecar %.0f%%; the "
                     "capacity row compares the proxies)" % (cbusy, busy))
        else:
            extra = (" (neither side saturated: the client was %.0f%% busy, the sidecar %.0f%%, "
                     "so other work on the machine set the pace; the capacity row compares the "
                     "proxies)" % (cbusy, busy))
    row("full TLS 1.3 handshakes/s, measured", sc.get("hs_per_s", {}),
        ">= 1.0 x the better peer", holds(hs_better, lambda v: v >= 1.0), extra=extra,
        metric="hs_per_s", pick=max)
    row("handshakes/s capacity of one core (1e6 / CPU per handshake)", sc.get("hs_capacity", {}),
        ">= 1.0 x the better peer",
        holds(per_round(figures, "hs_capacity", PEERS, max), lambda v: v >= 1.0),
        metric="hs_capacity", pick=max)
    row("capacity / physical limit of the core (signs + X25519)",
        sc.get("capacity_of_limit", {}), "report", "-", decimals=3)
    row("CPU per keep-alive HTTPS request (us)", sc.get("ka_cpu_us_per_req", {}),
        "<= 0.75 x the better peer",
        holds(per_round(figures, "ka_cpu_us_per_req", PEERS, min), lambda v: v <= 0.75),
        decimals=1, metric="ka_cpu_us_per_req", pick=min)
    mtls = figures.get("pair_mtls", {})
    worst = {r: max(v, mtls["cpu_us_in"][r]) for r, v in mtls.get("cpu_us_out", {}).items()
             if r in mtls.get("cpu_us_in", {})}
    row("mTLS pair: CPU per request per sidecar at ~2,000 req/s, the larger of the two (us)",
        worst, "<= 20 us (Istio: %d us)" % ISTIO_US_PER_REQ, holds(worst, lambda v: v <= 20),
        decimals=1)
    for metric, label in (("p50_us", "p50"), ("p99_us", "p99")):
        row("mTLS pair: added %s over the plaintext pair, sidecars on CPU 1 (us)" % label,
            figures.get("pair_added", {}).get(metric, {}), "report", "-")
    idle = sc.get("rss_idle_kib", {})
    row("idle RSS with TLS configured (MiB)", idle, "<= 6 MiB",
        holds(idle, lambda v: v <= 6 * MIB), decimals=1, metric="rss_idle_kib", pick=min,
        scale=1 / MIB)
    conns = int(meta.get("idle_conns") or IDLE_TARGET_CONNS)
    limit_mib = 80.0 * conns / IDLE_TARGET_CONNS
    target = "<= 80 MiB" if conns == IDLE_TARGET_CONNS else \
        "<= %.1f MiB (80 MiB per 10,000, scaled to %d)" % (limit_mib, conns)
    added = sc.get("rss_conns_added_kib", {})
    row("RSS added by %s idle TLS connections (MiB)" % "{:,}".format(conns), added, target,
        holds(added, lambda v: v <= limit_mib * MIB), decimals=1, metric="rss_conns_added_kib",
        pick=min, scale=1 / MIB)
    return out


def main():
    tsv, notes_path, meta_path = sys.argv[1:4]
    figures = load(tsv)
    meta = {}
    with open(meta_path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    conns = int(meta.get("idle_conns") or IDLE_TARGET_CONNS)
    for target in TERMINATING:
        for rnd, kib in figures.get(target, {}).get("rss_conns_added_kib", {}).items():
            figures[target]["rss_per_conn_kib"][rnd] = kib / conns
    notes = []
    with open(notes_path) as f:
        for line in f:
            target, _, text = line.rstrip("\n").partition("\t")
            notes.append("%s: %s" % (LABELS.get(target, target), text))

    out = []
    p = out.append
    p("%s round(s) of %s s runs, interleaved across the targets, started %s; each cell is the "
      "median (min-max) over the rounds." % (meta.get("rounds"), meta.get("seconds"),
                                              meta.get("date")))
    p("")
    p("Versions: nginx %s, HAProxy %s, wrk %s, %s, sidecar %s." % (
        meta.get("version_nginx"), meta.get("version_haproxy"), meta.get("version_wrk"),
        meta.get("version_openssl"), meta.get("version_sidecar", "not built")))
    for t in TERMINATING:
        if meta.get(t + "_tls"):
            p("%s negotiated %s." % (LABELS[t], meta[t + "_tls"]))
    if "sidecar_cmd" in meta:
        p("The terminating sidecar ran as `%s`." % meta["sidecar_cmd"])
    if "pair_mtls_cmd" in meta:
        p("The mTLS pair ran as %s (the plaintext pair: the same without `identity`, `mtls` and "
          "`tls`)." % meta["pair_mtls_cmd"])
    p("")
    if "openssl" in figures:
        p("The proxies' core (CPU %s), every round:" % meta.get("cpu_proxy"))
        p("")
        table(figures, ["openssl"], SPEED_ROWS, out)
        p("")
    shown = [t for t in TERMINATING if t in figures]
    if shown:
        p("TLS termination in front of the plain upstream:")
        p("")
        table(figures, shown, ROWS, out)
        totals(figures, shown, out)
        p("")
    pairs = [t for t in PAIRS if t in figures]
    if pairs:
        cols = pairs + (["pair_added"] if "pair_added" in figures else [])
        LABELS["pair_added"] = "added by mTLS (per round)"
        p("Two sidecars in a chain, plaintext against mesh mTLS between them:")
        p("")
        table(figures, cols, PAIR_ROWS, out)
        totals(figures, cols, out)
        p("")
    if "sidecar" in figures or "pair_mtls" in figures:
        out.extend(targets_table(figures, meta))
        p("")
        p("Ratios are taken round by round (the sidecar's figure over the peer's of the same "
          "round), then the median (min-max) over the rounds; verdicts on those medians. PASS "
          "meets the target, FAIL misses it, \"report\" rows have no target. Istio's published "
          "figure for its sidecar with mTLS is 0.20 vCPU per 1,000 req/s, %d us per request."
          % ISTIO_US_PER_REQ)
    else:
        p("**sidecar: not measured**; the peers' figures above are the reference it will be held "
          "to.")
    p("")
    if notes:
        p("Notes from the run:")
        p("")
        for n in notes:
            p("- " + n)
        p("")
    p(HOW.format(openssl=meta.get("version_openssl"), cl=meta.get("cpu_load"),
                 cp=meta.get("cpu_proxy"), sp=meta.get("speed_seconds"),
                 hc=meta.get("hs_conns"), lc=meta.get("load_conns"), ic=meta.get("idle_conns"),
                 ir=meta.get("idle_rounds"),
                 rc=meta.get("rate_conns"), pm=meta.get("pace_ms")))
    print("\n".join(out))


if __name__ == "__main__":
    main()
