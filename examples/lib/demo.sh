# What the demos share besides the step machinery (examples/lib/steps.sh,
# sourced first): building gantry, the OpenID providers
# (examples/e2e/provider), starting gantry, and the HTTP helpers.
#
# The functions read these variables of the sourcing script, when called:
#   ROOT, GANTRY_BIN   the repository root; a gantry binary, or build one
#   PROVIDER_DIR       examples/e2e/provider
#   AUDIENCE           the audience tokens are requested for
#   SECRET             this run's random part of every client secret
#   TOKENS_FILE        where `remember` keeps every token obtained
#   PIDS               an array: servers started here, stopped on exit
#   CONFIG, GANTRY_PORT and a function `write_config PORT`, for launch_gantry
#   REGISTRY           host:port of the running gantry (set by launch_gantry)

# demo_begin NAME KEEP: what every demo does first. Keeps proxies out of
# 127.0.0.1; resolves GANTRY_BIN against the directory the script was
# started from (or PATH); makes the work directory $WORK (with logs/) and
# an empty registry auth file every client reads instead of the user's
# logins; and on exit, also on Ctrl-C, stops every process in PIDS and
# removes $WORK, unless the variable named KEEP is 1. A script that must
# remove $WORK its own way defines remove_work after sourcing this file.
demo_begin() {
    local name=$1
    KEEP_VAR=$2
    export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
    if [[ -n "${GANTRY_BIN:-}" ]]; then
        if [[ "$GANTRY_BIN" != */* ]]; then
            GANTRY_BIN="$(command -v "$GANTRY_BIN" || echo "$GANTRY_BIN")"
        fi
        GANTRY_BIN="$(realpath -m "$GANTRY_BIN")"
    fi
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/gantry-$name.XXXXXX")" || { echo "cannot make a temp dir" >&2; exit 1; }
    mkdir -p "$WORK/logs"
    export REGISTRY_AUTH_FILE="$WORK/no-auth.json"
    echo '{"auths": {}}' >"$REGISTRY_AUTH_FILE"
    PIDS=()
    trap demo_end EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

remove_work() { rm -rf "$WORK"; }

demo_end() {
    local status=$? pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [[ "${!KEEP_VAR:-}" == 1 ]]; then
        echo "work directory kept: $WORK" >&2
    else
        remove_work
    fi
    exit "$status"
}

# The secret of a client `system:serviceaccount:NS:SA` (or any name).
secret_of() { echo "$SECRET-${1##*:}"; }

# A client_credentials token from ISSUER for CLIENT, for RESOURCE.
token() {
    node "$PROVIDER_DIR/token.mjs" "$1" "$2" "$(secret_of "$2")" "${3:-$AUDIENCE}"
}

# Every token obtained, to prove none reaches a log.
remember() { printf '%s\n' "$1" >>"$TOKENS_FILE"; }

build_gantry() {
    if [[ -n "${GANTRY_BIN:-}" ]]; then
        GANTRY="$GANTRY_BIN"
        [[ -x "$GANTRY" ]] || fail "GANTRY_BIN=$GANTRY is not an executable" || return 1
        note "using GANTRY_BIN=$GANTRY"
    else
        (cd "$ROOT" && cargo build --release --bin gantry) || return 1
        GANTRY="$ROOT/target/release/gantry"
        note "cargo build --release --bin gantry -> target/release/gantry"
    fi
    "$GANTRY" --version
}

install_provider() {
    if [[ ! -f "$PROVIDER_DIR/node_modules/oidc-provider/package.json" ]]; then
        npm ci --prefix "$PROVIDER_DIR" --no-audit --no-fund || return 1
        note "npm ci --prefix examples/e2e/provider"
    fi
    note "oidc-provider $(node -p 'require(process.argv[1]).version' "$PROVIDER_DIR/node_modules/oidc-provider/package.json")"
}

# start_provider N CLIENT...: an OpenID provider (a cluster's issuer) whose
# clients are CLIENT...; sets ISSUER_<N>; logs in $WORK/provider-<N>.log.
start_provider() {
    local n=$1 c
    shift
    local clients="$WORK/clients-$n.json"
    {
        echo '['
        local sep=''
        for c in "$@"; do
            printf '%s{"client_id": "%s", "client_secret": "%s"}\n' "$sep" "$c" "$(secret_of "$c")"
            sep=','
        done
        echo ']'
    } >"$clients"
    (cd "$PROVIDER_DIR" && exec node provider.mjs --port 0 --clients "$clients") \
        >"$WORK/provider-$n.out" 2>"$WORK/provider-$n.log" &
    PIDS+=($!)
    local pid=$!
    wait_for 60 grep -q '^ready http://' "$WORK/provider-$n.out" \
        || { kill -0 "$pid" 2>/dev/null || fail "the provider exited"; cat "$WORK/provider-$n.log"; fail "provider $n did not start"; } \
        || return 1
    local issuer
    issuer="$(sed -n 's/^ready //p' "$WORK/provider-$n.out" | head -n 1)"
    printf -v "ISSUER_$n" '%s' "$issuer"
    # Discovery is what gantry will read.
    curl -sSf --max-time 30 "$issuer/.well-known/openid-configuration" >/dev/null || fail "no discovery at $issuer" || return 1
    note "issuer $issuer, clients: $*"
}

gantry_healthy() { curl -sf --max-time 5 "http://$REGISTRY/healthz" >/dev/null; }

gantry_healthy_or_dead() { gantry_healthy || ! kill -0 "$1" 2>/dev/null; }

# `gantry serve --config $CONFIG`, logging to $WORK/gantry.log, until it is
# healthy; on a port taken meanwhile, again on another (write_config PORT).
launch_gantry() {
    local attempt pid
    for attempt in 1 2 3 4 5; do
        if ((attempt > 1)); then
            GANTRY_PORT="$(free_port)" || return 1
            write_config "$GANTRY_PORT"
        fi
        REGISTRY="127.0.0.1:$GANTRY_PORT"
        env -u RUST_LOG "$GANTRY" serve --config "$CONFIG" >"$WORK/gantry.log" 2>&1 &
        pid=$!
        # Policies are compiled before the port is bound; a debug build takes a while.
        if wait_for 180 gantry_healthy_or_dead "$pid" && kill -0 "$pid" 2>/dev/null; then
            PIDS+=("$pid")
            return 0
        fi
        wait "$pid" 2>/dev/null
        grep -q 'binding' "$WORK/gantry.log" || break
    done
    cat "$WORK/gantry.log"
    fail "gantry did not start"
}

# http METHOD PATH [BEARER]: the status; headers and body in $WORK/http.{head,body}.
http() {
    local method=$1 path=$2 bearer=${3:-}
    local args=(-sS --max-time 60 -o "$WORK/http.body" -D "$WORK/http.head" -w '%{http_code}' -X "$method")
    [[ -n "$bearer" ]] && args+=(-H "Authorization: Bearer $bearer")
    [[ "$method" == POST || "$method" == PUT ]] && args+=(--data-binary '')
    curl "${args[@]}" "http://$REGISTRY$path"
}

header() { tr -d '\r' <"$WORK/http.head" | sed -n "s/^$1: //Ip" | head -n 1; }

# expect_status WANT METHOD PATH [BEARER]
expect_status() {
    local want=$1 got
    shift
    got="$(http "$@")"
    echo "$1 $2 -> $got"
    cat "$WORK/http.head" "$WORK/http.body"
    echo
    [[ "$got" == "$want" ]] || fail "$1 $2: expected $want, got $got"
}

# The repositories of GET /v2/_catalog, space-separated.
catalog() {
    expect_status 200 GET /v2/_catalog "$1" >/dev/null || return 1
    python3 -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))["repositories"]))' "$WORK/http.body"
}

# An OCI layout's blobs are all present in another's, byte for byte, and
# each of the other's blobs has the content its name says.
same_blobs() {
    local src=$1 dst=$2 f
    # shellcheck disable=SC2012 # blob names are hex digests
    diff <(ls "$src/blobs/sha256" | sort) <(ls "$dst/blobs/sha256" | sort) \
        || fail "$dst does not hold exactly the blobs of $src" || return 1
    for f in "$dst"/blobs/sha256/*; do
        [[ "$(sha256sum <"$f" | cut -d' ' -f1)" == "$(basename "$f")" ]] || fail "$f: content does not match its digest" || return 1
        cmp -s "$f" "$src/blobs/sha256/$(basename "$f")" || fail "$f differs from the pushed blob" || return 1
    done
}

manifest_digest() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$1/index.json"
}

# no_token_in_logs FILE...: no token `remember`ed, nor its signature, is in
# any of the files.
no_token_in_logs() {
    local t sig f
    while read -r t; do
        [[ -n "$t" ]] || continue
        sig="${t##*.}"
        for f in "$@"; do
            if grep -qF -e "$t" -e "$sig" "$f"; then
                fail "a raw token reached $(basename "$f")"
                return 1
            fi
        done
    done <"$TOKENS_FILE"
}
