#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds are the shapes each parser meets in real use: registry paths as
clients send them, tokens shaped like Kubernetes and GitHub Actions ones,
an issuer's discovery document and JWKS, OCI and Docker manifests, the
repository's own config files and CEL policy settings. Rerun after changing
a source file; the fuzzer adds what it finds to the same directories.
"""
import base64, hashlib, json, pathlib, tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def b64(obj):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


D = "sha256:" + hashlib.sha256(b"layer").hexdigest()
paths = ["", "_catalog", "library/alpine/manifests/latest", f"library/alpine/manifests/{D}",
         "a/b/c/blobs/" + D, "team-a/app/blobs/uploads/", "team-a/app/blobs/uploads/0b6c6a8e-3d2f-4c3e-9a58-2f1f7f4e8a10",
         f"team-a/app/blobs/uploads/?mount={D}&from=team-b/app", "x/tags/list", f"x/referrers/{D}",
         "x/manifests/.INVALID_MANIFEST_NAME", "UPPER/manifests/latest", "a//b/manifests/v1", "a/manifests/" + "t" * 129]
for i, p in enumerate(paths):
    put("v2_path", f"seed-{i:02}", p)

k8s = {"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:team-a:builder", "aud": ["gantry"],
       "exp": 1700003600, "iat": 1700000000, "nbf": 1700000000,
       "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "builder", "uid": "0f7c"}}}
gha = {"iss": "https://token.actions.githubusercontent.com", "sub": "repo:org/app:ref:refs/heads/main", "aud": "gantry",
       "exp": 1700000300, "iat": 1700000000, "repository": "org/app", "repository_owner_id": "123", "event_name": "push"}
headers = [{"alg": "RS256", "kid": "k1", "typ": "JWT"}, {"alg": "ES256", "kid": "k2"}, {"alg": "none"},
           {"alg": "RS256", "typ": "at+jwt"}]
for i, (h, c) in enumerate([(headers[0], k8s), (headers[1], gha), (headers[2], k8s), (headers[3], gha)]):
    put("jwt", f"seed-{i}", f"{b64(h)}.{b64(c)}.{b64(b'sig' * 80)}")
dup = b64(b'{"iss":"a","iss":"b"}')
put("jwt", "seed-dup-member", f"{b64(headers[0])}.{dup}.")
put("jwt", "seed-five-parts", "a.b.c.d.e")

put("issuer_documents", "discovery", json.dumps({"issuer": "https://issuer.example",
    "jwks_uri": "https://issuer.example/keys", "id_token_signing_alg_values_supported": ["RS256"]}))
n = b64(bytes(range(1, 256)) + b"\x01")
put("issuer_documents", "jwks", json.dumps({"keys": [
    {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"},
    {"kty": "EC", "kid": "k2", "crv": "P-256", "x": b64(b"x" * 32), "y": b64(b"y" * 32)},
    {"kty": "OKP", "kid": "k3", "crv": "Ed25519", "x": b64(b"e" * 32)}]}))

desc = lambda mt: {"mediaType": mt, "digest": D, "size": 5}
image = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": desc("application/vnd.oci.image.config.v1+json"),
         "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip")], "subject": desc("application/vnd.oci.image.manifest.v1+json")}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [dict(desc("application/vnd.oci.image.manifest.v1+json"), platform={"os": "linux", "architecture": "amd64"})]}
artifact = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.gantry.policy.v1", "config": desc("application/vnd.oci.empty.v1+json"), "layers": []}
docker = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
          "config": desc("application/vnd.docker.container.image.v1+json"),
          "layers": [dict(desc("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"), urls=["https://x"])]}
for i, (pick, m) in enumerate([(0, image), (1, index), (0, artifact), (2, docker), (5, image)]):
    put("manifest", f"seed-{i}", bytes([pick]) + json.dumps(m).encode())

configs = [ROOT / "config" / "gantry.toml"] + sorted((ROOT / "tests" / "fixtures").rglob("*.toml"))
for i, p in enumerate(configs):
    put("config", f"seed-{i:02}-{p.stem}", p.read_bytes())
# Every TOML example of the docs, as an operator would paste it.
for doc in [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")):
    blocks = doc.read_text().split("```toml\n")[1:]
    for i, block in enumerate(blocks):
        put("config", f"doc-{doc.stem}-{i:02}", block.split("```")[0])

settings = sorted((ROOT / "examples" / "policies" / "cel").glob("*.toml")) + [ROOT / "examples" / "policies" / "kubernetes-cel" / "settings.toml"]
for p in settings:
    put("cel_settings", p.parent.name + "-" + p.stem, json.dumps(tomllib.loads(p.read_text())))
put("cel_settings", "with-claims", json.dumps({"username": "claims.sub", "validations": [{"expression": "claims.aud == 'gantry'"}]})
    + "\0" + json.dumps(gha))
