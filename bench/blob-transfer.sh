#!/usr/bin/env bash
# Pushes and pulls one large blob (default 1 GiB) through a release gantry
# and reports throughput (MiB/s) and the server's peak RSS (VmHWM).
# Usage: bench/blob-transfer.sh [SIZE_MIB]
set -euo pipefail
source "$(dirname "$0")/common.sh"
SIZE_MIB="${1:-1024}"

cd "$ROOT"
cargo build --release --bin gantry -q
G=127.0.0.1:15010
cat > "$WORK/gantry.toml" <<TOML
[server]
listen = "$G"
[storage]
root = "$WORK/gantry-data"
[log]
level = "warn"
TOML
"$ROOT/target/release/gantry" serve --config "$WORK/gantry.toml" 2>"$WORK/gantry.log" & PID=$!; PIDS+=($PID)
wait_http "http://$G/v2/"
rss() { awk '/VmHWM/{print int($2/1024)}' "/proc/$PID/status"; }
echo "server RSS after start: $(rss) MiB"

head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/blob"
digest=$(sha "$WORK/blob")
mibps() { awk -v s="$SIZE_MIB" -v t="$1" 'BEGIN{printf "%.0f", s/t}'; }

t0=$(date +%s.%N)
curl -fsS -o /dev/null -X POST -H "Content-Type: application/octet-stream" -T "$WORK/blob" "http://$G/v2/bench/big/blobs/uploads?digest=$digest"
t1=$(date +%s.%N)
push_s=$(echo "$t1 - $t0" | bc -l)
echo "monolithic push: ${SIZE_MIB} MiB in ${push_s}s = $(mibps "$push_s") MiB/s; peak RSS so far $(rss) MiB"

# Chunked: 64 MiB PATCHes, then PUT ?digest=.
loc=$(curl -fsS -D - -o /dev/null -X POST "http://$G/v2/bench/chunked/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
split -b 64M "$WORK/blob" "$WORK/chunk."
t0=$(date +%s.%N); off=0
for c in "$WORK"/chunk.*; do
    n=$(stat -c %s "$c")
    curl -fsS -o /dev/null -X PATCH -H "Content-Range: $off-$((off + n - 1))" -H 'Content-Type: application/octet-stream' --data-binary "@$c" "http://$G$loc"
    off=$((off + n))
done
curl -fsS -o /dev/null -X PUT "http://$G$loc?digest=$digest"
t1=$(date +%s.%N); rm -f "$WORK"/chunk.*
chunk_s=$(echo "$t1 - $t0" | bc -l)
echo "chunked push (64 MiB chunks): $(mibps "$chunk_s") MiB/s; peak RSS so far $(rss) MiB"

t0=$(date +%s.%N)
got=$(curl -fsS "http://$G/v2/bench/big/blobs/$digest" | sha256sum | cut -d' ' -f1)
t1=$(date +%s.%N)
pull_s=$(echo "$t1 - $t0" | bc -l)
[ "sha256:$got" = "$digest" ] || { echo "pulled blob digest mismatch: $got" >&2; exit 1; }
echo "pull: $(mibps "$pull_s") MiB/s (digest verified)"
echo "server peak RSS over the whole run: $(rss) MiB (target < 64 MiB)"
