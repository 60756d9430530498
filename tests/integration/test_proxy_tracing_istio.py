# SPDX-License-Identifier: Apache-2.0
"""Tracing configured the Istio way: Telemetry resources (spec.tracing) and a MeshConfig document
(extensionProviders, defaultProviders) in the -c file, translated into the proxy's tracing block
(docs/istio.md "Telemetry"). The spans reach the fake collectors of fake_otlp.py; nginx is the
real upstream and echoes the trace headers it got."""
import json

from conftest import free_port, http_get
from fake_otlp import FakeOTLP, FakeZipkin  # noqa: F401
from proxy_util import wait_for
from test_proxy_tracing import (  # noqa: F401 - fixtures
    echoed,
    keepalive,
    nginx,
    otlp,
    request,
    spans_metric,
    zipkin,
)


def native(port, up_port, **extra):
    """The proxy's own document: one inbound listener in namespace shop, labels app=reviews."""
    return json.dumps({
        "workload": {"namespace": "shop", "labels": {"app": "reviews", "version": "v1"}},
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}",
                       "routes": [{"name": "api", "match": {"prefix": "/"}, "cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [f"127.0.0.1:{up_port}"]}],
        "access_log": "off", **extra})


def mesh(otlp_port=None, zipkin_port=None, default=None, w3c=False):
    providers = []
    if otlp_port:
        providers.append({"name": "otel", "opentelemetry": {
            "service": "observability/127.0.0.1", "port": otlp_port,
            "http": {"path": "/v1/traces", "timeout": "2s",
                     "headers": [{"name": "x-api-key", "value": "k1"}]}}})
    if zipkin_port:
        z = {"service": "127.0.0.1", "port": zipkin_port}
        if w3c:
            z["traceContextOption"] = "USE_B3_WITH_W3C_PROPAGATION"
        providers.append({"name": "zipkin", "zipkin": z})
    doc = {"extensionProviders": providers}
    if default:
        doc["defaultProviders"] = {"tracing": [default]}
    return json.dumps(doc)


def telemetry(name, ns, tracing, selector=None):
    spec = {"tracing": [tracing]}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return json.dumps({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})


def stream(*docs):
    return "\n---\n".join(docs) + "\n"


def test_telemetry_opentelemetry_provider(sidecar_run, nginx, otlp):  # noqa: F811
    """Mesh-wide 0%, the workload's own Telemetry 100% with custom tags: the most specific wins;
    the proxy document keeps its batching."""
    port = free_port()
    cfg = stream(
        native(port, nginx.port, tracing={"batch_interval": "50ms"}),
        mesh(otlp_port=otlp.port),
        telemetry("mesh-default", "istio-system",
                  {"providers": [{"name": "otel"}], "randomSamplingPercentage": 0}),
        telemetry("reviews", "shop",
                  {"randomSamplingPercentage": 100,
                   "customTags": {"team": {"literal": {"value": "bookinfo"}},
                                  "node": {"environment": {"name": "NODE_NAME",
                                                           "defaultValue": "n/a"}},
                                  "zone": {"environment": {"name": "NO_SUCH_VAR_X",
                                                           "defaultValue": "z0"}}}},
                  selector={"app": "reviews"}),
        telemetry("other-namespace", "payments", {"randomSamplingPercentage": 0}),
    )
    sc = sidecar_run("proxy", config=cfg, env={"NODE_NAME": "node-7"})
    r = request(port, "/items")
    assert r.status == 200
    up = echoed(r.body)
    assert up["tp"].endswith("-01"), "OTLP providers write W3C traceparent, sampled"
    (s,) = otlp.wait_spans(1)
    assert s["attrs"]["team"] == "bookinfo"
    assert s["attrs"]["node"] == "node-7"
    assert s["attrs"]["zone"] == "z0"
    assert s["attrs"]["url.path"] == "/items"
    assert s["span_id"] == up["tp"].split("-")[2]
    assert wait_for(lambda: spans_metric(sc, "exported") == 1)
    sc.stop()


def test_mesh_default_zipkin_provider_with_w3c(sidecar_run, nginx, zipkin):  # noqa: F811
    """No Telemetry names a provider: MeshConfig's defaultProviders.tracing is used; Zipkin's
    USE_B3_WITH_W3C_PROPAGATION writes both header forms."""
    port = free_port()
    cfg = stream(
        native(port, nginx.port, tracing={"batch_interval": "50ms"}),
        mesh(zipkin_port=zipkin.port, default="zipkin", w3c=True),
        telemetry("mesh-default", "istio-system", {"randomSamplingPercentage": 100.0}),
    )
    sc = sidecar_run("proxy", config=cfg)
    r = request(port, "/")
    up = echoed(r.body)
    assert len(up["tid"]) == 32 and up["sampled"] == "1"
    assert up["tp"] == f"00-{up['tid']}-{up['sid']}-01"
    (s,) = zipkin.wait_spans(1)
    assert s["trace_id"] == up["tid"] and s["kind"] == "SERVER"
    sc.stop()


def test_disable_span_reporting_still_propagates(sidecar_run, nginx, otlp):  # noqa: F811
    port = free_port()
    cfg = stream(
        native(port, nginx.port),
        mesh(otlp_port=otlp.port, default="otel"),
        telemetry("quiet", "shop", {"randomSamplingPercentage": 100,
                                    "disableSpanReporting": True}),
    )
    sc = sidecar_run("proxy", config=cfg)
    keepalive(port, 20)
    r = request(port, "/")
    assert echoed(r.body)["tp"].startswith("00-")
    assert "sidecar_tracing_spans_total" not in sc.get("/metrics")[1].decode()
    assert not otlp.requests
    sc.stop()


def refused(run_cli, tmp_path, text):
    p = tmp_path / "istio.yaml"
    p.write_text(text)
    r = run_cli("proxy", "--check", "-c", str(p))
    assert r.returncode != 0
    return r.stderr + r.stdout


def test_unsupported_istio_tracing_refused(run_cli, tmp_path):
    grpc = ("extensionProviders:\n"
            "  - name: otel\n"
            "    opentelemetry: { service: otel.observability, port: 4317 }\n")
    out = refused(run_cli, tmp_path, grpc)
    assert "istio.yaml:3:20: MeshConfig.extensionProviders[0].opentelemetry" in out
    assert "gRPC is not supported" in out
    tel = ("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
           "metadata: { name: t, namespace: istio-system }\nspec:\n")
    out = refused(run_cli, tmp_path, tel + "  tracing: [{ providers: [{ name: nope }] }]\n")
    assert "istio.yaml:5:35:" in out and '"nope" is not among' in out
    out = refused(run_cli, tmp_path, tel + "  accessLogging: [{ providers: [{ name: envoy }] }]\n")
    assert "istio.yaml:5:3: Telemetry/t: accessLogging is not supported" in out
    out = refused(run_cli, tmp_path,
                  tel + "  tracing: [{ match: { mode: SERVER }, randomSamplingPercentage: 5 }]\n")
    assert "istio.yaml:5:30:" in out and "mode SERVER is not supported" in out
    out = refused(run_cli, tmp_path, tel + "  tracing: [{ randomSamplingPercentage: 250 }]\n")
    assert "istio.yaml:5:41:" in out and "percentage from 0 to 100" in out
    out = refused(run_cli, tmp_path,
                  tel + "  tracing: [{ customTags: { h: { header: { name: x-user } } } }]\n")
    assert "istio.yaml:5:42:" in out and "header tags are not supported" in out
    # A field the proxy document sets too.
    out = refused(run_cli, tmp_path, "tracing: { sampling: 3 }\n---\n" + tel +
                  "  tracing: [{ randomSamplingPercentage: 5 }]\n")
    assert "istio.yaml:1:22:" in out and "tracing.sampling is set both" in out
    # Two Telemetry resources at the same level: Istio's tie-break (age) is not in a file.
    out = refused(run_cli, tmp_path, tel + "  tracing: [{ randomSamplingPercentage: 5 }]\n---\n"
                  + tel.replace("name: t,", "name: u,") + "  tracing: [{}]\n")
    assert "istio.yaml:7:1: Telemetry/u:" in out and "Telemetry/t applies at the same level" in out


def test_check_prints_translated_tracing(run_cli, tmp_path):
    p = tmp_path / "istio.yaml"
    p.write_text(stream(native(18080, 18081), mesh(otlp_port=4318, default="otel"),
                        telemetry("t", "shop", {"randomSamplingPercentage": 2.5})))
    r = run_cli("proxy", "--check", "--print", "-c", str(p))
    assert r.returncode == 0, r.stderr
    tr = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])["tracing"]
    assert tr["provider"] == "otlp_http"
    assert tr["endpoint"] == "http://127.0.0.1:4318/v1/traces"
    assert tr["sampling"] == "2.5" and tr["timeout"] == "2s"


def test_reload_applies_telemetry_change(sidecar_run, nginx, otlp):  # noqa: F811
    """A changed Telemetry takes effect at reload, the exporter kept (one worker: it adopts the
    new snapshot before /reload answers)."""
    port = free_port()

    def cfg(pct):
        return stream(native(port, nginx.port, workers=1, tracing={"batch_interval": "50ms"}),
                      mesh(otlp_port=otlp.port, default="otel"),
                      telemetry("mesh-default", "istio-system",
                                {"randomSamplingPercentage": pct}))

    sc = sidecar_run("proxy", config=cfg(0))
    keepalive(port, 50)
    assert spans_metric(sc, "sampled") == 0
    sc.config_path.write_text(cfg(100))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    keepalive(port, 50)
    assert spans_metric(sc, "sampled") == 50
    assert len(otlp.wait_spans(50)) == 50
    sc.stop()
