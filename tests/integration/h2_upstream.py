# SPDX-License-Identifier: Apache-2.0
"""An HTTP/2 upstream written with the `h2` library (Debian's python3-h2), for the proxy's HTTP/2
client tests: plaintext (prior knowledge) or TLS with ALPN h2, one thread per connection, and
behaviours chosen by the request path:

  /echo...          200 with the request body, Content-Length set
  /stream...        200 with the request body, no Content-Length (the proxy chunks it)
  /bytes/N          200 with N pseudo-random bytes, no Content-Length, sent as the window allows
  /trailers         200, a body, then trailers (grpc-status, grpc-message, x-checksum)
  /grpc-unavailable a trailers-only answer (:status 200, grpc-status 14)
  /refuse           RST_STREAM REFUSED_STREAM to the first request, then 200
  /goaway           GOAWAY (last_stream_id below this stream) to the first, closes; then 200
  /reset-mid        a head and some data, then RST_STREAM INTERNAL_ERROR
  /die-mid          a head and some data, then the connection is closed
  /sleep            answers after 0.5 s (streams that overlap)
  /bytes-close/N    N pseudo-random bytes with Content-Length, then GOAWAY and the connection
                    closed as soon as the last byte is out
  /status/N         answers status N
Everything received is recorded (head, body, the connection it came on, the trailers)."""
import socket
import ssl
import threading
import time
import hashlib

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings


def pattern(n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(str(i).encode()).digest()
        i += 1
    return bytes(out[:n])


class Req:
    def __init__(self, conn_no, stream_id, headers):
        self.conn = conn_no
        self.stream_id = stream_id
        self.headers = headers
        self.body = bytearray()
        self.trailers = None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H2Upstream:
    def __init__(self, max_streams=100, tls_ctx=None, window=65535, read_delay=0.0):
        self.max_streams = max_streams
        self.window = window
        self.read_delay = read_delay
        self.tls_ctx = tls_ctx
        self.requests = []
        self.connections = 0
        self.refused = 0
        self.goaways = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.closed = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                no = self.connections
            t = threading.Thread(target=self._serve, args=(s, no), daemon=True)
            t.start()

    def _serve(self, s, no):
        try:
            if self.tls_ctx:
                s = self.tls_ctx.wrap_socket(s, server_side=True)
            Conn(self, s, no).run()
            # A graceful close: FIN after everything sent, then what the peer still sends is
            # read (closing with unread input would reset the connection and lose the output).
            s.shutdown(socket.SHUT_WR)
            s.settimeout(2)
            while s.recv(65536):
                pass
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass


class Conn:
    def __init__(self, up, s, no):
        self.up = up
        self.s = s
        self.no = no
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_inbound_headers=True)
        self.c = h2.connection.H2Connection(config=cfg)
        self.reqs = {}
        self.pending = {}  # stream id -> [bytes left, trailers or None]
        self.timers = []  # (when, callable)
        self.close_after = set()
        self.done = False

    def send(self):
        data = self.c.data_to_send()
        if data:
            self.s.sendall(data)

    def run(self):
        self.c.initiate_connection()
        self.c.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.up.max_streams,
                                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.up.window})
        self.send()
        self.s.settimeout(0.05)
        while not self.done and not self.up.closed:
            try:
                data = self.s.recv(65536)
                if not data:
                    return
            except (socket.timeout, ssl.SSLWantReadError):
                data = None
            if data:
                if self.up.read_delay:
                    time.sleep(self.up.read_delay)
                for ev in self.c.receive_data(data):
                    self.event(ev)
            now = time.monotonic()
            for t in [t for t in self.timers if t[0] <= now]:
                self.timers.remove(t)
                t[1]()
            self.flush_pending()
            self.send()

    def event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            r = Req(self.no, ev.stream_id, ev.headers)
            self.reqs[ev.stream_id] = r
            with self.up.lock:
                self.up.requests.append(r)
        elif isinstance(ev, h2.events.DataReceived):
            r = self.reqs.get(ev.stream_id)
            if r is not None:
                r.body += ev.data
            self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.reqs[ev.stream_id].trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            self.answer(self.reqs[ev.stream_id])
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.done = True

    def respond(self, r, status=200, body=b"", length=True, trailers=None, extra=()):
        h = [(":status", str(status)), ("x-conn", str(self.no))] + list(extra)
        if length:
            h.append(("content-length", str(len(body))))
        end = not body and not trailers
        self.c.send_headers(r.stream_id, h, end_stream=end)
        if not end:
            self.pending[r.stream_id] = [bytes(body), trailers]

    def flush_pending(self):
        for sid in list(self.pending):
            body, trailers = self.pending[sid]
            try:
                while body:
                    w = min(self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size)
                    if w <= 0:
                        break
                    self.c.send_data(sid, body[:w])
                    body = body[w:]
                if body:
                    self.pending[sid][0] = body
                    continue
                del self.pending[sid]
                if trailers:
                    self.c.send_headers(sid, trailers, end_stream=True)
                else:
                    self.c.end_stream(sid)
                if sid in self.close_after:
                    self.c.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR)
                    self.send()
                    self.done = True
            except h2.exceptions.StreamClosedError:
                self.pending.pop(sid, None)

    def answer(self, r):
        path = r.header(":path") or "/"
        if path.startswith("/echo"):
            self.respond(r, body=r.body)
        elif path.startswith("/stream"):
            self.respond(r, body=r.body, length=False)
        elif path.startswith("/bytes-close/"):
            self.close_after.add(r.stream_id)
            self.respond(r, body=pattern(int(path.split("/")[2])))
        elif path.startswith("/bytes/"):
            self.respond(r, body=pattern(int(path.split("/")[2])), length=False)
        elif path == "/trailers":
            body = b"message one;message two"
            self.respond(r, body=body, length=False, trailers=[
                ("grpc-status", "0"), ("grpc-message", "all good"),
                ("x-checksum", hashlib.sha256(body).hexdigest())],
                extra=[("content-type", "application/grpc")])
        elif path == "/grpc-unavailable":
            self.c.send_headers(r.stream_id, [(":status", "200"),
                                              ("content-type", "application/grpc"),
                                              ("grpc-status", "14"),
                                              ("grpc-message", "try later")], end_stream=True)
        elif path == "/refuse":
            with self.up.lock:
                self.up.refused += 1
                first = self.up.refused == 1
            if first:
                self.c.reset_stream(r.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            else:
                self.respond(r, body=b"after refusal")
        elif path == "/goaway":
            with self.up.lock:
                self.up.goaways += 1
                first = self.up.goaways == 1
            if first:
                self.c.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR,
                                        last_stream_id=max(0, r.stream_id - 2))
                self.send()
                self.done = True
            else:
                self.respond(r, body=b"after goaway")
        elif path == "/reset-mid":
            self.c.send_headers(r.stream_id, [(":status", "200")])
            self.c.send_data(r.stream_id, b"partial")
            self.c.reset_stream(r.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif path == "/die-mid":
            self.c.send_headers(r.stream_id, [(":status", "200")])
            self.c.send_data(r.stream_id, b"partial")
            self.send()
            self.done = True
        elif path == "/sleep":
            self.timers.append((time.monotonic() + 0.5, lambda: self.respond(r, body=b"slept")))
        elif path.startswith("/status/"):
            self.respond(r, status=int(path.split("/")[2]), body=b"status")
        else:
            self.respond(r, body=b"hello over h2\n")
