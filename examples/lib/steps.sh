# The demos' step machinery, sourced by examples/*/run.sh: numbered steps,
# each printing PASS or FAIL with its notes, and the final tally.
#
# Before sourcing, a script sets
#   WORK         its temp directory (this file writes $WORK/notes and
#                $WORK/logs/NN.log, one per step);
#   SERVER_LOGS  the log files (an array) whose last lines are printed when
#                a step a later one needs fails, and at the end of a failed run.
# Sourcing makes fd 3 the report (the script's stdout); a step's own output
# goes to its log file.

exec 3>&1
STEP=0
PASSED=0
FAILED=0
NOTES="$WORK/notes"
mkdir -p "$WORK/logs"

# A detail line printed under the current step's PASS/FAIL.
note() { printf '         %s\n' "$*" >>"$NOTES"; }

# step DESCRIPTION COMMAND...: runs COMMAND (a function of this script, in
# this shell, so it may set variables for later steps), prints PASS or FAIL.
step() {
    local desc=$1
    shift
    STEP=$((STEP + 1))
    local log
    log="$WORK/logs/$(printf '%02d' "$STEP").log"
    : >"$NOTES"
    if "$@" >"$log" 2>&1 </dev/null; then
        PASSED=$((PASSED + 1))
        printf 'PASS  %2d  %s\n' "$STEP" "$desc" >&3
        cat "$NOTES" >&3
        return 0
    fi
    FAILED=$((FAILED + 1))
    printf 'FAIL  %2d  %s\n' "$STEP" "$desc" >&3
    cat "$NOTES" >&3
    tail -n 40 "$log" | sed 's/^/         | /' >&3
    return 1
}

# not_run DESCRIPTION WHY: a step that cannot run because an earlier one failed.
not_run() {
    STEP=$((STEP + 1))
    FAILED=$((FAILED + 1))
    printf 'FAIL  %2d  %s\n         not run: %s\n' "$STEP" "$1" "$2" >&3
}

# must DESCRIPTION COMMAND...: a step later steps depend on; stop if it fails.
must() {
    step "$@" && return 0
    say_logs
    printf '\nstopped after step %d: the steps after it need it. %d passed, %d failed\n' \
        "$STEP" "$PASSED" "$FAILED" >&3
    exit 1
}

# The servers' logs, on failure.
say_logs() {
    local f
    for f in "${SERVER_LOGS[@]}"; do
        [[ -s "$f" ]] || continue
        printf -- '--- last lines of %s\n' "$(basename "$f")" >&3
        tail -n 25 "$f" | sed 's/^/  | /' >&3
    done
}

# The tally, last: exits 1 (after the servers' logs) if any step failed.
finish() {
    printf '\n' >&3
    if ((FAILED > 0)); then
        say_logs
        printf '%d passed, %d failed\n' "$PASSED" "$FAILED" >&3
        exit 1
    fi
    printf 'all %d steps passed\n' "$PASSED" >&3
}

# Prints its arguments and returns 1: `cond || fail "why"` inside a step.
fail() {
    echo "FAILED: $*"
    return 1
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds (liveness only).
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# A free loopback port (may be taken again before it is used: callers retry).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
