#!/usr/bin/env bash
# Gantry's tenants demo: two teams ship their own claim policies into their
# own namespaces of one registry, on one machine, without a cluster.
#
#   bash examples/tenants/run.sh
#
# Two real OpenID providers (npm oidc-provider, examples/e2e/provider/) play
# two tenants' clusters. One `gantry` has two [[tenants]], team-a and team-b,
# each with an htpasswd admin, and `[access_control]` granting `**` to every
# authenticated caller: confining the tenants' workloads is the registry's
# job, not the access rules'. Each admin tests a CEL claim policy with
# `gantry policy test` and publishes it with `gantry policy push` to
# `<team>/policies/k8s:live`; the registry validates every push, follows the
# tag, shadow-evaluates team-a's candidate at `:next`, and reports it all at
# `GET /gantry/v1/tenants/{name}` (`gantry tenant status`). The workloads
# push and pull with skopeo and curl. Every step prints PASS or FAIL; the
# script exits non-zero if any step failed, and removes every process and
# file it made.
#
# Environment:
#   GANTRY_BIN=PATH          use this gantry binary (default: cargo build --release)
#   GANTRY_TENANTS_KEEP=1    keep the work directory (logs, configs, policies) on exit
#   GANTRY_TENANTS_POLICY_TIMEOUT_MS=N  the tenants' max_timeout_ms (default
#                            100, the documented default; a debug build of
#                            gantry needs more: host/tests/tenants_demo.rs
#                            gives it 1000)
#
# Prerequisites and the expected output: examples/tenants/README.md.

set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROVIDER_DIR="$ROOT/examples/e2e/provider"
AUDIENCE="https://gantry.example"
OCI_MANIFEST="application/vnd.oci.image.manifest.v1+json"
A_CI="system:serviceaccount:team-a:ci"
B_CI="system:serviceaccount:team-b:ci"

# ------------------------------------------------------------------ reporting

# Numbered steps, PASS/FAIL, the tally (examples/lib/steps.sh); building
# gantry, the providers, starting gantry, HTTP helpers (examples/lib/demo.sh).
# shellcheck source=../lib/demo.sh
source "$ROOT/examples/lib/demo.sh"
demo_begin tenants GANTRY_TENANTS_KEEP
# shellcheck source=../lib/steps.sh
source "$ROOT/examples/lib/steps.sh"
SERVER_LOGS=("$WORK/provider-a.log" "$WORK/provider-b.log" "$WORK/gantry.log")

# ------------------------------------------------------------------ helpers

SECRET="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
TOKENS_FILE="$WORK/tokens"
: >"$TOKENS_FILE"
TIMEOUT_MS="${GANTRY_TENANTS_POLICY_TIMEOUT_MS:-100}"

# The admins are htpasswd users; their passwords are secret_of NAME.
admin_of() { echo "$1-admin"; }

# http_as USER METHOD PATH [CURL_ARGS...]: like `http`, with USER's
# htpasswd password (Basic).
http_as() {
    local user=$1 method=$2 path=$3
    shift 3
    curl -sS --max-time 60 -o "$WORK/http.body" -D "$WORK/http.head" -w '%{http_code}' -X "$method" \
        -u "$user:$(secret_of "$user")" "$@" "http://$REGISTRY$path"
}

# The OCI error envelope's first code and message, of the last response.
error_of() {
    python3 -c 'import json, sys; e = json.load(open(sys.argv[1]))["errors"][0]; print(e["code"], "-", e["message"])' \
        "$WORK/http.body" 2>/dev/null || head -c 300 "$WORK/http.body"
}

# The digest TENANT's policies/k8s:TAG points at now, read by its admin.
tag_digest() {
    local got
    got="$(http_as "$(admin_of "$1")" GET "/v2/$1/policies/k8s/manifests/$2" -H "Accept: $OCI_MANIFEST")"
    [[ "$got" == 200 ]] || { echo "GET $1/policies/k8s:$2 -> $got" >&2; return 1; }
    header Docker-Content-Digest
}

# policy_push TENANT TAG SETTINGS [FIXTURES]: `gantry policy push --cel` as
# TENANT's admin; prints the digest; gantry's error in $WORK/push.err.
policy_push() {
    local tenant=$1 tag=$2 settings=$3 fixtures=${4:-} admin rc
    admin="$(admin_of "$tenant")"
    local args=(policy push --registry "http://$REGISTRY" --repository "$tenant/policies/k8s" --tag "$tag"
        --cel --settings "$settings")
    [[ -n "$fixtures" ]] && args+=(--fixtures "$fixtures")
    echo "gantry ${args[*]} --username $admin --password ..." >&2
    "$GANTRY" "${args[@]}" --username "$admin" --password "$(secret_of "$admin")" 2>"$WORK/push.err"
    rc=$?
    cat "$WORK/push.err" >&2
    return "$rc"
}

# policy_test DIR SETTINGS FIXTURES: `gantry policy test` on the admin's
# machine, no registry involved; its table becomes the step's notes.
policy_test() {
    local dir=$1 out line
    out="$(cd "$dir" && "$GANTRY" policy test --module builtin:cel --settings "$2" --fixtures "$3" 2>&1)"
    local rc=$?
    echo "$out"
    ((rc == 0)) || fail "gantry policy test exited $rc" || return 1
    note "gantry policy test --module builtin:cel --settings $2 --fixtures $3"
    while IFS= read -r line; do
        [[ -n "$line" ]] && note "  $line"
    done < <(sed -n '/^#  case/,$p' <<<"$out")
}

accepted() { [[ "$(http GET /v2/ "$1")" == 200 ]]; }

audit() { grep 'gantry::audit' "$WORK/gantry.log"; }

# An audit event after line LINE of gantry's log names USERNAME (team-a's
# workload asks /v2/ once more first).
named_after() {
    http GET /v2/ "$A_TOKEN" >/dev/null
    tail -n +"$(($1 + 1))" "$WORK/gantry.log" | grep 'gantry::audit' | grep -q "username=\"$2\""
}

log_lines() { wc -l <"$WORK/gantry.log"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds_since() { local ms=$(($(now_ms) - $1)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# ------------------------------------------------------------------ bcrypt

# Which bcrypt hasher is here: htpasswd -B, python3's bcrypt, or python3's
# crypt (libxcrypt's $2b$).
bcrypt_tool() {
    if command -v htpasswd >/dev/null; then
        echo "htpasswd -B"
    elif python3 -c 'import bcrypt' 2>/dev/null; then
        echo "python3 bcrypt"
    elif python3 -W ignore -c 'import crypt, sys; h = crypt.crypt("x", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)); sys.exit(0 if h and h.startswith("$2") else 1)' 2>/dev/null; then
        echo "python3 crypt"
    else
        return 1
    fi
}

# USER:HASH for an htpasswd file, at cost 5 (htpasswd -B's default).
bcrypt_line() {
    local user=$1 password=$2
    case "$BCRYPT" in
    "htpasswd -B") htpasswd -nbB -C 5 "$user" "$password" | sed '/^$/d' ;;
    "python3 bcrypt")
        python3 -c 'import bcrypt, sys; print(sys.argv[1] + ":" + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(5)).decode())' \
            "$user" "$password"
        ;;
    *)
        python3 -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)))' \
            "$user" "$password"
        ;;
    esac
}

# ------------------------------------------------------------------ the policies

# Each tenant's policy files, as its admin would keep them in a repository.
write_policies() {
    A_DIR="$WORK/team-a"
    B_DIR="$WORK/team-b"
    mkdir -p "$A_DIR" "$B_DIR"

    # team-a, v1: its own namespace's service accounts, named by `sub`.
    cat >"$A_DIR/k8s.toml" <<'EOF'
username = "claims.sub"

[[validations]]
expression = "claims['kubernetes.io'].namespace == 'team-a'"
message = "only team-a's service accounts"
EOF
    cat >"$A_DIR/cases.toml" <<'EOF'
[[case]]
name = "a team-a service account"
claims = { sub = "system:serviceaccount:team-a:ci", "kubernetes.io" = { namespace = "team-a", serviceaccount = { name = "ci" } } }
expect = "allow"
username = "system:serviceaccount:team-a:ci"

[[case]]
name = "another namespace"
claims = { sub = "system:serviceaccount:x:ci", "kubernetes.io" = { namespace = "x", serviceaccount = { name = "ci" } } }
expect = "deny"
reason_contains = "only team-a"
EOF
    # A slip: CEL that does not compile.
    sed 's/^username = .*/username = "claims.sub +"/' "$A_DIR/k8s.toml" >"$A_DIR/broken.toml"
    # A case that contradicts the policy.
    sed 's/^expect = "deny"$/expect = "allow"/; /^reason_contains/d' "$A_DIR/cases.toml" >"$A_DIR/wrong-cases.toml"

    # team-a's candidate: only the deployer service account may log in.
    cat >"$A_DIR/next.toml" <<'EOF'
username = "claims.sub"

[[validations]]
expression = "claims['kubernetes.io'].namespace == 'team-a'"
message = "only team-a's service accounts"

[[validations]]
expression = "claims['kubernetes.io'].serviceaccount.name == 'deployer'"
message = "only team-a's deployer may push"
EOF
    cat >"$A_DIR/next-cases.toml" <<'EOF'
[[case]]
name = "the deployer"
claims = { sub = "system:serviceaccount:team-a:deployer", "kubernetes.io" = { namespace = "team-a", serviceaccount = { name = "deployer" } } }
expect = "allow"
username = "system:serviceaccount:team-a:deployer"

[[case]]
name = "ci no longer"
claims = { sub = "system:serviceaccount:team-a:ci", "kubernetes.io" = { namespace = "team-a", serviceaccount = { name = "ci" } } }
expect = "deny"
reason_contains = "only team-a's deployer"
EOF

    # team-a, v2: workloads named by their service account alone.
    cat >"$A_DIR/k8s-v2.toml" <<'EOF'
username = "claims['kubernetes.io'].serviceaccount.name"

[[validations]]
expression = "claims['kubernetes.io'].namespace == 'team-a'"
message = "only team-a's service accounts"
EOF
    sed 's/^username = "system:serviceaccount:team-a:ci"$/username = "ci"/' "$A_DIR/cases.toml" >"$A_DIR/cases-v2.toml"

    # team-b: its own namespace, named by service account.
    cat >"$B_DIR/k8s.toml" <<'EOF'
username = "claims['kubernetes.io'].serviceaccount.name"

[[validations]]
expression = "claims['kubernetes.io'].namespace == 'team-b'"
message = "only team-b's service accounts"
EOF
    cat >"$B_DIR/cases.toml" <<'EOF'
[[case]]
name = "a team-b service account"
claims = { sub = "system:serviceaccount:team-b:ci", "kubernetes.io" = { namespace = "team-b", serviceaccount = { name = "ci" } } }
expect = "allow"
username = "ci"

[[case]]
name = "team-a's service account"
claims = { sub = "system:serviceaccount:team-a:ci", "kubernetes.io" = { namespace = "team-a", serviceaccount = { name = "ci" } } }
expect = "deny"
reason_contains = "only team-b"
EOF
}

# ------------------------------------------------------------------ the steps

check_prerequisites() {
    local missing=() cmd
    for cmd in node npm python3 curl skopeo; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if [[ -z "${GANTRY_BIN:-}" ]] && ! command -v cargo >/dev/null; then
        missing+=("cargo (or set GANTRY_BIN)")
    fi
    BCRYPT="$(bcrypt_tool)" || missing+=("a bcrypt hasher: htpasswd (apache2-utils) or python3's bcrypt")
    ((${#missing[@]} == 0)) || fail "missing: ${missing[*]} (see examples/tenants/README.md)" || return 1
    note "node $(node --version), $(skopeo --version), $(python3 --version); bcrypt: $BCRYPT"
}

build_images() {
    A_SRC="$WORK/image-a"
    B_SRC="$WORK/image-b"
    A_SRC_DIGEST="$(python3 "$ROOT/examples/e2e/lib/make-image.py" "$A_SRC" v1 1)" || return 1
    B_SRC_DIGEST="$(python3 "$ROOT/examples/e2e/lib/make-image.py" "$B_SRC" v1 2)" || return 1
    note "OCI layouts of 2 gzip layers each, no blob in common"
    note "team-a's: manifest $A_SRC_DIGEST"
    note "team-b's: manifest $B_SRC_DIGEST"
}

write_config() {
    local port=$1
    CONFIG="$WORK/gantry.toml"
    cat >"$CONFIG" <<EOF
# Generated by examples/tenants/run.sh.
[server]
listen = "127.0.0.1:$port"

[storage]
root = "$WORK/gantry-data"

[log]
level = "info"

[auth]
service = "gantry"
public_url = "http://127.0.0.1:$port"
# The tenants' admins (bcrypt).
htpasswd_file = "$WORK/htpasswd"

# ---- Two tenants: a namespace each, an admin each, ceilings on their policies.
[[tenants]]
name = "team-a"
namespace = "team-a"
admins = ["team-a-admin"]
max_timeout_ms = $TIMEOUT_MS

[[tenants]]
name = "team-b"
namespace = "team-b"
admins = ["team-b-admin"]
max_timeout_ms = $TIMEOUT_MS

# ---- team-a's cluster: its policy is whatever team-a publishes at :live;
# the candidate at :next is evaluated alongside, never deciding.
[[auth.oidc]]
issuer = "$ISSUER_a"
audiences = ["$AUDIENCE"]
algorithms = ["RS256"]
tenant = "team-a"

[auth.oidc.policy]
module = "oci://team-a/policies/k8s:live"
shadow = "oci://team-a/policies/k8s:next"

# ---- team-b's cluster.
[[auth.oidc]]
issuer = "$ISSUER_b"
audiences = ["$AUDIENCE"]
algorithms = ["RS256"]
tenant = "team-b"

[auth.oidc.policy]
module = "oci://team-b/policies/k8s:live"

# ---- Everything, to everyone authenticated: confining the tenants'
# workloads is the registry's job. (It confines the identities of the
# tenants' issuers only: the htpasswd admins get what this grants them,
# other tenants' policies/** included. See examples/tenants/README.md.)
[access_control.repositories."**"]
default_policy = ["read", "create", "update", "delete"]
EOF
}

config_check() {
    local t
    {
        for t in team-a team-b; do
            bcrypt_line "$(admin_of "$t")" "$(secret_of "$(admin_of "$t")")" || return 1
        done
    } >"$WORK/htpasswd" || fail "cannot write the htpasswd file" || return 1
    GANTRY_PORT="$(free_port)" || return 1
    write_config "$GANTRY_PORT"
    "$GANTRY" config check "$CONFIG" || return 1
    note "gantry config check $(basename "$CONFIG"): ok"
    note "tenants team-a, team-b (namespaces team-a, team-b); admins team-a-admin, team-b-admin (htpasswd)"
    note "policy time budget: the tenants' max_timeout_ms, $TIMEOUT_MS (their issuers set no timeout_ms)"
    note "team-a's issuer: oci://team-a/policies/k8s:live, shadow oci://team-a/policies/k8s:next;" \
        "team-b's: oci://team-b/policies/k8s:live"
    note "access_control: \"**\" read,create,update,delete for everyone authenticated"
}

start_gantry() {
    launch_gantry || return 1
    note "gantry serve on $REGISTRY"
}

# Discovery and JWKS are fetched in the background: until then a token is
# refused for that; then for the policy nobody has published.
refused_for_no_policy() {
    [[ "$(http GET /v2/ "$A_TOKEN")" == 401 ]] \
        && grep -q 'no policy published at oci://team-a/policies/k8s:live' "$WORK/gantry.log"
}

nothing_published() {
    A_TOKEN="$(token "$ISSUER_a" "$A_CI")" || return 1
    B_TOKEN="$(token "$ISSUER_b" "$B_CI")" || return 1
    remember "$A_TOKEN"
    remember "$B_TOKEN"
    wait_for 120 refused_for_no_policy || fail "no 401 saying: no policy published at oci://team-a/policies/k8s:live" || return 1
    expect_status 401 GET /v2/ "$A_TOKEN" || return 1
    note "GET /v2/ with team-a's workload token -> 401"
    note "log: $(audit | grep -m 1 -o 'outcome="deny" reason=.*no policy published at oci://team-a/policies/k8s:live[^ ]*')"
    [[ "$(http_as team-a-admin GET /v2/)" == 200 ]] || fail "team-a's admin is not served meanwhile" || return 1
    note "team-a-admin (htpasswd) -> 200 meanwhile"
}

a_policy_test() {
    write_policies
    policy_test "$A_DIR" k8s.toml cases.toml
}

a_publish() {
    A_V1="$(policy_push team-a live "$A_DIR/k8s.toml" "$A_DIR/cases.toml")" || return 1
    [[ "$A_V1" == sha256:* ]] || fail "gantry policy push printed '$A_V1'" || return 1
    wait_for 60 accepted "$A_TOKEN" || fail "team-a's token is never accepted" || return 1
    [[ "$(tag_digest team-a live)" == "$A_V1" ]] || fail "live is not $A_V1" || return 1
    audit | grep 'username="team-a:system:serviceaccount:team-a:ci"' | grep -q 'outcome="allow"' \
        || fail "no allow event for team-a:system:serviceaccount:team-a:ci" || return 1
    note "gantry policy push --repository team-a/policies/k8s --tag live --cel --settings k8s.toml --fixtures cases.toml"
    note "  -> $A_V1 (validated by the registry, then followed)"
    note "team-a's workload token -> 200, as team-a:system:serviceaccount:team-a:ci"
}

b_publish() {
    policy_test "$B_DIR" k8s.toml cases.toml || return 1
    B_V1="$(policy_push team-b live "$B_DIR/k8s.toml" "$B_DIR/cases.toml")" || return 1
    [[ "$B_V1" == sha256:* ]] || fail "gantry policy push printed '$B_V1'" || return 1
    wait_for 60 accepted "$B_TOKEN" || fail "team-b's token is never accepted" || return 1
    audit | grep 'username="team-b:ci"' | grep -q 'outcome="allow"' || fail "no allow event for team-b:ci" || return 1
    note "gantry policy push --repository team-b/policies/k8s --tag live --cel ... -> $B_V1"
    note "team-b's workload token -> 200, as team-b:ci"
}

# push_pull TENANT TOKEN SRC SRC_DIGEST: skopeo pushes SRC to TENANT/app:v1
# with TOKEN as a raw bearer, then pulls it back to a new layout.
push_pull() {
    local tenant=$1 bearer=$2 src=$3 digest=$4
    skopeo copy --dest-tls-verify=false --dest-registry-token "$bearer" \
        "oci:$src:v1" "docker://$REGISTRY/$tenant/app:v1" || return 1
    skopeo copy --src-tls-verify=false --src-registry-token "$bearer" \
        "docker://$REGISTRY/$tenant/app:v1" "oci:$WORK/pulled-$tenant:v1" || return 1
    same_blobs "$src" "$WORK/pulled-$tenant" || return 1
    [[ "$(manifest_digest "$WORK/pulled-$tenant")" == "$digest" ]] || fail "another manifest came back" || return 1
    note "skopeo copy --dest-registry-token \$TOKEN oci:$(basename "$src"):v1 docker://$REGISTRY/$tenant/app:v1"
    note "skopeo copy --src-registry-token back: manifest $digest, every blob identical"
}

a_push_pull() { push_pull team-a "$A_TOKEN" "$A_SRC" "$A_SRC_DIGEST"; }
b_push_pull() { push_pull team-b "$B_TOKEN" "$B_SRC" "$B_SRC_DIGEST"; }

# refused BEARER REPO: a manifest GET and a skopeo push into REPO are 403.
refused() {
    local bearer=$1 repo=$2 src=$3 out
    expect_status 403 GET "/v2/$repo/manifests/v1" "$bearer" || return 1
    REFUSAL="$(error_of)"
    if out="$(skopeo copy --dest-tls-verify=false --dest-registry-token "$bearer" \
        "oci:$src:v1" "docker://$REGISTRY/$repo:intruder" 2>&1)"; then
        fail "pushed into $repo"
        return 1
    fi
    echo "$out"
    grep -qiE 'denied|403' <<<"$out" || fail "skopeo failed for another reason" || return 1
}

cross_tenant() {
    refused "$A_TOKEN" team-b/app "$A_SRC" || return 1
    note "team-a's workload: GET team-b/app:v1 -> 403 $REFUSAL; skopeo push denied"
    refused "$B_TOKEN" team-a/app "$B_SRC" || return 1
    note "team-b's workload: GET team-a/app:v1 -> 403 $REFUSAL; skopeo push denied"
    expect_status 403 POST /v2/elsewhere/app/blobs/uploads/ "$A_TOKEN" || return 1
    note "team-a's workload outside every namespace (elsewhere/app) -> 403"
}

policy_read_only() {
    expect_status 200 GET /v2/team-a/policies/k8s/manifests/live "$A_TOKEN" || return 1
    expect_status 403 POST /v2/team-a/policies/k8s/blobs/uploads/ "$A_TOKEN" || return 1
    note "team-a's workload: GET team-a/policies/k8s:live -> 200; POST a blob there -> 403 $(error_of)"
}

# team-b's admin, whom `**` grants everything outside the policy
# repositories, pushes a policy to team-a's :live: refused, live unchanged.
foreign_admin() {
    local args=(policy push --registry "http://$REGISTRY" --repository team-a/policies/k8s --tag live
        --cel --settings "$B_DIR/k8s.toml")
    if "$GANTRY" "${args[@]}" --username team-b-admin --password "$(secret_of team-b-admin)" 2>"$WORK/push.err"; then
        fail "team-b's admin pushed to team-a/policies/k8s:live" || return 1
    fi
    cat "$WORK/push.err"
    grep -q DENIED "$WORK/push.err" || fail "the refusal is not DENIED: $(cat "$WORK/push.err")" || return 1
    [[ "$(tag_digest team-a live)" == "$A_V1" ]] || fail "live moved" || return 1
    note "gantry policy push --repository team-a/policies/k8s --tag live --username team-b-admin"
    note "  -> $(tail -n 1 "$WORK/push.err")"
}

a_catalog() {
    local mine theirs r
    mine="$(catalog "$A_TOKEN")" || return 1
    theirs="$(catalog "$B_TOKEN")" || return 1
    [[ -n "$mine" ]] || fail "team-a's catalog is empty" || return 1
    for r in $mine; do
        [[ "$r" == team-a/* ]] || fail "team-a's catalog lists $r" || return 1
    done
    [[ " $mine " == *" team-a/app "* ]] || fail "team-a/app is not in team-a's catalog: $mine" || return 1
    [[ " $theirs " == *" team-b/app "* ]] || fail "team-b/app is not in team-b's catalog: $theirs" || return 1
    note "team-a's workload: [${mine// /, }]"
    note "team-b's workload: [${theirs// /, }]"
}

# refused_push SETTINGS FIXTURES WORD...: team-a's push to :live is refused
# with 400 MANIFEST_INVALID naming each WORD; live has not moved, and
# team-a's workload is served as before.
refused_push() {
    local settings=$1 fixtures=$2 word
    shift 2
    if policy_push team-a live "$settings" "$fixtures"; then
        fail "the registry accepted it"
        return 1
    fi
    for word in "400" MANIFEST_INVALID "$@"; do
        grep -qF -- "$word" "$WORK/push.err" || fail "the refusal does not say '$word'" || return 1
    done
    REFUSAL="$(sed -n 's/^error: //p' "$WORK/push.err" | head -n 1)"
    ((${#REFUSAL} <= 300)) || REFUSAL="${REFUSAL:0:300}..."
    [[ "$(tag_digest team-a live)" == "$A_V1" ]] || fail "live moved" || return 1
    accepted "$A_TOKEN" || fail "team-a's workload is refused now" || return 1
}

bad_cel() {
    grep '^username' "$A_DIR/broken.toml"
    refused_push "$A_DIR/broken.toml" "$A_DIR/cases.toml" init username || return 1
    note "username = \"claims.sub +\":"
    note "  $REFUSAL"
    note "live still $A_V1; team-a's workload still 200"
}

bad_fixture() {
    refused_push "$A_DIR/k8s.toml" "$A_DIR/wrong-cases.toml" fixtures "another namespace" || return 1
    note "case \"another namespace\" expecting allow:"
    note "  $REFUSAL"
    note "live still $A_V1; team-a's workload still 200"
}

shadow() {
    A_NEXT="$(policy_push team-a next "$A_DIR/next.toml" "$A_DIR/next-cases.toml")" || return 1
    [[ "$A_NEXT" == sha256:* ]] || fail "gantry policy push printed '$A_NEXT'" || return 1
    # Decisions are cached per token: each new token is evaluated by both.
    local deadline=$((SECONDS + 120)) fresh n=0
    while :; do
        fresh="$(token "$ISSUER_a" "$A_CI")" || return 1
        remember "$fresh"
        n=$((n + 1))
        [[ "$(http GET /v2/ "$fresh")" == 200 ]] || fail "a new token was refused: the shadow decided" || return 1
        grep -q 'gantry::shadow' "$WORK/gantry.log" && break
        ((SECONDS < deadline)) || fail "no gantry::shadow line in the log" || return 1
        sleep 0.2
    done
    grep -m 1 'gantry::shadow' "$WORK/gantry.log" | grep -q "only team-a's deployer may push" \
        || fail "the shadow line does not give the candidate's reason" || return 1
    note "gantry policy push --tag next (only the deployer service account) -> $A_NEXT"
    note "new tokens of team-a's ci: 200 ($n tried); log:"
    note "  $(grep -m 1 'gantry::shadow' "$WORK/gantry.log" | sed 's/^.*gantry::shadow: //')"
}

tenant_status() {
    local admin=team-a-admin
    "$GANTRY" tenant status --registry "http://$REGISTRY" --tenant team-a \
        --username "$admin" --password "$(secret_of "$admin")" >"$WORK/status.txt" || return 1
    cat "$WORK/status.txt"
    "$GANTRY" tenant status --registry "http://$REGISTRY" --tenant team-a --json \
        --username "$admin" --password "$(secret_of "$admin")" >"$WORK/status.json" || return 1
    cat "$WORK/status.json"
    python3 - "$WORK/status.json" "$A_V1" "$A_NEXT" <<'PY' || return 1
import json, sys
status, v1, nxt = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
issuer = status["issuers"][0]
assert issuer["active"]["digest"] == v1, f'active {issuer["active"]["digest"]}, not {v1}'
assert issuer["shadow"]["digest"] == nxt, f'shadow {issuer["shadow"]["digest"]}, not {nxt}'
assert issuer["active"]["shadow_disagreements"] > 0, "no disagreement counted"
assert "fixtures" in (status.get("last_refused_push") or {}).get("reason", ""), "no last refused push"
PY
    grep -qF "${A_V1:0:19}" "$WORK/status.txt" || fail "the table does not show the active digest" || return 1
    grep -qF "${A_NEXT:0:19}" "$WORK/status.txt" || fail "the table does not show the shadow digest" || return 1
    grep -q ' shadow ' "$WORK/status.txt" || fail "the table has no shadow row" || return 1
    note "gantry tenant status --registry http://$REGISTRY --tenant team-a --username team-a-admin --password ..."
    local line
    while IFS= read -r line; do
        note "  $line"
    done <"$WORK/status.txt"
}

swap() {
    local before started
    before="$(log_lines)"
    A_V2="$(policy_push team-a live "$A_DIR/k8s-v2.toml" "$A_DIR/cases-v2.toml")" || return 1
    started="$(now_ms)"
    [[ "$A_V2" == sha256:* && "$A_V2" != "$A_V1" ]] || fail "gantry policy push printed '$A_V2'" || return 1
    wait_for 60 named_after "$before" team-a:ci || fail "team-a's workload is never named team-a:ci" || return 1
    local took
    took="$(seconds_since "$started")"
    [[ "$(tag_digest team-a live)" == "$A_V2" ]] || fail "live is not $A_V2" || return 1
    note "gantry policy push --tag live (username = service account name) -> $A_V2"
    note "$took s later the same workload token is audited as username=\"team-a:ci\" (was team-a:system:serviceaccount:team-a:ci)"
}

rollback() {
    local before started got
    [[ "$(http_as team-a-admin GET "/v2/team-a/policies/k8s/manifests/$A_V1" -H "Accept: $OCI_MANIFEST")" == 200 ]] \
        || fail "cannot read v1's manifest" || return 1
    cp "$WORK/http.body" "$WORK/v1-manifest.json"
    [[ "sha256:$(sha256sum <"$WORK/v1-manifest.json" | cut -d' ' -f1)" == "$A_V1" ]] || fail "v1's manifest came back altered" || return 1
    before="$(log_lines)"
    got="$(http_as team-a-admin PUT /v2/team-a/policies/k8s/manifests/live \
        -H "Content-Type: $OCI_MANIFEST" --data-binary @"$WORK/v1-manifest.json")"
    started="$(now_ms)"
    cat "$WORK/http.head" "$WORK/http.body"
    [[ "$got" == 201 ]] || fail "PUT live -> $got" || return 1
    wait_for 60 named_after "$before" team-a:system:serviceaccount:team-a:ci \
        || fail "team-a's workload is never named team-a:system:serviceaccount:team-a:ci again" || return 1
    local took
    took="$(seconds_since "$started")"
    [[ "$(tag_digest team-a live)" == "$A_V1" ]] || fail "live is not $A_V1" || return 1
    note "GET team-a/policies/k8s/manifests/$A_V1, PUT it to :live -> 201"
    note "$took s later: username=\"team-a:system:serviceaccount:team-a:ci\" again; live is $A_V1"
}

status_forbidden() {
    local got out
    got="$(http_as team-b-admin GET /gantry/v1/tenants/team-a)"
    cat "$WORK/http.body"
    [[ "$got" == 403 ]] || fail "team-b-admin got $got for team-a's status" || return 1
    note "team-b-admin: GET /gantry/v1/tenants/team-a -> 403 $(error_of)"
    if out="$("$GANTRY" tenant status --registry "http://$REGISTRY" --tenant team-a \
        --username team-b-admin --password "$(secret_of team-b-admin)" 2>&1)"; then
        fail "gantry tenant status showed team-a's status to team-b-admin"
        return 1
    fi
    echo "$out"
    grep -q '403' <<<"$out" || fail "gantry tenant status failed for another reason" || return 1
    note "gantry tenant status --tenant team-a as team-b-admin: $(head -n 1 <<<"$out" | cut -c 1-200)"
    [[ "$(http_as team-b-admin GET /gantry/v1/tenants/team-b)" == 200 ]] || fail "team-b-admin cannot read team-b's status" || return 1
    expect_status 403 GET /gantry/v1/tenants/team-a "$A_TOKEN" || return 1
    expect_status 401 GET /gantry/v1/tenants/team-a || return 1
    note "team-b-admin's own status -> 200; team-a's workload -> 403; no credentials -> 401"
}

audit_log() {
    local who
    audit >"$WORK/audit.log" || fail "no audit events" || return 1
    for who in team-a:system:serviceaccount:team-a:ci team-a:ci team-b:ci team-a-admin team-b-admin; do
        grep "username=\"$who\"" "$WORK/audit.log" | grep -q 'outcome="allow"' || fail "no allow event for $who" || return 1
    done
    grep 'outcome="deny"' "$WORK/audit.log" | grep -q 'no policy published at oci://team-a/policies/k8s:live' \
        || fail "no deny event for the unpublished policy" || return 1
    no_token_in_logs "$WORK/gantry.log" "$WORK/provider-a.log" "$WORK/provider-b.log" || return 1
    note "$(wc -l <"$WORK/audit.log") audit events; allows for team-a:system:serviceaccount:team-a:ci, team-a:ci, team-b:ci, team-a-admin, team-b-admin; e.g."
    note "$(grep 'username="team-b:ci"' "$WORK/audit.log" | head -n 1 | sed 's/^.*gantry::audit: //')"
    note "no token (nor a token's signature) in any log: $(wc -l <"$TOKENS_FILE") tokens checked"
}

# ------------------------------------------------------------------ the story

cd "$ROOT" || exit 1
printf 'Gantry tenants demo: two teams ship their own claim policies (work dir %s)\n\n' "$WORK" >&3

must "prerequisites: node, npm, python3, curl, skopeo, a bcrypt hasher" check_prerequisites
must "build gantry" build_gantry
must "install the OpenID provider (npm oidc-provider)" install_provider
must "build the images to push: two OCI layouts made offline" build_images
must "team-a's cluster: an OpenID provider issuing Kubernetes-shaped tokens" \
    start_provider a "$A_CI"
must "team-b's cluster: a second provider (another issuer)" \
    start_provider b "$B_CI"
must "gantry config check: two [[tenants]], ** granted to everyone authenticated" config_check
must "gantry serve" start_gantry
step "no policy published yet: team-a's workload gets 401, the log says why" nothing_published

printf '\n' >&3
must "team-a's admin tests its policy locally: gantry policy test" a_policy_test
must "team-a's admin publishes it: gantry policy push --cel --tag live" a_publish
must "team-b's admin tests and publishes team-b's policy" b_publish

printf '\n' >&3
must "team-a's workload pushes and pulls team-a/app (skopeo, raw bearer)" a_push_pull
step "team-b's workload pushes and pulls team-b/app" b_push_pull
step "each workload gets 403 in the other tenant's namespace, ** notwithstanding" cross_tenant
step "team-a's workload may read its policy, not rewrite it: 403" policy_read_only
step "team-b's admin may not rewrite team-a's policy, ** notwithstanding: DENIED" foreign_admin
step "team-a's _catalog lists only team-a's repositories" a_catalog

printf '\n' >&3
step "a policy whose CEL does not compile: 400 MANIFEST_INVALID, live unchanged" bad_cel
step "a policy whose fixture fails: 400 MANIFEST_INVALID, live unchanged" bad_fixture

printf '\n' >&3
if step "a shadow candidate at :next disagrees: new tokens still get in, gantry::shadow logs it" shadow; then
    step "gantry tenant status: active and shadow digests, disagreements" tenant_status
else
    not_run "gantry tenant status: active and shadow digests, disagreements" "no shadow candidate"
fi
if step "a new version pushed to :live renames team-a's workload within seconds" swap; then
    step "pushing the old manifest back to :live rolls back" rollback
else
    not_run "pushing the old manifest back to :live rolls back" "no new version to roll back from"
fi
step "team-b's admin cannot read team-a's status: 403" status_forbidden
step "the audit log names tenant-prefixed identities and never holds a token" audit_log

finish
