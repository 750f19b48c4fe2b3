#!/usr/bin/env python3
"""Mints distinct RS256 tokens shaped like Kubernetes service-account tokens,
for bench/new-token.sh: every token differs (jti, pod), so each one is a
decision Gantry has never cached.

Usage: mint-tokens.py OUT_DIR ISSUER AUDIENCE COUNT
Writes OUT_DIR/jwks.json (the public key) and OUT_DIR/tokens (one per line).
Needs the PyPI `cryptography` package.
"""
import base64
import json
import multiprocessing
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


KEY = None
ISSUER = AUDIENCE = ""


def init(pem: bytes, issuer: str, audience: str) -> None:
    global KEY, ISSUER, AUDIENCE
    KEY = serialization.load_pem_private_key(pem, password=None)
    ISSUER, AUDIENCE = issuer, audience


def mint(i: int) -> str:
    now = int(time.time())
    header = {"alg": "RS256", "kid": "bench-1", "typ": "JWT"}
    claims = {
        "aud": [AUDIENCE],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": f"bench-{i:08d}",
        "kubernetes.io": {
            "namespace": "team-payments",
            "node": {"name": "worker-eu-3", "uid": "4f6b1c2d-8a9e-4b7f-9c0d-1e2f3a4b5c6d"},
            "pod": {"name": f"image-pusher-{i:08d}", "uid": f"a3c5e7f9-1b2d-4e6f-8a0b-{i:012d}"},
            "serviceaccount": {"name": "image-pusher", "uid": "0e2c4a6b-8d0f-4a1c-9e3b-5d7f9b1d3f5a"},
            "warnafter": now + 600,
        },
        "sub": "system:serviceaccount:team-payments:image-pusher",
    }
    signing_input = (
        b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64(sig)


def main() -> None:
    out, issuer, audience, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "bench-1", "alg": "RS256", "use": "sig", "n": uint(pub.n), "e": uint(pub.e)}
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump({"keys": [jwk]}, f)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with multiprocessing.Pool(os.cpu_count(), initializer=init, initargs=(pem, issuer, audience)) as pool:
        tokens = pool.map(mint, range(count), chunksize=1000)
    with open(os.path.join(out, "tokens"), "w") as f:
        f.write("\n".join(tokens) + "\n")


if __name__ == "__main__":
    main()
