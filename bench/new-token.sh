#!/usr/bin/env bash
# Server CPU per request for an OIDC token never seen before — signature
# check (RS256, 2048-bit) + the builtin:cel claim policy in Wasm + access
# control — side by side in one run with the same GET carrying one cached
# token, and with auth off. Tokens are Kubernetes-shaped (the claims of
# tests/fixtures/claims/kubernetes.json, the policy of
# examples/policies/kubernetes-cel), each distinct, minted beforehand by
# bench/mint-tokens.py; the issuer's keys come from a static JWKS file, so
# the run touches no network. Every run lasts DURATION; a round's tokens
# must outlast it (the script reports any token sent twice, and fails when
# more than 1 % were).
# Needs: wrk, curl, python3 with the PyPI `cryptography` package.
# Usage: bench/new-token.sh   (TOKENS per round, default 60000; ROUNDS,
# DURATION as in manifest-get.sh; GANTRY_BASELINE=/path/to/older/gantry
# adds that build's new-token run to every round)
set -euo pipefail
source "$(dirname "$0")/common.sh"

cd "$ROOT"
cargo build --release --bin gantry -q 2>/dev/null || cargo build --release --bin gantry
python3 -c 'import cryptography' 2>/dev/null || pip install -q cryptography
ROUNDS="${ROUNDS:-3}"; TOKENS="${TOKENS:-60000}"
ISSUER=https://k8s.bench.example; AUDIENCE=gantry
echo "minting $((ROUNDS * TOKENS + 1)) RS256 tokens..."
python3 bench/mint-tokens.py "$WORK" "$ISSUER" "$AUDIENCE" $((ROUNDS * TOKENS + 1))
head -1 "$WORK/tokens" > "$WORK/cached-token"
for r in $(seq 1 "$ROUNDS"); do
    sed -n "$(( (r - 1) * TOKENS + 2 )),$(( r * TOKENS + 1 ))p" "$WORK/tokens" > "$WORK/round-$r"
done

OPEN=127.0.0.1:15030; AUTH=127.0.0.1:15031; BASE=127.0.0.1:15032
open_config "$OPEN" open > "$WORK/open.toml"
auth_config() { # LISTEN DATA
    cat <<TOML
[server]
listen = "$1"
[storage]
root = "$2"
[log]
level = "warn"
[auth]
public_url = "http://$1"
[[auth.oidc]]
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
jwks_file = "$WORK/jwks.json"
username_prefix = "k8s:"
groups_prefix = "k8s:"
[auth.oidc.policy]
module = "builtin:cel"
[auth.oidc.policy.settings]
$(sed -E 's/^\[\[(.*)\]\]/[[auth.oidc.policy.settings.\1]]/' examples/policies/kubernetes-cel/settings.toml)
[access_control.repositories."**"]
anonymous_policy = ["read", "create"]
default_policy = ["read"]
TOML
}
auth_config "$AUTH" "$WORK/auth-data" > "$WORK/auth.toml"
"$ROOT/target/release/gantry" serve --config "$WORK/open.toml" 2>"$WORK/open.log" & OPID=$!; PIDS+=($OPID)
"$ROOT/target/release/gantry" serve --config "$WORK/auth.toml" 2>"$WORK/auth.log" & APID=$!; PIDS+=($APID)
wait_http "http://$OPEN/v2/"; wait_http "http://$AUTH/healthz"
make_image
push_image "http://$OPEN" bench/app v1
push_image "http://$AUTH" bench/app v1
if [ -n "${GANTRY_BASELINE:-}" ]; then
    auth_config "$BASE" "$WORK/base-data" > "$WORK/base.toml"
    "$GANTRY_BASELINE" serve --config "$WORK/base.toml" 2>"$WORK/base.log" & BPID=$!; PIDS+=($BPID)
    wait_http "http://$BASE/healthz"
    push_image "http://$BASE" bench/app v1
fi

path=/v2/bench/app/manifests/v1
ACCEPT=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
cached="$(cat "$WORK/cached-token")"
# The token really authenticates (and only with the bearer does a read of an
# anonymous-create/read repository run the policy at all: check both).
cmp <(curl -fsS "${ACCEPT[@]}" -H "Authorization: Bearer $cached" "http://$AUTH$path") "$WORK/manifest.json"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${ACCEPT[@]}" -H "Authorization: Bearer ${cached}x" "http://$AUTH$path")" = 401 ] \
    || { echo "a token with a bad signature must be refused" >&2; exit 1; }

: > "$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
    read -r o oc < <(load "$OPID" "http://$OPEN$path" "${ACCEPT[@]}")
    read -r c cc < <(load "$APID" "http://$AUTH$path" "${ACCEPT[@]}" -H "Authorization: Bearer $cached")
    read -r n nc nr < <(load_tokens "$APID" "http://$AUTH$path" "$WORK/round-$r" "$path")
    line="round $r: auth off $o req/s ($oc µs CPU/req)  cached token $c ($cc)  new token $n ($nc, $nr re-sent)"
    b=0; bc_=0
    if [ -n "${GANTRY_BASELINE:-}" ]; then
        cp "$WORK/round-$r" "$WORK/base-round-$r" # same tokens: the baseline has not seen them either
        read -r b bc_ br < <(load_tokens "$BPID" "http://$BASE$path" "$WORK/base-round-$r" "$path")
        line="$line  baseline new token $b ($bc_, $br re-sent)"
    fi
    echo "$line"
    echo "$o $oc $c $cc $n $nc $b $bc_" >> "$WORK/results"
done
echo "manifest GET, 16 connections, $TOKENS new tokens per round, $ROUNDS rounds, $(nproc) cores"
awk -v base="${GANTRY_BASELINE:-}" '{o+=$1; oc+=$2; c+=$3; cc+=$4; n+=$5; nc+=$6; b+=$7; bc+=$8; k++}
    END {
        printf "auth off        %9.0f req/s  %6.1f µs server CPU/req\n", o/k, oc/k
        printf "cached token    %9.0f req/s  %6.1f µs server CPU/req\n", c/k, cc/k
        printf "new token       %9.0f req/s  %6.1f µs server CPU/req\n", n/k, nc/k
        if (base != "") printf "baseline new    %9.0f req/s  %6.1f µs server CPU/req\n", b/k, bc/k
        printf "new token over auth off: %.2fx server CPU per request\n", nc/oc
        if (base != "") printf "new token over baseline: %.2fx server CPU per request\n", nc/bc
    }' "$WORK/results"
