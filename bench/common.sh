# Shared helpers for the load benchmarks: start servers, push content with curl.
# Sourced by bench/*.sh; not meant to be run directly.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d /tmp/gantry-bench.XXXXXX)"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # URL
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    return 1
}

# The config of an open gantry: LISTEN, its data under $WORK/NAME-data, only
# warnings logged (so logging costs the hot path nothing).
open_config() { # LISTEN NAME
    cat <<TOML
[server]
listen = "$1"
[storage]
root = "$WORK/$2-data"
[log]
level = "warn"
TOML
}

sha() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

push_blob() { # REGISTRY REPO FILE [DIGEST]
    # Session + PUT: the flow every registry supports (docker-registry 2.x
    # answers a monolithic POST ?digest= by opening a session instead).
    # A timed push passes the DIGEST computed beforehand: a client knows it
    # before it pushes, and coreutils' sha256sum takes seconds per GiB.
    local loc sep digest="${4:-}"
    [ -n "$digest" ] || digest=$(sha "$3")
    loc=$(curl -fsS -D - -o /dev/null -X POST "$1/v2/$2/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
    case "$loc" in http*) ;; *) loc="$1$loc";; esac
    sep='?'; case "$loc" in *\?*) sep='&';; esac
    curl -fsS -o /dev/null -T "$3" -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$digest"
}

# Builds a small image (config + 2 layers) in $WORK, once.
make_image() {
    head -c 2048 /dev/urandom > "$WORK/l1"; head -c 4096 /dev/urandom > "$WORK/l2"
    echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$WORK/cfg"
    cat > "$WORK/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$(sha "$WORK/cfg")","size":$(stat -c %s "$WORK/cfg")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$(sha "$WORK/l1")","size":2048},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$(sha "$WORK/l2")","size":4096}]}
JSON
}

# Pushes the image made by make_image as REPO:TAG.
push_image() { # REGISTRY REPO TAG
    for f in cfg l1 l2; do push_blob "$1" "$2" "$WORK/$f"; done
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "@$WORK/manifest.json" "$1/v2/$2/manifests/$3"
}

# CPU time (user + system) a process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs wrk (16 connections) against URL served by process PID and prints
# "<requests/s> <server CPU µs per request>". The second figure is what the
# server spent, so it is far less sensitive than throughput to other load
# on a shared machine.
load() { # PID URL [extra wrk args...]
    local pid="$1" url="$2"; shift 2
    local before after out perf_pid=""
    before=$(cpu_ticks "$pid")
    start_perf "$pid"; perf_pid=$PERF_RUNNING
    out=$(wrk -t2 -c16 -d"${DURATION:-10}s" "$@" "$url")
    [ -z "$perf_pid" ] || wait "$perf_pid"
    after=$(cpu_ticks "$pid")
    echo "$out" | awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        /requests in/ {n=$1} /Requests\/sec/ {rps=$2}
        END {printf "%.0f %.1f\n", rps, (t / hz) * 1e6 / n}'
}

# PERF=FILE: records a call-graph profile of the server (`perf record -g`)
# during the script's PERF_RUN-th load run (default the first), for `perf
# report -i FILE`. PERF_CALL_GRAPH=dwarf unwinds through code built without
# frame pointers (the Rust standard library, libc), at a higher cost.
# Sets PERF_RUNNING to perf's PID, or to nothing.
start_perf() { # PID
    PERF_RUNNING=""
    [ -n "${PERF:-}" ] || return 0
    echo >> "$WORK/perf-runs"
    if [ "$(wc -l < "$WORK/perf-runs")" -eq "${PERF_RUN:-1}" ]; then
        perf record -q --call-graph "${PERF_CALL_GRAPH:-fp}" -o "$PERF" -p "$1" -- sleep "$(( ${DURATION:-10} - 1 ))" >/dev/null 2>&1 &
        PERF_RUNNING=$!
    fi
}

# Like load(), with a bearer token never seen before in every request
# (bench/tokens.lua takes them in file order): prints "<requests/s> <server
# CPU µs per request> <tokens sent twice>"; fails on any response other than
# 200, or when more than 1 % of the requests ran out of new tokens.
load_tokens() { # PID URL TOKEN_FILE PATH
    local before after out perf_pid=""
    before=$(cpu_ticks "$1")
    start_perf "$1"; perf_pid=$PERF_RUNNING
    out=$(wrk -t2 -c16 -d"${DURATION:-10}s" -s "$ROOT/bench/tokens.lua" "$2" -- "$3" "$4" 2)
    [ -z "${perf_pid:-}" ] || wait "$perf_pid"
    after=$(cpu_ticks "$1")
    echo "$out" | awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        /requests in/ {n=$1} /Requests\/sec/ {rps=$2} /^not-200/ {bad=$2; reused=$4}
        END {
            if (bad > 0) { print "responses other than 200: " bad > "/dev/stderr"; exit 1 }
            if (reused > n / 100) { print reused " of " n " tokens were sent twice: mint more" > "/dev/stderr"; exit 1 }
            printf "%.0f %.1f %d\n", rps, (t / hz) * 1e6 / n, reused
        }'
}
