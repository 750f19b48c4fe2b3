#!/usr/bin/env bash
# Load benchmark of anonymous manifest GET, side by side in one run:
#   gantry (release build)  vs  Debian's docker-registry 2.x  vs  the floor
#   (host/examples/floor.rs: a trivial axum server returning the same bytes).
# wrk runs from a second process on loopback with 16 connections.
# Needs: wrk, docker-registry, curl (apt-get install wrk docker-registry curl).
# Usage: bench/manifest-get.sh   (DURATION=10 seconds per run by default)
# GANTRY_BASELINE=/path/to/an/older/gantry adds that build as a fourth
# server, to see a change's effect side by side (gantry/baseline).
set -euo pipefail
source "$(dirname "$0")/common.sh"

cd "$ROOT"
cargo build --release --bin gantry --example floor -q 2>/dev/null || cargo build --release --bin gantry --example floor

G=127.0.0.1:15000; R=127.0.0.1:15001; F=127.0.0.1:15002
open_config "$G" gantry > "$WORK/gantry.toml"
"$ROOT/target/release/gantry" serve --config "$WORK/gantry.toml" 2>"$WORK/gantry.log" & GPID=$!; PIDS+=($GPID)

cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: { level: error }
storage:
  filesystem: { rootdirectory: $WORK/registry-data }
  cache: { blobdescriptor: inmemory }
http: { addr: $R }
YAML
B=127.0.0.1:15003; BPID=
if [ -n "${GANTRY_BASELINE:-}" ]; then
    sed -e "s/$G/$B/" -e "s#gantry-data#baseline-data#" "$WORK/gantry.toml" > "$WORK/baseline.toml"
    "$GANTRY_BASELINE" serve --config "$WORK/baseline.toml" 2>"$WORK/baseline.log" & BPID=$!; PIDS+=($BPID)
fi

docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 & RPID=$!; PIDS+=($RPID)

wait_http "http://$G/v2/"; wait_http "http://$R/v2/"
make_image
push_image "http://$G" bench/app v1
if [ -n "$BPID" ]; then wait_http "http://$B/v2/"; push_image "http://$B" bench/app v1; fi
push_image "http://$R" bench/app v1
"$ROOT/target/release/examples/floor" "$F" "$WORK/manifest.json" application/vnd.oci.image.manifest.v1+json & FPID=$!; PIDS+=($FPID)
wait_http "http://$F/"

ACCEPT=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
path=/v2/bench/app/manifests/v1
cmp <(curl -fsS "${ACCEPT[@]}" "http://$G$path") "$WORK/manifest.json" || { echo "gantry served other bytes"; curl -s "http://$G$path"; exit 1; }
cmp <(curl -fsS "${ACCEPT[@]}" "http://$R$path") "$WORK/manifest.json"

# Interleaved rounds, so background noise on this shared machine hits every
# server alike. Throughput is the mean over rounds; server CPU per request is
# the median-free mean too, and is the steadier figure of the two.
ROUNDS="${ROUNDS:-3}"
: > "$WORK/results"
for i in $(seq 1 "$ROUNDS"); do
    read -r f fc < <(load "$FPID" "http://$F$path" "${ACCEPT[@]}")
    read -r g gc < <(load "$GPID" "http://$G$path" "${ACCEPT[@]}")
    read -r r rc < <(load "$RPID" "http://$R$path" "${ACCEPT[@]}")
    b=0; bc=0
    if [ -n "$BPID" ]; then read -r b bc < <(load "$BPID" "http://$B$path" "${ACCEPT[@]}"); fi
    echo "round $i: floor $f req/s ($fc µs CPU/req)  gantry $g ($gc)  docker-registry $r ($rc)  baseline $b ($bc)"
    echo "$f $fc $g $gc $r $rc $b $bc" >> "$WORK/results"
done
echo "manifest GET, 16 connections, ${DURATION:-10}s per run, $ROUNDS rounds, $(nproc) cores"
awk '{f+=$1; fc+=$2; g+=$3; gc+=$4; r+=$5; rc+=$6; b+=$7; bc+=$8; n++}
    END {
        printf "%-16s %9.0f req/s  %6.1f µs server CPU/req\n", "floor", f/n, fc/n
        printf "%-16s %9.0f req/s  %6.1f µs server CPU/req\n", "gantry", g/n, gc/n
        printf "%-16s %9.0f req/s  %6.1f µs server CPU/req\n", "docker-registry", r/n, rc/n
        printf "gantry/floor: throughput %.2f, CPU-per-request efficiency %.2f\n", g/f, fc/gc
        printf "gantry/docker-registry: throughput %.1f, CPU-per-request efficiency %.1f\n", g/r, rc/gc
        if (b > 0) {
            printf "%-16s %9.0f req/s  %6.1f µs server CPU/req\n", "baseline", b/n, bc/n
            printf "gantry/baseline: throughput %.2f, CPU-per-request efficiency %.2f\n", g/b, bc/gc
        }
    }' "$WORK/results"
