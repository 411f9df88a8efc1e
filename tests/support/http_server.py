#!/usr/bin/env python3
"""A real HTTP server for kmodkit's tests: serves a directory on 127.0.0.1 with Range support,
and can be told to misbehave so download faults are real ones.

  http_server.py ROOT [--port-file F] [--drop PATTERN:BYTES:COUNT] [--no-range]
                 [--tls-cert PEM --tls-key PEM [--client-ca PEM]]

--drop makes the first COUNT responses for paths containing PATTERN close the connection after
BYTES bytes of body (COUNT -1: always). The chosen port is written to --port-file once listening.
--tls-cert/--tls-key serve HTTPS instead; with --client-ca every client must present a certificate
that CA signed (an entitled repository's client certificate), else the handshake is refused.
"""
import argparse
import os
import re
import ssl
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    drops = []  # [pattern, bytes, remaining]
    lock = threading.Lock()
    no_range = False

    def log_message(self, fmt, *args):
        sys.stderr.write("http_server: " + (fmt % args) + "\n")

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and not self.no_range:
            m = re.match(r"bytes=(\d+)-(\d*)$", rng)
            if m:
                start = int(m.group(1))
                if m.group(2):
                    end = min(int(m.group(2)), size - 1)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        cut = None
        with self.lock:
            for d in self.drops:
                if d[0] in self.path and d[2] != 0:
                    cut = d[1]
                    if d[2] > 0:
                        d[2] -= 1
                    break
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "none" if self.no_range else "bytes")
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            left = length if cut is None else min(length, cut)
            while left > 0:
                chunk = f.read(min(left, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            try:
                import socket
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--drop", action="append", default=[])
    ap.add_argument("--no-range", action="store_true")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca")
    args = ap.parse_args()
    for spec in args.drop:
        pattern, nbytes, count = spec.rsplit(":", 2)
        Handler.drops.append([pattern, int(nbytes), int(count)])
    Handler.no_range = args.no_range
    os.chdir(args.root)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    httpd.daemon_threads = True
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.client_ca)
        # The handshake happens on the handler's thread, at its first read, so a client that
        # fails it does not stop the server from accepting the next one.
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(httpd.server_address[1]))
        os.rename(tmp, args.port_file)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
