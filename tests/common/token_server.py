#!/usr/bin/env python3
"""A registry token server (docker/distribution "token" auth), for the test harness.

    token_server.py DIR PORT SERVICE ISSUER USER PASSWORD

Writes DIR/token.key and DIR/token.crt (self-signed; the registry's rootcertbundle), then
serves GET /token?service=…&scope=…[&scope=…] on 127.0.0.1:PORT. USER:PASSWORD (HTTP Basic)
gets every action it asks for on any repository and `registry:catalog:*`; anyone else gets
pull on repositories under `public/` only. A wrong password is a 401. Tokens are RS256 JWTs
carrying the certificate in `x5c`, as distribution 2.x verifies them.
"""

import base64
import datetime
import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

DIR, PORT, SERVICE, ISSUER, USER, PASSWORD = sys.argv[1:7]


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pare-test-token-issuer")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(hours=1))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(key, hashes.SHA256())
)
with open(os.path.join(DIR, "token.crt"), "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
CERT_DER = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def grant(user, scope):
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
    if user == USER:
        allowed = actions
    elif kind == "repository" and name.startswith("public/"):
        allowed = [a for a in actions if a == "pull"]
    else:
        allowed = []
    return {"type": kind, "name": name, "actions": allowed}


def token(user, scopes):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [CERT_DER]}
    t = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": user or "",
        "aud": SERVICE,
        "exp": t + 600,
        "nbf": t - 60,
        "iat": t,
        "jti": uuid.uuid4().hex,
        "access": [g for g in (grant(user, s) for s in scopes) if g],
    }
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    )
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/ready":
            return self.answer(200, {})
        if url.path != "/token":
            return self.answer(404, {})
        q = parse_qs(url.query)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return self.answer(400, {"details": "bad basic auth"})
            if u != USER or p != PASSWORD:
                return self.answer(401, {"details": "wrong user name or password"})
            user = u
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        t = token(user, scopes)
        self.answer(200, {"token": t, "access_token": t, "expires_in": 600})


ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler).serve_forever()
