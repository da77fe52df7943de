#!/usr/bin/env bash
# Set up everything worldtrace needs on a fresh Debian/Ubuntu machine: system packages, the Docker
# engine, and a virtual environment in .venv with the project installed. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
log() { printf '[setup] %s\n' "$*" >&2; }

apt_install() {
    # Installs Debian packages that are missing; needs root on Debian/Ubuntu.
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "please install these packages (needs root on Debian/Ubuntu): ${missing[*]}"
        return 1
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    log "worldtrace needs Python >= 3.11 on the host (found: $("$PYTHON" --version 2>&1))"
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
fi
# debootstrap builds the base images offline; chromium + chromedriver drive the HTML viewer tests.
apt_install debootstrap chromium chromium-driver || log "continuing without some system packages"

if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.worldtrace-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing worldtrace and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[publish,train,dev]"
    touch "$stamp"
fi

bash scripts/setup-docker.sh
log "ready: activate with 'source .venv/bin/activate' or call .venv/bin/worldtrace"
