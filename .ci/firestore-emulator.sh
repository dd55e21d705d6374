#!/usr/bin/env bash
# Start or stop a local Firestore emulator for the contract tests.
#
#   .ci/firestore-emulator.sh start   # background, waits until it answers (max ~60 s), prints the export line
#   .ci/firestore-emulator.sh stop    # stops the emulator this script started (by its recorded pid)
#   .ci/firestore-emulator.sh status
#
# HOST_PORT (default 127.0.0.1:8085) and STATE_DIR (default ${TMPDIR:-/tmp}/gptload-firestore-emulator) can be
# overridden from the environment. The emulator needs Java 17+ and the cloud-firestore-emulator gcloud component.
set -euo pipefail

HOST_PORT="${HOST_PORT:-127.0.0.1:8085}"
STATE_DIR="${STATE_DIR:-${TMPDIR:-/tmp}/gptload-firestore-emulator}"
PID_FILE="$STATE_DIR/emulator.pid"
LOG_FILE="$STATE_DIR/emulator.log"
WAIT_SECONDS="${WAIT_SECONDS:-60}"

answers() {
    curl -fsS -m 2 "http://$HOST_PORT/" >/dev/null 2>&1
}

start() {
    mkdir -p "$STATE_DIR"
    if answers; then
        echo "firestore emulator already answers on $HOST_PORT" >&2
        echo "export FIRESTORE_EMULATOR_HOST=$HOST_PORT"
        return 0
    fi
    # setsid: the emulator (gcloud wrapper + java child) gets its own process group, so stop can end all of it.
    setsid gcloud emulators firestore start --host-port="$HOST_PORT" --quiet >"$LOG_FILE" 2>&1 < /dev/null &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 "$WAIT_SECONDS"); do
        if answers; then
            echo "firestore emulator up on $HOST_PORT (pid $(cat "$PID_FILE"), log $LOG_FILE)" >&2
            echo "export FIRESTORE_EMULATOR_HOST=$HOST_PORT"
            return 0
        fi
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            echo "firestore emulator exited; last log lines:" >&2
            tail -n 20 "$LOG_FILE" >&2
            return 1
        fi
        sleep 1
    done
    echo "firestore emulator did not answer on $HOST_PORT within ${WAIT_SECONDS}s; see $LOG_FILE" >&2
    return 1
}

stop() {
    if [[ ! -f "$PID_FILE" ]]; then
        echo "no pid file at $PID_FILE; nothing started by this script" >&2
        return 0
    fi
    pid="$(cat "$PID_FILE")"
    # The pid is a process-group leader (setsid), so this ends gcloud and its java child, nothing else.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    echo "firestore emulator stopped" >&2
}

status() {
    if answers; then
        echo "firestore emulator answers on $HOST_PORT"
    else
        echo "firestore emulator not answering on $HOST_PORT"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
