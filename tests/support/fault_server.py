#!/usr/bin/env python3
"""A fault-injecting HTTP(S) server for kmodkit's network-fault tests, on 127.0.0.1: serves a
directory (with Range), or forwards requests to upstream servers (a registry and its token
service), and breaks the responses for chosen paths the way networks and servers break them.

  fault_server.py [ROOT] --port-file F [--log F] [--fault PATTERN=KIND[:N][*COUNT]]...
                  [--upstream PREFIX=URL]... [--rewrite FROM=TO]... [--tls-cert PEM --tls-key PEM]

--fault: every request whose path (without the query) PATTERN, a regular expression, is found in
gets the fault KIND (the first COUNT such requests only, when given); the first matching --fault
applies. Kinds:
  reset:N     status, headers and N bytes of the body, then a TCP reset (SO_LINGER 0, close)
  stall:N     status, headers and N bytes of the body, then nothing more on an open connection
  short:N     a Content-Length N bytes more than the body, the body, then the connection closed
  long:N      a Content-Length N bytes less than the body, then the whole body and a close
  html        200 text/html "<html>Service Unavailable</html>" instead of the answer (a captive
              portal, a proxy's error page), whatever the path
  loop        302 to the same path (a redirect loop)
  pingpong    302 to /kmodkit-bounce/PATH, which answers 302 back to PATH (A -> B -> A)
The body faults (reset, stall, short, long) apply to successful answers only (a file that exists,
an upstream's 2xx), so a registry's 401 and its token dance come first.

--upstream PREFIX=URL: paths starting with PREFIX are forwarded to URL (http or https, not
verified), request headers and all. Other paths are files of ROOT.
--rewrite FROM=TO: FROM is replaced with TO in the values of the upstreams' answer headers (a
registry's token realm, so the client asks this server for its token); TO "self" is this
server's own scheme://127.0.0.1:port.

--log: one JSON object per line, flushed at once: {"event": "connect"} for each connection
(before any TLS handshake), {"event": "tls-error", "error": ...} for a handshake that failed, and
{"event": "request", "path": ..., "hop": N, "fault": ..., "status": ...} for each request; hop is
the number of redirects this server made to reach it (0: a request the client made itself).

The port is written to --port-file once listening (give an absolute path: it is not resolved
against ROOT). Stop it with SIGTERM.
"""
import argparse
import http.client
import json
import os
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlparse

HTML = b"<html>Service Unavailable</html>\n"
HOP = "kmodkit-hop"
BOUNCE = "/kmodkit-bounce"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
              "proxy-authenticate", "proxy-authorization"}


class Log:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8") if path else None

    def write(self, **event):
        if self.file is None:
            return
        with self.lock:
            self.file.write(json.dumps(event) + "\n")
            self.file.flush()


class Dropped(Exception):
    """The connection was reset or abandoned on purpose: nothing more is sent on it."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."
    faults = []      # [[compiled pattern, kind, n, requests left to fault (-1: all)]]
    lock = threading.Lock()
    upstreams = []   # [(prefix, parsed url)]
    rewrites = []    # [(from, to)]
    log = None
    origin = ""      # this server's scheme://host:port

    def log_message(self, fmt, *args):
        sys.stderr.write("fault_server: " + (fmt % args) + "\n")

    def setup(self):
        self.log.write(event="connect")
        super().setup()

    def handle(self):
        try:
            super().handle()
        except ssl.SSLError as e:
            self.log.write(event="tls-error", error=str(e))
            self.close_connection = True
        except (Dropped, ConnectionError, BrokenPipeError):
            self.close_connection = True

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    # ---- what the answer would be, before any fault ----

    def fault_for(self, path):
        """The fault entry for a path, or None; a bounce of pingpong is faulted as the path it
        bounces."""
        if path.startswith(BOUNCE + "/"):
            path = path[len(BOUNCE):]
        for fault in self.faults:
            if fault[0].search(path):
                return fault
        return None

    def take(self, fault):
        """Whether `fault` applies to this request (its COUNT is not used up), counting it."""
        with self.lock:
            if fault is None or fault[3] == 0:
                return False
            fault[3] -= 1
            return True

    def file_answer(self, path):
        """(status, headers, body) of the file at `path` of ROOT, honouring Range."""
        local = os.path.join(self.root, path.lstrip("/"))
        if not os.path.realpath(local).startswith(os.path.realpath(self.root)) or not os.path.isfile(local):
            return 404, [("Content-Type", "text/plain")], b"not found\n"
        with open(local, "rb") as f:
            data = f.read()
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
        m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if not m:
            return 200, headers, data
        start = int(m.group(1))
        end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
        if start >= len(data):
            return 416, headers + [("Content-Range", "bytes */%d" % len(data))], b""
        return 206, headers + [("Content-Range", "bytes %d-%d/%d" % (start, end, len(data)))], data[start:end + 1]

    def upstream_answer(self, prefix, up):
        """(status, headers, body, length) of the upstream's answer to this request; length is the
        Content-Length it announced when it sent less (a registry's 416 does), else None."""
        conn_class = http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        kwargs = {"context": ssl._create_unverified_context()} if up.scheme == "https" else {}
        conn = conn_class(up.hostname, up.port, timeout=60, **kwargs)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        path = up.path.rstrip("/") + self.path
        length = None
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            try:
                body = resp.read()
            except http.client.IncompleteRead as e:  # passed on as it came
                body, length = e.partial, len(e.partial) + e.expected
        except (OSError, http.client.HTTPException) as e:
            return 502, [("Content-Type", "text/plain")], ("upstream %s: %s\n" % (up.geturl(), e)).encode(), None
        finally:
            conn.close()
        out = []
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP:
                continue
            for old, new in self.rewrites:
                v = v.replace(old, self.origin if new == "self" else new)
            out.append((k, v))
        return resp.status, out, body, length

    # ---- sending it, broken ----

    def send(self, status, headers, body, length=None):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()

    def reset(self):
        """A TCP reset: SO_LINGER with a zero timeout, then close."""
        time.sleep(0.1)  # the bytes sent so far reach the client first
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        raise Dropped()

    def stall(self):
        """Sends nothing more, until the client gives up and closes the connection."""
        self.wfile.flush()
        while True:
            readable, _, _ = select.select([self.connection], [], [], 1.0)
            if readable:
                try:
                    if not self.connection.recv(4096):
                        raise Dropped()
                except (OSError, ssl.SSLError):
                    raise Dropped()

    def do_GET(self):
        url = urlparse(self.path)
        path = unquote(url.path)
        hop = int(parse_qs(url.query).get(HOP, ["0"])[0])
        fault = self.fault_for(path)
        kind, n = (fault[1], fault[2]) if fault else (None, 0)
        event = {"event": "request", "path": path, "hop": hop, "fault": None}

        if kind in ("loop", "pingpong", "html") and self.take(fault):
            event["fault"] = kind
            if kind == "html":
                self.log.write(status=200, **event)
                self.send(200, [("Content-Type", "text/html")], HTML)
                self.wfile.write(HTML)
                return
            target = path
            if kind == "pingpong":
                target = path[len(BOUNCE):] if path.startswith(BOUNCE + "/") else BOUNCE + path
            self.log.write(status=302, **event)
            self.send(302, [("Location", quote(target, safe="/:@") + "?" + HOP + "=" + str(hop + 1))], b"")
            return

        length = None
        for prefix, up in self.upstreams:
            if path.startswith(prefix):
                status, headers, body, length = self.upstream_answer(prefix, up)
                break
        else:
            status, headers, body = self.file_answer(path)
        if kind not in ("reset", "stall", "short", "long") or not 200 <= status < 300 or not self.take(fault):
            kind = None
        event["fault"] = kind
        self.log.write(status=status, **event)

        if kind in ("reset", "stall"):
            self.send(status, headers, body)
            self.wfile.write(body[:n])
            self.wfile.flush()
            if kind == "reset":
                self.reset()
            self.stall()
        elif kind == "short":
            self.send(status, headers, body, length=len(body) + n)
            self.wfile.write(body)
            self.close_connection = True
        elif kind == "long":
            self.send(status, headers, body, length=max(0, len(body) - n))
            self.wfile.write(body)
            self.close_connection = True
        else:
            self.send(status, headers, body, length)
            self.wfile.write(body)
            self.close_connection = self.close_connection or length is not None


def parse_fault(spec):
    pattern, _, what = spec.rpartition("=")
    what, _, count = what.partition("*")
    kind, _, n = what.partition(":")
    if not pattern or kind not in ("reset", "stall", "short", "long", "html", "loop", "pingpong"):
        raise SystemExit("fault_server: bad --fault %r (PATTERN=KIND[:N])" % spec)
    if kind in ("reset", "stall", "short", "long") and not n.isdigit():
        raise SystemExit("fault_server: --fault %r needs a byte count, KIND:N" % spec)
    if count and not count.isdigit():
        raise SystemExit("fault_server: --fault %r: COUNT is not a number" % spec)
    return [re.compile(pattern), kind, int(n or 0), int(count) if count else -1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default=".")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("--fault", action="append", default=[])
    ap.add_argument("--upstream", action="append", default=[])
    ap.add_argument("--rewrite", action="append", default=[])
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    Handler.root = os.path.abspath(args.root)
    Handler.faults = [parse_fault(f) for f in args.fault]
    for spec in args.upstream:
        prefix, _, url = spec.partition("=")
        Handler.upstreams.append((prefix, urlparse(url)))
    Handler.rewrites = [tuple(spec.split("=", 1)) for spec in args.rewrite]
    Handler.log = Log(args.log)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    scheme = "http"
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # The handshake happens on the handler's thread, at its first read, so it is logged there.
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    Handler.origin = "%s://127.0.0.1:%d" % (scheme, httpd.server_address[1])
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(httpd.server_address[1]))
    os.rename(tmp, args.port_file)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
