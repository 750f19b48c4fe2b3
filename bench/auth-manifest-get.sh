#!/usr/bin/env bash
# Load benchmark of manifest GET with a cached bearer decision vs the same
# request with auth disabled, side by side in one run (two release gantry
# processes holding the same image; wrk from a second process, 16
# connections). The bearer is a token from Gantry's token endpoint, so after
# the first request every request is a SHA-256 of the token plus a cache
# lookup plus the access-control check.
# Needs: wrk, curl, python3 (bcrypt hash for the htpasswd user).
# Usage: bench/auth-manifest-get.sh   (DURATION, ROUNDS as in manifest-get.sh)
set -euo pipefail
source "$(dirname "$0")/common.sh"

cd "$ROOT"
cargo build --release --bin gantry -q 2>/dev/null || cargo build --release --bin gantry
OPEN=127.0.0.1:15020; AUTH=127.0.0.1:15021
python3 -c 'import bcrypt' 2>/dev/null || pip install -q bcrypt
python3 -c "import bcrypt; print('bench:' + bcrypt.hashpw(b'benchpw', bcrypt.gensalt(4)).decode())" > "$WORK/htpasswd"
open_config "$OPEN" open > "$WORK/open.toml"
cat > "$WORK/auth.toml" <<TOML
[server]
listen = "$AUTH"
[storage]
root = "$WORK/auth-data"
[log]
level = "warn"
[auth]
public_url = "http://$AUTH"
htpasswd_file = "$WORK/htpasswd"
TOML
"$ROOT/target/release/gantry" serve --config "$WORK/open.toml" 2>"$WORK/open.log" & OPID=$!; PIDS+=($OPID)
"$ROOT/target/release/gantry" serve --config "$WORK/auth.toml" 2>"$WORK/auth.log" & APID=$!; PIDS+=($APID)
wait_http "http://$OPEN/v2/"; wait_http "http://$AUTH/healthz"
make_image
push_image "http://$OPEN" bench/app v1
# Push to the authenticated one with Basic credentials.
push_image_auth() {
    local u="http://bench:benchpw@$AUTH"
    push_image "$u" bench/app v1
}
push_image_auth
token=$(curl -fsS -u bench:benchpw "http://$AUTH/auth/token?service=gantry&scope=repository:bench/app:pull" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
path=/v2/bench/app/manifests/v1
ACCEPT=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
cmp <(curl -fsS "${ACCEPT[@]}" -H "Authorization: Bearer $token" "http://$AUTH$path") "$WORK/manifest.json"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$AUTH$path")" = 401 ] || { echo "auth server must refuse anonymous reads" >&2; exit 1; }

ROUNDS="${ROUNDS:-3}"
: > "$WORK/results"
for i in $(seq 1 "$ROUNDS"); do
    read -r o oc < <(load "$OPID" "http://$OPEN$path" "${ACCEPT[@]}")
    read -r a ac < <(load "$APID" "http://$AUTH$path" "${ACCEPT[@]}" -H "Authorization: Bearer $token")
    echo "round $i: auth off $o req/s ($oc µs CPU/req)  cached bearer $a ($ac)"
    echo "$o $oc $a $ac" >> "$WORK/results"
done
echo "manifest GET, 16 connections, ${DURATION:-10}s per run, $ROUNDS rounds, $(nproc) cores"
awk '{o+=$1; oc+=$2; a+=$3; ac+=$4; n++}
    END {
        printf "auth off        %9.0f req/s  %6.1f µs server CPU/req\n", o/n, oc/n
        printf "cached bearer   %9.0f req/s  %6.1f µs server CPU/req\n", a/n, ac/n
        printf "ratio: throughput %.2f, CPU-per-request efficiency %.2f\n", a/o, oc/ac
    }' "$WORK/results"
