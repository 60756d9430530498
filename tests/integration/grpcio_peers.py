# SPDX-License-Identifier: Apache-2.0
"""Real gRPC servers (Debian's python3-grpcio) for the gRPC health check and gRPC-Web tests.

Debian ships grpcio without grpc_health, so the standard Health service
(grpc.health.v1.Health/Check) is registered here as a generic handler whose messages are encoded
by hand: HealthCheckRequest{string service = 1}, HealthCheckResponse{ServingStatus status = 1}.
The Echo service (test.Echo) has a unary method that answers its payload reversed with metadata
and trailers, and fails with the status the request names; and a server-streaming method that
sends N messages. Messages are raw bytes (no serializer): what the client sends is what arrives.
"""
import threading
from concurrent import futures

import grpc
from fake_otlp import _fields  # the protobuf wire-format walker

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_service(req):
    """The service name of a HealthCheckRequest (field 1, length-delimited)."""
    name = ""
    for num, wt, v in _fields(req):
        if (num, wt) != (1, 2):
            raise ValueError(f"unexpected field {num} of wire type {wt}")
        name = v.decode()
    return name


class GrpcServer:
    """A grpcio server on a free loopback port with the Health and Echo services."""

    def __init__(self, name="s", tls=None):
        self.name = name
        self.status = {"": SERVING}  # service name -> ServingStatus
        self.checks = []  # (service, authority, metadata) of each Health/Check
        self.calls = 0
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(self._check)})
        echo = grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self._stream)})
        self.server.add_generic_rpc_handlers((health, echo))
        if tls:
            creds = grpc.ssl_server_credentials([(tls[0].read_bytes(), tls[1].read_bytes())])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{self.port}"
        self.server.start()

    def _check(self, request, context):
        service = decode_service(request)
        md = dict(context.invocation_metadata())
        with self.lock:
            self.checks.append((service, md))
            st = self.status.get(service)
        if st is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return b"\x08" + varint(st) if st else b""

    def _unary(self, request, context):
        with self.lock:
            self.calls += 1
        md = dict(context.invocation_metadata())
        context.send_initial_metadata((("x-server", self.name),))
        if request.startswith(b"fail:"):
            code = int(request[5:].split(b":")[0])
            context.set_trailing_metadata((("x-trailer", "failed"),))
            context.abort(grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == code)),
                          "asked to fail")
        context.set_trailing_metadata((("x-trailer", "t-" + md.get("x-req", "none")),))
        return request[::-1]

    def _stream(self, request, context):
        n = int(request.split(b":")[0])
        size = int(request.split(b":")[1]) if b":" in request else 10
        context.set_trailing_metadata((("x-count", str(n)),))
        for i in range(n):
            yield bytes([65 + i % 26]) * size

    def close(self):
        self.server.stop(0).wait(5)
