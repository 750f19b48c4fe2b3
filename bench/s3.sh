#!/usr/bin/env bash
# The s3 backend, side by side in one run (issue 11):
#   1. a 1 GiB blob pushed and pulled through Gantry on s3, against the same
#      transfer done directly against the same S3 server by a plain client
#      (boto3's upload_file: multipart, 8 MiB parts, 10 threads; curl's
#      GET of the object, the way a client follows a redirect), with
#      Gantry's peak RSS;
#   2. cached manifest GET (wrk, 16 connections) on s3 against on fs.
# The S3 server is moto_server (pip install -r tests/s3/requirements.txt);
# it is the bottleneck of both transfers, which is what the ratio is about.
# Needs: curl, wrk, moto_server, python3 with boto3 (moto brings it).
# Usage: bench/s3.sh   (SIZE_MIB=1024, ROUNDS=3, DURATION=10 by default)
set -euo pipefail
source "$(dirname "$0")/common.sh"

cd "$ROOT"
cargo build --release --bin gantry -q 2>/dev/null || cargo build --release --bin gantry

SIZE_MIB="${SIZE_MIB:-1024}"; ROUNDS="${ROUNDS:-3}"
M=127.0.0.1:15090; S=127.0.0.1:15091; F=127.0.0.1:15092
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
moto_server -H 127.0.0.1 -p "${M##*:}" >"$WORK/moto.log" 2>&1 & PIDS+=($!)
wait_http "http://$M/"
curl -fsS -o /dev/null -X PUT "http://$M/gantry"
curl -fsS -o /dev/null -X PUT "http://$M/direct"

open_config "$S" s3 > "$WORK/s3.toml"
sed -i "s#^root = .*#&\nbackend = \"s3\"\n[storage.s3]\nbucket = \"gantry\"\nendpoint = \"http://$M\"\nallow_http = true#" "$WORK/s3.toml"
open_config "$F" fs > "$WORK/fs.toml"
"$ROOT/target/release/gantry" serve --config "$WORK/s3.toml" 2>"$WORK/s3.log" & SPID=$!; PIDS+=($SPID)
"$ROOT/target/release/gantry" serve --config "$WORK/fs.toml" 2>"$WORK/fs.log" & FPID=$!; PIDS+=($FPID)
wait_http "http://$S/v2/"; wait_http "http://$F/v2/"

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$WORK/blob"
DIGEST=$(sha "$WORK/blob")
mibs() { awk -v s="$SIZE_MIB" -v t="$1" 'BEGIN{printf "%.0f", s / t}'; }
now() { date +%s.%N; }

cat > "$WORK/direct.py" <<'PY'
import sys, time, boto3
from boto3.s3.transfer import TransferConfig
op, endpoint, path = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
cfg = TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=10)
t = time.time()
if op == "put":
    s3.upload_file(path, "direct", "blob", Config=cfg)
else:
    s3.download_file("direct", "blob", path, Config=cfg)
print(time.time() - t)
PY

best_push=""; best_pull=""; best_dput=""; best_dget=""
for i in $(seq 1 "$ROUNDS"); do
    # Each round a real transfer: the bucket must not have the blob yet
    # (Gantry skips sending content the bucket already holds).
    curl -fsS -o /dev/null -X DELETE "http://$M/gantry/blobs/sha256/${DIGEST#sha256:}"
    curl -fsS -o /dev/null -X DELETE "http://$M/direct/blob"
    t0=$(now); push_blob "http://$S" bench/big "$WORK/blob" "$DIGEST"; t1=$(now)
    push=$(echo "$t1 - $t0" | bc)
    t0=$(now); curl -fsS -o "$WORK/pulled" "http://$S/v2/bench/big/blobs/$DIGEST"; t1=$(now)
    pull=$(echo "$t1 - $t0" | bc)
    cmp -s "$WORK/pulled" "$WORK/blob" || { echo "gantry served other bytes"; exit 1; }
    dput=$(python3 "$WORK/direct.py" put "http://$M" "$WORK/blob")
    t0=$(now); curl -fsS -o "$WORK/pulled" "http://$M/direct/blob"; t1=$(now)
    dget=$(echo "$t1 - $t0" | bc)
    rm -f "$WORK/pulled"
    echo "round $i: gantry push $(mibs "$push") MiB/s pull $(mibs "$pull") MiB/s | direct put $(mibs "$dput") MiB/s get $(mibs "$dget") MiB/s"
    best_push=$(printf '%s\n%s\n' "$push" "$best_push" | grep . | sort -g | head -1)
    best_pull=$(printf '%s\n%s\n' "$pull" "$best_pull" | grep . | sort -g | head -1)
    best_dput=$(printf '%s\n%s\n' "$dput" "$best_dput" | grep . | sort -g | head -1)
    best_dget=$(printf '%s\n%s\n' "$dget" "$best_dget" | grep . | sort -g | head -1)
done
rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$SPID/status")
echo "best of $ROUNDS: push $(mibs "$best_push") vs direct $(mibs "$best_dput") MiB/s ($(awk -v a="$best_dput" -v b="$best_push" 'BEGIN{printf "%.2f", a / b}')x); pull $(mibs "$best_pull") vs direct $(mibs "$best_dget") MiB/s ($(awk -v a="$best_dget" -v b="$best_pull" 'BEGIN{printf "%.2f", a / b}')x); gantry-on-s3 peak RSS ${rss} MiB"

# Cached manifest GET: one image on each, wrk against both, interleaved.
make_image
push_image "http://$S" bench/app v1; push_image "http://$F" bench/app v1
ACCEPT=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
path=/v2/bench/app/manifests/v1
cmp <(curl -fsS "${ACCEPT[@]}" "http://$S$path") "$WORK/manifest.json"
for i in $(seq 1 "$ROUNDS"); do
    read -r f fc < <(load "$FPID" "http://$F$path" "${ACCEPT[@]}")
    read -r s sc < <(load "$SPID" "http://$S$path" "${ACCEPT[@]}")
    echo "round $i: manifest GET fs $f req/s ($fc µs CPU/req)  s3 $s req/s ($sc µs CPU/req)  s3/fs $(awk -v a="$s" -v b="$f" 'BEGIN{printf "%.2f", a / b}')"
done
