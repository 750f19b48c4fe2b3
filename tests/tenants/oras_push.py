#!/usr/bin/env python3
"""Push a policy artifact with the PyPI oras client (oras-py), as a tenant's
admin would: a config blob and layer files, logged in with a username and
password. Prints the pushed manifest's digest; on failure prints the
registry's answer on stderr and exits 1.

  oras_push.py --registry 127.0.0.1:5000 --target team-a/policies/k8s:live \
      --username U --password P --config config.json \
      [--file fixtures.toml:application/vnd.gantry.policy.fixtures.v1+toml]...
"""

import argparse
import os
import sys

import oras.client

CONFIG_MEDIA_TYPE = "application/vnd.gantry.policy.config.v1+json"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--file", action="append", default=[])
    a = p.parse_args()

    # Basic credentials on every request, which Gantry accepts like a token.
    client = oras.client.OrasClient(hostname=a.registry, insecure=True, auth_backend="basic")
    client.login(hostname=a.registry, username=a.username, password=a.password)
    # oras-py resolves files against the working directory.
    os.chdir(os.path.dirname(os.path.abspath(a.config)))
    try:
        resp = client.push(
            target=f"{a.registry}/{a.target}",
            files=[os.path.basename(f.split(":")[0]) + ":" + f.split(":", 1)[1] for f in a.file],
            manifest_config=f"{os.path.basename(a.config)}:{CONFIG_MEDIA_TYPE}",
            quiet=True,
        )
    except Exception as e:  # oras-py raises on any non-2xx answer
        print(f"push refused: {e}", file=sys.stderr)
        return 1
    print(resp.headers.get("Docker-Content-Digest", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
