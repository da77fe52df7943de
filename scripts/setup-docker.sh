#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and start dockerd if needed. Idempotent.
#
# Without systemd (containers, CI machines) dockerd is started in the background, detached from this
# shell, logging to $WORLDTRACE_DOCKERD_LOG. If it does not come up with its defaults, it is retried
#   1. with `--iptables=false --bridge=none`: kernels/sandboxes without working iptables NAT. Safe for
#      worldtrace, whose containers (sandboxes and image builds) all use network_mode=none;
#   2. then also with `--storage-driver=vfs`: where overlayfs cannot be mounted (e.g. nested in
#      overlayfs). vfs copies whole layers: slower and bigger, but works everywhere.
# WORLDTRACE_DOCKERD_ARGS="..." skips the guessing and starts dockerd with exactly those flags.
set -euo pipefail
log() { printf '[setup-docker] %s\n' "$*" >&2; }

DOCKERD_LOG=${WORLDTRACE_DOCKERD_LOG:-/var/log/worldtrace-dockerd.log}
WAIT_S=${WORLDTRACE_DOCKERD_WAIT_S:-60}

engine_answers() { docker info >/dev/null 2>&1; }

wait_for_engine() {
    # Polls `docker info` until it answers or dockerd ($1) exits or $WAIT_S pass.
    local pid=$1 deadline=$((SECONDS + WAIT_S))
    while [ "$SECONDS" -lt "$deadline" ]; do
        engine_answers && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.5
    done
    return 1
}

report_up() {
    log "Docker engine is up: $(docker version --format 'server {{.Server.Version}}' 2>/dev/null)," \
        "storage driver $(docker info --format '{{.Driver}}' 2>/dev/null)"
}

if engine_answers; then
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "no Docker engine: install Docker (Debian/Ubuntu: 'sudo apt-get install docker.io')," \
            "start it ('sudo systemctl start docker') and make sure 'docker info' works for this user"
        exit 1
    fi
    log "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates >/dev/null
fi

if [ "$(id -u)" -ne 0 ]; then
    if [ -S /var/run/docker.sock ]; then
        log "dockerd runs but this user may not use it: add yourself to the 'docker' group" \
            "('sudo usermod -aG docker $USER', then log in again)"
    else
        log "dockerd is installed but not running; start it (e.g. 'sudo systemctl start docker')"
    fi
    exit 1
fi

# A dockerd that is still starting up (e.g. started by a parallel setup) gets time to answer.
PIDFILE=${WORLDTRACE_DOCKERD_PIDFILE:-/var/run/docker.pid}
if [ -s "$PIDFILE" ] && running=$(cat "$PIDFILE") && kill -0 "$running" 2>/dev/null \
    && [ "$(cat "/proc/$running/comm" 2>/dev/null)" = dockerd ]; then
    log "dockerd (pid $running) is running; waiting for it to answer"
    if wait_for_engine "$running"; then
        report_up
        exit 0
    fi
    log "dockerd (pid $running) does not answer; see $DOCKERD_LOG"
    exit 1
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    log "starting docker with systemd"
    if systemctl start docker && wait_for_engine ""; then
        report_up
        exit 0
    fi
    log "systemd could not start docker; starting dockerd directly"
fi

mkdir -p "$(dirname "$DOCKERD_LOG")"
start_dockerd() {
    # Starts dockerd with the given flags, detached (own session, no stdin, log file); 0 if it answers.
    log "starting dockerd $*"
    printf '\n===== %s: dockerd %s\n' "$(date -u +%FT%TZ)" "$*" >>"$DOCKERD_LOG"
    setsid nohup dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$!
    if wait_for_engine "$pid"; then
        return 0
    fi
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    log "dockerd $* did not come up; its last lines:"
    tail -n 8 "$DOCKERD_LOG" >&2 || true
    return 1
}

if [ -n "${WORLDTRACE_DOCKERD_ARGS:-}" ]; then
    # shellcheck disable=SC2086  # word splitting of the user's flags is intended
    if start_dockerd $WORLDTRACE_DOCKERD_ARGS; then report_up; exit 0; fi
    exit 1
fi
if start_dockerd; then report_up; exit 0; fi
if start_dockerd --iptables=false --bridge=none; then report_up; exit 0; fi
if start_dockerd --iptables=false --bridge=none --storage-driver=vfs; then report_up; exit 0; fi
log "could not start a Docker engine; see $DOCKERD_LOG"
exit 1
