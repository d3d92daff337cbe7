#!/usr/bin/env bash
# Installs what the test suite talks to besides Python packages. Idempotent and quick
# when everything is already present. Each block is best effort where the tests that
# need it skip with a clear message when the peer is missing.
set -uo pipefail
cd "$(dirname "$0")"

apt_install() {
    # Debian packages; only root (CI) installs them, a developer gets a hint instead.
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq || true) >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
            || echo "prepare: could not install ${missing[*]}" >&2
    else
        echo "prepare: please install ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    fi
}

for hook in prepare.d/*.sh; do
    [ -e "$hook" ] || continue
    # shellcheck source=/dev/null
    source "$hook"
done
exit 0
