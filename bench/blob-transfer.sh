#!/usr/bin/env bash
# One large blob (default 1 GiB) pushed and pulled with curl, side by side in
# one run:
#  - push: gantry's monolithic `POST ?digest=` and chunked (64 MiB PATCHes)
#    push against the limit of this machine for what a push must do: SHA-256
#    of the bytes (openssl, SHA-NI where the CPU has it) and a write and
#    fsync of the same bytes to a new file by the disk's fastest path (dd
#    oflag=direct conv=fsync: no page cache), run at the same time (the best
#    a server that overlaps hashing and disk could do, before it even reads
#    the socket);
#  - pull: gantry against Debian's docker-registry 2.8 and nginx serving the
#    same file (sendfile on), each read into /dev/null by curl;
#  - gantry's peak RSS (VmHWM) over the whole run.
# Each figure is the best of ROUNDS (default 3) rounds run in turn; the push
# is also given as the median over the rounds of push/limit within a round
# (this machine's virtual disk varies 2x within a minute, so neighbours
# compare better than bests). Every write round starts on a settled disk:
# the previous round's file is deleted and `sync`ed first, so that no round
# pays for the discards (`-o discard`) of another's deleted gigabyte.
# GANTRY_BASELINE=/path/to/another/gantry adds that build's monolithic push
# to every round (the two take turns going first), side by side.
# Usage: [ROUNDS=3] [GANTRY=path] [GANTRY_BASELINE=path] bench/blob-transfer.sh [SIZE_MIB]
# Needs: curl, openssl, dd, docker-registry, nginx (Debian: nginx-light).
set -euo pipefail
source "$(dirname "$0")/common.sh"
SIZE_MIB="${1:-1024}"
ROUNDS="${ROUNDS:-3}"

cd "$ROOT"
if [ -z "${GANTRY:-}" ]; then
    cargo build --release --bin gantry -q
    GANTRY="$ROOT/target/release/gantry"
fi
G=127.0.0.1:15010 R=127.0.0.1:15011 N=127.0.0.1:15012 B=127.0.0.1:15013

open_config "$G" gantry > "$WORK/gantry.toml"
"$GANTRY" serve --config "$WORK/gantry.toml" 2>"$WORK/gantry.log" & PID=$!; PIDS+=($PID)
if [ -n "${GANTRY_BASELINE:-}" ]; then
    open_config "$B" baseline > "$WORK/baseline.toml"
    "$GANTRY_BASELINE" serve --config "$WORK/baseline.toml" 2>"$WORK/baseline.log" & PIDS+=($!)
    wait_http "http://$B/v2/"
fi
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry-data}}
http: {addr: $R}
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 & PIDS+=($!)
chmod a+rx "$WORK" # nginx workers may run as another user
mkdir -p "$WORK/nginx/www"; echo ok > "$WORK/nginx/www/index.html"
cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $WORK/nginx;
    server { listen $N; root $WORK/nginx/www; }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" 2>/dev/null & PIDS+=($!)
wait_http "http://$G/v2/"; wait_http "http://$R/v2/"; wait_http "http://$N/"
rss() { awk '/VmHWM/{print int($2/1024)}' "/proc/$PID/status"; }
echo "gantry RSS after start: $(rss) MiB"

head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/blob"
digest=$(sha "$WORK/blob")
ln "$WORK/blob" "$WORK/nginx/www/blob"
mibps() { awk -v s="$SIZE_MIB" -v t="$1" 'BEGIN{printf "%.0f", s/t}'; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; } # START END
best() { sort -n | head -1; }       # the shortest time of the rounds

settle() { sync; sleep 1; }

limit_round() {
    local t0 t1
    settle
    t0=$(now)
    openssl dgst -sha256 "$WORK/push-blob" > /dev/null & local h=$!
    dd if="$WORK/push-blob" of="$WORK/copy" bs=8M oflag=direct conv=fsync status=none
    wait "$h"; t1=$(now)
    rm -f "$WORK/copy"
    settle
    secs "$t0" "$t1"
}

# Each push round sends a blob the registry has not seen (the round number
# written over the first bytes of a copy): the push a client makes. The same
# digest again would take the duplicate's path instead (spooled, synced,
# then deleted: unlinking a gigabyte took 0.8 s here), which a client skips
# after its HEAD. The chunked rounds still push the one blob.
fresh_blob() { # ROUND: prints the digest of $WORK/push-blob
    printf '%016d' "$1" | dd of="$WORK/push-blob" bs=16 count=1 conv=notrunc status=none
    echo "sha256:$(openssl dgst -sha256 -r "$WORK/push-blob" | cut -d' ' -f1)"
}

mono_push() { # SERVER REPO FILE DIGEST
    curl -fsS -o /dev/null -X POST -H "Content-Type: application/octet-stream" -T "$3" \
        "http://$1/v2/bench/$2/blobs/uploads?digest=$4"
}

push_round() { # SERVER ROUND DIGEST ($WORK/push-blob's)
    local t0 t1
    settle
    t0=$(now)
    mono_push "$1" "mono$2" "$WORK/push-blob" "$3"
    t1=$(now); secs "$t0" "$t1"
}

chunked_round() { # ROUND
    local loc off n t0 t1
    loc=$(curl -fsS -D - -o /dev/null -X POST "http://$G/v2/bench/chunked$1/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
    settle
    t0=$(now); off=0
    for c in "$WORK"/chunk.*; do
        n=$(stat -c %s "$c")
        curl -fsS -o /dev/null -X PATCH -H "Content-Range: $off-$((off + n - 1))" -H 'Content-Type: application/octet-stream' --data-binary "@$c" "http://$G$loc"
        off=$((off + n))
    done
    curl -fsS -o /dev/null -X PUT "http://$G$loc?digest=$digest"
    t1=$(now); secs "$t0" "$t1"
}

pull_round() { # URL
    local t0 t1
    t0=$(now); curl -fsS -o /dev/null "$1"; t1=$(now); secs "$t0" "$t1"
}

# Push once into docker-registry (its session + PUT flow), so that all three
# servers hold the same bytes; warm the page cache for everybody.
push_blob "http://$R" bench/big "$WORK/blob"
cat "$WORK/blob" > /dev/null
# The first 1 GiB written to fresh disk blocks is much slower here than
# later ones; write (and free) them once so no contender pays for it.
dd if="$WORK/blob" of="$WORK/copy" bs=4M conv=fsync status=none; rm -f "$WORK/copy"
split -b 64M "$WORK/blob" "$WORK/chunk."
cp "$WORK/blob" "$WORK/push-blob"
mono_push "$G" mono0 "$WORK/blob" "$digest"

# One pull from each server first, so that each serves its own copy from
# the page cache.
for u in "http://$G/v2/bench/mono0/blobs/$digest" "http://$R/v2/bench/big/blobs/$digest" "http://$N/blob"; do
    curl -fsS -o /dev/null "$u"
done
declare -A T
for r in $(seq 1 "$ROUNDS"); do
    T[limit]+="$(limit_round)"$'\n'
    d=$(fresh_blob "$r")
    if [ -z "${GANTRY_BASELINE:-}" ]; then
        T[push]+="$(push_round "$G" "$r" "$d")"$'\n'
    elif [ $((r % 2)) = 1 ]; then
        T[push]+="$(push_round "$G" "$r" "$d")"$'\n'
        T[baseline]+="$(push_round "$B" "$r" "$d")"$'\n'
    else
        T[baseline]+="$(push_round "$B" "$r" "$d")"$'\n'
        T[push]+="$(push_round "$G" "$r" "$d")"$'\n'
    fi
    T[chunked]+="$(chunked_round "$r")"$'\n'
    T[gantry]+="$(pull_round "http://$G/v2/bench/mono0/blobs/$digest")"$'\n'
    T[registry]+="$(pull_round "http://$R/v2/bench/big/blobs/$digest")"$'\n'
    T[nginx]+="$(pull_round "http://$N/blob")"$'\n'
done
rm -f "$WORK"/chunk.*

# The pulled bytes are the pushed ones.
got=$(curl -fsS "http://$G/v2/bench/mono0/blobs/$digest" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$digest" ] || { echo "pulled blob digest mismatch: $got" >&2; exit 1; }

declare -A B
for k in limit push ${GANTRY_BASELINE:+baseline} chunked gantry registry nginx; do
    B[$k]=$(printf '%s' "${T[$k]}" | best)
    echo "$k seconds per round: $(printf '%s' "${T[$k]}" | tr '\n' ' ')" >&2
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b/a}'; } # TIME_A TIME_B: speed of A over B
# The median over the rounds of limit/push, each within its own round.
round_ratios=$(paste <(printf '%s' "${T[limit]}") <(printf '%s' "${T[push]}") | awk '{printf "%.2f\n", $1/$2}' | sort -n)
median_ratio=$(printf '%s\n' "$round_ratios" | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : sprintf("%.2f", (a[NR/2]+a[NR/2+1])/2))}')

echo
echo "${SIZE_MIB} MiB, best of $ROUNDS rounds (MiB/s):"
echo "push limit (SHA-256 beside write+fsync): $(mibps "${B[limit]}")"
echo "gantry monolithic push:                $(mibps "${B[push]}")   ($(ratio "${B[push]}" "${B[limit]}")x the limit; target >= 0.7x)"
echo "  push/limit round by round:          $(printf '%s' "$round_ratios" | tr '\n' ' ')(median ${median_ratio}x)"
if [ -n "${GANTRY_BASELINE:-}" ]; then
    base_ratios=$(paste <(printf '%s' "${T[limit]}") <(printf '%s' "${T[baseline]}") | awk '{printf "%.2f\n", $1/$2}' | sort -n | tr '\n' ' ')
    echo "baseline monolithic push:              $(mibps "${B[baseline]}")   ($(ratio "${B[baseline]}" "${B[limit]}")x the limit; round by round: ${base_ratios})"
    echo "  gantry/baseline push, best of each:  $(ratio "${B[push]}" "${B[baseline]}")x"
fi
echo "gantry chunked push (64 MiB PATCHes):  $(mibps "${B[chunked]}")   ($(ratio "${B[chunked]}" "${B[limit]}")x the limit)"
echo "pull gantry:                           $(mibps "${B[gantry]}")"
echo "pull docker-registry 2.8:              $(mibps "${B[registry]}")   (gantry/registry $(ratio "${B[gantry]}" "${B[registry]}")x)"
echo "pull nginx (sendfile):                 $(mibps "${B[nginx]}")   (gantry/nginx $(ratio "${B[gantry]}" "${B[nginx]}")x)"
echo "gantry peak RSS over the whole run:    $(rss) MiB (target < 64 MiB)"
