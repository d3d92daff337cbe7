# Node peers for the packet-stream interop tests and bench/rpc.py (sourced by tests/prepare.sh,
# which runs from tests/ and provides apt_install). Quick when already installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    # npm ci leaves node_modules/.package-lock.json behind; reinstall when it is missing
    # or older than the committed lockfile.
    if [ ! -f node/node_modules/.package-lock.json ] \
        || [ node/package-lock.json -nt node/node_modules/.package-lock.json ]; then
        (cd node && npm ci --silent --no-audit --no-fund) \
            || echo "prepare: npm ci failed in tests/node; Node interop tests will skip" >&2
    fi
else
    echo "prepare: node/npm not available; Node interop tests will skip" >&2
fi
