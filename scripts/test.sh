#!/usr/bin/env bash
# Runs every test of the workspace. This is the test command README.md gives
# and the one CI runs (after .ci/run installs Debian's packages).
#
# It first brings in the project-local tools the tests build with, each
# pinned by a lock file in this repository, so a fresh clone needs nothing
# else than Rust 1.95.0, Node 20 + npm, Python 3.11 + pip, and Debian's
# skopeo and openssl (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# The policy components and test guests are built for this target.
rustup target add wasm32-wasip2 --toolchain 1.95.0

# The example policies in Python and JavaScript (examples/policies/):
# tests/build.rs builds them with these pinned tools, and fails without them.
python3 -m pip install --quiet --root-user-action=ignore -r examples/policies/kubernetes-python/requirements.txt
npm ci --prefix examples/policies/kubernetes-js --no-audit --no-fund

# The S3 API the s3-backend tests run against (moto_server).
python3 -m pip install --quiet --root-user-action=ignore -r tests/s3/requirements.txt

# The PyPI oras client (oras-py), with which the tenant tests push policy
# artifacts as a tenant admin would.
python3 -m pip install --quiet --root-user-action=ignore -r tests/tenants/requirements.txt

# The end-to-end tests' real OpenID provider (npm oidc-provider).
npm ci --prefix examples/e2e/provider --no-audit --no-fund

cargo test --workspace

# The default policy's own unit tests, natively, in the guests' workspace:
# with its lock file and features, so the `regex` they test is the one the
# component is built with (the root workspace's adds Unicode classes the
# component leaves out). The same target directory as the guests' build.
CARGO_TARGET_DIR=target/plugins cargo test --manifest-path plugins/Cargo.toml -p cel-policy
