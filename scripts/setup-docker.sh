#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and start dockerd if needed. Idempotent.
set -euo pipefail
log() { printf '[setup-docker] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "no Docker engine: install Docker (Debian/Ubuntu: 'apt-get install docker.io' as root) and start it"
        exit 1
    fi
    log "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
    log "dockerd is installed but not answering; start it (e.g. 'sudo systemctl start docker')"
    exit 1
fi
log "starting dockerd"
mkdir -p /var/log
if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
    :
else
    nohup setsid dockerd >/var/log/worldtrace-dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        log "dockerd is up ($(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 0.5
done
log "dockerd did not answer within 60 s; its log:"
tail -n 30 /var/log/worldtrace-dockerd.log >&2 || true
exit 1
