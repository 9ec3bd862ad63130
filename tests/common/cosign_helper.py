#!/usr/bin/env python3
"""An independent implementation of cosign's published formats, for pare's signature tests.

It shares no code with pare: Python's hashlib (scrypt), python3-nacl (secretbox) and
python3-cryptography (ECDSA P-256), and the registry's HTTP API through urllib.

    cosign_helper.py keygen PREFIX PASSWORD [ecdsa|ed25519|rsa]
        PREFIX.key (cosign's encrypted PEM around a PKCS#8 key, ECDSA P-256 by default) and
        PREFIX.pub
    cosign_helper.py public KEYFILE PASSWORD
        decrypt KEYFILE and print its public key (PEM)
    cosign_helper.py sign REGISTRY REPO DIGEST KEYFILE PASSWORD [IDENTITY [PAYLOAD_DIGEST]]
        push a signature of DIGEST under REPO:sha256-<hex>.sig (payload naming IDENTITY,
        default REGISTRY/REPO, and PAYLOAD_DIGEST, default DIGEST)
    cosign_helper.py sign-referrer REGISTRY REPO DIGEST KEYFILE PASSWORD
        push a signature of DIGEST as an OCI 1.1 referrer (cosign's experimental mode): an
        artifact manifest whose subject is DIGEST, listed under the referrers fallback tag
        REPO:sha256-<hex> (the registry has no referrers API)
    cosign_helper.py verify REGISTRY REPO DIGEST PUBFILE
        print the payload of a valid signature of DIGEST by PUBFILE's key (exit 1: none)
    cosign_helper.py verify-att REGISTRY REPO DIGEST PUBFILE
        print the in-toto statement of a valid attestation of DIGEST (exit 1: none)
"""
import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import nacl.secret
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"


def pem(label, body):
    b = base64.b64encode(body).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def unpem(text):
    lines = [l.strip() for l in text.strip().splitlines()]
    label = lines[0][len("-----BEGIN "):-len("-----")]
    return label, base64.b64decode("".join(lines[1:-1]))


def scrypt_key(password, salt, n):
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1,
                          maxmem=256 * 1024 * 1024, dklen=32)


def encrypt_key(der, password):
    salt, nonce = os.urandom(32), os.urandom(24)
    key = scrypt_key(password, salt, 32768)
    ct = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
    doc = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                   "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(ct).decode()}
    return pem(LABEL, json.dumps(doc).encode())


def decrypt_key(path, password):
    label, body = unpem(open(path).read())
    assert label in (LABEL, "ENCRYPTED COSIGN PRIVATE KEY"), label
    doc = json.loads(body)
    assert doc["kdf"]["name"] == "scrypt" and doc["cipher"]["name"] == "nacl/secretbox"
    p = doc["kdf"]["params"]
    assert p["r"] == 8 and p["p"] == 1
    key = scrypt_key(password, base64.b64decode(doc["kdf"]["salt"]), p["N"])
    der = nacl.secret.SecretBox(key).decrypt(base64.b64decode(doc["ciphertext"]),
                                             base64.b64decode(doc["cipher"]["nonce"]))
    return serialization.load_der_private_key(der, password=None)


def public_pem(priv):
    return priv.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign_with(priv, msg):
    """cosign's signature schemes: ECDSA P-256/SHA-256 (DER), Ed25519, RSA PKCS#1 v1.5/SHA-256."""
    if isinstance(priv, ec.EllipticCurvePrivateKey):
        return priv.sign(msg, ec.ECDSA(hashes.SHA256()))
    if isinstance(priv, rsa.RSAPrivateKey):
        return priv.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    return priv.sign(msg)


def verify_with(pub, msg, sig):
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
        else:
            pub.verify(sig, msg)
        return True
    except InvalidSignature:
        return False


# ---------------------------------------------------------------- registry (plain HTTP)

def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def put_blob(reg, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    st, _, _ = http("HEAD", f"http://{reg}/v2/{repo}/blobs/{digest}")
    if st == 200:
        return digest
    st, h, b = http("POST", f"http://{reg}/v2/{repo}/blobs/uploads/")
    assert st == 202, (st, b)
    loc = h.get("Location") or h.get("location")
    loc = urllib.parse.urljoin(f"http://{reg}/", loc)
    sep = "&" if "?" in loc else "?"
    st, _, b = http("PUT", f"{loc}{sep}digest={urllib.parse.quote(digest)}", data,
                    {"Content-Type": "application/octet-stream"})
    assert st == 201, (st, b)
    return digest


def get_manifest(reg, repo, ref):
    st, _, b = http("GET", f"http://{reg}/v2/{repo}/manifests/{ref}",
                    headers={"Accept": OCI_MANIFEST})
    return json.loads(b) if st == 200 else None


def get_blob(reg, repo, digest):
    st, _, b = http("GET", f"http://{reg}/v2/{repo}/blobs/{digest}")
    assert st == 200, (st, digest)
    assert "sha256:" + hashlib.sha256(b).hexdigest() == digest, "blob digest mismatch"
    return b


def sig_tag(digest, suffix):
    return digest.replace(":", "-", 1) + "." + suffix


def signature_layer(reg, repo, digest, keyfile, password, identity=None, payload_digest=None):
    """cosign's simple-signing payload, signed and pushed: the signature manifest's layer."""
    priv = decrypt_key(keyfile, password)
    payload = json.dumps({"critical": {"identity": {"docker-reference": identity or f"{reg}/{repo}"},
                                       "image": {"docker-manifest-digest": payload_digest or digest},
                                       "type": "cosign container image signature"},
                          "optional": None}, separators=(",", ":")).encode()
    sig = sign_with(priv, payload)
    pd = put_blob(reg, repo, payload)
    return {"mediaType": SIMPLE_SIGNING, "size": len(payload), "digest": pd,
            "annotations": {SIG_ANNOTATION: base64.b64encode(sig).decode()}}


def cmd_sign(reg, repo, digest, keyfile, password, identity=None, payload_digest=None):
    layer = signature_layer(reg, repo, digest, keyfile, password, identity, payload_digest)
    tag = sig_tag(digest, "sig")
    old = get_manifest(reg, repo, tag)
    layers = (old or {}).get("layers", []) + [layer]
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
    cd = put_blob(reg, repo, config)
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config), "digest": cd},
         "layers": layers}
    st, _, b = http("PUT", f"http://{reg}/v2/{repo}/manifests/{tag}", json.dumps(m).encode(),
                    {"Content-Type": OCI_MANIFEST})
    assert st == 201, (st, b)


def cmd_sign_referrer(reg, repo, digest, keyfile, password):
    layer = signature_layer(reg, repo, digest, keyfile, password)
    empty = b"{}"
    ed = put_blob(reg, repo, empty)
    st, h, subject = http("GET", f"http://{reg}/v2/{repo}/manifests/{digest}",
                          headers={"Accept": OCI_MANIFEST + ", application/vnd.oci.image.index.v1+json"})
    assert st == 200, st
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
         "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": ed},
         "layers": [layer],
         "subject": {"mediaType": h.get("Content-Type", OCI_MANIFEST), "size": len(subject),
                     "digest": digest}}
    body = json.dumps(m).encode()
    md = "sha256:" + hashlib.sha256(body).hexdigest()
    st, _, b = http("PUT", f"http://{reg}/v2/{repo}/manifests/{md}", body, {"Content-Type": OCI_MANIFEST})
    assert st == 201, (st, b)
    tag = digest.replace(":", "-", 1)
    st, _, old = http("GET", f"http://{reg}/v2/{repo}/manifests/{tag}",
                      headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    index = json.loads(old) if st == 200 else {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": md, "size": len(body),
                               "artifactType": m["artifactType"]})
    st, _, b = http("PUT", f"http://{reg}/v2/{repo}/manifests/{tag}", json.dumps(index).encode(),
                    {"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert st == 201, (st, b)


def load_pub(path):
    return serialization.load_pem_public_key(open(path, "rb").read())


def cmd_verify(reg, repo, digest, pubfile):
    pub = load_pub(pubfile)
    m = get_manifest(reg, repo, sig_tag(digest, "sig"))
    if not m:
        print("no signature manifest", file=sys.stderr)
        return 1
    for l in m["layers"]:
        if l["mediaType"] != SIMPLE_SIGNING:
            continue
        payload = get_blob(reg, repo, l["digest"])
        sig = base64.b64decode(l["annotations"][SIG_ANNOTATION])
        if not verify_with(pub, payload, sig):
            continue
        p = json.loads(payload)
        if p["critical"]["image"]["docker-manifest-digest"] != digest:
            continue
        print(json.dumps(p))
        return 0
    print("no valid signature", file=sys.stderr)
    return 1


def pae(ptype, body):
    return b"DSSEv1 %d %s %d %s" % (len(ptype), ptype.encode(), len(body), body)


def cmd_verify_att(reg, repo, digest, pubfile):
    pub = load_pub(pubfile)
    m = get_manifest(reg, repo, sig_tag(digest, "att"))
    if not m:
        print("no attestation manifest", file=sys.stderr)
        return 1
    for l in m["layers"]:
        if l["mediaType"] != "application/vnd.dsse.envelope.v1+json":
            continue
        env = json.loads(get_blob(reg, repo, l["digest"]))
        body = base64.b64decode(env["payload"])
        if not any(verify_with(pub, pae(env["payloadType"], body), base64.b64decode(s["sig"]))
                   for s in env["signatures"]):
            continue
        print(json.dumps({"annotations": l.get("annotations"), "statement": json.loads(body)}))
        return 0
    print("no valid attestation", file=sys.stderr)
    return 1


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "keygen":
        prefix, password = args[:2]
        kind = args[2] if len(args) > 2 else "ecdsa"
        if kind == "rsa":
            priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "ed25519":
            priv = ed25519.Ed25519PrivateKey.generate()
        else:
            priv = ec.generate_private_key(ec.SECP256R1())
        der = priv.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        open(prefix + ".key", "w").write(encrypt_key(der, password))
        open(prefix + ".pub", "w").write(public_pem(priv))
        return 0
    if cmd == "public":
        print(public_pem(decrypt_key(*args)), end="")
        return 0
    if cmd == "sign":
        cmd_sign(*args)
        return 0
    if cmd == "sign-referrer":
        cmd_sign_referrer(*args)
        return 0
    if cmd == "verify":
        return cmd_verify(*args)
    if cmd == "verify-att":
        return cmd_verify_att(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
