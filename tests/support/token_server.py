#!/usr/bin/env python3
"""A registry token server for kmodkit's tests (the Docker Registry token authentication protocol:
distribution's docs/spec/auth/token.md), over HTTPS on 127.0.0.1:

  token_server.py --tls-cert PEM --tls-key KEY --signing-cert PEM --signing-key KEY
                  --service NAME --issuer NAME --port-file F
                  [--private REPO=USER:PASSWORD]... [--refused REPO]...

GET /token?service=S&scope=repository:REPO:pull answers {"token": JWT} signed with RS256, the
signing certificate in the x5c header (the registry verifies it against its rootcertbundle).
Anyone gets pull tokens for a repository not named below; a --private one needs Basic auth with
its user and password (401 otherwise); a --refused one is always refused (403). Only pull is
ever granted.
"""
import argparse
import base64
import json
import ssl
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    args = None
    key = None
    x5c = None

    def log_message(self, fmt, *a):
        sys.stderr.write("token_server: " + (fmt % a) + "\n")

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
            return
        query = parse_qs(url.query)
        access = []
        for scope in query.get("scope", []):
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            repo, actions = parts[1], parts[2].split(",")
            if repo in self.args.refused:
                self.reply(403, {"details": "access to %s is refused" % repo})
                return
            if repo in self.args.private:
                given = self.headers.get("Authorization", "")
                want = "Basic " + base64.b64encode(self.args.private[repo].encode()).decode()
                if given != want:
                    self.reply(401, {"details": "%s needs a user and password" % repo},
                               [("WWW-Authenticate", 'Basic realm="kmodkit test tokens"')])
                    return
            access.append({"type": "repository", "name": repo, "actions": [a for a in actions if a == "pull"]})
        now = int(time.time())
        claims = {
            "iss": self.args.issuer,
            "sub": "",
            "aud": query.get("service", [""])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": self.x5c})
        self.reply(200, {"token": token, "expires_in": 300})


def main():
    p = argparse.ArgumentParser()
    for name in ("tls-cert", "tls-key", "signing-cert", "signing-key", "service", "issuer", "port-file"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--private", action="append", default=[])
    p.add_argument("--refused", action="append", default=[])
    args = p.parse_args()
    args.private = dict(x.split("=", 1) for x in args.private)
    Handler.args = args
    with open(args.signing_key, "rb") as f:
        Handler.key = f.read()
    with open(args.signing_cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    Handler.x5c = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode()]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
