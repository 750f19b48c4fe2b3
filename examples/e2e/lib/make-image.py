#!/usr/bin/env python3
"""Writes a small OCI image layout for the end-to-end demo, offline.

    python3 make-image.py DIR [TAG] [SEED]

DIR becomes an OCI image layout (oci-layout, index.json, blobs/sha256/...)
holding one linux/amd64 image of two gzip-compressed layers, tagged TAG
(default `v1`): what `skopeo copy oci:DIR:TAG ...` and `podman pull
oci:DIR:TAG` read. The layers carry a file of pseudo-random bytes derived
from SEED, so two seeds give two images with no blob in common, and the same
seed always gives the same digests (tar and gzip headers carry no time).
Prints the manifest's digest.
"""

import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile


def tar_of(files):
    """An uncompressed tar of {path: bytes}, reproducible (mtime 0, root-owned)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({os.path.dirname(p) for p in files if os.path.dirname(p)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path in sorted(files):
            data = files[path]
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main():
    if len(sys.argv) < 2:
        sys.stderr.write("usage: make-image.py DIR [TAG] [SEED]\n")
        sys.exit(2)
    out = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) > 2 else "v1"
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer_files = [
        {
            "etc/demo-release": f"gantry e2e demo image, seed {seed}\n".encode(),
            "usr/share/demo/base.bin": rng.randbytes(96 * 1024),
        },
        {
            "app/hello.txt": b"hello from a workload pushed with an OIDC token\n",
            "app/payload.bin": rng.randbytes(160 * 1024),
        },
    ]
    layers, diff_ids = [], []
    for files in layer_files:
        raw = tar_of(files)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        layer = put(gzip.compress(raw, mtime=0))
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        layers.append(layer)

    config = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Cmd": ["/bin/sh"],
            "Labels": {"org.opencontainers.image.title": f"gantry-e2e-{seed}"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "make-image.py"}
                    for _ in layers],
    }
    config_desc = put(json.dumps(config, sort_keys=True).encode())
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layers,
    }
    manifest_desc = put(json.dumps(manifest, sort_keys=True).encode())
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}

    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [manifest_desc]}, f)
    print(manifest_desc["digest"])


if __name__ == "__main__":
    main()
