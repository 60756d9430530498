# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: authorization on the normalised request, against a recording upstream.
Istio's payment shape over real mTLS (certificates made with openssl: only order-service and
refund-service may POST /api/v1/charge and /api/v1/refund); a DENY on /admin* under every bypass
shape of the mesh CVEs (dot segments plain and encoded, encoded and doubled slashes, backslashes,
fragments, %00, ';' on dot segments, Host in capitals, with a port or a trailing dot), none of
which reaches the application; the normalised path is what goes upstream; AUDIT and dry-run
policies mark the access log and count without enforcing; remote_ip_blocks by X-Forwarded-For;
outbound listeners are not subject to the workload's policies; a bad policy at reload keeps the
old set."""
import signal


from conftest import free_port, http_get
from proxy_util import (Client, access_lines, echo, get, metric, metrics,  # noqa: F401
                        proxy_config, wait_for)
from tls_util import TLSClient, make_leaf, pki, tls_context  # noqa: F401 - pki is a fixture


def inbound(port, **extra):
    return {"name": "in", "address": f"127.0.0.1:{port}",
            "routes": [{"name": "r", "cluster": "app"}], **extra}


def raw(port, request):
    c = Client(port)
    try:
        c.send(request)
        return c.read_response()
    finally:
        c.close()


DENY_ADMIN = [{"name": "deny-admin", "action": "DENY",
               "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]},
              {"name": "deny-admin-host", "action": "DENY",
               "rules": [{"to": [{"operation": {"hosts": ["admin.shop.svc"]}}]}]}]


def test_authz_deny_prefix_bypass_shapes(sidecar_run, echo):
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
        authorization=DENY_ADMIN))
    denied = ["/admin", "/admin/users", "//admin", "///admin/x", "/public/../admin",
              "/public/%2e%2e/admin", "/public/%2E%2E/admin", "/public/.%2e/admin", "/./admin",
              "/%61dmin", "/%61%64%6d%69%6e/x", "/public//..//admin", "/admin;x=1/users",
              "/admin?x=/public", "/x/y/../../admin"]
    refused = ["/public%2F..%2Fadmin", "/public%2f..%2fadmin", "/public%5C..%5Cadmin",
               "/public\\..\\admin", "/public#/../admin", "/admin%00", "/public/..;/admin",
               "/public/%2e%2e;/admin", "/%zzadmin"]
    for path in denied:
        r = get(port, path)
        assert r.status == 403 and r.body == b"RBAC: access denied\n", path
    for path in refused:
        r = get(port, path)
        assert r.status == 400, path
    for host in ["admin.shop.svc", "ADMIN.Shop.SVC", "admin.shop.svc.", "admin.shop.svc:8080",
                 "Admin.Shop.Svc.:80"]:
        r = raw(port, f"GET /public HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert r.status == 403, host
    # Absolute-form: the authority decides, whatever Host says.
    r = raw(port, b"GET http://ADMIN.shop.svc./public HTTP/1.1\r\nHost: other\r\n\r\n")
    assert r.status == 403
    assert not [q for q in echo.requests if "admin" in q.target.lower()], \
        "nothing under /admin reached the application"
    # Allowed requests go upstream normalised.
    for sent, seen in [("/public/./a//b/../c", "/public/a/c"), ("/%70ublic?q=%2F..", "/public?q=%2F.."),
                       ("/a%3fb", "/a%3Fb")]:
        r = get(port, sent)
        assert r.status == 200, sent
        assert r.json()["target"] == seen
    lines = access_lines(sc, len(denied) + len(refused) + 9)
    rbac = [ln for ln in lines if ln["status"] == 403]
    assert rbac and all(ln["flags"] == "RBAC" for ln in rbac)
    assert {ln["authz_policy"] for ln in rbac} == {"deny-admin", "deny-admin-host"}
    assert any(ln["path"] == "/public/a/c" for ln in lines)
    m = metrics(sc)
    assert metric(m, "sidecar_authz_decisions_total", policy="deny-admin", action="DENY",
                  result="denied") == len(denied)
    assert metric(m, "sidecar_authz_decisions_total", policy="", action="ALLOW",
                  result="allowed") == 3


def test_authz_path_options(sidecar_run, echo):
    port, port2 = free_port(), free_port()
    sidecar_run("proxy", config=proxy_config(
        [inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
        path_normalization="merge_slashes", escaped_slashes="decode"))
    assert get(port, "/a%2Fb//c%5Cd").json()["target"] == "/a/b/c/d"
    sidecar_run("proxy", config=proxy_config(
        [inbound(port2)], [{"name": "app", "endpoints": [echo.addr]}],
        path_normalization="none"))
    assert get(port2, "/a/../b//c").json()["target"] == "/a/../b//c"
    assert get(port2, "/a#b").status == 400


def test_authz_payment_over_mtls(sidecar_run, echo, pki):
    order = make_leaf(pki, "order", "URI:spiffe://cluster.local/ns/shop/sa/order-service")
    refund = make_leaf(pki, "refund", "URI:spiffe://cluster.local/ns/shop/sa/refund-service")
    web = make_leaf(pki, "web", "URI:spiffe://cluster.local/ns/shop/sa/order-service.evil")
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [inbound(port, mtls="strict")], [{"name": "app", "endpoints": [echo.addr]}],
        identity={"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                  "ca": str(pki / "ca.pem")},
        workload={"namespace": "payments", "labels": {"app": "payment"}},
        authorization=[{
            "name": "payment", "namespace": "payments", "match_labels": {"app": "payment"},
            "rules": [{"from": [{"source": {"principals": [
                "cluster.local/ns/shop/sa/order-service",
                "cluster.local/ns/shop/sa/refund-service"]}}],
                "to": [{"operation": {"methods": ["POST"],
                                      "paths": ["/api/v1/charge", "/api/v1/refund"]}}]}]}]))

    def call(cert, method, path):
        c = TLSClient(port, tls_context(pki / "ca.pem", *cert))
        try:
            return c.request(path, method=method, body=b"{}" if method == "POST" else None)[0]
        finally:
            c.close()

    assert call(order, "POST", "/api/v1/charge") == 200
    assert call(refund, "POST", "/api/v1/refund") == 200
    assert call(order, "POST", "/api/v1//charge/") == 403  # a trailing slash is another path
    assert call(order, "GET", "/api/v1/charge") == 403
    assert call(order, "POST", "/api/v1/other") == 403
    assert call(web, "POST", "/api/v1/charge") == 403  # '.' and a suffix are not wildcards
    assert call((pki / "client.pem", pki / "client.key"), "POST", "/api/v1/charge") == 403
    lines = access_lines(sc, 7)
    ok = [ln for ln in lines if ln["status"] == 200]
    assert {ln["peer_principal"] for ln in ok} == {"cluster.local/ns/shop/sa/order-service",
                                                   "cluster.local/ns/shop/sa/refund-service"}
    assert all(ln["authz_policy"] == "payment" for ln in ok)
    assert all(ln["authz_policy"] == "" and ln["flags"] == "RBAC"
               for ln in lines if ln["status"] == 403)
    m = metrics(sc)
    assert metric(m, "sidecar_authz_decisions_total", policy="payment", action="ALLOW",
                  result="allowed") == 2
    assert metric(m, "sidecar_authz_decisions_total", policy="", action="ALLOW",
                  result="denied") == 5


def test_authz_audit_dry_run_remote_ip_and_outbound(sidecar_run, echo):
    port, out = free_port(), free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [inbound(port), {"name": "out", "address": f"127.0.0.1:{out}", "direction": "outbound",
                         "routes": [{"name": "o", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]}],
        xff_num_trusted_hops=1,
        authorization=[
            {"name": "audit-pay", "action": "AUDIT",
             "rules": [{"to": [{"operation": {"paths": ["/pay/{**}"]}}]}]},
            {"name": "would-deny", "action": "DENY", "dry_run": True,
             "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}]},
            {"name": "deny-net", "action": "DENY",
             "rules": [{"from": [{"source": {"remote_ip_blocks": ["203.0.113.0/24"]}}]}]}]))
    assert get(port, "/pay/a/b").status == 200
    assert get(port, "/x", method="DELETE").status == 200
    xff = [("X-Forwarded-For", "203.0.113.7, 198.51.100.1")]
    assert get(port, "/x", headers=xff).status == 200  # the trusted hop's entry is 198.51.100.1
    xff = [("X-Forwarded-For", "198.51.100.1, 203.0.113.7")]
    assert get(port, "/x", headers=xff).status == 403
    assert get(port, "/x", headers=[("X-Forwarded-For", "garbage")]).status == 403  # fail closed
    # The outbound listener carries the app's own calls: not judged by its inbound policies.
    assert get(out, "/x", headers=xff).status == 200
    lines = access_lines(sc, 6)
    assert lines[0]["authz_audit"] == "audit-pay"
    assert lines[1]["authz_dry_run"] == "would-deny"
    assert lines[1]["authz_dry_run_result"] == "denied"
    assert "authz_policy" not in lines[-1]
    m = metrics(sc)
    assert metric(m, "sidecar_authz_decisions_total", policy="audit-pay", action="AUDIT",
                  result="audited") == 1
    assert metric(m, "sidecar_authz_decisions_total", policy="would-deny", action="DENY",
                  result="dry_run_denied") == 1
    assert metric(m, "sidecar_authz_decisions_total", policy="deny-net", action="DENY",
                  result="denied") == 1


def test_authz_reload_keeps_old_policies_on_error(sidecar_run, echo):
    port = free_port()

    def cfg(policies):
        return proxy_config([inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
                            authorization=policies)

    sc = sidecar_run("proxy", config=cfg(DENY_ADMIN))
    assert get(port, "/admin").status == 403
    bad = [{"name": "broken", "action": "DENY",
            "rules": [{"from": [{"source": {"ip_blocks": ["10.0.0.0/99"]}}]}]}]
    sc.config_path.write_text(cfg(bad))
    status, body, _ = http_get(sc.admin + "/reload", method="POST")
    assert status != 200 and b"10.0.0.0/99" in body
    assert get(port, "/admin").status == 403, "the old policies still apply"
    sc.config_path.write_text(cfg([{"name": "allow-nothing"}]))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert get(port, "/public").status == 403
    sc.config_path.write_text(cfg([]))
    sc.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: get(port, "/public").status == 200)
