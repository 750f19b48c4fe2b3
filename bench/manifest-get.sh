#!/usr/bin/env bash
# Load benchmark of anonymous manifest GET, side by side in one run:
#   gantry (release build)  vs  Debian's docker-registry 2.x  vs  the floor
#   (host/examples/floor.rs: a trivial axum server returning the same bytes).
# wrk runs from a second process on loopback with 16 connections.
# Needs: wrk, docker-registry, curl (apt-get install wrk docker-registry curl).
# Usage: bench/manifest-get.sh   (DURATION=10 seconds per run by default)
set -euo pipefail
source "$(dirname "$0")/common.sh"

cd "$ROOT"
cargo build --release --bin gantry --example floor -q 2>/dev/null || cargo build --release --bin gantry --example floor

G=127.0.0.1:15000; R=127.0.0.1:15001; F=127.0.0.1:15002
cat > "$WORK/gantry.toml" <<TOML
[server]
listen = "$G"
[storage]
root = "$WORK/gantry-data"
[log]
level = "warn"
TOML
"$ROOT/target/release/gantry" serve --config "$WORK/gantry.toml" 2>"$WORK/gantry.log" & PIDS+=($!)

cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: { level: error }
storage:
  filesystem: { rootdirectory: $WORK/registry-data }
  cache: { blobdescriptor: inmemory }
http: { addr: $R }
YAML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 & PIDS+=($!)

wait_http "http://$G/v2/"; wait_http "http://$R/v2/"
make_image
push_image "http://$G" bench/app v1
push_image "http://$R" bench/app v1
"$ROOT/target/release/examples/floor" "$F" "$WORK/manifest.json" application/vnd.oci.image.manifest.v1+json & PIDS+=($!)
wait_http "http://$F/"

ACCEPT=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
path=/v2/bench/app/manifests/v1
cmp <(curl -fsS "${ACCEPT[@]}" "http://$G$path") "$WORK/manifest.json" || { echo "gantry served other bytes"; curl -s "http://$G$path"; exit 1; }
cmp <(curl -fsS "${ACCEPT[@]}" "http://$R$path") "$WORK/manifest.json"

# Interleaved rounds, so background noise on this shared machine hits
# every server alike; the figures are means over the rounds.
ROUNDS="${ROUNDS:-3}"
f_sum=0; g_sum=0; r_sum=0
for i in $(seq 1 "$ROUNDS"); do
    f=$(load "http://$F$path" "${ACCEPT[@]}"); g=$(load "http://$G$path" "${ACCEPT[@]}"); r=$(load "http://$R$path" "${ACCEPT[@]}")
    echo "round $i: floor $f  gantry $g  docker-registry $r"
    f_sum=$(echo "$f_sum + $f" | bc -l); g_sum=$(echo "$g_sum + $g" | bc -l); r_sum=$(echo "$r_sum + $r" | bc -l)
done
floor=$(echo "$f_sum / $ROUNDS" | bc -l); gantry=$(echo "$g_sum / $ROUNDS" | bc -l); registry=$(echo "$r_sum / $ROUNDS" | bc -l)
echo "manifest GET, 16 connections, ${DURATION:-10}s per run, $ROUNDS rounds, $(nproc) cores"
printf '%-16s %12.0f req/s\n' floor "$floor" gantry "$gantry" docker-registry "$registry"
awk -v g="$gantry" -v f="$floor" -v r="$registry" 'BEGIN{printf "gantry/floor = %.2f   gantry/docker-registry = %.1f\n", g/f, g/r}'
