#!/usr/bin/env bash
# Gantry's end-to-end demo: the Kubernetes workload-identity story on one
# machine, without a cluster.
#
#   bash examples/e2e/run.sh
#
# Two real OpenID providers (npm oidc-provider, examples/e2e/provider/) play
# two clusters' service-account issuers; one `gantry` trusts both, mapping
# cluster 1's tokens with the builtin CEL policy and cluster 2's with the
# Python policy component (examples/policies/kubernetes-python/, built here
# with componentize-py). Real clients (curl, skopeo, podman) then walk the
# matrix of who may do what. Every step prints PASS or FAIL; the script exits
# non-zero if any step failed, and removes every process and file it made.
#
# Environment:
#   GANTRY_BIN=PATH          use this gantry binary (default: cargo build --release)
#   PYTHON_POLICY_WASM=PATH  use this built Python policy component (default: build it)
#   GANTRY_E2E_KEEP=1        keep the work directory (logs, configs, images) on exit
#   GANTRY_E2E_POLICY_TIMEOUT_MS=N  the Python policy's timeout_ms (default 100,
#                            as its README recommends; a debug build of gantry
#                            needs more: host/tests/e2e_demo.rs gives it 1000)
#
# Prerequisites and the expected output: examples/e2e/README.md.

set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROVIDER_DIR="$HERE/provider"
AUDIENCE="https://gantry.example"
# Everything here talks to 127.0.0.1 only: keep any proxy out of it.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# Paths given relative to where the script was started from (or, for
# GANTRY_BIN, a command on PATH): the script itself runs from the repo root.
if [[ -n "${GANTRY_BIN:-}" ]]; then
    if [[ "$GANTRY_BIN" != */* ]]; then
        GANTRY_BIN="$(command -v "$GANTRY_BIN" || echo "$GANTRY_BIN")"
    fi
    GANTRY_BIN="$(realpath -m "$GANTRY_BIN")"
fi
[[ -n "${PYTHON_POLICY_WASM:-}" ]] && PYTHON_POLICY_WASM="$(realpath -m "$PYTHON_POLICY_WASM")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gantry-e2e.XXXXXX")" || { echo "cannot make a temp dir" >&2; exit 1; }
mkdir -p "$WORK/logs"
# No client may pick up the user's registry credentials: skopeo and podman
# read this empty file; podman's login writes to its own (--authfile).
export REGISTRY_AUTH_FILE="$WORK/no-auth.json"
echo '{"auths": {}}' >"$REGISTRY_AUTH_FILE"

PIDS=()
cleanup() {
    local status=$?
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [[ "${GANTRY_E2E_KEEP:-}" == 1 ]]; then
        echo "work directory kept: $WORK" >&2
    else
        # podman's storage may hold files a rootless user cannot remove directly.
        rm -rf "$WORK" 2>/dev/null \
            || { podman unshare rm -rf "$WORK" 2>/dev/null; rm -rf "$WORK" 2>/dev/null; }
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ reporting

# Numbered steps, PASS/FAIL, the tally (examples/lib/steps.sh); building
# gantry, the providers, starting gantry, HTTP helpers (examples/lib/demo.sh).
SERVER_LOGS=("$WORK/provider-1.log" "$WORK/provider-2.log" "$WORK/gantry.log")
# shellcheck source=../lib/steps.sh
source "$ROOT/examples/lib/steps.sh"
# shellcheck source=../lib/demo.sh
source "$ROOT/examples/lib/demo.sh"

# ------------------------------------------------------------------ helpers

SECRET="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
TOKENS_FILE="$WORK/tokens"

PODMAN_DIR="$WORK/podman"
podman_() {
    # All of podman's state in the work directory; vfs needs no kernel
    # overlay support and no fuse; nothing here runs a container.
    podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/runroot" --tmpdir "$PODMAN_DIR/tmp" \
        --storage-driver vfs --cgroup-manager cgroupfs --events-backend none "$@"
}

# ------------------------------------------------------------------ the steps

check_prerequisites() {
    local missing=() cmd
    for cmd in node npm python3 curl skopeo podman; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if [[ -z "${PYTHON_POLICY_WASM:-}" ]] && ! command -v componentize-py >/dev/null; then
        missing+=("componentize-py (pip install -r examples/policies/kubernetes-python/requirements.txt)")
    fi
    if [[ -z "${GANTRY_BIN:-}" ]] && ! command -v cargo >/dev/null; then
        missing+=("cargo (or set GANTRY_BIN)")
    fi
    ((${#missing[@]} == 0)) || fail "missing: ${missing[*]} (see examples/e2e/README.md)" || return 1
    note "node $(node --version), $(skopeo --version), $(podman --version), $(python3 --version)"
}

build_python_policy() {
    if [[ -n "${PYTHON_POLICY_WASM:-}" ]]; then
        PY_WASM="$PYTHON_POLICY_WASM"
        [[ -s "$PY_WASM" ]] || fail "PYTHON_POLICY_WASM=$PY_WASM is missing" || return 1
        note "using PYTHON_POLICY_WASM=$PY_WASM"
        return 0
    fi
    PY_WASM="$WORK/kubernetes_python.wasm"
    local started=$SECONDS
    bash "$ROOT/examples/policies/kubernetes-python/build.sh" "$PY_WASM" || return 1
    [[ -s "$PY_WASM" ]] || fail "build.sh wrote no component" || return 1
    note "examples/policies/kubernetes-python/build.sh -> $(($(stat -c %s "$PY_WASM") / 1000000)) MB component in $((SECONDS - started)) s"
}

build_image() {
    SRC="$WORK/image"
    SRC_DIGEST="$(python3 "$HERE/lib/make-image.py" "$SRC" v1 1)" || return 1
    SRC_CONFIG="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["digest"])' \
        "$SRC/blobs/sha256/${SRC_DIGEST#sha256:}")" || return 1
    note "OCI layout, 2 gzip layers, manifest $SRC_DIGEST"
}

write_config() {
    local port=$1
    CONFIG="$WORK/gantry.toml"
    cat >"$CONFIG" <<EOF
# Generated by examples/e2e/run.sh.
[server]
listen = "127.0.0.1:$port"

[storage]
root = "$WORK/gantry-data"

[log]
level = "info"

[auth]
service = "gantry"
public_url = "http://127.0.0.1:$port"

[auth.token]
ttl_seconds = 300

# ---- Cluster 1: builtin:cel. Identity "<namespace>:<serviceaccount>",
# group "ns:<namespace>", only namespace team-a; names get "cluster-1/".
[[auth.oidc]]
issuer = "$ISSUER_1"
audiences = ["$AUDIENCE"]
algorithms = ["RS256"]
username_prefix = "cluster-1/"
groups_prefix = "cluster-1/"

[auth.oidc.policy]
module = "builtin:cel"

[auth.oidc.policy.settings]
username = "claims['kubernetes.io'].namespace + ':' + claims['kubernetes.io'].serviceaccount.name"
groups = "['ns:' + claims['kubernetes.io'].namespace]"

[[auth.oidc.policy.settings.validations]]
expression = "'kubernetes.io' in claims"
message = "not a Kubernetes service-account token"

[[auth.oidc.policy.settings.validations]]
expression = "claims.sub == 'system:serviceaccount:' + claims['kubernetes.io'].namespace + ':' + claims['kubernetes.io'].serviceaccount.name"
message = "sub does not match kubernetes.io"

[[auth.oidc.policy.settings.validations]]
expression = "claims['kubernetes.io'].namespace in ['team-a']"
message = "namespace is not allowed in cluster 1"

# ---- Cluster 2: the Python policy component (same identity shape), for
# namespaces team-a and team-b; names get "cluster-2/".
[[auth.oidc]]
issuer = "$ISSUER_2"
audiences = ["$AUDIENCE"]
algorithms = ["RS256"]
username_prefix = "cluster-2/"
groups_prefix = "cluster-2/"

[auth.oidc.policy]
module = "$PY_WASM"
# As the policy's README recommends: the defaults (it needs about 13 MiB,
# and well under 100 ms per call in a release build).
memory_limit_mib = 64
timeout_ms = ${GANTRY_E2E_POLICY_TIMEOUT_MS:-100}

[auth.oidc.policy.settings]
allowed_namespaces = ["team-a", "team-b"]

# ---- Who may do what. The longest matching pattern decides.
[access_control.repositories."team-a/**"]
[[access_control.repositories."team-a/**".policies]]
users = ["cluster-1/team-a:pusher"]
actions = ["read", "create", "update"]

[access_control.repositories."team-b/**"]
[[access_control.repositories."team-b/**".policies]]
groups = ["cluster-2/ns:team-b"]
actions = ["read", "create", "update"]
EOF
}

config_check() {
    GANTRY_PORT="$(free_port)" || return 1
    write_config "$GANTRY_PORT"
    local started=$SECONDS
    "$GANTRY" config check "$CONFIG" || return 1
    note "gantry config check $(basename "$CONFIG"): ok ($((SECONDS - started)) s, loads both claim policies)"
    note "cluster 1: builtin:cel; namespace team-a only; names cluster-1/<namespace>:<serviceaccount>"
    note "cluster 2: $(basename "$PY_WASM") (memory_limit_mib 64, timeout_ms ${GANTRY_E2E_POLICY_TIMEOUT_MS:-100});" \
        "namespaces team-a, team-b; names cluster-2/<namespace>:<serviceaccount>"
    note "team-a/**: user cluster-1/team-a:pusher read,create,update;" \
        "team-b/**: group cluster-2/ns:team-b read,create,update"
}

start_gantry() {
    launch_gantry || return 1
    note "gantry serve on $REGISTRY; $(grep -o 'claim policy loaded.*module=[^ ]*' "$WORK/gantry.log" \
        | sed 's/.*module=//; s|.*/||' | paste -sd, - | sed 's/,/, /g') loaded"
}

# Discovery and JWKS are fetched in the background: wait until each
# issuer's tokens are accepted.
accepted() { [[ "$(http GET /v2/ "$1")" == 200 ]]; }
wait_trust() {
    PUSHER_TOKEN="$(token "$ISSUER_1" system:serviceaccount:team-a:pusher)" || return 1
    BUILDER_TOKEN="$(token "$ISSUER_2" system:serviceaccount:team-b:builder)" || return 1
    remember "$PUSHER_TOKEN"
    remember "$BUILDER_TOKEN"
    wait_for 120 accepted "$PUSHER_TOKEN" || fail "cluster 1's token is never accepted" || return 1
    wait_for 120 accepted "$BUILDER_TOKEN" || fail "cluster 2's token is never accepted" || return 1
    local claims
    claims="$(python3 - "$PUSHER_TOKEN" <<'PY'
import base64, json, sys
part = sys.argv[1].split(".")[1]
c = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
k = c["kubernetes.io"]
print(f'sub={c["sub"]} aud={c["aud"]} kubernetes.io.namespace={k["namespace"]} serviceaccount={k["serviceaccount"]["name"]}')
PY
)" || return 1
    note "pusher's token: $claims"
}

push_without_token() {
    expect_status 401 POST /v2/team-a/app/blobs/uploads/ || return 1
    local challenge
    challenge="$(header WWW-Authenticate)"
    [[ "$challenge" == "Bearer realm=\"http://$REGISTRY/auth/token\",service=\"gantry\",scope=\"repository:team-a/app:pull,push\"" ]] \
        || fail "unexpected challenge: $challenge" || return 1
    note "POST /v2/team-a/app/blobs/uploads/ -> 401"
    note "WWW-Authenticate: $challenge"
    if skopeo copy --dest-tls-verify=false "oci:$SRC:v1" "docker://$REGISTRY/team-a/app:v1"; then
        fail "skopeo pushed without credentials"
        return 1
    fi
    note "skopeo copy without credentials: refused"
}

push_with_token() {
    skopeo copy --dest-tls-verify=false --dest-registry-token "$PUSHER_TOKEN" \
        "oci:$SRC:v1" "docker://$REGISTRY/team-a/app:v1" || return 1
    expect_status 200 GET /v2/team-a/app/tags/list "$PUSHER_TOKEN" || return 1
    note "skopeo copy --dest-registry-token \$TOKEN oci:image:v1 docker://$REGISTRY/team-a/app:v1"
    note "as cluster-1/team-a:pusher; tags: $(cat "$WORK/http.body")"
}

wrong_audience() {
    local foreign
    foreign="$(token "$ISSUER_1" system:serviceaccount:team-a:pusher https://other.example)" || return 1
    remember "$foreign"
    expect_status 401 POST /v2/team-a/app/blobs/uploads/ "$foreign" || return 1
    header WWW-Authenticate | grep -q 'error="invalid_token"' || fail "no invalid_token in the challenge" || return 1
    if skopeo copy --dest-tls-verify=false --dest-registry-token "$foreign" \
        "oci:$SRC:v1" "docker://$REGISTRY/team-a/app:v2"; then
        fail "skopeo pushed with a token for another audience"
        return 1
    fi
    note "pusher's token with aud=https://other.example -> 401 ($(header WWW-Authenticate | grep -o 'error="[^"]*"'))"
}

reader_is_refused() {
    READER_TOKEN="$(token "$ISSUER_1" system:serviceaccount:team-a:reader)" || return 1
    remember "$READER_TOKEN"
    expect_status 200 GET /v2/ "$READER_TOKEN" || return 1
    note "GET /v2/ as cluster-1/team-a:reader -> 200 (authenticated)"
    expect_status 403 POST /v2/team-a/app/blobs/uploads/ "$READER_TOKEN" || return 1
    grep -q '"DENIED"' "$WORK/http.body" || fail "no DENIED error code" || return 1
    note "POST /v2/team-a/app/blobs/uploads/ -> 403 $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["errors"][0]; print(e["code"], "-", e["message"])' "$WORK/http.body")"
    local out
    if out="$(skopeo copy --dest-tls-verify=false --dest-registry-token "$READER_TOKEN" \
        "oci:$SRC:v1" "docker://$REGISTRY/team-a/app:reader" 2>&1)"; then
        fail "the reader pushed"
        return 1
    fi
    echo "$out"
    grep -qiE 'denied|403' <<<"$out" || fail "skopeo failed for another reason" || return 1
    note "skopeo push as the reader: denied"
}

reader_catalog() {
    local mine theirs
    mine="$(catalog "$READER_TOKEN")" || return 1
    theirs="$(catalog "$PUSHER_TOKEN")" || return 1
    [[ -z "$mine" ]] || fail "the reader's catalog is not empty: $mine" || return 1
    [[ "$theirs" == "team-a/app" ]] || fail "the pusher's catalog is '$theirs'" || return 1
    note "reader: {\"repositories\":[]}; pusher: [$theirs]"
}

pull_bearer() {
    skopeo copy --src-tls-verify=false --src-registry-token "$PUSHER_TOKEN" \
        "docker://$REGISTRY/team-a/app:v1" "oci:$WORK/pulled-bearer:v1" || return 1
    same_blobs "$SRC" "$WORK/pulled-bearer" || return 1
    [[ "$(manifest_digest "$WORK/pulled-bearer")" == "$SRC_DIGEST" ]] || fail "another manifest came back" || return 1
    note "skopeo copy --src-registry-token: manifest $SRC_DIGEST, every blob identical"
}

pull_creds() {
    skopeo copy --src-tls-verify=false --src-creds "oidc:$PUSHER_TOKEN" \
        "docker://$REGISTRY/team-a/app:v1" "oci:$WORK/pulled-creds:v1" || return 1
    same_blobs "$SRC" "$WORK/pulled-creds" || return 1
    [[ "$(manifest_digest "$WORK/pulled-creds")" == "$SRC_DIGEST" ]] || fail "another manifest came back" || return 1
    # What the client did: exchanged the OIDC token at the token endpoint.
    local minted
    minted="$(curl -sSf --max-time 30 -u "oidc:$PUSHER_TOKEN" \
        "http://$REGISTRY/auth/token?service=gantry&scope=repository:team-a/app:pull")" || return 1
    python3 - "$minted" >"$WORK/minted.txt" <<'PY' || return 1
import base64, json, sys
body = json.loads(sys.argv[1])
part = body["token"].split(".")[1]
c = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
print(f'sub={c["sub"]} access={json.dumps(c["access"], separators=(",", ":"))} expires_in={body["expires_in"]}')
PY
    note "skopeo copy --src-creds oidc:\$TOKEN: same manifest, every blob identical"
    note "token endpoint minted: $(cat "$WORK/minted.txt")"
}

podman_login() {
    mkdir -p "$PODMAN_DIR"
    PODMAN_AUTH="$PODMAN_DIR/auth.json"
    printf '%s' "$PUSHER_TOKEN" | podman_ login --authfile "$PODMAN_AUTH" --tls-verify=false \
        -u oidc --password-stdin "$REGISTRY" || return 1
    note "podman login -u oidc --password-stdin $REGISTRY: Login Succeeded"
}

podman_push() {
    # The image comes from the local OCI layout: no network. (A relative
    # path: podman names the image after it, and a name must be lowercase.)
    (cd "$(dirname "$SRC")" && podman_ pull "oci:$(basename "$SRC"):v1") || return 1
    podman_ tag "${SRC_CONFIG#sha256:}" "$REGISTRY/team-a/podman:v1" || return 1
    podman_ push --authfile "$PODMAN_AUTH" --tls-verify=false "$REGISTRY/team-a/podman:v1" || return 1
    expect_status 200 GET /v2/team-a/podman/tags/list "$PUSHER_TOKEN" || return 1
    note "podman push $REGISTRY/team-a/podman:v1"
}

podman_pull() {
    podman_ rmi --all --force || return 1
    podman_ pull --authfile "$PODMAN_AUTH" --tls-verify=false "$REGISTRY/team-a/podman:v1" || return 1
    local id
    id="$(podman_ image inspect --format '{{.Id}}' "$REGISTRY/team-a/podman:v1")" || return 1
    [[ "sha256:$id" == "$SRC_CONFIG" ]] || fail "pulled image $id, pushed $SRC_CONFIG" || return 1
    podman_ logout --authfile "$PODMAN_AUTH" "$REGISTRY" || return 1
    note "podman pull after rmi: image ${id:0:12} (the pushed config), then podman logout"
}

builder_pushes() {
    skopeo copy --dest-tls-verify=false --dest-creds "oidc:$BUILDER_TOKEN" \
        "oci:$SRC:v1" "docker://$REGISTRY/team-b/app:v1" || return 1
    expect_status 200 GET /v2/team-b/app/tags/list "$BUILDER_TOKEN" || return 1
    note "cluster 2's team-b:builder (Python policy) pushed team-b/app:v1 through the token endpoint"
}

builder_refused() {
    expect_status 403 POST /v2/team-a/app/blobs/uploads/ "$BUILDER_TOKEN" || return 1
    local out
    if out="$(skopeo copy --dest-tls-verify=false --dest-registry-token "$BUILDER_TOKEN" \
        "oci:$SRC:v1" "docker://$REGISTRY/team-a/app:builder" 2>&1)"; then
        fail "the builder pushed to team-a/app"
        return 1
    fi
    echo "$out"
    grep -qiE 'denied|403' <<<"$out" || fail "skopeo failed for another reason" || return 1
    note "cluster-2/team-b:builder on team-a/app -> 403; skopeo push denied"
}

same_name_other_cluster() {
    local twin
    twin="$(token "$ISSUER_2" system:serviceaccount:team-a:pusher)" || return 1
    remember "$twin"
    expect_status 200 GET /v2/ "$twin" || return 1
    expect_status 403 POST /v2/team-a/app/blobs/uploads/ "$twin" || return 1
    grep -q 'cluster-2/team-a:pusher' "$WORK/http.body" || fail "the 403 does not name cluster-2/team-a:pusher" || return 1
    note "cluster 2's team-a:pusher is cluster-2/team-a:pusher, not cluster-1/team-a:pusher -> 403"
}

policies_deny() {
    local outsider intruder
    outsider="$(token "$ISSUER_1" system:serviceaccount:team-b:builder)" || return 1
    intruder="$(token "$ISSUER_2" system:serviceaccount:kube-system:default)" || return 1
    remember "$outsider"
    remember "$intruder"
    expect_status 401 GET /v2/ "$outsider" || return 1
    expect_status 401 GET /v2/ "$intruder" || return 1
    grep 'gantry::audit' "$WORK/gantry.log" | grep -q 'namespace is not allowed in cluster 1' \
        || fail "CEL's deny reason is not in the audit log" || return 1
    grep 'gantry::audit' "$WORK/gantry.log" | grep -q 'namespace \\\?"kube-system\\\?" is not allowed' \
        || fail "the Python policy's deny reason is not in the audit log" || return 1
    note "cluster 1 team-b:builder -> 401 (CEL: namespace is not allowed in cluster 1)"
    note "cluster 2 kube-system:default -> 401 (Python: namespace \"kube-system\" is not allowed)"
}

audit_log() {
    local audit="$WORK/audit.log" who
    grep 'gantry::audit' "$WORK/gantry.log" >"$audit" || fail "no audit events" || return 1
    for who in cluster-1/team-a:pusher cluster-1/team-a:reader cluster-2/team-b:builder cluster-2/team-a:pusher; do
        grep "username=\"$who\"" "$audit" | grep -q 'outcome="allow"' || fail "no allow event for $who" || return 1
    done
    grep -q 'groups=cluster-2/ns:team-b' "$audit" || fail "no prefixed group cluster-2/ns:team-b" || return 1
    no_token_in_logs "$WORK/gantry.log" "$WORK/provider-1.log" "$WORK/provider-2.log" || return 1
    note "$(wc -l <"$audit") audit events; e.g."
    note "$(grep 'username="cluster-2/team-b:builder"' "$audit" | head -n 1 | sed 's/^.*gantry::audit: //')"
    note "no token (nor a token's signature) in any log: $(wc -l <"$TOKENS_FILE") tokens checked"
}

# ------------------------------------------------------------------ the story

cd "$ROOT" || exit 1
printf 'Gantry end-to-end demo: two Kubernetes "clusters", one registry (work dir %s)\n\n' "$WORK" >&3

must "prerequisites: node, npm, python3, curl, skopeo, podman, componentize-py" check_prerequisites
must "build gantry" build_gantry
must "build the Python claim policy (componentize-py)" build_python_policy
must "install the OpenID provider (npm oidc-provider)" install_provider
must "build the image to push: an OCI layout made offline" build_image
must "cluster 1: an OpenID provider issuing Kubernetes-shaped tokens" \
    start_provider 1 system:serviceaccount:team-a:pusher system:serviceaccount:team-a:reader system:serviceaccount:team-b:builder
must "cluster 2: a second provider (another issuer)" \
    start_provider 2 system:serviceaccount:team-b:builder system:serviceaccount:team-a:pusher system:serviceaccount:kube-system:default
must "gantry config check: cluster 1 on builtin:cel, cluster 2 on the Python component" config_check
must "gantry serve" start_gantry
must "gantry trusts both issuers (discovery + JWKS fetched)" wait_trust

printf '\n' >&3
step "push without a token: 401 with the Bearer challenge" push_without_token
must "push with cluster 1's team-a:pusher token (skopeo, raw bearer)" push_with_token
step "a token for another audience: 401" wrong_audience
step "team-a:reader authenticates but gets 403 on push" reader_is_refused
step "team-a:reader's _catalog is empty" reader_catalog
step "pull with skopeo, raw bearer (--src-registry-token): blobs identical" pull_bearer
step "pull with skopeo through the token endpoint (--src-creds): blobs identical" pull_creds
if ! step "podman login (docker login style, token endpoint)" podman_login; then
    not_run "podman push" "podman login failed"
    not_run "podman pull" "podman login failed"
elif ! step "podman push" podman_push; then
    not_run "podman pull" "podman push failed"
else
    step "podman pull" podman_pull
fi
step "cluster 2's team-b:builder pushes team-b/app via the Python policy" builder_pushes
step "cluster 2's team-b:builder gets 403 on team-a/app" builder_refused
step "the same name from another cluster is another identity: 403" same_name_other_cluster
step "each cluster's claim policy refuses a namespace it does not allow: 401" policies_deny
step "the audit log names prefixed identities and never holds a token" audit_log

finish
