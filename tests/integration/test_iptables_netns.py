# SPDX-License-Identifier: Apache-2.0
"""`sidecar iptables` end to end, in three network namespaces the test creates (client, pod,
server; see iptables_util): the app's outbound HTTP and the client's inbound HTTP go through the
real `sidecar proxy` running as uid 1337, exclusions bypass it, the proxy's own connections are
not captured again, IPv4 and IPv6, with each backend (iptables and nft) behaving the same.

Each connection's path is read from two witnesses: the proxy's access log (a line per proxied
request, with its listener) and the app's answer (the peer it saw, and the Via header the proxy
adds)."""
import uuid

import pytest

from iptables_util import (APP_UID, CLIENT4, CLIENT6, POD4, POD6, PROXY_UID, SERVER4, SERVER6,
                           SERVER_ALT4, SERVER_ALT6, Pod, nat_snapshot, need_netns)

BACKENDS = ["iptables", "nft"]
EXCLUSIONS = ["--exclude-inbound-ports", "8082", "--exclude-outbound-ports", "9999",
              "--exclude-outbound-cidrs", "10.213.3.0/24,fd00:213:3::/64"]


@pytest.fixture(scope="module", params=BACKENDS)
def pod(request):
    need_netns()
    p = Pod()
    try:
        r = p.iptables("--backend", request.param, "--ipv6", "true", *EXCLUSIONS)
        assert "interception in place and verified" in r.stderr
        p.backend = request.param
        yield p
    finally:
        p.close()


def path():
    return f"/t-{uuid.uuid4().hex[:12]}"


def url(host, port, p):
    return f"http://[{host}]:{port}{p}" if ":" in host else f"http://{host}:{port}{p}"


def through_proxy(pod, listener, p, answer):
    lines = pod.log_lines(p)
    assert len(lines) == 1, f"expected one access-log line for {p}, got {lines}"
    assert lines[0]["listener"] == listener
    assert lines[0]["status"] == 200
    return lines[0]


def bypassed(pod, p, answer):
    assert pod.log_lines(p) == []
    assert "via" not in answer["headers"], answer


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_app_outbound_is_intercepted(pod, family):
    server, listener = (SERVER4, "outbound") if family == "ipv4" else (SERVER6, "outbound6")
    p = path()
    a = pod.get("pod", url(server, 8081, p), uid=APP_UID)
    line = through_proxy(pod, listener, p, a)
    # The original destination is what the proxy connected to; the server saw the proxy's hop.
    assert line["cluster"] == "passthrough"
    assert line["endpoint"] in (f"{server}:8081", f"[{server}]:8081")
    assert a["headers"].get("via") == "1.1 sidecar"
    assert a["port"] == 8081 and a["local"] == server


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_client_inbound_reaches_app_through_proxy(pod, family):
    addr, client = (POD4, CLIENT4) if family == "ipv4" else (POD6, CLIENT6)
    p = path()
    a = pod.get("client", url(addr, 8080, p))
    line = through_proxy(pod, "inbound", p, a)
    # (a dual-stack listener logs an IPv4 client in its mapped form)
    assert line["peer"].removeprefix("::ffff:") == client
    # The proxy cannot yet send from 127.0.0.6: the app sees it on loopback.
    assert a["peer"] == "127.0.0.1" and a["headers"].get("via") == "1.1 sidecar"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_excluded_inbound_port_bypasses(pod, family):
    addr, client = (POD4, CLIENT4) if family == "ipv4" else (POD6, CLIENT6)
    p = path()
    a = pod.get("client", url(addr, 8082, p))
    bypassed(pod, p, a)
    assert a["peer"] == client


@pytest.mark.parametrize("host", [SERVER4, SERVER6, SERVER_ALT4, SERVER_ALT6])
def test_excluded_outbound_port_and_cidr_bypass(pod, host):
    port = 9999 if host in (SERVER4, SERVER6) else 8081
    p = path()
    a = pod.get("pod", url(host, port, p), uid=APP_UID)
    bypassed(pod, p, a)
    assert a["local"] == host and a["port"] == port


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_proxy_own_connections_are_not_captured(pod, family):
    # The proxy's user calling out directly: not redirected to itself (the outbound test shows a
    # single access-log line per proxied request, so its upstream connection did not loop either).
    server = SERVER4 if family == "ipv4" else SERVER6
    p = path()
    a = pod.get("pod", url(server, 8081, p), uid=PROXY_UID)
    bypassed(pod, p, a)


def test_loopback_and_own_address(pod):
    # The app on loopback, and the app calling its own address: the pod talking to itself.
    for host in ("127.0.0.1", "::1", POD4, POD6):
        p = path()
        a = pod.get("pod", url(host, 8080, p), uid=APP_UID)
        bypassed(pod, p, a)
    # The proxy's user calling the pod's own address (not localhost) goes through inbound, as a
    # request the proxy sends to its own pod does in Istio.
    for host in (POD4, POD6):
        p = path()
        a = pod.get("pod", url(host, 8080, p), uid=PROXY_UID)
        through_proxy(pod, "inbound", p, a)
    # ... unless it comes from 127.0.0.6, the inbound passthrough source.
    p = path()
    a = pod.get("pod", url(POD4, 8080, p), uid=PROXY_UID, extra=("--interface", "127.0.0.6"))
    bypassed(pod, p, a)
    assert a["peer"] == "127.0.0.6"


def test_running_again_changes_nothing(pod):
    before = nat_snapshot(pod.ns, "pod", counters=False)
    r = pod.iptables("--backend", pod.backend, "--ipv6", "true", *EXCLUSIONS)
    assert "verified" in r.stderr
    assert nat_snapshot(pod.ns, "pod", counters=False) == before
    # Still intercepting afterwards.
    p = path()
    through_proxy(pod, "outbound", p, pod.get("pod", url(SERVER4, 8081, p), uid=APP_UID))


def test_include_lists_replace_the_rules(pod):
    # New options replace the rules in place (verified), and the include lists narrow capture.
    r = pod.iptables("--backend", pod.backend, "--ipv6", "true", "--include-inbound-ports", "8082",
                     "--include-outbound-cidrs", "10.213.3.0/24,fd00:213:3::/64")
    assert "verified" in r.stderr
    try:
        for host, listener in ((SERVER_ALT4, "outbound"), (SERVER_ALT6, "outbound6")):
            p = path()
            through_proxy(pod, listener, p, pod.get("pod", url(host, 8081, p), uid=APP_UID))
        for host in (SERVER4, SERVER6):
            p = path()
            bypassed(pod, p, pod.get("pod", url(host, 8081, p), uid=APP_UID))
        p = path()
        a = pod.get("client", url(POD4, 8082, p))
        through_proxy(pod, "inbound", p, a)
        assert a["peer"] == "127.0.0.1"
        p = path()
        a = pod.get("client", url(POD4, 8080, p))
        bypassed(pod, p, a)
        assert a["peer"] == CLIENT4
    finally:
        pod.iptables("--backend", pod.backend, "--ipv6", "true", *EXCLUSIONS)
